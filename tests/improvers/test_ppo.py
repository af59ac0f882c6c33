"""PPO with GAE and a value head on the LoRA model: the pieces by hand, the gradient by hand, learning on toys."""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from sia_bench.improvers.trainers import (Group, WeightUpdate, apply_weight_update, backward_minibatch,  # noqa: E402
                                          clipped_surrogate, clipped_value_loss, gae, make_value_head,
                                          prepare_adapter, sample_groups, whiten)
from tests.improvers.trainer_doubles import (DirectionTask, RankTask, good_tokens, live_lora,  # noqa: E402
                                             loop_state, p_rewarded, tiny)


@pytest.fixture(scope="module")
def model():
    return tiny()


# -- the pieces ------------------------------------------------------------------------------------------------
def test_gae_by_hand():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0]])
    values = torch.tensor([[0.5, 0.6, 0.7], [0.2, 0.4, 9.9]])  # row 2 ends after two tokens: 9.9 is padding
    mask = torch.tensor([[1.0, 1.0, 1.0], [1.0, 1.0, 0.0]])
    adv, ret = gae(rewards, values, mask, gamma=0.9, lam=0.8)
    # row 1: d2 = 1 - 0.7 = 0.3; d1 = 0.9*0.7 - 0.6 = 0.03; d0 = 0.9*0.6 - 0.5 = 0.04; A_t = d_t + 0.72 A_{t+1}
    a1 = [0.04 + 0.72 * (0.03 + 0.72 * 0.3), 0.03 + 0.72 * 0.3, 0.3]
    # row 2: the last real token sees V = 0 after it: d1 = 1 - 0.4 = 0.6; d0 = 0.9*0.4 - 0.2 = 0.16
    a2 = [0.16 + 0.72 * 0.6, 0.6, 0.0]
    torch.testing.assert_close(adv, torch.tensor([a1, a2]))
    torch.testing.assert_close(ret, torch.tensor([[a + v for a, v in zip(a1, [0.5, 0.6, 0.7])],
                                                  [a2[0] + 0.2, a2[1] + 0.4, 0.0]]))
    one, _ = gae(torch.tensor([[1.0]]), torch.tensor([[0.25]]), torch.ones(1, 1), 1.0, 0.95)
    assert one.item() == pytest.approx(0.75)  # a one-step episode (rank mode): A = r - V


def test_whiten_and_clipping_by_hand():
    x, m = torch.tensor([1.0, 2.0, 3.0, 100.0]), torch.tensor([1.0, 1.0, 1.0, 0.0])
    torch.testing.assert_close(whiten(x, m), torch.tensor([-1.0, 0.0, 1.0, 0.0]), atol=1e-6, rtol=0)
    logp, old = torch.log(torch.tensor([0.5, 1.0, 1.5])), torch.zeros(3)
    torch.testing.assert_close(clipped_surrogate(logp, old, torch.ones(3), 0.2), torch.tensor([-0.5, -1.0, -1.2]))
    torch.testing.assert_close(clipped_surrogate(logp, old, -torch.ones(3), 0.2), torch.tensor([0.8, 1.0, 1.5]))
    value, old_v, target = torch.tensor([1.0, 0.6]), torch.tensor([0.5, 0.5]), torch.tensor([0.0, 1.0])
    # (1 - 0)^2 vs (0.7 - 0)^2 -> 0.5 * 1; (0.6 - 1)^2 vs (0.6 - 1)^2 -> 0.5 * 0.16
    torch.testing.assert_close(clipped_value_loss(value, old_v, target, 0.2), torch.tensor([0.5, 0.08]))


# -- the gradient ----------------------------------------------------------------------------------------------
def _params(model, head):
    return [p for _, p in model.hf.named_parameters() if p.requires_grad] + list(head.parameters())


def _rank_group(model, picks):
    tok = model.tokenizer
    options = [tok(o, add_special_tokens=False)["input_ids"] for o in ["apple", "a quiet river", "stone"]]
    prefix = tok(model.chat_text([{"role": "user", "content": "Pick one."}]), add_special_tokens=False)["input_ids"]
    return Group(None, prefix, [options[k] for k in picks], [str(k) for k in picks], [0.0] * len(picks),
                 [0.0] * len(picks), options=options, picks=picks)


def _plain_policy_and_value(model, group, head, temperature):
    scores = []
    for o in group.options:
        out = model.hf(input_ids=torch.tensor([group.prompt_ids + o]), output_hidden_states=True)
        lp = torch.log_softmax(out.logits[0, len(group.prompt_ids) - 1:-1].float(), -1)
        scores.append(lp.gather(-1, torch.tensor(o).unsqueeze(-1)).mean())
        hidden = out.hidden_states[-1][0, len(group.prompt_ids) - 1].float()
    return torch.log_softmax(torch.stack(scores) / temperature, 0), head(hidden).squeeze(-1)


def test_ppo_rank_gradient_at_ratio_one_by_hand(model):
    live_lora(model, seed=5)
    head = make_value_head(model.hf.config.hidden_size, "cpu")
    torch.nn.init.normal_(head.weight, std=0.3)  # a live value head, so the value loss reaches the LoRA too
    settings = WeightUpdate(algo="ppo", temperature=0.9, vf_coef=0.5)
    group = _rank_group(model, [0, 1, 1, 2])
    with torch.no_grad():
        log_pi, value = _plain_policy_and_value(model, group, head, 0.9)
    group.old = {"logp": log_pi, "value": value}
    group.advantages = torch.tensor([1.0, -0.5, -0.5, 0.3])
    group.returns = torch.tensor([1.0, 0.0, 0.0, 1.0])
    params = _params(model, head)
    for p in params:
        p.grad = None
    backward_minibatch(model, [group], settings, head)
    actual = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in params]
    # by hand: -(1/N) sum A_i grad log pi(k_i) + vf_coef * (1/N) sum (V - R_i) grad V   (rho = 1, V = V_old)
    log_pi, value = _plain_policy_and_value(model, group, head, 0.9)
    n = len(group.picks)
    loss = -(group.advantages * log_pi[torch.tensor(group.picks)]).sum() / n
    loss = loss + 0.5 * (value - group.returns).mul(value.detach() - group.returns).sum() / n  # d/dV = (V - R)
    expected = [g if g is not None else torch.zeros_like(p)
                for g, p in zip(torch.autograd.grad(loss, params, allow_unused=True), params)]
    assert expected[-2].abs().max() > 1e-4 and any(e.abs().max() > 1e-5 for e in expected[:-2])
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, rtol=1e-3, atol=2e-5)


def test_clipping_stops_the_push_only_in_the_clipped_direction(model):
    live_lora(model, seed=6)
    group = _rank_group(model, [2])
    with torch.no_grad():
        log_pi, _ = _plain_policy_and_value(model, group, make_value_head(model.hf.config.hidden_size, "cpu"), 1.0)

    def lora_grad_norm(adv: float) -> float:
        group.old = {"logp": log_pi - 1.0}  # rho = e: far outside [0.8, 1.2]
        group.weights = [adv]
        model.hf.zero_grad(set_to_none=True)
        terms = backward_minibatch(model, [group], WeightUpdate(epochs=2))
        assert terms.ratio_dev == pytest.approx(math.e - 1, rel=1e-3) and terms.clipped == 1
        return sum(float(p.grad.norm()) for p in model.hf.parameters() if p.grad is not None)

    assert lora_grad_norm(+1.0) == 0.0  # already far more likely than before and clipped: no further push
    assert lora_grad_norm(-1.0) > 0.0  # a bad action that became likelier is still pushed down


# -- learning on toy rewards -----------------------------------------------------------------------------------
def test_ppo_under_a_rank_harness_learns_and_its_ratio_leaves_one(tmp_path):
    model, task = tiny(), RankTask()
    prepare_adapter(model, None, 8, 0)
    before = p_rewarded(task, model)
    update = WeightUpdate(algo="ppo", steps=3, lr=2e-2, group_size=6, prompts_per_step=4, warmup_steps=0)
    adapter_dir, report = apply_weight_update(loop_state(task, model, tmp_path), task.default_harness(), update)
    after = p_rewarded(task, model)
    assert after >= before + 0.3, (before, after, report["mean_reward_per_step"])
    assert report["epochs"] == 4 and report["minibatches"] == 2
    assert report["optimizer_steps"] == sum(s["optimizer_steps"] for s in report["steps"]) > 3
    assert any(s["ratio_max_deviation"] > 0.01 for s in report["steps"] if s["updated"])  # not REINFORCE in disguise
    assert all("value_loss" in s and "clip_fraction" in s for s in report["steps"] if s["updated"])
    assert (adapter_dir / "value_head.safetensors").exists()


def test_ppo_free_generation_learns_a_token_reward(tmp_path):
    model = tiny()
    task = DirectionTask(good_tokens(model))
    prepare_adapter(model, None, 8, 0)
    state = loop_state(task, model, tmp_path, seed=2)

    def mean_reward() -> float:
        torch.manual_seed(99)
        groups = sample_groups(state, task.default_harness(), task.split("val")[:8],
                               WeightUpdate(group_size=8, max_new_tokens=1))
        return sum(sum(g.rewards) for g in groups) / sum(len(g.rewards) for g in groups)

    before = mean_reward()
    update = WeightUpdate(algo="ppo", steps=3, lr=1e-2, group_size=8, prompts_per_step=4, max_new_tokens=1,
                          warmup_steps=0)
    _, report = apply_weight_update(state, task.default_harness(), update)
    assert mean_reward() >= before + 0.2, (before, report["mean_reward_per_step"])
