"""One interface for every model backend: batched chat generation, optional log-likelihood ranking, usage counts."""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

Messages = list[dict[str, str]]


class ModelError(RuntimeError):
    """A backend failed after its retries; the agent records it as a failed sample and goes on."""


@dataclass(frozen=True)
class SamplingParams:
    max_new_tokens: int = 32
    temperature: float = 0.0
    top_p: float = 1.0
    seed: int | None = None
    stop: tuple[str, ...] = ()
    # Structured output: a JSON schema (as a JSON string, so the params stay hashable) the answer must follow.
    # Backends constrain decoding to it where they can (hf: xgrammar; openai: response_format); callers still
    # validate, since a backend without support generates freely.
    json_schema: str | None = None


@dataclass
class Generation:
    text: str
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0
    error: str | None = None


@dataclass
class Usage:
    calls: int = 0
    tokens_in: int = 0
    tokens_out: int = 0
    seconds: float = 0.0
    errors: int = 0

    def add(self, gens: list[Generation], seconds: float) -> None:
        self.calls += len(gens)
        self.tokens_in += sum(g.tokens_in for g in gens)
        self.tokens_out += sum(g.tokens_out for g in gens)
        self.errors += sum(g.error is not None for g in gens)
        self.seconds += seconds


@dataclass
class Model(ABC):
    """A chat model. Subclasses implement :meth:`_generate`; :meth:`generate` counts usage."""

    usage: Usage = field(default_factory=Usage, init=False)

    @property
    @abstractmethod
    def name(self) -> str: ...

    def info(self) -> dict[str, Any]:
        """Identity for run records: backend, model id, revision or checksum, licence, parameter count."""
        return {"name": self.name}

    @abstractmethod
    def _generate(self, batch: list[Messages], params: SamplingParams) -> list[Generation]: ...

    def generate(self, batch: list[Messages], params: SamplingParams = SamplingParams()) -> list[Generation]:
        start = time.perf_counter()
        gens = self._generate(batch, params) if batch else []
        self.usage.add(gens, time.perf_counter() - start)
        return gens

    def loglikelihood(self, batch: list[tuple[Messages, list[str]]]) -> list[list[float]]:
        """Mean per-token log-probability of each option continuing the assistant turn (lm-eval's ranking)."""
        raise NotImplementedError(f"{self.name} cannot score options; use answer_mode=generate")

    @property
    def trainable(self) -> bool:
        return False
