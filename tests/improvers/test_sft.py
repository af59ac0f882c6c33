"""The ``sft`` control: supervised LoRA rounds on Task.reference_text, on the tiny random Llama.

The gradient is checked against a plain full-row forward (no shared-prefix cache); the learning checks use the toy
tasks of trainer_doubles with a gold completion attached.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from sia_bench import metering  # noqa: E402
from sia_bench.improvers.trainers import (WeightUpdate, apply_weight_update, backward_minibatch,  # noqa: E402
                                          estimate_step_cost, prepare_adapter, reference_groups)
from sia_bench.task import OptionError  # noqa: E402
from tests.improvers.trainer_doubles import (DirectionTask, RankTask, live_lora, loop_state, p_rewarded,  # noqa: E402
                                             split_params, tiny)

GOLD = "a quiet river bank"


class GoldTask(DirectionTask):
    """Free generation whose gold reply is GOLD; instances in ``missing`` have none."""

    def __init__(self, missing: set[int] = frozenset()):
        super().__init__({GOLD})
        self.missing = set(missing)

    def reference_text(self, harness, instance):
        return None if instance.input in self.missing else GOLD


class GoldRankTask(RankTask):
    def reference_text(self, harness, instance):
        return self.rewarded


@pytest.fixture(scope="module")
def model():
    return tiny()


def _gold_logp(task, model) -> float:
    """Mean token log-prob of GOLD + EOS after 4 val prompts (plain forwards)."""
    tok = model.tokenizer
    row = tok(GOLD, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    total = 0.0
    with torch.no_grad():
        for inst in task.split("val")[:4]:
            prefix = model.prompt_ids(task.render(task.default_harness(), inst).messages)[0]
            total += _row_logps(model, prefix, row).mean().item()
    return total / 4


def _row_logps(model, prefix, row):
    logits = model.hf(input_ids=torch.tensor([prefix + row])).logits[0, len(prefix) - 1:-1].float()
    return torch.log_softmax(logits, -1).gather(-1, torch.tensor(row).unsqueeze(-1)).squeeze(-1)


def test_sft_gradient_is_the_mean_token_nll_of_the_gold_completion(model, tmp_path):
    live_lora(model, seed=3)
    task = GoldTask()
    state = loop_state(task, model, tmp_path)
    inst = task.split("train")[0]
    (group,) = reference_groups(state, task.default_harness(), [inst])
    tok = model.tokenizer
    prefix = model.prompt_ids(task.render(task.default_harness(), inst).messages)[0]  # what the sampler prefills
    row = tok(GOLD, add_special_tokens=False)["input_ids"] + [tok.eos_token_id]  # EOS kept, as sampled rows keep it
    assert group.prompt_ids == prefix and group.completions == [row] and group.weights == [1.0]
    params = [p for _, p in model.hf.named_parameters() if p.requires_grad]
    model.hf.zero_grad(set_to_none=True)
    terms = backward_minibatch(model, [group], WeightUpdate(algo="sft"), chunk_tokens=4)
    actual = [p.grad.clone() for p in params]
    model.hf.zero_grad(set_to_none=True)
    nll = -_row_logps(model, prefix, row).mean()
    expected = torch.autograd.grad(nll, params)
    assert terms.count == len(row) and terms.loss == pytest.approx(nll.item(), rel=1e-4)
    assert any(e.abs().max() > 1e-4 for e in expected)
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-3, atol=2e-5)


def test_sft_steps_raise_the_gold_completions_log_prob(model, tmp_path):
    task = GoldTask()
    prepare_adapter(model, None, 8, 0)
    before = _gold_logp(task, model)
    lora0, base0 = split_params(model)
    update = WeightUpdate(algo="sft", steps=2, lr=2e-2, prompts_per_step=4, warmup_steps=0)
    state = loop_state(task, model, tmp_path)
    with metering.charging(state.gen_ledger):
        _, report = apply_weight_update(state, task.default_harness(), update)
    after = _gold_logp(task, model)
    assert report["optimizer_steps"] == 2 and after >= before + 1.0, (before, after, report["loss_per_step"])
    lora1, base1 = split_params(model)
    assert all(torch.equal(base0[n], base1[n]) for n in base0) and any(not torch.equal(lora0[n], lora1[n])
                                                                       for n in lora0)
    # no rollouts: nothing sampled or charged as train_rollout; the gradient passes are charged as train_step
    led = state.gen_ledger
    assert report["rollouts"] == led.train_rollouts == 0 and led.train_tokens == 0
    assert "train_rollout" not in led.flops and led.flops["train_step"] > 0 and led.train_steps == 2
    assert report["sample_flops"] == 0 and report["train_flops"] > 0


def test_sft_under_a_rank_harness_raises_the_gold_options_probability(model, tmp_path):
    task = GoldRankTask()
    prepare_adapter(model, None, 8, 0)
    before = p_rewarded(task, model)
    state = loop_state(task, model, tmp_path)
    (group,) = reference_groups(state, task.default_harness(), task.split("train")[:1])
    k = task.options.index(task.rewarded)
    assert group.rank and group.picks == [k] and group.texts == [task.rewarded] and len(group.options) == 6
    _, report = apply_weight_update(state, task.default_harness(),
                                    WeightUpdate(algo="sft", steps=1, lr=5e-2, prompts_per_step=4, warmup_steps=0))
    after = p_rewarded(task, model)
    assert report["optimizer_steps"] == 1 and after >= before + 0.3, (before, after, report["loss_per_step"])


def test_instances_without_a_reference_are_skipped_and_a_round_without_any_raises(model, tmp_path):
    odd = GoldTask(missing=set(range(1, 16, 2)))
    update = WeightUpdate(algo="sft", steps=2, lr=1e-2, prompts_per_step=4)
    _, report = apply_weight_update(loop_state(odd, model, tmp_path / "a"), odd.default_harness(), update)
    rounds = report["steps"]
    assert sum(r["no_reference"] for r in rounds) > 0 and report["optimizer_steps"] == 2
    assert all(r["groups_used"] + r["no_reference"] == 4 for r in rounds)
    assert report["skipped_groups"] == sum(r["no_reference"] for r in rounds)
    none = GoldTask(missing=set(range(16)))
    with pytest.raises(ValueError, match="sft: task 'direction' has no reference_text"):
        apply_weight_update(loop_state(none, model, tmp_path / "b"), none.default_harness(), update)
    rank = GoldRankTask(options=["apple", "river"], rewarded="stone")  # gold not among the options: no reference
    with pytest.raises(ValueError, match="no reference_text"):
        apply_weight_update(loop_state(rank, model, tmp_path / "c"), rank.default_harness(), update)


def test_sft_continues_exactly_across_a_save_and_reload(model, tmp_path):
    """Two steps in one update equal one + one with a reload into a fresh model (prompt stream, optimizer, LR)."""
    task = GoldTask()
    settings = {"algo": "sft", "lr": 1e-2, "prompts_per_step": 2, "warmup_steps": 2}
    # the first two may share a model: a fresh start re-initialises the adapter from the seed
    whole, _ = apply_weight_update(loop_state(task, model, tmp_path / "whole"), task.default_harness(),
                                   WeightUpdate(steps=2, **settings))
    half, _ = apply_weight_update(loop_state(task, model, tmp_path / "half"), task.default_harness(),
                                  WeightUpdate(steps=1, **settings))
    rest, report = apply_weight_update(loop_state(task, tiny(), tmp_path / "rest", best=half),
                                       task.default_harness(), WeightUpdate(steps=1, **settings))
    assert report["optimizer"].startswith("restored")
    from safetensors.torch import load_file

    for name in ("adapter_model.safetensors", "optimizer.safetensors"):
        a, b = load_file(str(whole / name)), load_file(str(rest / name))
        assert a.keys() == b.keys() and a
        for key in a:
            torch.testing.assert_close(a[key], b[key], rtol=1e-5, atol=1e-7, msg=key)


def test_cost_of_sft_has_no_sampling_term():
    sft = WeightUpdate(algo="sft", prompts_per_step=4, epochs=2)
    free = estimate_step_cost(sft, parameters=1_000, prompt_tokens=100, completion_tokens=20, flops_per_second=1e6)
    assert free.sample_flops == 0  # no rollouts and no old-policy pass, even over several epochs
    assert free.train_flops == 2 * 6 * 1_000 * 4 * (100 + 20)  # one gold row per prompt
    rank = estimate_step_cost(WeightUpdate(algo="sft"), parameters=1_000, prompt_tokens=600, completion_tokens=5,
                              options=5)
    assert rank.sample_flops == 0 and rank.train_flops == 6 * 1_000 * 4 * (600 + 5 * 5)  # every option's score
    rft = estimate_step_cost(WeightUpdate(algo="rft", epochs=2), parameters=1_000, prompt_tokens=100,
                             completion_tokens=20)
    assert rft.sample_flops == 2 * 1_000 * 4 * (100 + 8 * 20)  # sampling only: its loss needs no old-policy pass
    with pytest.raises(ValueError, match="kl_coef"):
        WeightUpdate(algo="sft", kl_coef=0.1).validate()


def test_registry_builds_sft_and_refuses_another_algo():
    from sia_bench.loop import build_improver

    arm = build_improver("sft", {"steps": 3})
    assert arm.algo == "sft" and arm.uses_weights and arm.label() == "sft"
    assert arm.update().to_dict()["algo"] == "sft" and arm.update().steps == 3
    with pytest.raises(OptionError, match="algo is fixed to 'sft'"):
        build_improver("sft", {"algo": "grpo"})
    with pytest.raises(OptionError, match="kl_coef"):
        build_improver("sft", {"kl_coef": 0.5})
