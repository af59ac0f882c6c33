"""How a compiled kernel is called: C signature parsing and the tensor checks before a pointer is handed over.

Runs inside the candidate worker (a convenience for honest programs: clear errors instead of silent garbage); it is
no defence, since the candidate may bypass it.
"""

from __future__ import annotations

import ctypes
import re
from dataclasses import dataclass


class CompileError(RuntimeError):
    """The compiler (or the loader) rejected the source; ``log`` holds the compiler's output, trimmed."""

    def __init__(self, message: str, log: str = ""):
        super().__init__(message)
        self.log = log[-3000:]


@dataclass(frozen=True)
class Param:
    name: str
    ctype: str  # "ptr" or a scalar C type
    elem: str = ""  # for pointers: the element dtype name


_C_PTR_DTYPES = {"float": "float32", "double": "float64", "int": "int32", "int32_t": "int32", "long": "int64",
                 "int64_t": "int64", "long long": "int64", "__half": "float16", "half": "float16",
                 "__nv_bfloat16": "bfloat16", "unsigned char": "uint8", "uint8_t": "uint8", "bool": "bool",
                 "void": ""}
SCALARS = {"int": ctypes.c_int32, "int32_t": ctypes.c_int32, "unsigned int": ctypes.c_uint32,
           "long": ctypes.c_int64, "int64_t": ctypes.c_int64, "long long": ctypes.c_int64, "size_t": ctypes.c_size_t,
           "float": ctypes.c_float, "double": ctypes.c_double}


def parse_signature(source: str, name: str) -> list[Param]:
    """The parameters of ``extern "C" ... name(...)`` in ``source``; raises CompileError when absent."""
    match = re.search(rf"\b{re.escape(name)}\s*\(([^)]*)\)\s*\{{", source)
    if not match:
        raise CompileError(f"function {name!r} not found in the source (declare it extern \"C\" with a body)")
    params = []
    for i, raw in enumerate(p.strip() for p in match.group(1).split(",")):
        if not raw or raw == "void":
            continue
        text = re.sub(r"\b(const|__restrict__|__restrict|restrict|volatile|signed)\b", " ", raw)
        text = re.sub(r"\s+", " ", text).strip()
        pname = re.findall(r"[A-Za-z_]\w*$", text.replace("*", " ").strip())
        pname = pname[0] if pname else f"arg{i}"
        base = text[: text.rfind(pname)].strip() if text.endswith(pname) else text
        if "*" in base:
            elem = base.replace("*", "").strip()
            if elem not in _C_PTR_DTYPES:
                raise CompileError(f"parameter {raw!r}: pointer to {elem!r} is not supported")
            params.append(Param(pname, "ptr", _C_PTR_DTYPES[elem]))
        elif base in SCALARS:
            params.append(Param(pname, base))
        else:
            raise CompileError(f"parameter {raw!r}: type {base!r} is not supported; use pointers, int, long, "
                               f"int64_t, float or double")
    return params


def check_tensor(param: Param, value, device: str):
    """A clear error for the usual mistakes (non-contiguous, wrong dtype or device) instead of silent garbage."""
    import torch

    if not isinstance(value, torch.Tensor):
        raise TypeError(f"argument {param.name!r} is a pointer: pass a torch.Tensor, got {type(value).__name__}")
    if value.device.type != device:
        raise TypeError(f"argument {param.name!r}: tensor on {value.device}, kernel needs {device}")
    if not value.is_contiguous():
        raise TypeError(f"argument {param.name!r}: tensor is not contiguous; call .contiguous() first")
    if param.elem and str(value.dtype).removeprefix("torch.") != param.elem:
        raise TypeError(f"argument {param.name!r}: tensor dtype {value.dtype}, kernel expects {param.elem}")
    # Parameters (weights) require grad and DLPack refuses to export them; detach shares storage, so the kernel
    # still reads and writes the same memory. Found on the H200: TriMul, layernorm and rmsnorm failed without it.
    return value.detach()
