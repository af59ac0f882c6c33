"""The triton backend: a candidate writes ``@triton.jit`` kernels in its own file and launches them from ModelNew.

Without a GPU the runner sets ``TRITON_INTERPRET=1`` before triton is imported, so kernels run in Triton's
interpreter on CPU tensors: correctness is real, timings are not (they are not reported as speed-ups).
"""

from __future__ import annotations

import importlib.util
import os


def triton_status() -> str | None:
    """None when triton can be used here, else the reason it cannot."""
    if importlib.util.find_spec("triton") is None:
        return "triton is not installed (pip install 'sia-bench[triton]', ~1 GB)"
    return None


def interpreted() -> bool:
    return os.environ.get("TRITON_INTERPRET") == "1"
