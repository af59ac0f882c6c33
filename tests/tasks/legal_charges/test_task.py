"""The task on real LawBench-191 data and on tiny CAIL / LawBench-191 fixtures: splits, render, no-leak, scoring."""

from __future__ import annotations

from dataclasses import replace

import pytest

from sia_bench.harness import Patch
from sia_bench.task import Answer, OptionError, TaskError
from tasks.legal_charges.task import LegalChargesTask
from tests.tasks.legal_charges.conftest import write_cail

TOOLS_ON = [("candidates", True), ("answer_mode", "rank"), ("retrieval", True), ("few_shot", 2)]


def with_tools(harness, extra=()):
    for key, value in [*TOOLS_ON, *extra]:
        if harness[key] != value:
            harness = harness.apply(Patch("set_param", param=key, value=value))
    return harness


def test_real_splits_and_controls(real_task):
    info = real_task.data_info()
    assert info["labels"] == 191 and info["sizes"]["test"] == 913
    assert info["sizes"]["train"] + info["sizes"]["val"] == 5332
    assert info["used"]["val"] == 60  # default val_size for CPU runs
    train_ids = {i.id for i in real_task.split("train")}
    assert not train_ids & {i.id for i in real_task.split("val")}
    controls = real_task.control_scores("val")
    assert controls["perfect"]["accuracy"] == 1.0 and controls["null"]["accuracy"] < 0.05


def test_default_harness_ranks_three_candidates_and_leaves_the_harness_room(real_task):
    h = real_task.default_harness()
    assert (h["answer_mode"], h["candidates"], h["candidates_n"], h["fact_chars"]) == ("rank", True, 3, 100)
    assert (h["retrieval"], h["few_shot"], h["label_list"]) == (False, 0, False)  # tools the proposer can add
    prompt = real_task.render(h, real_task.split("val")[0])
    assert len(prompt.options) == 3 and [c["tool"] for c in prompt.tool_calls] == ["candidates"]
    assert len(prompt.messages) == 2
    assert set(real_task.search_space) <= set(h.specs)
    untried = [p for p, values in real_task.search_space.items() if any(v != h[p] for v in values)]
    assert {"retrieval", "few_shot", "candidates_n", "fact_chars"} <= set(untried)


def test_render_never_leaks_the_target(real_task):
    h = with_tools(real_task.default_harness(), [("few_shot_selection", "confused")])
    for inst in real_task.split("train")[:3] + real_task.split("val")[:3]:
        prompt = real_task.render(h, inst)
        blind = real_task.render(h, replace(inst, target=("盗窃",)))
        assert prompt.messages == blind.messages and prompt.options == blind.options  # target is never read
        for call in prompt.tool_calls:
            assert inst.id not in call.get("ids", [])  # the case itself is never retrieved or shown
        body = "\n".join(m["content"] for m in prompt.messages[1:-1])
        assert inst.input["fact"][:120] not in body


def test_train_candidates_exclude_the_case_itself(real_task):
    """Without exclusion a training case's own vector lifts its gold charge: top-1 would be ~98% instead of ~75%."""
    index = real_task.index()
    train = real_task.split("train")[::40]
    hits = sum(i.target[0] == index.candidates(i.input["fact"], 1, i.id)[0] for i in train)
    assert hits / len(train) < 0.9


def test_rank_mode_candidates_hold_gold_often(real_task):
    h = with_tools(real_task.default_harness())
    val = real_task.split("val")
    prompts = [real_task.render(h, i) for i in val]
    recall = sum(i.target[0] in p.options for i, p in zip(val, prompts)) / len(val)
    assert recall > 0.75 and all(len(p.options) == 3 for p in prompts)
    inst = val[0]
    answer = real_task.parse(h, inst, prompts[0].options[0])
    assert answer.ok and answer.method == "exact"


def test_scoring_and_feedback(real_task):
    inst = real_task.split("val")[0]
    gold = inst.target[0]
    good = real_task.score(inst, Answer(gold, "exact"))
    assert good.value == 1.0 and "correct" in good.feedback
    bad = real_task.score(inst, Answer("不存在的罪名", "exact"))
    assert bad.value == 0.0 and "not in the label set" in bad.feedback and "confused" in bad.feedback
    none = real_task.score(inst, Answer(None, "no_match", "no charge"))
    agg = real_task.aggregate([good, bad, none], [inst] * 3)
    assert agg["accuracy"] == pytest.approx(1 / 3) and 0 < agg["macro_f1"] <= 1


def test_options_are_validated():
    with pytest.raises(OptionError):
        LegalChargesTask(dataset="nope")
    with pytest.raises(OptionError):
        LegalChargesTask(bogus=1)
    with pytest.raises(TaskError, match="needs -T path"):
        LegalChargesTask(dataset="cail2018").split("train")


def test_cail_task_end_to_end(tmp_path):
    path = write_cail(tmp_path / "cail.json", n=12)
    task = LegalChargesTask(dataset="cail2018", path=str(path), val_fraction=0.2)
    assert task.metric.name == "set_f1"
    sizes = task.data_info()["sizes"]
    assert sizes["test"] > 0 and sizes["val"] > 0 and sum(sizes.values()) == 36
    h = with_tools(task.default_harness(), [("retrieval_k", 2), ("candidates_n", 2)])
    inst = next(i for i in task.split("test") if len(i.target) == 2)
    prompt = task.render(h, inst)
    assert len(prompt.options) == 2
    answer = task.parse(h, inst, "；".join(inst.target))
    assert answer.value == list(inst.target)
    half = task.parse(h, inst, inst.target[0])
    scores = [task.score(inst, answer), task.score(inst, half)]
    assert scores[1].value == pytest.approx(2 / 3) and "partly correct" in scores[1].feedback
    agg = task.aggregate(scores, [inst, inst])
    assert agg["set_f1"] == pytest.approx((1 + 2 / 3) / 2) and agg["exact_match"] == 0.5
    assert 0 < agg["cail_score"] <= 1


def test_tiny_lawbench_task_via_data_dir(tiny_lawbench):
    task = LegalChargesTask(data_dir=str(tiny_lawbench), val_fraction=0.2, test_size=3)
    assert len(task.split("test")) == 3 and len(task.split("val")) == 4  # one of each 6-case charge
    h = with_tools(task.default_harness(), [("candidates_n", 2), ("few_shot_selection", "random")])
    assert len(task.render(h, task.split("val")[0]).options) == 2


class _Bomb:
    """Unpickling this writes a marker file: proof that a cache was unpickled."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_index_cache_is_safe_checksummed_and_rebuilt_when_damaged(tiny_lawbench, tmp_path):
    import pickle
    import warnings

    from tasks.legal_charges import tools

    task = LegalChargesTask(data_dir=str(tiny_lawbench), val_fraction=0.2)
    cases, folder = task._data()["train"], tmp_path / "cache"
    fact = task.split("val")[0].input["fact"]
    reference = {}
    for retriever in ("tfidf", "bm25"):
        tools._MEMORY.clear()
        built = reference[retriever] = tools.get_index(cases, retriever, folder)
        files = sorted(p.name for p in folder.glob(f"*{retriever}*"))
        assert [f.rsplit(".", 1)[1] for f in files] == ["json", "npz"]
        tools._MEMORY.clear()
        loaded = tools.get_index(cases, retriever, folder)  # from disk
        assert loaded is not built
        assert loaded.candidates(fact, 3) == built.candidates(fact, 3)
        assert loaded.neighbours(fact, 4) == built.neighbours(fact, 4)
        assert (loaded.query_vectors([fact]) != built.query_vectors([fact])).nnz == 0
    base = next(folder.glob("*tfidf*.npz"))
    marker = tmp_path / "unpickled"
    for victim, payload in ((base, base.read_bytes()[:-40] + b"\0" * 40),  # damaged arrays
                            (base, pickle.dumps(_Bomb(marker))),  # a pickle in place of the arrays
                            (base.with_suffix(".json"), pickle.dumps(_Bomb(marker)))):  # ... or of the manifest
        victim.write_bytes(payload)
        tools._MEMORY.clear()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            index = tools.get_index(cases, "tfidf", folder)
        assert any("ignoring retrieval cache" in str(w.message) for w in caught)
        assert not marker.exists()  # never unpickled
        assert index.candidates(fact, 3) == reference["tfidf"].candidates(fact, 3)
        tools._MEMORY.clear()
        tools.load_index(base.with_suffix(""))  # rebuilt and rewritten: verifies again


def test_prompt_cost_is_a_harness_parameter(tiny_lawbench):
    task = LegalChargesTask(data_dir=str(tiny_lawbench), val_fraction=0.2)
    inst = task.split("val")[0]
    short = task.default_harness().apply(Patch("set_param", param="fact_chars", value=8))
    assert task.render(short, inst).messages[-1]["content"].endswith(f"{inst.input['fact'][:8]}…\n罪名 / Charge:")
    listed = task.default_harness().apply(Patch("set_param", param="label_list", value=True))
    system = task.render(listed, inst).messages[0]["content"]
    assert "Valid charges" in system and all(c in system for c in task.labels)  # instance-independent: system block
    with pytest.raises(OptionError, match="fact_chars"):
        LegalChargesTask(max_fact_chars=300)
