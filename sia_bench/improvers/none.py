"""The control arm: no improvement. Generation 0 (the starting harness, frozen weights) is the result."""

from __future__ import annotations

from dataclasses import dataclass

from sia_bench.improvers.base import Improver, LoopState, Proposal


@dataclass
class NoImprover(Improver):
    """Control: score the starting harness and weights; change nothing."""

    name = "none"

    def propose(self, state: LoopState) -> Proposal:
        return Proposal(stop=True, proposer="none", reason="the none control changes nothing")
