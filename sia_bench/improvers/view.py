"""What an improver may see of a task: its contract and its train split, never a val or test instance.

The loop hands improvers (and Feedback-Agents, trainers, proposers) a :class:`TrainOnlyTask` instead of the task: it
serves the train instances, renders, parses and scores *only those* (by identity, not just by id), and answers
``split('val')`` / ``split('test')`` with :class:`TrainOnlyError`. Val reaches an improver only as the aggregates in
the generation history. This is an API boundary for in-process plug-ins written in good faith or by a careless
model-written patch: Python code running in the harness process can always reach further by introspection, which is
why model-written *programs* run in the OS sandbox instead.
"""

from __future__ import annotations

from typing import Any, Sequence

from sia_bench.harness import Harness
from sia_bench.task import Answer, Instance, Metric, Prompt, Score, Task, TaskError


class TrainOnlyError(TaskError):
    """An improver asked for something outside the train split."""


class TrainOnlyTask:
    """A read-only, train-only facade over a task (same names as :class:`~sia_bench.task.Task` where allowed)."""

    __slots__ = ("_get", "_train", "_ids", "name", "version", "metric", "description", "search_space", "opts",
                 "options")

    def __init__(self, task: Task):
        train = list(task.split("train"))
        ids = {id(inst) for inst in train}
        # The task is kept only inside this closure; improvers use the methods below.
        self._get = lambda: task  # noqa: E731
        self._train, self._ids = tuple(train), frozenset(ids)
        self.name, self.version, self.description = task.name, task.version, task.description
        self.metric: Metric = task.metric
        self.search_space = dict(getattr(task, "search_space", {}) or {})
        self.opts = dict(task.opts)
        self.options = dict(task.options)

    # -- data ------------------------------------------------------------------------------------------------------
    def split(self, name: str) -> list[Instance]:
        if name != "train":
            raise TrainOnlyError(f"improvers see the train split only; {name!r} is scored by the loop, which reports "
                                 "val aggregates in the history")
        return list(self._train)

    def _check(self, instances: Sequence[Instance]) -> None:
        for inst in instances:
            if id(inst) not in self._ids:
                raise TrainOnlyError(f"instance {getattr(inst, 'id', inst)!r} is not a train instance of "
                                     f"{self.name}: improvers may render, parse and score train instances only")

    # -- the contract, train instances only --------------------------------------------------------------------------
    def data_info(self) -> dict[str, Any]:
        """Dataset identity (names, sizes, checksums): aggregates, no instances."""
        return self._get().data_info()

    def default_harness(self) -> Harness:
        return self._get().default_harness()

    def render(self, harness: Harness, instance: Instance) -> Prompt:
        self._check([instance])
        return self._get().render(harness, instance)

    def parse(self, harness: Harness, instance: Instance, text: str) -> Answer:
        self._check([instance])
        return self._get().parse(harness, instance, text)

    def score(self, instance: Instance, answer: Answer) -> Score:
        self._check([instance])
        return self._get().score(instance, answer)

    def aggregate(self, scores: Sequence[Score], instances: Sequence[Instance]) -> dict[str, float]:
        self._check(instances)
        return self._get().aggregate(scores, instances)

    def reference_text(self, harness: Harness, instance: Instance) -> str | None:
        """The gold completion of a train instance (supervised controls); None when the task has none."""
        self._check([instance])
        return self._get().reference_text(harness, instance)

    def tool_answer(self, harness: Harness, instance: Instance) -> str | None:
        self._check([instance])
        return self._get().tool_answer(harness, instance)

    def __getattr__(self, name: str) -> Any:
        raise TrainOnlyError(f"improvers cannot reach task.{name}: the train-only view exposes split('train'), "
                             "render, parse, score, aggregate, reference_text, tool_answer, default_harness and the "
                             "task's name, version, metric, description, options and search space")
