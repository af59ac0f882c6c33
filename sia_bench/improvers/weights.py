"""Improver ``w``: weights only. The harness stays the best one (the starting one, as nothing else changes it);
each generation trains the LoRA adapter with one RL update on train, and the loop's val gate keeps or drops it.

:class:`WeightSettings` is the one place for the ``-I`` settings of a weight update and for running one; every arm
that pulls the weights lever (``w`` here, ``wh``/``bt``/``w+h-alternate`` in sia.py and controls.py) inherits it, so
they share defaults, validation, the action record and the "no optimizer step" outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from sia_bench.harness import Harness
from sia_bench.improvers.base import Improver, LoopState, Proposal
from sia_bench.improvers.trainers import UpdateSettings, WeightUpdate
from sia_bench.task import OptionError

NO_SIGNAL = "no optimizer step: no sampled group had a reward signal, adapter unchanged"


@dataclass
class WeightSettings(UpdateSettings):
    """LoRA + RL settings: the fields, defaults and bounds of
    :class:`~sia_bench.improvers.trainers.UpdateSettings` (defined there once), plus running a weight step."""

    def __post_init__(self) -> None:
        try:
            self.default_update()
        except ValueError as err:
            raise OptionError(f"improver {getattr(self, 'name', '?')!r}: {err}") from None

    def default_update(self, **overrides: Any) -> WeightUpdate:
        """The update these settings describe; ``overrides`` (a Feedback-Agent's choices, None = keep) win."""
        values = {f.name: getattr(self, f.name) for f in fields(UpdateSettings)}
        values.update({k: v for k, v in overrides.items() if v is not None})
        return WeightUpdate(**values).validate()

    def weight_step(self, state: LoopState, harness: Harness, update: WeightUpdate, proposer: str,
                    extra_actions: list[dict[str, Any]] | None = None, diagnosis: str = "") -> Proposal:
        """Train under ``harness`` (possibly just patched: its prompts are the training prompts) and propose the
        adapter. Zero optimizer steps means nothing changed: no adapter is proposed, so no val pass is spent."""
        from sia_bench.improvers.trainers import apply_weight_update

        if not getattr(state.agent.model, "trainable", False):
            return Proposal(stop=True, levers=["stop"], proposer=proposer, actions=list(extra_actions or []),
                            reason=f"the task model {state.agent.model.name!r} has no trainable weights")
        adapter_dir, report = apply_weight_update(state, harness, update)
        action = {"type": "weight_update", **update.to_dict(), "report": report}
        trained = report["optimizer_steps"] > 0
        if not trained:
            action["error"] = NO_SIGNAL
        if update.algo == "sft":  # nothing is sampled, so there is no reward: the supervised loss is the signal
            losses = ", ".join("-" if x is None else f"{x:.3f}" for x in report["loss_per_step"])
            progress = f"supervised loss per round [{losses}]"
        else:
            rewards = ", ".join("nan" if r != r else f"{r:.3f}" for r in report["mean_reward_per_step"])
            progress = f"train reward per round [{rewards}]"
        summary = (f"{update.algo}: {report['optimizer_steps']} optimizer steps in {update.steps} rounds from "
                   f"{report['started_from']} adapter (optimizer {report.get('optimizer', '?')}, global step "
                   f"{report.get('global_step', '?')}); {progress}; "
                   f"{report['skipped_groups']} groups without signal skipped; {report['rollouts']} rollouts, "
                   f"{report['seconds']:.1f} s")
        patched = harness.digest != state.best_harness.digest
        return Proposal(harness=harness if patched else None, adapter_dir=adapter_dir if trained else None,
                        actions=[*(extra_actions or []), action], levers=(["harness"] if patched else []) + ["weights"],
                        diagnosis=f"{diagnosis}; {summary}" if diagnosis else summary, proposer=proposer,
                        reason="" if trained else NO_SIGNAL)


@dataclass
class WeightsImprover(WeightSettings, Improver):
    """Weights-only RL on a LoRA adapter (GRPO, RFT, entropic or PPO), one update per generation."""

    name = "w"
    uses_weights = True

    def label(self, feedback_model: Any = None) -> str:
        return f"w[{self.algo}]"

    def update(self) -> WeightUpdate:
        return self.default_update()

    def propose(self, state: LoopState) -> Proposal:
        update = self.default_update(rationale=f"generation {state.generation}: {self.steps} {self.algo} "
                                               f"step(s) on train")
        return self.weight_step(state, state.best_harness, update, self.label())
