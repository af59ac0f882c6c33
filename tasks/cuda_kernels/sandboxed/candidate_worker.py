"""The candidate worker: imports one candidate program and runs ``ModelNew`` on shared buffers when told to.

Started warm (torch imported) before a candidate exists; then it exposes only a narrow interface: load the program,
build ``ModelNew`` with the reference weights, run calls on input slots, publish outputs to output slots. It holds no
reference output and no clock that counts; the driver checks every output and times every call from outside.
"""

import importlib.util
import os
import sys
import time

T0 = time.perf_counter()
BACKEND = os.environ.get("SIA_BACKEND", "cpu")
if BACKEND == "triton" and os.environ.get("SIA_GPU") != "1":
    os.environ["TRITON_INTERPRET"] = "1"  # before triton is imported anywhere

import sandbox_child as sc  # noqa: E402
import torch  # noqa: E402

import kit  # noqa: E402

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
GPU = os.environ.get("SIA_GPU") == "1" and torch.cuda.is_available()
DEVICE = "cuda" if GPU and BACKEND != "cpu" else "cpu"
ALLOWED_OPS = {  # what ModelNew.forward may ask torch for: allocation, views, copies; never arithmetic
    "empty", "empty_like", "empty_strided", "new_empty", "new_empty_strided", "zeros", "zeros_like", "new_zeros",
    "ones", "ones_like", "full", "full_like", "fill", "fill_", "zero_", "view", "_unsafe_view", "reshape",
    "as_strided", "contiguous", "clone", "copy_", "_to_copy", "to", "detach", "alias", "t", "transpose", "permute",
    "expand", "unsqueeze", "squeeze", "select", "slice", "split", "chunk", "flatten", "unflatten", "narrow",
    "lift_fresh", "_local_scalar_dense", "sym_size", "sym_stride", "sym_numel", "is_same_size", "resize_", "view_as",
    "expand_as", "unbind", "split_with_sizes", "constant_pad_nd", "_has_compatible_shallow_copy_type", "set_",
}
S = {"model": None, "views": [], "staged": [], "outs": [], "slots": []}
WATCHED = ("time.perf_counter", "time.perf_counter_ns", "time.time", "time.monotonic", "time.process_time",
           "torch.allclose", "torch.equal", "torch.isclose", "torch.testing.assert_close", "torch.cuda.synchronize",
           "torch.cuda.Event", "kit.run_calls", "kit.publish")


def _resolve(name):
    head, *rest = name.split(".")
    obj = {"time": time, "torch": torch, "kit": kit}[head]
    for part in rest:
        obj = getattr(obj, part, None)
    return obj


ORIGINAL = {name: _resolve(name) for name in WATCHED}


def tampered():
    """Best-effort: names the program replaced (it could hide this too; none of them decides its score)."""
    return [name for name in WATCHED if _resolve(name) is not ORIGINAL[name]]


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def cmd_arenas(h, _):
    kit.receive_arenas(h["arenas"])
    return {"kind": "arenas"}, ()


def cmd_load(h, _):
    for name, text in (h.get("support") or {}).items():  # only for the harness's own baselines
        with open(os.path.basename(name), "w") as fh:
            fh.write(text)
    with open("candidate.py", "w") as fh:
        fh.write(h["program"])
    os.environ["SIA_CPP_FLAGS"] = h.get("cpp_flags") or os.environ.get("SIA_CPP_FLAGS", "")
    os.environ["SIA_NVCC_FLAGS"] = h.get("nvcc_flags") or os.environ.get("SIA_NVCC_FLAGS", "-O3")
    spec = importlib.util.spec_from_file_location("candidate", os.path.abspath("candidate.py"))
    module = importlib.util.module_from_spec(spec)
    sys.modules["candidate"] = module
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001
        from kernel_args import CompileError

        stage = "compile" if isinstance(err, CompileError) else "import"
        reply = kit.failure(stage, err)
        if isinstance(err, CompileError):
            reply["log"] = err.log
        return reply, ()
    if not isinstance(getattr(module, "ModelNew", None), type):
        return {"kind": "error", "stage": "format", "message": "the program defines no class ModelNew"}, ()
    import sia_kernels

    return {"kind": "loaded", "compile_stats": dict(sia_kernels.STATS)}, ()


def cmd_init(h, arrays):
    """Build ModelNew like the reference was built (same seed), then copy the reference weights in by name."""
    S.update(model=None, views=[], staged=[], outs=[])
    module = sys.modules["candidate"]
    torch.manual_seed(int(h["seed"]))
    with torch.device(DEVICE):
        model = module.ModelNew(*h["init_inputs"])
    state = model.state_dict() if hasattr(model, "state_dict") else {}
    copied, skipped = [], []
    with torch.no_grad():
        for name, array in zip(h["weights"], arrays):
            value = torch.from_numpy(array.copy())
            if name in state and tuple(state[name].shape) == tuple(value.shape):
                state[name].copy_(value.to(state[name].dtype))
                copied.append(name)
            else:
                skipped.append(name)
    if hasattr(model, "eval"):
        model.eval()
    S["model"] = model
    return {"kind": "initialized", "copied": copied, "skipped": skipped}, ()


def cmd_layout(h, _):
    S["views"] = [(kit.slot_values(slot["inputs"]), [kit.view(o) for o in slot["outputs"]]) for slot in h["slots"]]
    S["staged"] = [ins for ins, _ in S["views"]] if DEVICE == "cpu" else [None] * len(S["views"])
    return {"kind": "laid_out"}, ()


def cmd_stage(h, _):
    """Copy the slots' inputs outside the clock: to the device on a GPU (the driver bounds this step's time); on the
    CPU only when the driver asks for private copies (the eager twin of a reference that writes into its inputs,
    which are read-only memory here)."""
    if DEVICE == "cuda" or h.get("private"):
        for s in h["slots"]:
            S["staged"][s] = [(x.to(DEVICE) if DEVICE == "cuda" else x.clone()) if isinstance(x, torch.Tensor) else x
                              for x in S["views"][s][0]]
        sync()
    return {"kind": "staged"}, ()


def cmd_run(h, _):
    S["slots"], S["outs"] = list(h["slots"]), []  # the previous outputs are freed inside the command, as in eager
    S["outs"] = kit.run_calls(S["model"], S["staged"], S["slots"], sync)
    return {"kind": "done", "tampered": tampered(), "outputs": kit.describe(S["outs"])}, ()


def cmd_publish(h, _):
    got = kit.publish(S["outs"], [S["views"][s][1] for s in S["slots"]])
    sync()
    S["outs"] = []
    return {"kind": "published", "outputs": got}, ()


def cmd_trace(h, _):
    """Best-effort in-process dispatch trace of one call (the candidate shares this interpreter, so it can hide
    from it; the driver's trusted checks are elsewhere)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    seen = set()

    class Recorder(TorchDispatchMode):
        def __torch_dispatch__(self, func, types_, args=(), kwargs=None):
            seen.add(func.overloadpacket.__name__)
            return func(*args, **(kwargs or {}))

    slot = h["slot"]
    ins = S["staged"][slot] if S["staged"][slot] is not None else S["views"][slot][0]
    with torch.no_grad(), Recorder():
        S["model"](*ins)
    sync()
    return {"kind": "trace", "ops": sorted(op for op in seen if op not in ALLOWED_OPS and "dlpack" not in op)}, ()


sc.send({"kind": "ready", "role": "candidate", "import_s": time.perf_counter() - T0, "torch": torch.__version__,
         "device": DEVICE, "pid": os.getpid()})
kit.serve({"arenas": cmd_arenas, "load": cmd_load, "init": cmd_init, "layout": cmd_layout, "stage": cmd_stage,
           "run": cmd_run, "publish": cmd_publish, "trace": cmd_trace})
