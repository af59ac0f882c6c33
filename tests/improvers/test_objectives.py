"""Each objective's gradient against a hand computation on the tiny model.

The trainer computes through a shared-prefix KV cache with chunked rows; the expected gradients here come from
plain full-row forwards (one row at a time, no cache) and the policy-gradient formulas written out by hand, e.g. for
the rank-mode option policy pi = softmax(s / T) with s_j the mean token log-prob of option j:
grad log pi(k) = (1/T) * (grad s_k - sum_j pi_j grad s_j).
"""

from __future__ import annotations

import math

import pytest

torch = pytest.importorskip("torch")

from sia_bench.improvers.trainers import (Group, WeightUpdate, backward_minibatch, group_signal,  # noqa: E402
                                          grpo_advantages, rft_keep)
from tests.improvers.trainer_doubles import live_lora, tiny  # noqa: E402

TOL = {"rtol": 1e-3, "atol": 2e-5}  # fp32, different summation order


@pytest.fixture(scope="module")
def model():
    m = tiny()
    live_lora(m, seed=3)
    return m


def _params(model):
    return [p for _, p in model.hf.named_parameters() if p.requires_grad]


def _trainer_grads(model, groups, settings):
    model.hf.zero_grad(set_to_none=True)
    backward_minibatch(model, groups, settings, chunk_tokens=4)  # force several chunks per group
    grads = [p.grad.clone() if p.grad is not None else torch.zeros_like(p) for p in _params(model)]
    model.hf.zero_grad(set_to_none=True)
    return grads


def _grad(scalar, model):
    return [g if g is not None else torch.zeros_like(p)
            for g, p in zip(torch.autograd.grad(scalar, _params(model), allow_unused=True), _params(model))]


def _combine(terms):
    """sum of coefficient x gradient lists."""
    out = None
    for coef, grads in terms:
        out = [coef * g for g in grads] if out is None else [o + coef * g for o, g in zip(out, grads)]
    return out


def _assert_close(actual, expected):
    assert any(e.abs().max() > 1e-4 for e in expected)  # a real gradient, not zeros on both sides
    for a, e in zip(actual, expected):
        torch.testing.assert_close(a, e, **TOL)


def _prefix(model, text="Pick a word, any word."):
    return model.tokenizer(model.chat_text([{"role": "user", "content": text}]), add_special_tokens=False)[
        "input_ids"]


def _row_logps(model, prefix, row, temperature=1.0):
    """log p of each token of ``row`` after ``prefix``: one plain forward of the whole row."""
    logits = model.hf(input_ids=torch.tensor([prefix + row])).logits[0, len(prefix) - 1:-1].float()
    return torch.log_softmax(logits / temperature, -1).gather(-1, torch.tensor(row).unsqueeze(-1)).squeeze(-1)


# -- rank mode: the option policy ------------------------------------------------------------------------------
OPTIONS = ["apple", "a quiet river bank", "stone wall of the old castle gate"]


def _rank_group(model, picks, rewards, weights):
    tok = model.tokenizer
    options = [tok(o, add_special_tokens=False)["input_ids"] for o in OPTIONS]
    assert len({len(o) for o in options}) == 3  # options of different lengths: length weighting would show
    return Group(None, _prefix(model), [options[k] for k in picks], [OPTIONS[k] for k in picks], rewards,
                 weights, options=options, picks=picks)


def _option_policy_grads(model, group, coefs, temperature):
    """-(1/N) sum_i c_i grad log pi(k_i), by hand from per-option score gradients."""
    scores = [_row_logps(model, group.prompt_ids, o).mean() for o in group.options]
    pi = torch.softmax(torch.stack(scores).detach() / temperature, 0)
    g_s = [_grad(s, model) for s in scores]
    mean_g = _combine([(pi[j].item(), g_s[j]) for j in range(len(scores))])
    n = len(coefs) if any(c != 0 for c in coefs) else 1
    return _combine([(-c / (n * temperature), _combine([(1.0, g_s[k]), (-1.0, mean_g)]))
                     for c, k in zip(coefs, group.picks)]), g_s


def test_grpo_rank_gradient_is_the_option_policy_gradient(model):
    picks, rewards, temperature = [0, 1, 1, 2, 2, 2], [1.0, 0.0, 0.0, 1.0, 0.0, 1.0], 0.7
    adv = grpo_advantages(rewards)
    group = _rank_group(model, picks, rewards, adv)
    actual = _trainer_grads(model, [group], WeightUpdate(temperature=temperature))
    expected, g_s = _option_policy_grads(model, group, adv, temperature)
    _assert_close(actual, expected)
    # The old objective (advantage x summed token log-probs) weights options by length: a different gradient.
    lengths = [len(o) for o in group.options]
    summed = _combine([(-a * lengths[k] / len(picks), g_s[k]) for a, k in zip(adv, picks)])
    assert any(not torch.allclose(a, s, rtol=1e-2, atol=1e-4) for a, s in zip(actual, summed))


def test_rft_rank_gradient_is_the_cross_entropy_of_the_kept_options(model):
    picks, rewards = [1, 2, 1, 0], [1.0, 0.0, 1.0, 0.0]
    texts = [OPTIONS[k] for k in picks]
    keep = rft_keep(rewards, texts, 1.0)
    assert keep == [1.0, 0.0, 0.0, 0.0]  # a repeated success counts once
    group = _rank_group(model, picks, rewards, keep)
    actual = _trainer_grads(model, [group], WeightUpdate(algo="rft", temperature=1.0))
    expected, _ = _option_policy_grads(model, group, [1.0, 0.0, 0.0, 0.0], 1.0)
    # n = kept samples (1), not all samples: rescale the helper's 1/4
    _assert_close(actual, [4.0 * e for e in expected])


# -- free generation: per-token policy -------------------------------------------------------------------------
def _one_token_group(model, tokens, weights):
    return Group(None, _prefix(model, "Say one word."), [[t] for t in tokens], [str(t) for t in tokens],
                 [0.0] * len(tokens), weights)


def _one_token_expected(model, group, weights, temperature):
    """By hand on the logits z of the last prompt position: d/dz [-(1/N) sum_i w_i log softmax(z/T)[c_i]]
    = -(1/N) sum_i w_i (onehot(c_i) - softmax(z/T)) / T, pulled back through the network."""
    z = model.hf(input_ids=torch.tensor([group.prompt_ids])).logits[0, -1].float()
    p = torch.softmax(z.detach() / temperature, -1)
    dz = torch.zeros_like(z)
    for w, (c,) in zip(weights, group.completions):
        onehot = torch.zeros_like(z)
        onehot[c] = 1.0
        dz -= w * (onehot - p) / (temperature * len(weights))
    return list(torch.autograd.grad(z, _params(model), grad_outputs=dz, allow_unused=True))


def test_grpo_one_token_gradient_by_hand(model):
    tokens, rewards, temperature = [11, 12, 11, 400], [1.0, 0.0, 1.0, 0.0], 1.3
    adv = grpo_advantages(rewards)
    group = _one_token_group(model, tokens, adv)
    actual = _trainer_grads(model, [group], WeightUpdate(temperature=temperature))
    expected = [e if e is not None else torch.zeros_like(a)
                for a, e in zip(actual, _one_token_expected(model, group, adv, temperature))]
    _assert_close(actual, expected)


def test_entropic_weights_by_hand_and_their_gradient(model):
    rewards, beta = [0.2, 0.9, 0.5, 0.1], 0.5
    exps = [math.exp(r / beta) for r in rewards]
    hand = [4 * e / sum(exps) - 1 for e in exps]  # G * softmax(r / beta) - 1
    weights = group_signal("entropic", rewards, WeightUpdate(algo="entropic", entropic_beta=beta))
    assert weights == pytest.approx(hand) and sum(weights) == pytest.approx(0.0, abs=1e-12)
    group = _one_token_group(model, [21, 22, 23, 21], weights)
    actual = _trainer_grads(model, [group], WeightUpdate(algo="entropic", entropic_beta=beta))
    expected = [e if e is not None else torch.zeros_like(a)
                for a, e in zip(actual, _one_token_expected(model, group, weights, 1.0))]
    _assert_close(actual, expected)


def test_multi_token_grpo_and_rft_normalise_by_tokens(model):
    prefix = _prefix(model, "Tell me something.")
    rows = [[31, 32, 33, 34, 35], [36, 37], [38, 39, 40]]
    adv = [0.9, -0.2, -0.7]
    group = Group(None, prefix, rows, ["a", "b", "c"], [1.0, 0.0, 0.0], adv)
    actual = _trainer_grads(model, [group], WeightUpdate(temperature=0.8))
    n_tokens = sum(map(len, rows))  # DAPO: every token of the batch counts, also zero-advantage rows
    expected = _combine([(-a / n_tokens, _grad(_row_logps(model, prefix, r, 0.8).sum(), model))
                         for a, r in zip(adv, rows)])
    _assert_close(actual, expected)
    keep = [1.0, 0.0, 1.0]
    rft = Group(None, prefix, rows, ["a", "b", "c"], [1.0, 0.0, 1.0], keep)
    actual = _trainer_grads(model, [rft], WeightUpdate(algo="rft"))
    kept_tokens = len(rows[0]) + len(rows[2])  # RFT: only kept samples' tokens
    expected = _combine([(-1.0 / kept_tokens, _grad(_row_logps(model, prefix, rows[i]).sum(), model)) for i in (0, 2)])
    _assert_close(actual, expected)


# -- a round's prompts share their system block: run once, gradients unchanged ---------------------------------------
SYSTEM = "You are a careful judge. Read the facts, then choose the charge among the candidates given. " * 2


def _system_prompt(model, text):
    messages = [{"role": "system", "content": SYSTEM}, {"role": "user", "content": text}]
    return model.tokenizer(model.chat_text(messages), add_special_tokens=False)["input_ids"]


def test_common_prefix_length():
    from sia_bench.improvers.trainers.forward import MIN_COMMON, common_prefix_length

    shared = list(range(MIN_COMMON + 4))
    assert common_prefix_length([shared + [1, 2], shared + [3]]) == MIN_COMMON + 4
    assert common_prefix_length([shared, shared]) == MIN_COMMON + 3  # each prompt keeps a token of its own
    assert common_prefix_length([shared[:MIN_COMMON - 1] + [7, 8], shared[:MIN_COMMON - 1] + [9, 9]]) == 0
    assert common_prefix_length([shared + [1]]) == 0


def test_rank_groups_sharing_a_system_block_get_each_groups_gradient(model):
    from sia_bench.improvers.trainers.forward import common_prefix_length

    tok, temperature = model.tokenizer, 0.8
    options = [tok(o, add_special_tokens=False)["input_ids"] for o in OPTIONS]
    cases = [("Case one: a stolen bicycle.", [0, 1, 2, 2], [1.0, 0.0, 0.0, 1.0]),
             ("Case two: a forged contract and a lie.", [2, 2, 1, 0], [0.0, 1.0, 1.0, 0.0]),
             ("Case three.", [1, 0, 1, 1], [1.0, 0.0, 0.0, 1.0])]
    groups = []
    for text, picks, rewards in cases:
        adv = grpo_advantages(rewards)
        groups.append(Group(None, _system_prompt(model, text), [options[k] for k in picks],
                            [OPTIONS[k] for k in picks], rewards, adv, options=options, picks=picks))
    assert common_prefix_length([g.prompt_ids for g in groups]) >= len(tok(SYSTEM)["input_ids"])
    actual = _trainer_grads(model, groups, WeightUpdate(temperature=temperature))
    total = sum(len(g.picks) for g in groups)
    expected = _combine([(len(g.picks) / total, _option_policy_grads(model, g, g.weights, temperature)[0])
                         for g in groups])
    _assert_close(actual, expected)


def test_free_groups_sharing_a_system_block_match_separate_prompts(model, monkeypatch):
    from sia_bench.improvers.trainers import forward

    tok = model.tokenizer
    rows = [tok(w, add_special_tokens=False)["input_ids"] for w in ("a quiet river", "stone", "the old gate")]
    groups = [Group(None, _system_prompt(model, text), rows, ["x"] * 3, [1.0, 0.0, 1.0], grpo_advantages([1.0, 0, 1]))
              for text in ("First case.", "Second, longer case text.")]
    shared = _trainer_grads(model, groups, WeightUpdate())
    monkeypatch.setattr(forward, "MIN_COMMON", 10 ** 9)  # every prompt run whole
    separate = _trainer_grads(model, groups, WeightUpdate())
    _assert_close(shared, separate)
