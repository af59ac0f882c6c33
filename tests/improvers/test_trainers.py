"""The weight-update maths and loop on the tiny random Llama (real tokenizer, real peft, real optimizer).

The tiny model's output head is sharpened (x20) in the fixture: a 2-layer, 64-wide random model with the default
0.02-std head is almost uniform over 49k tokens, which no LoRA on attention can move far. With the sharper head a
reward defined by a direction in the head's space ("the sampled token lies in the top quarter along v") is learnable
in a few steps, which is what these tests need.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")

from sia_bench.agent import Agent  # noqa: E402
from sia_bench.harness import Harness, ParamSpec  # noqa: E402
from sia_bench.improvers.base import LoopState  # noqa: E402
from sia_bench.improvers.trainers import (WeightUpdate, adaptive_beta, apply_weight_update,  # noqa: E402
                                          entropic_advantages, entropic_weights, group_signal, grpo_advantages,
                                          prepare_adapter, sample_groups)
from sia_bench.records import Ledger  # noqa: E402
from sia_bench.task import Answer, Instance, Metric, Prompt, Score, Task  # noqa: E402

HEAD_SCALE = 20.0


def _tiny():
    from sia_bench.models import build_model

    model = build_model("tiny")
    model.hf.lm_head.weight.data *= HEAD_SCALE
    return model


@pytest.fixture(scope="module")
def model():
    return _tiny()


class DirectionTask(Task):
    """Reward 1 when the one sampled token is among the quarter of the vocabulary furthest along a fixed direction."""

    name = "direction"
    version = "0"
    metric = Metric("reward")

    def __init__(self, good: set[str], constant: dict[int, float] | None = None):
        super().__init__()
        self.good, self.constant = good, constant or {}

    def load_split(self, split):
        return [Instance(f"{split}-{i}", i) for i in range(16)]

    def default_harness(self):
        return Harness.create("---\nname: d\ndescription: say one word\n---\nSay one word.",
                              {"max_new_tokens": 1, "temperature": 1.0})

    def render(self, harness, instance):
        return Prompt([{"role": "user", "content": f"Word {instance.input}?"}])

    def parse(self, harness, instance, text):
        return Answer(text)

    def score(self, instance, answer):
        if instance.input in self.constant:
            return Score(self.constant[instance.input])
        return Score(float(answer.value in self.good))

    def perfect_answer(self, instance):
        return Answer(next(iter(self.good)))

    def null_answer(self, instance):
        return Answer("")


def _good_tokens(model) -> set[str]:
    head = model.hf.get_output_embeddings().weight.detach()
    v = torch.randn(head.shape[1], generator=torch.Generator().manual_seed(0))
    top = set(torch.topk(head @ v, head.shape[0] // 4).indices.tolist())
    decode = model.tokenizer.decode
    return {decode([i]) for i in top} - {decode([i]) for i in range(head.shape[0]) if i not in top}


@pytest.fixture(scope="module")
def task(model):
    return DirectionTask(_good_tokens(model))


def _state(task, model, tmp_path: Path, seed: int = 1, best: Path | None = None) -> LoopState:
    return LoopState(generation=1, task=task, agent=Agent(task, model), train=task.split("train"),
                     best_harness=task.default_harness(), best_adapter_dir=best, best_val={}, history=[],
                     ledger=Ledger(), gen_ledger=Ledger(), budget=None, seed=seed, workdir=tmp_path)


def _split_params(model):
    lora = {n: p.detach().clone() for n, p in model.hf.named_parameters() if "lora_" in n}
    base = {n: p.detach().clone() for n, p in model.hf.named_parameters() if "lora_" not in n}
    return lora, base


def _mean_reward(task, model, tmp_path) -> float:
    torch.manual_seed(99)
    groups = sample_groups(_state(task, model, tmp_path), task.default_harness(), task.split("val")[:8],
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
    lora0, base0 = _split_params(model)
    update = WeightUpdate(algo=algo, steps=1, lr=1e-2, group_size=8, prompts_per_step=4, max_new_tokens=1)
    adapter_dir, report = apply_weight_update(_state(task, model, tmp_path), task.default_harness(), update)
    lora1, base1 = _split_params(model)
    assert report["optimizer_steps"] == 1, report
    assert any(not torch.equal(lora0[n], lora1[n]) for n in lora0)
    assert all(torch.equal(base0[n], base1[n]) for n in base0)
    assert (adapter_dir / "adapter_model.safetensors").exists()
    assert math.isfinite(report["loss_per_step"][0])


def test_reward_rises_over_a_few_grpo_steps(task, model, tmp_path):
    prepare_adapter(model, None, 8, 0)
    before = _mean_reward(task, model, tmp_path)
    update = WeightUpdate(steps=3, lr=2e-2, group_size=8, prompts_per_step=4, max_new_tokens=1, warmup_steps=0)
    _, report = apply_weight_update(_state(task, model, tmp_path, seed=1), task.default_harness(), update)
    after = _mean_reward(task, model, tmp_path)
    assert after >= before + 0.2, (before, after, report["mean_reward_per_step"])


def test_saved_adapter_reloads_to_identical_outputs(task, model, tmp_path):
    state = _state(task, model, tmp_path)
    adapter_dir, _ = apply_weight_update(state, task.default_harness(),
                                         WeightUpdate(steps=2, lr=5e-2, group_size=8, max_new_tokens=1))
    prompts = [model.chat_text(task.render(task.default_harness(), i).messages) for i in task.split("val")[:4]]

    def logits(m):
        with torch.no_grad():
            return m.hf(**m.encode_prompts(prompts)).logits

    trained = logits(model)
    with model.hf.disable_adapter():
        assert not torch.allclose(logits(model), trained)  # the adapter matters
    fresh = _tiny()  # a new process's view: same base, adapter from disk
    fresh.load_adapter(adapter_dir)
    assert torch.equal(logits(fresh), trained)
    from sia_bench.models.base import SamplingParams

    greedy = SamplingParams(max_new_tokens=6)
    assert [g.text for g in fresh.generate_texts(prompts, greedy)] == [g.text for g in model.generate_texts(prompts,
                                                                                                            greedy)]


def test_start_from_the_best_adapter(task, model, tmp_path):
    first, _ = apply_weight_update(_state(task, model, tmp_path / "a"), task.default_harness(),
                                   WeightUpdate(steps=1, lr=5e-2, group_size=8, max_new_tokens=1))
    saved, _ = _split_params(model)
    prepare_adapter(model, None, 8, 5)  # scramble: a fresh adapter is in memory now
    _, report = apply_weight_update(_state(task, model, tmp_path / "b", best=first), task.default_harness(),
                                    WeightUpdate(steps=1, lr=1e-9, group_size=8, max_new_tokens=1))
    assert report["started_from"] == str(first)
    now, _ = _split_params(model)
    assert all(torch.allclose(saved[n], now[n], atol=1e-6) for n in saved)  # tiny lr: still the loaded weights


def test_zero_variance_groups_are_skipped_resampled_and_never_trained(model, tmp_path):
    constant = DirectionTask(set(), constant={i: 1.0 for i in range(16)})
    state = _state(constant, model, tmp_path)
    update = WeightUpdate(steps=2, group_size=4, prompts_per_step=2, resample_rounds=1, max_new_tokens=1)
    _, report = apply_weight_update(state, constant.default_harness(), update)
    assert report["optimizer_steps"] == 0
    assert report["skipped_groups"] == 2 * 2 * 2  # steps x prompts x (1 + resample rounds)
    assert all("no group carried a learning signal" in s["note"] for s in report["steps"])
    lora_b = [p for n, p in _split_params(model)[0].items() if "lora_B" in n]
    assert lora_b and all(not p.any() for p in lora_b)  # still the fresh adapter (B = 0): nothing was trained
    assert state.gen_ledger.train_rollouts == 2 * 2 * 2 * 4 and state.gen_ledger.train_steps == 0


def test_mixed_groups_resample_to_fill_the_step(task, model, tmp_path):
    half = DirectionTask(task.good, constant={i: 0.0 for i in range(0, 16, 2)})  # even ids: always 0
    prepare_adapter(model, None, 8, 0)
    state = _state(half, model, tmp_path, seed=4)
    update = WeightUpdate(steps=1, group_size=8, prompts_per_step=4, resample_rounds=4, max_new_tokens=1)
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
    state = _state(nan_task, model, tmp_path)
    with pytest.raises(ValueError, match="not train instances"):
        apply_weight_update(state, nan_task.default_harness(), WeightUpdate(instance_ids=["val-0"]))
    update = WeightUpdate(steps=1, group_size=8, prompts_per_step=2, instance_ids=["train-1", "train-3"],
                          max_new_tokens=1)
    _, report = apply_weight_update(state, nan_task.default_harness(), update)
    assert report["steps"][0]["unscorable"] > 0  # NaN rewards are counted, excluded from baselines, not fatal
    assert math.isfinite(report["mean_reward_per_step"][0])


# -- rank-mode harnesses: the rollouts are the ranker's options --------------------------------------------------
class RankTask(DirectionTask):
    """Pick one of six words by log-likelihood (answer_mode=rank); reward 1 for one fixed word."""

    OPTIONS = ["apple", "river", "stone", "cloud", "ember", "maple"]

    def __init__(self):
        super().__init__({"stone"})

    def default_harness(self):
        return Harness.create("---\nname: r\ndescription: pick a word\n---\nPick a word.",
                              {"max_new_tokens": 4, "temperature": 0.0, "answer_mode": "rank"},
                              {"answer_mode": ParamSpec(str, "generate", choices=("generate", "rank"))})

    def render(self, harness, instance):
        return Prompt([{"role": "user", "content": f"Word {instance.input}?"}], options=list(self.OPTIONS))


def _p_rewarded(task, model) -> float:
    prompts = [task.render(task.default_harness(), inst) for inst in task.split("val")[:8]]
    scores = model.loglikelihood([(p.messages, p.options) for p in prompts])
    return sum(torch.softmax(torch.tensor(s), 0)[2].item() for s in scores) / len(scores)


def test_rank_mode_rollouts_sample_the_options_the_agent_ranks(tmp_path):
    model, task = _tiny(), RankTask()
    torch.manual_seed(0)
    groups = sample_groups(_state(task, model, tmp_path), task.default_harness(), task.split("train")[:4],
                           WeightUpdate(group_size=6))
    tok = model.tokenizer
    for g in groups:
        assert set(g.texts) <= set(RankTask.OPTIONS) and len(g.texts) == 6
        assert g.completions == [tok(t, add_special_tokens=False)["input_ids"] for t in g.texts]
        assert g.rewards == [float(t == "stone") for t in g.texts]
        assert g.prompt_ids == tok(model.chat_text(task.render(task.default_harness(), g.instance).messages),
                                   add_special_tokens=False)["input_ids"]


def test_grpo_under_a_rank_harness_raises_the_rewarded_option(tmp_path):
    model, task = _tiny(), RankTask()
    prepare_adapter(model, None, 8, 0)
    before = _p_rewarded(task, model)
    update = WeightUpdate(steps=2, lr=5e-2, group_size=6, prompts_per_step=4)
    _, report = apply_weight_update(_state(task, model, tmp_path), task.default_harness(), update)
    after = _p_rewarded(task, model)
    assert report["optimizer_steps"] >= 1 and report["mean_reward_per_step"][0] < 1.0, report
    assert after >= before + 0.3, (before, after, report["mean_reward_per_step"])
    answers = Agent(task, model).run(task.default_harness(), task.split("test")[:8], "test")
    assert sum(t.score for t in answers) >= 6  # the greedy ranker now picks the rewarded word


def test_row_chunks_accumulate_the_same_gradient():
    """Rows split into chunks over a shared prefix (gradients gathered on the prefix, sent back once) give the
    gradient of one forward over every row."""
    from sia_bench.improvers.trainers import Group, backward_minibatch

    model = _tiny()
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
