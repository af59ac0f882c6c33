"""Host side of program execution: lay out a sandbox directory, run the runner, and check what comes back.

Only the training counts, the program and the runner are placed in the sandbox directory; the held-out counts
never leave the task process. Every failure (hang, memory, crash, NaN, negative values, wrong shape, a refused
file read) comes back as an :class:`Execution` with ``error`` set, never as an exception.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from sia_bench.sandbox import run_python

RUNNER = Path(__file__).with_name("runner.py")
NEGATIVE_TOLERANCE = 1e-9


@dataclass
class Execution:
    denoised: np.ndarray | None
    seconds: float
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)


def check_output(out: np.ndarray, shape: tuple[int, int]) -> str | None:
    """Why ``out`` is not a usable denoised matrix, or None."""
    if out.shape != tuple(shape):
        return f"wrong shape {out.shape}, expected {tuple(shape)}"
    if not np.issubdtype(out.dtype, np.number) or np.issubdtype(out.dtype, np.complexfloating):
        return f"not a real numeric array (dtype {out.dtype})"
    bad = ~np.isfinite(out)
    if bad.any():
        return f"{int(bad.sum())} non-finite values (NaN or inf) out of {out.size}"
    low = out.min()
    if low < -NEGATIVE_TOLERANCE:
        return (f"{int((out < -NEGATIVE_TOLERANCE).sum())} negative values (min {low:.3g}); expression must be "
                "non-negative: clip or square back to counts")
    if not out.any():
        return "all values are zero"
    return None


def run_program(program: str, train: sp.csr_matrix, params: dict[str, Any] | None = None, *,
                timeout_s: float = 120.0, memory_mb: int = 4096, workdir: Path | None = None,
                keep: bool = False) -> Execution:
    """Run ``program`` (source text defining ``denoise``) on ``train`` in the sandbox."""
    own = workdir is None
    work = Path(tempfile.mkdtemp(prefix="scrna_sandbox_")) if own else Path(workdir)
    work.mkdir(parents=True, exist_ok=True)
    try:
        (work / "program.py").write_text(program)
        shutil.copyfile(RUNNER, work / "runner.py")
        sp.save_npz(work / "counts.npz", train.astype(np.float32), compressed=False)
        (work / "job.json").write_text(json.dumps({"program": "program.py", "counts": "counts.npz",
                                                   "output": "denoised.npy", "params": params or {}}))
        res = run_python(work / "runner.py", workdir=work, timeout_s=timeout_s, memory_mb=memory_mb)
        details = {"sandbox_seconds": round(res.seconds, 3)}
        if isinstance(res.output, dict):
            details.update({k: v for k, v in res.output.items() if k in ("seconds", "params_used")})
            if res.output.get("error"):
                return Execution(None, res.seconds, res.output["error"], details | {"stderr": res.stderr[-1500:]})
        if res.error:
            details["stderr"] = res.stderr[-1500:]
            return Execution(None, res.seconds, res.error, details)
        try:
            out = np.load(work / "denoised.npy", allow_pickle=False)
        except (OSError, ValueError) as err:
            return Execution(None, res.seconds, f"output unreadable: {err}", details)
        problem = check_output(out, train.shape)
        if problem:
            return Execution(None, res.seconds, problem, details | {"output_summary": summarise(out)})
        return Execution(np.clip(out.astype(np.float64), 0, None), res.seconds, None, details)
    finally:
        if own and not keep:
            shutil.rmtree(work, ignore_errors=True)


def summarise(out: np.ndarray) -> dict[str, Any]:
    """A few numbers about an output (for feedback), robust to NaN."""
    try:
        finite = out[np.isfinite(out)] if np.issubdtype(out.dtype, np.number) else np.array([])
    except TypeError:
        return {"dtype": str(out.dtype)}
    return {"shape": list(out.shape), "non_finite": int(out.size - finite.size),
            "negative": int((finite < 0).sum()), "min": float(finite.min()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None}
