"""Exact resume: a run killed at any moment and continued ends with the same record as an uninterrupted one (timings
aside). Kills are injected at 12 moments of the loop's event stream (including inside generation 1 and right after a
generation's commit), twice in a row on one run, and twice with a real SIGKILL of a separate process."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from sia_bench.harness import Patch
from sia_bench.improvers.base import Improver, LoopState, Proposal
from sia_bench.loop import Loop, RunConfig, resume
from sia_bench.records import RunRecord
from sia_bench.registry import IMPROVERS
from tests.doubles import ScriptedModel, adder

ROOT = Path(__file__).resolve().parents[1]
TIMING = {"seconds", "finished_at", "created_at", "wall_seconds", "model_seconds", "sandbox_seconds", "train_seconds",
          "environment", "run_id"}


class Killed(BaseException):
    """Stands for SIGKILL: nothing in the loop catches a BaseException that is not an Exception."""


def config() -> RunConfig:
    return RunConfig(task="toy_arithmetic", improver="h", seed=7, limit=8, improver_options={"minibatch": 8},
                     budget={"generations": 3})


@dataclass
class FlipFlop(Improver):
    """Proposes A, B, A again (a candidate scored before: no new rollouts), then stops before its budget ends."""

    name = "flipflop"

    def propose(self, state: LoopState) -> Proposal:
        if state.generation == 4:
            return Proposal(stop=True, levers=["stop"], reason="nothing left to flip")
        text = "ALPHA" if state.generation % 2 else "BETA"
        return Proposal(harness=state.task.default_harness().apply(Patch("append", text=text)), levers=["harness"])


IMPROVERS.register("flipflop", FlipFlop)


def without_timings(data):
    if isinstance(data, dict):
        return {k: without_timings(v) for k, v in data.items() if k not in TIMING and not k.endswith("_seconds")}
    if isinstance(data, list):
        return [without_timings(v) for v in data]
    return data


def outcome(run_dir: Path) -> dict:
    """Everything a run leaves that must not depend on interruptions: the record, the final summary, the generation
    records and the set of files."""
    files = sorted(str(p.relative_to(run_dir)) for p in run_dir.rglob("*") if p.is_file() and p.name != ".lock")
    gens = [json.loads(p.read_text()) for p in sorted(run_dir.glob("gen_*/generation.json"))]
    return without_timings({"record": RunRecord.load(run_dir).model_dump(mode="json"), "files": files,
                            "summary": json.loads((run_dir / "final" / "summary.json").read_text()), "gens": gens})


def run_killed_at(run_dir: Path, kill_at: int | None, cfg: RunConfig | None = None) -> list[str]:
    """Run until the ``kill_at``-th event (counted from 0), where the run dies; returns the events seen."""
    seen: list[str] = []

    def events(kind: str, **info) -> None:
        seen.append(f"{kind}:{info.get('index', info.get('split', ''))}")
        if kill_at is not None and len(seen) - 1 == kill_at:
            raise Killed()

    try:
        Loop(cfg or config(), run_dir, model=ScriptedModel(fn=adder()), events=events).run()
    except Killed:
        pass
    return seen


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference") / "run"
    events = run_killed_at(run_dir, None)
    return outcome(run_dir), events


def kill_points(events: list[str]) -> list[int]:
    """12 moments: inside generation 1's val pass, right after the commits of generations 0 and 1, at the start of
    generation 1, inside the final test pass, and seven more drawn at random (seeded)."""
    gen1_val = [i for i, e in enumerate(events) if e == "sample:val"]
    forced = {events.index("generation_done:"),  # generation 0 committed
              [i for i, e in enumerate(events) if e == "generation_done:"][1],  # generation 1 committed
              events.index("generation:1"), gen1_val[len(gen1_val) // 2 + 4],
              [i for i, e in enumerate(events) if e == "sample:test"][3]}
    rest = sorted(set(range(len(events))) - forced)
    return sorted(forced | set(random.Random(0).sample(rest, 12 - len(forced))))


def test_every_kill_point_resumes_to_the_uninterrupted_record(reference, tmp_path):
    expected, events = reference
    points = kill_points(events)
    assert len(points) >= 10
    for point in points:
        run_dir = tmp_path / f"killed-{point}"
        run_killed_at(run_dir, point)
        partial = RunRecord.load(run_dir)
        assert partial.status == "running", (point, events[point])
        if partial.generations:  # generation 0's best is on disk as soon as generation 0 is
            assert partial.best_generation is not None
        resumed = resume(run_dir, model=ScriptedModel(fn=adder()))
        assert resumed.status == "finished"
        assert outcome(run_dir) == expected, f"kill at event {point} ({events[point]})"


def test_killed_twice_still_resumes_exactly(reference, tmp_path):
    expected, events = reference
    run_dir = tmp_path / "twice"
    run_killed_at(run_dir, events.index("generation:1") + 3)
    seen: list[str] = []

    def die_later(kind: str, **info) -> None:
        seen.append(kind)
        if len(seen) == 20:
            raise Killed()

    with pytest.raises(Killed):
        resume(run_dir, model=ScriptedModel(fn=adder()), events=die_later)
    resume(run_dir, model=ScriptedModel(fn=adder()))
    assert outcome(run_dir) == expected


def test_repeated_candidates_and_a_stop_survive_a_kill(tmp_path):
    """Without the kill, generation 3 re-proposes generation 1's candidate (scored from the cache: no rollouts) and
    generation 4 stops the run; a kill after generation 2 or 3 must not change either."""
    cfg = config().model_copy(update={"improver": "flipflop", "improver_options": {},
                                      "budget": config().budget.model_copy(update={"generations": 8})})
    events = run_killed_at(tmp_path / "reference", None, cfg)
    expected = outcome(tmp_path / "reference")
    record = expected["record"]
    assert record["stop_reason"] == "nothing left to flip" and len(record["generations"]) == 5
    assert record["generations"][3]["ledger"]["rollouts"] == {}  # the cached candidate cost nothing
    commits = [i for i, e in enumerate(events) if e == "generation_done:"]
    for point in (commits[2], commits[3], commits[3] + 1):
        run_dir = tmp_path / f"killed-{point}"
        run_killed_at(run_dir, point, cfg)
        resume(run_dir, model=ScriptedModel(fn=adder()))
        assert outcome(run_dir) == expected, f"kill at event {point} ({events[point]})"


CHILD = """
import os, signal, sys
sys.path.insert(0, {root!r})
from tests.test_resume import config
from tests.doubles import ScriptedModel, adder
from sia_bench.loop import Loop
seen = []
def events(kind, **info):
    seen.append(kind)
    if len(seen) == {kill_at}:
        os.kill(os.getpid(), signal.SIGKILL)
Loop(config(), {run_dir!r}, model=ScriptedModel(fn=adder()), events=events).run()
"""


@pytest.mark.parametrize("which", ["generation_done", "sample"])
def test_a_real_sigkill_resumes_exactly(reference, tmp_path, which):
    expected, events = reference
    kinds = [e.split(":")[0] for e in events]
    kill_at = [i for i, k in enumerate(kinds) if k == which][2 if which == "generation_done" else 20] + 1
    run_dir = tmp_path / "sigkill"
    proc = subprocess.run([sys.executable, "-c", CHILD.format(root=str(ROOT), kill_at=kill_at, run_dir=str(run_dir))],
                          capture_output=True, text=True, timeout=300, cwd=ROOT)
    assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
    resume(run_dir, model=ScriptedModel(fn=adder()))  # the dead process's lock is free: taken over
    assert outcome(run_dir) == expected
    assert os.path.exists(run_dir / ".lock")
