"""Improver ``w`` through the real loop on toy_arithmetic: adapters per generation, ledger, gate, reproducibility."""

from __future__ import annotations

import pytest

pytest.importorskip("torch")

from sia_bench.improvers.weights import WeightsImprover  # noqa: E402
from sia_bench.loop import Loop, RunConfig  # noqa: E402
from sia_bench.records import Budget  # noqa: E402
from sia_bench.registry import IMPROVERS  # noqa: E402
from sia_bench.task import OptionError  # noqa: E402
from tests.doubles import ScriptedModel, adder  # noqa: E402

# The random tiny model never answers a sum right, so GRPO would see only zero-variance groups; RFT with threshold 0
# keeps every sample (SFT on its own outputs): a mechanics check that really trains and saves each generation.
MECHANICS = {"algo": "rft", "reward_threshold": "0", "steps": "1", "group_size": "2", "prompts_per_step": "2",
             "max_new_tokens": "4", "lr": "0.01"}


@pytest.fixture(scope="module")
def own_tiny():
    from sia_bench.models import build_model

    return build_model("tiny")  # not the session fixture: this one gets a LoRA adapter attached


def _run(tmp_path, name, model, options, generations=2):
    config = RunConfig(task="toy_arithmetic", improver="w", improver_options=options, seed=3, limit=4,
                       budget=Budget(generations=generations))
    return Loop(config, tmp_path / name, model=model).run()


def test_settings_are_validated_and_labelled():
    assert IMPROVERS.get("w") is WeightsImprover
    imp = WeightsImprover.from_options(algo="entropic", steps="3", lr="0.001")
    assert (imp.algo, imp.steps, imp.lr, imp.label()) == ("entropic", 3, 0.001, "w[entropic]")
    assert imp.update().to_dict()["steps"] == 3
    with pytest.raises(OptionError, match="algo"):
        WeightsImprover.from_options(algo="dpo")
    with pytest.raises(OptionError, match="group_size"):
        WeightsImprover.from_options(group_size="1")
    with pytest.raises(OptionError, match="no setting"):
        WeightsImprover.from_options(num_iterations="2")


def test_a_model_without_weights_stops_cleanly(tmp_path):
    record = _run(tmp_path, "scripted", ScriptedModel(fn=adder()), {})
    gen = record.generations[1]
    assert "stop" in gen.levers and "no trainable weights" in gen.reason
    assert record.status == "finished"


def test_w_writes_an_adapter_per_generation_and_reproduces(tmp_path, own_tiny):
    record = _run(tmp_path, "a", own_tiny, MECHANICS)
    run_dir = tmp_path / "a"
    assert record.status == "finished" and len(record.generations) == 3
    for index in (1, 2):
        gen = record.generations[index]
        assert (run_dir / f"gen_{index:03d}" / "adapter" / "adapter_model.safetensors").exists()
        assert gen.proposer == "w[rft]" and gen.levers == ["weights"]
        action = gen.actions[0]
        assert action["type"] == "weight_update" and action["report"]["optimizer_steps"] == 1
        assert gen.candidate is not None and gen.candidate.adapter_dir == f"gen_{index:03d}/adapter"
        assert gen.ledger.train_steps == 1 and gen.ledger.train_rollouts == 2 * 2
        assert gen.ledger.train_tokens > 0 and gen.ledger.train_seconds > 0
        assert "val" in gen.reason or "kept" in gen.reason or "rejected" in gen.reason
    assert record.ledger.train_steps == 2
    # A pure function of the loop state: the same seed gives the same adapters, bit for bit.
    again = _run(tmp_path, "b", own_tiny, MECHANICS, generations=1)
    for index in (1,):
        a = (run_dir / f"gen_{index:03d}" / "adapter" / "adapter_model.safetensors").read_bytes()
        b = (tmp_path / "b" / f"gen_{index:03d}" / "adapter" / "adapter_model.safetensors").read_bytes()
        assert a == b
    assert [g.val for g in again.generations] == [g.val for g in record.generations[:2]]


def test_no_signal_means_no_candidate(tmp_path, own_tiny):
    from sia_bench.agent import Agent
    from sia_bench.improvers.base import LoopState
    from sia_bench.loop import build_task
    from sia_bench.records import Ledger

    task = build_task("toy_arithmetic", {})
    state = LoopState(generation=1, task=task, agent=Agent(task, own_tiny), train=task.split("train"),
                      best_harness=task.default_harness(), best_adapter_dir=None, best_val={}, history=[],
                      ledger=Ledger(), gen_ledger=Ledger(), budget=None, seed=5, workdir=tmp_path)
    imp = WeightsImprover.from_options(steps="1", group_size="2", prompts_per_step="1", max_new_tokens="2")
    proposal = imp.propose(state)  # the random model never sums right: every group has zero variance
    assert proposal.adapter_dir is None and "adapter unchanged" in proposal.reason  # the loop spends no val pass
    assert proposal.actions[0]["report"]["skipped_groups"] == 3  # 1 prompt x (1 + 2 resample rounds)
    assert state.gen_ledger.train_rollouts == 6 and state.gen_ledger.train_steps == 0
