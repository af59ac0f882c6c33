"""The improver contract, DSPy-style: settings in the constructor, one proposal per generation from the loop's state.

An improver sees the task through a train-only view (:mod:`sia_bench.improvers.view`), the **train** split, the current best candidate and the history (val aggregates and
decisions). It never sees val or test instances, labels or per-sample scores: the loop owns evaluation and the gate.
"""

from __future__ import annotations

import random
from abc import ABC, abstractmethod
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, ClassVar, Sequence

from sia_bench.agent import Agent, Answering, Trajectory
from sia_bench.harness import Harness
from sia_bench.models.base import Model
from sia_bench.records import GenerationRecord, Ledger
from sia_bench.task import Instance, OptionError, Task


@dataclass
class Proposal:
    """What an improver wants to try next. ``harness``/``adapter_dir`` None means "unchanged from the best"."""

    harness: Harness | None = None
    adapter_dir: Path | None = None
    actions: list[dict[str, Any]] = field(default_factory=list)
    levers: list[str] = field(default_factory=list)
    diagnosis: str = ""
    proposer: str = ""
    stop: bool = False
    reason: str = ""


@dataclass
class LoopState:
    """Everything an improver may read at the start of a generation."""

    generation: int
    task: Task
    agent: Agent
    train: Sequence[Instance]
    best_harness: Harness
    best_adapter_dir: Path | None
    best_val: dict[str, float]
    history: list[GenerationRecord]
    ledger: Ledger  # spent so far (whole run)
    gen_ledger: Ledger  # this generation's spend: improvers charge their rollouts and training here
    budget: Any
    seed: int
    workdir: Path  # this generation's folder: save adapters under workdir / "adapter"
    feedback_model: Model | None = None
    val_size: int = 0  # number of val instances the gate scores (an aggregate: the resolution of val)

    @property
    def rng(self) -> random.Random:
        return random.Random(self.seed)

    def rollout(self, harness: Harness, instances: Sequence[Instance], seed: int | None = None) -> list[Trajectory]:
        """Run the task agent on train instances, charged to this generation's ledger as ``train``."""
        return self.agent.run(harness, instances, "train", seed=self.seed if seed is None else seed,
                              ledger=self.gen_ledger)


class Improver(ABC):
    """Subclasses are dataclasses whose fields are the ``-I key=value`` settings."""

    name: ClassVar[str]
    uses_weights: ClassVar[bool] = False
    uses_feedback: ClassVar[bool] = False  # proposes through a Feedback-Agent (or the heuristic stand-in)
    answers_with: ClassVar[str] = "model"  # "tools": the arm's answers come from Task.tool_answer, no model call

    @classmethod
    def from_options(cls, **options: Any) -> "Improver":
        names = {f.name: f for f in fields(cls)} if hasattr(cls, "__dataclass_fields__") else {}
        unknown = sorted(set(options) - set(names))
        if unknown:
            raise OptionError(f"improver {cls.name!r} has no setting {unknown[0]!r}; settings: "
                              f"{', '.join(sorted(names)) or '(none)'}")
        converted = {}
        for key, value in options.items():
            default = names[key].default
            converted[key] = _coerce(key, value, default)
        return cls(**converted)

    def settings(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)} if hasattr(self, "__dataclass_fields__") else {}

    def answering(self) -> Answering:
        """How the task agent answers in every pass of this arm's run (train, val, test and the improver's rollouts)."""
        return Answering(answers_with=self.answers_with)

    def label(self, feedback_model: Any = None) -> str:
        """How records and tables name this arm: ``h[heuristic]`` or ``h[llm:<model>]`` for proposer-driven arms."""
        if not self.uses_feedback:
            return self.name
        return f"{self.name}[{'llm:' + feedback_model.name if feedback_model is not None else 'heuristic'}]"

    @abstractmethod
    def propose(self, state: LoopState) -> Proposal: ...


def _coerce(key: str, value: Any, default: Any) -> Any:
    if not isinstance(value, str) or isinstance(default, str) or default is None:
        return value
    try:
        if isinstance(default, bool):
            if value.lower() not in {"true", "false", "1", "0"}:
                raise ValueError
            return value.lower() in {"true", "1"}
        return type(default)(value)
    except (TypeError, ValueError):
        raise OptionError(f"-I {key}={value!r}: expected {type(default).__name__}") from None
