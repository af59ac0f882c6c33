"""The joint arm and its controls, with the trainer replaced by a recorder (training itself is tested elsewhere)."""

import json

import pytest

from sia_bench.improvers.controls import BetterTogether, parse_strategy
from sia_bench.improvers.feedback import FeedbackResponse, validate_response
from sia_bench.loop import Loop, RunConfig
from sia_bench.records import Budget
from sia_bench.task import OptionError
from tests.doubles import ScriptedModel, adder


@pytest.fixture
def trainer_calls(monkeypatch):
    """Replace the trainer: record (generation, harness) per weight update, save an empty 'adapter' and report one
    optimizer step; the scripted task model claims trainable weights so the arms reach the trainer."""
    from sia_bench.improvers import trainers

    calls = []

    def apply_weight_update(state, harness, update):
        calls.append({"generation": state.generation, "harness": harness, "update": update,
                      "prompt": state.task.render(harness, state.train[0]).messages[0]["content"]})
        path = state.workdir / "adapter"
        path.mkdir(parents=True, exist_ok=True)
        return path, {"optimizer_steps": 1, "mean_reward_per_step": [0.5], "started_from": "a fresh",
                      "skipped_groups": 0, "rollouts": 8, "seconds": 0.1}

    monkeypatch.setattr(trainers, "apply_weight_update", apply_weight_update)
    monkeypatch.setattr(ScriptedModel, "trainable", property(lambda self: True))
    return calls


def run(tmp_path, improver, generations, feedback=None, **options):
    config = RunConfig(task="toy_arithmetic", improver=improver, improver_options=options, seed=3,
                       budget=Budget(generations=generations))
    model = ScriptedModel(fn=adder())
    return Loop(config, tmp_path / improver, model=model, feedback_model=feedback).run()


def test_decision_schema_round_trips():
    data = {"diagnosis": "d", "actions": [
        {"type": "harness_patch", "op": "replace", "target": "SKILL.md", "anchor": "a", "text": "b", "rationale": "r"},
        {"type": "weight_update", "algo": "rft", "steps": 3, "lr": 0.001, "group_size": 8, "prompts_per_step": 2,
         "instance_ids": ["train-1"], "rationale": "r"},
        {"type": "stop", "rationale": "done"}]}
    parsed = validate_response(json.dumps(data), ["harness_patch", "weight_update", "stop"])
    again = FeedbackResponse.model_validate(json.loads(parsed.model_dump_json()))
    assert again == parsed
    assert [a.type for a in again.actions] == ["harness_patch", "weight_update", "stop"]


def test_weight_update_trains_under_the_patched_harness(tmp_path, trainer_calls):
    both = json.dumps({"diagnosis": "hedging; train too", "actions": [
        {"type": "harness_patch", "op": "append", "text": "Never hedge: one number only.", "rationale": "r"},
        {"type": "weight_update", "algo": "grpo", "steps": 1, "rationale": "r"}]})
    record = run(tmp_path, "wh", 1, feedback=ScriptedModel(replies=[both]))
    [call] = trainer_calls
    assert "Never hedge: one number only." in call["harness"].skill
    assert "Never hedge: one number only." in call["prompt"]  # the training prompts are the patched ones
    gen = record.generations[1]
    assert gen.levers == ["harness", "weights"] and gen.candidate.adapter_dir == "gen_001/adapter"


def test_stop_ends_the_run(tmp_path, trainer_calls):
    stop = json.dumps({"diagnosis": "nothing to gain", "actions": [{"type": "stop", "rationale": "plateau"}]})
    record = run(tmp_path, "wh", 5, feedback=ScriptedModel(replies=[stop]))
    assert len(record.generations) == 2 and record.generations[1].levers == ["stop"]
    assert record.stop_reason == "plateau" and record.status == "finished" and not trainer_calls


def test_heuristic_choice_explores_each_lever_then_follows_the_evidence(tmp_path, trainer_calls):
    record = run(tmp_path, "wh", 8)
    levers = [g.levers for g in record.generations[1:]]
    assert levers[:3] == [["harness"], ["weights"], ["harness", "weights"]]  # the stated exploration order
    assert record.improver["label"] == "wh[heuristic]"
    choices = [g.actions[0] for g in record.generations[1:]]
    assert all(c["type"] == "lever_choice" for c in choices)
    assert choices[0]["reason"].startswith("explore") and choices[2]["reason"].startswith("explore")
    later = [c for c in choices[3:] if c["lever"] != "stop"]
    assert all(set(c["scores"]) == {"harness", "weights", "both"} for c in later)
    assert [c["generation"] for c in trainer_calls][:2] == [2, 3]  # weights, then both (trained after the patch)


def test_heuristic_choice_stops_when_no_gain_is_expected(tmp_path, trainer_calls):
    record = run(tmp_path, "wh", 12, exploration=0.0, min_gain=0.5)
    assert record.generations[-1].levers == ["stop"] and "expected gain" in record.stop_reason
    assert len(record.generations) < 12  # stopped by the rule, not by the generation budget


def test_better_together_follows_its_schedule_exactly(tmp_path, trainer_calls):
    record = run(tmp_path, "bt", 6, strategy="p -> w -> p -> w")
    assert [g.levers for g in record.generations[1:]] == [["harness"], ["weights"], ["harness"], ["weights"], ["stop"]]
    assert [c["generation"] for c in trainer_calls] == [2, 4]


def test_alternation_follows_its_schedule_exactly(tmp_path, trainer_calls):
    record = run(tmp_path, "w+h-alternate", 4)
    assert [g.levers for g in record.generations[1:]] == [["harness"], ["weights"], ["harness"], ["weights"]]


def test_bad_strategy_is_a_clear_error():
    with pytest.raises(OptionError, match="steps are 'p'"):
        parse_strategy("p -> x")
    with pytest.raises(OptionError):
        BetterTogether(strategy="")


@pytest.mark.parametrize("improver, options", [("w", {}), ("bt", {"strategy": "w"}), ("w+h-alternate", {"first": "w"})])
def test_an_update_without_reward_signal_proposes_no_adapter_in_every_arm(tmp_path, trainer_calls, monkeypatch,
                                                                         improver, options):
    from sia_bench.improvers import trainers
    from sia_bench.improvers.weights import NO_SIGNAL

    def no_signal(state, harness, update):
        return state.workdir / "adapter", {"optimizer_steps": 0, "mean_reward_per_step": [float("nan")],
                                           "started_from": "a fresh", "skipped_groups": 12, "rollouts": 48,
                                           "seconds": 0.1}

    monkeypatch.setattr(trainers, "apply_weight_update", no_signal)
    record = run(tmp_path, improver, 1, **options)
    gen = record.generations[1]
    assert gen.candidate is None and gen.reason.startswith(NO_SIGNAL)
    assert gen.actions[-1]["error"] == NO_SIGNAL and gen.actions[-1]["report"]["optimizer_steps"] == 0


def test_joint_arms_stop_cleanly_when_the_model_has_no_weights(tmp_path):
    record = run(tmp_path, "bt", 3, strategy="w")
    gen = record.generations[1]
    assert gen.levers == ["stop"] and "no trainable weights" in gen.reason and record.status == "finished"


def test_joint_arms_share_the_weight_settings_and_their_validation():
    from sia_bench.improvers.weights import WeightSettings

    arm = BetterTogether.from_options(algo="rft", reward_threshold="0.5", steps="3")
    assert isinstance(arm, WeightSettings)
    update = arm.default_update(steps=5, instance_ids=["train-1"])
    assert (update.algo, update.steps, update.reward_threshold, update.instance_ids) == ("rft", 5, 0.5, ["train-1"])
    with pytest.raises(OptionError, match="group_size"):
        BetterTogether.from_options(algo="grpo", group_size="1")  # bt defaults to rft, which needs no group
