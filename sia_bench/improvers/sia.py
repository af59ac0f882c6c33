"""Improver ``wh`` (SIA): each generation the Feedback-Agent patches the harness, updates the weights, both, or stops.

Weights are trained under the (possibly just patched) harness, so the training prompts are the ones the agent will
use. Without an LLM Feedback-Agent the lever is chosen by evidence (:mod:`sia_bench.improvers.chooser`): each lever
is tried once, then the one with the highest optimistic val gain per unit of compute, and the arm stops when not even
the optimistic estimate expects another val instance to flip, or when no lever fits the remaining compute. That
choice is labelled ``heuristic`` (the edits themselves come from the offline proposer). With an LLM Feedback-Agent,
the agent chooses and its diagnosis is recorded; the evidence table is logged next to it. ``meta_agent=true`` lets
the Feedback-Agent model draft the starting SKILL.md first, as the paper does (off by default, so all arms share a
start); its tokens are charged to the run like every other model call.
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

from sia_bench.harness import Harness, PatchError, parse_front_matter
from sia_bench.improvers.base import Improver, LoopState, Proposal
from sia_bench.improvers.chooser import choose_lever, collect_evidence
from sia_bench.improvers.feedback import PROMPTS, StopAction, WeightUpdateAction
from sia_bench.improvers.harness import (HarnessSettings, apply_patches, edit_limit, feedback_agent, harness_step,
                                         reflect)
from sia_bench.improvers.weights import WeightSettings
from sia_bench.models.base import SamplingParams


@dataclass
class JointImprover(WeightSettings, Improver):
    """Settings shared by the arms that pull both levers (``wh``, ``bt``, ``w+h-alternate``): the weight-update
    settings of :class:`WeightSettings` plus the harness-search ones."""

    uses_feedback = True
    uses_weights = True
    minibatch: int = 16
    edit_budget: int = 4
    edit_schedule: str = "linear"
    success_threshold: float | None = None
    proposer_retries: int = 2

    @property
    def harness_settings(self) -> HarnessSettings:
        return HarnessSettings(self.minibatch, self.edit_budget, self.edit_schedule, self.success_threshold)

    def harness_proposal(self, state: LoopState) -> Proposal:
        agent = feedback_agent(state, self.proposer_retries)
        candidate, actions, diagnosis = harness_step(state, self.harness_settings, agent)
        return Proposal(harness=candidate if candidate.digest != state.best_harness.digest else None,
                        actions=actions, levers=["harness"], diagnosis=diagnosis,
                        proposer=agent.label if agent else "heuristic",
                        reason="" if candidate.digest != state.best_harness.digest else "no applicable harness edit")


@dataclass
class SIAImprover(JointImprover):
    """SIA: the Feedback-Agent chooses harness patches, a LoRA weight update, both, or stop, every generation."""

    name = "wh"
    exploration: float = 1.0  # c of the UCB bonus (see chooser.py)
    min_gain: float = -1.0  # stop below this optimistic gain; < 0: half the val resolution (0.5 / val instances)
    meta_agent: bool = False

    def initial_harness(self, task: Any, harness: Harness, feedback_model: Any, seed: int) -> Harness:
        """Meta-Agent step: draft the starting SKILL.md from the task description (only with meta_agent=true)."""
        if not self.meta_agent or feedback_model is None:
            return harness
        prompt = string.Template((PROMPTS / "meta_agent.v1.md").read_text()).substitute(
            skill_name=parse_front_matter(harness.skill)["name"], task_name=task.name, metric=task.metric.name,
            direction="higher" if task.metric.higher_is_better else "lower", task_description=task.description,
            skill=harness.skill)
        text = feedback_model.generate([[{"role": "user", "content": prompt}]],
                                       SamplingParams(max_new_tokens=768, seed=seed))[0].text.strip()
        text = text.removeprefix("```markdown").removeprefix("```").removesuffix("```").strip() + "\n"
        try:
            return Harness({**harness.components, "SKILL.md": text}, dict(harness.params), harness.specs)
        except PatchError:
            return harness  # an unusable draft: keep the shared default start

    def propose(self, state: LoopState) -> Proposal:
        agent = feedback_agent(state, self.proposer_retries)
        if agent is None:
            return self._heuristic(state)
        limit = edit_limit(self.harness_settings, state.generation, state.budget.generations)
        result, _ = reflect(state, state.best_harness, self.harness_settings, agent, limit,
                            allowed=("harness_patch", "weight_update", "stop"))
        candidate, records = apply_patches(state.best_harness, result, limit)
        updates = [a for a in result.actions if isinstance(a, WeightUpdateAction)]
        stops = [a for a in result.actions if isinstance(a, StopAction)]
        diagnosis = result.diagnosis.strip()
        if stops and not updates and candidate.digest == state.best_harness.digest:
            return Proposal(stop=True, levers=["stop"], actions=records + [stops[0].model_dump()],
                            diagnosis=diagnosis, proposer=agent.label, reason=stops[0].rationale or "agent stopped")
        if updates:
            u = updates[0]
            try:
                update = self.default_update(algo=u.algo, steps=u.steps, lr=u.lr, group_size=u.group_size,
                                             prompts_per_step=u.prompts_per_step, instance_ids=u.instance_ids,
                                             rationale=u.rationale)
            except ValueError as err:
                records.append({**u.model_dump(), "error": str(err)})
            else:
                return self.weight_step(state, candidate, update, agent.label, records, diagnosis)
        return Proposal(harness=candidate if candidate.digest != state.best_harness.digest else None,
                        actions=records, levers=["harness"], diagnosis=diagnosis, proposer=agent.label)

    def _heuristic(self, state: LoopState) -> Proposal:
        choice = self.evidence_choice(state)
        why = f"chooser: {choice.reason}"
        if choice.lever == "stop":
            return Proposal(stop=True, levers=["stop"], proposer="heuristic", diagnosis=why, reason=choice.reason,
                            actions=[{"type": "lever_choice", "lever": "stop", "scores": choice.scores}])
        record = {"type": "lever_choice", "lever": choice.lever, "reason": choice.reason, "scores": choice.scores}
        if choice.lever == "weights":
            return self.weight_step(state, state.best_harness, self.default_update(), "heuristic", [record],
                                    diagnosis=why)
        proposal = self.harness_proposal(state)
        proposal.actions = [record, *proposal.actions]
        proposal.diagnosis = f"{why}; {proposal.diagnosis}"
        if choice.lever == "both":  # train under the patched harness, so the training prompts are the new ones
            harness = proposal.harness or state.best_harness
            return self.weight_step(state, harness, self.default_update(), "heuristic", proposal.actions,
                                    diagnosis=proposal.diagnosis)
        return proposal

    def evidence_choice(self, state: LoopState):
        """The chooser's verdict from this run's history and the compute left in the budget."""
        metric = state.task.metric
        evidence = collect_evidence(state.history, metric.name, metric.higher_is_better)
        resolution = 1.0 / max(int(getattr(state, "val_size", 0) or 0), 1)
        return choose_lever(evidence, remaining_compute(state), resolution, c=self.exploration,
                            min_gain=None if self.min_gain < 0 else self.min_gain)


def remaining_compute(state: LoopState) -> float | None:
    """FLOPs left under the run's compute budget (None when the budget sets no compute limit)."""
    limit = getattr(state.budget, "compute_flops", None)
    if limit is None:
        return None
    spent = state.ledger.plus(state.gen_ledger)
    total = getattr(spent, "total_flops", None)
    return float(limit) - (total(exclude_test=True) if callable(total) else 0.0)
