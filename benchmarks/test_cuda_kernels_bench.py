"""cuda_kernels performance: sandbox overhead per candidate against the timing itself, and timing repeatability.

Run: ``.venv/bin/python -m pytest benchmarks/test_cuda_kernels_bench.py -s -p no:cacheprovider`` (prints figures).
"""

from __future__ import annotations

import statistics
import sys
import types

import pytest

from sia_bench.task import Answer
from tasks.cuda_kernels.task import HERE, CudaKernelsTask, reference_program


def test_sandbox_overhead_per_candidate(tmp_path):
    task = CudaKernelsTask(backend="cpu", trials=3, cache_dir=str(tmp_path), timing_budget_s=3.0)
    try:
        inst = next(i for i in task.split("train") if i.id == "gelu")
        answer = Answer({"program": reference_program("cpu", "gelu"), "source": "model",
                         "cpp_flags": "-O3 -march=native -fopenmp"})
        runs = {"compile (cache miss)": task.score(inst, answer), "cache hit": task.score(inst, answer)}
    finally:
        task.close()
    for label, score in runs.items():
        d = score.details
        o = d["overhead_s"]
        startup = d["sandbox_seconds"] - o["total_in_process"]
        print(f"\n{label}: sandbox {d['sandbox_seconds']:.2f} s = process start {startup:.2f} + imports "
              f"{o['imports']:.2f} + compile {o['compile']:.2f} + correctness {o['correctness']:.2f} + timing "
              f"{o['timing']:.2f} (+ rest); compile stats {d['compile_stats']['cpu']}")
        assert d["correct"] and d["timed"]
    hit = runs["cache hit"].details
    assert hit["compile_stats"]["cpu"] == {"compiles": 0, "cache_hits": 1}
    assert hit["overhead_s"]["compile"] < runs["compile (cache miss)"].details["overhead_s"]["compile"]


@pytest.mark.parametrize("statistic", ["min_us", "median_us"])
def test_cpu_timing_repeatability(statistic):
    import torch

    sys.path.insert(0, str(HERE))
    import timing
    from backends import cpu

    sys.modules.setdefault("sia_kernels", types.SimpleNamespace(load_cpp=cpu.load_cpp))
    fn = cpu.load_cpp(reference_program("cpu", "softmax").split('SOURCE = r"""')[1].split('"""')[0], "softmax_rows",
                      flags="-O3 -march=native -fopenmp -ffast-math")
    torch.set_num_threads(1)
    x = torch.randn(256, 1024)
    y = torch.empty_like(x)
    values = [timing.time_one(lambda: fn(x, y, 256, 1024), "cpu", samples=15, budget_s=0.5)[statistic]
              for _ in range(10)]
    med = statistics.median(values)
    spread = 100 * (max(values) - min(values)) / med
    print(f"\nCPU softmax 256x1024, 10 repeated timings ({statistic}): median {med:.1f} us, "
          f"spread (max-min) {spread:.1f}% of the median; values {[round(v, 1) for v in values]}")
    assert med > 0
