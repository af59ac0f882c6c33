"""Rounds of calls for one candidate at one shape: fresh inputs, interleaved timing, every output checked.

A round: the reference worker writes fresh inputs (a new seed per call) into K slots and the expected outputs beside
them; after a cache flush the candidate runs the K calls on its own clock-less command while the driver's clock runs;
after another flush torch eager runs the same K calls in the eager twin, a worker like the candidate's (the order
flips every round); the driver reads both workers' outputs and compares them with the expected ones, then re-reads
one of the candidate's after a delay. Between commands the candidate's process tree must be idle (cgroup CPU
time), so work hidden in a detached thread, before a call or after its return, fails. Some rounds, chosen at random
and indistinguishable to the candidate, are sampled by the compute audit (and left out of the timing statistics).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from . import audit, compare
from .record import CandidateFailure, HarnessError, KernelResult
from . import shm
from .shm import Arena, Layout
from .timing import Series
from .workers import Worker, WorkerError

IDLE_TOLERANCE_S = 0.0005  # CPU the tree may use between commands: the tail of its last reply (honest: <= 0.13 ms
# on an idle machine, 0.7-0.8 ms now and then on a loaded CI runner)
IDLE_OVER_SHARE = 0.25  # share of gaps allowed above that: hidden work must recur every round to move the median
IDLE_CEILING_S = 0.005  # one gap above this (and 4x the per-gap bound) fails at once
IDLE_EARLY_GAPS = 16  # gaps seen before the share is judged mid-run (the end of the run judges it in any case)
AUDIT_P = 0.2
WARMUP_ROUNDS = 2
MAX_WARMUP_ROUNDS = 12
FALLBACK_RATIO = 0.25  # library (or unbuilt native) time per call, against eager's on the same calls...
GLUE_ALLOWANCE_S = 10e-6  # ...after this much per call (at most half of eager's) for allocation and dispatch


@dataclass
class Shape:
    """One prepared shape: the reference's description of it and the shared buffers for K slots."""

    sizes: dict[str, Any]
    spec: dict[str, Any]
    weights: list[np.ndarray]
    layout: Layout
    arenas: dict[str, Arena]
    atol: float
    rtol: float
    role: str  # timed | check

    @property
    def k(self) -> int:
        return self.layout.slots

    def close(self) -> None:
        for arena in self.arenas.values():
            arena.close()


@dataclass
class Context:
    """What a round needs from the driver."""

    ref: Worker  # the problem's reference: inputs, expected outputs, cache flushes
    cand: Worker
    eager: Worker  # torch eager in a worker like the candidate's, timed exactly as the candidate is
    result: KernelResult
    threads: int
    cpus: list[int]
    flush_bytes: int
    deadline: float
    rng: random.Random
    trusted: bool
    gpu: bool
    audit_ok: bool
    clock: str  # cpu: cgroup CPU seconds of the worker tree per sample; wall: the driver's wall clock
    trusted_roots: tuple[str, ...]
    stdlib_roots: tuple[str, ...]
    kernel_hashes: dict[str, int] = field(default_factory=dict)  # sha256 -> size of each artifact the builder made
    profile: audit.Profile | None = None
    audited_rounds: int = 0
    rounds: int = 0
    idle_from: float | None = None  # the candidate tree's CPU seconds after its last reply
    idle_gaps: int = 0  # gaps between commands measured
    idle_over: list[tuple[float, str]] = field(default_factory=list)  # (CPU seconds, when) of gaps above the bound
    # (candidate, eager) seconds per call of every round of the timed shape: the audit's shares are applied to their
    # medians, so one round inflated by a busy neighbour cannot turn an honest program's glue into a "fallback"
    round_times: list[tuple[float, float]] = field(default_factory=list)


def idle_too_often(ctx: Context) -> bool:
    return len(ctx.idle_over) > max(2, IDLE_OVER_SHARE * ctx.idle_gaps)


def judge_idle(ctx: Context) -> None:
    """At the end of a run: fail when too many gaps between commands held CPU work."""
    if idle_too_often(ctx):
        used, when = max(ctx.idle_over)
        raise idle_failure(ctx, used, when)


def idle_failure(ctx: Context, used: float, when: str) -> CandidateFailure:
    return CandidateFailure("work outside calls", f"the program used {used * 1e3:.1f} ms of CPU while it had no "
                                                  f"call to run ({when}; {len(ctx.idle_over)} of {ctx.idle_gaps} "
                                                  f"gaps busy): a background thread or process working before a "
                                                  f"call or after its return")


_FAILURE_KIND = {"compile": "compile", "import": "import", "format": "format", "init": "init", "run": "runtime",
                 "publish": "runtime", "trace": "runtime", "layout": "protocol", "arenas": "protocol"}


def candidate_failure(err: WorkerError) -> CandidateFailure:
    if err.kind == "error":
        return CandidateFailure(_FAILURE_KIND.get(err.stage, "runtime"), err.args[0], log=err.log)
    message = err.args[0]
    if "segmentation fault" in message:
        message += " (inputs are read-only memory: writing into an input tensor crashes)"
    return CandidateFailure(err.kind, f"{message} (during {err.stage})", log=err.log)


class ShapeRun:
    def __init__(self, ctx: Context, shape: Shape):
        self.ctx, self.shape = ctx, shape
        self.calls = 0

    # -- messages ------------------------------------------------------------------------------------------------------
    def remaining(self, cap: float) -> float:
        left = self.ctx.deadline - time.monotonic()
        if left <= 0:
            raise CandidateFailure("timeout", "the candidate's time budget ran out")
        return min(cap, left)

    def ref(self, cmd: str, **kw: Any):
        try:
            return self.ctx.ref.request({"cmd": cmd, **kw}, timeout=600.0)
        except WorkerError as err:
            raise HarnessError(f"reference {cmd}", str(err), err.log) from None

    def twin(self, cmd: str, arrays: list | tuple = (), **kw: Any):
        """A command to the eager twin (trusted code: its failures are the harness's)."""
        try:
            return self.ctx.eager.request({"cmd": cmd, **kw}, arrays, timeout=600.0)
        except WorkerError as err:
            raise HarnessError(f"eager twin {cmd}", str(err), err.log) from None

    def start_twin(self, seed: int) -> None:
        """The twin gets what the candidate gets (inputs, weights, layout); its outputs go to the "eager" buffer."""
        sh, gpu = self.shape, self.ctx.gpu
        try:
            self.ctx.eager.send_arenas([(sh.arenas["in"], False)] + ([(sh.arenas["eager"], True)] if gpu else []))
        except WorkerError as err:
            raise HarnessError("eager twin arenas", str(err), err.log) from None
        self.twin("init", arrays=sh.weights, init_inputs=sh.spec["init_inputs"], seed=seed, weights=sh.spec["weights"])
        self.twin("layout", slots=[{"inputs": sh.layout.input_refs(s, "in"),
                                    "outputs": sh.layout.output_refs(s, "eager") if gpu else []}
                                   for s in range(sh.k)])

    def cand(self, cmd: str, cap: float = 120.0, arrays: list | tuple = (), **kw: Any):
        self.idle_check(f"before {cmd!r}")
        try:
            reply = self.ctx.cand.request({"cmd": cmd, **kw}, arrays, timeout=self.remaining(cap))
        except WorkerError as err:
            raise candidate_failure(err) from None
        self.ctx.idle_from = self.ctx.cand.cpu_seconds()
        return reply

    def send_arenas(self) -> None:
        self.idle_check("before the buffers were handed over")
        try:
            shared = [(self.shape.arenas["in"], False)]  # read-only inputs; a GPU worker also publishes its outputs
            self.ctx.cand.send_arenas(shared + ([(self.shape.arenas["out"], True)] if self.ctx.gpu else []))
        except WorkerError as err:
            raise candidate_failure(err) from None
        self.ctx.idle_from = self.ctx.cand.cpu_seconds()

    def idle_check(self, when: str) -> None:
        now = self.ctx.cand.cpu_seconds()
        if now is None or self.ctx.idle_from is None:
            return
        ctx = self.ctx
        ctx.result.ran("no CPU work between calls (detached threads, precomputation)")
        used = now - ctx.idle_from
        ctx.result.idle_cpu_ms_max = max(ctx.result.idle_cpu_ms_max, used * 1e3)
        ctx.idle_gaps += 1
        # A gap counts when it could hide a round's work: above the tail of a reply and above what eager takes for
        # the round's calls. Honest workers with megabyte outputs were measured at 1.4-3.4 ms here (memory the
        # kernel settles after a reply), about one eager round; work deferred past a reply cannot produce the
        # outputs, which are read and checked from outside as soon as the reply arrives. One noisy gap is not a
        # verdict (a loaded runner gave honest programs 0.7-0.8 ms once in a run); work hidden in most rounds, or a
        # lot of it in one, is.
        bound = max(IDLE_TOLERANCE_S, float(self.shape.spec.get("eager_once_s") or 0.0) * self.shape.k)
        if used > bound:
            ctx.idle_over.append((used, when))
        if used > max(IDLE_CEILING_S, 4 * bound) or ctx.idle_gaps >= IDLE_EARLY_GAPS and idle_too_often(ctx):
            raise idle_failure(ctx, used, when)

    # -- one round ----------------------------------------------------------------------------------------------------
    def round(self, seeds: list[int], audited: bool) -> dict[str, float]:
        ctx, sh = self.ctx, self.shape
        slots = list(range(sh.k))
        pairs = [[0, 1, self.ctx.rng.randrange(1, 2**62)]] if sh.k >= 2 else []
        self.ref("gen", slots=slots, seeds=seeds, pairs=pairs)
        for arena in ("out", "eager"):  # NaN until published
            np.frombuffer(sh.arenas[arena].map, dtype=np.uint8)[:sh.layout.out_bytes].fill(0xFF)
        order = ("cand", "eager") if ctx.rounds % 2 == 0 else ("eager", "cand")
        ctx.rounds += 1
        times: dict[str, float] = {}
        round_profile = None
        once_s = max(1e-6, float(sh.spec["eager_once_s"]))
        for who in order:
            self.ref("flush", bytes=ctx.flush_bytes)
            if who == "eager":
                if ctx.gpu or sh.spec.get("mutates_inputs"):  # an in-place reference times on private copies
                    _, times["eager_stage"] = self.twin("stage", slots=slots, private=not ctx.gpu)
                before = ctx.eager.cpu_seconds()
                eager_reply, dt = self.twin("run", slots=slots)
                times["eager"] = self.per_call(before, ctx.eager.cpu_seconds(), dt)
                times["eager_wall"] = dt / sh.k
                continue
            if ctx.gpu:
                _, times["cand_stage"] = self.cand("stage", slots=slots)
            sampler = self.start_audit(once_s * sh.k) if audited else None
            before, t0 = ctx.cand.cpu_seconds(), time.perf_counter()
            try:
                reply, dt = self.cand("run", cap=self.run_cap(once_s), slots=slots)
                after, t1 = self.ctx.idle_from, time.perf_counter()  # read right after the reply, by cand()
            finally:
                round_profile = self.finish_audit(sampler) if sampler else None
            self.check_tampering(reply.header.get("tampered"))
            times["cand"] = self.per_call(before, after, dt)
            times["cand_wall"] = dt / sh.k
            self.check_cpu(before, after, t1 - t0)
            described = reply.header.get("outputs")
        self.idle_check("after the call returned")
        if sh.role == "timed":
            ctx.round_times.append((times["cand"], times["eager"]))
        if ctx.gpu:  # device outputs: the candidate copies them to host memory, a step bounded by eager's
            reply, times["cand_publish"] = self.cand("publish")
            eager_reply, times["eager_publish"] = self.twin("publish")
            self.check_described(reply.header.get("outputs"), slots)
        else:  # host outputs: read straight from the candidate's memory, no code of it runs (and the twin's alike)
            self.fetch(described, slots)
            self.fetch_twin(eager_reply.header.get("outputs"), slots)
        self.check_eager(slots)  # first: a broken reference is the harness's failure, never the candidate's
        self.check_outputs(slots)
        if pairs:
            self.check_sensitivity(0, 1)
        self.calls += sh.k
        return times

    def check_sensitivity(self, a: int, b: int) -> None:
        sh = self.shape
        for i, want in enumerate(sh.layout.outputs):
            refs = {name: [sh.arenas[name].array(sh.layout.output_refs(s, name)[i]) for s in (a, b)]
                    for name in ("out", "exp")}
            bad = compare.insensitive(*refs["out"], *refs["exp"], want["dtype"])
            if bad is not None:
                raise CandidateFailure(bad.kind, f"at {sh.sizes or 'the file sizes'}: {bad.message}")
        self.ctx.result.ran("output depends on every part of the input")

    def run_cap(self, once_s: float) -> float:
        """How long one run command may take: generous against eager, unbounded but the budget in the
        interpreter (which is orders of magnitude slower than anything compiled)."""
        if self.ctx.result.interpreted:
            return 3600.0
        return max(5.0, 200 * once_s * self.shape.k)

    def check_tampering(self, names: Any) -> None:
        self.ctx.result.ran("tamper report from the worker")
        if names and not self.ctx.trusted:
            names = [str(n)[:60] for n in names][:8] if isinstance(names, list) else [str(names)[:60]]
            timer = any(n.startswith(("time.", "torch.cuda")) for n in names)
            raise CandidateFailure("patched timer" if timer else "monkeypatch",
                                   f"the program replaced {', '.join(names)} (ineffective: timing and comparison "
                                   f"happen outside its process)")

    def per_call(self, before: float | None, after: float | None, wall: float) -> float:
        """Seconds per call on the chosen clock. CPU time of the whole worker tree (kernel-counted, so no program
        can forge it) is immune to neighbours preempting the pinned core; it is divided by the threads allowed."""
        if self.ctx.clock == "cpu" and before is not None and after is not None:
            return (after - before) / self.ctx.threads / self.shape.k
        return wall / self.shape.k

    def check_cpu(self, before: float | None, after: float | None, wall: float) -> None:
        """CPU seconds of the tree between two reads against the wall time between the same two reads."""
        if before is None or after is None:
            return
        self.ctx.result.ran("CPU seconds within threads x wall time")
        used, allowed = after - before, wall * self.ctx.threads * 1.05 + 0.002
        if used > allowed:
            raise CandidateFailure("extra threads", f"the call used {used * 1e3:.1f} ms of CPU in {wall * 1e3:.1f} ms "
                                                    f"of wall time with {self.ctx.threads} thread(s) allowed")

    def check_described(self, described: Any, slots: list[int]) -> list[list[dict[str, Any]]]:
        """The worker's account of its outputs must match the reference's count, dtypes and shapes."""
        expected_specs = self.shape.layout.outputs
        if not isinstance(described, list) or len(described) != len(slots):
            raise CandidateFailure("protocol", "the worker's description of its outputs is malformed")
        for got in described:
            if not isinstance(got, list) or len(got) != len(expected_specs):
                n = len(got) if isinstance(got, list) else "?"
                raise CandidateFailure("output", f"ModelNew returned {n} output(s), the reference {len(expected_specs)}")
            for item, want in zip(got, expected_specs):
                if not isinstance(item, dict) or item.get("dtype") != want["dtype"] or item.get("shape") != want["shape"]:
                    raise CandidateFailure("output", f"output {str(item)[:120]}, expected dtype {want['dtype']} shape "
                                                     f"{want['shape']}")
        return described

    def fetch(self, described: Any, slots: list[int]) -> None:
        """Copy every output out of the candidate's address space into the driver's buffer."""
        self.outputs_at = self.read_outputs(self.ctx.cand, described, slots, "out")
        self.ctx.result.ran("outputs read from the candidate's memory, no code of it running")

    def fetch_twin(self, described: Any, slots: list[int]) -> None:
        """The same for the eager twin, so both timed processes see the same traffic on their outputs."""
        try:
            self.read_outputs(self.ctx.eager, described, slots, "eager")
        except CandidateFailure as err:
            raise HarnessError("eager twin outputs", str(err)) from None

    def read_outputs(self, worker: Worker, described: Any, slots: list[int], arena: str) -> list[list[int]]:
        sh = self.shape
        outputs_at = []
        for slot, got in zip(slots, self.check_described(described, slots)):
            row = []
            for i, item in enumerate(got):
                ptr, nbytes = item.get("ptr"), item.get("nbytes")
                ref = sh.layout.output_refs(slot, arena)[i]
                want = shm.nbytes(ref)
                if not isinstance(ptr, int) or nbytes != want or item.get("device") != "cpu":
                    raise CandidateFailure("output", f"output {i} of call {slot}: {want} bytes on the cpu expected, "
                                                     f"the worker reports {str(item)[:120]}")
                if want:
                    view = memoryview(sh.arenas[arena].map)[ref["offset"]:ref["offset"] + want]
                    try:
                        worker.read_memory(ptr, view)
                    except WorkerError as err:
                        raise candidate_failure(err) from None
                    finally:
                        view.release()
                row.append(ptr)
            outputs_at.append(row)
        return outputs_at

    def first_mismatch(self, arena: str, slots: list[int]) -> tuple[int, int, np.ndarray, compare.Mismatch] | None:
        """(slot, output index, output, mismatch) of the first output in ``arena`` that differs from the expected."""
        sh = self.shape
        for slot in slots:
            for i, want in enumerate(sh.layout.outputs):
                got = sh.arenas[arena].array(sh.layout.output_refs(slot, arena)[i])
                exp = sh.arenas["exp"].array(sh.layout.output_refs(slot, "exp")[i])
                bad = compare.compare(got, exp, want["dtype"], sh.atol, sh.rtol)
                if bad is not None:
                    return slot, i, got, bad
        return None

    def check_outputs(self, slots: list[int]) -> None:
        sh, result = self.shape, self.ctx.result
        watched = self.ctx.rng.randrange(len(slots))  # re-read after a delay; which one is secret
        snapshot = sh.arenas["out"].array(sh.layout.output_refs(slots[watched], "out")[-1]).copy()
        found = self.first_mismatch("out", slots)
        if found is not None:
            slot, i, got, bad = found
            self.name_replay(bad, got, slot, i)
            raise CandidateFailure(bad.kind, f"call {self.calls + slot + 1} at {sh.sizes or 'the file sizes'}: "
                                             f"{bad.message}", **({"mismatch": bad.details} if bad.details else {}))
        for name in ("every call's output compared", "fresh inputs on every call", "dtype-aware elementwise "
                     "tolerance", "relative error per row and overall", "NaN / constant output",
                     "inputs read-only to the candidate"):
            result.ran(name)
        time.sleep(0.002)
        if self.ctx.gpu:  # the candidate's own host copy
            later = sh.arenas["out"].array(sh.layout.output_refs(slots[watched], "out")[-1])
        else:  # its tensor itself, read again from its memory
            ref = sh.layout.output_refs(slots[watched], "out")[-1]
            buffer = bytearray(shm.nbytes(ref))
            if buffer:
                try:
                    self.ctx.cand.read_memory(self.outputs_at[watched][-1], memoryview(buffer))
                except WorkerError as err:
                    raise candidate_failure(err) from None
            later = np.frombuffer(buffer, dtype=shm.NUMPY[ref["dtype"]]).reshape(ref["shape"])
        self.idle_check("while the outputs were checked")
        result.ran("output unchanged after return")
        if not np.array_equal(later, snapshot, equal_nan=later.dtype.kind == "f"):
            raise CandidateFailure("output changed after return", "an output kept changing after the call returned "
                                                                  "(work finished by a detached thread)")

    def name_replay(self, bad: compare.Mismatch, got: np.ndarray, slot: int, index: int) -> None:
        """A wrong output identical to another call's expected output is named a replay."""
        sh = self.shape
        if bad.kind not in ("mismatch", "partial output"):
            return
        for other in range(sh.k):
            if {slot, other} == {0, 1}:
                continue  # the sensitivity pair: near-identical inputs by design
            if other != slot and np.array_equal(got, sh.arenas["exp"].array(sh.layout.output_refs(other, "exp")[index])):
                bad.kind = "replayed output"
                bad.message = f"the output is the result for another call's inputs (replay / memoisation); {bad.message}"
                return
            if other != slot and np.array_equal(got, sh.arenas["out"].array(sh.layout.output_refs(other, "out")[index])):
                bad.kind = "replayed output"
                bad.message = f"two calls on different inputs returned the same output; {bad.message}"
                return

    def check_eager(self, slots: list[int]) -> None:
        """Every round: torch eager's timed outputs must match the expected ones (computed by the reference on the
        same inputs), or the problem is broken (not deterministic) and no speed-up against it means anything."""
        found = self.first_mismatch("eager", slots)
        if found is not None:
            raise HarnessError("reference", f"the reference is not deterministic (torch eager's timed outputs differ "
                                            f"from the expected ones on the same inputs: {found[3].message})")
        self.ctx.result.ran("reference determinism")

    # -- the compute audit --------------------------------------------------------------------------------------------
    def start_audit(self, expected_s: float) -> audit.Sampler | None:
        if not self.ctx.audit_ok:
            return None
        sampler = audit.Sampler(self.ctx.cand.thread_ids(), self.ctx.cpus, int(max(20e-6, expected_s / 400) * 1e9))
        try:
            sampler.open()
        except OSError:
            return None
        return sampler

    def finish_audit(self, sampler: audit.Sampler) -> audit.Profile:
        sampler.stop()
        samples, lost = sampler.samples()
        prof = audit.profile(samples, lost, sampler.period_ns, self.ctx.trusted_roots, self.ctx.stdlib_roots,
                             self.ctx.kernel_hashes)
        sampler.close()
        if self.ctx.profile is None:
            self.ctx.profile = audit.Profile(prof.period_us)
        self.ctx.profile.merge(prof)
        self.ctx.audited_rounds += 1
        return prof

    # -- phases -------------------------------------------------------------------------------------------------------
    def seeds(self) -> list[int]:
        return [self.ctx.rng.randrange(1, 2**62) for _ in range(self.shape.k)]

    def correctness(self, rounds: int, first_seed: int) -> None:
        for r in range(rounds):
            seeds = [first_seed + i for i in range(self.shape.k)] if r == 0 else self.seeds()
            self.round(seeds, audited=self.shape.role == "timed" and self.ctx.rng.random() < AUDIT_P)

    def ensure_audits(self, minimum: int) -> None:
        """Top the audited rounds up to ``minimum`` (they look like any other round to the candidate)."""
        while self.ctx.audit_ok and self.ctx.audited_rounds < minimum:
            self.round(self.seeds(), audited=True)

    def timing(self, budget_s: float, target_pct: float, min_rounds: int, min_audits: int) -> dict[str, Any]:
        series, start = Series([], []), time.monotonic()
        warmup = self.warm_up()
        while True:
            audited = self.ctx.rng.random() < AUDIT_P
            times = self.round(self.seeds(), audited)
            if not audited:
                series.candidate.append(times["cand"] * 1e6)
                series.eager.append(times["eager"] * 1e6)
                series.candidate_wall.append(times["cand_wall"] * 1e6)
                series.eager_wall.append(times["eager_wall"] * 1e6)
                self.check_gpu_bounds(times)
            if series.converged(target_pct, min_rounds) or time.monotonic() - start > budget_s and \
                    len(series.candidate) >= 3:
                break
        self.ensure_audits(min_audits)
        out = series.summary()
        out.update(rounds=len(series.candidate), converged=series.converged(target_pct, min_rounds),
                   seconds=time.monotonic() - start, slots_per_sample=self.shape.k, clock=self.ctx.clock,
                   warmup_rounds=warmup)
        return out

    def warm_up(self) -> int:
        """Rounds (checked like any, not recorded) until the candidate's and the eager twin's processes stop taking
        page faults: a fresh worker's heap, fragmented by import and compilation, gives fresh pages to its outputs
        for several rounds (softmax at 12 MB: ~6,000 faults and 2.5x the time per run for 6 rounds). The counts are
        the kernel's, read from outside."""
        quiet = 0
        workers = (self.ctx.cand, self.ctx.eager)
        for done in range(1, MAX_WARMUP_ROUNDS + 1):
            before = [w.page_faults() for w in workers]
            self.round(self.seeds(), audited=False)
            after = [w.page_faults() for w in workers]
            if None in before or None in after:
                quiet = WARMUP_ROUNDS  # no counter (weak mode without a pid): the fixed minimum only
            else:  # twice in a row: it can relapse
                calm = all(a - b <= 16 * self.shape.k for a, b in zip(after, before))
                quiet = quiet + 1 if calm else 0
            if done >= WARMUP_ROUNDS and quiet >= 2:
                return done
        return MAX_WARMUP_ROUNDS

    def check_gpu_bounds(self, times: dict[str, float]) -> None:
        """On a GPU the candidate's staging and publishing (outside the clock) must cost what eager's do."""
        if not self.ctx.gpu:
            return
        self.ctx.result.ran("stage/publish time bounded by eager's (GPU)")
        for step in ("stage", "publish"):
            mine, theirs = times[f"cand_{step}"], times[f"eager_{step}"]
            if mine > 3 * theirs + 0.005:
                raise CandidateFailure("work outside calls", f"{step} took {mine * 1e3:.1f} ms against eager's "
                                                             f"{theirs * 1e3:.1f} ms for the same bytes: work hidden "
                                                             f"outside the timed call")
