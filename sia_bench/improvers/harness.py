"""Improver ``h``: harness-only optimisation in SkillOpt's style, weights frozen.

Per generation: roll out a train minibatch with the best harness; reflect on failures and on successes separately
(Feedback-Agent, or the offline heuristic proposer); merge similar patches; apply at most L edits (the edit budget,
decaying over generations); the loop then scores the candidate on val and keeps it only on strict improvement.
Rejected edits reach the next reflection through the history. The same :func:`harness_step` serves ``wh`` and the
control arms.
"""

from __future__ import annotations

import difflib
import math
from dataclasses import dataclass
from typing import Any

from sia_bench.harness import Harness
from sia_bench.improvers.base import Improver, LoopState, Proposal
from sia_bench.improvers.feedback import (FeedbackAgent, FeedbackResult, HarnessPatchAction, render_feedback_prompt)
from sia_bench.improvers.heuristic import failed, heuristic_patches
from sia_bench.task import subsample


@dataclass
class HarnessSettings:
    minibatch: int = 16
    edit_budget: int = 4
    edit_schedule: str = "linear"  # linear: L decays to 1 over the generation budget; constant: always L
    success_threshold: float | None = None
    max_shown: int = 8  # trajectories shown per reflection prompt


def edit_limit(settings: HarnessSettings, generation: int, total: int) -> int:
    if settings.edit_schedule == "constant" or total <= 1:
        return settings.edit_budget
    frac = (generation - 1) / max(total - 1, 1)
    return max(1, math.ceil(settings.edit_budget * (1 - frac)))


def merge_patches(actions: list[HarnessPatchAction]) -> list[HarnessPatchAction]:
    """Drop duplicates: one ``set_param`` per parameter, and text edits whose text is >80% alike."""
    kept: list[HarnessPatchAction] = []
    for a in actions:
        if a.op == "set_param" and any(k.op == "set_param" and k.param == a.param for k in kept):
            continue
        if a.op != "set_param" and any(
                k.op != "set_param" and k.target == a.target and difflib.SequenceMatcher(
                    None, (k.text or k.anchor or ""), (a.text or a.anchor or "")).ratio() > 0.8 for k in kept):
            continue
        kept.append(a)
    return kept


def reflect(state: LoopState, harness: Harness, settings: HarnessSettings, agent: FeedbackAgent | None,
            max_actions: int, allowed: tuple[str, ...] = ("harness_patch",)) -> tuple[FeedbackResult, list[Any]]:
    """Roll out a train minibatch and ask the proposer (LLM or heuristic) for actions.

    Failures and successes are reflected on separately; ``allowed`` action types apply to the failure reflection
    (the joint arm lets it choose weight updates or stop), the success reflection only proposes harness patches.
    """
    batch = subsample(state.train, settings.minibatch, state.seed)
    trajectories = state.rollout(harness, batch)
    if agent is None:
        return heuristic_patches(state.task, harness, trajectories, state.history, max_actions,
                                 settings.success_threshold, state.rng), trajectories
    failures = failed(trajectories, settings.success_threshold)
    successes = [t for t in trajectories if t not in failures]
    merged = FeedbackResult("", [], False, 0)
    for focus, group in (("failures", failures), ("successes", successes)):
        if not group:
            continue
        kinds = list(allowed) if focus == "failures" else ["harness_patch"]
        prompt = render_feedback_prompt(task=state.task, harness=harness, trajectories=group[: settings.max_shown],
                                        n_total=len(trajectories), focus=focus, history=state.history,
                                        ledger=state.ledger.plus(state.gen_ledger), budget=state.budget,
                                        allowed=kinds, max_actions=max_actions)
        res = agent.ask(prompt, kinds, harness, state.gen_ledger, state.seed, max_actions)
        merged.attempts += res.attempts
        merged.errors += res.errors
        merged.raw += res.raw
        merged.prompts += res.prompts
        merged.ok = merged.ok or res.ok
        merged.actions += res.actions
        merged.diagnosis += (f"[{focus}] {res.diagnosis} " if res.ok else f"[{focus}] failed proposal: "
                             f"{res.errors[-1] if res.errors else 'no answer'} ")
    return merged, trajectories


def harness_step(state: LoopState, settings: HarnessSettings, agent: FeedbackAgent | None,
                 harness: Harness | None = None) -> tuple[Harness, list[dict[str, Any]], str]:
    """One harness generation: reflect, merge, apply at most L edits. Returns (candidate, action records, diagnosis)."""
    harness = harness or state.best_harness
    limit = edit_limit(settings, state.generation, state.budget.generations)
    result, _ = reflect(state, harness, settings, agent, limit)
    candidate, records = apply_patches(harness, result, limit)
    return candidate, records, result.diagnosis.strip()


RAW_KEEP = 2000  # characters of each failed Feedback-Agent answer kept in the record


def apply_patches(harness: Harness, result: FeedbackResult, limit: int) -> tuple[Harness, list[dict[str, Any]]]:
    """Merge the proposed patches and apply at most ``limit``; every proposal is recorded with its outcome."""
    patches = merge_patches([a for a in result.actions if isinstance(a, HarnessPatchAction)])
    records: list[dict[str, Any]] = []
    candidate = harness
    applied = 0
    for action in patches:
        row = action.model_dump(exclude_none=True)
        if applied >= limit:
            row["error"] = f"over the edit budget ({limit})"
            row["skipped"] = True
        else:
            new, outcomes = candidate.apply_all([action.to_patch()])
            if outcomes[0][1]:
                row["error"] = outcomes[0][1]
            else:
                candidate, applied = new, applied + 1
        records.append(row)
    if not result.ok:
        records.append({"type": "failed_proposal", "errors": result.errors[-3:], "attempts": result.attempts,
                        "raw": [text[:RAW_KEEP] for text in result.raw[-3:]]})  # what the model said, for audit
    return candidate, records


def feedback_agent(state: LoopState, retries: int) -> FeedbackAgent | None:
    return FeedbackAgent(state.feedback_model, max_retries=retries) if state.feedback_model is not None else None


@dataclass
class HarnessImprover(Improver):
    """Harness-only (SkillOpt-style): patch SKILL.md and parameters; weights frozen."""

    name = "h"
    uses_feedback = True
    minibatch: int = 16
    edit_budget: int = 4
    edit_schedule: str = "linear"
    success_threshold: float | None = None
    proposer_retries: int = 2

    @property
    def settings_(self) -> HarnessSettings:
        return HarnessSettings(self.minibatch, self.edit_budget, self.edit_schedule, self.success_threshold)

    def propose(self, state: LoopState) -> Proposal:
        agent = feedback_agent(state, self.proposer_retries)
        candidate, actions, diagnosis = harness_step(state, self.settings_, agent)
        proposer = agent.label if agent else "heuristic"
        if candidate.digest == state.best_harness.digest:
            return Proposal(actions=actions, levers=["harness"], diagnosis=diagnosis, proposer=proposer,
                            reason="no applicable harness edit")
        return Proposal(harness=candidate, actions=actions, levers=["harness"], diagnosis=diagnosis, proposer=proposer)
