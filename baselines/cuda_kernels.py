"""Baselines for cuda_kernels: torch eager (speed-up 1 by definition, measured), torch.compile, and the hand-written
reference kernel per backend; plus the SIA paper's TriMul anchor rows (H100, geometric-mean microseconds over the
competition's seven shapes).

Baseline programs are marked ``source: baseline:<name>``: they may call torch (that is the point of them), so the
task skips its torch-fallback checks for them (every other check still runs); parse() never produces that mark, so
a model cannot claim it. They run in a candidate worker like any program, with the problem file beside them.
"""

from __future__ import annotations

from typing import Any, Sequence

from sia_bench.task import Answer, Baseline, Instance, Task
from tasks.cuda_kernels.task import BEST_CPP_FLAGS, EAGER_PROGRAM

_COMPILE = '''import torch
from reference_problem import Model


class ModelNew(Model):
    """The reference under torch.compile (default mode)."""

    def __init__(self, *args):
        super().__init__(*args)
        self._compiled = torch.compile(super().forward)

    def forward(self, *inputs):
        return self._compiled(*inputs)
'''


class _Program(Baseline):
    program = ""

    def predict(self, task: Task, instances: Sequence[Instance]) -> list[Answer]:
        return [Answer({"program": self.program, "source": f"baseline:{self.name}",
                        "cpp_flags": BEST_CPP_FLAGS, "nvcc_flags": "-O3"}, self.name) for _ in instances]


class TorchEager(_Program):
    """The PyTorch reference run as the candidate: speed-up ~1, so it shows the timing noise floor."""

    name = "torch_eager"
    program = EAGER_PROGRAM


class TorchCompile(_Program):
    """torch.compile of the reference (on CPU it needs g++ and tens of seconds of compilation per problem)."""

    name = "torch_compile"
    program = _COMPILE


class ReferenceKernel(Baseline):
    """The hand-written kernel for the backend (tasks/cuda_kernels/kernels/<backend>/), where one exists."""

    name = "reference_kernel"

    def predict(self, task: Task, instances: Sequence[Instance]) -> list[Answer]:
        return [task.perfect_answer(i) for i in instances]


BASELINES: dict[str, Baseline] = {b.name: b for b in (TorchEager(), TorchCompile(), ReferenceKernel())}

_SIA = "SIA: Self Improving AI with Harness & Weight Updates, arXiv 2605.27276, TriMul results"
ANCHORS: list[dict[str, Any]] = [
    {"name": "first scaffold", "metric": "candidate_us_geomean", "value": 12483.0, "split": "test",
     "dataset": "trimul", "model": None, "hardware": "NVIDIA H100", "source": _SIA,
     "table": "not given",
     "note": "TriMul, microseconds (lower is better), geometric mean over the competition shapes"},
    {"name": "prior best (TTT-Discover)", "metric": "candidate_us_geomean", "value": 1161.0, "split": "test",
     "dataset": "trimul", "model": None, "hardware": "NVIDIA H100", "source": _SIA, "table": "not given",
     "note": "TriMul, microseconds"},
    {"name": "SIA harness+weights (wh)", "metric": "candidate_us_geomean", "value": 1017.0, "split": "test",
     "dataset": "trimul", "model": None, "hardware": "NVIDIA H100", "source": _SIA, "table": "not given",
     "note": "TriMul, microseconds"},
]
