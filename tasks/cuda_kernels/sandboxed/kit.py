"""Worker-side plumbing shared by the candidate and the reference worker: shared buffers, tensor views, the command
loop, and the one call loop both workers run, so a candidate and torch eager are timed through identical code.

Buffers arrive as memfds over a Unix socket the driver owns; the driver seals the input buffers against writing
before a candidate gets them, so candidate inputs are read-only memory here (a write faults).
"""

import mmap
import os
import socket
import traceback
import warnings

import sandbox_child as sc

warnings.filterwarnings("ignore", message=".*not writable.*")  # read-only input buffers are intended
DTYPES = ("float32", "float64", "float16", "bfloat16", "int8", "int16", "int32", "int64", "uint8", "bool")
ARENAS = {}  # name -> mmap
_KEPT = []  # replaced mappings that views may still use
_SOCKET = None


def torch_dtype(name):
    import torch

    if name not in DTYPES:
        raise ValueError(f"dtype {name!r} is not supported")
    return getattr(torch, name)


def dtype_name(dtype):
    return str(dtype).removeprefix("torch.")


def receive_arenas(specs, close_old=False):
    """Map the memfds the driver sends now, one per spec ``{"name", "bytes", "writable"}``, in order.

    torch.frombuffer keeps no buffer export, so closing a mapping under a live tensor would leave it dangling: only
    a caller that has dropped every view (the reference worker) passes ``close_old``; others keep old mappings."""
    global _SOCKET
    if _SOCKET is None:
        _SOCKET = socket.socket(fileno=int(os.environ["SIA_FD_SOCKET"]))
    _, fds, _, _ = socket.recv_fds(_SOCKET, 16, len(specs))
    if len(fds) != len(specs):
        raise RuntimeError(f"expected {len(specs)} buffers, got {len(fds)}")
    for spec, fd in zip(specs, fds):
        old = ARENAS.pop(spec["name"], None)
        if old is not None:
            (old.close() if close_old else _KEPT.append(old))
        prot = mmap.PROT_READ | (mmap.PROT_WRITE if spec["writable"] else 0)
        ARENAS[spec["name"]] = mmap.mmap(fd, spec["bytes"], flags=mmap.MAP_SHARED, prot=prot)
        os.close(fd)


def view(ref):
    """A torch tensor over a region of a shared buffer: ``{"arena", "offset", "dtype", "shape"}``."""
    import torch

    dtype = torch_dtype(ref["dtype"])
    count = 1
    for d in ref["shape"]:
        count *= d
    if count == 0:
        return torch.empty(ref["shape"], dtype=dtype)
    flat = torch.frombuffer(ARENAS[ref["arena"]], dtype=dtype, count=count, offset=ref["offset"])
    return flat.view(ref["shape"])


def slot_values(items):
    """A slot's call arguments: tensors over the shared buffer, or plain values for non-tensor inputs."""
    return [view(item) if "arena" in item else item["value"] for item in items]


def run_calls(model, staged, slots, sync):
    """The timed loop: one forward per slot, outputs kept (contiguous, so they can be read as flat bytes);
    identical for candidate and eager."""
    import torch

    outs = []
    with torch.no_grad():
        for s in slots:
            outs.append(model(*staged[s]))
        outs = [[t.contiguous() if isinstance(t, torch.Tensor) else t for t in as_list(o)] for o in outs]
    sync()
    return outs


def describe(outs):
    """Where each call's outputs are in this process's memory: the driver reads them from outside."""
    import torch

    return [[{"ptr": t.data_ptr(), "nbytes": t.numel() * t.element_size(), "dtype": dtype_name(t.dtype),
              "shape": list(t.shape), "device": t.device.type} if isinstance(t, torch.Tensor)
             else {"type": type(t).__name__} for t in items] for items in outs]


def as_list(out):
    return list(out) if isinstance(out, (tuple, list)) else [out]


def publish(outs, targets):
    """Copy each call's outputs into its output region; returns what each call actually returned."""
    import torch

    got = []
    for out, views in zip(outs, targets):
        items = as_list(out)
        described = [{"dtype": dtype_name(t.dtype), "shape": list(t.shape)} if isinstance(t, torch.Tensor)
                     else {"type": type(t).__name__} for t in items]
        got.append(described)
        if len(items) != len(views):
            continue
        for item, target in zip(items, views):
            if isinstance(item, torch.Tensor) and item.dtype == target.dtype and tuple(item.shape) == \
                    tuple(target.shape):
                target.copy_(item.detach())
    return got


def failure(stage, err, hide=("kit.py", "candidate_worker.py", "reference_worker.py")):
    lines = traceback.format_exception(type(err), err, err.__traceback__)
    keep = "".join(ln for ln in lines if not any(h in ln for h in hide))
    return {"kind": "error", "stage": stage, "type": type(err).__name__, "message": f"{type(err).__name__}: "
            f"{err}"[:800], "log": keep[-2000:]}


def serve(handlers):
    """Answer commands until told to quit; an exception becomes an error reply naming the command."""
    while True:
        try:
            header, arrays = sc.recv()
        except EOFError:
            return
        cmd = header.get("cmd")
        if cmd == "quit":
            return
        try:
            reply, blobs = handlers[cmd](header, arrays)
        except Exception as err:  # noqa: BLE001 - reported to the driver, which decides whose fault it is
            reply, blobs = failure(cmd, err), ()
        sc.send(dict(reply, seq=header.get("seq")), blobs)
