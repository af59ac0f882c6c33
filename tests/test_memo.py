"""Memoised results: the same key gives the same numbers without model calls; anything that can change an answer
changes the key; a damaged entry is recomputed."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from sia_bench.agent import Agent
from sia_bench.harness import Patch
from sia_bench.memo import ResultMemo
from sia_bench.records import Ledger
from tests.doubles import ScriptedModel, adder
from tests.test_metering import RankToy, SizedScripted

VOLATILE = ("seconds", "reused")


def stable(trajs):
    return [{k: v for k, v in t.to_dict().items() if k not in VOLATILE} for t in trajs]


def test_memoised_pass_reproduces_numbers_without_model_calls(tmp_path, tiny_model):
    task = RankToy()
    harness = task.default_harness()
    val = task.split("val")[:4]
    fresh_ledger, memo_ledger = Ledger(), Ledger()
    fresh = Agent(task, tiny_model).run(harness, val, "val", ledger=fresh_ledger)
    memo = ResultMemo(tmp_path / "memo")
    first = Agent(task, tiny_model, memo).run(harness, val, "val", ledger=Ledger())
    calls = tiny_model.usage.calls
    again = Agent(task, tiny_model, memo).run(harness, val, "val", ledger=memo_ledger)
    assert tiny_model.usage.calls == calls  # nothing recomputed
    assert stable(again) == stable(first) == stable(fresh)
    assert all(t.reused for t in again) and not any(t.reused for t in first)
    for name in ("tokens_in", "tokens_out", "flops", "rollouts"):  # charged as if computed
        assert getattr(memo_ledger, name) == getattr(fresh_ledger, name)
    assert memo_ledger.reused == {"val": 4} and "val" not in memo_ledger.calls


def test_key_covers_harness_weights_instance_and_sampling_seed(tmp_path, tiny_model):
    task = RankToy()
    harness = task.default_harness()
    inst = task.split("val")[0]
    agent = Agent(task, tiny_model, ResultMemo(tmp_path / "memo"))
    base = agent._keys(harness, [inst], _params(harness, 0), True)
    assert base == agent._keys(harness, [inst], _params(harness, 1), True)  # greedy: the seed changes nothing
    sampled = harness.apply(Patch("set_param", param="temperature", value=0.7))
    assert agent._keys(sampled, [inst], _params(sampled, 0), True) != agent._keys(sampled, [inst],
                                                                                   _params(sampled, 1), True)
    edited = harness.apply(Patch("append", text="Think about carries."))
    assert agent._keys(edited, [inst], _params(edited, 0), True) != base
    relabelled = replace(inst, target=inst.target + 1)
    assert agent._keys(harness, [relabelled], _params(harness, 0), True) != base
    from sia_bench.models import build_model

    model = build_model("tiny", seed=11)
    other = Agent(task, model, ResultMemo(tmp_path / "memo"))
    untrained = other._keys(harness, [inst], _params(harness, 0), True)
    model.enable_lora(rank=2)
    fresh_adapter = other._keys(harness, [inst], _params(harness, 0), True)
    with torch.no_grad():  # a training step changes the adapter in place: the key follows its content
        next(p for n, p in model.hf.named_parameters() if "lora_B" in n).add_(0.1)
    trained = other._keys(harness, [inst], _params(harness, 0), True)
    assert len({untrained[0], fresh_adapter[0], trained[0]}) == 3
    model.load_adapter(None)  # back to the bare base model: its results are reusable again
    assert other._keys(harness, [inst], _params(harness, 0), True) == untrained


def _params(harness, seed):
    from sia_bench.models.base import SamplingParams

    return SamplingParams(max_new_tokens=harness["max_new_tokens"], temperature=harness["temperature"], seed=seed)


def test_generation_keys_name_the_batch_and_damaged_entries_are_recomputed(tmp_path, toy_task):
    memo = ResultMemo(tmp_path / "memo")
    model = SizedScripted(fn=adder())
    harness = toy_task.default_harness()
    val = toy_task.split("val")[:3]
    Agent(toy_task, model, memo).run(harness, val, "val")
    seen = len(model.seen)
    Agent(toy_task, model, memo).run(harness, val, "val")
    assert len(model.seen) == seen
    Agent(toy_task, model, memo).run(harness, val[:2], "val")  # other batch mates: generated again
    assert len(model.seen) == seen + 2
    for path in (tmp_path / "memo").rglob("*.json"):
        path.write_text("{not json")
    with pytest.warns(UserWarning, match="unreadable memo entry"):
        trajs = Agent(toy_task, model, memo).run(harness, val, "val")
    assert len(model.seen) == seen + 5 and not any(t.reused for t in trajs)


def test_retried_results_replay_every_round(tmp_path, toy_task):
    harness = toy_task.default_harness().apply(Patch("set_param", param="retries", value=1))
    fresh_ledger, memo_ledger = Ledger(), Ledger()
    memo = ResultMemo(tmp_path / "memo")
    inst = toy_task.split("val")[:2]
    Agent(toy_task, SizedScripted(replies=["no idea", "26"]), memo).run(harness, inst, "val", ledger=fresh_ledger)
    model = SizedScripted(replies=["never used"])
    trajs = Agent(toy_task, model, memo).run(harness, inst, "val", ledger=memo_ledger)
    assert model.seen == [] and [t.retries for t in trajs] == [1, 0]  # "no idea" was re-asked
    assert memo_ledger.flops == fresh_ledger.flops and memo_ledger.tokens_in == fresh_ledger.tokens_in


def test_models_without_a_memo_behave_as_before(toy_task):
    model = ScriptedModel(fn=adder())
    trajs = Agent(toy_task, model).run(toy_task.default_harness(), toy_task.split("val")[:2], "val")
    assert len(model.seen) == 2 and not any(t.reused for t in trajs)


def test_a_rank_pass_killed_midway_resumes_from_its_finished_blocks(tmp_path, tiny_model, monkeypatch):
    import sia_bench.agent as agent_module

    monkeypatch.setattr(agent_module, "RANK_BLOCK", 3)
    task = RankToy()
    harness = task.default_harness()
    val = task.split("val")[:8]
    memo = ResultMemo(tmp_path / "memo")
    agent = Agent(task, tiny_model, memo)
    real, blocks = agent._run, []

    def dies_in_the_third_block(harness, instances, *args):
        blocks.append(len(instances))
        if len(blocks) == 3:
            raise KeyboardInterrupt  # killed while the third block runs
        return real(harness, instances, *args)

    monkeypatch.setattr(agent, "_run", dies_in_the_third_block)
    written = []
    with pytest.raises(KeyboardInterrupt):
        agent.run(harness, val, "val", on_sample=written.append)
    assert blocks == [3, 3, 2] and len(written) == 6  # two finished blocks were emitted before the kill
    monkeypatch.setattr(agent, "_run", real)
    resumed = agent.run(harness, val, "val")
    assert [t.reused for t in resumed] == [True] * 6 + [False] * 2
    assert stable(resumed) == stable(Agent(task, tiny_model).run(harness, val, "val"))
