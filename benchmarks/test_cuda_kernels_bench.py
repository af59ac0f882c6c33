"""cuda_kernels performance: kernel scoring warm vs cold, as a ratio measured in the same run, with the phases.

Cold: a fresh task (its reference worker and candidate worker start, torch imported in each) scores one candidate.
Warm: the same task scores the next candidate with a candidate worker already started (the warm pool; in a real run
it starts while the model writes) and the reference worker up. Same program, same problem, same budget.

Run: ``.venv/bin/python -m pytest benchmarks/test_cuda_kernels_bench.py -s -p no:cacheprovider``
"""

from __future__ import annotations

import os
import time

from sia_bench.task import Answer
from tasks.cuda_kernels.task import BEST_CPP_FLAGS, CudaKernelsTask, reference_program


def _score(task, inst, program):
    start = time.monotonic()
    result = task.score(inst, Answer({"program": program, "source": "model", "cpp_flags": BEST_CPP_FLAGS}))
    return time.monotonic() - start, result


def test_kernel_scoring_warm_vs_cold(tmp_path):
    program = reference_program("cpu", "gelu")
    options = dict(backend="cpu", trials=3, timing_budget_s=2.0, cache_dir=str(tmp_path))
    task = CudaKernelsTask(**options)
    try:
        inst = next(i for i in task.split("train") if i.id == "gelu")
        _score(task, inst, program)  # fills the compile cache, so neither side below pays a compilation
    finally:
        task.close()
    task = CudaKernelsTask(**options)
    try:
        cold_s, cold = _score(task, inst, program)
        task.driver.prewarm()
        task.driver.pool.settle()
        warm_s, warm = _score(task, inst, program)
    finally:
        task.close()
    for label, seconds, result in (("cold", cold_s, cold), ("warm", warm_s, warm)):
        o = result.details["overhead_s"]
        print(f"\n{label}: {seconds:.2f} s = worker start {o['start']:.2f} + load {o['load']:.2f} + correctness "
              f"{o['correctness']:.2f} + timing {o['timing']:.2f} + second shape {o['second_shape']:.2f} + teardown "
              f"{o['teardown']:.2f} (+ rest)")
        assert result.details["correct"] and result.details["timed"], result.feedback
    print(f"kernel scoring cold / warm = {cold_s / warm_s:.2f}x (load average {os.getloadavg()[0]:.1f} on "
          f"{os.cpu_count()} cores)")
    assert warm.details["overhead_s"]["start"] < cold.details["overhead_s"]["start"]
