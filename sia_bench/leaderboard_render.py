"""Leaderboard rendering: Markdown pages, CSV files and the static HTML page, from computed rows and verdicts.

Pure string building: every number shown was computed in ``leaderboard`` / ``leaderboard_verdicts``; this module
only formats, so the page stays a pure function of the records.
"""

from __future__ import annotations

import csv
import io
import math
from typing import Any, Sequence

from sia_bench.leaderboard import Group
from sia_bench.leaderboard_compute import auc_horizon, compute_unit
from sia_bench.leaderboard_verdicts import (VERDICT_HEAD, Verdicts, mdd_statement, summary_sentences,
                                            verdict_cells)
from sia_bench.stats import BOOTSTRAP_RESAMPLES, BOOTSTRAP_SEED

INTRO = ("Arm rows: mean over seeds and test instances. The test interval is Wilson for one run of 0/1 scores (or "
         "seeds that agree on every instance), else a two-level bootstrap over seeds and instances "
         f"({BOOTSTRAP_RESAMPLES} resamples, seed {BOOTSTRAP_SEED}); where per-sample test files are absent the "
         "interval is a bootstrap over seed means only, and the row says so. Val: mean over seeds with a bootstrap "
         "over seed means (val subsets may differ by seed). Normalised = (score - null) / (perfect - null). A row "
         "pools only runs with identical resolved settings (the `settings` digest); the same arm with other settings "
         "is another row. Budget columns: mean spent per run, test pass excluded. Rows of kind `reported` are "
         "published numbers, not run here.")


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


def _compute(value: float) -> str:
    return "—" if math.isnan(value) else f"{value:.3g}"


HEAD = ("kind", "arm / row", "settings", "seeds", "instances", "val {m}", "test {m} [95%]", "test interval",
        "val normalised", "test normalised", "compute ({unit})", "AUC", "task rollouts", "train steps",
        "feedback calls", "wall s", "note")


def _header(group: Group) -> list[str]:
    return [h.format(m=group.metric, unit=compute_unit(group).label) for h in HEAD]


def _cells(row: dict[str, Any]) -> list[str]:
    arm = row["kind"] == "arm"
    return [row["kind"], row["name"], row.get("settings", ""), fmt(row["n"]), fmt(row.get("instances", "")),
            *(fmt_ci(row[c]) for c in ("val", "test")), row.get("test_method", ""),
            *(fmt_ci(row[c]) for c in ("val_norm", "test_norm")),
            _compute(row["compute"]) if arm else "—", fmt(row["auc"], 3) if arm else "—",
            *(fmt(row.get(c), 1 if c == "wall_s" else 0) if arm else "—"
              for c in ("rollouts", "train_steps", "feedback_calls", "wall_s")), row["note"]]


def _group_title(index: int) -> str:
    return "Main table" if index == 0 else f"Table {index + 1} (not comparable with the main table)"


def compute_statement(group: Group) -> str:
    unit = compute_unit(group)
    horizon = auc_horizon(group, unit)
    without = sum(1 for r in group.runs if not sum(getattr(r.record.ledger, "flops", {}).values()) > 0)
    what = ("estimated FLOPs (2 x parameters x tokens forward, 6 x for training; task, trainer, Feedback-Agent and "
            "Meta-Agent calls), test pass excluded" if unit.flops else
            f"task-model tokens, train + val (FLOPs are not recorded in {without} of {len(group.runs)} runs here, so "
            "Feedback-Agent calls are not counted)")
    unknown = sum(sum(getattr(r.record.ledger, "flops_unknown", {}).values()) for r in group.runs)
    where = "the compute budget" if unit.budget else "the most compute any run here spent"
    return (f"Compute: {what}. AUC: area under the best-val-so-far curve (normalised score) against compute, divided "
            f"by {where} ({_compute(horizon)} {unit.label}); the null control counts until generation 0 is scored, "
            "a run's best stays after it stops; 1.0 = the perfect score from the start."
            + (f" {unknown} calls went to models of unknown size: their FLOPs are missing." if unknown else ""))


def _verdict_lines(v: Verdicts) -> list[str]:
    if not v.rows and not v.refused:
        return []
    lines = ["### Verdicts", ""]
    if v.rows:
        lines += ["Paired on the same test instances: difference of per-instance means over seeds (A − B), 95% "
                  "two-level bootstrap interval, exact paired test, p adjusted by Holm over the comparisons below; "
                  "significant = Holm p < 0.05. The test conditions on the seeds run; seed variation enters the "
                  "interval.", "", "| " + " | ".join(VERDICT_HEAD) + " |", "|" + "---|" * len(VERDICT_HEAD)]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in verdict_cells(r)) + " |" for r in v.rows]
        lines += [""] + summary_sentences(v) + ["", mdd_statement(v), ""]
    if v.refused:
        lines += ["Not compared:", ""] + [f"- {note}" for note in v.refused] + [""]
    return lines


def render_markdown(task: str, groups: Sequence[Group], rows: dict[str, list[dict[str, Any]]],
                    verdicts: dict[str, Verdicts]) -> str:
    lines = [f"# {task}", "", INTRO, ""]
    for index, group in enumerate(groups):
        arrow = "higher" if group.higher_is_better else "lower"
        lines += [f"## {_group_title(index)}", ""]
        if group.reason:
            lines += [f"Apart because: {group.reason}.", ""]
        lines += _verdict_lines(verdicts[group.id])
        lines += ["### Arms", "", f"- metric: `{group.metric}` ({arrow} is better)"]
        lines += [f"- {name}: {value}" for name, value in group.settings().items()]
        lines += ["", compute_statement(group)]
        header = _header(group)
        lines += ["", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
        lines += ["| " + " | ".join(c.replace("|", "/") for c in _cells(r)) + " |" for r in rows[group.id]]
        lines += ["", f"![val per generation]({task}-{index}-curves.png)",
                  f"![score against compute]({task}-{index}-compute.png)", ""]
    return "\n".join(lines)


def render_index(tasks: Sequence[str], skipped: Sequence[str]) -> str:
    index = ["# sia-bench leaderboard", "", "Generated by `sia-bench leaderboard` from run and baseline records only.",
             ""]
    for task in tasks:
        index.append(f"- [{task}]({task}.md) ([CSV]({task}.csv), [runs]({task}-runs.csv), "
                     f"[verdicts]({task}-verdicts.csv))")
    if skipped:
        index += ["", "## Records not used", ""] + [f"- {s}" for s in skipped]
    index += ["", "The HTML page with tables and plots: [index.html](index.html)", ""]
    return "\n".join(index)


def render_html(pages: dict[str, dict[str, Any]], skipped: Sequence[str]) -> str:
    import base64
    from html import escape

    def table(head: Sequence[str], body: Sequence[tuple[str, Sequence[str]]]) -> str:
        return ("<table><tr>" + "".join(f"<th>{escape(h)}</th>" for h in head) + "</tr>" + "".join(
            f'<tr class="{cls}">' + "".join(f"<td>{escape(c)}</td>" for c in cells) + "</tr>" for cls, cells in body)
            + "</table>")

    parts = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8"><title>sia-bench leaderboard</title>',
             "<style>body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em}"
             "table{border-collapse:collapse;font-size:13px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px}"
             "tr.reported{color:#805;font-style:italic}tr.control{color:#666}tr.baseline{background:#f6f6f6}"
             "tr.significant{font-weight:bold}img{max-width:48%;margin-right:1%}</style></head><body>",
             "<h1>sia-bench leaderboard</h1>", f"<p>From run and baseline records only. {escape(INTRO)}</p>"]
    for task in sorted(pages):
        page = pages[task]
        parts.append(f"<h2>{escape(task)}</h2>")
        for index, group in enumerate(page["groups"]):
            parts.append(f"<h3>{escape(_group_title(index))}</h3>")
            if group.reason:
                parts.append(f"<p>Apart because: {escape(group.reason)}.</p>")
            v: Verdicts = page["verdicts"][group.id]
            if v.rows:
                parts.append("<h4>Verdicts</h4>" + table(VERDICT_HEAD, [
                    ("significant" if r["significant"] else "", verdict_cells(r)) for r in v.rows]))
                parts += [f"<p>{escape(s)}</p>" for s in summary_sentences(v) + [mdd_statement(v)]]
            if v.refused:
                parts.append("<p>Not compared:</p><ul>" + "".join(f"<li>{escape(s)}</li>" for s in v.refused)
                             + "</ul>")
            parts.append("<h4>Arms</h4><ul>" + f"<li>metric: {escape(group.metric)} "
                         f"({'higher' if group.higher_is_better else 'lower'} is better)</li>" + "".join(
                             f"<li>{escape(k)}: {escape(val)}</li>" for k, val in group.settings().items()) + "</ul>")
            parts.append(f"<p>{escape(compute_statement(group))}</p>")
            parts.append(table(_header(group), [(r["kind"], _cells(r)) for r in page["rows"][group.id]]))
            for kind, png in sorted(page["plots"][group.id].items(), key=lambda kv: kv[0] != "curves"):
                parts.append(f'<img alt="{escape(task)} {kind}" src="data:image/png;base64,'
                             f'{base64.b64encode(png).decode()}">')
    if skipped:
        parts.append("<h2>Records not used</h2><ul>" + "".join(f"<li>{escape(s)}</li>" for s in skipped) + "</ul>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


# -- CSV --------------------------------------------------------------------------------------------------------------
CSV_COLUMNS = ("group", "kind", "name", "settings", "n", "seeds", "instances",
               *(f"{c}_{p}" for c in ("val", "test", "val_norm", "test_norm") for p in ("mean", "lo", "hi")),
               "test_method", "compute", "compute_unit", "auc", "rollouts", "train_steps", "feedback_calls", "wall_s",
               "note")


def rows_csv(groups: Sequence[Group], rows: dict[str, list[dict[str, Any]]]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for group in groups:
        unit = compute_unit(group).label
        for row in rows[group.id]:
            flat = {"group": group.id, **{k: v for k, v in row.items() if not isinstance(v, dict)}}
            if row["kind"] == "arm":
                flat["compute_unit"] = unit
            for col in ("val", "test", "val_norm", "test_norm"):
                for part in ("mean", "lo", "hi"):
                    flat[f"{col}_{part}"] = row[col][part]
            writer.writerow([_csv_value(flat.get(c, "")) for c in CSV_COLUMNS])
    return buf.getvalue()


def runs_csv(groups: Sequence[Group]) -> str:
    """One line per run: the provenance behind every arm row."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(("group", "arm", "settings", "seed", "run_id", "best_generation", "generations", "stop_reason",
                     "val", "test", "val_norm", "test_norm", "test_instances", "compute", "compute_unit", "rollouts",
                     "tokens", "train_steps", "feedback_calls", "wall_s"))
    for group in groups:
        m, unit = group.metric, compute_unit(group)
        for arm in group.arms:
            for run in arm.runs:
                r = run.record
                writer.writerow([_csv_value(v) for v in (
                    group.id, arm.name, arm.digest, r.seed, r.run_id, r.final.get("best_generation"),
                    len(r.generations) - 1, r.stop_reason, r.final["val"].get(m), r.final["test"].get(m),
                    r.final.get("val_normalised"), r.final.get("test_normalised"),
                    len(run.test) if run.test else "", unit.of(r.ledger), unit.label, r.ledger.task_rollouts(),
                    r.ledger.task_tokens(), r.ledger.train_steps, r.ledger.feedback_calls, r.ledger.wall_seconds)])
    return buf.getvalue()


def _csv_value(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
