"""Where the runs of an ablation execute: in this process, in a local process pool, or as Ray tasks.

Every executor gets the same list of :class:`Job` (one arm x seed, each with its own run directory) and produces the
same thing: finished run directories on disk. A job whose run directory already holds a finished record is skipped;
an unfinished one is continued with :func:`sia_bench.loop.resume`, so an ablation is resumable arm by arm whatever
executed it. Ray is used as-is (one ``@ray.remote`` task per job); there is no scheduler of our own.
"""

from __future__ import annotations

import io
import os
import tarfile
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Protocol, Sequence

POLL_SECONDS = 1.0


@dataclass(frozen=True)
class Job:
    """One arm x seed of an ablation. ``config`` is a :class:`sia_bench.loop.RunConfig` as a dict (picklable)."""

    arm: str
    seed: int
    run_dir: str
    config: dict[str, Any] = field(hash=False, compare=False)
    memo_dir: str | None = field(default=None, hash=False, compare=False)  # shared result memo (sia_bench.memo)

    @property
    def key(self) -> str:
        return f"{self.arm}-s{self.seed}"


@dataclass
class JobResult:
    job: Job
    ok: bool
    skipped: bool = False  # it was already finished on disk
    error: str = ""


class Reporter(Protocol):
    """What executors tell the progress display. ``event`` carries the loop's own events (in-process runs only)."""

    def started(self, job: Job) -> None: ...

    def event(self, job: Job, kind: str, **info: Any) -> None: ...

    def finished(self, result: JobResult) -> None: ...

    def poll(self) -> None: ...


class SilentReporter:
    def started(self, job: Job) -> None: ...

    def event(self, job: Job, kind: str, **info: Any) -> None: ...

    def finished(self, result: JobResult) -> None: ...

    def poll(self) -> None: ...


def run_status(run_dir: Path) -> str:
    """``missing`` (never started), ``running`` (started, not finished; resumable), ``finished``, ``failed``, or
    ``broken`` (files missing or corrupt: continuing it reports which)."""
    from sia_bench.records import RunRecord
    from sia_bench.rundir import is_started

    if not is_started(run_dir):
        return "missing"
    try:
        return RunRecord.load(run_dir).status
    except (FileNotFoundError, ValueError):
        return "broken"


def run_job(job: Job, *, model: Any = None, events: Callable[..., None] | None = None) -> bool:
    """Run or continue one job in this process; True when it was already finished (nothing to do)."""
    from sia_bench.loop import Loop, RunConfig, resume
    from sia_bench.memo import ResultMemo

    run_dir = Path(job.run_dir)
    status = run_status(run_dir)
    if status == "finished":
        return True
    memo = ResultMemo(job.memo_dir) if job.memo_dir else None
    if status == "missing":
        Loop(RunConfig.from_dict(job.config), run_dir, model=model, events=events, memo=memo).run()
    else:  # resume reads the configuration the run was started with (and names what is broken, if anything)
        resume(run_dir, model=model, events=events, memo=memo)
    return False


def _limit_threads(threads: int | None) -> None:
    """Workers sharing the machine each get a slice of the cores instead of all of them (no oversubscription), and
    the same quiet libraries as the command that started them."""
    from sia_bench.progress import quiet_libraries

    quiet_libraries()
    if threads:
        try:
            import torch

            torch.set_num_threads(threads)
        except ImportError:
            pass


def _worker(job: Job, threads: int | None) -> tuple[bool, str]:
    """Entry point of a process-pool or Ray worker: builds its own task and model. Returns (skipped, error)."""
    _limit_threads(threads)
    try:
        return run_job(job), ""
    except (ValueError, OSError, KeyError) as err:  # an expected refusal (broken run folder, bad data): its line
        return False, f"{type(err).__name__}: {err}"
    except Exception:  # a bug: reported with its traceback; the other jobs go on
        return False, traceback.format_exc(limit=8)


def _pack(run_dir: Path) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        tar.add(run_dir, arcname=".")
    return buf.getvalue()


def _unpack(data: bytes, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as tar:
        tar.extractall(run_dir, filter="data")


def _ray_worker(job: Job, threads: int | None, ship: bool) -> tuple[bool, str, bytes | None]:
    """The Ray task body. With ``ship``, the finished run directory comes back packed, for drivers whose disk the
    worker node does not share (a remote cluster); on a shared disk the driver finds the files already there."""
    skipped, error = _worker(job, threads)
    data = _pack(Path(job.run_dir)) if ship and not error and Path(job.run_dir).exists() else None
    return skipped, error, data


class Executor(Protocol):
    def run(self, jobs: Sequence[Job], reporter: Reporter) -> list[JobResult]: ...


class LocalExecutor:
    """``workers == 1``: sequential, in this process, one shared task model (the loop resets its adapter per run).
    ``workers > 1``: a spawn-context process pool; each worker builds its own model."""

    def __init__(self, workers: int = 1, shared_model: Any = None):
        if workers < 1:
            raise ValueError("--workers must be at least 1")
        self.workers, self.shared_model = workers, shared_model

    def run(self, jobs: Sequence[Job], reporter: Reporter) -> list[JobResult]:
        if self.workers == 1:
            return [self._in_process(job, reporter) for job in jobs]
        return self._pool(jobs, reporter)

    def _in_process(self, job: Job, reporter: Reporter) -> JobResult:
        reporter.started(job)
        try:
            skipped = run_job(job, model=self._model_for(job), events=lambda kind, **info: reporter.event(
                job, kind, **info))
            result = JobResult(job, ok=True, skipped=skipped)
        except (ValueError, OSError, KeyError) as err:  # an expected refusal: its one line is the report
            result = JobResult(job, ok=False, error=f"{type(err).__name__}: {err}")
        except Exception:
            result = JobResult(job, ok=False, error=traceback.format_exc(limit=8))
        reporter.finished(result)
        return result

    def _model_for(self, job: Job) -> Any:
        """Build the task model once, for the first job that needs one, and reuse it for jobs of the same spec."""
        spec = (job.config.get("model"), repr(sorted(job.config.get("model_options", {}).items())))
        if run_status(Path(job.run_dir)) == "finished":
            return None  # nothing to run: do not pay for a model load
        if self.shared_model is None or getattr(self, "_model_spec", spec) != spec:
            from sia_bench.models import build_model

            self.shared_model = build_model(job.config.get("model", "hf"), **job.config.get("model_options", {}))
            self._model_spec = spec
        return self.shared_model

    def _pool(self, jobs: Sequence[Job], reporter: Reporter) -> list[JobResult]:
        import multiprocessing
        from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

        threads = max(1, (os.cpu_count() or 1) // self.workers)
        results: dict[Job, JobResult] = {}
        with ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
            pending = {}
            for job in jobs:
                pending[pool.submit(_worker, job, threads)] = job
                reporter.started(job)
            while pending:
                done, _ = wait(pending, timeout=POLL_SECONDS, return_when=FIRST_COMPLETED)
                reporter.poll()
                for fut in done:
                    job = pending.pop(fut)
                    try:
                        skipped, error = fut.result()
                    except Exception:  # the worker process itself died (killed, out of memory)
                        skipped, error = False, traceback.format_exc(limit=4)
                    results[job] = JobResult(job, ok=not error, skipped=skipped, error=error)
                    reporter.finished(results[job])
        return [results[j] for j in jobs]


class RayExecutor:
    """One Ray task per job, on a fresh local Ray instance (``num_cpus=workers``) or an existing cluster (``address``).

    On a cluster the workers need sia-bench installed and the task data present; finished run directories are
    shipped back to the driver when its disk does not already hold them.
    """

    def __init__(self, workers: int | None = None, address: str | None = None, cpus_per_run: float = 1.0):
        self.workers, self.address, self.cpus_per_run = workers, address, cpus_per_run

    def run(self, jobs: Sequence[Job], reporter: Reporter) -> list[JobResult]:
        try:
            import ray
        except ImportError:
            raise ValueError("--executor ray needs Ray: pip install 'sia-bench[distributed]'") from None
        started_here = not ray.is_initialized()
        if started_here:
            if self.address:
                ray.init(address=self.address, logging_level="warning", log_to_driver=False)
            else:
                ray.init(num_cpus=self.workers or os.cpu_count(), include_dashboard=False, logging_level="warning",
                         log_to_driver=False, object_store_memory=200 * 2**20)
        try:
            return self._run(ray, jobs, reporter)
        finally:
            if started_here:
                ray.shutdown()

    def _run(self, ray: Any, jobs: Sequence[Job], reporter: Reporter) -> list[JobResult]:
        remote = ray.remote(num_cpus=self.cpus_per_run, max_retries=0)(_ray_worker)
        total = int(ray.cluster_resources().get("CPU", 1))
        threads = max(1, int(self.cpus_per_run)) if self.address else max(1, total // max(1, min(total, len(jobs))))
        ship = bool(self.address)
        pending = {}
        for job in jobs:
            pending[remote.remote(job, threads, ship)] = job
            reporter.started(job)
        results: dict[Job, JobResult] = {}
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS)
            reporter.poll()
            for ref in done:
                job = pending.pop(ref)
                try:
                    skipped, error, data = ray.get(ref)
                    if data is not None and run_status(Path(job.run_dir)) != "finished":
                        _unpack(data, Path(job.run_dir))
                except Exception:  # the task or its worker died
                    skipped, error = False, traceback.format_exc(limit=4)
                results[job] = JobResult(job, ok=not error, skipped=skipped, error=error)
                reporter.finished(results[job])
        return [results[j] for j in jobs]


def make_executor(kind: str, workers: int = 1, address: str | None = None) -> Executor:
    if kind == "local":
        if address:
            raise ValueError("--address is for --executor ray")
        return LocalExecutor(workers)
    if kind == "ray":
        return RayExecutor(workers, address)
    raise ValueError(f"unknown executor {kind!r}; choose local or ray")
