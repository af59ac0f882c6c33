"""The one schema of a weight update: :class:`UpdateSettings` (what an arm's ``-I`` settings can tune) and
:class:`WeightUpdate` (those settings plus the per-call choices of a Feedback-Agent). Defaults, bounds and validation
live here only; :class:`~sia_bench.improvers.weights.WeightSettings` inherits the fields instead of repeating them.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any

ALGOS = ("grpo", "rft", "entropic", "ppo", "sft")
CONTINUE_FROM = ("last", "best")
# Algorithms whose loss is the negative log-likelihood of chosen rows (no ratio to an old policy, no KL term):
# rft on its own kept samples, sft on the task's gold completions (no sampling at all).
SUPERVISED = ("rft", "sft")
# PPO takes several passes over minibatches of each sampled batch (so the importance ratio leaves 1 and clipping
# matters); the group-baseline algorithms take one update per batch unless told otherwise (TRL's defaults).
AUTO_EPOCHS = {"ppo": 4}
AUTO_MINIBATCHES = {"ppo": 2}

# (name, low, high) for whole-number settings; floats below.
_INTS = (("steps", 1, 10_000), ("group_size", 1, 256), ("prompts_per_step", 1, 4096), ("lora_rank", 1, 1024),
         ("max_new_tokens", 0, 32_768), ("resample_rounds", 0, 100), ("epochs", 0, 64), ("minibatches", 0, 256),
         ("warmup_steps", 0, 100_000), ("schedule_steps", 0, 1_000_000))
_POSITIVE = (("lr", 0.0, 1.0), ("temperature", 0.0, 5.0), ("clip_range", 0.0, 10.0), ("value_clip", 0.0, 1e6))
_UNIT = ("gamma", "lam")
_NON_NEGATIVE = ("entropic_beta", "kl_coef", "vf_coef", "entropy_coef")


@dataclass
class UpdateSettings:
    """How a LoRA weight update is trained. Every field is an ``-I key=value`` setting of the weight-pulling arms.

    Defaults for lr / steps / group_size / prompts_per_step come from the sweep on legal_charges (train reward and
    val only) reported with issue 16; the rest are the usual values of TRL and the PPO literature."""

    algo: str = "grpo"  # grpo | rft | entropic | ppo | sft (supervised on Task.reference_text, no sampling)
    steps: int = 8  # rounds; each samples (sft: draws) a batch and takes epochs x minibatches optimizer steps on it
    lr: float = 1e-3  # peak learning rate of AdamW (LoRA and value head); the sweep's better rate at 8 and 24 steps
    group_size: int = 8  # completions (or options) sampled per prompt
    prompts_per_step: int = 4
    lora_rank: int = 8
    temperature: float = 1.0  # sampling temperature; the trained policy is the one that sampled (logits / T)
    reward_threshold: float = 1.0  # rft keeps samples with reward >= this (1.0 = full credit on 0/1 scorers)
    entropic_beta: float = 0.0  # > 0 fixes beta; 0 = adaptive (KL(weights || uniform) = ln 2 per group)
    kl_coef: float = 0.0  # KL to the base model (adapter off): k3 in the loss (grpo/entropic), k1 in the reward (ppo)
    max_new_tokens: int = 0  # 0 = the harness's max_new_tokens
    resample_rounds: int = 2  # extra sampling rounds per step to replace groups without signal
    epochs: int = 0  # passes over each sampled batch; 0 = 4 for ppo, 1 otherwise
    minibatches: int = 0  # optimizer steps per pass (the batch's prompts split evenly); 0 = 2 for ppo, 1 otherwise
    clip_range: float = 0.2  # PPO clip of the importance ratio (grpo/entropic too when epochs x minibatches > 1)
    value_clip: float = 0.2  # ppo: clip of the value update around the rollout's value
    vf_coef: float = 0.1  # ppo: weight of the value loss
    entropy_coef: float = 0.0  # ppo: entropy bonus
    gamma: float = 1.0  # ppo: discount (rewards arrive at the final token)
    lam: float = 0.95  # ppo: GAE lambda
    warmup_steps: int = 2  # linear LR warm-up over the first optimizer steps of the run (the position carries over)
    schedule_steps: int = 0  # > 0: cosine decay to 10% of lr at this global optimizer step; 0 = constant
    # Where an update starts: "last" continues the run's latest trained adapter (kept by the val gate or not) with
    # its optimizer and stream, so the lever's steps accumulate while the gate picks the checkpoint that is used;
    # "best" restarts from the best kept adapter (or a fresh one), so after a rejection another short update
    # starts again from that point and the rounds never add up.
    continue_from: str = "last"

    def resolved_epochs(self) -> int:
        return self.epochs or AUTO_EPOCHS.get(self.algo, 1)

    def resolved_minibatches(self) -> int:
        return self.minibatches or min(AUTO_MINIBATCHES.get(self.algo, 1), self.prompts_per_step)

    def check(self) -> None:
        """Raise ValueError naming the first bad setting."""
        def bad(name: str, why: str) -> None:
            raise ValueError(f"weight_update.{name}={getattr(self, name)!r}: {why}")

        if self.algo not in ALGOS:
            bad("algo", f"choose one of {', '.join(ALGOS)}")
        if self.continue_from not in CONTINUE_FROM:
            bad("continue_from", f"choose one of {', '.join(CONTINUE_FROM)}")
        for name, low, high in _INTS:
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
                bad(name, f"must be a whole number in [{low}, {high}]")
        for name, low, high in _POSITIVE:
            if not _finite(getattr(self, name)) or not low < getattr(self, name) <= high:
                bad(name, f"must be a number in ({low}, {high}]")
        for name in _UNIT:
            if not _finite(getattr(self, name)) or not 0.0 <= getattr(self, name) <= 1.0:
                bad(name, "must be a number in [0, 1]")
        for name in ("reward_threshold", *_NON_NEGATIVE):
            if not _finite(getattr(self, name)):
                bad(name, "must be a finite number")
        for name in _NON_NEGATIVE:
            if getattr(self, name) < 0:
                bad(name, "must be >= 0")
        if self.algo == "sft" and self.kl_coef > 0:
            bad("kl_coef", "sft trains the gold completions' likelihood only: it has no KL term")
        if self.algo in ("grpo", "entropic") and self.group_size < 2:
            bad("group_size", f"{self.algo} compares completions within a group: needs at least 2")
        if self.resolved_minibatches() > self.prompts_per_step:
            bad("minibatches", f"cannot split {self.prompts_per_step} prompts per step into more minibatches")


def _finite(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


@dataclass
class WeightUpdate(UpdateSettings):
    """The ``weight_update`` action: the settings plus what a Feedback-Agent may choose per call."""

    instance_ids: list[str] | None = None  # focus on these train instances (e.g. a failure cluster); None = sample
    rationale: str = ""

    def validate(self) -> "WeightUpdate":
        """Return self, or raise ValueError naming the bad setting."""
        self.check()
        if self.instance_ids is not None:
            if (not isinstance(self.instance_ids, (list, tuple)) or not self.instance_ids
                    or not all(isinstance(i, str) for i in self.instance_ids)):
                raise ValueError(f"weight_update.instance_ids={self.instance_ids!r}: must be a non-empty list of "
                                 "train instance ids, or None")
            self.instance_ids = list(self.instance_ids)
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)
