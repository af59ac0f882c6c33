"""One interface for every model backend: batched chat generation, optional option ranking, usage counts.

Every public call goes through the meter (:mod:`sia_bench.metering`): timed, counted and charged to the ledger of the
moment, and refused once the compute budget is spent. Backends implement the private ``_generate`` / ``_rank``.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any

from sia_bench import metering

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
class Ranking:
    """Scores of one prompt's options: the mean per-token log-probability of each option continuing the assistant
    turn (lm-eval's length-normalised ranking; trainers sample from the same scores), and the tokens it cost."""

    scores: list[float]
    tokens_in: int = 0
    seconds: float = 0.0


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
    # The ledger purpose of calls made outside any purpose scope: the loop sets "feedback" on the Feedback-Agent.
    meter_purpose: str | None = field(default=None, init=False)

    @property
    @abstractmethod
    def name(self) -> str: ...

    def info(self) -> dict[str, Any]:
        """Identity for run records: backend, model id, revision or checksum, licence, parameter count."""
        return {"name": self.name}

    def identity(self) -> dict[str, Any]:
        """Everything that can change this model's answers, for memo keys (backends add numerics and weights)."""
        return self.info()

    @abstractmethod
    def _generate(self, batch: list[Messages], params: SamplingParams) -> list[Generation]: ...

    def generate(self, batch: list[Messages], params: SamplingParams = SamplingParams()) -> list[Generation]:
        if not batch:
            return []
        start = time.perf_counter()
        with metering.model_call(self) as call:
            gens = self._generate(batch, params)
            call.count(sum(g.tokens_in for g in gens), sum(g.tokens_out for g in gens))
        self.usage.add(gens, time.perf_counter() - start)
        return gens

    def _rank(self, batch: list[tuple[Messages, list[str]]]) -> list[Ranking]:
        """Backends that can score options override this."""
        raise NotImplementedError

    def rank(self, batch: list[tuple[Messages, list[str]]]) -> list[Ranking]:
        """Score each prompt's options (see :class:`Ranking`); one metered call for the whole batch."""
        if type(self)._rank is Model._rank:
            raise NotImplementedError(f"{self.name} cannot score options; use answer_mode=generate")
        if not batch:
            return []
        if any(not options for _, options in batch):
            raise ValueError("rank: every prompt needs at least one option")
        start = time.perf_counter()
        with metering.model_call(self) as call:
            rankings = self._rank(batch)
            call.count(sum(r.tokens_in for r in rankings))
        self.usage.calls += len(rankings)
        self.usage.tokens_in += sum(r.tokens_in for r in rankings)
        self.usage.seconds += time.perf_counter() - start
        return rankings

    def loglikelihood(self, batch: list[tuple[Messages, list[str]]]) -> list[list[float]]:
        """Mean per-token log-probability of each option continuing the assistant turn (lm-eval's ranking)."""
        return [r.scores for r in self.rank(batch)]

    @property
    def trainable(self) -> bool:
        return False
