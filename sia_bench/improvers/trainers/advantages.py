"""Advantage estimators, as pure functions of rewards (and values): tested directly against hand computations."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Sequence

if TYPE_CHECKING:
    import torch

    from sia_bench.improvers.trainers.settings import UpdateSettings

ADV_EPS = 1e-4  # TRL's epsilon in (r - mean) / (std + eps)
ENTROPIC_KL = math.log(2)  # TTT-Discover's adaptive-beta target: KL(weights || uniform) = ln 2
WHITEN_EPS = 1e-8


def grpo_advantages(rewards: Sequence[float]) -> list[float]:
    """(r - mean) / (std + eps) within one group (sample std, as TRL's ``nanstd``); NaN rewards get 0."""
    vals = [r for r in rewards if math.isfinite(r)]
    if len(vals) < 2:
        return [0.0] * len(rewards)
    mean = sum(vals) / len(vals)
    std = math.sqrt(sum((v - mean) ** 2 for v in vals) / (len(vals) - 1))
    return [(r - mean) / (std + ADV_EPS) if math.isfinite(r) else 0.0 for r in rewards]


def entropic_weights(rewards: Sequence[float], beta: float) -> list[float]:
    """softmax(r / beta) over the finite rewards of a group (NaN rewards weigh 0)."""
    finite = [r for r in rewards if math.isfinite(r)]
    top = max(finite)
    exps = [math.exp((r - top) / beta) if math.isfinite(r) else 0.0 for r in rewards]
    total = sum(exps)
    return [e / total for e in exps]


def adaptive_beta(rewards: Sequence[float], kl_target: float = ENTROPIC_KL) -> float:
    """The beta whose softmax weights sit at KL(w || uniform) = kl_target (capped at what the group allows)."""
    finite = [r for r in rewards if math.isfinite(r)]
    n = len(finite)
    if n < 2 or max(finite) <= min(finite):
        return 1.0
    spread = max(finite) - min(finite)
    kl_target = min(kl_target, 0.999 * math.log(n / sum(r == max(finite) for r in finite)))

    def kl(beta: float) -> float:
        w = entropic_weights(finite, beta)
        return sum(x * math.log(x * n) for x in w if x > 0)

    lo, hi = spread * 1e-4, spread * 1e4  # kl falls as beta grows
    for _ in range(100):
        mid = math.sqrt(lo * hi)
        lo, hi = (mid, hi) if kl(mid) > kl_target else (lo, mid)
    return math.sqrt(lo * hi)


def entropic_advantages(rewards: Sequence[float], beta: float = 0.0) -> list[float]:
    """A_i = G * softmax(r / beta)_i - 1 (mean zero over the finite rewards); beta 0 means adaptive."""
    finite = [r for r in rewards if math.isfinite(r)]
    if len(finite) < 2 or max(finite) == min(finite):
        return [0.0] * len(rewards)
    w = entropic_weights(rewards, beta if beta > 0 else adaptive_beta(rewards))
    return [len(finite) * x - 1.0 if math.isfinite(r) else 0.0 for x, r in zip(w, rewards)]


def rft_keep(rewards: Sequence[float], texts: Sequence[str], threshold: float) -> list[float]:
    """1 for the first copy of each distinct completion whose reward reaches ``threshold``, else 0.

    Rejection sampling keeps *which* answers were good, not how often the sampler repeated them (STaR, DSPy's
    bootstrap keep one trace per success), so duplicates do not multiply an example's weight."""
    seen: set[str] = set()
    keep = []
    for r, t in zip(rewards, texts):
        ok = math.isfinite(r) and r >= threshold and t not in seen
        if ok:
            seen.add(t)
        keep.append(1.0 if ok else 0.0)
    return keep


def group_signal(algo: str, rewards: Sequence[float], settings: "UpdateSettings",
                 texts: Sequence[str] | None = None) -> list[float] | None:
    """Per-sample weights for the loss (advantages, or RFT's keep mask), or None when the group teaches nothing.

    PPO's advantages come from its value head after sampling (:func:`gae`), so every group is kept here (its
    weights are placeholders); whether the whole batch has a reward signal is decided by the caller."""
    finite = [r for r in rewards if math.isfinite(r)]
    if algo == "rft":
        keep = rft_keep(rewards, texts if texts is not None else [str(i) for i in range(len(rewards))],
                        settings.reward_threshold)
        return keep if any(keep) else None
    if algo == "ppo":
        return [0.0] * len(rewards) if finite else None
    if len(finite) < 2 or max(finite) == min(finite):
        return None
    return grpo_advantages(rewards) if algo == "grpo" else entropic_advantages(rewards, settings.entropic_beta)


def gae(rewards: "torch.Tensor", values: "torch.Tensor", mask: "torch.Tensor", gamma: float, lam: float
        ) -> tuple["torch.Tensor", "torch.Tensor"]:
    """Generalised advantage estimation over right-padded rows (B, L): returns (advantages, returns).

    delta_t = r_t + gamma * V_{t+1} - V_t with V = 0 after a row's last real token; A_t = delta_t + gamma * lam *
    A_{t+1}; returns R_t = A_t + V_t (the value target). Padded positions get 0."""
    import torch

    rewards, values, mask = rewards * mask, values * mask, mask.to(rewards.dtype)
    adv = torch.zeros_like(rewards)
    next_value = torch.zeros(rewards.shape[0], dtype=rewards.dtype, device=rewards.device)
    running = torch.zeros_like(next_value)
    for t in range(rewards.shape[1] - 1, -1, -1):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        running = (delta + gamma * lam * running) * mask[:, t]
        adv[:, t] = running
        next_value = values[:, t]  # a padded position holds V = 0, so a row's last real token sees V_{L+1} = 0
    return adv, (adv + values) * mask


def whiten(values: "torch.Tensor", mask: "torch.Tensor") -> "torch.Tensor":
    """(x - mean) / std over the masked entries (TRL's PPO whitening); fewer than two entries: centred only."""
    import torch

    m = mask.to(values.dtype)
    n = m.sum()
    mean = (values * m).sum() / n.clamp(min=1)
    centred = (values - mean) * m
    if n < 2:
        return centred
    var = (centred ** 2).sum() / (n - 1)
    return centred * torch.rsqrt(var + WHITEN_EPS)
