"""Sandbox-side evaluation of one candidate program: load, compile, check, compare with the reference, time.

Run by :func:`sia_bench.sandbox.run_python` as ``runner.py config.json``; never imported by the harness. It writes
``result.json`` after every stage, so a crash or hang still leaves the last stage reached for the feedback. Timing
functions and timer identities are captured before the candidate is imported, so patching them is both detected and
ineffective.
"""

import importlib.util
import json
import math
import os
import sys
import time
import traceback
import types
from time import perf_counter

T_START = perf_counter()
HERE = os.path.dirname(os.path.abspath(__file__))
if HERE not in sys.path:  # importing torch can drop the script directory from sys.path
    sys.path.insert(0, HERE)
CONFIG = json.loads(open(sys.argv[1]).read())
RESULT = {"stage": "start", "compiled": False, "executed": False, "correct": False, "timed": False, "done": False,
          "checks_run": [], "failures": [], "overhead_s": {}}
ALLOWED_OPS = {  # what ModelNew.forward may ask torch for: allocation, views, copies; never arithmetic
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "zeros", "zeros_like", "new_zeros",
    "ones", "ones_like", "full", "full_like", "fill", "fill_", "zero_", "view", "_unsafe_view", "reshape",
    "as_strided", "contiguous", "clone", "copy_", "_to_copy", "to", "detach", "alias", "t", "transpose", "permute",
    "expand", "unsqueeze", "squeeze", "select", "slice", "split", "chunk", "flatten", "unflatten", "narrow",
    "lift_fresh", "_local_scalar_dense", "sym_size", "sym_stride", "sym_numel", "is_same_size", "resize_", "view_as",
    "expand_as", "unbind", "split_with_sizes", "constant_pad_nd", "_has_compatible_shallow_copy_type", "set_",
}


def save(**updates):
    RESULT.update(updates)
    tmp = "result.json.tmp"
    with open(tmp, "w") as f:
        json.dump(RESULT, f, default=str)
    os.replace(tmp, "result.json")


def stage(name):
    save(stage=name)


def fail(kind, message, **extra):
    RESULT["failures"].append({"kind": kind, "message": message, **extra})
    save()


def finish():
    RESULT["overhead_s"]["total_in_process"] = perf_counter() - T_START
    save(done=True)
    sys.exit(0)


def candidate_trace(exc: BaseException) -> str:
    lines = traceback.format_exception(type(exc), exc, exc.__traceback__)
    keep = [ln for ln in lines if "runner.py" not in ln]
    return "".join(keep)[-1500:]


def load_module(path, name):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# -- set-up ------------------------------------------------------------------------------------------------------
backend = CONFIG["backend"]
stage("import torch")
import torch  # noqa: E402

if HERE not in sys.path:
    sys.path.insert(0, HERE)

torch.set_num_threads(int(CONFIG.get("threads", 1)))
have_gpu = torch.cuda.is_available()
# float32 problems are checked and timed against exact fp32: cuDNN's default would run the reference convolution in
# TF32 (~1e-3 off on conv2d's full size, the tolerance itself) and flatter its time against exact-fp32 kernels.
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
if backend == "triton" and not have_gpu:
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported anywhere
import timing  # noqa: E402  (binds the timers before the candidate exists)
from backends import cpu as cpu_backend  # noqa: E402
from backends import cuda as cuda_backend  # noqa: E402
from backends.build import CompileError  # noqa: E402

TIMERS = {"time.perf_counter": time.perf_counter, "time.perf_counter_ns": time.perf_counter_ns,
          "time.time": time.time, "timing.perf_counter_ns": timing.perf_counter_ns,
          "torch.cuda.Event": torch.cuda.Event, "torch.cuda.Event.elapsed_time": torch.cuda.Event.elapsed_time,
          "torch.cuda.Event.record": torch.cuda.Event.record, "torch.cuda.synchronize": torch.cuda.synchronize}


def timers_patched():
    now = {"time.perf_counter": time.perf_counter, "time.perf_counter_ns": time.perf_counter_ns,
           "time.time": time.time, "timing.perf_counter_ns": timing.perf_counter_ns,
           "torch.cuda.Event": torch.cuda.Event, "torch.cuda.Event.elapsed_time": torch.cuda.Event.elapsed_time,
           "torch.cuda.Event.record": torch.cuda.Event.record, "torch.cuda.synchronize": torch.cuda.synchronize}
    return [k for k in TIMERS if now[k] is not TIMERS[k]]


sia_kernels = types.ModuleType("sia_kernels")
sia_kernels.load_cpp = cpu_backend.load_cpp
sia_kernels.load_cuda = cuda_backend.load_cuda
sia_kernels.CompileError = CompileError
sys.modules["sia_kernels"] = sia_kernels

if backend == "cpu":
    device, executable = "cpu", True
elif backend == "cuda":
    device, executable = ("cuda", True) if have_gpu else ("cpu", False)
else:
    from backends.triton_backend import triton_status

    reason = triton_status()
    if reason:
        fail("unavailable", reason)
        finish()
    device, executable = ("cuda" if have_gpu else "cpu"), True
preset = CONFIG.get("preset", "auto")
preset = ("gpu" if device == "cuda" else "cpu") if preset == "auto" else preset
save(device=device, preset=preset, gpu=torch.cuda.get_device_name() if have_gpu else None,
     interpreted=backend == "triton" and not have_gpu, torch=torch.__version__)
RESULT["overhead_s"]["imports"] = perf_counter() - T_START

problem_cfg = CONFIG["problem"]
problem = load_module(problem_cfg["path"], "reference_problem")

# -- the candidate: import (which compiles its kernels) ---------------------------------------------------------
stage("compile")
t0 = perf_counter()
try:
    candidate = load_module(CONFIG["program"], "candidate")
except CompileError as err:
    fail("compile", str(err), log=err.log)
    finish()
except BaseException as err:  # noqa: BLE001 - anything the candidate raises is its failure, not ours
    fail("import", f"{type(err).__name__}: {err}", log=candidate_trace(err))
    finish()
RESULT["overhead_s"]["compile"] = perf_counter() - t0
RESULT["compile_stats"] = {"cpu": dict(cpu_backend.STATS), "cuda": dict(cuda_backend.STATS)}
save(compiled=True)
RESULT["checks_run"].append("timer identity")
if timers_patched():
    fail("patched timer", f"the program replaced {', '.join(timers_patched())}")
    finish()
if not hasattr(candidate, "ModelNew"):
    fail("format", "the program defines no ModelNew")
    finish()
if not executable:
    fail("not executed", "no GPU here: the CUDA source was compiled and statically checked, never executed")
    finish()


# -- correctness ---------------------------------------------------------------------------------------------------
def build(seed):
    init = problem.get_init_inputs()
    with torch.device(device):
        torch.manual_seed(seed)
        ref = problem.Model(*init)
        torch.manual_seed(seed)
        new = candidate.ModelNew(*init)
    ref_state, copied = ref.state_dict(), 0
    new_state = new.state_dict()
    for key, value in new_state.items():  # identical weights, whatever order ModelNew created them in
        if key in ref_state and ref_state[key].shape == value.shape:
            value.copy_(ref_state[key])
            copied += 1
    return ref.to(device).eval(), new.to(device).eval(), copied


def make_inputs(seed):
    torch.manual_seed(seed)
    with torch.device(device):
        return [x.to(device) if isinstance(x, torch.Tensor) else x for x in problem.get_inputs()]


def clone(values):
    return [x.clone() if isinstance(x, torch.Tensor) else x for x in values]


def as_list(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def first_mismatch(got, expected, atol, rtol):
    bad = ~torch.isclose(got, expected, atol=atol, rtol=rtol, equal_nan=False)
    flat = int(bad.flatten().nonzero()[0].item())
    index = list(torch.unravel_index(torch.tensor(flat), got.shape)) if got.dim() else []
    return {"index": [int(i) for i in index], "expected": float(expected.flatten()[flat]),
            "got": float(got.flatten()[flat]), "mismatched_fraction": float(bad.float().mean()),
            "max_abs_error": float((got.double() - expected.double()).abs().nan_to_num(float("inf")).max())}


def compare(got_all, expected_all, trial, atol, rtol):
    """One trial's outputs against the reference; records the first failure and returns False on any."""
    got_all, expected_all = as_list(got_all), as_list(expected_all)
    if len(got_all) != len(expected_all):
        fail("output", f"trial {trial}: {len(got_all)} outputs, reference has {len(expected_all)}")
        return False
    for got, expected in zip(got_all, expected_all):
        if not isinstance(got, torch.Tensor):
            fail("output", f"trial {trial}: output is {type(got).__name__}, not a tensor")
            return False
        if got.shape != expected.shape or got.dtype != expected.dtype:
            fail("output", f"trial {trial}: output shape/dtype {tuple(got.shape)} {got.dtype}, expected "
                           f"{tuple(expected.shape)} {expected.dtype}")
            return False
        got_c, exp_c = got.detach().cpu(), expected.detach().cpu()
        if exp_c.is_floating_point() and bool(torch.isfinite(exp_c).all()) and not bool(torch.isfinite(got_c).all()):
            fail("nan", f"trial {trial}: output has NaN/inf where the reference is finite",
                 mismatch=first_mismatch(got_c, exp_c, atol, rtol))
            return False
        if got_c.numel() > 1 and bool((got_c == got_c.flatten()[0]).all()) and \
                not bool((exp_c == exp_c.flatten()[0]).all()):
            fail("constant output", f"trial {trial}: every output element is {float(got_c.flatten()[0])!r}; "
                                    f"the reference is not constant")
            return False
        if not torch.allclose(got_c, exp_c, atol=atol, rtol=rtol):
            fail("mismatch", f"trial {trial}: output differs from the reference (atol={atol}, rtol={rtol})",
                 mismatch=first_mismatch(got_c, exp_c, atol, rtol))
            return False
    return True


def dispatch_trace(model, inputs):
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = set()

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
            seen.add(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    with Recorder():
        model(*inputs)
    return sorted(op for op in seen if op not in ALLOWED_OPS and "dlpack" not in op)


def sync():
    if device == "cuda":
        torch.cuda.synchronize()


atol, rtol = float(problem_cfg["atol"]), float(problem_cfg["rtol"])
shapes = problem_cfg["sizes"].get(preset) or [{}]
seed, trials = int(CONFIG.get("seed", 0)), int(CONFIG.get("trials", 3))
RESULT["shapes"] = []
t_check = perf_counter()
prepared = []
with torch.no_grad():
    for shape_index, shape in enumerate(shapes):
        stage(f"correctness shape {shape_index}")
        unknown = [k for k in shape if not hasattr(problem, k)]
        if unknown:
            fail("problem", f"size preset names unknown globals {unknown}")
            finish()
        for key, value in shape.items():
            setattr(problem, key, value)
        try:
            ref, new, copied = build(seed + shape_index)
            RESULT["weights_copied"] = copied
            for trial in range(trials):
                inputs = make_inputs(seed * 7919 + 1000 * shape_index + trial)
                originals, ref_in, cand_in = inputs, clone(inputs), clone(inputs)
                expected = ref(*ref_in)
                got = new(*cand_in)
                sync()
                edited = [i for i, (a, b) in enumerate(zip(cand_in, originals))
                          if isinstance(a, torch.Tensor) and not torch.equal(a, b)]
                if edited:
                    fail("in-place edit", f"trial {trial}: the program modified input(s) {edited} in place")
                    finish()
                if not compare(got, expected, trial, atol, rtol):
                    finish()
            if "dispatch trace" not in RESULT["checks_run"] and not RESULT.get("interpreted") \
                    and not CONFIG.get("trusted"):
                RESULT["checks_run"].append("dispatch trace")
                ops = dispatch_trace(new, clone(inputs))
                if ops:
                    fail("torch fallback", f"ModelNew.forward ran torch compute ops: {', '.join(ops[:8])}")
                    finish()
        except SystemExit:
            raise
        except BaseException as err:  # noqa: BLE001 - the candidate's crash (Python-level) is its failure
            fail("runtime", f"{type(err).__name__}: {err}"[:500], log=candidate_trace(err))
            finish()
        prepared.append((shape, ref, new, inputs))
RESULT["checks_run"] += ["shape/dtype", "allclose", "nan", "constant output", "in-place edit",
                         f"fresh inputs x{trials} (replayed results)"]
RESULT["overhead_s"]["correctness"] = perf_counter() - t_check
save(executed=True, correct=True)
if timers_patched():
    fail("patched timer", f"the program replaced {', '.join(timers_patched())}")
    save(correct=False)
    finish()

# -- timing ----------------------------------------------------------------------------------------------------------
if not CONFIG.get("time", True) or RESULT.get("interpreted"):
    finish()
stage("timing")
t_time = perf_counter()
opts = CONFIG.get("timing", {})
kw = {"samples": int(opts.get("samples", 30 if device == "cuda" else 15)), "budget_s": float(opts.get("budget_s", 6))}
logs = {"candidate": [], "eager": [], "compile": []}
# On a shared CPU, neighbours inflate medians by several times (eager-vs-eager medians differed 5x under load 8
# here) while minima agreed within ~15%; the minimum is the least contaminated estimate there. GPUs: the median.
STAT = "min_us" if device == "cpu" and CONFIG.get("cpu_stat", "min") == "min" else "median_us"
RESULT["statistic"] = STAT.removesuffix("_us")
with torch.no_grad():
    for shape, ref, new, inputs in prepared:
        for key, value in shape.items():
            setattr(problem, key, value)
        entry = {"sizes": shape}
        try:
            cand_in = clone(inputs)
            fns = {"candidate": lambda: new(*cand_in), "eager": lambda: ref(*inputs)}
            if CONFIG.get("torch_compile") and device == "cuda":
                compiled = torch.compile(ref)
                fns["compile"] = lambda: compiled(*inputs)
            entry.update(timing.time_interleaved(fns, device, **kw))
        except BaseException as err:  # noqa: BLE001
            fail("runtime", f"during timing: {type(err).__name__}: {err}"[:500], log=candidate_trace(err))
            save(correct=False)
            finish()
        RESULT["shapes"].append(entry)
        for key in logs:
            if key in entry:
                logs[key].append(entry[key][STAT])
        save()


def geomean(values):
    return math.exp(sum(math.log(max(v, 1e-9)) for v in values) / len(values))


summary = {f"{k}_us": geomean(v) for k, v in logs.items() if v and len(v) == len(prepared)}
summary["speedup"] = summary["eager_us"] / summary["candidate_us"]
if "compile_us" in summary:
    summary["speedup_vs_compile"] = summary["compile_us"] / summary["candidate_us"]
summary["spread_pct"] = max(e["candidate"]["iqr_pct"] for e in RESULT["shapes"])
RESULT["overhead_s"]["timing"] = perf_counter() - t_time
if timers_patched():
    fail("patched timer", f"the program replaced {', '.join(timers_patched())} during the run")
    save(correct=False)
    finish()
save(timed=True, **summary)
finish()
