"""Attribution controls: arms that separate the levers from the tools and from plain search or sampling.

An ablation that says "harness edits take the model from 0% to 69%" cannot be read unless it also says what the
tools score without the model, what random edits from the same space score under the same val gate, what sampling
more answers buys, and what plain supervised training on the train labels buys. ``sia-bench ablate`` runs these next
to the arms, at the same budget:

* ``tool-only`` — the harness search of ``h`` (same proposer, same val gate), but every answer in every pass (train,
  val, test) is what the harness's tools give without the model (:meth:`Task.tool_answer`), parsed and scored as a
  reply; no model call and no task compute (rollouts are still counted). An instance whose tools give nothing is a
  miss; trajectories say ``answered_by: tools``.
* ``random-search`` — each generation sets ``edits`` random parameters to random values from the task's declared
  search space (the one the heuristic proposer walks), same val gate; no train rollouts, no reflection.
* ``best-of-n`` — no improvement step (it stops at generation 1, like ``none``): the starting harness answers with
  ``n`` samples per instance at ``temperature`` in every pass (generate mode: sampled replies; rank mode: one ranking,
  then ``n`` draws from softmax(scores / temperature)) and keeps the most frequent parsed answer (self-consistency;
  ties to the first), so a weight or harness gain can be compared with what extra test-time samples buy. Each
  trajectory records its votes.
* ``sft`` — the weights lever without RL: supervised LoRA steps on the gold completions of train instances
  (:meth:`Task.reference_text` under the starting harness), same adapter, optimizer and val gate as ``w``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, ClassVar

from sia_bench.agent import Answering
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
class BestOfN(Improver):
    """Control: the starting harness, each answer the majority of n sampled answers (self-consistency)."""

    name = "best-of-n"
    n: int = 5
    temperature: float = 0.7

    def __post_init__(self) -> None:
        if not isinstance(self.n, int) or isinstance(self.n, bool) or not 1 <= self.n <= 64:
            raise OptionError(f"improver 'best-of-n': n must be a whole number in [1, 64], got {self.n!r}")
        if not isinstance(self.temperature, (int, float)) or not 0 < self.temperature <= 2:
            raise OptionError(f"improver 'best-of-n': temperature must be in (0, 2], got {self.temperature!r}")

    def answering(self) -> Answering:
        return Answering(votes=self.n, temperature=float(self.temperature))

    def propose(self, state: LoopState) -> Proposal:
        return Proposal(stop=True, proposer="best-of-n",
                        reason=f"the best-of-n control changes nothing: it answers by a vote of {self.n} samples")


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

