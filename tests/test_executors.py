"""Executors: in-process runs skip finished work and resume unfinished work; Ray runs one task per arm x seed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from sia_bench.executors import Job, LocalExecutor, RayExecutor, SilentReporter, run_status
from sia_bench.loop import RunConfig
from sia_bench.records import Budget, RunRecord


def toy_job(root: Path, seed: int, **task_options) -> Job:
    config = RunConfig(task="toy_arithmetic", improver="none", model="tiny", seed=seed, limit=2,
                       task_options=task_options, budget=Budget(generations=1)).to_dict()
    return Job("none", seed, str(root / f"none-s{seed}"), config)


def test_local_executor_isolates_failures_and_skips_finished_runs(tmp_path):
    bad = toy_job(tmp_path, 0, max_operand=-5)  # invalid task option: fails when the run builds its task
    good = toy_job(tmp_path, 1)
    executor = LocalExecutor(workers=1)
    results = executor.run([bad, good], SilentReporter())
    assert not results[0].ok and "max_operand" in results[0].error
    assert results[1].ok and not results[1].skipped and run_status(Path(good.run_dir)) == "finished"
    before = (Path(good.run_dir) / "run.json").read_bytes()
    again = executor.run([good], SilentReporter())
    assert again[0].ok and again[0].skipped
    assert (Path(good.run_dir) / "run.json").read_bytes() == before  # finished work untouched
    assert RunRecord.load(Path(good.run_dir)).final["test"]["accuracy"] >= 0


def test_a_damaged_run_is_reported_in_one_line_not_restarted(tmp_path):
    job = toy_job(tmp_path, 0)
    LocalExecutor(workers=1).run([job], SilentReporter())
    (Path(job.run_dir) / "run.json").write_text('{"schema_version": "1.0", "gen')
    assert run_status(Path(job.run_dir)) == "broken"
    [result] = LocalExecutor(workers=1).run([job], SilentReporter())
    assert not result.ok and "run.json is unreadable" in result.error and "Traceback" not in result.error
    assert (Path(job.run_dir) / "run.json").read_text() == '{"schema_version": "1.0", "gen'  # left as it was


def test_ray_executor_on_two_local_workers(tmp_path):
    pytest.importorskip("ray")
    jobs = [toy_job(tmp_path, 0), toy_job(tmp_path, 1)]

    class Seen(SilentReporter):
        def __init__(self):
            self.started_keys, self.finished_keys = [], []

        def started(self, job):
            self.started_keys.append(job.key)

        def finished(self, result):
            self.finished_keys.append(result.job.key)

    seen = Seen()
    results = RayExecutor(workers=2).run(jobs, seen)
    assert all(r.ok for r in results), [r.error for r in results]
    assert sorted(seen.started_keys) == sorted(seen.finished_keys) == ["none-s0", "none-s1"]
    for job in jobs:
        record = RunRecord.load(Path(job.run_dir))
        assert record.status == "finished" and record.seed == job.seed
        assert json.loads((Path(job.run_dir) / "config.json").read_text())["model"] == "tiny"
    import ray

    assert not ray.is_initialized()  # the executor shut down the instance it started
