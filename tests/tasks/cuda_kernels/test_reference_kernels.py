"""The hand-written reference kernels: every problem has one per backend; the CPU ones are correct at both shapes and
never flagged by the checks (they are the perfect control); the Triton ones are correct in the interpreter; the CUDA
ones compile. A few run in the default suite, the full sweeps with ``-m slow`` (each scoring is a few seconds; the
Triton interpreter ~10-20 s). The static checks over every kernel file are in test_problems_and_checks.py."""

from __future__ import annotations

import importlib.util
import shutil

import pytest

from tasks.cuda_kernels.problem_set import load_problems
from tasks.cuda_kernels.task import BACKENDS, KERNELS, CudaKernelsTask
from tests.tasks.cuda_kernels.programs import instance

PROBLEMS = [p.name for p in load_problems()]
DEFAULT_RUN = {"cpu": {"trimul"}, "triton": {"softmax"}, "cuda": {"gelu"}}


def _sweep(backend: str):
    names = sorted(p.stem for p in (KERNELS / backend).glob("*.py"))
    return [pytest.param(n, marks=() if n in DEFAULT_RUN[backend] else pytest.mark.slow) for n in names]


def test_every_problem_has_a_reference_kernel_on_every_backend():
    for backend in BACKENDS:
        have = {p.stem for p in (KERNELS / backend).glob("*.py")}
        assert set(PROBLEMS) <= have, (backend, sorted(set(PROBLEMS) - have))


@pytest.fixture(scope="module")
def builtin_cpu_task(tmp_path_factory):
    task = CudaKernelsTask(backend="cpu", trials=2, timing_budget_s=0.3, min_rounds=3,
                           cache_dir=str(tmp_path_factory.mktemp("cpu-cache")))
    yield task
    task.close()


@pytest.mark.parametrize("name", _sweep("cpu"))
def test_cpu_reference_kernel_is_correct_and_never_flagged(builtin_cpu_task, name):
    inst = instance(builtin_cpu_task, name)
    result = builtin_cpu_task.score(inst, builtin_cpu_task.perfect_answer(inst))
    d = result.details
    assert d["correct"] and d["timed"] and not d["failures"] and not d["harness_errors"], result.feedback
    assert "second shape" in d["checks_run"] and result.value > 0


@pytest.fixture(scope="module")
def triton_task(tmp_path_factory):
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton not installed (optional extra: pip install 'sia-bench[triton]')")
    # the small preset and no timing, so a GPU machine checks correctness quickly too
    task = CudaKernelsTask(backend="triton", trials=2, timeout_s=600, size="cpu", time=False,
                           cache_dir=str(tmp_path_factory.mktemp("triton-cache")))
    yield task
    task.close()


@pytest.mark.parametrize("name", _sweep("triton"))
def test_triton_reference_kernel_is_correct(triton_task, name):
    inst = instance(triton_task, name)
    score = triton_task.score(inst, triton_task.perfect_answer(inst))
    assert score.details["correct"], score.feedback


@pytest.fixture(scope="module")
def cuda_task(tmp_path_factory):
    if shutil.which("nvcc") is None:
        pytest.skip("nvcc not installed")
    task = CudaKernelsTask(backend="cuda", trials=2, timeout_s=300, size="cpu", time=False,
                           cache_dir=str(tmp_path_factory.mktemp("cuda-cache")))
    yield task
    task.close()


@pytest.mark.parametrize("name", _sweep("cuda"))
def test_cuda_reference_kernel_compiles(cuda_task, name):
    inst = instance(cuda_task, name)
    score = cuda_task.score(inst, cuda_task.perfect_answer(inst))
    assert score.details["compiled"], score.feedback
    if score.details["device"] != "cpu":  # on a GPU machine it also runs: then it must be correct
        assert score.details["correct"], score.feedback
    else:
        assert score.details["executed"] is False and "never executed" in score.feedback
