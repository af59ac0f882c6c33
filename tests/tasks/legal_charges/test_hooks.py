"""The task's hooks for the attribution controls: what its tools answer alone (tool-only) and the gold reply (sft)."""

from __future__ import annotations

import pytest

from sia_bench.harness import Patch
from tasks.legal_charges.task import LegalChargesTask
from tests.tasks.legal_charges.conftest import write_cail


def setting(harness, **params):
    for key, value in params.items():
        harness = harness.apply(Patch("set_param", param=key, value=value))
    return harness


@pytest.fixture
def task(tiny_lawbench):
    return LegalChargesTask(data_dir=str(tiny_lawbench), val_fraction=0.2)


def test_tool_answer_is_the_candidates_tools_first_charge(task):
    harness = task.default_harness()  # rank mode over the top-3 candidates
    for inst in task.split("test"):
        top = task.render(harness, inst).options[0]
        text = task.tool_answer(harness, inst)
        assert text == top == task.index().candidates(inst.input["fact"], 1, inst.id)[0]
        assert task.parse(harness, inst, text).value == top
        generate = setting(harness, answer_mode="generate", parser="exact")
        assert task.parse(generate, inst, task.tool_answer(generate, inst)).value == top


def test_tool_answer_without_candidates_is_the_neighbours_majority_ties_to_the_best_rank(task, monkeypatch):
    harness = setting(task.default_harness(), candidates=False, answer_mode="generate", retrieval=True,
                      retrieval_k=4)
    train = task.split("train")
    by_label = {}
    for i, inst in enumerate(train):
        by_label.setdefault(inst.target[0], []).append(i)
    a, b = sorted(by_label)[:2]
    inst = task.split("test")[0]
    index = task.index()
    monkeypatch.setattr(index, "neighbours", lambda *_: [(by_label[b][0], .9), (by_label[a][0], .8),
                                                         (by_label[a][1], .7), (by_label[b][1], .6)])
    assert task.tool_answer(harness, inst) == b  # 2:2, b ranks first (though a sorts first)
    monkeypatch.setattr(index, "neighbours", lambda *_: [(by_label[b][0], .9), (by_label[a][0], .8),
                                                         (by_label[a][1], .7)])
    assert task.tool_answer(harness, inst) == a  # 2:1
    assert task.tool_answer(setting(harness, retrieval=False), inst) is None  # no tool, no answer


def test_reference_text_parses_to_the_gold_charge_and_scores_one(task, monkeypatch):
    rank = task.default_harness()
    for harness in (rank, setting(rank, answer_mode="generate", parser="exact")):
        for inst in task.split("test"):
            text = task.reference_text(harness, inst)
            answer = task.parse(harness, inst, text)
            assert answer.value == inst.target[0] and task.score(inst, answer).value == 1.0
    inst = task.split("test")[0]
    wrong = [c for c in task.labels if c != inst.target[0]][:3]
    monkeypatch.setattr(task.index(), "candidates", lambda *_: wrong)
    assert task.reference_text(rank, inst) is None  # no option of this prompt is right
    assert task.reference_text(setting(rank, answer_mode="generate"), inst) == inst.target[0]


def test_reference_text_of_several_charges_scores_one(tmp_path):
    task = LegalChargesTask(dataset="cail2018", path=str(write_cail(tmp_path / "cail.json", n=12)), val_fraction=0.2)
    harness = setting(task.default_harness(), answer_mode="generate")
    inst = next(i for i in task.split("test") if len(i.target) == 2)
    answer = task.parse(harness, inst, task.reference_text(harness, inst))
    assert answer.value == list(inst.target) and task.score(inst, answer).value == 1.0
