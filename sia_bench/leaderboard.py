"""Leaderboard tables, from run and baseline records only: Markdown, CSV, PNG plots and one static HTML page.

Runs share a table only when they are comparable: same task and version, same dataset identity, same task model and
same budget class (budget + eval limit). Within a table, a row pools only runs whose *resolved settings* match
(``settings_digest``: everything configured, seeds and outcomes excluded), so two ``h`` runs with different ``-I``
settings are two rows. Arm rows carry instance-level statistics read from the per-sample test files (plain or packed
by ``sia-bench results pack``); the verdict table (``leaderboard_verdicts``) compares arms pairwise on the same test
instances. Output is a pure function of the records: sorted iteration, fixed resampling seeds, no timestamps or
absolute paths, PNGs without software metadata, so regenerating gives byte-identical files.
"""

from __future__ import annotations

import hashlib
import importlib
import json
import math
import re
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any, Iterable, Sequence

import numpy as np

from sia_bench.leaderboard_compute import _num, auc_horizon, compute_auc, compute_unit
from sia_bench.records import RunRecord
from sia_bench.results import ResultsError, read_scores
from sia_bench.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED, Interval, StatsError, arm_interval

GROUP_FIELDS = ("task version", "dataset", "task model", "budget class")
VOLATILE_MODEL_KEYS = {"adapter", "device"}  # where a model ran or which adapter it holds does not change identity
VOLATILE_DATA_KEYS = {"source", "notes"}  # where the data sits on this machine is not its identity (checksums are)
DATA_SHOWN = ("dataset", "checksums", "sizes", "used")
# Record fields that describe one run's outcome or circumstances, not its settings: left out of the settings digest.
PER_RUN_FIELDS = {"schema_version", "run_id", "created_at", "status", "seed", "environment", "controls",
                  "generations", "best_generation", "stop_reason", "final", "ledger"}
ARM_ORDER = ("none", "h", "w", "wh", "bt", "w+h-alternate", "tool-only", "random-search", "best-of-n", "sft")
METRIC_TOLERANCE = 1e-6  # per-sample mean vs the recorded metric: equal means the metric is a per-instance mean


def bootstrap_ci(values: Sequence[float], level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap interval of a few summary values (seed means): the fallback where per-sample
    files are absent. The interval is NaN with fewer than two values."""
    arr = np.asarray([v for v in values if v is not None and not math.isnan(v)], dtype=float)
    if arr.size == 0:
        return math.nan, math.nan, math.nan
    mean = float(arr.mean())
    if arr.size < 2:
        return mean, math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, arr.size, size=(resamples, arr.size))].mean(axis=1)
    lo, hi = np.quantile(means, [(1 - level) / 2, 1 - (1 - level) / 2])
    return mean, float(lo), float(hi)


def _canon(value: Any) -> str:
    return json.dumps(value, sort_keys=True, default=str, ensure_ascii=False)


def _model_identity(info: dict[str, Any] | None) -> dict[str, Any] | None:
    if not info:
        return None
    model = {k: v for k, v in info.items() if k not in VOLATILE_MODEL_KEYS}
    if model.get("checksum"):  # the checksum pins the weights: where the file sits is not identity, and records
        model.pop("parameters", None)  # before a fix counted LoRA in "parameters"
        model.pop("file", None)
    return model


def _data_identity(record: RunRecord) -> dict[str, Any]:
    data = record.task.get("data") or {"options": record.task.get("options", {})}
    return {k: v for k, v in data.items() if k not in VOLATILE_DATA_KEYS}


def group_key(record: RunRecord) -> tuple[tuple[str, str], ...]:
    """What must be equal for two runs to share a table, as (field, canonical value) pairs."""
    return (("task", record.task["name"]), ("task version", str(record.task.get("version"))),
            ("dataset", _canon(_data_identity(record))), ("task model", _canon(_model_identity(
                record.models.get("task")))),
            ("budget class", _canon({**record.budget.model_dump(), "limit": record.limit,
                                       **({"test_limit": record.test_limit} if record.test_limit else {})})))


def resolved_settings(record: RunRecord) -> dict[str, Any]:
    """Everything the run was configured with (improver and its arguments, task options and data, models, budget,
    limit, and any configuration field a newer record adds), without the seed and without outcomes."""
    data = record.model_dump(mode="json")
    settings = {k: v for k, v in data.items() if k not in PER_RUN_FIELDS}
    settings["task"] = {**record.task, "data": _data_identity(record)}
    settings["models"] = {role: _model_identity(info) for role, info in record.models.items()}
    settings["improver"] = {k: v for k, v in record.improver.items() if k != "label"}
    settings.pop("replicate", None)  # the seed and the sources it draws (val subset): what replicates vary
    if isinstance(settings.get("config"), dict):
        settings["config"] = {k: v for k, v in settings["config"].items() if k != "seed"}
    return settings


def settings_digest(record: RunRecord) -> str:
    return hashlib.sha256(_canon(resolved_settings(record)).encode()).hexdigest()[:8]


def describe_field(name: str, canonical: str) -> str:
    """A short human form of one grouping value (tables show these, reasons compare them)."""
    if name in ("task", "task version"):
        return canonical
    value = json.loads(canonical)
    if name == "task model":
        value = value or {}
        extra = ", ".join(f"{k} {value[k]}" for k in ("backend", "revision", "checksum", "dtype", "parameters", "seed")
                          if value.get(k) is not None)
        return f"{value.get('model') or value.get('name', '?')}" + (f" ({extra})" if extra else "")
    if name == "budget class":
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items()) if v is not None)
    shown = {k: v for k, v in value.items() if k in DATA_SHOWN} or value
    return ", ".join(f"{k}={_canon(v) if isinstance(v, (dict, list)) else v}" for k, v in sorted(shown.items()))


@dataclass
class Run:
    """A finished run as the leaderboard sees it: the record, where it was found, and its per-instance test scores
    (None, with the reason in ``test_note``, when there are no usable per-sample files)."""

    record: RunRecord
    where: str  # path relative to the given root's parent: for notes, never absolute
    test: dict[str, float] | None = None
    test_note: str = ""

    @property
    def label(self) -> str:
        label = self.record.improver.get("label") or self.record.improver.get("name", "?")
        feedback = self.record.models.get("feedback")
        return f"{label} · feedback {feedback.get('model') or feedback.get('name')}" if feedback else label

    @cached_property
    def digest(self) -> str:
        return settings_digest(self.record)


@dataclass
class Collected:
    runs: list[Run] = field(default_factory=list)
    baselines: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def collect(roots: Iterable[Path]) -> Collected:
    """Every finished run record and every baseline record under ``roots``; anything unreadable is skipped, named.
    A run found twice (e.g. in ``runs/`` and in a packed ``results/`` folder) counts once."""
    out = Collected()
    seen: set[str] = set()  # resolved paths: a record under two given roots counts once
    runs_seen: dict[str, str] = {}  # record content digest -> where first found
    for root in sorted({Path(r) for r in roots}):
        if not root.exists():
            out.skipped.append(f"{root}: no such folder")
            continue
        candidates = [root] if root.is_file() else sorted(root.rglob("*.json"))
        for path in candidates:
            if str(path.resolve()) in seen:
                continue
            seen.add(str(path.resolve()))
            name = path.relative_to(root.parent).as_posix() if path != root else path.name
            if path.name == "run.json":
                _collect_run(path, name, out, runs_seen)
            elif path.name.startswith("baseline-"):
                try:
                    data = json.loads(path.read_text())
                except (OSError, ValueError) as err:
                    out.skipped.append(f"{name}: unreadable baseline record ({type(err).__name__})")
                    continue
                if isinstance(data, dict) and data.get("kind") == "baseline":
                    out.baselines.append(data)
    out.runs.sort(key=lambda r: (r.record.task["name"], r.label, r.record.seed, r.record.run_id, r.where))
    out.baselines.sort(key=lambda b: (b.get("task", ""), b.get("baseline", ""), _canon(b.get("options"))))
    return out


def _collect_run(path: Path, name: str, out: Collected, runs_seen: dict[str, str]) -> None:
    try:
        record = RunRecord.load(path.parent)
    except Exception as err:
        out.skipped.append(f"{name}: unreadable run record ({type(err).__name__})")
        return
    if record.status != "finished" or not record.final:
        out.skipped.append(f"{name}: run {record.run_id} is {record.status}, not finished")
        return
    identity = hashlib.sha256(_canon(record.model_dump(mode="json")).encode()).hexdigest()  # a copy is equal
    if identity in runs_seen:
        out.skipped.append(f"{name}: the same run as {runs_seen[identity]} (counted once)")
        return
    runs_seen[identity] = name
    run = Run(record, name)
    try:
        run.test = read_scores(path.parent, "final/test")
    except ResultsError as err:
        run.test_note = str(err).replace(str(path.parent), Path(name).parent.as_posix())
    out.runs.append(run)


@dataclass
class Arm:
    """One table row: runs of one arm label with identical resolved settings, one run per seed."""

    name: str
    improver: str
    digest: str
    runs: list[Run]
    scores: np.ndarray | None = None  # seeds x instances, columns in ``instance_ids`` order
    instance_ids: tuple[str, ...] = ()
    note: str = ""  # why instance-level statistics are not available, when they are not

    @property
    def record(self) -> RunRecord:
        return self.runs[0].record


@dataclass
class Group:
    key: tuple[tuple[str, str], ...]
    runs: list[Run]
    baselines: list[dict[str, Any]] = field(default_factory=list)
    reason: str = ""  # why it is not the task's main table; empty for the main one

    @property
    def task(self) -> str:
        return self.key[0][1]

    @property
    def id(self) -> str:
        return hashlib.sha256(_canon(self.key).encode()).hexdigest()[:8]

    @property
    def metric(self) -> str:
        return self.runs[0].record.task["metric"]

    @property
    def higher_is_better(self) -> bool:
        return bool(self.runs[0].record.task.get("higher_is_better", True))

    def settings(self) -> dict[str, str]:
        return {name: describe_field(name, value) for name, value in self.key[1:]}

    @cached_property
    def arms(self) -> list[Arm]:
        """Rows in arm order; a label with several settings digests becomes several rows, named by digest."""
        pooled: dict[tuple[str, str], list[Run]] = {}
        for run in self.runs:
            pooled.setdefault((run.label, run.digest), []).append(run)
        digests: dict[str, set[str]] = {}
        for label, digest in pooled:
            digests.setdefault(label, set()).add(digest)
        arms = []
        for (label, digest), runs in pooled.items():
            runs = sorted(runs, key=lambda r: (r.record.seed, r.record.run_id, r.where))
            name = label if len(digests[label]) == 1 else f"{label} · settings {digest}"
            arms.append(_with_scores(Arm(name, runs[0].record.improver.get("name", "?"), digest, runs), self.metric))
        return sorted(arms, key=lambda a: (_arm_rank(a.improver), a.name))


def _arm_rank(improver: str) -> int:
    return ARM_ORDER.index(improver) if improver in ARM_ORDER else len(ARM_ORDER)


def _with_scores(arm: Arm, metric: str) -> Arm:
    """Fill ``arm.scores`` from the runs' per-sample test files when every run has them, on the same instances, and
    their mean reproduces the recorded metric (else the metric is not a per-instance mean); otherwise say why not."""
    missing = [r for r in arm.runs if r.test is None]
    if missing:
        arm.note = missing[0].test_note or "no per-sample test file"
        return arm
    ids = tuple(arm.runs[0].test)
    if any(tuple(r.test) != ids for r in arm.runs):
        arm.note = "seeds were tested on different instances"
        return arm
    rows = np.array([[r.test[i] for i in ids] for r in arm.runs])
    for run, row in zip(arm.runs, rows):
        recorded = _num(run.record.final.get("test", {}).get(metric))
        if not math.isfinite(recorded) or abs(row.mean() - recorded) > METRIC_TOLERANCE:
            arm.note = f"{metric} is not the mean of the per-sample scores"
            return arm
    arm.scores, arm.instance_ids = rows, ids
    return arm


def group_runs(runs: Sequence[Run], baselines: Sequence[dict[str, Any]] = ()) -> tuple[
        dict[str, list[Group]], list[str]]:
    """Per task, comparable groups (main first), with baselines attached where task, version, options and eval
    limit match; returns the groups and notes about baselines that match no table."""
    by_key: dict[tuple, list[Run]] = {}
    for run in runs:
        by_key.setdefault(group_key(run.record), []).append(run)
    tasks: dict[str, list[Group]] = {}
    for key in sorted(by_key):
        tasks.setdefault(key[0][1], []).append(Group(key, by_key[key]))
    for name, groups in tasks.items():
        groups.sort(key=lambda g: (-len(g.runs), -len({r.label for r in g.runs}), g.key))
        main = groups[0]
        for group in groups[1:]:
            group.reason = "; ".join(
                f"{field_} differs ({describe_field(field_, mine)} vs {describe_field(field_, theirs)})"
                for (field_, mine), (_, theirs) in zip(group.key[1:], main.key[1:]) if mine != theirs)
    notes = []
    for baseline in baselines:
        matched = False
        for group in tasks.get(baseline.get("task", ""), []):
            rec = group.runs[0].record
            if (str(baseline.get("task_version")) == str(rec.task.get("version"))
                    and _canon(baseline.get("options")) == _canon(rec.task.get("options"))
                    and baseline.get("limit") == rec.limit
                    and baseline.get("test_limit") == rec.test_limit):
                group.baselines.append(baseline)
                matched = True
        if not matched:
            notes.append(f"baseline {baseline.get('baseline')} of {baseline.get('task')} (options "
                         f"{_canon(baseline.get('options'))}, limit {baseline.get('limit')}) matches no run table")
    return tasks, notes


def anchors_for(task: str) -> list[dict[str, Any]]:
    """Published numbers from ``baselines/<task>.py:ANCHORS`` (empty when the module or list is absent)."""
    try:
        module = importlib.import_module(f"baselines.{task}")
    except ImportError:
        return []
    return sorted((dict(a) for a in getattr(module, "ANCHORS", []) or []), key=_canon)


_FILE_PATH = re.compile(r"(?<![\w:/.])(?:\.{1,2}/|/)?(?:[\w.-]+/)+[\w.-]+\.(?:md|txt|csv|json|py|toml)\b")


def citation(anchor: dict[str, Any]) -> str:
    """``source, table`` of a published row; a file path is not a citation and a missing table is named (an anchor
    whose table is unknown says ``"table": "not given"``, so the gap is stated in the source file too)."""
    source = str(anchor.get("source") or "").strip()
    if not source:
        return "source not given"
    table = str(anchor.get("table") or "").strip()
    text = source + (f", {table}" if table and table.lower() != "not given" else " (table not given)")
    return text + (" (a file path is not a citation)" if _FILE_PATH.search(source) else "")


# -- rows -------------------------------------------------------------------------------------------------------------
def table_rows(group: Group) -> list[dict[str, Any]]:
    """The rows of one table: arms (instance-level interval on test), baselines, controls, anchors."""
    m = group.metric
    unit = compute_unit(group)
    horizon = auc_horizon(group, unit)
    rows: list[dict[str, Any]] = []
    for arm in group.arms:
        recs = [r.record for r in arm.runs]
        fin = [r.final for r in recs]
        test, test_method = _arm_test(arm, m)
        cpu = sorted({(r.environment.get("hardware") or {}).get("gpu") or
                      (r.environment.get("hardware") or {}).get("cpu") or "?" for r in recs})
        rows.append({
            "kind": "arm", "name": arm.name, "settings": arm.digest, "n": len(recs),
            "seeds": " ".join(str(r.seed) for r in recs), "instances": len(arm.instance_ids) or "",
            "val": _mean_ci([f["val"].get(m, math.nan) for f in fin]),
            "test": test, "test_method": test_method,
            "val_norm": _mean_ci([_num(f.get("val_normalised")) for f in fin]),
            "test_norm": _normalised(test, recs, m) if arm.scores is not None else _mean_ci(
                [_num(f.get("test_normalised")) for f in fin]),
            "compute": _avg(unit.of(r.ledger) for r in recs),
            "auc": _avg(compute_auc(run, unit, horizon) for run in arm.runs),
            "rollouts": _avg(r.ledger.task_rollouts() for r in recs),
            "train_steps": _avg(r.ledger.train_steps for r in recs),
            "feedback_calls": _avg(r.ledger.feedback_calls for r in recs),
            "wall_s": _avg(r.ledger.wall_seconds for r in recs),
            "note": "hardware: " + "; ".join(cpu)})
    for b in sorted(group.baselines, key=lambda b: b.get("baseline", "")):
        rows.append({"kind": "baseline", "name": b.get("baseline", "?"), "n": 1,
                     "val": _single(b.get("val", {}).get(m)), "test": _single(b.get("test", {}).get(m)),
                     "val_norm": _single(b.get("val", {}).get(f"{m}_normalised")),
                     "test_norm": _single(b.get("test", {}).get(f"{m}_normalised")),
                     "note": "classical baseline fitted on train"})
    controls = group.runs[0].record.controls
    for control, norm in (("null", 0.0), ("perfect", 1.0)):
        rows.append({"kind": "control", "name": control, "n": 1,
                     "val": _single(controls.get("val", {}).get(control, {}).get(m)),
                     "test": _single(controls.get("test", {}).get(control, {}).get(m)),
                     "val_norm": _single(norm), "test_norm": _single(norm),
                     "note": f"{control} answer on every instance"})
    for a in anchors_for(group.task):
        if a.get("metric", m) != m:
            continue
        split = a.get("split", "test")
        value = _single(_num(a.get("value")))
        rows.append({"kind": "reported", "name": str(a.get("name") or a.get("source", "published")), "n": "",
                     "val": value if split == "val" else _single(None),
                     "test": value if split != "val" else _single(None), "val_norm": _single(None),
                     "test_norm": _single(None),
                     "note": "REPORTED, not run here: " + "; ".join(
                         [f"{k} {a[k]}" for k in ("model", "hardware") if a.get(k)] + [f"source {citation(a)}"]
                         + ([a["note"]] if a.get("note") else []))})
    return rows


def _arm_test(arm: Arm, metric: str) -> tuple[dict[str, float], str]:
    if arm.scores is None:
        cell = _mean_ci([r.record.final["test"].get(metric, math.nan) for r in arm.runs])
        return cell, f"seed means only ({arm.note})"
    try:
        iv: Interval = arm_interval(arm.scores)
    except StatsError as err:
        return _mean_ci([float(row.mean()) for row in arm.scores]), f"seed means only ({err})"
    return {"mean": iv.estimate, "lo": iv.lo, "hi": iv.hi}, iv.method


def _normalised(cell: dict[str, float], records: Sequence[RunRecord], metric: str) -> dict[str, float]:
    """The test interval mapped through (x - null) / (perfect - null): affine, so the interval maps exactly, when
    every run shares the same test controls (they do when the instances are shared)."""
    controls = {_canon(r.controls.get("test", {})) for r in records}
    if len(controls) != 1:
        return _mean_ci([_num(r.final.get("test_normalised")) for r in records])
    c = records[0].controls.get("test", {})
    null, perfect = _num(c.get("null", {}).get(metric)), _num(c.get("perfect", {}).get(metric))
    if not (math.isfinite(null) and math.isfinite(perfect)) or perfect == null:
        return _single(None)
    ends = sorted((cell[k] - null) / (perfect - null) for k in ("lo", "hi"))
    return {"mean": (cell["mean"] - null) / (perfect - null), "lo": ends[0], "hi": ends[1]}


def _mean_ci(values: Sequence[float]) -> dict[str, float]:
    mean, lo, hi = bootstrap_ci(values)
    return {"mean": mean, "lo": lo, "hi": hi}


def _single(value: Any) -> dict[str, float]:
    return {"mean": _num(value), "lo": math.nan, "hi": math.nan}


def _avg(values: Iterable[float]) -> float:
    vals = [v for v in values if not math.isnan(v)]
    return sum(vals) / len(vals) if vals else math.nan


# -- the whole leaderboard --------------------------------------------------------------------------------------------
@dataclass
class Report:
    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def build_leaderboard(roots: Sequence[Path], out: Path) -> Report:
    """Write ``<task>.md``, ``<task>.csv``, ``<task>-runs.csv``, ``<task>-verdicts.csv``, PNGs, ``README.md`` and
    ``index.html`` to ``out``."""
    from sia_bench.leaderboard_plots import plot_compute, plot_curves  # matplotlib only when plotting
    from sia_bench.leaderboard_render import render_html, render_index, render_markdown, rows_csv, runs_csv
    from sia_bench.leaderboard_verdicts import verdicts, verdicts_csv
    from sia_bench.records import atomic_write_text

    collected = collect(roots)
    tasks, notes = group_runs(collected.runs, collected.baselines)
    report = Report(skipped=collected.skipped + notes)
    if not tasks:
        return report
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    pages: dict[str, dict[str, Any]] = {}
    for task in sorted(tasks):
        groups = tasks[task]
        rows = {g.id: table_rows(g) for g in groups}
        verdict = {g.id: verdicts(g) for g in groups}
        plots: dict[str, dict[str, bytes]] = {}
        for index, group in enumerate(groups):
            plots[group.id] = {"curves": plot_curves(group), "compute": plot_compute(group, rows[group.id])}
            for kind, png in plots[group.id].items():
                path = out / f"{task}-{index}-{kind}.png"
                path.write_bytes(png)
                report.files.append(path)
        pages[task] = {"groups": groups, "rows": rows, "verdicts": verdict, "plots": plots}
        for name, text in ((f"{task}.md", render_markdown(task, groups, rows, verdict)),
                           (f"{task}.csv", rows_csv(groups, rows)), (f"{task}-runs.csv", runs_csv(groups)),
                           (f"{task}-verdicts.csv", verdicts_csv(groups, verdict))):
            atomic_write_text(out / name, text)
            report.files.append(out / name)
    atomic_write_text(out / "README.md", render_index(sorted(tasks), sorted(report.skipped)))
    atomic_write_text(out / "index.html", render_html(pages, sorted(report.skipped)))
    report.files += [out / "README.md", out / "index.html"]
    return report
