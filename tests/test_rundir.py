"""Run folders: locks, refusing another run's folder, and clear errors (naming the file) for every kind of damage."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from sia_bench.harness import Harness
from sia_bench.loop import Loop, RunConfig, build_task, resume
from sia_bench.records import RunRecord
from sia_bench.rundir import FolderLock, RunDirError
from tests.doubles import ScriptedModel, adder


def toy_config(**kw) -> RunConfig:
    return RunConfig(task="toy_arithmetic", improver="h", seed=3, limit=4, improver_options={"minibatch": 4},
                     budget={"generations": 2}, **kw)


def finished_run(tmp_path: Path, name: str = "run", **kw) -> Path:
    run_dir = tmp_path / name
    Loop(toy_config(**kw), run_dir, model=ScriptedModel(fn=adder())).run()
    return run_dir


def test_a_held_lock_refuses_a_second_run_and_a_dead_holder_does_not(tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    with FolderLock(run_dir):  # stands for another live process: a second flock on the file is refused
        with pytest.raises(RunDirError, match="in use by another sia-bench process"):
            Loop(toy_config(), run_dir, model=ScriptedModel(fn=adder())).run()
    holder = subprocess.Popen([sys.executable, "-c", "import sys, time; sys.path.insert(0, '.');"
                               "from sia_bench.rundir import FolderLock;"
                               f"FolderLock({str(run_dir)!r}).acquire(); print('held', flush=True); time.sleep(60)"],
                              stdout=subprocess.PIPE, text=True, cwd=Path(__file__).resolve().parents[1])
    try:
        assert holder.stdout.readline().strip() == "held"
        with pytest.raises(RunDirError, match=rf"pid {holder.pid}"):
            FolderLock(run_dir).acquire()
    finally:
        holder.kill()  # a killed holder: its lock goes with it (stale lock, taken over)
        holder.wait()
    assert (run_dir / ".lock").read_text().strip() == str(holder.pid)
    record = Loop(toy_config(), run_dir, model=ScriptedModel(fn=adder())).run()
    assert record.status == "finished"


def test_a_folder_holding_another_run_is_refused(tmp_path):
    run_dir = finished_run(tmp_path)
    for change in ({"seed": 4}, {"improver": "none", "improver_options": {}}, {"task_options": {"max_operand": 9}},
                   {"limit": 5}):
        with pytest.raises(RunDirError, match="holds another run"):
            Loop(toy_config().model_copy(update=change), run_dir, model=ScriptedModel(fn=adder())).run()
    same = Loop(toy_config(), run_dir, model=ScriptedModel(fn=adder())).run()  # the same command: finished as it was
    assert same.status == "finished"


def test_damage_is_named_never_silently_restarted(tmp_path):
    good = finished_run(tmp_path, "good")

    def damaged(name: str) -> Path:
        copy = tmp_path / name
        shutil.copytree(good, copy)
        return copy

    cases = []
    run_dir = damaged("no-gen")
    shutil.rmtree(run_dir / "gen_001")
    cases.append((run_dir, "gen_001/generation.json is missing"))
    run_dir = damaged("no-record")
    (run_dir / "run.json").unlink()
    cases.append((run_dir, "run.json is missing"))
    run_dir = damaged("torn-record")
    (run_dir / "run.json").write_text((run_dir / "run.json").read_text()[:200])
    cases.append((run_dir, "run.json is unreadable"))
    run_dir = damaged("not-a-record")
    (run_dir / "run.json").write_text(json.dumps({"schema_version": "1.0", "generations": "many"}))
    cases.append((run_dir, "run.json is not a valid run record"))
    for run_dir, message in cases:
        with pytest.raises((RunDirError, ValueError), match=message):
            resume(run_dir, model=ScriptedModel(fn=adder()))
        assert str(run_dir) in str(_error(lambda: resume(run_dir, model=ScriptedModel(fn=adder()))))

    run_dir = damaged("garbage-toml")
    record = RunRecord.load(run_dir)
    record.status, record.final = "running", {}
    record.save(run_dir)
    best = record.generations[record.best_generation].candidate.harness_dir
    (run_dir / best / "harness.toml").write_text("few_shot = [unclosed\n")
    err = _error(lambda: resume(run_dir, model=ScriptedModel(fn=adder())))
    assert f"{best}/harness.toml is not valid TOML" in str(err)


def _error(call) -> Exception:
    try:
        call()
    except Exception as err:  # noqa: BLE001 - the test inspects whatever was raised
        return err
    raise AssertionError("no error")


def test_starting_harness_from_a_folder_and_overrides(tmp_path):
    task = build_task("toy_arithmetic", {})
    start = task.default_harness().with_params({"parser": "first_integer"})
    folder = tmp_path / "start"
    start.save(folder)
    record = Loop(toy_config(harness={"dir": str(folder), "params": {"few_shot": "2"}}), tmp_path / "run",
                  model=ScriptedModel(fn=adder())).run()
    gen0 = Harness.load(tmp_path / "run" / "gen_000" / "harness", task.default_harness())
    assert gen0["parser"] == "first_integer" and gen0["few_shot"] == 2
    assert record.start_harness["params"] == {"few_shot": 2} and record.start_harness["digest"] == gen0.digest
    assert record.improver["label"].endswith("· start start (few_shot=2)")
    assert record.config["harness"]["dir"] == str(folder.resolve())
    assert record.generations[0].val["accuracy"] == 1.0  # the start's parser reads the hedged answers right
    default_again = Loop(toy_config(harness={"params": {"few_shot": 0}}), tmp_path / "default",
                         model=ScriptedModel(fn=adder())).run()
    assert default_again.config["harness"] == {"dir": None, "params": {}}  # a value equal to the default is no change
    assert default_again.improver["label"] == "h[heuristic]"


def test_a_new_folder_is_removed_when_the_start_fails(tmp_path):
    run_dir = tmp_path / "runs" / "fresh"

    class Exploding(ScriptedModel):
        def info(self):
            raise RuntimeError("model info unavailable")

    with pytest.raises(RuntimeError):
        Loop(toy_config(), run_dir, model=Exploding(fn=adder())).run()
    assert not run_dir.exists()
    started = time.time()
    assert Loop(toy_config(), run_dir, model=ScriptedModel(fn=adder())).run().status == "finished"
    assert time.time() - started < 60
