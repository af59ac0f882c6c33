"""The record of one kernel scoring: what ran, what was found, whose fault a failure was. One schema; the score's
``details`` and its feedback text are both derived from it.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

# Every check by name, and whether its verdict can be trusted against a hostile candidate: "trusted" checks run
# outside the candidate's interpreter (driver, reference worker, kernel counters); "best-effort" ones can be evaded
# by a program that knows them, and are there for clear feedback to honest programs.
CHECKS = {
    "static: syntax and ModelNew": "trusted",
    "static: torch/vendor calls, streams, timers, imports": "best-effort",
    "compile flags allow-list": "trusted",
    "separate processes (reference, inputs, comparison, clock outside the candidate)": "trusted",
    "fresh inputs on every call": "trusted",
    "every call's output compared": "trusted",
    "inputs read-only to the candidate": "trusted",
    "dtype-aware elementwise tolerance": "trusted",
    "relative error per row and overall": "trusted",
    "output depends on every part of the input": "trusted",
    "NaN / constant output": "trusted",
    "second shape": "trusted",
    "no CPU work between calls (detached threads, precomputation)": "trusted",
    "output unchanged after return": "trusted",
    "outputs read from the candidate's memory, no code of it running": "trusted",
    "threads pinned (cgroup cpuset)": "trusted",
    "CPU seconds within threads x wall time": "trusted",
    "compute audit (sampled instruction pointers)": "trusted",
    "dispatch trace in the worker": "best-effort",
    "tamper report from the worker": "best-effort",
    "reference determinism": "trusted",
    "stage/publish time bounded by eager's (GPU)": "trusted",
}


class CandidateFailure(Exception):
    """The candidate did something that scores 0; ``kind`` is the named reason."""

    def __init__(self, kind: str, message: str, **extra: Any):
        super().__init__(message)
        self.kind, self.extra = kind, extra


class HarnessError(Exception):
    """Our side failed (the reference, its input generator, a buffer, the sandbox): never the candidate's fault."""

    def __init__(self, stage: str, message: str, log: str = ""):
        super().__init__(message)
        self.stage, self.log = stage, log


@dataclass
class KernelResult:
    problem: str
    backend: str
    sandbox: str
    device: str = "cpu"
    size_policy: dict[str, Any] = field(default_factory=dict)
    compiled: bool = False
    executed: bool = False
    correct: bool = False
    timed: bool = False
    interpreted: bool = False
    speedup: float = 0.0
    candidate_us: float | None = None
    eager_us: float | None = None
    failures: list[dict[str, Any]] = field(default_factory=list)  # the candidate's: they score 0
    harness_errors: list[dict[str, Any]] = field(default_factory=list)  # ours: never charged to the candidate
    checks_run: list[str] = field(default_factory=list)
    shapes: list[dict[str, Any]] = field(default_factory=list)  # per shape: sizes, calls checked, timing
    audit: dict[str, Any] | None = None
    idle_cpu_ms_max: float = 0.0  # the most CPU the candidate's tree used between two commands
    compile_stats: dict[str, Any] = field(default_factory=dict)
    overhead_s: dict[str, float] = field(default_factory=dict)
    program_source: str = "model"
    seeds: dict[str, Any] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def ran(self, check: str) -> None:
        if check not in CHECKS:
            raise KeyError(f"unknown check {check!r}")
        if check not in self.checks_run:
            self.checks_run.append(check)

    def fail(self, kind: str, message: str, **extra: Any) -> None:
        self.failures.append({"kind": kind, "message": message, **extra})
        self.correct = self.timed = False
        self.speedup = 0.0

    def harness_error(self, stage: str, message: str, log: str = "") -> None:
        self.harness_errors.append({"stage": stage, "message": message, **({"log": log} if log else {})})
        self.timed = False
        self.speedup = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures and not self.harness_errors

    @property
    def score(self) -> float:
        return self.speedup if self.ok and self.correct and self.timed else 0.0

    def to_details(self) -> dict[str, Any]:
        out = asdict(self)
        out["speedup"] = self.score
        out["check_trust"] = {c: CHECKS[c] for c in self.checks_run}
        out["harness_error"] = bool(self.harness_errors)
        return out

    def feedback(self) -> str:
        lines = [f"Problem {self.problem} on {self.backend} ({self.device}; sandbox {self.sandbox}): "
                 f"compiled={self.compiled}, executed={self.executed}, correct={self.correct}, timed={self.timed}."]
        if self.size_policy.get("shapes"):
            sizes = "; ".join(", ".join(f"{k}={v}" for k, v in s.items()) or "file's own" for s in
                              self.size_policy["shapes"])
            lines.append(f"Sizes ({self.size_policy.get('kind')}): {sizes}.")
        for err in self.harness_errors[:2]:
            lines.append(f"- harness error (not your program's fault; not scored against it) during {err['stage']}: "
                         f"{err['message']}")
        for f in self.failures[:3]:
            lines.append(f"- {f['kind']}: {f['message']}")
            m = f.get("mismatch") or {}
            if "index" in m:
                lines.append(f"  first mismatch at index {m['index']}: expected {m['expected']:.6g}, got "
                             f"{m['got']:.6g} ({100 * m['mismatched_fraction']:.1f}% of elements off, max abs error "
                             f"{m['max_abs_error']:.3g})")
            if f.get("log"):
                lines.append("  log:\n" + "\n".join("    " + ln for ln in str(f["log"]).strip().splitlines()[-15:]))
        if self.timed and self.ok:
            for s in self.shapes:
                t = s.get("timing")
                if t:
                    lines.append(f"Timing at {s['sizes'] or 'the file sizes'}: yours {t['candidate']['median_us']:.1f} us, "
                                 f"torch eager {t['eager']['median_us']:.1f} us per call -> {t['speedup']:.3f}x "
                                 f"(median of {t['candidate']['n']} interleaved samples, 95% CI +-"
                                 f"{t['candidate']['ci_halfwidth_pct']:.1f}%).")
            lines.append(f"Speed-up over torch eager: {self.speedup:.3f}x.")
        elif self.correct and self.interpreted:
            lines.append("Correct under the Triton interpreter; interpreter timings are meaningless, so speed-up is 0.")
        return "\n".join(lines)
