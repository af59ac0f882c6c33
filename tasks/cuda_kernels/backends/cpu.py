"""The cpu backend: C++ (OpenMP/SIMD) compiled with the system g++ into a shared library, called through ctypes.

A candidate writes ``fn = load_cpp(SOURCE, "name")`` and calls ``fn(tensor, ..., int, ...)``: pointer parameters take
contiguous CPU tensors of the matching dtype, scalar parameters take Python numbers. The compile flags default to
the harness's ``cpp_flags`` (passed in ``SIA_CPP_FLAGS``).
"""

from __future__ import annotations

import ctypes
import os
import shlex

from .build import SCALARS, CompileError, cached_build, check_tensor, parse_signature

DEFAULT_FLAGS = "-O3 -march=native -fopenmp"
STATS = {"compiles": 0, "cache_hits": 0}


class CppFunction:
    """A compiled C function with argument checking; calling it runs the native code in this process."""

    def __init__(self, lib: ctypes.CDLL, name: str, params):
        self.name, self.params = name, params
        self._fn = getattr(lib, name)
        self._fn.restype = None
        self._fn.argtypes = [ctypes.c_void_p if p.ctype == "ptr" else SCALARS[p.ctype] for p in params]

    def __call__(self, *args):
        if len(args) != len(self.params):
            raise TypeError(f"{self.name} takes {len(self.params)} arguments "
                            f"({', '.join(p.name for p in self.params)}), got {len(args)}")
        native = []
        for param, value in zip(self.params, args):
            if param.ctype == "ptr":
                native.append(check_tensor(param, value, "cpu").data_ptr())
            else:
                native.append(value)
        self._fn(*native)


def load_cpp(source: str, name: str, signature: str | None = None, flags: str | None = None) -> CppFunction:
    """Compile ``source`` (cached by hash) and return the ``extern "C"`` function ``name``.

    ``signature`` is an optional C parameter list such as ``"const float* x, float* y, long n"``; by default it is
    read from the function's definition in ``source``.
    """
    flags = flags if flags is not None else os.environ.get("SIA_CPP_FLAGS", DEFAULT_FLAGS)
    params = parse_signature(f"{name}({signature}) {{" if signature else source, name)
    command = ["g++", *shlex.split(flags), "-shared", "-fPIC", "-std=c++17", "{src}", "-o", "{out}"]
    path, hit = cached_build(source, ".so", command, "cpu")
    STATS["cache_hits" if hit else "compiles"] += 1
    try:
        lib = ctypes.CDLL(str(path))
    except OSError as err:
        raise CompileError(f"the shared library did not load: {err}") from None
    if not hasattr(lib, name):
        raise CompileError(f"symbol {name!r} not exported: declare it extern \"C\"")
    return CppFunction(lib, name, params)
