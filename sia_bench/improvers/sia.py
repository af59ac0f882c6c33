"""Improver ``wh`` (SIA): each generation the Feedback-Agent patches the harness, updates the weights, both, or stops.

Weights are trained under the (possibly just patched) harness, so the training prompts are the ones the agent will
use. Without an LLM Feedback-Agent a rule-based choice stands in, labelled ``heuristic``: harness edits until val
plateaus for ``plateau`` generations (or the search space is spent), then a weight update, and stop when neither
helps. ``meta_agent=true`` lets the Feedback-Agent model draft the starting SKILL.md first, as the paper does (off by
default, so all arms share a start).
"""

from __future__ import annotations

import string
from dataclasses import dataclass
from typing import Any

from sia_bench.harness import Harness, PatchError, parse_front_matter
from sia_bench.improvers.base import Improver, LoopState, Proposal
from sia_bench.improvers.feedback import PROMPTS, StopAction, WeightUpdateAction
from sia_bench.improvers.harness import (HarnessSettings, apply_patches, edit_limit, feedback_agent, harness_step,
                                         reflect)
from sia_bench.improvers.heuristic import choose_lever, search_exhausted
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
    plateau: int = 2
    weight_patience: int = 1
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
        exhausted = search_exhausted(state.task, state.best_harness, state.history)
        lever = choose_lever(state.history, exhausted, self.plateau, self.weight_patience)
        why = (f"rule: search space {'spent' if exhausted else 'open'}, plateau={self.plateau}, "
               f"weight_patience={self.weight_patience} -> {lever}")
        if lever == "stop":
            return Proposal(stop=True, levers=["stop"], proposer="heuristic", diagnosis=why,
                            reason="neither harness edits nor weight updates improved val")
        if lever == "weights":
            return self.weight_step(state, state.best_harness, self.default_update(), "heuristic", diagnosis=why)
        proposal = self.harness_proposal(state)
        proposal.diagnosis = f"{why}; {proposal.diagnosis}"
        return proposal
