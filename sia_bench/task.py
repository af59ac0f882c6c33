"""The task contract: data splits, prompt rendering, answer parsing, scoring with feedback, and controls.

inspect_ai's split, adapted: a task renders a :class:`Prompt` from a harness and an instance (the "solver" side is the
:mod:`sia_bench.agent`), parses the model's text into an :class:`Answer`, and scores it into a :class:`Score` whose
``feedback`` text is what the Feedback-Agent reads. Controls (a perfect and a null answer per instance) let every
score be normalised the OpenProblems way: ``(score - null) / (perfect - null)``.
"""

from __future__ import annotations

import math
import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar, Iterable, Sequence

from sia_bench.harness import Harness, ParamSpec

SPLITS = ("train", "val", "test")


class TaskError(RuntimeError):
    """A task cannot be set up (missing or corrupt data, bad option); the message names the fix."""


class OptionError(ValueError):
    """An invalid ``-T/-I/-M key=value`` option."""


@dataclass(frozen=True)
class Metric:
    name: str
    higher_is_better: bool = True

    def better(self, a: float, b: float) -> bool:
        """Is ``a`` strictly better than ``b``? NaN is never better."""
        if math.isnan(a):
            return False
        if math.isnan(b):
            return True
        return a > b if self.higher_is_better else a < b


@dataclass(frozen=True)
class Instance:
    id: str
    input: Any
    target: Any = None
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Prompt:
    """What the agent sends to the model: chat messages, and optionally a closed set of options to rank."""

    messages: list[dict[str, str]]
    options: list[str] | None = None
    tool_calls: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class Answer:
    """A parsed answer. ``value`` is None when parsing failed; ``error`` then says why."""

    value: Any
    method: str = "exact"
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass
class Score:
    value: float
    feedback: str = ""
    details: dict[str, Any] = field(default_factory=dict)


class Task(ABC):
    """Subclass, set the class attributes, implement the abstract methods, and register the class."""

    name: ClassVar[str]
    version: ClassVar[str]
    metric: ClassVar[Metric]
    description: ClassVar[str] = ""
    options: ClassVar[dict[str, ParamSpec]] = {}
    # Harness parameters the heuristic proposer may explore, in priority order, with values to try.
    search_space: ClassVar[dict[str, list[Any]]] = {}

    def __init__(self, **options: Any):
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise OptionError(f"task {self.name!r} has no option {unknown[0]!r}; options: "
                              f"{', '.join(sorted(self.options)) or '(none)'}")
        self.opts: dict[str, Any] = {}
        for key, spec in self.options.items():
            value = options.get(key, spec.default)
            try:
                self.opts[key] = spec.validate(key, value) if value is not None else None
            except ValueError as err:
                raise OptionError(f"-T {key}: {err}") from None

    # -- data --------------------------------------------------------------------------------------------------
    @abstractmethod
    def load_split(self, split: str) -> list[Instance]:
        """All instances of ``split``; called once per split and cached by :meth:`split`."""

    def split(self, name: str) -> list[Instance]:
        if name not in SPLITS:
            raise TaskError(f"unknown split {name!r}; splits are {SPLITS}")
        cache = self.__dict__.setdefault("_split_cache", {})
        if name not in cache:
            cache[name] = self.load_split(name)
        return cache[name]

    def data_info(self) -> dict[str, Any]:
        """Dataset identity for records and leaderboard grouping (name, sizes, checksums)."""
        return {"options": {k: v for k, v in self.opts.items()}}

    # -- agent side --------------------------------------------------------------------------------------------
    @abstractmethod
    def default_harness(self) -> Harness: ...

    @abstractmethod
    def render(self, harness: Harness, instance: Instance) -> Prompt: ...

    @abstractmethod
    def parse(self, harness: Harness, instance: Instance, text: str) -> Answer: ...

    @abstractmethod
    def score(self, instance: Instance, answer: Answer) -> Score: ...

    def aggregate(self, scores: Sequence[Score], instances: Sequence[Instance]) -> dict[str, float]:
        """Split-level metrics; the primary one is named ``self.metric.name``. Default: the mean."""
        values = [s.value for s in scores]
        return {self.metric.name: sum(values) / len(values) if values else float("nan")}

    # -- controls ----------------------------------------------------------------------------------------------
    @abstractmethod
    def perfect_answer(self, instance: Instance) -> Answer: ...

    @abstractmethod
    def null_answer(self, instance: Instance) -> Answer: ...

    def reference_text(self, harness: Harness, instance: Instance) -> str | None:
        """The gold completion for ``instance`` under ``harness`` (what a perfect model would reply), for supervised
        controls (``sft``); None when the task has no such text (e.g. program tasks without a reference program)."""
        return None

    def tool_answer(self, harness: Harness, instance: Instance) -> str | None:
        """What the harness's tools alone would reply, no model involved (the ``tool-only`` control); None when the
        harness's tools give no answer. Parsed and scored like a model reply."""
        return None

    def control_scores(self, split: str, instances: Sequence[Instance] | None = None) -> dict[str, dict[str, float]]:
        items = list(instances if instances is not None else self.split(split))
        out = {}
        for control, make in (("perfect", self.perfect_answer), ("null", self.null_answer)):
            out[control] = self.aggregate([self.score(i, make(i)) for i in items], items)
        return out

    def normalise(self, value: float, controls: dict[str, dict[str, float]]) -> float:
        perfect, null = controls["perfect"][self.metric.name], controls["null"][self.metric.name]
        return (value - null) / (perfect - null) if perfect != null else float("nan")

    def close(self) -> None:
        """Release sandboxes, caches, worker processes."""


def stratified_split(items: Sequence[Any], labels: Sequence[Any], fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (keep, carved) with about ``fraction`` of each label carved out, fixed by ``seed``.

    Labels with a single item stay in ``keep`` so that every label is still trainable.
    """
    by_label: dict[Any, list[int]] = {}
    for index, label in enumerate(labels):
        by_label.setdefault(label, []).append(index)
    rng = random.Random(seed)
    keep, carved = [], []
    for label in sorted(by_label, key=str):
        idx = by_label[label][:]
        rng.shuffle(idx)
        n = int(round(len(idx) * fraction)) if len(idx) > 1 else 0
        n = min(max(n, 1 if len(idx) >= 2 and fraction > 0 else 0), len(idx) - 1)
        carved += idx[:n]
        keep += idx[n:]
    return sorted(keep), sorted(carved)


def subsample(instances: Iterable[Instance], limit: int | None, seed: int) -> list[Instance]:
    """A fixed random subset of at most ``limit`` instances (all when ``limit`` is None), in original order."""
    items = list(instances)
    if limit is None or limit >= len(items):
        return items
    chosen = sorted(random.Random(seed).sample(range(len(items)), limit))
    return [items[i] for i in chosen]


def split_limit(split: str, limit: int | None, test_limit: int | None) -> int | None:
    """How many instances of ``split`` are scored: ``test_limit`` for test when given, else ``limit``."""
    return (test_limit or limit) if split == "test" else limit


class Baseline(ABC):
    """A classical method for a task: fitted on ``train`` (never on val/test labels), scored with the task's scorer."""

    name: ClassVar[str]
    description: ClassVar[str] = ""

    def fit(self, task: Task) -> None:
        """Learn from ``task.split('train')``; default: nothing to learn."""

    @abstractmethod
    def predict(self, task: Task, instances: Sequence[Instance]) -> list[Answer]: ...
