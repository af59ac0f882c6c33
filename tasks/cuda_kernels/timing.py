"""Harness-side timing (the candidate never times itself). Imported by the runner *before* the candidate, so the
timer functions are bound here and a candidate that patches ``time`` or ``torch.cuda.Event`` later cannot reach them.

CPU: ``perf_counter_ns`` with warm-up, an inner loop long enough to dwarf timer resolution, median of samples.
GPU: CUDA events around each call, warm-up, an L2 flush (a write over a buffer larger than L2) before each trial.
"""

from __future__ import annotations

import statistics
from time import perf_counter_ns
from typing import Any, Callable

L2_FLUSH_BYTES = 256 << 20  # several times the H100/H200 L2 (50-60 MB)


def _summary(samples_us: list[float]) -> dict[str, Any]:
    samples = sorted(samples_us)
    median = statistics.median(samples)
    q1, q3 = samples[len(samples) // 4], samples[(3 * len(samples)) // 4]
    return {"median_us": median, "min_us": samples[0], "iqr_pct": 100.0 * (q3 - q1) / median if median else 0.0,
            "n": len(samples)}


def _cpu_sampler(fn: Callable[[], Any], min_sample_ms: float) -> tuple[Callable[[], float], float]:
    """Warm ``fn`` up and return (one-sample function giving us per call, seconds per sample)."""
    for _ in range(3):
        fn()
    start = perf_counter_ns()
    fn()
    once_ns = max(perf_counter_ns() - start, 1)
    inner = max(1, int(min_sample_ms * 1e6 / once_ns))

    def sample() -> float:
        begin = perf_counter_ns()
        for _ in range(inner):
            fn()
        return (perf_counter_ns() - begin) / inner / 1e3

    return sample, once_ns * inner / 1e9


def _gpu_sampler(fn: Callable[[], Any], flush: bool) -> tuple[Callable[[], float], float]:
    import torch

    Event, synchronize = torch.cuda.Event, torch.cuda.synchronize
    scratch = torch.empty(L2_FLUSH_BYTES // 4, dtype=torch.float32, device="cuda") if flush else None
    for _ in range(5):
        fn()
    synchronize()
    start = perf_counter_ns()
    fn()
    synchronize()
    once_s = (perf_counter_ns() - start) / 1e9

    def sample() -> float:
        if scratch is not None:
            scratch.zero_()  # evict the inputs from L2 so every trial starts cold, like the first call in a model
        begin, end = Event(enable_timing=True), Event(enable_timing=True)
        begin.record()
        fn()
        end.record()
        end.synchronize()
        return begin.elapsed_time(end) * 1e3

    return sample, once_s


def time_interleaved(fns: dict[str, Callable[[], Any]], device: str = "cpu", samples: int = 15,
                     budget_s: float = 10.0, min_sample_ms: float = 2.0, flush: bool = True) -> dict[str, dict]:
    """Time several functions with their samples interleaved (a, b, a, b, ...), so machine drift and noisy
    neighbours hit all of them alike; median and IQR per function, in microseconds per call."""
    samplers = {name: (_gpu_sampler(fn, flush) if device == "cuda" else _cpu_sampler(fn, min_sample_ms))
                for name, fn in fns.items()}
    per_round = sum(cost for _, cost in samplers.values())
    rounds = max(5 if device == "cuda" else 3, min(samples, int(budget_s / max(per_round, 1e-9))))
    out: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, (sample, _) in samplers.items():
            out[name].append(sample())
    return {name: _summary(values) for name, values in out.items()}


def time_one(fn: Callable[[], Any], device: str = "cpu", **kw: Any) -> dict[str, Any]:
    return time_interleaved({"fn": fn}, device, **kw)["fn"]
