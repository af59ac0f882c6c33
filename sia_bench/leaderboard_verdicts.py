"""The verdict table: which arm beats which, by how much, and whether it holds up.

Comparisons (A - B, each only where both arms ran in the table): the levers (wh - h, wh - w, h - none, w - none) and
each arm against the attribution controls that bear on it (h against tool-only and random-search, w against sft,
best-of-n and tool-only, since the starting harness already holds the tools a trained model can learn to follow; wh
against all four and against bt, both levers on BetterTogether's fixed schedule: the control for the chooser). Every
comparison is paired on the *same* test instances (refused, with a note, when the instance ids differ), uses
``stats.paired_comparison`` (difference of per-instance seed means, two-level bootstrap interval, exact McNemar or
sign-flip test), and is Holm-adjusted over the comparisons shown in the table.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from typing import Any, Sequence

from sia_bench.leaderboard import Arm, Group
from sia_bench.stats import ALPHA, POWER, StatsError, holm, min_detectable_difference, paired_comparison

LEVER_COMPARISONS = (("wh", "h"), ("wh", "w"), ("h", "none"), ("w", "none"))
CONTROLS_FOR = {"h": ("tool-only", "random-search"), "w": ("sft", "best-of-n", "tool-only"),
                "wh": ("tool-only", "random-search", "sft", "best-of-n", "bt")}
COMPARISONS = LEVER_COMPARISONS + tuple((arm, control) for arm, controls in CONTROLS_FOR.items()
                                        for control in controls)
PLANNING_DISCORDANCE = (0.1, 0.25, 0.5)  # shares of instances on which two arms disagree, for the MDD statement


@dataclass
class Verdicts:
    rows: list[dict[str, Any]] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)  # comparisons that could not be made, with the reason
    instances: int | None = None  # n shared by every comparison made (None when they differ or none was made)
    binary: bool = True


def verdicts(group: Group) -> Verdicts:
    """All comparisons of COMPARISONS that the group's arms allow, Holm-adjusted together."""
    by_improver: dict[str, list[Arm]] = {}
    for arm in group.arms:
        by_improver.setdefault(arm.improver, []).append(arm)
    out = Verdicts()
    for a_name, b_name in COMPARISONS:
        for a in by_improver.get(a_name, []):
            for b in by_improver.get(b_name, []):
                row, why = _compare(a, b, group.higher_is_better)
                if row is None:
                    out.refused.append(f"{a.name} vs {b.name}: {why}")
                else:
                    out.rows.append(row)
    for row, adjusted in zip(out.rows, holm([r["p"] for r in out.rows])):
        row["p_holm"] = adjusted
        row["significant"] = adjusted < ALPHA
        row["verdict"] = (f"{row['better']} better" if row["significant"] else "not significant")
    sizes = {r["instances"] for r in out.rows}
    out.instances = sizes.pop() if len(sizes) == 1 else None
    out.binary = all(r["binary"] for r in out.rows)
    return out


def _compare(a: Arm, b: Arm, higher_is_better: bool) -> tuple[dict[str, Any] | None, str]:
    if a.scores is None or b.scores is None:
        missing = a if a.scores is None else b
        return None, f"no instance-level test scores for {missing.name} ({missing.note})"
    if a.instance_ids != b.instance_ids:
        shared = len(set(a.instance_ids) & set(b.instance_ids))
        return None, (f"different test instances ({len(a.instance_ids)} vs {len(b.instance_ids)}, {shared} shared); "
                      "a paired comparison needs the same ones")
    try:
        c = paired_comparison(a.scores, b.scores)
    except StatsError as err:
        return None, str(err)
    a_ahead = (c.difference > 0) == higher_is_better
    return {"comparison": f"{a.name} − {b.name}", "a": a.name, "b": b.name, "difference": c.difference,
            "lo": c.lo, "hi": c.hi, "p": c.p_value, "test": c.test, "instances": c.n_instances,
            "seeds": f"{c.seeds_a} vs {c.seeds_b}", "a_better": c.a_better, "b_better": c.b_better,
            "mdd": c.mdd, "better": a.name if a_ahead else b.name, "binary": c.test.startswith("McNemar")
            or "grid" in c.test}, ""


def mdd_statement(v: Verdicts) -> str:
    """The smallest difference the table's design can detect, in words, with its assumption."""
    if not v.instances:
        return ""
    n = v.instances
    power = f"{POWER:.0%} power, two-sided alpha {ALPHA} for one comparison (Holm raises it)"
    if v.binary:
        values = "; ".join(f"{psi:.0%} discordant: {_mdd(min_detectable_difference(n, discordance=psi))}"
                           for psi in PLANNING_DISCORDANCE)
        return (f"Minimum detectable difference with n = {n} paired test instances ({power}; McNemar, normal "
                f"approximation of Connor 1987), by the share of instances on which the two arms disagree: {values}. "
                "The MDD column uses each comparison's observed discordance or variance.")
    return (f"Minimum detectable difference with n = {n} paired test instances ({power}): 2.80 x sd / sqrt(n), "
            f"with sd the standard deviation of the per-instance differences; e.g. "
            f"{min_detectable_difference(n, sd=1.0):.3f} x sd. The MDD column uses each comparison's observed sd.")


def _mdd(value: float) -> str:
    return "none detectable" if math.isnan(value) else f"{value:.3f}"


def summary_sentences(v: Verdicts) -> list[str]:
    """What is and is not significant, in words."""
    if not v.rows:
        return []
    sig = [r for r in v.rows if r["significant"]]
    not_sig = [r for r in v.rows if not r["significant"]]
    lines = []
    if sig:
        lines.append("Significant after Holm (alpha 0.05): " + "; ".join(
            f"{r['comparison']} = {r['difference']:+.4f} ({r['better']} better)" for r in sig) + ".")
    if not_sig:
        lines.append("Not significant: " + "; ".join(
            f"{r['comparison']} = {r['difference']:+.4f}" + (
                f" (below the MDD {r['mdd']:.3f})" if math.isfinite(r["mdd"]) and abs(r["difference"]) < r["mdd"]
                else "") for r in not_sig) + ".")
    return lines


VERDICT_HEAD = ("comparison", "difference", "95% interval", "p", "p (Holm)", "significant", "test",
                "instances x seeds", "MDD")


def verdict_cells(row: dict[str, Any]) -> list[str]:
    return [row["comparison"], f"{row['difference']:+.4f}", _interval(row["lo"], row["hi"]), _p(row["p"]),
            _p(row["p_holm"]), "yes: " + row["verdict"] if row["significant"] else "no", row["test"],
            f"{row['instances']} x ({row['seeds']})", "—" if math.isnan(row["mdd"]) else f"{row['mdd']:.3f}"]


def _interval(lo: float, hi: float) -> str:
    return "—" if math.isnan(lo) else f"[{lo:+.4f}, {hi:+.4f}]"


def _p(p: float) -> str:
    return "< 0.0001" if p < 1e-4 else f"{p:.4f}"


CSV_COLUMNS = ("group", "comparison", "a", "b", "difference", "lo", "hi", "p", "p_holm", "significant", "better",
               "test", "instances", "seeds", "a_better", "b_better", "mdd")


def verdicts_csv(groups: Sequence[Group], by_group: dict[str, Verdicts]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for group in groups:
        for row in by_group[group.id].rows:
            writer.writerow([group.id] + [_csv(row.get(c)) for c in CSV_COLUMNS[1:]])
    return buf.getvalue()


def _csv(value: Any) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    if isinstance(value, float):
        return f"{value:.6g}"
    return str(value)
