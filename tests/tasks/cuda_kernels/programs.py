"""Candidate programs for the scoring tests: an honest softmax kernel and the pieces hostile variants are built
from. ``SNEAK`` reaches any module without an import statement or a name the static checks know, as an attacker
would, so these tests exercise the defences that run outside the candidate's process."""

from __future__ import annotations

from sia_bench.task import Answer

FAST_FLAGS = "-O3 -march=native -fopenmp -ffast-math"
SNEAK = 'vars(nn)["__builtins__"]["__import__"]'
OPEN = '(__builtins__ if isinstance(__builtins__, dict) else vars(__builtins__))["op" + "en"]'

SOFTMAX_SOURCE = r'''
#include <cmath>
extern "C" void softmax_rows(const float* __restrict__ x, float* __restrict__ y, long rows, long cols) {
    for (long r = 0; r < rows; ++r) {
        const float* xr = x + r * cols;
        float* yr = y + r * cols;
        float m = -INFINITY;
        for (long c = 0; c < cols; ++c) m = xr[c] > m ? xr[c] : m;
        float s = 0.f;
        #pragma omp simd reduction(+:s)
        for (long c = 0; c < cols; ++c) { float e = std::exp(xr[c] - m); yr[c] = e; s += e; }
        const float inv = 1.f / s;
        #pragma omp simd
        for (long c = 0; c < cols; ++c) yr[c] *= inv;
    }
}
'''

HONEST_FORWARD = """        x = x.contiguous()
        y = torch.empty_like(x)
        _softmax(x, y, x.numel() // x.shape[-1], x.shape[-1])
        return y"""


def softmax_program(forward: str = HONEST_FORWARD, top: str = "", init: str = "", source: str = SOFTMAX_SOURCE,
                    load: str = '_softmax = load_cpp(SOURCE, "softmax_rows")') -> str:
    """A complete program: the kernel source, its loading, extra module-level code and a custom forward body."""
    return (f"import torch\nimport torch.nn as nn\nfrom sia_kernels import load_cpp\n\nSOURCE = r'''{source}'''\n"
            f"{load}\n{top}\n\nclass ModelNew(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
            f"{init}\n    def forward(self, x):\n{forward}\n")


def instance(task, name: str):
    return next(i for split in ("train", "val", "test") for i in task.split(split) if i.id == name)


def score(task, problem: str, program: str, flags: str = FAST_FLAGS):
    return task.score(instance(task, problem), Answer({"program": program, "source": "model", "cpp_flags": flags}))


def failure_kinds(result) -> list[str]:
    return [f["kind"] for f in result.details["failures"]]
