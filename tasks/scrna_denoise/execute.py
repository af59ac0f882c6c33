"""Host side of program execution: run the runner in the sandbox on one instance's input, check what comes back.

The sandbox's work folder receives only this instance's training counts, the program, the runner and a small job
file (copied in through file descriptors); the held-out counts never leave the task process. The output arrives as
one array message over the pipe the harness owns and is validated here again (shape, dtype, finite, non-negative).
Every failure (hang, memory, crash, protocol abuse, NaN, negative values, wrong shape) comes back as an
:class:`Execution` whose ``error`` is the harness's own one-line reason; text the program controls (its stderr and
exception messages) is kept apart in ``program_output``, cleaned and labelled as untrusted.
"""

from __future__ import annotations

import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import scipy.sparse as sp

from sia_bench.sandbox import Limits, run
from sia_bench.sandbox.untrusted import quote

RUNNER = Path(__file__).with_name("runner.py")
NEGATIVE_TOLERANCE = 1e-9
STAGES = {"load": "the program failed to load", "denoise": "denoise raised an exception",
          "contract": "the program broke the contract"}


@dataclass
class Execution:
    denoised: np.ndarray | None
    seconds: float
    error: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    program_output: str = ""  # quoted, cleaned, truncated text the program controls; '' when there is none


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


def _job_files(program: str, train: sp.csr_matrix, params: dict[str, Any]) -> dict[str, bytes]:
    buffer = io.BytesIO()
    sp.save_npz(buffer, train.astype(np.float32), compressed=False)
    return {"program.py": program.encode(), "runner.py": RUNNER.read_bytes(), "counts.npz": buffer.getvalue(),
            "job.json": json.dumps({"params": params}).encode()}


def _params_used(claimed: Any, given: dict[str, Any]) -> dict[str, Any]:
    """The runner's claim of which parameters it passed, kept only where it names parameters we gave it."""
    if not isinstance(claimed, dict):
        return {}
    return {k: given[k] for k in claimed if k in given and claimed[k] == given[k]}


def run_program(program: str, train: sp.csr_matrix, params: dict[str, Any] | None = None, *,
                timeout_s: float = 120.0, memory_mb: int = 4096, mode: str = "bwrap",
                hidden: list[str] | None = None) -> Execution:
    """Run ``program`` (source text defining ``denoise``) on ``train`` in the sandbox; ``hidden`` names host files
    it must not see even inside the mounted libraries (the dataset's own source)."""
    params = dict(params or {})
    n_cells, n_genes = train.shape
    result_mb = n_cells * n_genes * 8 / 2**20 + 1.0  # one float64 matrix of the input's shape, plus the header
    limits = Limits(wall_s=timeout_s, memory_mb=memory_mb, result_mb=result_mb)
    res = run(["python", "runner.py"], files=_job_files(program, train, params), limits=limits, mode=mode,
              hidden=hidden)
    details: dict[str, Any] = {"sandbox_seconds": round(res.seconds, 3), "sandbox_mode": mode,
                               "sandbox_limits": res.stats.get("limits")}
    for key in ("memory_peak_mb", "cpu_seconds"):
        if key in res.stats:
            details[f"sandbox_{key}"] = round(float(res.stats[key]), 3)
    stderr = quote(res.stderr.strip().splitlines()[-1] if res.stderr.strip() else "", 300)
    reported = res.last("error")
    if reported is not None:
        stage = str(reported.header.get("stage"))
        why = STAGES.get(stage, "the program reported an error")
        return Execution(None, res.seconds, why, details | {"failure_kind": f"program_{stage}"
                                                            if stage in STAGES else "program_error"},
                         quote(reported.header.get("message", ""), 300) or stderr)
    message = res.last("result")
    if not res.ok or message is None:
        why = res.error or "the program sent no result"
        return Execution(None, res.seconds, why, details | {"failure_kind": res.error_kind or "no_result"},
                         "" if "last stderr line" in why else stderr)
    seconds = message.header.get("seconds")
    if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) and math.isfinite(seconds) and seconds >= 0:
        details["seconds"] = float(seconds)
    details["params_used"] = _params_used(message.header.get("params_used"), params)
    if len(message.arrays) != 1:
        return Execution(None, res.seconds, f"the result holds {len(message.arrays)} arrays, expected 1",
                         details | {"failure_kind": "protocol"})
    out = message.arrays[0]
    problem = check_output(out, train.shape)
    if problem:
        return Execution(None, res.seconds, problem, details | {"failure_kind": "invalid_output",
                                                                "output_summary": summarise(out)})
    return Execution(np.clip(out.astype(np.float64), 0, None), res.seconds, None, details)


def summarise(out: np.ndarray) -> dict[str, Any]:
    """A few numbers about an output (for feedback), robust to NaN."""
    try:
        finite = out[np.isfinite(out)] if np.issubdtype(out.dtype, np.number) else np.array([])
    except TypeError:
        return {"dtype": str(out.dtype)}
    return {"shape": list(out.shape), "non_finite": int(out.size - finite.size),
            "negative": int((finite < 0).sum()), "min": float(finite.min()) if finite.size else None,
            "max": float(finite.max()) if finite.size else None}
