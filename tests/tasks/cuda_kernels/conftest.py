"""Shared fixtures: a small KernelBench-format problem directory and one warm cpu task over it (one reference
worker and one warm candidate pool for the whole module), so each scoring costs about a second or two."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from tasks.cuda_kernels.problem_set import BUILTIN_DIR
from tasks.cuda_kernels.task import CudaKernelsTask

SMALL_PROBLEMS = """
[softmax]
split = "train"
atol = 1e-5
rtol = 1e-4
sizes.cpu = { batch_size = 128, dim = 1024 }

[softmax_loose]
split = "train"
atol = 1e-2
rtol = 1e-2
sizes.cpu = { batch_size = 64, dim = 4096 }

[matmul]
split = "train"
atol = 1e-3
rtol = 1e-3
sizes.cpu = { m = 128, k = 128, n = 128 }
"""


@pytest.fixture(scope="session")
def small_problems(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("kernel-problems")
    shutil.copy(BUILTIN_DIR / "softmax.py", root / "softmax.py")
    shutil.copy(BUILTIN_DIR / "softmax.py", root / "softmax_loose.py")
    shutil.copy(BUILTIN_DIR / "matmul.py", root / "matmul.py")
    (root / "problems.toml").write_text(SMALL_PROBLEMS)
    return root


@pytest.fixture(scope="module")
def cpu_task(small_problems, tmp_path_factory):
    task = CudaKernelsTask(backend="cpu", problems_dir=str(small_problems), trials=2, timing_budget_s=0.4,
                           min_rounds=3, sample_ms=2.0, timeout_s=60,
                           cache_dir=str(tmp_path_factory.mktemp("kernel-cache")))
    yield task
    task.close()

