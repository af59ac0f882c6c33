"""The hand-written reference kernels: every problem has one per backend, the Triton ones are correct (in the
interpreter without a GPU, at the small preset) and the CUDA ones compile. Each scored kernel is one sandbox process
(Triton ~4-8 s here, CUDA ~5-10 s with nvcc). The static checks over every kernel file are in
test_problems_and_checks.py (test_every_reference_kernel_passes_the_static_checks globs kernels/*/*.py)."""

from __future__ import annotations

import importlib.util
import shutil

import pytest

from tasks.cuda_kernels.problem_set import load_problems
from tasks.cuda_kernels.task import BACKENDS, KERNELS, CudaKernelsTask

PROBLEMS = [p.name for p in load_problems()]
TRITON = sorted(p.stem for p in (KERNELS / "triton").glob("*.py"))
CUDA = sorted(p.stem for p in (KERNELS / "cuda").glob("*.py"))


def _instance(task, name):
    return next(i for split in ("train", "val", "test") for i in task.split(split) if i.id == name)


def test_every_problem_has_a_reference_kernel_on_every_backend():
    for backend in BACKENDS:
        have = {p.stem for p in (KERNELS / backend).glob("*.py")}
        assert set(PROBLEMS) <= have, (backend, sorted(set(PROBLEMS) - have))


@pytest.fixture(scope="module")
def triton_task(tmp_path_factory):
    if importlib.util.find_spec("triton") is None:
        pytest.skip("triton not installed (optional extra: pip install 'sia-bench[triton]')")
    # the small preset and no timing, so a GPU machine checks correctness quickly too
    task = CudaKernelsTask(backend="triton", trials=2, timeout_s=300, size="cpu", time=False,
                           cache_dir=str(tmp_path_factory.mktemp("triton-cache")))
    yield task
    task.close()


@pytest.mark.parametrize("name", TRITON)
def test_triton_reference_kernel_is_correct(triton_task, name):
    inst = _instance(triton_task, name)
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


@pytest.mark.parametrize("name", CUDA)
def test_cuda_reference_kernel_compiles(cuda_task, name):
    inst = _instance(cuda_task, name)
    score = cuda_task.score(inst, cuda_task.perfect_answer(inst))
    assert score.details["compiled"], score.feedback
    if score.details.get("gpu"):  # on a GPU machine it also runs: then it must be correct
        assert score.details["correct"], score.feedback
    else:
        assert score.details["executed"] is False and "never executed" in score.feedback
