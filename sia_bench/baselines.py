"""Running a task's classical baselines (from ``baselines/<task>.py``) through the task's own scorer.

The data notes of the task (skipped rows, dropped cases, encoding fallbacks, label shift) are reported first, so a
number is never read without knowing what it was computed on. Baselines that run the agent (``uses_harness``) get the
starting harness chosen with ``--harness`` / ``-H``; it is recorded with their results.
"""

from __future__ import annotations

import hashlib
import json
import time
from pathlib import Path
from typing import Any, Iterator

from sia_bench.config import HarnessStart
from sia_bench.loop import EVAL_SAMPLE_SEED, build_task, starting_harness
from sia_bench.records import SCHEMA_VERSION, atomic_write_json, environment, now
from sia_bench.registry import BASELINES, UnknownNameError
from sia_bench.task import Baseline, Score, split_limit, subsample


def _table(task_name: str) -> dict[str, Any]:
    try:
        return BASELINES.get(task_name)
    except ModuleNotFoundError:
        return {}


def list_baselines(task_name: str) -> list[tuple[str, str]]:
    return [(name, (getattr(b, "__doc__", "") or "").strip().splitlines()[0] if getattr(b, "__doc__", "") else "")
            for name, b in _table(task_name).items()]


def get_baseline(task_name: str, name: str) -> Baseline:
    table = _table(task_name)
    if name not in table:
        raise UnknownNameError(f"baseline of {task_name}", name, sorted(table))
    entry = table[name]
    return entry() if isinstance(entry, type) else entry


def run_baselines(task_name: str, task_options: dict[str, Any], only: str | None = None,
                  limit: int | None = None, out: Path | None = None,
                  harness: HarnessStart | None = None, test_limit: int | None = None) -> Iterator[str]:
    """Fit each baseline on train, score it on val and test; yields the data notes, then one printable line per
    baseline. With ``out``, each baseline's result is also written as a record the leaderboard reads."""
    notes: list[str] = []
    for row in evaluate_baselines(task_name, task_options, only, limit, harness, notes=notes, test_limit=test_limit):
        while notes:
            yield f"data note: {notes.pop(0)}"
        if out is not None:
            path = write_baseline_record(row, limit, Path(out), test_limit)
            row["record"] = str(path)
        scores = "  ".join(f"{split} " + ", ".join(f"{k}={v:.4f}" for k, v in row[split].items())
                           for split in ("val", "test"))
        yield f"{row['baseline']:<16} {scores}  (fit+predict {row['seconds']:.1f} s)"


def evaluate_baselines(task_name: str, task_options: dict[str, Any], only: str | None = None,
                       limit: int | None = None, harness: HarnessStart | None = None,
                       notes: list[str] | None = None, test_limit: int | None = None) -> Iterator[dict[str, Any]]:
    """One result row per baseline, computed as it is asked for; ``notes`` receives the task's data notes first."""
    task = build_task(task_name, task_options)
    try:
        yield from _evaluate(task, task_name, only, limit, harness or HarnessStart(), notes, test_limit)
    finally:
        task.close()


def _evaluate(task: Any, task_name: str, only: str | None, limit: int | None, start: HarnessStart,
              notes: list[str] | None, test_limit: int | None = None) -> Iterator[dict[str, Any]]:
    names = [only] if only else [n for n, _ in list_baselines(task_name)]
    harness, start = starting_harness(task, start)
    if notes is not None:
        notes.extend(str(n) for n in (task.data_info().get("notes") or []))
    for name in names:
        baseline = get_baseline(task_name, name)
        t0 = time.perf_counter()
        row: dict[str, Any] = {"baseline": name, "task": task.name, "task_version": task.version,
                               "options": task.opts}
        if getattr(baseline, "uses_harness", False):
            baseline.harness = harness
            if not start.is_default:
                row["harness"] = {**start.model_dump(mode="json"), "digest": harness.digest}
        baseline.fit(task)
        for split in ("val", "test"):
            instances = subsample(task.split(split), split_limit(split, limit, test_limit), EVAL_SAMPLE_SEED)
            answers = baseline.predict(task, instances)
            scores: list[Score] = [task.score(i, a) for i, a in zip(instances, answers)]
            metrics = task.aggregate(scores, instances)
            controls = task.control_scores(split, instances)
            metrics[f"{task.metric.name}_normalised"] = task.normalise(metrics[task.metric.name], controls)
            row[split] = metrics
        row["seconds"] = time.perf_counter() - t0
        yield row


def write_baseline_record(row: dict[str, Any], limit: int | None, out: Path, test_limit: int | None = None) -> Path:
    """A versioned JSON record of one baseline result (``kind: baseline``), named by its content."""
    record = {"schema_version": SCHEMA_VERSION, "kind": "baseline", "created_at": now(), "limit": limit,
              **({"test_limit": test_limit} if test_limit else {}), "environment": environment(), **row}
    named = ("task", "task_version", "options", "baseline") + (("harness",) if "harness" in row else ())
    key = json.dumps({k: row[k] for k in named}, sort_keys=True, default=str) + str(limit) + (
        f"/{test_limit}" if test_limit else "")
    path = Path(out) / f"baseline-{row['task']}-{row['baseline']}-{hashlib.sha256(key.encode()).hexdigest()[:8]}.json"
    atomic_write_json(path, record)
    return path
