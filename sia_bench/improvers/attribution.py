"""Attribution controls: arms that separate the levers from the tools and from plain search or sampling.

An ablation that says "harness edits take the model from 0% to 69%" cannot be read unless it also says what the
tools score without the model, what random edits from the same space score under the same val gate, what sampling
more answers buys, and what plain supervised training on the train labels buys. ``sia-bench ablate`` runs these next
to the arms, at the same budget:

* ``tool-only`` — the harness search of ``h`` (same proposer, same val gate), but every answer is what the harness's
  tools give without the model (:meth:`Task.tool_answer`); no model call at all.
* ``random-search`` — each generation sets ``edits`` random parameters to random values from the task's declared
  search space (the one the heuristic proposer walks), same val gate; no train rollouts, no reflection.
* ``best-of-n`` — no improvement step: the starting harness answers with ``n`` sampled replies per instance
  (temperature ``temperature``) and keeps the most frequent parsed answer (self-consistency), so a weight or
  harness gain can be compared with what extra test-time samples buy.
* ``sft`` — the weights lever without RL: supervised LoRA steps on the gold completions of train instances
  (:meth:`Task.reference_text` under the starting harness), same adapter, optimizer and val gate as ``w``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar

from sia_bench.harness import PatchError
from sia_bench.improvers.base import Improver, LoopState, Proposal
from sia_bench.improvers.harness import HarnessImprover
from sia_bench.improvers.heuristic import setting_key, tried_settings
from sia_bench.improvers.feedback import HarnessPatchAction
from sia_bench.task import OptionError


@dataclass
class ToolOnly(HarnessImprover):
    """Control: h's search over the harness, answered by the harness's tools alone (no model)."""

    name = "tool-only"
    answers_with: ClassVar[str] = "tools"

    def label(self, feedback_model: Any = None) -> str:
        return "tool-only"


@dataclass
class RandomSearch(Improver):
    """Control: random set_param edits from the task's declared search space, kept only by the val gate."""

    name = "random-search"
    edits: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.edits, int) or not 1 <= self.edits <= 16:
            raise OptionError(f"improver 'random-search': edits must be a whole number in [1, 16], got {self.edits!r}")

    def propose(self, state: LoopState) -> Proposal:
        harness = state.best_harness
        rng = random.Random(state.seed)
        tried = tried_settings(state.history)
        options = []
        for param, values in sorted(state.task.search_space.items()):
            if param not in harness.specs:
                continue
            for value in values:
                try:
                    valid = harness.specs[param].validate(param, value)
                except PatchError:
                    continue
                if valid != harness.params[param]:
                    options.append((param, value))
        fresh = [o for o in options if setting_key(*o) not in tried] or options
        if not fresh:
            return Proposal(stop=True, levers=["stop"], proposer="random",
                            reason="the search space has no value the harness does not already use")
        rng.shuffle(fresh)
        actions, candidate, used = [], harness, set()
        for param, value in fresh:
            if len(used) >= self.edits or param in used:
                continue
            action = HarnessPatchAction(op="set_param", param=param, value=value, rationale="random search")
            try:
                candidate = candidate.apply(action.to_patch())
            except PatchError as err:
                actions.append({**action.model_dump(exclude_none=True), "error": str(err)})
                continue
            used.add(param)
            actions.append(action.model_dump(exclude_none=True))
        return Proposal(harness=candidate if candidate.digest != harness.digest else None, actions=actions,
                        levers=["harness"], proposer="random", diagnosis=f"{len(used)} random edit(s)")

