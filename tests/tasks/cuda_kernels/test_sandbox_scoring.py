"""End-to-end scoring in the sandbox: the cpu backend for real, adversarial candidates caught, and the cuda backend
compiling (never executing) without a GPU. Each candidate is one sandbox process (~3-5 s here)."""

from __future__ import annotations

import shutil

import pytest

from sia_bench.task import Answer
from tasks.cuda_kernels.task import CudaKernelsTask, reference_program

GELU = reference_program("cpu", "gelu")
HEAD = 'extern "C" void gelu(const float* __restrict__ x, float* __restrict__ y, long n) {'


@pytest.fixture(scope="module")
def cpu_task(tmp_path_factory):
    task = CudaKernelsTask(backend="cpu", trials=2, timeout_s=60, cache_dir=str(tmp_path_factory.mktemp("cache")))
    yield task
    task.close()


def _gelu_instance(task):
    return next(i for i in task.split("train") if i.id == "gelu")


def _score(task, program, **kw):
    return task.score(_gelu_instance(task), Answer({"program": program, "source": "model",
                                                    "cpp_flags": "-O2 -fopenmp", **kw}))


def test_cpu_backend_end_to_end_reference_kernel_is_correct_and_timed(cpu_task):
    inst = _gelu_instance(cpu_task)
    score = cpu_task.score(inst, cpu_task.perfect_answer(inst))
    d = score.details
    assert d["compiled"] and d["executed"] and d["correct"] and d["timed"], score.feedback
    assert score.value == d["speedup"] > 0 and d["candidate_us"] > 0 and d["eager_us"] > 0
    assert {"dispatch trace", "allclose", "in-place edit", "timer identity"} <= set(d["checks_run"])
    assert "speed-up" in score.feedback
    null = cpu_task.score(inst, cpu_task.null_answer(inst))
    assert null.value == 0.0


ADVERSARIAL = {
    # writes the result into its input and returns it
    "in-place edit": GELU.replace("y = torch.empty_like(x)\n        _gelu(x, y, x.numel())\n        return y",
                                  "_gelu(x, x, x.numel())\n        return x"),
    # computes once, then replays the first output for every later input
    "mismatch": GELU.replace("        x = x.contiguous()\n        y = torch.empty_like(x)\n"
                             "        _gelu(x, y, x.numel())\n        return y",
                             "        if getattr(self, 'saved', None) is None:\n            self.saved = torch.empty_like(x)\n"
                             "            _gelu(x.contiguous(), self.saved, x.numel())\n        return self.saved"),
    "constant output": GELU.replace("_gelu(x, y, x.numel())", "y.zero_()"),
    # hides the torch call from the static check; the dispatch trace still sees aten.gelu
    "torch fallback": GELU.replace("_gelu(x, y, x.numel())", "y.copy_(getattr(torch.nn.functional, 'ge' + 'lu')(x))"),
    "crash": GELU.replace(HEAD, HEAD + "\n    *(volatile float*)0 = 1.f;"),
}


@pytest.mark.parametrize("kind", sorted(ADVERSARIAL))
def test_adversarial_candidates_are_caught(cpu_task, kind):
    program = ADVERSARIAL[kind]
    assert program != GELU and HEAD in GELU, "the adversarial edit did not apply"
    score = _score(cpu_task, program)
    kinds = [f["kind"] for f in score.details["failures"]]
    assert score.value == 0.0 and kind in kinds, (kinds, score.feedback)
    if kind == "crash":
        assert "segmentation fault" in score.feedback
    if kind == "mismatch":
        assert "first mismatch at index" in score.feedback


def test_infinite_loop_is_killed_and_scores_zero(tmp_path):
    task = CudaKernelsTask(backend="cpu", trials=2, timeout_s=12, cache_dir=str(tmp_path))
    try:
        hang = GELU.replace(HEAD, HEAD + "\n    for (volatile int s = 1; s;) {}")
        score = _score(task, hang)
        assert score.value == 0.0 and "timed out" in score.feedback, score.feedback
    finally:
        task.close()


def test_compile_errors_reach_the_feedback(cpu_task):
    score = _score(cpu_task, GELU.replace("y[i] = 0.5f", "y[i] = undefined_name * 0.5f"))
    assert not score.details["compiled"] and "undefined_name" in score.feedback


@pytest.mark.skipif(shutil.which("nvcc") is None, reason="nvcc not installed")
def test_cuda_backend_compiles_a_correct_and_a_broken_kernel(tmp_path):
    task = CudaKernelsTask(backend="cuda", trials=2, timeout_s=120, cache_dir=str(tmp_path))
    try:
        inst = next(i for i in task.split("train") if i.id == "gelu")
        good = task.score(inst, task.perfect_answer(inst))
        assert good.details["compiled"], good.feedback
        if not good.details.get("gpu"):  # without a GPU: compiled, statically checked, never run
            assert good.details["executed"] is False and good.value == 0.0
            assert "never executed" in good.feedback
        broken = reference_program("cuda", "gelu").replace("erff(", "erff_typo(")
        bad = task.score(inst, Answer({"program": broken, "source": "model"}))
        assert not bad.details["compiled"] and bad.value == 0.0
        assert "erff_typo" in bad.feedback and "nvcc failed" in bad.feedback
    finally:
        task.close()


def test_triton_backend_runs_the_interpreter_without_a_gpu(tmp_path):
    pytest.importorskip("triton", reason="triton not installed (optional extra: pip install 'sia-bench[triton]')")
    task = CudaKernelsTask(backend="triton", trials=2, timeout_s=120, cache_dir=str(tmp_path))
    try:
        inst = next(i for i in task.split("train") if i.id == "gelu")
        score = task.score(inst, task.perfect_answer(inst))
        assert score.details["correct"], score.feedback
        if score.details.get("interpreted"):
            assert score.value == 0.0 and not score.details["timed"]
    finally:
        task.close()
