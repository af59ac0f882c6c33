"""The trusted driver: scores one candidate program against one problem without ever sharing an interpreter with it.

Trusted (here, in the harness process, or in the reference worker's sandbox, which no candidate reaches): the problem
file and its reference ``Model``, the input generator, the expected outputs, the comparison, the clock, the builder
and its cache, the cgroup counters and the compute audit. Untrusted: everything in the candidate worker, including
this project's own worker code once the candidate is imported there. The candidate is driven through a narrow
interface (load, init, run K calls, publish outputs) over pipes and shared buffers the driver owns.
"""

from __future__ import annotations

import hashlib
import math
import os
import random
import secrets
import statistics
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from sia_bench.sandbox.boundary import python_paths

from . import audit, sizing
from .builder import Builder, BuildError
from .checks import static_check
from .compare import default_tolerance
from .problem_set import Problem
from .record import CandidateFailure, HarnessError, KernelResult
from .rounds import FALLBACK_RATIO, GLUE_ALLOWANCE_S, Context, Shape, ShapeRun, candidate_failure, judge_idle
from .shm import NUMPY, Arena, Layout
from .timing import geomean
from .workers import WarmPool, Worker, WorkerConfig, WorkerError

MAX_COMPILE_REQUESTS = 8
EXTRA_THREAD_SHARE = 0.05  # of sampled time outside the allowed busiest threads (honest: none; hacks: 27-30%)
# torch eager as a program: the eager twin runs it (and the perfect control of problems with no hand-written kernel)
EAGER_PROGRAM = """from reference_problem import Model


class ModelNew(Model):
    \"\"\"The reference itself, run as the candidate: torch eager.\"\"\"
"""


def llc_bytes() -> int:
    """The largest cache of CPU 0 (what a flush must exceed); 32 MiB when the system does not say."""
    sizes = []
    for entry in Path("/sys/devices/system/cpu/cpu0/cache").glob("index*/size"):
        text = entry.read_text().strip().upper()
        mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
        try:
            sizes.append(int(text.rstrip("KMG")) * mult)
        except ValueError:
            continue
    return max(sizes, default=32 << 20)


@dataclass(frozen=True)
class DriverOptions:
    backend: str = "cpu"
    mode: str = "bwrap"
    threads: int = 1
    preset: str = "auto"  # auto | cpu | gpu
    trials: int = 3  # correctness rounds per timed shape, each with fresh inputs in every slot
    time: bool = True
    timing_budget_s: float = 6.0  # per timed shape
    target_ci_pct: float = 1.0
    min_rounds: int = 10
    sample_ms: float = 10.0  # eager time one sample aims at (K calls)
    max_slots: int = 64
    arena_mb: float = 256.0
    timeout_s: float = 180.0  # per candidate, compilation included
    memory_mb: int | None = 4096
    audit: bool = True
    min_audits: int = 3
    budget: sizing.SizeBudget = field(default_factory=sizing.SizeBudget)
    cache_dir: Path = Path.home() / ".cache" / "sia-bench" / "kernels"


class Driver:
    """One per task: the persistent reference worker, the warm candidate pool and the builder."""

    def __init__(self, options: DriverOptions):
        self.opts = options
        self.builder = Builder(options.cache_dir, options.mode)
        self.pool = WarmPool()
        self._ref: Worker | None = None
        self._loaded: tuple[str, str] | None = None
        self._defaults: dict[str, dict[str, int]] = {}
        self._policies: dict[str, sizing.SizePolicy] = {}
        n, t = os.cpu_count() or 1, options.threads
        self.cpus = tuple(range(n - t, n)) if t < n else tuple(range(n))
        self.spare_cpus = tuple(c for c in range(n) if c not in self.cpus) or self.cpus
        self.audit_reason = (audit.unavailable() if options.audit else "switched off (-T audit=false)")
        self.flush_bytes = max(64 << 20, 2 * llc_bytes())
        py = python_paths()
        self.trusted_roots = tuple(p.rstrip("/") + "/" for p in py["site"])
        self.stdlib_roots = tuple(p.rstrip("/") + "/" for p in py["base"])

    # -- workers ---------------------------------------------------------------------------------------------------
    def reference(self) -> Worker:
        if self._ref is not None and not self._ref.alive():
            self._ref.close()
            self._ref = None
        if self._ref is None:
            gpu = self.opts.backend != "cpu" and _gpu_present()
            config = WorkerConfig("reference", self.opts.backend, self.opts.threads, self.cpus, self.opts.mode, gpu,
                                  None if gpu else max(self.opts.memory_mb or 0, 8192))
            try:
                self._ref = Worker(config)
                self._ref.wait_ready(300)
            except (WorkerError, OSError) as err:
                self._ref = None
                raise HarnessError("reference start", str(err)) from None
            self._loaded = None
            self.builder.gpu_arch = self._ref.info.get("gpu_arch") or self.builder.gpu_arch
        return self._ref

    @property
    def gpu(self) -> bool:
        return bool(self.reference().info.get("gpu"))

    def candidate_config(self) -> WorkerConfig:
        gpu = self.opts.backend != "cpu" and self.gpu
        return WorkerConfig("candidate", self.opts.backend, self.opts.threads, self.spare_cpus, self.opts.mode, gpu,
                            None if gpu else self.opts.memory_mb)

    def prewarm(self) -> None:
        """Start the candidate's and the eager twin's workers now (interpreter and torch import on the spare cores)."""
        self.pool.refill(self.candidate_config())

    def close(self) -> None:
        self.pool.close()
        if self._ref is not None:
            self._ref.close()
            self._ref = None

    # -- problems and sizes ----------------------------------------------------------------------------------------
    def load_problem(self, problem: Problem) -> dict[str, int]:
        key = (problem.name, hashlib.sha256(problem.source.encode()).hexdigest())
        ref = self.reference()
        if self._loaded != key:
            try:
                reply, _ = ref.request({"cmd": "problem", "source": problem.source}, timeout=300)
            except WorkerError as err:
                raise HarnessError("problem import", str(err), err.log) from None
            self._defaults[problem.name] = dict(reply.header["int_globals"])
            self._loaded = key
        return self._defaults[problem.name]

    def preset(self) -> str:
        if self.opts.preset != "auto":
            return self.opts.preset
        return "gpu" if self.opts.backend != "cpu" and self.gpu else "cpu"

    def size_policy(self, problem: Problem) -> sizing.SizePolicy:
        if problem.name in self._policies:
            return self._policies[problem.name]
        defaults = self.load_problem(problem)
        preset = self.preset()
        if problem.sizes.get(preset):
            policy = sizing.from_preset(preset, problem.sizes[preset], defaults)
        elif preset == "gpu":
            policy = sizing.SizePolicy("file", [{}], sizing.check_candidates({}, defaults))
        else:
            def probe(values: dict[str, Any], real: bool) -> dict[str, Any] | None:
                try:
                    self.load_problem(problem)
                    reply, _ = self.reference().request({"cmd": "probe", "globals": values, "allow_real": real},
                                                        timeout=300)
                    return reply.header
                except (WorkerError, HarnessError):
                    return None
            try:
                policy = sizing.choose(defaults, probe, self.opts.budget)
            except ValueError as err:
                raise HarnessError("size policy", f"{problem.name}: {err}") from None
        self._policies[problem.name] = policy
        return policy

    def prepare(self, problem: Problem, sizes: dict[str, Any], seed: int, role: str, timed: bool = True,
                interpreted: bool = False) -> Shape:
        """The reference at these sizes, and shared buffers for K slots; every failure here is the harness's."""
        self.load_problem(problem)
        ref = self.reference()
        try:
            reply, _ = ref.request({"cmd": "prepare", "globals": sizes, "seed": seed}, timeout=600)
        except WorkerError as err:
            raise HarnessError("reference prepare", str(err), err.log) from None
        spec, weights = reply.header, list(reply.arrays)
        for item in spec["inputs"] + spec["outputs"]:
            if "value" not in item and item["dtype"] not in NUMPY:
                raise HarnessError("reference prepare", f"dtype {item['dtype']} cannot be shared")
        per_slot = Layout.slot_bytes(spec["inputs"], spec["outputs"]) + 2 * Layout.slot_bytes([], spec["outputs"])
        k_mem = int(self.opts.arena_mb * 2**20 // max(per_slot, 1))
        want = self.slots_for(sizes, float(spec["eager_once_s"])) if role == "timed" and timed else 2
        # Two at least, for the sensitivity pair in every round; one in the Triton interpreter (seconds a call).
        k = 1 if interpreted else max(1, min(max(2, want), k_mem, self.opts.max_slots))
        layout = Layout(spec["inputs"], spec["outputs"], k)
        arenas: dict[str, Arena] = {}
        try:
            arenas = {"in": Arena("in", layout.in_bytes), "exp": Arena("exp", layout.out_bytes),
                      "out": Arena("out", layout.out_bytes), "eager": Arena("eager", layout.out_bytes)}
            ref.send_arenas([(arenas["in"], True), (arenas["exp"], True)])
            arenas["in"].seal(True)
            arenas["exp"].seal(True)
            arenas["out"].seal(False)
            arenas["eager"].seal(False)
            ref.request({"cmd": "layout", "slots": [{"inputs": layout.input_refs(s, "in"),
                                                     "expected": layout.output_refs(s, "exp")} for s in range(k)]})
        except (OSError, WorkerError) as err:
            for arena in arenas.values():
                arena.close()
            raise HarnessError("shared buffers", str(err)) from None
        dtype = spec["outputs"][0]["dtype"]
        atol = problem.atol if problem.atol is not None else default_tolerance(dtype)
        rtol = problem.rtol if problem.rtol is not None else default_tolerance(dtype)
        return Shape(sizes, spec, weights, layout, arenas, atol, rtol, role)

    def slots_for(self, sizes: dict[str, Any], measured_s: float) -> int:
        """Calls per timing sample, a power of two so that a sample is about ``sample_ms`` of eager work. From the
        meta-device cost estimate (the same in every run: K changes what is cached and how much per-command overhead
        is amortised, so a K that wandered with a noisy measurement moved speed-ups by 15%); the measured time of
        one eager call only where the problem cannot run on meta."""
        est_s = measured_s
        if not (self.opts.backend != "cpu" and self.gpu):  # a GPU: the synchronised measurement; CPU rates mean nothing
            try:
                reply, _ = self.reference().request({"cmd": "probe", "globals": sizes, "allow_real": False},
                                                    timeout=300)
                if reply.header.get("method") == "meta":
                    est_s = self.opts.budget.estimate_ms(reply.header) / 1e3
            except WorkerError:
                pass
        want = max(1.0, self.opts.sample_ms / 1e3 / max(est_s, 1e-7))
        return 1 << int(math.floor(math.log2(want)))

    # -- scoring ---------------------------------------------------------------------------------------------------
    def score(self, problem: Problem, program: str, *, seed: int, cpp_flags: str = "", nvcc_flags: str = "-O3",
              source: str = "model", trusted: bool = False) -> KernelResult:
        start = time.monotonic()
        res = KernelResult(problem.name, self.opts.backend, self.opts.mode, program_source=source,
                           seeds={"instance": seed, "later_rounds": "secret random per scoring"})
        res.ran("static: syntax and ModelNew")
        findings = static_check(program)
        if trusted:
            findings = [f for f in findings if f.kind in ("syntax", "format")]
        else:
            res.ran("static: torch/vendor calls, streams, timers, imports")
        if findings:
            for f in findings[:10]:
                res.fail(f.kind, str(f))
            return res
        try:
            ref = self.reference()
            res.device = str(ref.info.get("gpu_name") or ref.info.get("device"))
            policy = self.size_policy(problem)
            res.size_policy = policy.to_dict()
        except HarnessError as err:
            res.harness_error(err.stage, str(err), err.log)
            return res
        config = self.candidate_config()
        workers: list[Worker] = []
        try:
            for _ in range(2):  # the candidate's, and its eager twin's: the same sandbox, code path and freshness
                workers.append(self.pool.take(config))
        except (WorkerError, OSError) as err:
            for worker in workers:
                worker.close()
            res.harness_error("candidate worker start", str(err))
            return res
        cand, eager = workers
        res.overhead_s["start"] = time.monotonic() - start
        pinned = cand.pin(self.cpus)
        eager.pin(self.cpus)
        if pinned == "cgroup cpuset":
            res.ran("threads pinned (cgroup cpuset)")
        else:
            res.notes.append(f"threads pinned by {pinned}")
        res.ran("separate processes (reference, inputs, comparison, clock outside the candidate)")
        ctx = Context(ref, cand, eager, res, self.opts.threads, list(self.cpus), self.flush_bytes,
                      time.monotonic() + self.opts.timeout_s, random.Random(secrets.randbits(64)), trusted,
                      config.gpu, self.audit_reason is None and not (self.opts.backend == "triton" and not config.gpu),
                      "wall" if config.gpu or cand.cpu_seconds() is None else "cpu", self.trusted_roots,
                      self.stdlib_roots)
        if self.audit_reason:
            res.notes.append(f"compute audit unavailable: {self.audit_reason}")
        try:
            self._run(problem, policy, program, cpp_flags, nvcc_flags, seed, ctx, trusted)
        except CandidateFailure as err:
            res.fail(err.kind, str(err), **err.extra)
        except HarnessError as err:
            res.harness_error(err.stage, str(err), err.log)
        finally:
            t = time.monotonic()
            cand.close()
            eager.close()
            res.overhead_s["teardown"] = time.monotonic() - t
            res.overhead_s["total"] = time.monotonic() - start
            self.pool.refill(config)  # the next worker starts now, between scorings, never during a timed phase
        return res

    def _run(self, problem: Problem, policy: sizing.SizePolicy, program: str, cpp_flags: str, nvcc_flags: str,
             seed: int, ctx: Context, trusted: bool) -> None:
        res, opts = ctx.result, self.opts
        t = time.monotonic()
        self._load(ctx, program, cpp_flags, nvcc_flags, trusted, problem)
        res.compiled = True
        res.overhead_s["load"] = time.monotonic() - t
        if opts.backend == "cuda" and not ctx.gpu:
            raise CandidateFailure("not executed", "no GPU here: the CUDA source was compiled and statically "
                                                   "checked, never executed")
        res.interpreted = opts.backend == "triton" and not ctx.gpu
        timing = opts.time and not res.interpreted
        for index, sizes in enumerate(policy.shapes):
            shape = self.prepare(problem, sizes, seed + index, "timed", timing, res.interpreted)
            try:
                run = self._start_shape(ctx, shape, seed + index)
                t = time.monotonic()
                run.correctness(opts.trials, seed * 7919 + 1000 * index)
                res.executed = True
                # Best-effort, and ~3 s in a fresh worker (its first use imports ~900 torch modules): only where
                # the trusted audit cannot see the compute (GPU work, or no perf events here).
                if not trusted and not res.interpreted and index == 0 and (ctx.gpu or not ctx.audit_ok):
                    res.ran("dispatch trace in the worker")
                    ops = run.cand("trace", slot=0)[0].header.get("ops") or []
                    if ops:
                        raise CandidateFailure("torch fallback", f"ModelNew.forward ran torch compute ops: "
                                                                 f"{', '.join(map(str, ops[:8]))}")
                entry: dict[str, Any] = {"sizes": sizes, "role": "timed", "slots": shape.k}
                res.overhead_s["correctness"] = res.overhead_s.get("correctness", 0) + time.monotonic() - t
                last = index == len(policy.shapes) - 1
                if timing:
                    self.pool.settle()
                    t = time.monotonic()
                    entry["timing"] = run.timing(opts.timing_budget_s, opts.target_ci_pct, opts.min_rounds,
                                                 opts.min_audits if last else 0)
                    res.overhead_s["timing"] = res.overhead_s.get("timing", 0) + time.monotonic() - t
                elif last:
                    run.ensure_audits(opts.min_audits)
                entry["calls_checked"] = run.calls
                res.shapes.append(entry)
            finally:
                shape.close()
        t = time.monotonic()
        self._check_shape(problem, policy, seed, ctx)
        res.overhead_s["second_shape"] = time.monotonic() - t
        judge_idle(ctx)
        self._judge_audit(ctx, trusted)
        res.correct = True
        timed = [s["timing"] for s in res.shapes if s.get("timing")]
        if timing and timed:
            res.candidate_us = geomean([t["candidate"]["median_us"] for t in timed])
            res.eager_us = geomean([t["eager"]["median_us"] for t in timed])
            res.speedup = res.eager_us / res.candidate_us
            res.timed = True

    def _start_shape(self, ctx: Context, shape: Shape, seed: int) -> ShapeRun:
        run = ShapeRun(ctx, shape)
        run.send_arenas()
        reply, _ = run.cand("init", arrays=shape.weights, init_inputs=shape.spec["init_inputs"], seed=seed,
                            weights=shape.spec["weights"])
        skipped = reply.header.get("skipped") or []
        if skipped:
            ctx.result.notes.append(f"weights not copied (no parameter of that name and shape): {skipped[:5]}")
        run.cand("layout", slots=[{"inputs": shape.layout.input_refs(s, "in"),
                                   "outputs": shape.layout.output_refs(s, "out") if ctx.gpu else []}
                                  for s in range(shape.k)])
        run.start_twin(seed)
        return run

    def _check_shape(self, problem: Problem, policy: sizing.SizePolicy, seed: int, ctx: Context) -> None:
        """Correctness at a second shape (the first of the policy's candidates the reference can run)."""
        if len(policy.shapes) > 1:
            ctx.result.ran("second shape")
            return
        for sizes in policy.check_shapes:
            try:
                shape = self.prepare(problem, sizes, seed + 100, "check", interpreted=ctx.result.interpreted)
            except HarnessError as err:
                ctx.result.notes.append(f"check shape {sizes} skipped: the reference failed there ({err})")
                continue
            try:
                run = self._start_shape(ctx, shape, seed + 100)
                run.correctness(max(2, self.opts.trials - 1), seed * 7919 + 500)
                ctx.result.shapes.append({"sizes": sizes, "role": "check", "slots": shape.k,
                                          "calls_checked": run.calls})
                ctx.result.ran("second shape")
            finally:
                shape.close()
            return
        ctx.result.notes.append("no second shape: the problem has no size-like globals to vary")

    def _load(self, ctx: Context, program: str, cpp_flags: str, nvcc_flags: str, trusted: bool,
              problem: Problem) -> None:
        backend, requests = self.opts.backend, [0]
        ctx.result.ran("compile flags allow-list")

        def on_compile(header: dict[str, Any]) -> tuple[dict[str, Any], list]:
            requests[0] += 1
            tag = header.get("tag")
            if requests[0] > MAX_COMPILE_REQUESTS:
                return {"cmd": "artifact", "ok": False, "message": f"more than {MAX_COMPILE_REQUESTS} compilations"}, []
            if tag != {"cpu": "cpu", "cuda": "cuda"}.get(backend):
                return {"cmd": "artifact", "ok": False, "message": f"{tag!r} kernels are not built for the {backend} "
                                                                   f"backend"}, []
            try:
                art = self.builder.build(str(tag), header.get("source"), str(header.get("flags", "")))
            except BuildError as err:
                return {"cmd": "artifact", "ok": False, "message": str(err), "log": err.log}, []
            ctx.kernel_hashes[hashlib.sha256(art.data).hexdigest()] = len(art.data)
            ctx.result.compile_stats["cache_hits" if art.cache_hit else "compiles"] = \
                ctx.result.compile_stats.get("cache_hits" if art.cache_hit else "compiles", 0) + 1
            return {"cmd": "artifact", "ok": True, "cache_hit": art.cache_hit, "file": art.file_name}, \
                [np.frombuffer(art.data, dtype=np.uint8)]

        try:  # the eager twin: torch eager, loaded and run through the candidate's own worker code
            ctx.eager.request({"cmd": "load", "program": EAGER_PROGRAM, "cpp_flags": "", "nvcc_flags": "-O3",
                               "support": {"reference_problem.py": problem.source}}, timeout=300)
        except WorkerError as err:
            raise HarnessError("eager twin load", str(err), err.log) from None
        header = {"cmd": "load", "program": program, "cpp_flags": cpp_flags, "nvcc_flags": nvcc_flags}
        if trusted:  # baselines (torch eager, torch.compile) subclass the reference Model
            header["support"] = {"reference_problem.py": problem.source}
        try:
            ctx.cand.request(header, timeout=max(1.0, ctx.deadline - time.monotonic()), on_compile=on_compile)
        except WorkerError as err:
            raise candidate_failure(err) from None
        ctx.idle_from = ctx.cand.cpu_seconds()  # from here on, the program may only work inside commands

    def _judge_audit(self, ctx: Context, trusted: bool) -> None:
        prof, res = ctx.profile, ctx.result
        if prof is None or prof.total == 0:
            return
        res.audit = prof.to_dict()
        res.ran("compute audit (sampled instruction pointers)")
        extra = prof.outside_busiest(ctx.threads)
        if extra >= 5 and extra >= EXTRA_THREAD_SHARE * prof.total:
            raise CandidateFailure("extra threads", f"{100 * extra / prof.total:.0f}% of the sampled CPU time ran in "
                                                    f"threads beyond the {ctx.threads} allowed ({len(prof.threads)} "
                                                    f"threads in all; they share the pinned cores, so they cannot help)")
        if trusted:
            return
        libs = ", ".join(f"{k} {v}" for k, v in prof.libraries.most_common(4))
        cand = statistics.median(t[0] for t in ctx.round_times) if ctx.round_times else 0.0
        eager = statistics.median(t[1] for t in ctx.round_times) if ctx.round_times else 0.0
        allowance = min(GLUE_ALLOWANCE_S, eager / 2)
        ratios = {c: max(0.0, prof.share(c) * cand - allowance) / eager if eager > 0 else prof.share(c)
                  for c in ("compute_library", "unbuilt_native")}
        res.audit["vs_eager"] = {c: round(r, 4) for c, r in ratios.items()}
        # A category's time per call (its share of the sampled time x the program's median time per call) against
        # eager's median, not against the program's own time (a fallback padded with busy work is not diluted),
        # after a small allowance per call for the allocation and dispatch every program does in libtorch (so tiny
        # problems, where that glue is most of a call, are not flagged). Medians over the rounds, not the audited
        # rounds' own times: a round slowed by a neighbour (cache, memory bandwidth) does not inflate an honest
        # program's glue into a fallback (an honest softmax measured 1.9-3.7x eager that way on a loaded 2-core
        # machine, 0.07-0.09x this way).
        if ratios["compute_library"] >= FALLBACK_RATIO and prof.categories["compute_library"] >= 8:
            raise CandidateFailure("torch fallback", f"the program spent {100 * ratios['compute_library']:.0f}% of "
                                                     f"torch eager's time per call in torch/numpy/BLAS or other library "
                                                     f"compute, not in its compiled kernel (samples: {libs})")
        if ratios["unbuilt_native"] >= FALLBACK_RATIO and prof.categories["unbuilt_native"] >= 8:
            raise CandidateFailure("unbuilt native code", f"the program spent {100 * ratios['unbuilt_native']:.0f}% of "
                                                          f"eager's time per call in native code the builder did not "
                                                          f"make (JIT or a library it loaded itself: {libs})")


def _gpu_present() -> bool:
    return any(Path("/dev").glob("nvidia[0-9]*"))
