"""``sia-bench ablate`` end to end on the toy task with the tiny model, plus its argument handling."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sia_bench.ablate import ID_SCHEME, AblationSpec, check_folder, prepare, split_improver_options
from sia_bench.cli import main
from sia_bench.records import Budget, RunRecord


def test_ablate_end_to_end_then_resume_then_leaderboard(tmp_path, capsys):
    argv = ["ablate", "--task", "toy_arithmetic", "--improvers", "none", "--seeds", "2", "--model", "tiny",
            "--limit", "2", "--generations", "2", "--out", str(tmp_path / "runs")]
    assert main(argv) == 0
    log = capsys.readouterr().err  # not a terminal: plain progress lines, one per job step, with elapsed time
    assert "none-s0: started" in log and "none-s1:   val pass: 2/2 in" in log and "(2/2 runs done)" in log
    [folder] = list((tmp_path / "runs").glob("toy_arithmetic-ablation-*"))
    manifest = json.loads((folder / "ablation.json").read_text())
    assert [(r["arm"], r["seed"], r["status"]) for r in manifest["runs"]] == [("none", 0, "finished"),
                                                                              ("none", 1, "finished")]
    # matched budget: the default rollout cap is (generations + 1) x val instances x 3, the same for every run
    assert manifest["budget"]["task_rollouts"] == 3 * 2 * 3 and manifest["val_instances"] == 2
    records = [RunRecord.load(folder / f"none-s{s}") for s in (0, 1)]
    assert {r.budget.model_dump_json() for r in records} == {Budget(**manifest["budget"]).model_dump_json()}
    assert [r.seed for r in records] == [0, 1] and all(r.limit == 2 for r in records)
    assert {r.generations[0].candidate.harness_digest for r in records} == {manifest["starting_harness"]}

    # a run killed before its test pass -> the same command resumes it and leaves the finished one alone
    kept = (folder / "none-s0" / "run.json").read_bytes()
    killed = RunRecord.load(folder / "none-s1")
    killed.status, killed.final = "running", {}
    killed.save(folder / "none-s1")
    (folder / "none-s1" / "final" / "summary.json").unlink()
    assert main(argv) == 0
    assert (folder / "none-s0" / "run.json").read_bytes() == kept
    assert RunRecord.load(folder / "none-s1").status == "finished"
    assert "2/2 runs finished" in capsys.readouterr().out

    from sia_bench.rundir import FolderLock

    with FolderLock(folder):  # another ablate on the same folder is refused while this one holds it
        assert main(argv) == 2
    assert "in use by another sia-bench process" in capsys.readouterr().err

    (tmp_path / "intro.md").write_text("What this shows:\n two <seeds>.\n")
    assert main(["leaderboard", str(tmp_path / "runs"), "--out", str(tmp_path / "lb"), "--intro",
                 str(tmp_path / "intro.md")]) == 0
    assert '<p class="intro">What this shows: two &lt;seeds&gt;.</p>' in (tmp_path / "lb" / "index.html").read_text()
    table = (tmp_path / "lb" / "toy_arithmetic.md").read_text()
    row = next(line for line in table.splitlines() if line.startswith("| arm | none"))
    assert "| 2 |" in row  # n = 2 seeds
    assert (tmp_path / "lb" / "toy_arithmetic-0-curves.png").exists() and (tmp_path / "lb" / "index.html").exists()


def test_improver_options_scope_to_one_arm_or_all():
    assert split_improver_options({"x": 1, "h:y": 2}, ["none", "h"]) == {"none": {"x": 1}, "h": {"x": 1, "y": 2}}
    with pytest.raises(ValueError, match="not one of the arms"):
        split_improver_options({"w:y": 2}, ["none", "h"])


def test_bad_arms_fail_before_anything_runs(tmp_path, capsys):
    rc = main(["ablate", "--task", "toy_arithmetic", "--improvers", "none,nope", "--model", "tiny",
               "--out", str(tmp_path)])
    assert rc == 2 and "unknown improver 'nope'" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())
    with pytest.raises(ValueError, match="must not repeat"):
        prepare(AblationSpec(task="toy_arithmetic", arms=["none", "none"], seeds=[0]))


def test_ablation_id_ignores_flag_and_arm_order_and_default_values():
    """The id is a digest of the resolved settings: the order of -I flags or arms, and options given at their
    default value, do not change it; an arm-scoped -I wins over a global one whatever the order."""
    def spec(arms, options, **kw):
        return prepare(AblationSpec(task="toy_arithmetic", arms=arms, seeds=[0], model="tiny", limit=2,
                                    improver_options=split_improver_options(options, arms), **kw))[0]

    a = spec(["none", "h"], {"h:minibatch": "8", "h:edit_budget": "2"})
    b = spec(["h", "none"], {"h:edit_budget": "2", "h:minibatch": "8"})
    c = spec(["none", "h"], {"h:edit_budget": "2", "h:minibatch": "8", "h:edit_schedule": "linear"},
             task_options={"max_operand": "20"})
    assert a.id == b.id == c.id
    assert spec(["none", "h"], {"h:minibatch": "4"}).id != a.id
    assert split_improver_options({"minibatch": 4, "h:minibatch": 8}, ["h", "wh"]) == \
        split_improver_options({"h:minibatch": 8, "minibatch": 4}, ["h", "wh"]) == \
        {"h": {"minibatch": 8}, "wh": {"minibatch": 4}}


def test_a_folder_started_with_other_settings_is_refused(tmp_path):
    spec = AblationSpec(task="toy_arithmetic", arms=["none"], seeds=[0], model="tiny", limit=2)
    (tmp_path / "ablation.json").write_text(json.dumps({**spec.comparable(), "id": spec.id, "id_scheme": ID_SCHEME}))
    check_folder(tmp_path, spec)  # same settings: fine
    other = AblationSpec(task="toy_arithmetic", arms=["none"], seeds=[0], model="tiny", limit=4)
    with pytest.raises(ValueError, match="limit differ"):
        check_folder(tmp_path, other)
    (tmp_path / "ablation.json").write_text(json.dumps({"id": "0123456789"}))
    with pytest.raises(ValueError, match="older sia-bench"):
        check_folder(tmp_path, spec)


def test_test_limit_and_the_shared_result_memo(tmp_path):
    """--test-limit scores more test than val instances (the same test subset for every seed), and the arms of an
    ablation share one result memo: the second seed of ``none`` scores the unchanged start on the same test
    instances from the memo, charged as computed, with the same per-sample scores."""
    argv = ["ablate", "--task", "toy_arithmetic", "--improvers", "none", "--seeds", "2", "--model", "tiny",
            "--limit", "2", "--test-limit", "3", "--generations", "1", "--out", str(tmp_path / "runs")]
    assert main(argv) == 0
    [folder] = list((tmp_path / "runs").glob("toy_arithmetic-ablation-*"))
    assert json.loads((folder / "ablation.json").read_text())["test_limit"] == 3
    records = [RunRecord.load(folder / f"none-s{s}") for s in (0, 1)]
    assert [(r.limit, r.test_limit) for r in records] == [(2, 3), (2, 3)]
    tests = [[json.loads(line) for line in (folder / f"none-s{s}" / "final" / "test.jsonl").read_text()
              .splitlines()] for s in (0, 1)]
    assert [len(t) for t in tests] == [3, 3]
    assert [t["instance_id"] for t in tests[0]] == [t["instance_id"] for t in tests[1]]
    assert [t["score"] for t in tests[0]] == [t["score"] for t in tests[1]]
    assert not any(t["reused"] for t in tests[0]) and all(t["reused"] for t in tests[1])
    assert records[1].ledger.reused.get("test", 0) == 3
    assert records[0].ledger.flops.get("test") == records[1].ledger.flops.get("test")  # reuse charged as computed
    assert any((folder / "memo").rglob("*.json"))
    # a baseline run with the same limits joins the arms' table; one with another test limit does not
    for extra in (["--test-limit", "3"], []):
        assert main(["baselines", "run", "--task", "toy_arithmetic", "--baseline", "calculator", "--limit", "2",
                     *extra, "--out", str(tmp_path / "runs" / "baselines")]) == 0
    assert main(["leaderboard", str(tmp_path / "runs"), "--out", str(tmp_path / "lb")]) == 0
    table = (tmp_path / "lb" / "toy_arithmetic.md").read_text()
    assert table.count("calculator") == 1 and "1.0000" in table
    # the id of an ablation without --test-limit is what it was before the option existed
    assert "test_limit" not in AblationSpec(task="toy_arithmetic").comparable()
    assert AblationSpec(task="toy_arithmetic", test_limit=3).id != AblationSpec(task="toy_arithmetic").id


def test_ablations_of_one_plan_share_a_memo_folder(tmp_path):
    """--memo-dir: a second ablation (another folder, another arm) reuses the first one's results where the keys
    match (here the unchanged start on the same val and test instances) and says so in its record."""
    common = ["--task", "toy_arithmetic", "--seeds", "1", "--model", "tiny", "--limit", "2", "--generations", "1",
              "--memo-dir", str(tmp_path / "memo")]
    assert main(["ablate", *common, "--improvers", "none", "--ablation-dir", str(tmp_path / "a")]) == 0
    assert main(["ablate", *common, "--improvers", "none", "--ablation-dir", str(tmp_path / "b"),
                 "--budget", "task_rollouts=1000"]) == 0  # other settings: a separate ablation
    assert any((tmp_path / "memo").rglob("*.json")) and not (tmp_path / "a" / "memo").exists()
    first, second = (RunRecord.load(tmp_path / d / "none-s0") for d in ("a", "b"))
    assert not first.ledger.reused and second.ledger.reused.get("test") == 2, second.ledger.reused
    assert first.final["test"] == second.final["test"]
