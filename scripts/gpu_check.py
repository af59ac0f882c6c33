"""GPU check for the cuda_kernels task, run once on a GPU machine (see gpu_check.sh).

Every step is guarded: a failure prints and the script moves on. It prints what is importable (torch+CUDA, CuPy,
Triton, nvcc), runs a CuPy kernel, then scores the hand-written reference kernels (cuda and triton backends) through
the task's own sandboxed runner at the GPU size preset: correctness, CUDA-event timings against torch eager (and
torch.compile for TriMul), then timing repeatability and launch overhead, and ends with a compact table.
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
sys.path.insert(0, str(ROOT / "tasks" / "cuda_kernels"))
T0 = time.time()
ROWS: list[dict] = []


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


def score_reference(backend: str, problem: str, torch_compile: bool, budget_s: float, timeout_s: float) -> None:
    from tasks.cuda_kernels.task import CudaKernelsTask, reference_program

    if reference_program(backend, problem) is None:
        return
    task = CudaKernelsTask(backend=backend, problem=problem, size="gpu", trials=3, timeout_s=timeout_s,
                           torch_compile=torch_compile, timing_budget_s=budget_s, cache_dir=str(Path(os.environ.get("TMPDIR", "/tmp")) / "sia-kc"))
    try:
        inst = task.split("test")[0]
        answer = task.perfect_answer(inst)
        t = time.time()
        score = task.score(inst, answer)
        d = score.details
        row = {"backend": backend, "problem": problem, "correct": d.get("correct"), "cand_us": d.get("candidate_us"),
               "eager_us": d.get("eager_us"), "compile_us": d.get("compile_us"), "speedup": d.get("speedup"),
               "vs_compile": d.get("speedup_vs_compile"), "spread_pct": d.get("spread_pct"),
               "wall_s": time.time() - t, "fail": "; ".join(f["kind"] + ": " + f["message"][:90] for f in d.get("failures", []))}
        ROWS.append(row)
        say(f"{backend:6s} {problem:16s} " + json.dumps({k: (round(v, 2) if isinstance(v, float) else v)
                                                        for k, v in row.items() if k not in ("backend", "problem")}))
        if d.get("shapes") and problem == "trimul":
            for e in d["shapes"]:
                say(f"    shape {e['sizes']}: cand {e['candidate']['median_us']:.1f} us, eager {e['eager']['median_us']:.1f} us"
                    + (f", compile {e['compile']['median_us']:.1f} us" if "compile" in e else ""))
        if not d.get("correct"):
            say("    feedback: " + score.feedback[:1200].replace("\n", "\n    "))
    finally:
        task.close()


def repeatability_and_launch() -> None:
    import torch

    import timing

    x = torch.randn(4096, 16384, device="cuda")
    meds = [timing.time_one(lambda: torch.nn.functional.gelu(x), "cuda", samples=30, budget_s=1)["median_us"]
            for _ in range(10)]
    med = statistics.median(meds)
    say(f"repeatability: 10 timings of torch gelu 4096x16384: median {med:.1f} us, spread (max-min) "
        f"{100 * (max(meds) - min(meds)) / med:.2f}% of the median")
    import types

    from backends import cuda as cb

    sys.modules.setdefault("sia_kernels", types.SimpleNamespace(load_cuda=cb.load_cuda))
    k = cb.load_cuda('extern "C" __global__ void noop(float* y, long n) { if (threadIdx.x == 0 && n == 0) y[0] = 1.f; }', "noop")
    y = torch.empty(1, device="cuda")
    t = timing.time_one(lambda: k(grid=(1,), block=(32,), args=(y, 1)), "cuda", samples=50, budget_s=1, flush=False)
    e = timing.time_one(lambda: y.add_(0), "cuda", samples=50, budget_s=1, flush=False)
    say(f"launch overhead (CUDA events): load_cuda via DLPack {t['median_us']:.1f} us, torch y.add_(0) {e['median_us']:.1f} us")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--deadline", type=float, default=420.0, help="stop starting new steps after this many seconds")
    ap.add_argument("--quick", action="store_true", help="TriMul only")
    args = ap.parse_args()
    env = step("environment", environment) or {}
    if not env.get("cuda"):
        say("no CUDA device visible to torch: nothing to time. (The cpu backend needs no GPU: see the tests.)")
    step("cupy", cupy_kernel)
    plan = [("cuda", "trimul", True, 2.0, 240), ("triton", "trimul", False, 2.0, 180)]
    if not args.quick:
        plan += [(b, p, False, 1.0, 90) for b in ("cuda", "triton")
                 for p in ("gelu", "silu_mul", "softmax", "layernorm", "rmsnorm", "row_sum", "matmul",
                           "matmul_bias_relu", "cumsum", "max_pool2d", "conv2d")]
    for backend, problem, compile_, budget, timeout in plan:
        if time.time() - T0 > args.deadline:
            say(f"deadline reached: skipping {backend}/{problem}")
            continue
        if backend == "triton" and not str(env.get("triton", "")).split(".")[0].isdigit():
            say(f"triton not importable: skipping {problem}")
            continue
        if env.get("cuda"):
            step(f"{backend}/{problem}", score_reference, backend, problem, compile_, budget, timeout)
    if env.get("cuda") and time.time() - T0 < args.deadline + 30:
        step("repeatability", repeatability_and_launch)
    print("\n== cuda_kernels GPU check: reference kernels at the gpu preset (us: median, CUDA events, L2 flushed) ==")
    print(f"{'backend':7s} {'problem':16s} {'ok':3s} {'kernel_us':>10s} {'eager_us':>10s} {'compile_us':>10s} "
          f"{'x_eager':>8s} {'x_compile':>9s} {'iqr%':>6s} {'wall_s':>6s}  failure")
    fmt = lambda v, w, p=1: f"{v:{w}.{p}f}" if isinstance(v, (int, float)) else f"{'-':>{w}s}"  # noqa: E731
    for r in ROWS:
        print(f"{r['backend']:7s} {r['problem']:16s} {'Y' if r['correct'] else 'N':3s} {fmt(r['cand_us'], 10)} "
              f"{fmt(r['eager_us'], 10)} {fmt(r['compile_us'], 10)} {fmt(r['speedup'], 8, 3)} {fmt(r['vs_compile'], 9, 3)} "
              f"{fmt(r['spread_pct'], 6)} {fmt(r['wall_s'], 6)}  {r['fail'][:80]}")
    print("TriMul anchors (SIA paper, H100, geomean us): first scaffold 12483, TTT-Discover 1161, SIA wh 1017")
    out = os.environ.get("OUT")
    if out:
        Path(out, "gpu_check.json").write_text(json.dumps({"env": env, "rows": ROWS}, indent=1, default=str))
    say("done")


if __name__ == "__main__":
    main()
