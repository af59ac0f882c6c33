"""Improver ``sft``: the attribution control for the weights lever without RL.

Each generation takes ``steps`` supervised LoRA rounds on the gold completions of train instances
(:meth:`~sia_bench.task.Task.reference_text` under the best harness, which nothing here changes), with the adapter,
optimizer, schedule, prompt stream and val gate of ``w``. What ``w`` gains over ``sft`` at the same compute is what
learning from its own rewarded samples buys over imitating the labels (see :mod:`sia_bench.improvers.attribution`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sia_bench.improvers.weights import WeightsImprover
from sia_bench.task import OptionError


@dataclass
class SupervisedImprover(WeightsImprover):
    """Control: supervised LoRA steps on the train instances' gold completions (w's update with algo=sft)."""

    name = "sft"
    algo: str = "sft"

    def __post_init__(self) -> None:
        if self.algo != "sft":
            raise OptionError(f"improver 'sft': algo is fixed to 'sft' (got {self.algo!r}); the RL algorithms are "
                              "the 'w' arm's")
        super().__post_init__()

    def label(self, feedback_model: Any = None) -> str:
        return "sft"
