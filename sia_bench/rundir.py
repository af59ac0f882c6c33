"""Run folders: an exclusive lock for a run's (or an ablation's) life, and opening a folder to start or continue a run.

The lock is ``flock`` on ``<folder>/.lock``: the kernel releases it when its process ends, however it ends, so a lock
left by a killed process is simply free again (taken over) and no staleness has to be guessed. The pid written into
the file only serves the message of whoever is refused.

A run folder is *started* once ``run.json`` exists (it holds the run's configuration). Opening one checks, under the
lock, that it holds the same configuration, that every finished generation's folder is there and readable, and
names the file when something is missing or corrupt: nothing is ever silently restarted.
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
from contextlib import contextmanager
from pathlib import Path
from typing import Callable, Iterator

from sia_bench.config import ConfigError, RunConfig
from sia_bench.records import RecordError, RunRecord, atomic_write_json

LOCK_NAME = ".lock"


class RunDirError(ValueError):
    """A run or ablation folder that cannot be used as asked; the message names the file and the fix."""


class FolderLock:
    """Exclusive, non-blocking lock on ``folder/.lock`` held until :meth:`release` (or process exit)."""

    def __init__(self, folder: Path, what: str = "run"):
        self.folder, self.what = Path(folder), what
        self.fd: int | None = None

    def acquire(self) -> "FolderLock":
        path = self.folder / LOCK_NAME
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 64).decode("ascii", "replace").strip() or "?"
            os.close(fd)
            raise RunDirError(f"{self.folder} is in use by another sia-bench process (pid {holder}); wait for it to "
                              f"finish or stop it, or use another folder for this {self.what}") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self.fd = fd
        return self

    def release(self) -> None:
        if self.fd is not None:
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            os.close(self.fd)
            self.fd = None

    def __enter__(self) -> "FolderLock":
        return self.acquire()

    def __exit__(self, *exc: object) -> None:
        self.release()


def is_started(run_dir: Path) -> bool:
    """Anything of a run here (its record or its configuration)?"""
    return (Path(run_dir) / "run.json").exists() or (Path(run_dir) / "config.json").exists()


def stored_config(run_dir: Path, record: RunRecord | None = None) -> RunConfig:
    """The configuration a run was started with: from ``run.json`` (newer runs) or ``config.json`` (older ones)."""
    run_dir = Path(run_dir)
    if record is None and (run_dir / "run.json").exists():
        record = RunRecord.load(run_dir)
    if record is not None and record.config is not None:
        data = record.config
        source = run_dir / "run.json"
    else:
        source = run_dir / "config.json"
        if not source.exists():
            raise RunDirError(f"{run_dir} is not a sia-bench run folder (no run.json or config.json)")
        try:
            data = json.loads(source.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, ValueError) as err:
            raise RunDirError(f"{source} is unreadable ({type(err).__name__}); the file is truncated or corrupt") \
                from None
    try:
        return RunConfig.from_dict(data)
    except ConfigError as err:
        raise RunDirError(f"{source}: {err}") from None


def check_same_config(run_dir: Path, stored: RunConfig, given: RunConfig) -> None:
    """A folder holding another run (other task, improver, seed, options, ...) is refused, naming what differs."""
    if stored.canonical() != given.canonical():
        differ = stored.differences(given)
        raise RunDirError(f"{run_dir} holds another run ({stored.task} / {stored.improver} / seed {stored.seed}; "
                          f"{', '.join(differ)} differ from this command); use another --run-dir, or continue it "
                          f"with: sia-bench run --resume {run_dir}")


def check_generations(run_dir: Path, record: RunRecord) -> None:
    """Every generation the record counts as finished must still have its folder, record and candidate files."""
    for gen in record.generations:
        folder = run_dir / f"gen_{gen.index:03d}"
        needed = [folder / "generation.json"]
        if gen.candidate is not None:
            needed += [run_dir / gen.candidate.harness_dir / "harness.toml"]
            if gen.candidate.adapter_dir:
                needed.append(run_dir / gen.candidate.adapter_dir)
        for path in needed:
            if not path.exists():
                raise RunDirError(f"{path} is missing: run.json counts generation {gen.index} as finished but its "
                                  f"files are gone; restore them or delete {run_dir} to start over")
    if record.status == "finished" and not (run_dir / "final" / "summary.json").exists():
        raise RunDirError(f"{run_dir / 'final' / 'summary.json'} is missing although run.json says the run finished")


def load_started(run_dir: Path) -> RunRecord:
    """The record of a started run, or a RunDirError naming what is missing or corrupt."""
    if not (run_dir / "run.json").exists():
        raise RunDirError(f"{run_dir / 'run.json'} is missing (config.json is there): the run's record was deleted, "
                          f"so it cannot be continued; delete {run_dir} to start over")
    try:
        return RunRecord.load(run_dir)
    except RecordError as err:
        raise RunDirError(str(err)) from None


def precheck(run_dir: Path, config: RunConfig) -> None:
    """Cheap early refusals (before a model is loaded): the folder is in use, or holds a run of another task,
    improver, seed or option set. :func:`open_run` checks again, in full, under the lock."""
    from sia_bench.config import resolve_run

    run_dir = Path(run_dir)
    if not run_dir.is_dir():
        if run_dir.exists():
            raise RunDirError(f"{run_dir} exists and is not a folder; choose another --run-dir")
        return
    with FolderLock(run_dir):
        pass
    if is_started(run_dir):
        stored = resolve_run(stored_config(run_dir, load_started(run_dir)), check_models=False)
        given = config.model_copy(update={"harness": stored.harness, "model_options": stored.model_options,
                                          "feedback_options": stored.feedback_options})
        check_same_config(run_dir, stored, given)


@contextmanager
def open_run(run_dir: Path, config: RunConfig, fresh: Callable[[], RunRecord],
             canonical: Callable[[RunConfig], RunConfig] = lambda c: c) -> Iterator[RunRecord]:
    """Lock ``run_dir`` for the body and yield its record: the stored one when the run was started (checked against
    ``config`` after ``canonical``, so a stored configuration compares in today's canonical form), else ``fresh()``,
    written as ``run.json`` (with the configuration) and ``config.json``.

    ``fresh()`` runs before the folder exists when it is new, so a failure there (bad data, say) leaves nothing
    behind; a folder this call created is removed again if nothing was written into it.
    """
    run_dir = Path(run_dir)
    record = fresh() if not is_started(run_dir) else None
    created = not run_dir.exists()
    run_dir.mkdir(parents=True, exist_ok=True)
    try:
        with FolderLock(run_dir):
            if is_started(run_dir):
                record = load_started(run_dir)
                check_same_config(run_dir, canonical(stored_config(run_dir, record)), config)
                check_generations(run_dir, record)
            else:
                record = record or fresh()
                record.config = config.to_dict()
                record.save(run_dir)
                atomic_write_json(run_dir / "config.json", record.config)
            yield record
    except BaseException:
        if created and not is_started(run_dir):
            shutil.rmtree(run_dir, ignore_errors=True)
        raise
