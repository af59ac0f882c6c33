"""The compute meter: every model call is timed, counted and charged in FLOPs to the ledger of the moment.

Why one meter: a run's ledger must explain its wall time (ranking, training rollouts, optimizer passes, Feedback-Agent
and Meta-Agent calls included), and arms must be comparable at equal compute. So every call goes through
:func:`model_call` (the model backends and :class:`~sia_bench.agent.Agent` do this themselves; trainers wrap their
forward/backward passes in ``model_call(model, training=True)``), which

* charges seconds (measured), tokens and FLOPs (``2 x parameters x tokens`` forward, ``6 x`` for a training pass) to
  the ledger and purpose set by :func:`charging` (purpose falls back to the model's ``meter_purpose``, e.g.
  ``feedback``, then to ``other``);
* before the call, asks the active :func:`compute_budget` whether another call may start: once the FLOPs charged
  (test excluded) reach the limit it raises :class:`BudgetExhausted`, so a run overshoots by at most one call.

FLOPs are counted on the tokens a call must process: each distinct prompt once, plus every option or generated token
(a GRPO group shares its prompt, as ranking's options do). Reuse *across* calls is charged as if recomputed: a system
block served from the KV cache, or a result from the memo, costs the same FLOPs as a fresh one (seconds show the
saving). That keeps a budget decision independent of caches, batching and hardware. Models without a known size (API models without
``parameters=``) are charged tokens and seconds, and counted in ``Ledger.flops_unknown``.
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any, Iterator

from sia_bench.records import Ledger

FORWARD_FLOPS_PER_PARAM_TOKEN = 2
TRAIN_FLOPS_PER_PARAM_TOKEN = 6  # forward + backward (checkpointing's recomputation is not charged: it is a choice)
UNCHARGED = frozenset({"test"})  # the final test pass is never charged to a budget
DEFAULT_PURPOSE = "other"

_LEDGER: ContextVar[Ledger | None] = ContextVar("sia_bench_meter_ledger", default=None)
_PURPOSE: ContextVar[str | None] = ContextVar("sia_bench_meter_purpose", default=None)
_GUARD: ContextVar["ComputeGuard | None"] = ContextVar("sia_bench_meter_guard", default=None)


class BudgetExhausted(RuntimeError):
    """The compute budget cannot start another call; the loop ends the run cleanly."""

    def __init__(self, spent: float, limit: float, purpose: str):
        super().__init__(f"compute budget reached: {spent:.4g} of {limit:.4g} FLOPs charged before a {purpose} call")
        self.spent, self.limit, self.purpose = spent, limit, purpose


@dataclass
class ComputeGuard:
    """The FLOPs charged so far against ``limit`` (test excluded)."""

    limit: float
    spent: float = 0.0

    def admit(self, purpose: str) -> None:
        if purpose not in UNCHARGED and self.spent >= self.limit:
            raise BudgetExhausted(self.spent, self.limit, purpose)


@contextmanager
def charging(ledger: Ledger | None = None, purpose: str | None = None) -> Iterator[None]:
    """Inside this block, model calls are charged to ``ledger`` (when given) under ``purpose`` (when given)."""
    tokens = []
    if ledger is not None:
        tokens.append((_LEDGER, _LEDGER.set(ledger)))
    if purpose is not None:
        tokens.append((_PURPOSE, _PURPOSE.set(purpose)))
    try:
        yield
    finally:
        for var, token in reversed(tokens):
            var.reset(token)


@contextmanager
def compute_budget(limit: float | None, spent: float = 0.0) -> Iterator[ComputeGuard | None]:
    """Enforce ``limit`` FLOPs (None: no limit) on the calls inside this block; ``spent`` is what came before."""
    if limit is not None and not (limit > 0):
        raise ValueError(f"compute budget must be a positive number of FLOPs, got {limit!r}")
    guard = ComputeGuard(float(limit), float(spent)) if limit is not None else None
    token = _GUARD.set(guard)
    try:
        yield guard
    finally:
        _GUARD.reset(token)


def current_ledger() -> Ledger | None:
    return _LEDGER.get()


def resolve_purpose(model: Any = None, purpose: str | None = None) -> str:
    return purpose or _PURPOSE.get() or getattr(model, "meter_purpose", None) or DEFAULT_PURPOSE


def admit(model: Any = None, purpose: str | None = None) -> None:
    """Raise :class:`BudgetExhausted` when the active budget cannot start another call of this purpose."""
    guard = _GUARD.get()
    if guard is not None:
        guard.admit(resolve_purpose(model, purpose))


def parameters_of(model: Any) -> int | None:
    """The model's parameter count (``info()["parameters"]``), or None when unknown."""
    try:
        n = model.info().get("parameters")
    except Exception:  # a backend whose info() fails is treated as of unknown size, never crashes the meter
        return None
    return int(n) if isinstance(n, (int, float)) and n > 0 else None


def flops_for(model: Any, tokens: int, training: bool = False) -> float | None:
    params = parameters_of(model)
    if params is None:
        return None
    per = TRAIN_FLOPS_PER_PARAM_TOKEN if training else FORWARD_FLOPS_PER_PARAM_TOKEN
    return float(per) * params * tokens


def charge(model: Any, tokens_in: int = 0, tokens_out: int = 0, seconds: float = 0.0, *, calls: int = 1,
           purpose: str | None = None, training: bool = False, reused: int = 0, ledger: Ledger | None = None) -> float:
    """Record spent compute (a finished call, or a memoised result replayed with ``calls=0``); returns its FLOPs."""
    purpose = resolve_purpose(model, purpose)
    flops = flops_for(model, tokens_in + tokens_out, training)
    target = ledger if ledger is not None else _LEDGER.get()
    if target is not None:
        target.charge(purpose, calls=calls, tokens_in=tokens_in, tokens_out=tokens_out, seconds=seconds,
                      flops=flops, reused=reused)
    guard = _GUARD.get()
    if guard is not None and purpose not in UNCHARGED:
        guard.spent += flops or 0.0
    return flops or 0.0


@dataclass
class Call:
    """Filled in by the code inside :func:`model_call`: the tokens the call processed."""

    tokens_in: int = 0
    tokens_out: int = 0

    def count(self, tokens_in: int = 0, tokens_out: int = 0) -> None:
        self.tokens_in += tokens_in
        self.tokens_out += tokens_out


@contextmanager
def model_call(model: Any, *, purpose: str | None = None, training: bool = False) -> Iterator[Call]:
    """One metered call: admitted against the budget first, then timed and charged (also when it raises)."""
    purpose = resolve_purpose(model, purpose)
    admit(model, purpose)
    call = Call()
    start = time.perf_counter()
    try:
        yield call
    finally:
        charge(model, call.tokens_in, call.tokens_out, time.perf_counter() - start, purpose=purpose,
               training=training)
