"""Which sizes a problem is checked and timed at: a preset when the problem has one, else a scaled-down copy of the
file's own sizes that fits a memory and compute budget (KernelBench's defaults are sized for GPUs: most of level 1
does not fit 4 GB on a CPU, and a call that takes seconds cannot be timed repeatably).

Scaling multiplies every size-like module global (an int of at least 16 not named like a stride or kernel size) by
one factor from a fixed grid, keeping each value a multiple of the power of two it was (so channel groups still
divide). The cost of a call is estimated without running it, on torch's meta device (bytes of inputs, outputs and
weights; FLOPs from torch's flop counter), so the choice is the same on every machine and in every process: the
sizes in the prompt are the sizes timed. Correctness is also checked at a second, smaller shape with odd sizes.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, Callable

# Never scaled: hyper-parameters that change what is computed, not how much (an axis index such as ``dim = 1`` is
# below MIN_SCALABLE anyway, so a feature size called ``dim`` scales).
EXEMPT = {"kernel_size", "stride", "padding", "dilation", "groups", "output_padding", "num_groups", "pool_size",
          "window_size", "k", "topk", "num_heads", "heads", "n_heads", "seed"}
MIN_SCALABLE = 16
GRID = [2.0 ** (-k / 2) for k in range(41)]  # 1, 0.71, 0.5, ... ~1e-6


@dataclass(frozen=True)
class SizeBudget:
    """What one call may cost at the timed size. The rates are planning constants for one core, not measurements."""

    max_call_mb: float = 32.0
    max_call_ms: float = 8.0
    flop_rate: float = 50e9
    byte_rate: float = 5e9

    def estimate_ms(self, probe: dict[str, Any]) -> float:
        moved = probe["input_bytes"] + probe["output_bytes"] + probe["param_bytes"]
        return 1e3 * (probe["flops"] / self.flop_rate + moved / self.byte_rate)

    def fits(self, probe: dict[str, Any]) -> bool:
        moved = probe["input_bytes"] + probe["output_bytes"] + probe["param_bytes"]
        return moved <= self.max_call_mb * 2**20 and self.estimate_ms(probe) <= self.max_call_ms


@dataclass
class SizePolicy:
    """The resolved sizes of one problem; recorded with every score and shown in the prompt."""

    kind: str  # preset:<name> | file | scaled
    shapes: list[dict[str, Any]]  # timed (and checked) shapes: module-global overrides
    check_shapes: list[dict[str, Any]] = field(default_factory=list)  # checked only, tried in order
    factor: float | None = None
    estimate: dict[str, Any] = field(default_factory=dict)
    budget: dict[str, Any] = field(default_factory=dict)
    note: str = ""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def describe(self) -> str:
        fmt = lambda s: ", ".join(f"{k}={v}" for k, v in s.items()) or "the file's own sizes"  # noqa: E731
        text = "Sizes timed: " + "; ".join(fmt(s) for s in self.shapes)
        if self.kind == "scaled":
            text += f" (the file's sizes scaled by {self.factor:.3g} to fit the CPU budget)"
        if self.check_shapes:
            text += ". Correctness is also checked at: " + fmt(self.check_shapes[0])
        return text


def scalable(defaults: dict[str, int]) -> dict[str, int]:
    return {k: v for k, v in defaults.items() if v >= MIN_SCALABLE and k.lower() not in EXEMPT}


def _quantum(v: int) -> int:
    q = 1
    while q < 16 and v % (q * 2) == 0:
        q *= 2
    return q


def scaled(values: dict[str, int], factor: float) -> dict[str, int]:
    out = {}
    for k, v in values.items():
        q = _quantum(v)
        out[k] = max(q, int(round(v * factor / q)) * q)
    return out


def odd(values: dict[str, int]) -> dict[str, int]:
    """Smaller sizes that are odd where possible: kernels that assume multiples of a vector width fail here."""
    return {k: max(3, (v // 2) | 1) for k, v in values.items()}


def check_candidates(shape: dict[str, Any], defaults: dict[str, int]) -> list[dict[str, Any]]:
    """Second shapes to try, in order: odd sizes, then halved sizes that keep their power-of-two factors."""
    base = {**scalable(defaults), **{k: v for k, v in shape.items() if type(v) is int}}
    sizes = scalable(base)
    if not sizes:
        return []
    out = []
    for variant in (odd(sizes), scaled(sizes, 0.5)):
        candidate = {**shape, **variant}
        if candidate != shape and candidate not in out:
            out.append(candidate)
    return out


def choose(defaults: dict[str, int], probe: Callable[[dict[str, Any], bool], dict[str, Any] | None],
           budget: SizeBudget) -> SizePolicy:
    """Scale the file's sizes down the grid until one call fits ``budget``. ``probe(globals, allow_real)`` returns
    the reference's cost at those sizes (method meta or real) or None when the reference fails there."""
    sizes = scalable(defaults)
    meta_ok = True
    tried: dict[tuple, dict[str, Any] | None] = {}

    def cost(values: dict[str, int], real: bool) -> dict[str, Any] | None:
        key = tuple(sorted(values.items()))
        if key not in tried:
            tried[key] = probe(values, real)
        return tried[key]

    first = cost(sizes, False)
    if first is None or first.get("method") == "none":
        meta_ok = False
    if not sizes:
        estimate = dict(first or {}, estimate_ms=budget.estimate_ms(first) if first and meta_ok else None)
        return SizePolicy("file", [{}], [], 1.0, estimate, asdict(budget),
                          note="" if (first and meta_ok and budget.fits(first)) else "no size-like globals to scale")
    grid = GRID if meta_ok else list(reversed(GRID))  # meta: from the top, nothing allocated; real: from the bottom
    chosen: tuple[float, dict[str, int], dict[str, Any]] | None = None
    smallest: tuple[float, dict[str, int], dict[str, Any]] | None = None
    for factor in grid:
        values = scaled(sizes, factor)
        result = cost(values, not meta_ok)
        if not result or result.get("method") == "none":
            continue
        if smallest is None or factor < smallest[0]:
            smallest = (factor, values, result)
        if budget.fits(result):
            if meta_ok:
                chosen = (factor, values, result)
                break
            chosen = (factor, values, result)
        elif not meta_ok and chosen is not None:
            break
    note = ""
    if chosen is None:
        if smallest is None:
            raise ValueError("the reference runs at no size on the scaling grid")
        chosen, note = smallest, "even the smallest size exceeds the budget (sizes without a scalable global)"
    factor, values, result = chosen
    shape = {} if factor == 1.0 else values
    estimate = {**result, "estimate_ms": budget.estimate_ms(result)}
    return SizePolicy("file" if factor == 1.0 else "scaled", [shape], check_candidates(shape, defaults), factor,
                      estimate, asdict(budget), note)


def from_preset(name: str, shapes: list[dict[str, Any]], defaults: dict[str, int]) -> SizePolicy:
    checks = check_candidates(shapes[0], defaults) if len(shapes) == 1 else []
    return SizePolicy(f"preset:{name}", [dict(s) for s in shapes], checks)
