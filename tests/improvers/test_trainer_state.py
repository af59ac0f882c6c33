"""Training state across generations: exact continuation, safe files, the LR schedule and the cost estimates."""

from __future__ import annotations

import json
import math

import pytest

torch = pytest.importorskip("torch")

from safetensors.torch import load_file  # noqa: E402

from sia_bench.improvers.trainers import (WeightUpdate, apply_weight_update, estimate_step_cost,  # noqa: E402
                                          lr_at, steps_for_budget)
from tests.improvers.trainer_doubles import DirectionTask, RankTask, good_tokens, loop_state, tiny  # noqa: E402


def _saved(folder):
    tensors = {f"adapter/{k}": v for k, v in load_file(str(folder / "adapter_model.safetensors")).items()}
    tensors.update({f"optimizer/{k}": v for k, v in load_file(str(folder / "optimizer.safetensors")).items()})
    if (folder / "value_head.safetensors").exists():
        tensors.update({f"value/{k}": v for k, v in load_file(str(folder / "value_head.safetensors")).items()})
    scalars = json.loads((folder / "trainer_state.json").read_text())
    scalars.pop("updates")  # how many calls it took: 1 vs 2 by construction
    return tensors, scalars


@pytest.mark.parametrize("algo, rank, n", [("grpo", False, 2), ("ppo", True, 4)])
def test_n_steps_equal_two_halves_with_a_reload_into_a_fresh_model(algo, rank, n, tmp_path):
    def task_for(model):
        return RankTask() if rank else DirectionTask(good_tokens(model))

    settings = {"algo": algo, "lr": 1e-2, "group_size": 6, "prompts_per_step": 2, "max_new_tokens": 1,
                "warmup_steps": 3, "schedule_steps": 10}
    whole_model = tiny()
    whole_task = task_for(whole_model)
    whole, report = apply_weight_update(loop_state(whole_task, whole_model, tmp_path / "whole"),
                                        whole_task.default_harness(), WeightUpdate(steps=n, **settings))
    assert report["optimizer_steps"] > 0
    # The first half may reuse the model object: a fresh start re-initialises the adapter from the seed.
    half, _ = apply_weight_update(loop_state(whole_task, whole_model, tmp_path / "half"),
                                  whole_task.default_harness(), WeightUpdate(steps=n // 2, **settings))
    fresh = tiny()  # a new process's view: the base model, then everything else from the half's folder
    fresh_task = task_for(fresh)
    rest, rest_report = apply_weight_update(loop_state(fresh_task, fresh, tmp_path / "rest", best=half),
                                            fresh_task.default_harness(), WeightUpdate(steps=n // 2, **settings))
    assert rest_report["started_from"] == str(half) and rest_report["optimizer"].startswith("restored")
    (a_tensors, a_scalars), (b_tensors, b_scalars) = _saved(whole), _saved(rest)
    assert a_scalars == b_scalars and a_scalars["global_step"] == report["global_step"]
    assert a_tensors.keys() == b_tensors.keys()
    assert any(k.endswith(".exp_avg_sq") for k in a_tensors) and (algo != "ppo" or "value/weight" in a_tensors)
    for key in a_tensors:
        torch.testing.assert_close(a_tensors[key], b_tensors[key], rtol=1e-5, atol=1e-7, msg=key)


def test_state_files_are_safe_formats_and_a_rejected_attempt_restarts_fresh(tmp_path):
    model, task = tiny(), RankTask()
    update = WeightUpdate(algo="ppo", steps=1, lr=1e-2, group_size=6, prompts_per_step=2)
    first, report = apply_weight_update(loop_state(task, model, tmp_path / "a"), task.default_harness(), update)
    assert report["optimizer"] == "fresh" and report["global_step"] == report["optimizer_steps"] > 0
    suffixes = {p.suffix for p in first.iterdir()}
    assert suffixes <= {".safetensors", ".json", ".md"}, suffixes  # no pickle: peft's README.md at most
    # Warm start from the kept adapter continues its position; after a rejection (best = none) training restarts.
    _, cont = apply_weight_update(loop_state(task, model, tmp_path / "b", seed=7, best=first),
                                  task.default_harness(), WeightUpdate(algo="grpo", steps=1, group_size=6,
                                                                       prompts_per_step=2))
    assert cont["optimizer"].startswith("restored") and cont["started_from"] == str(first)
    assert cont["global_step"] == report["global_step"] + cont["optimizer_steps"]
    kept = load_file(str(tmp_path / "b" / "adapter" / "optimizer.safetensors"))
    assert "value_head.weight.exp_avg" in kept  # grpo does not train the value head but carries its moments on
    assert (tmp_path / "b" / "adapter" / "value_head.safetensors").exists()
    _, again = apply_weight_update(loop_state(task, model, tmp_path / "c", seed=8), task.default_harness(),
                                   WeightUpdate(algo="grpo", steps=1, group_size=6, prompts_per_step=2))
    assert again["optimizer"] == "fresh" and again["started_from"] == "fresh"
    assert again["global_step"] == again["optimizer_steps"]


def test_after_a_rejected_update_the_next_continues_it_unless_told_to_restart(tmp_path):
    from sia_bench.records import Candidate, GenerationRecord

    model, task = tiny(), RankTask()
    settings = {"algo": "grpo", "steps": 1, "lr": 1e-2, "group_size": 6, "prompts_per_step": 2}
    first, report = apply_weight_update(loop_state(task, model, tmp_path / "run" / "gen_001"),
                                        task.default_harness(), WeightUpdate(**settings))
    assert report["optimizer_steps"] == 1
    rejected = GenerationRecord(index=1, actions=[{"type": "weight_update", "report": report}], accepted=False,
                                candidate=Candidate(harness_digest="h", harness_dir="gen_001/harness",
                                                    adapter_dir="gen_001/adapter"))

    def next_update(name, continue_from):
        state = loop_state(task, model, tmp_path / name / "gen_002")
        if name == "run":
            state.history = [rejected]
        return apply_weight_update(state, task.default_harness(),
                                   WeightUpdate(**settings, continue_from=continue_from))[1]

    last = next_update("run", "last")  # best kept adapter: none; the rejected one's trajectory goes on
    assert last["started_from"] == str(first) and last["optimizer"].startswith("restored")
    assert last["global_step"] == 1 + last["optimizer_steps"]
    best = next_update("run", "best")
    assert best["started_from"] == "fresh" and best["global_step"] == best["optimizer_steps"]
    empty = next_update("other", "last")  # no earlier update in this run: nothing to continue
    assert empty["started_from"] == "fresh"
    with pytest.raises(ValueError, match="continue_from"):
        WeightUpdate(continue_from="first").validate()


def test_learning_rate_schedule_by_hand():
    warm = WeightUpdate(lr=1e-3, warmup_steps=4)
    assert [lr_at(s, warm) for s in range(6)] == pytest.approx([2.5e-4, 5e-4, 7.5e-4, 1e-3, 1e-3, 1e-3])
    cos = WeightUpdate(lr=1e-3, warmup_steps=0, schedule_steps=10)
    assert lr_at(0, cos) == pytest.approx(1e-3)
    assert lr_at(5, cos) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))  # halfway: cos = 0
    assert lr_at(10, cos) == lr_at(50, cos) == pytest.approx(1e-4)  # floor at 10% of the peak


def test_cost_estimates_by_hand():
    rank = WeightUpdate(group_size=8, prompts_per_step=4)  # grpo, one update per batch
    cost = estimate_step_cost(rank, parameters=1_000, prompt_tokens=600, completion_tokens=5, options=5,
                              flops_per_second=1e6)
    per_group = 600 + 5 * 5  # the prompt once, then every option
    assert cost.sample_flops == 2 * 1_000 * 4 * per_group
    assert cost.train_flops == 6 * 1_000 * 4 * per_group
    assert cost.seconds == pytest.approx((cost.sample_flops + cost.train_flops) / 1e6)
    assert steps_for_budget(10 * cost.seconds + 1e-9, cost) == 10
    ppo = WeightUpdate(algo="ppo", group_size=8, prompts_per_step=4)  # 4 epochs; free text needs an old pass
    free = estimate_step_cost(ppo, parameters=1_000, prompt_tokens=100, completion_tokens=20)
    assert free.sample_flops == 2 * (2 * 1_000 * 4 * (100 + 8 * 20))  # sampling + the old-policy pass
    assert free.train_flops == 4 * 6 * 1_000 * 4 * (100 + 8 * 20)
    with pytest.raises(ValueError, match="flops_per_second"):
        steps_for_budget(100, free)


class SamePromptTask(RankTask):
    def render(self, harness, instance):
        prompt = super().render(harness, instance)
        prompt.messages[0]["content"] = "Pick a word."  # every prompt the same length, so the sum is by hand
        return prompt


def test_the_report_charges_what_the_trainer_processed(tmp_path):
    from sia_bench import metering

    model, task = tiny(), SamePromptTask()
    state = loop_state(task, model, tmp_path)
    with metering.charging(state.gen_ledger):  # as the loop runs an improver
        _, report = apply_weight_update(state, task.default_harness(),
                                        WeightUpdate(steps=2, group_size=4, prompts_per_step=2, lr=1e-2))
    metered = state.gen_ledger.flops
    assert metered["train_rollout"] + metered["train_step"] == pytest.approx(report["sample_flops"] +
                                                                             report["train_flops"])
    params = sum(p.numel() for n, p in model.hf.named_parameters() if "lora_" not in n)
    tok = model.tokenizer
    prompt = len(tok(model.chat_text(task.render(task.default_harness(), task.split("train")[0]).messages),
                     add_special_tokens=False)["input_ids"])
    group_tokens = prompt + sum(len(tok(o, add_special_tokens=False)["input_ids"]) for o in task.options)
    sampled = report["skipped_groups"] + sum(s["groups_used"] for s in report["steps"])
    assert report["sample_flops"] == 2 * params * group_tokens * sampled  # all prompts here have equal length
    trained = sum(s["groups_used"] for s in report["steps"] if s["updated"])
    assert report["train_flops"] == 6 * params * group_tokens * trained
    assert state.gen_ledger.train_steps == report["optimizer_steps"] and math.isfinite(report["seconds"])

