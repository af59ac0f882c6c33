"""Is a candidate's output the reference's output? Decided in the driver with numpy, never in a candidate's process.

Beyond KernelBench's elementwise ``allclose``: dtype-aware default tolerances (float32 1e-4, half types 1e-2); a
relative-error bound on the whole output and on each row, so outputs whose values all sit below ``atol`` (softmax
over a long row: zeros pass ``allclose``) or that get only part of the rows right still fail; NaN/inf where the
reference is finite; constant output; and an output repeated from another call (replay / memoisation).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

DEFAULT_TOLERANCE = {"float32": 1e-4, "float64": 1e-6, "float16": 1e-2, "bfloat16": 1e-2}
REL_FACTOR = 10.0  # the norm-wise bound is REL_FACTOR * rtol (at least REL_FLOOR): honest kernels sit ~1e-6
REL_FLOOR = 1e-5


def default_tolerance(dtype: str) -> float:
    return DEFAULT_TOLERANCE.get(dtype, 0.0)


@dataclass
class Mismatch:
    """Why an output is wrong: ``kind`` is a named reason (shape, dtype, nan, constant output, partial output,
    mismatch, replayed output, output count)."""

    kind: str
    message: str
    details: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "message": self.message, **({"mismatch": self.details} if self.details else {})}


def as_float(array: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":  # raw bits in uint16: widen to float32
        return (array.astype(np.uint32) << 16).view(np.float32)
    if dtype in ("float16", "bool"):
        return array.astype(np.float32)
    if array.dtype.kind in "iu":
        return array.astype(np.float64)
    return array


def _first_bad(bad: np.ndarray, got: np.ndarray, expected: np.ndarray) -> dict[str, Any]:
    flat = int(np.flatnonzero(bad)[0]) if bad.any() else 0
    index = [int(i) for i in np.unravel_index(flat, got.shape)] if got.ndim else []
    diff = np.abs(got.astype(np.float64) - expected.astype(np.float64))
    return {"index": index, "expected": float(expected.flat[flat]), "got": float(got.flat[flat]),
            "mismatched_fraction": float(bad.mean()) if bad.size else 0.0,
            "max_abs_error": float(np.nan_to_num(diff, nan=np.inf).max()) if diff.size else 0.0}


def _rows(a: np.ndarray) -> np.ndarray:
    return a.reshape(-1, a.shape[-1]) if a.ndim >= 2 and a.shape[-1] > 1 else a.reshape(1, -1)


def compare(got: np.ndarray, expected: np.ndarray, dtype: str, atol: float, rtol: float) -> Mismatch | None:
    """None when ``got`` matches ``expected`` (both raw arrays of the same declared ``dtype`` and shape)."""
    if got.shape != expected.shape:
        return Mismatch("shape", f"output shape {list(got.shape)}, expected {list(expected.shape)}")
    if got.size == 0:
        return None
    g, e = as_float(got, dtype), as_float(expected, dtype)
    with np.errstate(invalid="ignore", over="ignore"):
        diff = np.subtract(g, e)
        err = np.abs(diff, out=diff)
        tol = np.abs(e)
        tol *= rtol
        tol += atol
        close = err <= tol  # NaN anywhere compares False: sorted out below
        if not close.all():
            finite_e = np.isfinite(e)
            bad_nan = ~np.isfinite(g) & finite_e
            if bad_nan.any():
                return Mismatch("nan", "output has NaN/inf where the reference is finite", _first_bad(bad_nan, g, e))
            close |= (np.isnan(g) & np.isnan(e)) | (g == e)  # NaN where the reference is NaN; equal infinities
            if not close.all():
                if g.size > 1 and bool((g == g.flat[0]).all()) and not bool((e == e.flat[0]).all()):
                    return Mismatch("constant output", f"every output element is {float(g.flat[0])!r}; the "
                                                       f"reference is not constant")
                rows_bad = _rows(~close).any(axis=1)
                if len(rows_bad) > 1 and (~rows_bad).any():
                    first = int(np.flatnonzero(rows_bad)[0])
                    return Mismatch("partial output", f"{int(rows_bad.sum())} of {len(rows_bad)} rows differ from the "
                                                      f"reference (first: row {first}); the others are right",
                                    _first_bad(~close, g, e))
                return Mismatch("mismatch", f"output differs from the reference (atol={atol:g}, rtol={rtol:g})",
                                _first_bad(~close, g, e))
            err = np.where(np.isfinite(e), err, 0)
            e = np.where(np.isfinite(e), e, 0)
        if g.size > 1 and bool((g == g.flat[0]).all()) and not bool((e == e.flat[0]).all()):
            return Mismatch("constant output", f"every output element is {float(g.flat[0])!r}; the reference is "
                                               f"not constant")
        bound = min(0.5, max(REL_FLOOR, REL_FACTOR * rtol))
        rows_err, rows_e = _rows(err), _rows(e)
        err2 = np.einsum("ij,ij->i", rows_err, rows_err, dtype=np.float64)
        norm2 = np.einsum("ij,ij->i", rows_e, rows_e, dtype=np.float64)
    wrong = (norm2 > 0) & (err2 > bound * bound * norm2)
    if wrong.any():
        total = float(np.sqrt(err2.sum() / max(norm2.sum(), 1e-300)))
        if wrong.all() or len(wrong) == 1:
            return Mismatch("mismatch", f"relative error {total:.3g} of the whole output exceeds {bound:g} although "
                                        f"each element is within atol={atol:g} (outputs smaller than the tolerance "
                                        f"must still be computed)", {"relative_error": total})
        rows = np.flatnonzero(wrong)
        return Mismatch("partial output", f"{len(rows)} of {len(wrong)} rows are wrong (relative error above "
                                          f"{bound:g}; first wrong row {int(rows[0])}); the others are right",
                        {"wrong_rows": int(len(rows)), "rows": int(len(wrong)), "first_row": int(rows[0]),
                         "relative_error": total})
    return None


SENSITIVITY = 0.25  # largest relative disagreement between the reference's and the candidate's output change


def insensitive(got_a: np.ndarray, got_b: np.ndarray, exp_a: np.ndarray, exp_b: np.ndarray, dtype: str) -> \
        Mismatch | None:
    """Inputs a and b differ in one random block. Whatever that changed in the reference's output must change alike
    in the candidate's: an output that ignores part of its input fails here even inside a loose tolerance."""
    with np.errstate(invalid="ignore", over="ignore"):
        d_exp = np.nan_to_num(as_float(exp_b, dtype).astype(np.float64) - as_float(exp_a, dtype), posinf=0, neginf=0)
        d_got = np.nan_to_num(as_float(got_b, dtype).astype(np.float64) - as_float(got_a, dtype), posinf=0, neginf=0)
        changed = float(np.sqrt((d_exp ** 2).sum()))
        off = float(np.sqrt(((d_got - d_exp) ** 2).sum()))
    if changed > 0 and off > SENSITIVITY * changed:
        return Mismatch("ignores part of the input", f"changing one block of the input changed the reference's "
                                                     f"output by {changed:.3g} (L2) and yours differently (off by "
                                                     f"{off:.3g}): the output does not follow all of its input",
                        {"changed": changed, "off": off})
    return None
