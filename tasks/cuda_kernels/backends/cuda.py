"""The cuda backend: CUDA C++ compiled with nvcc to a cubin (or NVRTC through CuPy when nvcc is absent), loaded with
CuPy's RawModule and launched on torch tensors through DLPack, on torch's current stream.

Without a GPU the source is still compiled (so compile errors reach the agent) but never executed: calling the
kernel raises :class:`NoGPU`, and the runner records ``executed: false``.
"""

from __future__ import annotations

import os
import shlex
import shutil

from .build import SCALARS, CompileError, cached_build, check_tensor, parse_signature

DEFAULT_ARCH = "sm_90"  # Hopper (H100/H200), the paper's and this project's GPUs
STATS = {"compiles": 0, "cache_hits": 0}


class NoGPU(RuntimeError):
    """CUDA code is never run without a GPU (CPU tensors would give silent garbage)."""


def gpu_available() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except Exception:  # noqa: BLE001 - any import or driver failure means no GPU
        return False


def _arch() -> str:
    if os.environ.get("SIA_CUDA_ARCH"):
        return os.environ["SIA_CUDA_ARCH"]
    if gpu_available():
        import torch

        major, minor = torch.cuda.get_device_capability()
        return f"sm_{major}{minor}"
    return DEFAULT_ARCH


class CudaKernel:
    """``kernel(grid, block, args, shared_mem=0)``; tensors go through DLPack, scalars are typed from the signature."""

    def __init__(self, function, name: str, params):
        self._fn, self.name, self.params = function, name, params

    def __call__(self, grid, block, args, shared_mem: int = 0):
        if self._fn is None:
            raise NoGPU(f"kernel {self.name!r} compiled, but there is no GPU to run it on")
        import cupy
        import numpy as np
        import torch

        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} arguments, got {len(args)}")
        native = []
        for param, value in zip(self.params, args):
            if param.ctype == "ptr":
                native.append(cupy.from_dlpack(check_tensor(param, value, "cuda")))
            else:
                native.append(np.dtype(SCALARS[param.ctype]).type(value))
        grid = tuple(grid) if isinstance(grid, (tuple, list)) else (int(grid),)
        block = tuple(block) if isinstance(block, (tuple, list)) else (int(block),)
        with cupy.cuda.ExternalStream(torch.cuda.current_stream().cuda_stream):
            self._fn(grid, block, tuple(native), shared_mem=shared_mem)


def compile_cuda(source: str, options: str | None = None) -> tuple[str, bool]:
    """nvcc to a cubin for this GPU (or sm_90 without one); returns (path, cache_hit). Raises CompileError."""
    options = options if options is not None else os.environ.get("SIA_NVCC_FLAGS", "-O3")
    nvcc = shutil.which("nvcc") or ("/usr/local/cuda/bin/nvcc" if os.path.exists("/usr/local/cuda/bin/nvcc") else None)
    if nvcc is None:
        raise CompileError("nvcc not found")
    command = [nvcc, "-cubin", f"-arch={_arch()}", *shlex.split(options), "{src}", "-o", "{out}"]
    path, hit = cached_build(source, ".cubin", command, "cuda")
    return str(path), hit


def load_cuda(source: str, name: str, signature: str | None = None, options: str | None = None) -> CudaKernel:
    """Compile ``source`` (cached by hash) and return its ``extern "C" __global__`` function ``name``."""
    params = parse_signature(f"{name}({signature}) {{" if signature else source, name)
    have_nvcc = bool(shutil.which("nvcc") or os.path.exists("/usr/local/cuda/bin/nvcc"))
    function = None
    if have_nvcc:
        path, hit = compile_cuda(source, options)
        STATS["cache_hits" if hit else "compiles"] += 1
        if gpu_available():
            import cupy

            function = cupy.RawModule(path=path).get_function(name)
    elif gpu_available():
        import cupy

        try:
            module = cupy.RawModule(code=source, options=tuple(shlex.split(options or "")), backend="nvrtc")
            function = module.get_function(name)
        except cupy.cuda.compiler.CompileException as err:
            raise CompileError("NVRTC failed", str(err)) from None
        STATS["compiles"] += 1
    else:
        raise CompileError("neither nvcc nor a GPU is available: the CUDA source cannot even be compiled here")
    return CudaKernel(function, name, params)
