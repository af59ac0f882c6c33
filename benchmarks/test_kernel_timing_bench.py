"""Timing repeatability: the same kernel scored 10 times, (max - min) / median of the speed-ups.

Target (issue 14): at most 2% on the cpu backend for problems of 1 ms or more. The hand-written softmax (1024 x 1536)
and layernorm (2048 x 1024) kernels (eager 1.4-1.9 ms a call on one core here; softmax at 1024 x 1024 fell to
0.99 ms on a faster day and failed the 1 ms condition), and torch eager scored as the candidate (eager against
eager: the harness's own noise floor, without a kernel's), default timing options (6 s budget, +-1% interval
target). The machine is shared, so the load average is printed beside the figure; the bound is asserted only when
the machine was not oversubscribed (load below the core count), and always printed.

Run: ``.venv/bin/python -m pytest benchmarks/test_kernel_timing_bench.py -s -p no:cacheprovider``; set
``SIA_TIMING_BUDGET_S`` (seconds of timing rounds per scoring, default the task's 6) to see how the spread falls with
more rounds.
"""

from __future__ import annotations

import os
import shutil
import statistics

import pytest

from tasks.cuda_kernels.problem_set import BUILTIN_DIR
from sia_bench.task import Answer
from tasks.cuda_kernels.task import EAGER_PROGRAM, CudaKernelsTask

SCORINGS = 10
BUDGET_S = float(os.environ.get("SIA_TIMING_BUDGET_S", "0")) or None  # None: the task's default
PROBLEMS = """
[softmax]
split = "train"
atol = 1e-5
rtol = 1e-4
sizes.cpu = { batch_size = 1024, dim = 1536 }

[layernorm]
split = "train"
atol = 1e-4
rtol = 1e-4
sizes.cpu = { batch_size = 2048, dim = 1024 }
"""


@pytest.mark.parametrize("name, candidate", [("softmax", "kernel"), ("layernorm", "kernel"), ("softmax", "eager")])
def test_speedup_spread_over_ten_scorings(tmp_path, name, candidate):
    problems = tmp_path / "problems"
    problems.mkdir()
    for both in ("softmax", "layernorm"):
        shutil.copy(BUILTIN_DIR / f"{both}.py", problems / f"{both}.py")
    (problems / "problems.toml").write_text(PROBLEMS)
    budget = {"timing_budget_s": BUDGET_S, "target_ci_pct": 0.05} if BUDGET_S else {}  # the budget ends it
    task = CudaKernelsTask(backend="cpu", problems_dir=str(problems), cache_dir=str(tmp_path / "cache"), **budget)
    load = [os.getloadavg()[0]]
    try:
        inst = next(i for i in task.split("train") if i.id == name)
        speedups, eager_us, rounds = [], [], []
        other: dict[str, list[float]] = {"paired-ratio median": [], "ratio of minima": [], "ratio of 25th pct": []}
        for _ in range(SCORINGS):
            answer = task.perfect_answer(inst) if candidate == "kernel" else \
                Answer({"program": EAGER_PROGRAM, "source": "reference_eager"})
            result = task.score(inst, answer)
            assert result.details["correct"] and result.details["timed"], result.feedback
            timing = result.details["shapes"][0]["timing"]
            speedups.append(result.value)
            cand_s, eager_s = timing["samples_us"]["candidate"], timing["samples_us"]["eager"]
            other["paired-ratio median"].append(timing["paired_ratio"]["median"])
            other["ratio of minima"].append(min(eager_s) / min(cand_s))
            other["ratio of 25th pct"].append(_quartile(eager_s) / _quartile(cand_s))
            eager_us.append(timing["eager"]["median_us"])
            rounds.append(timing["rounds"])
            load.append(os.getloadavg()[0])
    finally:
        task.close()
    med = statistics.median(speedups)
    spread = 100 * (max(speedups) - min(speedups)) / med
    busy = max(load)
    print(f"\n{name} ({candidate} as the candidate), {SCORINGS} scorings: speed-up median {med:.4f}, "
          f"(max-min)/median {spread:.2f}%; "
          f"eager {statistics.median(eager_us):.0f} us/call; rounds {min(rounds)}-{max(rounds)} "
          f"({task.opts['timing_budget_s']:g} s budget); load average "
          f"{min(load):.1f}-{busy:.1f} on {os.cpu_count()} cores; speed-ups {[round(s, 4) for s in speedups]}")
    for label, values in other.items():  # other estimators on the same samples, for comparison only
        print(f"  {label}: median {statistics.median(values):.4f}, (max-min)/median "
              f"{100 * (max(values) - min(values)) / statistics.median(values):.2f}%")
    assert statistics.median(eager_us) >= 1000, "the problem must take 1 ms or more for the 2% target"
    if busy < (os.cpu_count() or 1):
        assert spread <= 2.0


def _quartile(values: list[float]) -> float:
    return sorted(values)[len(values) // 4]
