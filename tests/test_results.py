"""Packed results: deterministic compact copies, read by the leaderboard exactly like the runs they came from, and
the committed ``results/`` folder regenerating the committed ``leaderboard/`` byte for byte."""

from __future__ import annotations

import argparse
import gzip
import json
from pathlib import Path

import pytest

from sia_bench.leaderboard import build_leaderboard
from sia_bench.results import (PACK_MANIFEST, ResultsError, add_commands, compact_samples, pack, read_scores,
                               sample_file)
from tests.test_leaderboard import make_run

REPO = Path(__file__).resolve().parents[1]


def _ablation(root: Path) -> Path:
    """A small ablation folder: 3 arms x 2 seeds on 12 shared test instances, with harness text, an adapter blob
    and trajectories carrying fields the leaderboard does not need."""
    folder = root / "toy-ablation"
    for arm, shift in (("none", 0), ("h", 4), ("wh", 6)):
        for seed in range(2):
            scores = [1.0 if (i + seed) % 12 < 3 + shift else 0.0 for i in range(12)]
            run_dir = make_run(folder, arm, seed, 0.5, 0.0, scores=scores)
            (run_dir / "gen_001" / "harness").mkdir(parents=True)
            (run_dir / "gen_001" / "harness" / "SKILL.md").write_text(f"# skill of {arm}\nanswer with a number\n")
            (run_dir / "gen_001" / "adapter").mkdir()
            (run_dir / "gen_001" / "adapter" / "adapter_model.safetensors").write_bytes(b"\0" * 50_000)
            (run_dir / "gen_001" / "val.jsonl").write_text("".join(
                json.dumps({"instance_id": f"v{i}", "score": 1.0, "messages": ["long prompt " * 50]}) + "\n"
                for i in range(4)))
    (folder / "ablation.json").write_text(json.dumps({"arms": ["none", "h", "wh"], "seeds": [0, 1]}))
    return folder


def test_pack_keeps_what_the_leaderboard_needs_and_nothing_else(tmp_path):
    source = _ablation(tmp_path / "runs")
    report = pack([source], tmp_path / "results" / "toy")
    out = tmp_path / "results" / "toy"
    assert report.runs == 6 and not report.skipped
    names = {p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file()}
    assert PACK_MANIFEST in names and "toy-ablation/ablation.json" in names
    assert not any("adapter" in n for n in names)  # weights stay out
    run = next(p.parent for p in out.rglob("run.json"))
    assert (run / "final" / "test.jsonl.gz").is_file() and not (run / "final" / "test.jsonl").exists()
    assert (run / "gen_001" / "harness" / "SKILL.md").read_text().startswith("# skill of")
    rows = [json.loads(line) for line in gzip.decompress((run / "gen_001" / "val.jsonl.gz").read_bytes()).splitlines()]
    assert rows[0] == {"instance_id": "v0", "score": 1.0}  # prompts and other trajectory fields are dropped
    original = next(p for p in source.rglob("run.json") if p.parent.name == run.name).parent
    assert read_scores(run) == read_scores(original)  # the packed scores are the run's scores
    manifest = json.loads((out / PACK_MANIFEST).read_text())
    assert manifest["runs"] == 6 and set(manifest["files"]) == names - {PACK_MANIFEST}
    assert str(tmp_path) not in (out / PACK_MANIFEST).read_text()


def test_packing_twice_gives_identical_bytes_and_replaces_the_earlier_pack(tmp_path):
    source = _ablation(tmp_path / "runs")
    pack([source], tmp_path / "a")
    pack([source], tmp_path / "b")
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file())
    for rel in files_a:
        assert (tmp_path / "a" / rel).read_bytes() == (tmp_path / "b" / rel).read_bytes(), rel
    (tmp_path / "a" / "stale.txt").write_text("from an earlier pack")
    pack([source], tmp_path / "a")  # a folder written by pack is replaced whole
    assert not (tmp_path / "a" / "stale.txt").exists()


def test_leaderboard_reads_packed_runs_like_the_runs_they_came_from(tmp_path):
    source = _ablation(tmp_path / "runs")
    pack([source], tmp_path / "results" / "toy")
    from_runs = build_leaderboard([source], tmp_path / "lb-runs")
    from_pack = build_leaderboard([tmp_path / "results" / "toy"], tmp_path / "lb-pack")
    assert not from_runs.skipped and not from_pack.skipped
    for name in ("toy_arithmetic.md", "toy_arithmetic.csv", "toy_arithmetic-verdicts.csv",
                 "toy_arithmetic-runs.csv", "toy_arithmetic-0-compute.png"):
        assert (tmp_path / "lb-runs" / name).read_bytes() == (tmp_path / "lb-pack" / name).read_bytes(), name
    md = (tmp_path / "lb-pack" / "toy_arithmetic.md").read_text()
    line = next(line for line in md.splitlines() if line.startswith("| wh − h |"))
    assert "sign-flip, exact" in line  # 2 seeds each: the sign-flip test on per-instance seed means
    # Given both the runs and their packed copy, each run counts once.
    both = build_leaderboard([source, tmp_path / "results" / "toy"], tmp_path / "lb-both")
    assert sum("counted once" in s for s in both.skipped) == 6
    assert (tmp_path / "lb-both" / "toy_arithmetic.md").read_text() == md


def test_regenerating_from_a_packed_folder_is_byte_identical(tmp_path):
    pack([_ablation(tmp_path / "runs")], tmp_path / "results" / "toy")
    first = build_leaderboard([tmp_path / "results"], tmp_path / "one")
    build_leaderboard([tmp_path / "results"], tmp_path / "two")
    for path in first.files:
        assert path.read_bytes() == (tmp_path / "two" / path.name).read_bytes(), path.name


def test_bad_pack_requests_are_clear_errors(tmp_path):
    source = _ablation(tmp_path / "runs")
    with pytest.raises(ResultsError, match="no such folder"):
        pack([tmp_path / "missing"], tmp_path / "out")
    with pytest.raises(ResultsError, match="overlap"):
        pack([source], source / "packed")
    (tmp_path / "taken").mkdir()
    (tmp_path / "taken" / "notes.txt").write_text("mine")
    with pytest.raises(ResultsError, match="not written by pack"):
        pack([source], tmp_path / "taken")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ResultsError, match="no run records"):
        pack([tmp_path / "empty"], tmp_path / "out")
    assert not (tmp_path / "out").exists()  # nothing half-written


def test_per_sample_files_that_would_mislead_are_refused(tmp_path):
    run = make_run(tmp_path, "h", 0, 0.5, 0.0, scores=[1.0, 0.0])
    assert sample_file(run, "final/test").name == "test.jsonl"
    path = run / "final" / "test.jsonl"
    path.write_text(path.read_text() + json.dumps({"instance_id": "case-000", "score": 1.0}) + "\n")
    with pytest.raises(ResultsError, match="appears twice"):
        read_scores(run)
    path.write_text(json.dumps({"instance_id": "a", "score": float("nan")}) + "\n")
    with pytest.raises(ResultsError, match="non-finite"):
        read_scores(run)
    path.write_text(json.dumps({"instance_id": "a"}) + "\n")
    with pytest.raises(ResultsError, match="lacks score"):
        compact_samples(path)
    path.unlink()
    with pytest.raises(ResultsError, match="no per-sample file"):
        read_scores(run)


def test_results_pack_command(tmp_path, capsys):
    parser = argparse.ArgumentParser()
    add_commands(parser.add_subparsers(dest="command"))
    source = _ablation(tmp_path / "runs")
    args = parser.parse_args(["results", "pack", str(source), "--out", str(tmp_path / "results" / "toy")])
    assert args.func(args) == 0
    assert "packed 6 runs" in capsys.readouterr().out
    assert (tmp_path / "results" / "toy" / PACK_MANIFEST).is_file()


def test_committed_results_regenerate_the_committed_leaderboard(tmp_path):
    """``leaderboard/`` is generated by ``sia-bench leaderboard results/ --out leaderboard/``; regenerate it."""
    results = REPO / "results"
    if not results.is_dir() or not any(results.rglob("run.json")):
        pytest.skip("results/ holds no packed run records yet (pack them with `sia-bench results pack`)")
    report = build_leaderboard([results], tmp_path / "leaderboard")
    committed = sorted(p.name for p in (REPO / "leaderboard").iterdir() if p.is_file())
    assert sorted(p.name for p in report.files) == committed
    for path in report.files:
        assert path.read_bytes() == (REPO / "leaderboard" / path.name).read_bytes(), path.name
