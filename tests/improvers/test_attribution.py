"""Attribution controls: random search over the declared space, tools without the model, votes of samples."""

import json

import pytest

from sia_bench.agent import Answering
from sia_bench.loop import Loop, RunConfig
from sia_bench.records import Budget
from sia_bench.task import OptionError
from tests.doubles import ScriptedModel, adder


def run(tmp_path, improver, generations, seed=3, **options):
    config = RunConfig(task="toy_arithmetic", improver=improver, improver_options=options, seed=seed,
                       budget=Budget(generations=generations))
    return Loop(config, tmp_path / f"{improver}-{seed}", model=ScriptedModel(fn=adder())).run()


def test_random_search_edits_only_the_declared_space_and_depends_on_the_seed(tmp_path):
    from tasks.toy_arithmetic.task import ToyArithmeticTask

    space = ToyArithmeticTask.search_space
    paths = []
    for seed in (0, 1, 2, 3):
        record = run(tmp_path, "random-search", 3, seed=seed)
        edits = [(a["param"], a["value"]) for g in record.generations[1:] for a in g.actions if "error" not in a]
        assert edits and all(p in space and v in space[p] for p, v in edits)
        assert all(g.proposer == "random" for g in record.generations[1:])
        assert all(a["rationale"] == "random search" for g in record.generations[1:] for a in g.actions)
        paths.append(tuple(edits))
    assert len(set(paths)) > 1  # the seed drives the search


def test_random_search_makes_no_train_rollouts(tmp_path):
    record = run(tmp_path, "random-search", 2, edits=2)
    assert record.ledger.rollouts.get("train", 0) == 0 and record.ledger.train_rollouts == 0


def legal_loop(tmp_path, improver, generations, **options):
    from tasks.legal_charges.task import LegalChargesTask
    from tests.tasks.legal_charges.conftest import write_lawbench191

    task = LegalChargesTask(data_dir=str(write_lawbench191(tmp_path / "data")))
    config = RunConfig(task="legal_charges", improver=improver, improver_options=options,
                       task_options={"data_dir": str(tmp_path / "data")}, budget=Budget(generations=generations))
    model = ScriptedModel(replies=["诈骗"])
    return task, model, Loop(config, tmp_path / improver, task=task, model=model).run()


def test_tool_only_answers_every_pass_from_the_tools_never_the_model(tmp_path):
    task, model, record = legal_loop(tmp_path, "tool-only", 2)
    assert model.seen == [] and model.usage.calls == 0  # train rollouts, val and test: the tools alone
    assert record.improver["answering"]["answers_with"] == "tools" and record.improver["label"] == "tool-only"
    assert record.ledger.total_flops(exclude_test=False) == 0
    assert record.ledger.rollouts["train"] > 0 and record.ledger.rollouts["test"] > 0  # counted, though free
    trajs = [json.loads(line) for line in (tmp_path / "tool-only" / "final" / "test.jsonl").read_text().splitlines()]
    for t in trajs:
        inst = next(i for i in task.split("test") if i.id == t["instance_id"])
        top = task.index().candidates(inst.input["fact"], 3, inst.id)[0]  # the candidates tool's first charge
        assert t["details"]["answered_by"] == "tools" and t["answer"] == top
        assert t["score"] == float(top == inst.target[0]) and t["messages"][-1]["content"].endswith("罪名 / Charge:")
    assert record.final["test"]["accuracy"] == sum(t["score"] for t in trajs) / len(trajs)


def test_best_of_n_stops_at_once_and_votes_in_every_pass(tmp_path):
    model = ScriptedModel(fn=adder())
    config = RunConfig(task="toy_arithmetic", improver="best-of-n", improver_options={"n": 3, "temperature": 0.5},
                       limit=4, budget=Budget(generations=3))
    record = Loop(config, tmp_path / "bon", model=model).run()
    assert len(record.generations) == 2 and "stop" in record.generations[1].levers
    assert record.improver["answering"] == {"answers_with": "model", "votes": 3, "temperature": 0.5}
    for path in (tmp_path / "bon" / "gen_000" / "val.jsonl", tmp_path / "bon" / "final" / "test.jsonl"):
        trajs = [json.loads(line) for line in path.read_text().splitlines()]
        assert len(trajs) == 4 and all(len(t["details"]["votes"]) == 3 for t in trajs)
    assert len(model.seen) == 3 * 8  # 4 val + 4 test instances, 3 samples each


def test_best_of_n_settings_are_checked():
    from sia_bench.loop import build_improver

    assert build_improver("best-of-n", {}).answering() == Answering(votes=5, temperature=0.7)
    for bad in ({"n": "0"}, {"n": 65}, {"temperature": "0"}, {"temperature": 2.5}):
        with pytest.raises(OptionError, match="best-of-n"):
            build_improver("best-of-n", bad)


def test_model_arms_keep_the_default_answering_and_record(tmp_path):
    record = run(tmp_path, "none", 1)
    assert "answering" not in record.improver
