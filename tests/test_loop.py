"""The loop's discipline: val-only gate, test once at the end, ledger, stop rules, and exact resume."""

from dataclasses import dataclass, replace

import pytest

from sia_bench.harness import Patch
from sia_bench.improvers.base import Improver, LoopState, Proposal
from sia_bench.loop import Loop, RunConfig, build_task, resume
from sia_bench.records import Budget, RunRecord, read_jsonl
from sia_bench.registry import IMPROVERS
from sia_bench.task import Instance
from tests.doubles import ScriptedModel, adder


def run_toy(tmp_path, improver="h", generations=3, model=None, task=None, name="run", **kw):
    config = RunConfig(task="toy_arithmetic", improver=improver, seed=7, limit=None,
                       budget=Budget(generations=generations, **kw.pop("budget", {})), **kw)
    model = model or ScriptedModel(fn=adder())
    loop = Loop(config, tmp_path / name, model=model, task=task)
    return loop.run(), model


def comparable(record: RunRecord):
    """A record without wall-clock fields (timings differ between runs; nothing else may)."""
    gens = []
    for g in record.generations:
        d = g.model_dump(exclude={"seconds", "finished_at"})
        d["ledger"].pop("model_seconds")
        d["ledger"].pop("sandbox_seconds")
        gens.append(d)
    final = {k: v for k, v in record.final.items() if k != "test_ledger"}
    return gens, final, record.best_generation, record.stop_reason


def test_h_heuristic_improves_on_val_and_scores_test_once(tmp_path):
    record, model = run_toy(tmp_path)
    assert record.generations[0].val["accuracy"] == 0.0  # "X or maybe X+1" parsed with last_integer
    accepted = [g for g in record.generations if g.accepted and g.index > 0]
    assert accepted, "the first_integer parser switch should be found and kept"
    assert record.final["val"]["accuracy"] == 1.0
    assert record.final["test"]["accuracy"] == 1.0
    test_rows = list(read_jsonl(tmp_path / "run" / "final" / "test.jsonl"))
    assert len(test_rows) == 32 and {r["purpose"] for r in test_rows} == {"test"}
    # test instances were rendered exactly once: in the final pass
    test_questions = {f"What is {i.input['a']} + {i.input['b']}?" for i in build_task("toy_arithmetic", {}).split("test")}
    seen = [m[-1]["content"] for m in model.seen if m[-1]["content"] in test_questions]
    assert len(seen) == 32
    assert record.controls["test"]["perfect"]["accuracy"] == 1.0
    assert record.final["test_normalised"] == pytest.approx(1.0)


def test_poisoned_test_labels_change_nothing_upstream(tmp_path):
    clean, clean_model = run_toy(tmp_path, name="clean")
    task = build_task("toy_arithmetic", {})
    poisoned = [replace(i, target=-999, input=dict(i.input)) for i in task.split("test")]
    task.__dict__["_split_cache"]["test"] = poisoned
    dirty, dirty_model = run_toy(tmp_path, name="dirty", task=task)
    assert comparable(clean)[0] == comparable(dirty)[0]  # every generation: same proposals, decisions, val
    assert clean.best_generation == dirty.best_generation
    assert dirty.final["test"]["accuracy"] == 0.0 and clean.final["test"]["accuracy"] == 1.0
    # everything the models saw before the final test pass is identical
    n_before_test = len(clean_model.seen) - 32
    assert clean_model.seen[:n_before_test] == dirty_model.seen[:n_before_test]


@dataclass
class SabotageImprover(Improver):
    """Proposes a patch that makes the scripted model worse."""

    name = "sabotage"

    def propose(self, state: LoopState) -> Proposal:
        worse = state.best_harness.apply(Patch("append", text="BAD ADVICE"))
        return Proposal(harness=worse, levers=["harness"], actions=[{"type": "harness_patch", "op": "append"}])


def test_gate_rejects_a_worsening_patch(tmp_path):
    IMPROVERS.register("sabotage", SabotageImprover)

    def model_fn(messages):
        return "1" if "BAD ADVICE" in messages[0]["content"] else adder()(messages).split()[0]

    record, _ = run_toy(tmp_path, improver="sabotage", generations=2, model=ScriptedModel(fn=model_fn))
    assert record.generations[0].val["accuracy"] == 1.0
    assert [g.accepted for g in record.generations[1:]] == [False, False]
    assert record.best_generation == 0 and record.final["test"]["accuracy"] == 1.0
    assert "rejected" in record.generations[1].reason


def test_ledger_counts_every_rollout(tmp_path):
    record, model = run_toy(tmp_path, generations=2)
    led = record.ledger
    assert led.rollouts["val"] == sum(1 for g in record.generations if g.candidate is not None) * 32 - \
        32 * sum(1 for g in record.generations[1:] if g.candidate and g.candidate.harness_digest ==
                 record.generations[0].candidate.harness_digest)
    assert led.rollouts["train"] == 16 * 2  # one minibatch per generation
    assert led.rollouts["test"] == 32
    assert led.task_rollouts() == led.rollouts["train"] + led.rollouts["val"]  # test is never charged
    assert model.usage.calls == sum(led.rollouts.values())


def test_stop_rules(tmp_path):
    rec, _ = run_toy(tmp_path, name="target", generations=5, budget={"target": 1.0})
    assert rec.stop_reason.startswith("target")
    rec, _ = run_toy(tmp_path, name="rollouts", generations=5, budget={"task_rollouts": 40})
    assert rec.stop_reason.startswith("task-rollout budget") and len(rec.generations) == 2
    rec, _ = run_toy(tmp_path, name="none", improver="none")
    assert rec.stop_reason == "the none control changes nothing" and rec.generations[-1].levers == ["stop"]


class Boom(Exception):
    pass


def test_killed_run_resumes_to_the_same_record(tmp_path):
    full, _ = run_toy(tmp_path, name="full", generations=3)
    config = RunConfig(task="toy_arithmetic", improver="h", seed=7, budget=Budget(generations=3))
    calls = {"n": 0}

    def kill_mid_generation(kind, **info):
        if kind == "sample" and info["split"] == "val":
            calls["n"] += 1
            if calls["n"] == 32 * 2 + 5:  # in the middle of generation 2's val scoring
                raise Boom()

    with pytest.raises(Boom):
        Loop(config, tmp_path / "killed", model=ScriptedModel(fn=adder()), events=kill_mid_generation).run()
    partial = RunRecord.load(tmp_path / "killed")
    assert partial.status == "running" and len(partial.generations) == 2
    resumed = resume(tmp_path / "killed", model=ScriptedModel(fn=adder()))
    assert resumed.status == "finished"
    assert comparable(resumed) == comparable(full)


def test_unknown_improver_option_is_a_clear_error(tmp_path):
    from sia_bench.task import OptionError

    with pytest.raises(OptionError, match="edit_budgt: improver 'h' has no such option. Did you mean 'edit_budget'"):
        run_toy(tmp_path, improver_options={"edit_budgt": 3})
