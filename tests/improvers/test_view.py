"""Improvers see train instances and val aggregates only; seeds are replicates; the Meta-Agent is charged once."""

from dataclasses import dataclass, replace

import pytest

from sia_bench.improvers.base import Improver, LoopState, Proposal
from sia_bench.improvers.view import TrainOnlyError, TrainOnlyTask
from sia_bench.loop import Loop, RunConfig, build_task, resume
from sia_bench.records import Budget, read_jsonl
from sia_bench.registry import IMPROVERS
from tests.doubles import ScriptedModel, adder


def test_the_view_serves_train_only():
    task = build_task("toy_arithmetic", {})
    view = TrainOnlyTask(task)
    harness = view.default_harness()
    train = view.split("train")
    assert view.render(harness, train[0]).messages and view.metric == task.metric
    for split in ("val", "test"):
        with pytest.raises(TrainOnlyError):
            view.split(split)
    val = task.split("val")[0]
    for call in (lambda: view.render(harness, val), lambda: view.parse(harness, val, "3"),
                 lambda: view.score(val, task.perfect_answer(val))):
        with pytest.raises(TrainOnlyError):
            call()
    forged = replace(train[0])  # same id, another object: refused too
    with pytest.raises(TrainOnlyError):
        view.render(harness, forged)
    with pytest.raises(TrainOnlyError):
        view.load_split("test")


@dataclass
class Snoop(Improver):
    """A plug-in improver that tries every door to val and test."""

    name = "snoop"

    def propose(self, state: LoopState) -> Proposal:
        found = []
        for attempt in (lambda: state.task.split("test"), lambda: state.task.split("val"),
                        lambda: state.agent.task.split("test"), lambda: state.task.load_split("val"),
                        lambda: state.task._split_cache):
            try:
                attempt()
                found.append("open")
            except TrainOnlyError:
                found.append("refused")
        return Proposal(stop=True, reason=",".join(found))


def test_a_plugin_improver_cannot_read_val_or_test(tmp_path):
    IMPROVERS.register("snoop", Snoop)
    try:
        config = RunConfig(task="toy_arithmetic", improver="snoop", budget=Budget(generations=1))
        record = Loop(config, tmp_path / "snoop", model=ScriptedModel(fn=adder())).run()
    finally:
        IMPROVERS._entries.pop("snoop", None)
    assert record.generations[1].reason == ",".join(["refused"] * 5)


def test_poisoned_val_labels_reach_no_improver_decision(tmp_path):
    def run(name, poison):
        task = build_task("toy_arithmetic", {})
        if poison:
            task.__dict__["_split_cache"]["val"] = [replace(i, target=-999) for i in task.split("val")]
        config = RunConfig(task="toy_arithmetic", improver="h", seed=1, budget=Budget(generations=2))
        rec = Loop(config, tmp_path / name, model=ScriptedModel(fn=adder()), task=task).run()
        return [(g.actions, g.levers) for g in rec.generations]

    # Val labels change val scores (and so the gate), but the first proposal is made before any val feedback
    # exists beyond generation 0's aggregate: it must not depend on val labels at all.
    assert run("clean", False)[1] == run("dirty", True)[1]


def test_seeds_draw_different_val_subsets_and_the_same_test(tmp_path):
    ids = {}
    for seed in (0, 1):
        config = RunConfig(task="toy_arithmetic", improver="none", seed=seed, limit=8, budget=Budget(generations=0))
        record = Loop(config, tmp_path / f"s{seed}", model=ScriptedModel(fn=adder())).run()
        val = [r["instance_id"] for r in read_jsonl(tmp_path / f"s{seed}" / "gen_000" / "val.jsonl")]
        test = [r["instance_id"] for r in read_jsonl(tmp_path / f"s{seed}" / "final" / "test.jsonl")]
        ids[seed] = (val, test)
        assert record.replicate["val_subset_seed"] == seed and "test instances" in record.replicate["fixed"]
    assert ids[0][0] != ids[1][0] and ids[0][1] == ids[1][1]


SKILL = "---\nname: toy-arithmetic\ndescription: drafted by the meta agent\n---\nAnswer with one integer.\n"


def test_meta_agent_drafts_the_start_once_and_is_charged(tmp_path):
    meta = ScriptedModel(replies=[SKILL])
    config = RunConfig(task="toy_arithmetic", improver="wh", improver_options={"meta_agent": True},
                       feedback_model=None, budget=Budget(generations=0))
    record = Loop(config, tmp_path / "meta", model=ScriptedModel(fn=adder()), feedback_model=meta).run()
    assert "drafted by the meta agent" in (tmp_path / "meta" / "gen_000" / "harness" / "SKILL.md").read_text()
    assert record.ledger.calls.get("meta") == 1 and record.ledger.tokens_in.get("meta", 0) > 0
    assert len(meta.seen) == 1
    resume(tmp_path / "meta", model=ScriptedModel(fn=adder()), feedback_model=meta)
    assert len(meta.seen) == 1  # a resumed run never asks again
