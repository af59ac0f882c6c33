"""Compact run records for committing (``sia-bench results pack``), and the per-sample readers the leaderboard uses.

A run directory holds adapters, harness folders and full trajectories (prompts, raw answers): far too much to commit.
``pack`` keeps what the tables are computed from, so ``leaderboard/`` can be regenerated from the repository:

    <out>/<source name>/.../run.json            the run record, re-serialised canonically (sorted keys)
    .../config.json, final/summary.json         likewise
    .../gen_NNN/generation.json                 likewise
    .../gen_NNN/harness/*                       the harness's text components, byte for byte
    .../gen_NNN/val.jsonl.gz, final/test.jsonl.gz   per-sample files with only ``instance_id`` and ``score``
    .../ablation.json, baseline-*.json          manifests and baseline records
    <out>/packed.json                           every file's size and sha256

Bytes are deterministic (sorted keys and iteration, gzip with mtime 0 and no file name), so packing the same runs
twice gives identical files. The leaderboard reads packed and unpacked runs alike (``read_scores``).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import math
import os
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

SAMPLE_FIELDS = ("instance_id", "score")  # what the leaderboard's paired statistics need per sample
PACK_MANIFEST = "packed.json"
MAX_HARNESS_FILE = 256 * 1024  # harness components are prompt text; anything bigger is not one
PER_SAMPLE = {"val.jsonl", "test.jsonl"}
CANONICAL_JSON = {"run.json", "config.json", "generation.json", "summary.json", "ablation.json"}


class ResultsError(ValueError):
    """A run's per-sample records or a pack request cannot be used; the message names the file and the fix."""


# -- reading per-sample files (plain or packed) -----------------------------------------------------------------------
def sample_file(run_dir: Path, stem: str) -> Path | None:
    """``<stem>.jsonl`` (as the loop writes it) or ``<stem>.jsonl.gz`` (as ``pack`` writes it), else None."""
    for suffix in (".jsonl", ".jsonl.gz"):
        path = Path(run_dir) / f"{stem}{suffix}"
        if path.is_file():
            return path
    return None


def iter_samples(path: Path) -> Iterator[dict[str, Any]]:
    """JSON lines of a plain or gzipped per-sample file; a torn last line (a crash mid-write) is skipped."""
    opener = gzip.open if path.name.endswith(".gz") else open
    try:
        with opener(path, "rt", encoding="utf-8") as f:
            for number, line in enumerate(f, start=1):
                if not line.endswith("\n") or not line.strip():
                    continue
                try:
                    row = json.loads(line)
                except ValueError:
                    raise ResultsError(f"{path}: line {number} is not JSON") from None
                if not isinstance(row, dict):
                    raise ResultsError(f"{path}: line {number} is not a JSON object")
                yield row
    except (OSError, EOFError, UnicodeDecodeError) as err:
        raise ResultsError(f"{path}: unreadable ({type(err).__name__}: {err})") from None


def read_scores(run_dir: Path, stem: str = "final/test") -> dict[str, float]:
    """Per-instance scores of one split of one run, keyed by instance id (sorted).

    Raises ResultsError when the file is absent, an instance appears twice, or a score is missing or not finite:
    paired statistics over such a file would be silently wrong.
    """
    path = sample_file(run_dir, stem)
    if path is None:
        raise ResultsError(f"{Path(run_dir).name}: no per-sample file {stem}.jsonl[.gz]")
    scores: dict[str, float] = {}
    for row in iter_samples(path):
        iid, score = row.get("instance_id"), row.get("score")
        if not isinstance(iid, str) or isinstance(score, bool) or not isinstance(score, (int, float)):
            raise ResultsError(f"{path}: a sample without a string instance_id and a numeric score")
        if not math.isfinite(score):
            raise ResultsError(f"{path}: instance {iid} has a non-finite score ({score})")
        if iid in scores:
            raise ResultsError(f"{path}: instance {iid} appears twice")
        scores[iid] = float(score)
    if not scores:
        raise ResultsError(f"{path}: no samples")
    return dict(sorted(scores.items()))


# -- packing ----------------------------------------------------------------------------------------------------------
def canonical_json(data: Any) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True, ensure_ascii=False) + "\n").encode("utf-8")


def _gzip(data: bytes) -> bytes:
    return gzip.compress(data, compresslevel=9, mtime=0)  # no timestamp, no file name: the same bytes every time


def compact_samples(path: Path) -> bytes:
    """A per-sample file reduced to ``SAMPLE_FIELDS``, one sorted-key JSON line each, in the original order."""
    lines = []
    for row in iter_samples(path):
        missing = [k for k in SAMPLE_FIELDS if k not in row]
        if missing:
            raise ResultsError(f"{path}: a sample lacks {', '.join(missing)}")
        lines.append(json.dumps({k: row[k] for k in SAMPLE_FIELDS}, sort_keys=True, ensure_ascii=False) + "\n")
    return _gzip("".join(lines).encode("utf-8"))


@dataclass
class PackReport:
    out: Path
    runs: int = 0
    files: dict[str, dict[str, Any]] = field(default_factory=dict)  # relative path -> bytes, sha256
    skipped: list[str] = field(default_factory=list)

    @property
    def total_bytes(self) -> int:
        return sum(f["bytes"] for f in self.files.values())


def _packed_name(rel: Path) -> tuple[str, Path] | None:
    """What to do with one file of a source tree, by its path: (action, path in the pack), or None to leave it out."""
    name, parts = rel.name, rel.parts
    in_harness = len(parts) >= 3 and parts[-3].startswith("gen_") and parts[-2] == "harness"
    if in_harness:
        return "text", rel
    if name in PER_SAMPLE or (name.endswith(".jsonl.gz") and name[:-3] in PER_SAMPLE):
        base = name if name in PER_SAMPLE else name[:-3]
        return "samples", rel.with_name(base + ".gz")
    if name in CANONICAL_JSON or (name.startswith("baseline-") and name.endswith(".json")):
        return "json", rel
    return None


def _run_roots(source: Path) -> list[Path]:
    return sorted({p.parent for p in source.rglob("run.json")} | ({source} if (source / "run.json").is_file()
                                                                     else set()))


def _collect(source: Path) -> list[tuple[str, Path, Path]]:
    """(action, file, path in the pack) for every file of ``source`` worth keeping, sorted."""
    runs = _run_roots(source)
    chosen = []
    for path in sorted(source.rglob("*")):
        if not path.is_file() or path.is_symlink():
            continue
        rel = path.relative_to(source)
        decision = _packed_name(rel)
        if decision is None:
            continue
        action, target = decision
        inside_run = any(path.is_relative_to(r) for r in runs)
        if action in ("samples", "text") and not inside_run:
            continue  # per-sample and harness files belong to a run
        if action == "json" and rel.name in ("config.json", "generation.json", "summary.json") and not inside_run:
            continue
        chosen.append((action, path, Path(source.name) / target))
    return chosen


def _prepare_out(out: Path, sources: Sequence[Path]) -> None:
    for source in sources:
        if not source.is_dir():
            raise ResultsError(f"{source}: no such folder (give run or ablation folders)")
        if out.resolve().is_relative_to(source.resolve()) or source.resolve().is_relative_to(out.resolve()):
            raise ResultsError(f"--out {out} and the source {source} overlap; pack into a separate folder")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ResultsError(f"two sources share a folder name ({', '.join(sorted(names))}); pack them separately")
    if out.exists() and any(out.iterdir()) and not (out / PACK_MANIFEST).is_file():
        raise ResultsError(f"{out} exists and was not written by pack; choose an empty or new --out folder")


def pack(sources: Sequence[Path], out: Path) -> PackReport:
    """Pack the runs under ``sources`` (run folders or ablation folders) into ``out``, replacing an earlier pack."""
    sources = [Path(s) for s in sources]
    out = Path(out)
    if not sources:
        raise ResultsError("give at least one run or ablation folder to pack")
    _prepare_out(out, sources)
    report = PackReport(out)
    staging = out.parent / f".{out.name}.packing-{os.getpid()}"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        for source in sorted(sources, key=lambda s: s.name):
            report.runs += len(_run_roots(source))
            for action, path, target in _collect(source):
                data = _packed_bytes(action, path, report)
                if data is None:
                    continue
                (staging / target).parent.mkdir(parents=True, exist_ok=True)
                (staging / target).write_bytes(data)
                report.files[target.as_posix()] = {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}
        if not report.runs:
            raise ResultsError(f"no run records (run.json) under {', '.join(str(s) for s in sources)}")
        manifest = {"schema": 1, "sources": sorted(s.name for s in sources), "runs": report.runs,
                    "files": dict(sorted(report.files.items())), "skipped": sorted(report.skipped)}
        staging.mkdir(parents=True, exist_ok=True)
        (staging / PACK_MANIFEST).write_bytes(canonical_json(manifest))
        if out.exists():
            shutil.rmtree(out)
        out.parent.mkdir(parents=True, exist_ok=True)
        os.replace(staging, out)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return report


def _packed_bytes(action: str, path: Path, report: PackReport) -> bytes | None:
    if action == "samples":
        return compact_samples(path)
    if action == "text":
        data = path.read_bytes()
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            report.skipped.append(f"{path.name}: harness file is not UTF-8 text")
            return None
        if len(data) > MAX_HARNESS_FILE:
            report.skipped.append(f"{path.name}: harness file over {MAX_HARNESS_FILE} bytes")
            return None
        return data
    try:
        return canonical_json(json.loads(path.read_text(encoding="utf-8")))
    except (OSError, ValueError) as err:
        report.skipped.append(f"{path.name}: unreadable JSON ({type(err).__name__})")
        return None


# -- command line -----------------------------------------------------------------------------------------------------
def cmd_pack(args: argparse.Namespace) -> int:
    from sia_bench.cli import console, err_console

    report = pack([Path(p) for p in args.dirs], Path(args.out))
    for note in report.skipped:
        err_console.print(f"skipped {note}", markup=False)
    console.print(f"packed {report.runs} runs into {report.out}: {len(report.files)} files, "
                  f"{report.total_bytes / 1e6:.2f} MB", markup=False)
    return 0


def add_commands(sub: Any) -> None:
    r = sub.add_parser("results", help="compact run records for committing (read by the leaderboard)")
    actions = r.add_subparsers(dest="results_action", required=True)
    p = actions.add_parser("pack", help="copy run/ablation folders' records, compacted, into a results folder")
    p.add_argument("dirs", nargs="+", metavar="RUN_OR_ABLATION_DIR")
    p.add_argument("--out", required=True, help="results folder to write, e.g. results/legal-ablation")
    p.set_defaults(func=cmd_pack)
