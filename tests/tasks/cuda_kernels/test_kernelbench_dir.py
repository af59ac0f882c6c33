"""A KernelBench-format directory at GPU default sizes (no problems.toml) on the CPU: every problem loads, the size
policy scales it into the budget the same way in every process, the prompt shows the sizes that are timed, torch
eager is the perfect control where no kernel was written, and the harness's own failures are never charged."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tasks.cuda_kernels.problem_set import BUILTIN_DIR, load_problems
from tasks.cuda_kernels.sizing import SizeBudget
from tasks.cuda_kernels.task import CudaKernelsTask
from tests.tasks.cuda_kernels.programs import instance

DATA = Path(__file__).with_name("kernelbench_data")
LEVEL1, LEVEL2 = "23_Softmax", "12_Gemm_Multiply_LeakyReLU"


@pytest.fixture(scope="module")
def kb_task(tmp_path_factory):
    task = CudaKernelsTask(backend="cpu", problems_dir=str(DATA), trials=2, timing_budget_s=0.5, min_rounds=3,
                           timeout_s=120, cache_dir=str(tmp_path_factory.mktemp("kb-cache")))
    yield task
    task.close()


def test_every_file_loads_without_metadata():
    problems = load_problems(DATA)
    assert len(problems) == 9
    assert all(p.atol is None and p.rtol is None and not p.sizes for p in problems)  # dtype-default tolerance


def test_size_policy_scales_every_problem_into_the_budget(kb_task):
    budget = SizeBudget()
    for problem in kb_task.problems.values():
        policy = kb_task.driver.size_policy(problem)
        est = policy.estimate
        assert policy.kind == "scaled" and 0 < policy.factor < 1, (problem.name, policy)
        moved = est["input_bytes"] + est["output_bytes"] + est["param_bytes"]
        assert moved <= budget.max_call_mb * 2**20 and est["estimate_ms"] <= budget.max_call_ms, (problem.name, est)
        assert policy.check_shapes and policy.check_shapes[0] != policy.shapes[0]


def test_size_policy_is_the_same_in_a_fresh_process(kb_task, tmp_path):
    other = CudaKernelsTask(backend="cpu", problems_dir=str(DATA), cache_dir=str(tmp_path))
    try:
        for name in (LEVEL1, LEVEL2, "63_Conv2d_square"):
            mine = kb_task.driver.size_policy(kb_task.problems[name])
            theirs = other.driver.size_policy(other.problems[name])
            assert mine.shapes == theirs.shapes and mine.check_shapes == theirs.check_shapes
    finally:
        other.close()


@pytest.mark.parametrize("name", [LEVEL1, LEVEL2])
def test_eager_perfect_control_runs_end_to_end_at_the_prompt_sizes(kb_task, name):
    inst = instance(kb_task, name)
    prompt = kb_task.render(kb_task.default_harness(), inst).messages[1]["content"]
    shown = dict(re.findall(r"(\w+)=(\d+)", prompt.split("Sizes timed: ")[1].split(".")[0].split("(")[0]))
    result = kb_task.score(inst, kb_task.perfect_answer(inst))
    d = result.details
    assert d["program_source"] == "reference_eager"
    assert d["correct"] and d["timed"] and not d["failures"] and not d["harness_errors"], result.feedback
    timed = d["shapes"][0]["sizes"]
    assert {k: str(v) for k, v in timed.items()} == shown and timed == d["size_policy"]["shapes"][0]
    assert 0.5 < result.value < 2.0  # torch eager against itself


@pytest.mark.slow
def test_eager_perfect_control_on_every_problem(kb_task):
    for name in sorted(kb_task.problems):
        result = kb_task.score(instance(kb_task, name), kb_task.perfect_answer(instance(kb_task, name)))
        assert result.details["correct"] and not result.details["harness_errors"], (name, result.feedback)


BROKEN = '''import torch
import torch.nn as nn

calls = [0]


class Model(nn.Module):
    def __init__(self):
        super().__init__()

    def forward(self, x):
        return torch.relu(x)


batch_size = 64
dim = 256


def get_inputs():
    calls[0] += 1
    if calls[0] > {after}:
        raise MemoryError("the input generator ran out of memory")
    return [torch.randn(batch_size, dim)]


def get_init_inputs():
    return []
'''


def test_failures_of_the_reference_are_harness_errors_not_the_candidates(tmp_path):
    (tmp_path / "never.py").write_text(BROKEN.replace("{after}", "-1"))  # fails everywhere: no size runs
    (tmp_path / "later.py").write_text(BROKEN.replace("{after}", "4"))  # fails in the middle of the rounds
    task = CudaKernelsTask(backend="cpu", problems_dir=str(tmp_path), trials=2, time=False, cache_dir=str(tmp_path))
    try:
        scores, insts = [], []
        for name in ("never", "later"):
            inst = instance(task, name)
            result = task.score(inst, task.perfect_answer(inst))
            d = result.details
            assert result.value == 0.0 and d["harness_error"] and not d["failures"], (name, result.feedback)
            assert "not your program's fault" in result.feedback
            scores.append(result)
            insts.append(inst)
        assert task.aggregate(scores, insts)["harness_error_rate"] == 1.0
    finally:
        task.close()


def test_a_reference_that_is_not_deterministic_is_a_harness_error(tmp_path):
    """Torch eager's timed outputs are checked every round: a reference whose forward draws fresh noise cannot be
    timed against, and the candidate (here torch eager itself) is not blamed."""
    noisy = BROKEN.replace("calls[0] += 1\n    if calls[0] > {after}:\n        raise MemoryError(\"the input generator "
                           "ran out of memory\")\n", "").replace("return torch.relu(x)", "return x + torch.rand_like(x)")
    assert "rand_like" in noisy and "MemoryError" not in noisy
    (tmp_path / "noisy.py").write_text(noisy)
    task = CudaKernelsTask(backend="cpu", problems_dir=str(tmp_path), trials=2, time=False, cache_dir=str(tmp_path))
    try:
        inst = instance(task, "noisy")
        result = task.score(inst, task.perfect_answer(inst))
        d = result.details
        assert result.value == 0.0 and d["harness_error"] and not d["failures"], result.feedback
        assert "not deterministic" in str(d["harness_errors"]), d["harness_errors"]
    finally:
        task.close()


def test_a_reference_that_writes_into_its_inputs_is_timed_on_private_copies(tmp_path):
    """Inputs are read-only memory in every worker; the eager twin of an in-place reference gets private copies
    (outside the clock), so the reference can still be timed against an honest kernel."""
    source = (BUILTIN_DIR / "softmax.py").read_text()
    inplace = source.replace("return torch.softmax(x, dim=-1)", "out = torch.softmax(x, dim=-1)\n        x.zero_()\n"
                                                                "        return out")
    assert "x.zero_()" in inplace
    (tmp_path / "softmax.py").write_text(inplace)
    (tmp_path / "problems.toml").write_text('[softmax]\nsplit = "train"\natol = 1e-5\nrtol = 1e-4\n'
                                            'sizes.cpu = { batch_size = 64, dim = 512 }\n')
    task = CudaKernelsTask(backend="cpu", problems_dir=str(tmp_path), trials=2, timing_budget_s=0.5, min_rounds=3,
                           cache_dir=str(tmp_path / "cache"))
    try:
        inst = instance(task, "softmax")
        answer = task.perfect_answer(inst)
        assert answer.value["source"] == "reference"  # the hand-written kernel, which leaves its input alone
        result = task.score(inst, answer)
        d = result.details
        assert d["correct"] and d["timed"] and not d["failures"] and not d["harness_errors"], result.feedback
    finally:
        task.close()
