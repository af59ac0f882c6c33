"""Scoring end to end through the trusted driver: what a record holds, compile errors reaching the feedback, the
cuda backend compiling (never executing) without a GPU, the headline metrics, and harness errors kept apart from
candidate failures."""

from __future__ import annotations

import shutil

import pytest

from sia_bench.task import Answer, Score
from tasks.cuda_kernels.task import CudaKernelsTask, reference_program
from tests.tasks.cuda_kernels.programs import failure_kinds, instance, score, softmax_program


def test_reference_kernel_end_to_end_record(cpu_task):
    inst = instance(cpu_task, "softmax")
    result = cpu_task.score(inst, cpu_task.perfect_answer(inst))
    d = result.details
    assert d["compiled"] and d["executed"] and d["correct"] and d["timed"], result.feedback
    assert result.value == d["speedup"] > 0 and d["candidate_us"] > 0 and d["eager_us"] > 0
    assert d["sandbox"] == "bwrap" and d["size_policy"]["kind"] == "preset:cpu"
    timed, check = d["shapes"]
    assert timed["role"] == "timed" and check["role"] == "check" and check["sizes"] != timed["sizes"]
    timing = timed["timing"]
    assert timing["clock"] == "cpu" and timing["rounds"] >= 3 and timing["slots_per_sample"] >= 1
    assert timing["candidate"]["ci95_us"][0] <= timing["candidate"]["median_us"] <= timing["candidate"]["ci95_us"][1]
    assert timed["calls_checked"] >= timing["rounds"] * timing["slots_per_sample"]
    assert set(d["check_trust"]) == set(d["checks_run"]) and "reference determinism" in d["checks_run"]
    assert not d["failures"] and not d["harness_errors"] and "speed-up" in result.feedback.lower()
    null = cpu_task.score(inst, cpu_task.null_answer(inst))
    assert null.value == 0.0


def test_compile_errors_reach_the_feedback(cpu_task):
    broken = softmax_program().replace("float s = 0.f;", "float s = undefined_name;")
    result = score(cpu_task, "softmax", broken)
    assert failure_kinds(result) == ["compile"] and "undefined_name" in result.feedback
    assert not result.details["compiled"]


def test_perfect_control_is_eager_where_no_kernel_was_written(cpu_task):
    inst = instance(cpu_task, "softmax_loose")  # a problem without a hand-written kernel
    answer = cpu_task.perfect_answer(inst)
    assert answer.value["source"] == "reference_eager"
    result = cpu_task.score(inst, answer)
    assert result.details["correct"] and result.details["timed"] and not result.details["failures"], result.feedback
    assert 0.5 < result.value < 2.0  # torch eager against itself


def test_aggregate_reports_fast_p_and_keeps_harness_errors_out():
    task = CudaKernelsTask.__new__(CudaKernelsTask)
    scores = [Score(2.5, details={"correct": True, "timed": True, "candidate_us": 10.0}),
              Score(1.2, details={"correct": True, "timed": True, "candidate_us": 20.0}),
              Score(0.0, details={"correct": False}),
              Score(0.0, details={"correct": True, "timed": False}),
              Score(0.0, details={"harness_error": True})]
    out = CudaKernelsTask.aggregate(task, scores, [None] * 5)
    assert out["harness_error_rate"] == 0.2 and out["correct_rate"] == 0.75
    assert out["fast_0"] == 0.75 and out["fast_1"] == 0.5 and out["fast_1.5"] == 0.25 and out["fast_2"] == 0.25
    assert out["geomean_speedup"] == pytest.approx((2.5 * 1.2) ** 0.5) and out["speedup"] == pytest.approx(3.7 / 4)


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_cuda_backend_compiles_a_correct_and_a_broken_kernel(tmp_path):
    task = CudaKernelsTask(backend="cuda", trials=2, timeout_s=120, cache_dir=str(tmp_path))
    try:
        inst = instance(task, "gelu")
        good = task.score(inst, task.perfect_answer(inst))
        assert good.details["compiled"], good.feedback
        if good.details["device"] == "cpu":  # without a GPU: compiled, statically checked, never run
            assert good.details["executed"] is False and good.value == 0.0 and "never executed" in good.feedback
        broken = reference_program("cuda", "gelu").replace("erff(", "erff_typo(")
        bad = task.score(inst, Answer({"program": broken, "source": "model"}))
        assert not bad.details["compiled"] and bad.value == 0.0
        assert "erff_typo" in bad.feedback and "nvcc failed" in bad.feedback
    finally:
        task.close()
