"""The weight-update loop on the tiny random Llama: mechanics, signal handling and rank-mode rollouts.

Gradient checks against hand computations are in test_objectives.py, PPO in test_ppo.py, carried state in
test_trainer_state.py.
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from sia_bench.agent import Agent  # noqa: E402
from sia_bench.improvers.trainers import (WeightUpdate, adaptive_beta, apply_weight_update,  # noqa: E402
                                          entropic_advantages, entropic_weights, group_signal, grpo_advantages,
                                          prepare_adapter, sample_groups)
from sia_bench.task import Score  # noqa: E402
from tests.improvers.trainer_doubles import (DirectionTask, RankTask, good_tokens, loop_state,  # noqa: E402
                                             p_rewarded, split_params, tiny)


@pytest.fixture(scope="module")
def model():
    return tiny()


@pytest.fixture(scope="module")
def task(model):
    return DirectionTask(good_tokens(model))


def _mean_reward(task, model, tmp_path) -> float:
    torch.manual_seed(99)
    groups = sample_groups(loop_state(task, model, tmp_path), task.default_harness(), task.split("val")[:8],
                           WeightUpdate(group_size=8, max_new_tokens=1))
    return sum(sum(g.rewards) for g in groups) / sum(len(g.rewards) for g in groups)


# -- maths -----------------------------------------------------------------------------------------------------
def test_validate_names_the_bad_setting():
    assert WeightUpdate().validate().algo == "grpo"
    for bad, name in [({"algo": "dpo"}, "algo"), ({"steps": 0}, "steps"), ({"lr": float("nan")}, "lr"),
                      ({"group_size": 1}, "group_size"), ({"temperature": 0.0}, "temperature"),
                      ({"instance_ids": []}, "instance_ids"), ({"kl_coef": -1.0}, "kl_coef"),
                      ({"lora_rank": 2.5}, "lora_rank")]:
        with pytest.raises(ValueError, match=name):
            WeightUpdate(**bad).validate()
    assert WeightUpdate(algo="rft", group_size=1).validate().group_size == 1  # RFT needs no group baseline


def test_grpo_advantages_are_group_standardised():
    adv = grpo_advantages([1.0, 0.0, 0.0, 1.0])
    r = torch.tensor([1.0, 0.0, 0.0, 1.0])
    expected = (r - r.mean()) / (r.std() + 1e-4)  # TRL: nanstd (sample std) + 1e-4
    assert adv == pytest.approx(expected.tolist())
    assert sum(adv) == pytest.approx(0.0, abs=1e-9)
    assert grpo_advantages([1.0, float("nan"), 0.0])[1] == 0.0  # unscorable rows get no advantage


def test_entropic_weights_and_adaptive_beta():
    rewards = [0.1, 0.5, 0.2, 0.9]
    beta = adaptive_beta(rewards)
    w = entropic_weights(rewards, beta)
    assert sum(w) == pytest.approx(1.0)
    assert sum(x * math.log(x * 4) for x in w) == pytest.approx(math.log(2), rel=1e-4)
    assert sorted(range(4), key=w.__getitem__) == sorted(range(4), key=rewards.__getitem__)  # more reward, more weight
    adv = entropic_advantages(rewards)
    assert sum(adv) == pytest.approx(0.0, abs=1e-9) and max(adv) == adv[3]
    assert entropic_advantages(rewards, beta=1e6) == pytest.approx([0.0] * 4, abs=1e-5)  # huge beta: uniform


def test_groups_without_signal_are_reported_as_none():
    update = WeightUpdate()
    assert group_signal("grpo", [1.0, 1.0, 1.0], update) is None
    assert group_signal("entropic", [0.3, 0.3], update) is None
    assert group_signal("rft", [0.0, 0.5], update) is None  # nothing reaches the threshold 1.0
    assert group_signal("rft", [1.0, 0.0], update) == [1.0, 0.0]


# -- training on the tiny model --------------------------------------------------------------------------------
@pytest.mark.parametrize("algo", ["grpo", "rft", "entropic"])
def test_a_step_changes_lora_and_not_the_base(algo, task, model, tmp_path):
    prepare_adapter(model, None, 8, 0)
    lora0, base0 = split_params(model)
    update = WeightUpdate(algo=algo, steps=1, lr=1e-2, group_size=8, prompts_per_step=4, max_new_tokens=1)
    adapter_dir, report = apply_weight_update(loop_state(task, model, tmp_path), task.default_harness(), update)
    lora1, base1 = split_params(model)
    assert report["optimizer_steps"] == 1, report
    assert any(not torch.equal(lora0[n], lora1[n]) for n in lora0)
    assert all(torch.equal(base0[n], base1[n]) for n in base0)
    assert (adapter_dir / "adapter_model.safetensors").exists()
    assert math.isfinite(report["loss_per_step"][0])


def test_reward_rises_over_a_few_grpo_steps(task, model, tmp_path):
    prepare_adapter(model, None, 8, 0)
    before = _mean_reward(task, model, tmp_path)
    update = WeightUpdate(steps=3, lr=2e-2, group_size=8, prompts_per_step=4, max_new_tokens=1, warmup_steps=0)
    _, report = apply_weight_update(loop_state(task, model, tmp_path, seed=1), task.default_harness(), update)
    after = _mean_reward(task, model, tmp_path)
    assert after >= before + 0.2, (before, after, report["mean_reward_per_step"])


def test_saved_adapter_reloads_to_identical_outputs(task, model, tmp_path):
    state = loop_state(task, model, tmp_path)
    adapter_dir, _ = apply_weight_update(state, task.default_harness(),
                                         WeightUpdate(steps=2, lr=5e-2, group_size=8, max_new_tokens=1))
    prompts = [model.chat_text(task.render(task.default_harness(), i).messages) for i in task.split("val")[:4]]

    def logits(m):
        with torch.no_grad():
            return m.hf(**m.encode_prompts(prompts)).logits

    trained = logits(model)
    with model.hf.disable_adapter():
        assert not torch.allclose(logits(model), trained)  # the adapter matters
    fresh = tiny()  # a new process's view: same base, adapter from disk
    fresh.load_adapter(adapter_dir)
    assert torch.equal(logits(fresh), trained)
    from sia_bench.models.base import SamplingParams

    greedy = SamplingParams(max_new_tokens=6)
    assert [g.text for g in fresh.generate_texts(prompts, greedy)] == [g.text for g in model.generate_texts(prompts,
                                                                                                            greedy)]


def test_start_from_the_best_adapter(task, model, tmp_path):
    first, _ = apply_weight_update(loop_state(task, model, tmp_path / "a"), task.default_harness(),
                                   WeightUpdate(steps=1, lr=5e-2, group_size=8, max_new_tokens=1))
    saved, _ = split_params(model)
    prepare_adapter(model, None, 8, 5)  # scramble: a fresh adapter is in memory now
    _, report = apply_weight_update(loop_state(task, model, tmp_path / "b", best=first), task.default_harness(),
                                    WeightUpdate(steps=1, lr=1e-9, group_size=8, max_new_tokens=1))
    assert report["started_from"] == str(first)
    now, _ = split_params(model)
    assert all(torch.allclose(saved[n], now[n], atol=1e-6) for n in saved)  # tiny lr: still the loaded weights


def test_zero_variance_groups_are_skipped_resampled_and_never_trained(model, tmp_path):
    constant = DirectionTask(set(), constant={i: 1.0 for i in range(16)})
    state = loop_state(constant, model, tmp_path)
    update = WeightUpdate(steps=2, group_size=4, prompts_per_step=2, resample_rounds=1, max_new_tokens=1)
    _, report = apply_weight_update(state, constant.default_harness(), update)
    assert report["optimizer_steps"] == 0
    assert report["skipped_groups"] == 2 * 2 * 2  # steps x prompts x (1 + resample rounds)
    assert all("no group carried a learning signal" in s["note"] for s in report["steps"])
    lora_b = [p for n, p in split_params(model)[0].items() if "lora_B" in n]
    assert lora_b and all(not p.any() for p in lora_b)  # still the fresh adapter (B = 0): nothing was trained
    assert state.gen_ledger.train_rollouts == 2 * 2 * 2 * 4 and state.gen_ledger.train_steps == 0


def test_mixed_groups_resample_to_fill_the_step(task, model, tmp_path):
    half = DirectionTask(task.good, constant={i: 0.0 for i in range(0, 16, 2)})  # even ids: always 0
    prepare_adapter(model, None, 8, 0)
    state = loop_state(half, model, tmp_path, seed=4)
    update = WeightUpdate(steps=1, group_size=8, prompts_per_step=4, resample_rounds=10, max_new_tokens=1)
    _, report = apply_weight_update(state, half.default_harness(), update)
    step = report["steps"][0]
    assert step["skipped_groups"] >= 1 and step["groups_used"] == 4, step
    assert state.gen_ledger.train_rollouts == report["rollouts"] == 8 * (4 + step["skipped_groups"])
    assert state.gen_ledger.train_tokens == report["tokens"] > report["rollouts"]


def test_instance_focus_and_nan_rewards(task, model, tmp_path):
    class NanTask(DirectionTask):
        def score(self, instance, answer):
            return Score(float("nan")) if answer.value.startswith(" ") else super().score(instance, answer)

    nan_task = NanTask(task.good)
    state = loop_state(nan_task, model, tmp_path)
    with pytest.raises(ValueError, match="not train instances"):
        apply_weight_update(state, nan_task.default_harness(), WeightUpdate(instance_ids=["val-0"]))
    update = WeightUpdate(steps=1, group_size=8, prompts_per_step=2, instance_ids=["train-1", "train-3"],
                          max_new_tokens=1)
    _, report = apply_weight_update(state, nan_task.default_harness(), update)
    assert report["steps"][0]["unscorable"] > 0  # NaN rewards are counted, excluded from baselines, not fatal
    assert math.isfinite(report["mean_reward_per_step"][0])


# -- rank-mode harnesses: the rollouts are the ranker's options --------------------------------------------------
def test_rank_mode_rollouts_sample_the_options_the_agent_ranks(tmp_path):
    model, task = tiny(), RankTask()
    torch.manual_seed(0)
    groups = sample_groups(loop_state(task, model, tmp_path), task.default_harness(), task.split("train")[:4],
                           WeightUpdate(group_size=6, temperature=0.7))
    tok = model.tokenizer
    prompts = [task.render(task.default_harness(), g.instance) for g in groups]
    ranker = model.loglikelihood([(p.messages, p.options) for p in prompts])  # the agent's own scores
    for g, scores in zip(groups, ranker):
        # the sampling policy is softmax(ranker score / T), computed by the trainer's own (gradient-capable) pass
        torch.testing.assert_close(g.old["logp"], torch.log_softmax(torch.tensor(scores) / 0.7, 0), atol=1e-5,
                                   rtol=1e-5)
        assert set(g.texts) <= set(RankTask.OPTIONS) and len(g.texts) == 6
        assert g.completions == [tok(t, add_special_tokens=False)["input_ids"] for t in g.texts]
        assert g.rewards == [float(t == "stone") for t in g.texts]
        assert g.prompt_ids == tok(model.chat_text(task.render(task.default_harness(), g.instance).messages),
                                   add_special_tokens=False)["input_ids"]


def test_grpo_under_a_rank_harness_raises_the_rewarded_option(tmp_path):
    model, task = tiny(), RankTask()
    prepare_adapter(model, None, 8, 0)
    before = p_rewarded(task, model)
    update = WeightUpdate(steps=2, lr=5e-2, group_size=6, prompts_per_step=4)
    _, report = apply_weight_update(loop_state(task, model, tmp_path), task.default_harness(), update)
    after = p_rewarded(task, model)
    assert report["optimizer_steps"] >= 1 and report["mean_reward_per_step"][0] < 1.0, report
    assert after >= before + 0.3, (before, after, report["mean_reward_per_step"])
    answers = Agent(task, model).run(task.default_harness(), task.split("test")[:8], "test")
    assert sum(t.score for t in answers) >= 6  # the greedy ranker now picks the rewarded word


def test_row_chunks_accumulate_the_same_gradient():
    """Rows split into chunks over a shared prefix (gradients gathered on the prefix, sent back once) give the
    gradient of one forward over every row."""
    from sia_bench.improvers.trainers import Group, backward_minibatch

    model = tiny()
    prepare_adapter(model, None, 8, 0)
    for module in model.hf.modules():  # B = 0 gives A no gradient: make both factors live
        if hasattr(module, "lora_B"):
            torch.nn.init.normal_(module.lora_B["default"].weight, std=0.1)
    groups = [Group(None, list(range(100, 100 + n)), [[5, 6, 7], [8, 9]], ["a", "b"], [1.0, 0.0], [0.7, -0.7])
              for n in (40, 64, 52)]
    settings = WeightUpdate()

    def grads(chunk_tokens):
        model.hf.zero_grad(set_to_none=True)
        terms = backward_minibatch(model, groups, settings, chunk_tokens=chunk_tokens)
        out = {n: p.grad.clone() for n, p in model.hf.named_parameters() if p.grad is not None}
        model.hf.zero_grad(set_to_none=True)
        return terms, out

    (whole, g_whole), (split, g_split) = grads(10_000), grads(1)  # one chunk per group vs one row at a time
    assert whole.count == split.count == 15 and whole.loss == pytest.approx(split.loss, abs=1e-6)
    assert g_whole.keys() == g_split.keys() and g_whole
    for name in g_whole:
        torch.testing.assert_close(g_whole[name], g_split[name], rtol=1e-3, atol=2e-5)  # fp32 summation order
