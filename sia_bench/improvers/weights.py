"""Improver ``w``: weights only. The harness stays the best one (the starting one, as nothing else changes it);
each generation trains the LoRA adapter with one RL update on train, and the loop's val gate keeps or drops it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sia_bench.improvers.base import Improver, LoopState, Proposal
from sia_bench.improvers.trainers import WeightUpdate, apply_weight_update
from sia_bench.task import OptionError


@dataclass
class WeightsImprover(Improver):
    """Weights-only RL on a LoRA adapter (GRPO, RFT or entropic), one update per generation."""

    name = "w"
    uses_weights = True

    algo: str = "grpo"
    steps: int = 2
    lr: float = 5e-4
    group_size: int = 4
    prompts_per_step: int = 4
    lora_rank: int = 8
    temperature: float = 1.0
    reward_threshold: float = 1.0
    entropic_beta: float = 0.0
    kl_coef: float = 0.0
    max_new_tokens: int = 0

    def __post_init__(self) -> None:
        try:
            self.update()
        except ValueError as err:
            raise OptionError(f"improver 'w': {err}") from None

    def label(self, feedback_model: Any = None) -> str:
        return f"w[{self.algo}]"

    def update(self) -> WeightUpdate:
        return WeightUpdate(**self.settings()).validate()

    def propose(self, state: LoopState) -> Proposal:
        if not getattr(state.agent.model, "trainable", False):
            return Proposal(stop=True, proposer=self.label(),
                            reason=f"the task model {state.agent.model.name!r} has no trainable weights")
        update = self.update()
        update.rationale = f"generation {state.generation}: {update.steps} {update.algo} step(s) on train"
        adapter_dir, report = apply_weight_update(state, state.best_harness, update)
        rewards = ", ".join("nan" if r != r else f"{r:.3f}" for r in report["mean_reward_per_step"])
        diagnosis = (f"{update.algo}: {report['optimizer_steps']}/{update.steps} optimizer steps from "
                     f"{report['started_from']} adapter; train reward per step [{rewards}]; "
                     f"{report['skipped_groups']} groups without signal skipped; {report['rollouts']} rollouts, "
                     f"{report['seconds']:.1f} s")
        if report["optimizer_steps"] == 0:  # nothing was learned: do not spend a val pass on an unchanged adapter
            return Proposal(proposer=self.label(), diagnosis=diagnosis, levers=["weights"],
                            actions=[{"type": "weight_update", **update.to_dict(), "report": report}],
                            reason="no informative group in this update: adapter unchanged")
        return Proposal(adapter_dir=adapter_dir, levers=["weights"], proposer=self.label(), diagnosis=diagnosis,
                        actions=[{"type": "weight_update", **update.to_dict(), "report": report}])
