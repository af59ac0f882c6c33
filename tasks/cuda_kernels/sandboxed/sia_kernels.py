"""The module a candidate program imports: ``load_cpp`` (cpu backend) and ``load_cuda`` (cuda backend).

Nothing is compiled in here. Each call sends the source and flags to the driver, which compiles them in a separate
throw-away sandbox (the compiler sees only the source), keeps the artifact in a cache only it writes, and sends the
bytes back; they are written to this worker's private tmpfs and loaded. So nothing this process does can reach the
next candidate's build.
"""

import ctypes
import hashlib
import os

import numpy as np
import sandbox_child as sc

from kernel_args import SCALARS, CompileError, check_tensor, parse_signature

ARTIFACTS = os.path.join(os.getcwd(), ".kernels")
STATS = {"compiles": 0, "cache_hits": 0}


def _build(tag, source, flags):
    """Ask the driver to compile; returns the path of the artifact in this sandbox's tmpfs."""
    if not isinstance(source, str) or not source.strip():
        raise CompileError("the kernel source must be a non-empty string")
    sc.send({"kind": "compile", "tag": tag, "source": source, "flags": flags})
    header, arrays = sc.recv()
    if header.get("cmd") != "artifact":
        raise CompileError(f"unexpected reply to a compile request: {header.get('cmd')!r}")
    if not header.get("ok"):
        raise CompileError(header.get("message", "compilation failed"), header.get("log", ""))
    STATS["cache_hits" if header.get("cache_hit") else "compiles"] += 1
    os.makedirs(ARTIFACTS, exist_ok=True)
    name = header.get("file") or "siak-" + hashlib.sha256(source.encode()).hexdigest()[:16]
    path = os.path.join(ARTIFACTS, os.path.basename(name))
    if not os.path.exists(path):  # names are content hashes; rewriting a loaded library in place would crash it
        with open(path + ".part", "wb") as fh:
            fh.write(np.asarray(arrays[0], dtype=np.uint8).tobytes())
        os.replace(path + ".part", path)
    return path


class CppFunction:
    """A compiled C function with argument checking; calling it runs the native code in this process."""

    def __init__(self, lib, name, params):
        self.name, self.params = name, params
        self._fn = getattr(lib, name)
        self._fn.restype = None
        self._fn.argtypes = [ctypes.c_void_p if p.ctype == "ptr" else SCALARS[p.ctype] for p in params]

    def __call__(self, *args):
        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} arguments "
                            f"({', '.join(p.name for p in self.params)}), got {len(args)}")
        native = [check_tensor(p, v, "cpu").data_ptr() if p.ctype == "ptr" else v for p, v in zip(self.params, args)]
        self._fn(*native)


def load_cpp(source, name, signature=None, flags=None):
    """Compile ``source`` with g++ (cached by content) and return its ``extern "C"`` function ``name``.

    ``signature`` is an optional C parameter list such as ``"const float* x, float* y, long n"``; by default it is
    read from the function's definition. ``flags`` default to the harness's ``cpp_flags``.
    """
    flags = flags if flags is not None else os.environ.get("SIA_CPP_FLAGS", "-O3 -march=native -fopenmp")
    params = parse_signature(f"{name}({signature}) {{" if signature else source, name)
    path = _build("cpu", source, flags)
    try:
        lib = ctypes.CDLL(path)
    except OSError as err:
        raise CompileError(f"the shared library did not load: {err}") from None
    if not hasattr(lib, name):
        raise CompileError(f"symbol {name!r} not exported: declare it extern \"C\"")
    return CppFunction(lib, name, params)


class NoGPU(RuntimeError):
    """CUDA code is never run without a GPU (CPU tensors would give silent garbage)."""


class CudaKernel:
    """``kernel(grid, block, args, shared_mem=0)``; tensors go through DLPack, scalars are typed from the signature."""

    def __init__(self, function, name, params):
        self._fn, self.name, self.params = function, name, params

    def __call__(self, grid, block, args, shared_mem=0):
        if self._fn is None:
            raise NoGPU(f"kernel {self.name!r} compiled, but there is no GPU to run it on")
        import cupy
        import torch

        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} arguments, got {len(args)}")
        native = [cupy.from_dlpack(check_tensor(p, v, "cuda")) if p.ctype == "ptr" else np.dtype(SCALARS[p.ctype]).type(v)
                  for p, v in zip(self.params, args)]
        grid = tuple(grid) if isinstance(grid, (tuple, list)) else (int(grid),)
        block = tuple(block) if isinstance(block, (tuple, list)) else (int(block),)
        with cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream):
            self._fn(grid, block, tuple(native), shared_mem=shared_mem)


def load_cuda(source, name, signature=None, options=None):
    """Compile ``source`` with nvcc to a cubin (cached by content) and return its ``extern "C" __global__`` ``name``.

    Without a GPU the source is compiled (so errors reach the author) but never run: calling it raises NoGPU."""
    options = options if options is not None else os.environ.get("SIA_NVCC_FLAGS", "-O3")
    params = parse_signature(f"{name}({signature}) {{" if signature else source, name)
    path = _build("cuda", source, options)
    function = None
    if os.environ.get("SIA_GPU") == "1":
        import cupy

        function = cupy.RawModule(path=path).get_function(name)
    return CudaKernel(function, name, params)


__all__ = ["CompileError", "NoGPU", "load_cpp", "load_cuda", "STATS"]
