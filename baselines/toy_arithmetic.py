"""Baselines for the toy task: a calculator (exact) and always-the-train-mean."""

from __future__ import annotations

from typing import Sequence

from sia_bench.task import Answer, Baseline, Instance, Task


class Calculator(Baseline):
    """Adds the operands in Python: the ceiling any model can reach."""

    name = "calculator"

    def predict(self, task: Task, instances: Sequence[Instance]) -> list[Answer]:
        return [Answer(i.input["a"] + i.input["b"], "calculator") for i in instances]


class TrainMean(Baseline):
    """Answers the rounded mean train sum for every question."""

    name = "train_mean"

    def fit(self, task: Task) -> None:
        sums = [i.target for i in task.split("train")]
        self.mean = round(sum(sums) / len(sums))

    def predict(self, task: Task, instances: Sequence[Instance]) -> list[Answer]:
        return [Answer(self.mean, "train_mean") for _ in instances]


BASELINES = {"calculator": Calculator, "train_mean": TrainMean}
