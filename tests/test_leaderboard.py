"""Leaderboard: bootstrap intervals on known data, comparability grouping, anchors, and byte-identical regeneration."""

from __future__ import annotations

import json
import math
import sys
import types
from pathlib import Path
from typing import Sequence

import numpy as np
import pytest

from sia_bench.leaderboard import (anchors_for, bootstrap_ci, build_leaderboard, citation, collect, group_runs,
                                   table_rows)
from sia_bench.leaderboard_compute import compute_auc, compute_unit
from sia_bench.leaderboard_verdicts import verdicts
from sia_bench.records import Budget, Candidate, GenerationRecord, Ledger, RunRecord, atomic_write_json
from sia_bench.stats import paired_comparison

CONTROLS = {"val": {"null": {"accuracy": 0.0}, "perfect": {"accuracy": 1.0}},
            "test": {"null": {"accuracy": 0.0}, "perfect": {"accuracy": 1.0}}}


def make_run(root: Path, arm: str, seed: int, val: float, test: float, *, task: str = "toy_arithmetic",
             model: str = "tiny-random-llama", budget: Budget | None = None, limit: int | None = 8,
             version: str = "1.0", status: str = "finished", levers: tuple[tuple[str, ...], ...] = (("harness",),
                                                                                                      ("stop",)),
             scores: Sequence[float] | None = None, ids: Sequence[str] | None = None, args: dict | None = None,
             flops: float = 0.0, label: str | None = None):
    """A real RunRecord, written where the loop would write it, with one generation per lever set; with ``scores``
    also ``final/test.jsonl`` (the test metric is then their mean); ``flops`` per generation when given."""
    if scores is not None:
        test = sum(scores) / len(scores)
    gens = [GenerationRecord(index=0, proposer="start", accepted=True, val={"accuracy": val / 2},
                             best_so_far=val / 2, candidate=Candidate(harness_digest="a", harness_dir="gen_000/h"),
                             ledger=Ledger(rollouts={"val": 8}, flops={"val": flops} if flops else {}))]
    for i, lv in enumerate(levers, start=1):
        stop = "stop" in lv
        gens.append(GenerationRecord(index=i, levers=list(lv), accepted=not stop, val={} if stop else {"accuracy": val},
                                     best_so_far=val, ledger=Ledger(rollouts={"train": 4, "val": 0 if stop else 8},
                                                                    train_steps=2 if "weights" in lv else 0,
                                                                    feedback_calls=1,
                                                                    flops={"val": flops} if flops else {})))
    ledger = Ledger(rollouts={"train": 4 * len(levers), "val": 16, "test": 8}, tokens_in={"val": 100, "test": 50},
                    tokens_out={"val": 10}, feedback_calls=len(levers), wall_seconds=12.5 + seed,
                    flops={"val": flops * len(gens), "test": 1e9} if flops else {})
    record = RunRecord(
        run_id=f"{arm}-s{seed}", created_at="2026-01-01T00:00:00+00:00", status=status,
        task={"name": task, "version": version, "options": {"max_operand": 20}, "metric": "accuracy",
              "higher_is_better": True, "data": {"options": {"max_operand": 20}}},
        improver={"name": arm, "label": label or arm, "args": args or {}},
        models={"task": {"name": "tiny", "model": model, "backend": "hf", "device": "cpu", "adapter": None},
                "feedback": None},
        seed=seed, limit=limit, budget=budget or Budget(generations=2, task_rollouts=100),
        environment={"hardware": {"cpu": "Test CPU", "gpu": None}}, controls=CONTROLS, generations=gens,
        best_generation=1, stop_reason="stop", ledger=ledger,
        replicate={"seed": seed, "varies": ["val subset"], "val_subset_seed": seed},  # as the loop writes them
        config={"task": task, "improver": arm, "seed": seed, "limit": limit},
        final={} if status != "finished" else {"best_generation": 1, "val": {"accuracy": val},
                                               "test": {"accuracy": test}, "val_normalised": val,
                                               "test_normalised": test})
    run_dir = root / f"{task}-{version}-{model}-{label or arm}-s{seed}-{limit}-g{record.budget.generations}"
    if args:
        run_dir = run_dir.with_name(run_dir.name + "-" + "-".join(f"{k}{v}" for k, v in sorted(args.items())))
    record.save(run_dir)
    if scores is not None:
        ids = list(ids or (f"case-{i:03d}" for i in range(len(scores))))
        (run_dir / "final").mkdir(parents=True, exist_ok=True)
        (run_dir / "final" / "test.jsonl").write_text("".join(
            json.dumps({"instance_id": i, "score": v, "purpose": "test", "answer": "x", "feedback": "f",
                        "details": {}, "tokens_in": 3}) + "\n" for i, v in zip(ids, scores)))
    return run_dir


def test_bootstrap_on_known_data():
    assert bootstrap_ci([0.0, 1.0]) == (0.5, 0.0, 1.0)  # resample means are 0, .5, 1 with 1/4, 1/2, 1/4
    # [0, 0, 1]: P(mean = 1) = 1/27 > 2.5%, P(mean = 0) = 8/27 > 2.5%: the interval is the whole [0, 1]
    mean, lo, hi = bootstrap_ci([0.0, 0.0, 1.0])
    assert mean == pytest.approx(1 / 3) and (lo, hi) == (0.0, 1.0)
    assert bootstrap_ci([0.3] * 5) == pytest.approx((0.3, 0.3, 0.3))
    mean, lo, hi = bootstrap_ci([0.7])
    assert mean == 0.7 and math.isnan(lo) and math.isnan(hi)
    assert all(math.isnan(x) for x in bootstrap_ci([]))
    assert bootstrap_ci([0.2, float("nan"), 0.4])[0] == pytest.approx(0.3)  # NaN seeds do not poison the mean


def test_bootstrap_matches_normal_theory_on_large_sample():
    data = np.random.default_rng(7).normal(10.0, 2.0, size=400)
    mean, lo, hi = bootstrap_ci(data)
    half = 1.96 * data.std(ddof=1) / math.sqrt(data.size)
    assert mean == pytest.approx(data.mean())
    assert lo == pytest.approx(mean - half, abs=0.03) and hi == pytest.approx(mean + half, abs=0.03)
    assert bootstrap_ci(data) == (mean, lo, hi)  # fixed seed


def test_comparable_runs_share_a_table_and_others_stand_apart(tmp_path):
    for seed, (v, t) in enumerate([(0.5, 0.4), (0.6, 0.5), (0.7, 0.6)]):
        make_run(tmp_path, "none", seed, v, t)
        make_run(tmp_path, "h", seed, v + 0.1, t + 0.1)
    make_run(tmp_path, "h", 0, 0.9, 0.9, model="smollm2-135m")  # other task model
    make_run(tmp_path, "h", 1, 0.9, 0.9, budget=Budget(generations=5))  # other budget class
    make_run(tmp_path, "none", 0, 0.2, 0.2, version="2.0")  # other task version
    make_run(tmp_path, "none", 0, 0.2, 0.2, task="other_task")
    collected = collect([tmp_path])
    tasks, notes = group_runs(collected.runs)
    assert sorted(tasks) == ["other_task", "toy_arithmetic"] and not notes
    main, *apart = tasks["toy_arithmetic"]
    assert len(main.runs) == 6 and not main.reason and len(apart) == 3
    reasons = sorted(g.reason for g in apart)
    assert any(r.startswith("budget class differs") and "generations=5" in r for r in reasons)
    assert any(r.startswith("task model differs") and "smollm2-135m" in r for r in reasons)
    assert any(r.startswith("task version differs (2.0 vs 1.0)") for r in reasons)
    rows = {(r["kind"], r["name"]): r for r in table_rows(main)}
    none = rows[("arm", "none")]
    assert none["n"] == 3 and none["val"]["mean"] == pytest.approx(0.6) and none["test"]["mean"] == pytest.approx(0.5)
    assert none["val"]["lo"] <= 0.6 <= none["val"]["hi"] and none["rollouts"] == 8 + 16
    assert rows[("control", "null")]["val"]["mean"] == 0.0 and rows[("control", "perfect")]["test"]["mean"] == 1.0


def test_baselines_join_matching_tables_only(tmp_path):
    make_run(tmp_path, "none", 0, 0.5, 0.5)
    base = {"schema_version": "1.0", "kind": "baseline", "task": "toy_arithmetic", "task_version": "1.0",
            "options": {"max_operand": 20}, "baseline": "calculator", "limit": 8,
            "val": {"accuracy": 1.0, "accuracy_normalised": 1.0}, "test": {"accuracy": 1.0}}
    atomic_write_json(tmp_path / "b" / "baseline-toy-calculator-1.json", base)
    atomic_write_json(tmp_path / "b" / "baseline-toy-calculator-2.json", {**base, "limit": 99})
    collected = collect([tmp_path])
    tasks, notes = group_runs(collected.runs, collected.baselines)
    rows = table_rows(tasks["toy_arithmetic"][0])
    assert [r["name"] for r in rows if r["kind"] == "baseline"] == ["calculator"]
    assert len(notes) == 1 and "limit 99" in notes[0] and "matches no run table" in notes[0]


def test_anchor_rows_are_marked_reported(tmp_path, monkeypatch):
    module = types.ModuleType("baselines.anchored_task")
    module.ANCHORS = [{"metric": "accuracy", "value": 0.83, "split": "test", "source": "SIA (arXiv 2605.27276)",
                       "table": "Table 2", "model": "Qwen3-8B", "hardware": "8x H100"},
                      {"metric": "accuracy", "value": 0.5, "split": "test", "name": "quoted",
                       "source": "figures as quoted in ../shared/data/README.md"}]
    monkeypatch.setitem(sys.modules, "baselines.anchored_task", module)
    make_run(tmp_path, "none", 0, 0.5, 0.5, task="anchored_task")
    report = build_leaderboard([tmp_path], tmp_path / "out")
    text = (tmp_path / "out" / "anchored_task.md").read_text()
    line = next(line for line in text.splitlines() if line.startswith("| reported"))
    assert "0.8300" in line and "REPORTED, not run here" in line and "Qwen3-8B" in line and "8x H100" in line
    assert "source SIA (arXiv 2605.27276), Table 2" in line
    quoted = next(line for line in text.splitlines() if line.startswith("| reported | quoted"))
    assert "(table not given) (a file path is not a citation)" in quoted
    assert any(p.name == "index.html" for p in report.files)


def test_table_not_given_is_rendered_as_a_gap():
    assert citation({"source": "SIA paper", "table": "not given"}) == "SIA paper (table not given)"
    assert citation({"source": "SIA paper", "table": "Table 3"}) == "SIA paper, Table 3"


@pytest.mark.parametrize("task", ["legal_charges", "cuda_kernels", "scrna_denoise", "toy_arithmetic"])
def test_every_shipped_anchor_names_its_source_and_table(task):
    """A published number without its place in the source cannot be checked; an unknown table says so."""
    for anchor in anchors_for(task):
        assert str(anchor.get("source") or "").strip(), anchor
        assert str(anchor.get("table") or "").strip(), f"{task}: anchor {anchor.get('name')!r} has no table key"


def test_unfinished_and_corrupt_records_are_listed_not_tabled(tmp_path):
    make_run(tmp_path, "none", 0, 0.5, 0.5)
    make_run(tmp_path, "h", 0, 0.5, 0.5, status="running")
    (tmp_path / "broken").mkdir()
    (tmp_path / "broken" / "run.json").write_text("{not json")
    collected = collect([tmp_path])
    assert len(collected.runs) == 1
    assert any("is running, not finished" in s for s in collected.skipped)
    assert any("broken/run.json: unreadable run record" in s for s in collected.skipped)


def test_regeneration_is_byte_identical(tmp_path):
    runs = tmp_path / "runs"
    for seed in range(3):
        make_run(runs, "none", seed, 0.4 + seed / 10, 0.3 + seed / 10)
        make_run(runs, "wh", seed, 0.6 + seed / 10, 0.5, levers=(("harness",), ("weights",), ("harness", "weights")))
    make_run(runs, "h", 0, 0.9, 0.9, model="smollm2-135m")
    first = build_leaderboard([runs], tmp_path / "a")
    second = build_leaderboard([runs], tmp_path / "b")
    names = sorted(p.name for p in first.files)
    assert names == sorted(p.name for p in second.files)
    assert {"toy_arithmetic.md", "toy_arithmetic.csv", "toy_arithmetic-runs.csv", "index.html", "README.md",
            "toy_arithmetic-0-curves.png", "toy_arithmetic-1-compute.png"} <= set(names)
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    png = (tmp_path / "a" / "toy_arithmetic-0-curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and b"Software" not in png and b"matplotlib" not in png.lower()
    html = (tmp_path / "a" / "index.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and str(tmp_path) not in html
    md = (tmp_path / "a" / "toy_arithmetic.md").read_text()
    assert "Apart because: task model differs" in md and str(tmp_path) not in md


def test_a_checksummed_model_is_one_model_whatever_parameter_count_or_path_a_record_holds(tmp_path):
    # an early record counted an attached LoRA; two checkouts hold the same weights file under different paths
    for seed, (params, path) in enumerate([(134_515_008, "/a/.venv/m.gguf"), (135_436_608, "/b/.venv/m.gguf")]):
        run_dir = make_run(tmp_path, "wh", seed, 0.5, 0.4)
        record = RunRecord.load(run_dir)
        record.models["task"].update(checksum="196d7a824673e0af", parameters=params, file=path)
        record.save(run_dir)
    run_dir = make_run(tmp_path / "other", "wh", 2, 0.5, 0.4)
    record = RunRecord.load(run_dir)
    record.models["task"].update(checksum="0000000000000000", parameters=134_515_008)
    record.save(run_dir)
    tasks, _ = group_runs(collect([tmp_path]).runs)
    groups = tasks["toy_arithmetic"]
    assert sorted(len(g.runs) for g in groups) == [1, 2]  # same checksum together; another checksum apart


# -- instance-level statistics, verdicts, settings, compute ------------------------------------------------------------
def _scores(hits: int, n: int = 40, offset: int = 0) -> list[float]:
    return [1.0 if (i + offset) % n < hits else 0.0 for i in range(n)]


def _rows(root: Path) -> dict[str, dict]:
    tasks, _ = group_runs(collect([root]).runs)
    return {r["name"]: r for r in table_rows(tasks["toy_arithmetic"][0]) if r["kind"] == "arm"}


def test_arm_rows_carry_instance_level_intervals(tmp_path):
    make_run(tmp_path, "h", 0, 0.5, 0.0, scores=_scores(15, 40))  # one run: Wilson
    for seed in range(3):
        make_run(tmp_path, "none", seed, 0.5, 0.0, scores=_scores(6, 40))  # deterministic: seeds agree
        make_run(tmp_path, "w", seed, 0.5, 0.0, scores=_scores(10 + seed, 40, offset=seed))  # seeds differ
        make_run(tmp_path, "wh", seed, 0.5, 0.3 + seed / 10)  # no per-sample file
    rows = _rows(tmp_path)
    assert rows["h"]["test_method"] == "Wilson (15/40)" and rows["h"]["instances"] == 40
    assert rows["none"]["test_method"] == "Wilson (6/40; the 3 seeds agree on every instance)"
    assert rows["none"]["test"]["lo"] == pytest.approx(0.0706, abs=1e-4)  # Wilson 6/40, not a zero-width interval
    assert rows["w"]["test_method"] == "bootstrap over 3 seeds x 40 instances"
    assert rows["w"]["test"]["mean"] == pytest.approx(33 / 120)
    assert rows["wh"]["test_method"].startswith("seed means only (") and "no per-sample file" in rows["wh"][
        "test_method"]
    assert rows["wh"]["test"]["mean"] == pytest.approx(0.4)


def test_a_metric_that_is_not_a_per_instance_mean_falls_back_and_says_so(tmp_path):
    run_dir = make_run(tmp_path, "h", 0, 0.5, 0.0, scores=_scores(10, 40))
    record = RunRecord.load(run_dir)
    record.final["test"]["accuracy"] = 0.9  # e.g. a macro-F1 or geometric-mean metric
    record.save(run_dir)
    assert _rows(tmp_path)["h"]["test_method"] == "seed means only (accuracy is not the mean of the per-sample scores)"


def test_verdict_table_opens_the_page_and_matches_the_statistics(tmp_path):
    arms = {"none": 4, "h": 14, "w": 8, "wh": 16, "tool-only": 18, "random-search": 12}
    for arm, hits in arms.items():
        for seed in range(2):
            make_run(tmp_path / "runs", arm, seed, 0.5, 0.0, scores=_scores(hits + seed, 40))
    build_leaderboard([tmp_path / "runs"], tmp_path / "out")
    md = (tmp_path / "out" / "toy_arithmetic.md").read_text()
    assert md.index("### Verdicts") < md.index("### Arms") < md.index("| arm | none")
    tasks, _ = group_runs(collect([tmp_path / "runs"]).runs)
    v = verdicts(tasks["toy_arithmetic"][0])
    assert [r["comparison"] for r in v.rows] == ["wh − h", "wh − w", "h − none", "w − none", "h − tool-only",
                                                 "h − random-search", "w − tool-only", "wh − tool-only",
                                                 "wh − random-search"]
    wh_h = v.rows[0]
    direct = paired_comparison([_scores(16, 40), _scores(17, 40)], [_scores(14, 40), _scores(15, 40)])
    assert (wh_h["difference"], wh_h["lo"], wh_h["hi"], wh_h["p"]) == (direct.difference, direct.lo, direct.hi,
                                                                       direct.p_value)
    raw = sorted(r["p"] for r in v.rows)
    assert min(r["p_holm"] for r in v.rows) == pytest.approx(min(1.0, raw[0] * len(raw)))
    h_none = v.rows[2]
    assert h_none["significant"] and h_none["verdict"] == "h better" and h_none["lo"] > 0
    line = next(line for line in md.splitlines() if line.startswith("| h − none |"))
    assert "yes: h better" in line and "40 x (2 vs 2)" in line
    assert "Significant after Holm" in md and "Not significant:" in md and "Minimum detectable difference" in md
    assert (tmp_path / "out" / "toy_arithmetic-verdicts.csv").read_text().count("\n") == 1 + len(v.rows)


def test_comparisons_need_the_same_test_instances(tmp_path):
    make_run(tmp_path, "h", 0, 0.5, 0.0, scores=_scores(10, 40))
    make_run(tmp_path, "none", 0, 0.5, 0.0, scores=_scores(5, 40), ids=[f"other-{i}" for i in range(40)])
    tasks, _ = group_runs(collect([tmp_path]).runs)
    v = verdicts(tasks["toy_arithmetic"][0])
    assert not v.rows and v.refused == ["h vs none: different test instances (40 vs 40, 0 shared); a paired "
                                        "comparison needs the same ones"]


def test_runs_pool_only_when_their_resolved_settings_match(tmp_path):
    for seed in range(2):
        make_run(tmp_path, "h", seed, 0.5, 0.0, scores=_scores(10, 40), args={"minibatch": 8})
    make_run(tmp_path, "h", 0, 0.5, 0.0, scores=_scores(20, 40), args={"minibatch": 4})
    rows = _rows(tmp_path)
    assert len(rows) == 2 and all(name.startswith("h · settings ") for name in rows)
    by_seeds = sorted((r["n"], r["settings"]) for r in rows.values())
    assert by_seeds[0][0] == 1 and by_seeds[1][0] == 2 and by_seeds[0][1] != by_seeds[1][1]
    assert all(name.endswith(r["settings"]) for name, r in rows.items())


def test_compute_uses_flops_when_recorded_and_the_auc_matches_a_hand_count(tmp_path):
    f = 1e12
    make_run(tmp_path, "h", 0, 0.6, 0.0, flops=f)  # generations at F, 2F, 3F: best val 0.3, 0.6, 0.6
    make_run(tmp_path, "w", 0, 0.6, 0.0, flops=2 * f)  # at 2F, 4F, 6F
    tasks, _ = group_runs(collect([tmp_path]).runs)
    group = tasks["toy_arithmetic"][0]
    unit = compute_unit(group)
    assert unit.flops and unit.label == "FLOPs"
    h, w = sorted(group.runs, key=lambda r: r.label)
    # horizon 6F (the most any run spent): h = (0 x F + 0.3 x F + 0.6 x 4F) / 6F; w = (0 + 0.3 x 2F + 0.6 x 2F) / 6F
    assert compute_auc(h, unit, 6 * f) == pytest.approx(2.7 / 6)
    assert compute_auc(w, unit, 6 * f) == pytest.approx(1.8 / 6)
    rows = {r["name"]: r for r in table_rows(group) if r["kind"] == "arm"}
    assert rows["h"]["compute"] == 3 * f and rows["h"]["auc"] == pytest.approx(0.45)  # test FLOPs are excluded
    build_leaderboard([tmp_path], tmp_path / "out")
    md = (tmp_path / "out" / "toy_arithmetic.md").read_text()
    assert "compute (FLOPs)" in md and "divided by the most compute any run here spent (6e+12 FLOPs)" in md


def test_a_run_that_never_calls_the_model_spent_zero_flops_not_unknown(tmp_path):
    """A tool-only control charges no FLOPs because it makes no model call: the table stays in FLOPs."""
    make_run(tmp_path, "w", 0, 0.6, 0.0, flops=1e12)
    silent = make_run(tmp_path, "tool-only", 0, 0.7, 0.0)
    record = RunRecord.load(silent)
    empty = Ledger(rollouts={"val": 8, "test": 8})
    record.ledger = empty
    for gen in record.generations:
        gen.ledger = Ledger(rollouts={"val": 8})
    record.save(silent)
    tasks, _ = group_runs(collect([tmp_path]).runs)
    assert compute_unit(tasks["toy_arithmetic"][0]).flops
    record.ledger = Ledger(rollouts={"val": 8}, tokens_in={"val": 100})  # tokens without FLOPs: unknown
    record.save(silent)
    tasks, _ = group_runs(collect([tmp_path]).runs)
    assert not compute_unit(tasks["toy_arithmetic"][0]).flops
