"""Control arms that pull both levers on a fixed schedule, separating "both levers" from "adaptive choice".

``bt`` follows DSPy BetterTogether's strategy strings (``p -> w -> p``: prompt/harness step, weight step, harness
step) and stops when the schedule ends; ``w+h-alternate`` alternates harness and weight steps strictly until the
budget ends. Neither looks at val to decide what to do next.
"""

from __future__ import annotations

from dataclasses import dataclass

from sia_bench.improvers.base import LoopState, Proposal
from sia_bench.improvers.sia import JointImprover
from sia_bench.task import OptionError


def parse_strategy(strategy: str) -> list[str]:
    steps = [s.strip() for s in strategy.replace("->", " ").split()]
    bad = [s for s in steps if s not in {"p", "w"}]
    if not steps or bad:
        raise OptionError(f"strategy {strategy!r}: steps are 'p' (harness) and 'w' (weights), e.g. 'p -> w -> p'")
    return steps


@dataclass
class BetterTogether(JointImprover):
    """Control: BetterTogether's fixed schedule (default p -> w -> p), then stop."""

    name = "bt"
    strategy: str = "p -> w -> p"
    algo: str = "rft"  # BetterTogether's weight step is bootstrap fine-tuning: rejection sampling, then SFT

    def __post_init__(self) -> None:
        parse_strategy(self.strategy)
        super().__post_init__()

    def step_for(self, generation: int) -> str | None:
        steps = parse_strategy(self.strategy)
        return steps[generation - 1] if generation - 1 < len(steps) else None

    def propose(self, state: LoopState) -> Proposal:
        step = self.step_for(state.generation)
        if step is None:
            return Proposal(stop=True, levers=["stop"], proposer="schedule",
                            reason=f"strategy {self.strategy!r} finished")
        if step == "w":
            return self.weight_step(state, state.best_harness, self.default_update(), "schedule",
                                    diagnosis=f"schedule step {state.generation}: w")
        proposal = self.harness_proposal(state)
        proposal.diagnosis = f"schedule step {state.generation}: p; {proposal.diagnosis}"
        return proposal


@dataclass
class AlternateImprover(JointImprover):
    """Control: strict alternation of harness and weight steps (h, w, h, w, ...) until the budget ends."""

    name = "w+h-alternate"
    first: str = "p"

    def step_for(self, generation: int) -> str:
        other = "w" if self.first == "p" else "p"
        return self.first if generation % 2 == 1 else other

    def propose(self, state: LoopState) -> Proposal:
        if self.step_for(state.generation) == "w":
            return self.weight_step(state, state.best_harness, self.default_update(), "schedule",
                                    diagnosis=f"alternation step {state.generation}: w")
        proposal = self.harness_proposal(state)
        proposal.diagnosis = f"alternation step {state.generation}: p; {proposal.diagnosis}"
        return proposal
