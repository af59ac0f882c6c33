"""GPU check for the cuda_kernels task, run once on a GPU machine (see gpu_check.sh).

Every step is guarded: a failure prints and the script moves on. It prints what is importable (torch+CUDA, CuPy,
Triton, nvcc), runs a CuPy kernel, then scores the hand-written reference kernels (cuda and triton backends) through
the task's trusted driver at the GPU size preset (correctness on every call, driver wall-clock timing against torch
eager), then the timing repeatability the issue asks for: the same kernel scored 10 times on a problem of 1 ms or more
(matmul 4096^3, fp32), as (max - min) / median of the speed-ups, target at most 1%, beside torch eager scored as the
candidate (the harness's own noise floor). Ends with a compact table and $OUT/gpu_check.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
T0 = time.time()
ROWS: list[dict] = []
REPEAT: list[dict] = []


def say(msg: str) -> None:
    print(f"[{time.time() - T0:6.1f}s] {msg}", flush=True)


def step(name: str, fn, *args, **kw):
    try:
        return fn(*args, **kw)
    except Exception as err:  # noqa: BLE001 - a broken step must not stop the others
        say(f"{name}: FAILED {type(err).__name__}: {err}")
        traceback.print_exc(limit=3)
        return None


def environment() -> dict:
    info = {}
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.cuda.is_available()
        if info["cuda"]:
            p = torch.cuda.get_device_properties(0)
            info["gpu"] = f"{p.name}, {p.multi_processor_count} SMs, {p.total_memory / 2**30:.0f} GiB, cc {p.major}.{p.minor}"
    except Exception as err:  # noqa: BLE001
        info["torch"] = f"not importable: {err}"
    for mod in ("cupy", "triton"):
        try:
            info[mod] = __import__(mod).__version__
        except Exception as err:  # noqa: BLE001
            info[mod] = f"not importable: {type(err).__name__}: {err}"
    import shutil

    info["nvcc"] = shutil.which("nvcc") or "not found"
    for k, v in info.items():
        say(f"env {k}: {v}")
    return info


def cupy_kernel() -> None:
    import cupy

    kernel = cupy.RawKernel(r'''extern "C" __global__ void axpy(const float* x, float* y, float a, int n) {
        int i = blockIdx.x * blockDim.x + threadIdx.x; if (i < n) y[i] += a * x[i]; }''', "axpy")
    n = 1 << 20
    x, y = cupy.arange(n, dtype=cupy.float32), cupy.ones(n, dtype=cupy.float32)
    kernel(((n + 255) // 256,), (256,), (x, y, cupy.float32(2.0), cupy.int32(n)))
    ok = bool(cupy.allclose(y, 1 + 2 * cupy.arange(n, dtype=cupy.float32)))
    say(f"cupy NVRTC kernel compiled and ran: correct={ok}")


def _task(backend: str, problem: str, budget_s: float, timeout_s: float):
    """The task at the GPU preset; in the weak sandbox mode (said so) where the machine has no bubblewrap."""
    from sia_bench.sandbox import SandboxUnavailable, require_mode
    from tasks.cuda_kernels.task import CudaKernelsTask

    try:
        require_mode("bwrap")
        mode = "bwrap"
    except SandboxUnavailable as err:
        mode = "process"
        say(f"sandbox: {err}; using the weak process mode for this check")
    return CudaKernelsTask(backend=backend, problem=problem, size="gpu", trials=3, timeout_s=timeout_s,
                           timing_budget_s=budget_s, slots_mb=8192, sandbox=mode,
                           cache_dir=str(Path(os.environ.get("TMPDIR", "/tmp")) / "sia-kc"))


def score_reference(backend: str, problem: str, budget_s: float, timeout_s: float) -> None:
    from tasks.cuda_kernels.task import reference_program

    if reference_program(backend, problem) is None:
        return
    task = _task(backend, problem, budget_s, timeout_s)
    try:
        inst = task.split("test")[0]
        t = time.time()
        score = task.score(inst, task.perfect_answer(inst))
        d = score.details
        timing = (d.get("shapes") or [{}])[0].get("timing") or {}
        row = {"backend": backend, "problem": problem, "correct": d.get("correct"), "cand_us": d.get("candidate_us"),
               "eager_us": d.get("eager_us"), "speedup": d.get("speedup"),
               "ci_pct": (timing.get("candidate") or {}).get("ci_halfwidth_pct"), "wall_s": time.time() - t,
               "fail": "; ".join(f["kind"] + ": " + f["message"][:90] for f in d.get("failures", []))
               + "; ".join("harness: " + e["message"][:90] for e in d.get("harness_errors", []))}
        ROWS.append(row)
        say(f"{backend:6s} {problem:16s} " + json.dumps({k: (round(v, 2) if isinstance(v, float) else v)
                                                        for k, v in row.items() if k not in ("backend", "problem")}))
        if problem == "trimul":
            for e in d.get("shapes", []):
                if e.get("timing"):
                    say(f"    shape {e['sizes']}: cand {e['timing']['candidate']['median_us']:.1f} us, eager "
                        f"{e['timing']['eager']['median_us']:.1f} us")
        if not d.get("correct"):
            say("    feedback: " + score.feedback[:1200].replace("\n", "\n    "))
    finally:
        task.close()


def repeatability(backend: str, problem: str, scorings: int, budget_s: float) -> None:
    """The issue's GPU figure: (max - min) / median of the speed-up over repeated scorings (target <= 1%)."""
    from sia_bench.task import Answer
    from tasks.cuda_kernels.task import EAGER_PROGRAM

    task = _task(backend, problem, budget_s, 300)
    try:
        inst = task.split("test")[0]
        for label, answer in (("kernel", task.perfect_answer(inst)),
                              ("eager", Answer({"program": EAGER_PROGRAM, "source": "reference_eager"}))):
            values = []
            for _ in range(scorings):
                d = task.score(inst, answer).details
                if not d.get("timed"):
                    say(f"repeatability {backend}/{problem} {label}: not timed ({d.get('failures')}, "
                        f"{d.get('harness_errors')})")
                    break
                values.append(d["speedup"])
            if values:
                med = statistics.median(values)
                spread = 100 * (max(values) - min(values)) / med
                REPEAT.append({"backend": backend, "problem": problem, "candidate": label, "median": med,
                               "spread_pct": spread, "values": values})
                say(f"repeatability {backend}/{problem} ({label} as candidate), {len(values)} scorings: speed-up "
                    f"median {med:.4f}, (max-min)/median {spread:.2f}% (target <= 1%)")
    finally:
        task.close()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deadline", type=float, default=420.0, help="stop starting new steps after this many seconds")
    ap.add_argument("--quick", action="store_true", help="TriMul only (plus the repeatability figure)")
    ap.add_argument("--scorings", type=int, default=10, help="scorings for the repeatability figure")
    args = ap.parse_args()
    env = step("environment", environment) or {}
    if not env.get("cuda"):
        say("no CUDA device visible to torch: nothing to time. (The cpu backend needs no GPU: see the tests.)")
    step("cupy", cupy_kernel)
    plan = [("cuda", "trimul", 2.0, 240), ("triton", "trimul", 2.0, 180)]
    if not args.quick:
        plan += [(b, p, 1.0, 120) for b in ("cuda", "triton")
                 for p in ("gelu", "silu_mul", "softmax", "layernorm", "rmsnorm", "row_sum", "matmul",
                           "matmul_bias_relu", "cumsum", "max_pool2d", "conv2d")]
    triton_ok = str(env.get("triton", "")).split(".")[0].isdigit()
    if env.get("cuda") and time.time() - T0 < args.deadline:
        step("repeatability", repeatability, "cuda", "matmul", args.scorings, 2.0)
    for backend, problem, budget, timeout in plan:
        if time.time() - T0 > args.deadline:
            say(f"deadline reached: skipping {backend}/{problem}")
            continue
        if backend == "triton" and not triton_ok:
            say(f"triton not importable: skipping {problem}")
            continue
        if env.get("cuda"):
            step(f"{backend}/{problem}", score_reference, backend, problem, budget, timeout)
    print("\n== cuda_kernels GPU check: reference kernels at the gpu preset (us per call: median, driver wall clock) ==")
    print(f"{'backend':7s} {'problem':16s} {'ok':3s} {'kernel_us':>10s} {'eager_us':>10s} {'x_eager':>8s} "
          f"{'ci%':>6s} {'wall_s':>6s}  failure")
    fmt = lambda v, w, p=1: f"{v:{w}.{p}f}" if isinstance(v, (int, float)) else f"{'-':>{w}s}"  # noqa: E731
    for r in ROWS:
        print(f"{r['backend']:7s} {r['problem']:16s} {'Y' if r['correct'] else 'N':3s} {fmt(r['cand_us'], 10)} "
              f"{fmt(r['eager_us'], 10)} {fmt(r['speedup'], 8, 3)} {fmt(r['ci_pct'], 6)} {fmt(r['wall_s'], 6)}  "
              f"{r['fail'][:80]}")
    for r in REPEAT:
        print(f"repeatability {r['backend']}/{r['problem']} ({r['candidate']}): (max-min)/median {r['spread_pct']:.2f}% "
              f"over {len(r['values'])} scorings, median speed-up {r['median']:.4f}")
    print("TriMul anchors (SIA paper, H100, geomean us): first scaffold 12483, TTT-Discover 1161, SIA wh 1017")
    out = os.environ.get("OUT")
    if out:
        Path(out, "gpu_check.json").write_text(json.dumps({"env": env, "rows": ROWS, "repeatability": REPEAT}, indent=1,
                                                          default=str))
    say("done")


if __name__ == "__main__":
    main()
