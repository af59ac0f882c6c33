"""Leaderboard tables, from run and baseline records only: Markdown, CSV, PNG plots and one static HTML page.

Runs share a table only when they are comparable: same task and version, same dataset identity, same task model and
same budget class (budget + eval limit). Per task the largest comparable group is the main table; every other group
gets its own table with the reason it stands apart. Output is a pure function of the records: sorted iteration, a
fixed bootstrap seed, no timestamps or absolute paths, PNGs without software metadata, so regenerating gives
byte-identical files.
"""

from __future__ import annotations

import csv
import hashlib
import importlib
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterable, Sequence

from sia_bench.records import RunRecord

BOOTSTRAP_SEED = 0
BOOTSTRAP_RESAMPLES = 10_000
GROUP_FIELDS = ("task version", "dataset", "task model", "budget class")
VOLATILE_MODEL_KEYS = {"adapter", "device"}  # where a model ran or which adapter it holds does not change identity
VOLATILE_DATA_KEYS = {"source", "notes"}  # where the data sits on this machine is not its identity (checksums are)
DATA_SHOWN = ("dataset", "checksums", "sizes", "used")


def bootstrap_ci(values: Sequence[float], level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                 seed: int = BOOTSTRAP_SEED) -> tuple[float, float, float]:
    """Mean and percentile-bootstrap interval of the mean; the interval is NaN with fewer than two values."""
    import numpy as np

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


def group_key(record: RunRecord) -> tuple[tuple[str, str], ...]:
    """What must be equal for two runs to share a table, as (field, canonical value) pairs."""
    model = {k: v for k, v in (record.models.get("task") or {}).items() if k not in VOLATILE_MODEL_KEYS}
    if model.get("checksum"):  # the checksum pins the weights; records before a fix counted LoRA in "parameters"
        model.pop("parameters", None)
    data = {k: v for k, v in (record.task.get("data") or {"options": record.task.get("options", {})}).items()
            if k not in VOLATILE_DATA_KEYS}
    return (("task", record.task["name"]), ("task version", str(record.task.get("version"))),
            ("dataset", _canon(data)), ("task model", _canon(model)),
            ("budget class", _canon({**record.budget.model_dump(), "limit": record.limit})))


def describe_field(name: str, canonical: str) -> str:
    """A short human form of one grouping value (tables show these, reasons compare them)."""
    if name in ("task", "task version"):
        return canonical
    value = json.loads(canonical)
    if name == "task model":
        extra = ", ".join(f"{k} {value[k]}" for k in ("backend", "revision", "checksum", "dtype", "parameters", "seed")
                          if value.get(k) is not None)
        return f"{value.get('model') or value.get('name', '?')}" + (f" ({extra})" if extra else "")
    if name == "budget class":
        return ", ".join(f"{k}={v}" for k, v in sorted(value.items()) if v is not None)
    shown = {k: v for k, v in value.items() if k in DATA_SHOWN} or value
    return ", ".join(f"{k}={_canon(v) if isinstance(v, (dict, list)) else v}" for k, v in sorted(shown.items()))


@dataclass
class Group:
    key: tuple[tuple[str, str], ...]
    runs: list[RunRecord]
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
        return self.runs[0].task["metric"]

    @property
    def higher_is_better(self) -> bool:
        return bool(self.runs[0].task.get("higher_is_better", True))

    def settings(self) -> dict[str, str]:
        return {name: describe_field(name, value) for name, value in self.key[1:]}


@dataclass
class Collected:
    runs: list[RunRecord] = field(default_factory=list)
    baselines: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def collect(roots: Iterable[Path]) -> Collected:
    """Every finished run record and every baseline record under ``roots``; anything unreadable is skipped, named."""
    out = Collected()
    seen: set[str] = set()  # resolved paths: a record under two given roots counts once
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
                try:
                    record = RunRecord.load(path.parent)
                except Exception as err:
                    out.skipped.append(f"{name}: unreadable run record ({type(err).__name__})")
                    continue
                if record.status != "finished" or not record.final:
                    out.skipped.append(f"{name}: run {record.run_id} is {record.status}, not finished")
                else:
                    out.runs.append(record)
            elif path.name.startswith("baseline-"):
                try:
                    data = json.loads(path.read_text())
                except (OSError, ValueError) as err:
                    out.skipped.append(f"{name}: unreadable baseline record ({type(err).__name__})")
                    continue
                if isinstance(data, dict) and data.get("kind") == "baseline":
                    out.baselines.append(data)
    out.runs.sort(key=lambda r: (r.task["name"], r.improver.get("label", ""), r.seed, r.run_id))
    out.baselines.sort(key=lambda b: (b.get("task", ""), b.get("baseline", ""), _canon(b.get("options"))))
    return out


def group_runs(runs: Sequence[RunRecord], baselines: Sequence[dict[str, Any]] = ()) -> tuple[
        dict[str, list[Group]], list[str]]:
    """Per task, comparable groups (main first), with baselines attached where task, version, options and eval
    limit match; returns the groups and notes about baselines that match no table."""
    by_key: dict[tuple, list[RunRecord]] = {}
    for record in runs:
        by_key.setdefault(group_key(record), []).append(record)
    tasks: dict[str, list[Group]] = {}
    for key in sorted(by_key):
        tasks.setdefault(key[0][1], []).append(Group(key, by_key[key]))
    for name, groups in tasks.items():
        groups.sort(key=lambda g: (-len(g.runs), -len({_arm_label(r) for r in g.runs}), g.key))
        main = groups[0]
        for group in groups[1:]:
            group.reason = "; ".join(
                f"{field_} differs ({describe_field(field_, mine)} vs {describe_field(field_, theirs)})"
                for (field_, mine), (_, theirs) in zip(group.key[1:], main.key[1:]) if mine != theirs)
    notes = []
    for baseline in baselines:
        matched = False
        for group in tasks.get(baseline.get("task", ""), []):
            rec = group.runs[0]
            if (str(baseline.get("task_version")) == str(rec.task.get("version"))
                    and _canon(baseline.get("options")) == _canon(rec.task.get("options"))
                    and baseline.get("limit") == rec.limit):
                group.baselines.append(baseline)
                matched = True
        if not matched:
            notes.append(f"baseline {baseline.get('baseline')} of {baseline.get('task')} (options "
                         f"{_canon(baseline.get('options'))}, limit {baseline.get('limit')}) matches no run table")
    return tasks, notes


def _arm_label(record: RunRecord) -> str:
    label = record.improver.get("label") or record.improver.get("name", "?")
    feedback = record.models.get("feedback")
    return f"{label} · feedback {feedback.get('model') or feedback.get('name')}" if feedback else label


def _arm_rank(record: RunRecord) -> int:
    from sia_bench.ablate import DEFAULT_ARMS

    name = record.improver.get("name", "")
    return DEFAULT_ARMS.index(name) if name in DEFAULT_ARMS else len(DEFAULT_ARMS)


def anchors_for(task: str) -> list[dict[str, Any]]:
    """Published numbers from ``baselines/<task>.py:ANCHORS`` (empty when the module or list is absent)."""
    try:
        module = importlib.import_module(f"baselines.{task}")
    except ImportError:
        return []
    return sorted((dict(a) for a in getattr(module, "ANCHORS", []) or []), key=_canon)


def _mean_ci(values: Sequence[float]) -> dict[str, float]:
    mean, lo, hi = bootstrap_ci(values)
    return {"mean": mean, "lo": lo, "hi": hi}


def table_rows(group: Group) -> list[dict[str, Any]]:
    """The rows of one table: arms (mean and 95% bootstrap interval over seeds), baselines, controls, anchors."""
    m = group.metric
    rows: list[dict[str, Any]] = []
    arms: dict[str, list[RunRecord]] = {}
    for record in group.runs:
        arms.setdefault(_arm_label(record), []).append(record)
    for label in sorted(arms, key=lambda lb: (_arm_rank(arms[lb][0]), lb)):
        recs = sorted(arms[label], key=lambda r: (r.seed, r.run_id))
        fin = [r.final for r in recs]
        cpu = sorted({(r.environment.get("hardware") or {}).get("gpu") or
                      (r.environment.get("hardware") or {}).get("cpu") or "?" for r in recs})
        rows.append({
            "kind": "arm", "name": label, "n": len(recs), "seeds": " ".join(str(r.seed) for r in recs),
            "val": _mean_ci([f["val"].get(m, math.nan) for f in fin]),
            "test": _mean_ci([f["test"].get(m, math.nan) for f in fin]),
            "val_norm": _mean_ci([_num(f.get("val_normalised")) for f in fin]),
            "test_norm": _mean_ci([_num(f.get("test_normalised")) for f in fin]),
            "rollouts": _avg(r.ledger.task_rollouts() for r in recs),
            "tokens": _avg(r.ledger.task_tokens() for r in recs),
            "train_steps": _avg(r.ledger.train_steps for r in recs),
            "feedback_calls": _avg(r.ledger.feedback_calls for r in recs),
            "wall_s": _avg(r.ledger.wall_seconds for r in recs),
            "note": "hardware: " + "; ".join(cpu)})
    for b in sorted(group.baselines, key=lambda b: b.get("baseline", "")):
        rows.append({"kind": "baseline", "name": b.get("baseline", "?"), "n": 1, "seeds": "",
                     "val": _single(b.get("val", {}).get(m)), "test": _single(b.get("test", {}).get(m)),
                     "val_norm": _single(b.get("val", {}).get(f"{m}_normalised")),
                     "test_norm": _single(b.get("test", {}).get(f"{m}_normalised")),
                     "note": "classical baseline fitted on train"})
    controls = group.runs[0].controls
    for control, norm in (("null", 0.0), ("perfect", 1.0)):
        rows.append({"kind": "control", "name": control, "n": 1, "seeds": "",
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
                     "seeds": "", "val": value if split == "val" else _single(None),
                     "test": value if split != "val" else _single(None), "val_norm": _single(None),
                     "test_norm": _single(None),
                     "note": "REPORTED, not run here: " + "; ".join(
                         f"{k} {a[k]}" for k in ("model", "hardware", "source", "note") if a.get(k))})
    return rows


def _num(value: Any) -> float:
    return float(value) if isinstance(value, (int, float)) else math.nan


def _single(value: Any) -> dict[str, float]:
    v = _num(value)
    return {"mean": v, "lo": math.nan, "hi": math.nan}


def _avg(values: Iterable[float]) -> float:
    vals = list(values)
    return sum(vals) / len(vals) if vals else math.nan


def fmt(value: Any, digits: int = 4) -> str:
    if value is None or value == "" or (isinstance(value, float) and math.isnan(value)):
        return "—" if value != "" else ""
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    return str(value)


def fmt_ci(cell: dict[str, float]) -> str:
    if math.isnan(cell["mean"]):
        return "—"
    if math.isnan(cell["lo"]):
        return fmt(cell["mean"])
    return f"{fmt(cell['mean'])} [{fmt(cell['lo'])}, {fmt(cell['hi'])}]"


CSV_COLUMNS = ("group", "kind", "name", "n", "seeds", *(f"{c}_{p}" for c in ("val", "test", "val_norm", "test_norm")
                                                      for p in ("mean", "lo", "hi")),
               "rollouts", "tokens", "train_steps", "feedback_calls", "wall_s", "note")


def rows_csv(groups: Sequence[Group]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for group in groups:
        for row in table_rows(group):
            flat = {"group": group.id, **{k: v for k, v in row.items() if not isinstance(v, dict)}}
            for col in ("val", "test", "val_norm", "test_norm"):
                for part in ("mean", "lo", "hi"):
                    flat[f"{col}_{part}"] = row[col][part]
            writer.writerow([_csv_value(flat.get(c, "")) for c in CSV_COLUMNS])
    return buf.getvalue()


def runs_csv(groups: Sequence[Group]) -> str:
    """One line per run: the provenance behind every arm row."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("group", "arm", "seed", "run_id", "best_generation", "generations", "stop_reason", "val", "test",
                     "val_norm", "test_norm", "rollouts", "tokens", "train_steps", "feedback_calls", "wall_s"))
    for group in groups:
        m = group.metric
        for r in sorted(group.runs, key=lambda r: (_arm_label(r), r.seed, r.run_id)):
            writer.writerow([_csv_value(v) for v in (
                group.id, _arm_label(r), r.seed, r.run_id, r.final.get("best_generation"), len(r.generations) - 1,
                r.stop_reason, r.final["val"].get(m), r.final["test"].get(m), r.final.get("val_normalised"),
                r.final.get("test_normalised"), r.ledger.task_rollouts(), r.ledger.task_tokens(),
                r.ledger.train_steps, r.ledger.feedback_calls, r.ledger.wall_seconds)])
    return buf.getvalue()


def _csv_value(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)


@dataclass
class Report:
    files: list[Path] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def build_leaderboard(roots: Sequence[Path], out: Path) -> Report:
    """Write ``<task>.md``, ``<task>.csv``, ``<task>-runs.csv``, PNGs, ``README.md`` and ``index.html`` to ``out``."""
    from sia_bench.leaderboard_plots import plot_budget, plot_curves  # matplotlib only when plotting
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
        plots: dict[str, dict[str, bytes]] = {}
        for index, group in enumerate(groups):
            plots[group.id] = {"curves": plot_curves(group), "budget": plot_budget(group, table_rows(group))}
            for kind, png in plots[group.id].items():
                path = out / f"{task}-{index}-{kind}.png"
                path.write_bytes(png)
                report.files.append(path)
        rows = {g.id: table_rows(g) for g in groups}
        pages[task] = {"groups": groups, "rows": rows, "plots": plots}
        for name, text in ((f"{task}.md", render_markdown(task, groups, rows)),
                           (f"{task}.csv", rows_csv(groups)), (f"{task}-runs.csv", runs_csv(groups))):
            atomic_write_text(out / name, text)
            report.files.append(out / name)
    index = ["# sia-bench leaderboard", "", "Generated by `sia-bench leaderboard` from run and baseline records only.",
             ""]
    for task in sorted(tasks):
        index.append(f"- [{task}]({task}.md) ([CSV]({task}.csv), [runs]({task}-runs.csv))")
    if report.skipped:
        index += ["", "## Records not used", ""] + [f"- {s}" for s in sorted(report.skipped)]
    index += ["", "The HTML page with tables and plots: [index.html](index.html)", ""]
    atomic_write_text(out / "README.md", "\n".join(index))
    atomic_write_text(out / "index.html", render_html(pages, sorted(report.skipped)))
    report.files += [out / "README.md", out / "index.html"]
    return report


# -- rendering ------------------------------------------------------------------------------------------------------
HEAD = ("kind", "arm / row", "n", "val {m}", "test {m}", "val normalised", "test normalised", "task rollouts",
        "task tokens", "train steps", "feedback calls", "wall s", "note")


def _cells(row: dict[str, Any]) -> list[str]:
    return [row["kind"], row["name"], fmt(row["n"]), *(fmt_ci(row[c]) for c in ("val", "test", "val_norm",
                                                                                  "test_norm")),
            *(fmt(row.get(c), 1 if c == "wall_s" else 0) if row["kind"] == "arm" else "—"
              for c in ("rollouts", "tokens", "train_steps", "feedback_calls", "wall_s")), row["note"]]


def _header(group: Group) -> list[str]:
    return [h.format(m=group.metric) for h in HEAD]


def _group_title(group: Group, index: int) -> str:
    return "Main table" if index == 0 else f"Table {index + 1} (not comparable with the main table)"


def render_markdown(task: str, groups: Sequence[Group], rows: dict[str, list[dict[str, Any]]]) -> str:
    lines = [f"# {task}", "", "Mean over seeds with a 95% percentile-bootstrap interval [lo, hi] "
             f"(seed {BOOTSTRAP_SEED}, {BOOTSTRAP_RESAMPLES} resamples). Normalised = (score - null) / (perfect - "
             "null). Budget columns: mean spent per run, test pass excluded. Rows of kind `reported` are published "
             "numbers, not run here.", ""]
    for index, group in enumerate(groups):
        arrow = "higher" if group.higher_is_better else "lower"
        lines += [f"## {_group_title(group, index)}", ""]
        if group.reason:
            lines += [f"Apart because: {group.reason}.", ""]
        lines += [f"- metric: `{group.metric}` ({arrow} is better)"]
        lines += [f"- {name}: {value}" for name, value in group.settings().items()]
        header = _header(group)
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in _cells(r)) + " |" for r in rows[group.id]]
        lines += ["", f"![val per generation]({task}-{index}-curves.png)",
                  f"![score against budget]({task}-{index}-budget.png)", ""]
    return "\n".join(lines)


def render_html(pages: dict[str, dict[str, Any]], skipped: Sequence[str]) -> str:
    import base64
    from html import escape

    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>sia-bench leaderboard</title>',
             "<style>body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px}"
             "tr.reported{color:#805;font-style:italic}tr.control{color:#666}tr.baseline{background:#f6f6f6}"
             "img{max-width:48%;margin-right:1%}</style></head><body>", "<h1>sia-bench leaderboard</h1>",
             "<p>From run and baseline records only. Mean over seeds, 95% percentile-bootstrap interval in brackets. "
             "Rows marked <em>reported</em> are published numbers, not run here.</p>"]
    for task in sorted(pages):
        page = pages[task]
        parts.append(f"<h2>{escape(task)}</h2>")
        for index, group in enumerate(page["groups"]):
            parts.append(f"<h3>{escape(_group_title(group, index))}</h3>")
            if group.reason:
                parts.append(f"<p>Apart because: {escape(group.reason)}.</p>")
            parts.append("<ul>" + f"<li>metric: {escape(group.metric)} "
                         f"({'higher' if group.higher_is_better else 'lower'} is better)</li>" + "".join(
                             f"<li>{escape(k)}: {escape(v)}</li>" for k, v in group.settings().items()) + "</ul>")
            parts.append("<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in _header(group)) + "</tr>")
            for row in page["rows"][group.id]:
                parts.append(f'<tr class="{row["kind"]}">' + "".join(f"<td>{escape(c)}</td>" for c in _cells(row))
                             + "</tr>")
            parts.append("</table>")
            for kind, png in sorted(page["plots"][group.id].items(), key=lambda kv: kv[0] != "curves"):
                parts.append(f'<img alt="{escape(task)} {kind}" src="data:image/png;base64,'
                             f'{base64.b64encode(png).decode()}">')
    if skipped:
        parts.append("<h2>Records not used</h2><ul>" + "".join(f"<li>{escape(s)}</li>" for s in skipped) + "</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)

