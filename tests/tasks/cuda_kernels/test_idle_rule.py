"""The idle-CPU rule: one noisy gap is not a verdict; work hidden in most gaps, or a lot in one, is."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from tasks.cuda_kernels import rounds
from tasks.cuda_kernels.record import CandidateFailure, KernelResult


class FakeWorker:
    def __init__(self) -> None:
        self.cpu = 0.0

    def cpu_seconds(self) -> float:
        return self.cpu


def gaps(run, ctx, used: list[float]) -> None:
    for u in used:
        ctx.cand.cpu = ctx.idle_from + u
        run.idle_check("before 'run'")
        ctx.idle_from = ctx.cand.cpu


def setup(eager_once_s: float = 1e-6, k: int = 4):
    ctx = SimpleNamespace(cand=FakeWorker(), idle_from=0.0, idle_gaps=0, idle_over=[],
                          result=KernelResult(problem="softmax", backend="cpu", sandbox="bwrap"))
    shape = SimpleNamespace(spec={"eager_once_s": eager_once_s}, k=k)
    return ctx, rounds.ShapeRun(ctx, shape)


def test_sporadic_noise_passes():
    ctx, run = setup()
    gaps(run, ctx, [0.0001] * 30 + [0.0008, 0.0007] + [0.0001] * 10)
    rounds.judge_idle(ctx)
    assert ctx.result.idle_cpu_ms_max == pytest.approx(0.8)
    assert len(ctx.idle_over) == 2


def test_work_in_most_gaps_fails_mid_run():
    ctx, run = setup()
    with pytest.raises(CandidateFailure) as err:
        gaps(run, ctx, [0.002] * 40)
    assert err.value.kind == "work outside calls"
    assert ctx.idle_gaps == rounds.IDLE_EARLY_GAPS  # judged as soon as enough gaps were seen


def test_work_in_a_third_of_few_gaps_fails_at_the_end():
    ctx, run = setup()
    gaps(run, ctx, [0.002, 0.0001, 0.0001] * 3)
    with pytest.raises(CandidateFailure, match="3 of 9 gaps busy"):
        rounds.judge_idle(ctx)


def test_one_big_gap_fails_at_once():
    ctx, run = setup()
    with pytest.raises(CandidateFailure):
        gaps(run, ctx, [0.0001, 0.05])
    assert ctx.idle_gaps == 2


def test_the_bound_scales_with_eager_round():
    ctx, run = setup(eager_once_s=0.001)  # 4 calls: 4 ms a round, so 3 ms gaps are the tail of a reply
    gaps(run, ctx, [0.003] * 20)
    rounds.judge_idle(ctx)
    assert not ctx.idle_over
