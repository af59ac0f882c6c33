"""Fast, sandbox-free checks: the problem set, the static reward-hack checks, parsing and the fallback program."""

from __future__ import annotations

from pathlib import Path

import pytest

from sia_bench.harness import Patch
from tasks.cuda_kernels.checks import static_check
from tasks.cuda_kernels.problem_set import ProblemError, load_problems
from tasks.cuda_kernels.task import KERNELS, CudaKernelsTask, extract_program

KERNELBENCH_FILE = '''import torch
import torch.nn as nn

class Model(nn.Module):
    def __init__(self):
        super().__init__()
    def forward(self, x):
        return torch.relu(x)

batch_size = 16
dim = 16384

def get_inputs():
    return [torch.randn(batch_size, dim)]

def get_init_inputs():
    return []
'''


def test_builtin_problem_set_has_trimul_and_ten_more_with_fixed_splits():
    problems = {p.name: p for p in load_problems()}
    assert "trimul" in problems and len(problems) >= 11
    assert {p.split for p in problems.values()} == {"train", "val", "test"}
    assert len(problems["trimul"].shapes("gpu")) == 7  # the competition's benchmark shapes
    assert all(p.sizes.get("cpu") for p in problems.values())


def test_any_kernelbench_directory_loads_with_hash_split(tmp_path: Path):
    (tmp_path / "19_ReLU.py").write_text(KERNELBENCH_FILE)
    (problem,) = load_problems(tmp_path)
    assert problem.name == "19_ReLU" and problem.split in ("train", "val", "test")
    assert problem.atol is None and problem.rtol is None  # no metadata: tolerance by the output dtype (fp32 1e-4)
    (tmp_path / "broken.py").write_text("x = 1\n")
    with pytest.raises(ProblemError, match="not a KernelBench-format"):
        load_problems(tmp_path)


def test_every_reference_kernel_passes_the_static_checks():
    files = sorted(KERNELS.glob("*/*.py"))
    assert len(files) >= 20
    for path in files:
        assert static_check(path.read_text()) == [], path


@pytest.mark.parametrize("snippet, kind", [
    ("return x @ self.w", "torch fallback"),
    ("return F.softmax(x, -1)", "torch fallback"),
    ("return torch.matmul(x, x)", "torch fallback"),
    ("return x.softmax(-1)", "torch fallback"),
    ("return self.lin(x)", "torch fallback"),
    ("s = torch.cuda.Stream()\n        return x", "extra stream"),
    ("import time\n        time.perf_counter = lambda: 0.0\n        return x", "patched timer"),
    ("import subprocess\n        return x", "forbidden import"),
])
def test_static_checks_catch_known_hacks(snippet: str, kind: str):
    program = ("import torch\nimport torch.nn as nn\nimport torch.nn.functional as F\n\n"
               "class ModelNew(nn.Module):\n    def __init__(self):\n        super().__init__()\n"
               "        self.lin = nn.Linear(4, 4)\n\n    def forward(self, x):\n        " + snippet + "\n")
    kinds = {f.kind for f in static_check(program)}
    assert kind in kinds, kinds


def test_static_checks_flag_vendor_libraries_in_native_code_and_syntax_errors():
    assert {f.kind for f in static_check('S = "cublasSgemm(h, ...)"\nclass ModelNew: pass\n')} == {"torch fallback"}
    assert static_check("def broken(:\n")[0].kind == "syntax"


def test_extract_program_takes_the_last_modelnew_block_even_if_cut_off():
    text = "Here:\n```python\nx = 1\n```\nand\n```python\nclass ModelNew:\n    pass\n```\nfinal\n```python\nclass ModelNew:\n    v = 2"
    assert extract_program(text).strip().endswith("v = 2")
    assert extract_program("no code at all") is None


def test_parse_falls_back_to_the_harness_program_and_says_so():
    task = CudaKernelsTask(backend="cpu", problem="softmax")
    try:
        harness = task.default_harness()
        assert "program.py" in harness.components  # single-problem mode: the starting program is a component
        inst = task.split("val")[0]
        assert inst.input == {"problem": "softmax", "seed": 2000}
        answer = task.parse(harness, inst, "I think you should use tiling.")
        assert answer.method == "harness_program" and answer.value["program"] == harness.components["program.py"]
        strict = harness.apply(Patch("set_param", param="starting_program", value="none"))
        none = task.parse(strict, inst, "nothing")
        assert none.value is None and "ModelNew" in none.error
        prompt = task.render(harness, inst)
        assert "class Model" in prompt.messages[1]["content"] and "load_cpp" in prompt.messages[1]["content"]
    finally:
        task.close()


def test_single_problem_mode_uses_different_seeds_per_split():
    task = CudaKernelsTask(problem="trimul", instances=2)
    try:
        seeds = {s: [i.input["seed"] for i in task.split(s)] for s in ("train", "val", "test")}
        assert seeds == {"train": [1000, 1001], "val": [2000, 2001], "test": [3000, 3001]}
    finally:
        task.close()


def test_an_output_that_ignores_part_of_its_input_is_caught_even_inside_the_tolerance():
    import numpy as np

    from tasks.cuda_kernels.compare import compare, insensitive

    rng = np.random.default_rng(0)
    a = rng.standard_normal((64, 512)).astype(np.float32)
    b = a.copy()
    b[:, 448:] = rng.standard_normal((64, 64))  # the inputs differ in the last eighth of the columns
    exp_a, exp_b = 100 + a.cumsum(1) * 1e-3, 100 + b.cumsum(1) * 1e-3  # the change is well inside rtol
    lazy_a, lazy_b = exp_a.copy(), exp_b.copy()
    lazy_b[:, 448:] = lazy_a[:, 448:]  # a program that never reads the last eighth
    assert compare(lazy_b, exp_b, "float32", 5e-2, 5e-2) is None  # the value checks alone let it through
    assert insensitive(lazy_a, lazy_b, exp_a, exp_b, "float32").kind == "ignores part of the input"
    noisy = [e + rng.standard_normal(e.shape).astype(np.float32) * 1e-7 for e in (exp_a, exp_b)]
    assert insensitive(*noisy, exp_a, exp_b, "float32") is None  # honest rounding is not flagged
