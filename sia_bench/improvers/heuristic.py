"""The offline ``heuristic`` proposer: the Feedback-Agent's typed actions from failure statistics, no language model.

It makes the loop useful without any LLM endpoint, and it is labelled ``heuristic`` in records and tables so nobody
mistakes it for a Feedback-Agent. Rules, in order: fix parse failures (retry, other parser), then walk the task's
declared ``search_space`` (parameters in their declared priority order; which untried value of a parameter comes
first is the seed's choice, so seeds are replicates; rejected values never again), then append a "lessons"
section built from the most frequent failure feedback. (The joint arm's lever choice lives in chooser.py.)
"""

from __future__ import annotations

import json
import random
from collections import Counter
from typing import Any, Sequence

from sia_bench.agent import Trajectory
from sia_bench.harness import Harness, PatchError
from sia_bench.improvers.feedback import FeedbackResult, HarnessPatchAction, rejected_buffer
from sia_bench.records import GenerationRecord

LESSONS_HEADER = "## Lessons from training cases"


def setting_key(param: str, value: Any) -> str:
    return f"{param}={json.dumps(value, sort_keys=True, default=str)}"


def tried_settings(history: Sequence[GenerationRecord]) -> set[str]:
    """``param=value`` settings that a rejected (or invalid) generation already tried."""
    return {setting_key(a["param"], a.get("value")) for a in rejected_buffer(history)
            if a.get("type") == "harness_patch" and a.get("op") == "set_param"}


def heuristic_patches(task: Any, harness: Harness, trajectories: Sequence[Trajectory],
                      history: Sequence[GenerationRecord], max_actions: int,
                      success_threshold: float | None = None, rng: random.Random | None = None) -> FeedbackResult:
    n = len(trajectories)
    failures = failed(trajectories, success_threshold)
    parse_failures = [t for t in trajectories if t.parse_error]
    tried = tried_settings(history)
    actions: list[HarnessPatchAction] = []

    def propose(param: str, value: Any, why: str) -> None:
        if param not in harness.specs or any(a.param == param for a in actions) or setting_key(param, value) in tried:
            return
        try:
            harness.apply(HarnessPatchAction(op="set_param", param=param, value=value).to_patch())
        except PatchError:
            return  # already set, or not valid for this harness
        actions.append(HarnessPatchAction(op="set_param", param=param, value=value, rationale=why))

    if n and len(parse_failures) / n > 0.2:
        rate = f"{len(parse_failures)}/{n} answers did not parse"
        propose("retries", min(harness["retries"] + 1, 2), f"{rate}: re-ask with the parse error")
        spec = harness.specs.get("parser")
        for choice in (spec.choices or ()) if spec else ():
            if choice != harness["parser"]:
                propose("parser", choice, f"{rate}: try the {choice!r} parser")
                break
    for param, values in getattr(task, "search_space", {}).items():
        values = list(values)
        if rng is not None:
            rng.shuffle(values)
        for value in values:
            before = len(actions)
            propose(param, value, f"search space: try {param}={value!r} "
                                  f"({len(failures)}/{n} training cases failed with {param}={harness.params.get(param)!r})")
            if len(actions) > before:
                break
    if len(actions) < max_actions and failures and LESSONS_HEADER not in harness.skill:
        common = Counter(_first_line(t.feedback) for t in failures if t.feedback).most_common(3)
        if common:
            body = "\n".join(f"- {text} (seen {count}x)" for text, count in common)
            actions.append(HarnessPatchAction(op="append", text=f"{LESSONS_HEADER}\nFrequent mistakes:\n{body}",
                                              rationale="remind the agent of its most frequent mistakes"))
    diagnosis = (f"{len(failures)}/{n} training cases failed ({len(parse_failures)} unparsable); "
                 f"{len(actions)} rule-based edits proposed")
    return FeedbackResult(diagnosis, actions[:max_actions], True, 0)


def failed(trajectories: Sequence[Trajectory], threshold: float | None) -> list[Trajectory]:
    """Failures: below ``threshold`` when given, else below the best score of the minibatch (when every score is
    the same, all are failures unless that score is at least 1, a perfect score on bounded metrics)."""
    if not trajectories:
        return []
    if threshold is None:
        best = max(t.score for t in trajectories)
        threshold = best if any(t.score < best for t in trajectories) else (1.0 if best < 1.0 else best)
    return [t for t in trajectories if t.score < threshold]


def _first_line(text: str) -> str:
    return " ".join(text.strip().splitlines()[0].split())[:160] if text.strip() else ""
