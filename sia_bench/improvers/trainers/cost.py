"""What a weight update costs, from token counts, so a caller can size ``steps`` from a compute budget.

The usual dense-transformer estimates: a forward pass costs about ``2 x parameters x tokens`` FLOPs and a training
step (forward + backward) about ``6 x parameters x tokens``. With LoRA the base weights' own gradients are never
formed, so 6x is an upper bound (about 4x is the floor); it is the figure used here. Tokens are counted as the
trainer processes them: a group's prompt once (its KV cache is shared by the group's rows), then every row.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from functools import lru_cache
from typing import Any

from sia_bench.improvers.trainers.settings import SUPERVISED, UpdateSettings
from sia_bench.metering import FORWARD_FLOPS_PER_PARAM_TOKEN, TRAIN_FLOPS_PER_PARAM_TOKEN


@dataclass
class StepCost:
    """Estimated cost of one rollout round (sampling, old-policy passes and the optimizer steps on the batch)."""

    sample_flops: float
    train_flops: float
    seconds: float | None  # at the given FLOP/s; None when no rate was given

    @property
    def flops(self) -> float:
        return self.sample_flops + self.train_flops

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "flops": self.flops}


def forward_flops(parameters: int, tokens: int) -> float:
    return float(FORWARD_FLOPS_PER_PARAM_TOKEN) * parameters * tokens


def train_flops(parameters: int, tokens: int) -> float:
    return float(TRAIN_FLOPS_PER_PARAM_TOKEN) * parameters * tokens


def estimate_step_cost(settings: UpdateSettings, parameters: int, prompt_tokens: int, completion_tokens: int,
                       options: int = 0, flops_per_second: float | None = None) -> StepCost:
    """One round's cost for prompts of ``prompt_tokens`` and answers (or options) of ``completion_tokens``.

    ``options`` > 0 means a rank-mode harness with that many options per prompt (sampling scores every option once
    per prompt); otherwise ``group_size`` completions are generated per prompt. Either way the group shares one
    prefill, as :mod:`sia_bench.metering` charges it. Resampled groups (``resample_rounds``) come on top.
    ``sft`` samples nothing: its one row per prompt is the gold completion (``completion_tokens`` long), and its
    only cost is the gradient passes."""
    n_prompts = settings.prompts_per_step
    sampled = settings.algo != "sft"
    rows = options if options > 0 else settings.group_size if sampled else 1
    per_group = prompt_tokens + rows * completion_tokens  # one shared-prefix pass over the group
    needs_old = options == 0 and (settings.algo == "ppo" or (settings.algo not in SUPERVISED and
                                                             settings.resolved_epochs() *
                                                             settings.resolved_minibatches() > 1))
    extra_passes = int(needs_old) + int(settings.kl_coef > 0)  # rank mode: the old policy came with sampling
    sample = (int(sampled) + extra_passes) * forward_flops(parameters, n_prompts * per_group)
    train = settings.resolved_epochs() * train_flops(parameters, n_prompts * per_group)
    total = sample + train
    return StepCost(sample, train, total / flops_per_second if flops_per_second else None)


def steps_for_budget(budget_seconds: float, cost: StepCost, minimum: int = 1) -> int:
    """How many rounds fit in ``budget_seconds`` at ``cost`` (at least ``minimum``)."""
    if cost.seconds is None or cost.seconds <= 0:
        raise ValueError("steps_for_budget: the cost has no seconds; pass flops_per_second to estimate_step_cost")
    return max(minimum, int(budget_seconds // cost.seconds))


@lru_cache(maxsize=1)
def machine_flops_per_second(size: int = 1024, repeats: int = 5) -> float:
    """Measured fp32 matmul throughput of this process's device (CPU here): an upper bound on training speed.
    Reports carry the achieved rate of real steps (their FLOPs over their seconds), the better calibration."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b  # warm-up
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - t0)
    return 2.0 * size ** 3 / best
