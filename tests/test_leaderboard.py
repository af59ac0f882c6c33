"""Leaderboard: bootstrap intervals on known data, comparability grouping, anchors, and byte-identical regeneration."""

from __future__ import annotations

import math
import sys
import types
from pathlib import Path

import numpy as np
import pytest

from sia_bench.leaderboard import bootstrap_ci, build_leaderboard, collect, group_runs, table_rows
from sia_bench.records import Budget, Candidate, GenerationRecord, Ledger, RunRecord, atomic_write_json

CONTROLS = {"val": {"null": {"accuracy": 0.0}, "perfect": {"accuracy": 1.0}},
            "test": {"null": {"accuracy": 0.0}, "perfect": {"accuracy": 1.0}}}


def make_run(root: Path, arm: str, seed: int, val: float, test: float, *, task: str = "toy_arithmetic",
             model: str = "tiny-random-llama", budget: Budget | None = None, limit: int | None = 8,
             version: str = "1.0", status: str = "finished", levers: tuple[tuple[str, ...], ...] = (("harness",),
                                                                                                      ("stop",))):
    """A real RunRecord, written where the loop would write it, with one generation per lever set."""
    gens = [GenerationRecord(index=0, proposer="start", accepted=True, val={"accuracy": val / 2},
                             best_so_far=val / 2, candidate=Candidate(harness_digest="a", harness_dir="gen_000/h"),
                             ledger=Ledger(rollouts={"val": 8}))]
    for i, lv in enumerate(levers, start=1):
        stop = "stop" in lv
        gens.append(GenerationRecord(index=i, levers=list(lv), accepted=not stop, val={} if stop else {"accuracy": val},
                                     best_so_far=val, ledger=Ledger(rollouts={"train": 4, "val": 0 if stop else 8},
                                                                    train_steps=2 if "weights" in lv else 0,
                                                                    feedback_calls=1)))
    ledger = Ledger(rollouts={"train": 4 * len(levers), "val": 16, "test": 8}, tokens_in={"val": 100, "test": 50},
                    tokens_out={"val": 10}, feedback_calls=len(levers), wall_seconds=12.5 + seed)
    record = RunRecord(
        run_id=f"{arm}-s{seed}", created_at="2026-01-01T00:00:00+00:00", status=status,
        task={"name": task, "version": version, "options": {"max_operand": 20}, "metric": "accuracy",
              "higher_is_better": True, "data": {"options": {"max_operand": 20}}},
        improver={"name": arm, "label": arm, "args": {}},
        models={"task": {"name": "tiny", "model": model, "backend": "hf", "device": "cpu", "adapter": None},
                "feedback": None},
        seed=seed, limit=limit, budget=budget or Budget(generations=2, task_rollouts=100),
        environment={"hardware": {"cpu": "Test CPU", "gpu": None}}, controls=CONTROLS, generations=gens,
        best_generation=1, stop_reason="stop", ledger=ledger,
        final={} if status != "finished" else {"best_generation": 1, "val": {"accuracy": val},
                                               "test": {"accuracy": test}, "val_normalised": val,
                                               "test_normalised": test})
    run_dir = root / f"{task}-{version}-{model}-{arm}-s{seed}-{limit}-g{record.budget.generations}"
    record.save(run_dir)
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
    module.ANCHORS = [{"metric": "accuracy", "value": 0.83, "split": "test", "source": "SIA paper, table 2",
                       "model": "Qwen3-8B", "hardware": "8x H100"}]
    monkeypatch.setitem(sys.modules, "baselines.anchored_task", module)
    make_run(tmp_path, "none", 0, 0.5, 0.5, task="anchored_task")
    report = build_leaderboard([tmp_path], tmp_path / "out")
    text = (tmp_path / "out" / "anchored_task.md").read_text()
    line = next(line for line in text.splitlines() if line.startswith("| reported"))
    assert "0.8300" in line and "REPORTED, not run here" in line and "Qwen3-8B" in line and "8x H100" in line
    assert any(p.name == "index.html" for p in report.files)


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
            "toy_arithmetic-0-curves.png", "toy_arithmetic-1-budget.png"} <= set(names)
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name
    png = (tmp_path / "a" / "toy_arithmetic-0-curves.png").read_bytes()
    assert png.startswith(b"\x89PNG") and b"Software" not in png and b"matplotlib" not in png.lower()
    html = (tmp_path / "a" / "index.html").read_text()
    assert html.count("data:image/png;base64,") == 4 and str(tmp_path) not in html
    md = (tmp_path / "a" / "toy_arithmetic.md").read_text()
    assert "Apart because: task model differs" in md and str(tmp_path) not in md


def test_a_checksummed_model_is_one_model_whatever_parameter_count_a_record_holds(tmp_path):
    for seed, params in enumerate([134_515_008, 135_436_608]):  # an early record counted an attached LoRA
        run_dir = make_run(tmp_path, "wh", seed, 0.5, 0.4)
        record = RunRecord.load(run_dir)
        record.models["task"].update(checksum="196d7a824673e0af", parameters=params)
        record.save(run_dir)
    run_dir = make_run(tmp_path / "other", "wh", 2, 0.5, 0.4)
    record = RunRecord.load(run_dir)
    record.models["task"].update(checksum="0000000000000000", parameters=134_515_008)
    record.save(run_dir)
    tasks, _ = group_runs(collect([tmp_path]).runs)
    groups = tasks["toy_arithmetic"]
    assert sorted(len(g.runs) for g in groups) == [1, 2]  # same checksum together; another checksum apart
