"""The reference worker: runs the trusted problem file (``Model``, ``get_inputs``, ``get_init_inputs``) in its own
sandbox, persistent across candidates so torch is imported once.

It generates every input (fresh seed per call) straight into the shared input buffers, computes the expected outputs
into a buffer no candidate can see, and flushes the caches between samples. Torch eager is timed elsewhere, in a twin
of the candidate's worker (the task README says why). A failure here is the harness's (or the problem's), never a
candidate's.
"""

import importlib.util
import os
import sys
import time

T0 = time.perf_counter()
import numpy as np  # noqa: E402
import sandbox_child as sc  # noqa: E402
import torch  # noqa: E402

import kit  # noqa: E402

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
# float32 problems are checked and timed in exact fp32: TF32 would put the reference ~1e-3 off and flatter its time.
torch.backends.cudnn.allow_tf32 = False
torch.backends.cuda.matmul.allow_tf32 = False
GPU = os.environ.get("SIA_GPU") == "1" and torch.cuda.is_available()
DEVICE = "cuda" if GPU and os.environ.get("SIA_BACKEND", "cpu") != "cpu" else "cpu"
S = {"module": None, "defaults": {}, "model": None, "views": [], "flush": None, "count": 0}


def sync():
    if DEVICE == "cuda":
        torch.cuda.synchronize()


def int_globals(module):
    return {k: v for k, v in vars(module).items() if not k.startswith("_") and type(v) is int}


def apply_globals(overrides):
    module = S["module"]
    for key, value in {**S["defaults"], **overrides}.items():
        setattr(module, key, value)


def tensors(values):
    return [x for x in values if isinstance(x, torch.Tensor)]


def cmd_problem(h, _):
    S["count"] += 1
    path = os.path.abspath(f"problem_{S['count']}.py")
    with open(path, "w") as fh:
        fh.write(h["source"])
    spec = importlib.util.spec_from_file_location("reference_problem", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["reference_problem"] = module
    spec.loader.exec_module(module)
    S.update(module=module, defaults={**int_globals(module), **{k: getattr(module, k) for k in h.get("keep", [])
                                                                 if hasattr(module, k)}}, model=None)
    return {"kind": "problem", "int_globals": int_globals(module)}, ()


def cmd_probe(h, _):
    """Bytes and FLOPs of one call at these sizes, on the meta device (nothing allocated), or for real at small
    sizes when the problem cannot run on meta."""
    from torch.utils.flop_counter import FlopCounterMode

    apply_globals(h["globals"])
    module, method = S["module"], "meta"
    try:
        with torch.device("meta"):
            torch.manual_seed(0)
            model = module.Model(*module.get_init_inputs())
            inputs = module.get_inputs()
            with FlopCounterMode(display=False) as counter:
                out = model(*inputs)
    except Exception:  # noqa: BLE001 - some problems cannot run on meta; measure for real when allowed
        if not h.get("allow_real"):
            return {"kind": "probe", "method": "none"}, ()
        method = "real"
        torch.manual_seed(0)
        model = module.Model(*module.get_init_inputs())
        inputs = module.get_inputs()
        with torch.no_grad(), FlopCounterMode(display=False) as counter:
            out = model(*inputs)
    size = lambda ts: int(sum(t.numel() * t.element_size() for t in ts))  # noqa: E731
    params = list(model.parameters()) + list(model.buffers()) if hasattr(model, "parameters") else []
    return {"kind": "probe", "method": method, "input_bytes": size(tensors(inputs)),
            "output_bytes": size(tensors(kit.as_list(out))), "param_bytes": size(params),
            "flops": int(counter.get_total_flops())}, ()


def describe(values):
    out = []
    for x in values:
        if isinstance(x, torch.Tensor):
            out.append({"dtype": kit.dtype_name(x.dtype), "shape": list(x.shape)})
        elif isinstance(x, (bool, int, float)) or x is None:
            out.append({"value": x})
        else:
            raise TypeError(f"an input of type {type(x).__name__} cannot cross the sandbox (tensors and numbers only)")
    return out


def cmd_prepare(h, _):
    """Build the reference at these sizes; report what crosses to the candidate (init arguments, weights, shapes)."""
    apply_globals(h["globals"])
    module, seed = S["module"], int(h["seed"])
    init = list(module.get_init_inputs())
    torch.manual_seed(seed)
    with torch.device(DEVICE):
        model = module.Model(*init)
    model = model.to(DEVICE).eval()
    names, weights = [], []
    for name, value in model.state_dict().items():
        names.append(name)
        weights.append(value.detach().float().cpu().numpy() if value.dtype == torch.bfloat16 else
                       value.detach().cpu().numpy())
    torch.manual_seed(seed + 1)
    inputs = [x.to(DEVICE) if isinstance(x, torch.Tensor) else x for x in module.get_inputs()]
    clones = [x.clone() if isinstance(x, torch.Tensor) else x for x in inputs]
    with torch.no_grad():
        out = model(*clones)
        sync()
        again = [x.clone() if isinstance(x, torch.Tensor) else x for x in inputs]
        start = time.perf_counter() if DEVICE == "cuda" else time.process_time()  # CPU time: immune to neighbours
        model(*again)
        sync()
        once = (time.perf_counter() if DEVICE == "cuda" else time.process_time()) - start
    outs = kit.as_list(out)
    if not all(isinstance(o, torch.Tensor) for o in outs):
        raise TypeError("the reference Model returned something other than tensors")
    mutates = any(isinstance(a, torch.Tensor) and not torch.equal(a, b) for a, b in zip(clones, inputs))
    S.update(model=model, views=[])
    return {"kind": "prepared", "init_inputs": init, "weights": names, "inputs": describe(inputs),
            "outputs": describe(outs), "mutates_inputs": mutates, "eager_once_s": once}, weights


def cmd_arenas(h, _):
    S.update(views=[])
    import gc

    gc.collect()  # every view of the old buffers is gone, so they can be unmapped safely
    kit.receive_arenas(h["arenas"], close_old=True)
    return {"kind": "arenas"}, ()


def cmd_layout(h, _):
    S["views"] = [(kit.slot_values(s["inputs"]), [kit.view(o) for o in s["expected"]]) for s in h["slots"]]
    return {"kind": "laid_out"}, ()


def perturbed(source, seed):
    """A copy of another slot's inputs with one random block of one floating-point input redrawn (an eighth of it:
    either a run of the flattened tensor, or a band of the last dimension across all rows): the pair shows whether
    an output follows every part of its input."""
    out = [x.clone() if isinstance(x, torch.Tensor) else x for x in source]
    floats = [i for i, x in enumerate(out) if isinstance(x, torch.Tensor) and x.is_floating_point() and x.numel()]
    if floats:
        g = torch.Generator().manual_seed(int(seed))
        pick = lambda n: int(torch.randint(n, (1,), generator=g))  # noqa: E731
        x = out[floats[pick(len(floats))]]
        scale = float(x.float().std()) + 1.0 if x.numel() > 1 else 1.0
        if x.dim() >= 2 and x.shape[-1] >= 8 and pick(2):
            width = x.shape[-1] // 8
            start = pick(x.shape[-1] - width + 1)
            band = x[..., start:start + width]
            band.copy_(torch.randn(band.shape, generator=g).to(x.dtype) * scale)
        else:
            flat = x.view(-1)
            size = max(1, flat.numel() // 8)
            start = pick(flat.numel() - size + 1)
            flat[start:start + size] = (torch.randn(size, generator=g) * scale).to(flat.dtype)
    return out


def cmd_gen(h, _):
    """Fresh inputs for each slot (its own seed) into the shared buffers, and the expected outputs beside them.
    ``pairs`` [[source, target, seed]]: the target slot gets the source's inputs with one block redrawn."""
    module, model = S["module"], S["model"]
    derived = {int(t): (int(src), seed) for src, t, seed in h.get("pairs", [])}
    generated = {}
    for slot, seed in zip(h["slots"], h["seeds"]):
        if slot in derived:
            fresh = perturbed(generated[derived[slot][0]], derived[slot][1])
        else:
            torch.manual_seed(int(seed))
            fresh = list(module.get_inputs())
        generated[slot] = fresh
        views, expected = S["views"][slot]
        if len(fresh) != len(views):
            raise ValueError(f"get_inputs returned {len(fresh)} values, {len(views)} before")
        for target, x in zip(views, fresh):
            if isinstance(target, torch.Tensor):
                if tuple(x.shape) != tuple(target.shape) or x.dtype != target.dtype:
                    raise ValueError(f"get_inputs changed shape or dtype between seeds: {tuple(x.shape)} {x.dtype}")
                target.copy_(x)
        args = [x.to(DEVICE) if isinstance(x, torch.Tensor) else x for x in fresh]
        with torch.no_grad():
            outs = kit.as_list(model(*args))
        for target, o in zip(expected, outs):
            target.copy_(o)
    sync()
    return {"kind": "generated"}, ()


def cmd_flush(h, _):
    """Evict the caches the next sample would otherwise find warm (CPU: every level of this core; GPU: the L2)."""
    if DEVICE == "cuda":
        if S["flush"] is None:
            S["flush"] = torch.empty(int(h["bytes"]) // 4, dtype=torch.float32, device="cuda")
        S["flush"].zero_()
        sync()
    else:
        if S["flush"] is None or S["flush"].nbytes != int(h["bytes"]):
            S["flush"] = np.zeros(int(h["bytes"]), dtype=np.uint8)
        np.add(S["flush"], 1, out=S["flush"])
    return {"kind": "flushed"}, ()


def cmd_ping(h, _):
    return {"kind": "pong"}, ()


sc.send({"kind": "ready", "role": "reference", "import_s": time.perf_counter() - T0, "torch": torch.__version__,
         "device": DEVICE, "gpu": GPU, "gpu_name": torch.cuda.get_device_name() if GPU else None,
         "gpu_arch": "sm_%d%d" % torch.cuda.get_device_capability() if GPU else None, "pid": os.getpid()})
kit.serve({"problem": cmd_problem, "probe": cmd_probe, "prepare": cmd_prepare, "arenas": cmd_arenas,
           "layout": cmd_layout, "gen": cmd_gen, "flush": cmd_flush, "ping": cmd_ping})
