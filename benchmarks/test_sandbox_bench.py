"""Sandbox start-up cost: one trivial sandboxed Python program against a plain ``subprocess`` Python start, as a ratio
measured in the same run (interleaved rounds, so machine noise hits both alike). Aim: at most 1.3x.

The trivial program sends one result message back (the sandboxed path: cgroup, ``sh`` + ``prlimit`` fence,
bubblewrap namespaces, ``python -I -S`` boot, framed channel, teardown); the reference runs the same interpreter
the way the pre-sandbox harness did, ``subprocess.run([sys.executable, script])``, and reads its stdout.

Run: ``.venv/bin/python -m pytest benchmarks/test_sandbox_bench.py -s -p no:cacheprovider`` (prints figures).
"""

from __future__ import annotations

import statistics
import subprocess
import sys
import time

import pytest

from sia_bench.sandbox import Limits, check_mode, run

ROUNDS = 25
TRIVIAL = b"import sandbox_child\nsandbox_child.send({'kind': 'result', 'ok': True})\n"

pytestmark = pytest.mark.skipif(check_mode("bwrap") is not None, reason="bubblewrap cannot start here")


def _timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def test_sandboxed_start_against_a_plain_subprocess(tmp_path):
    script = tmp_path / "p.py"
    script.write_text("print('ok')\n")

    def plain():
        out = subprocess.run([sys.executable, str(script)], capture_output=True, check=True)
        assert out.stdout == b"ok\n"

    def sandboxed(mode):
        res = run(["python", "p.py"], files={"p.py": TRIVIAL}, limits=Limits(wall_s=30), mode=mode)
        assert res.ok and res.last("result").header["ok"] is True, res.error

    for fn in (plain, lambda: sandboxed("bwrap"), lambda: sandboxed("process")):  # warm caches
        fn()
    times: dict[str, list[float]] = {"plain": [], "bwrap": [], "process": []}
    for _ in range(ROUNDS):
        times["plain"].append(_timed(plain))
        times["bwrap"].append(_timed(lambda: sandboxed("bwrap")))
        times["process"].append(_timed(lambda: sandboxed("process")))
    med = {k: statistics.median(v) for k, v in times.items()}
    ratios = [b / p for b, p in zip(times["bwrap"], times["plain"])]
    print(f"\nstart-up, median of {ROUNDS} interleaved rounds: plain subprocess {med['plain'] * 1e3:.1f} ms, "
          f"sandboxed (bwrap) {med['bwrap'] * 1e3:.1f} ms, weak mode {med['process'] * 1e3:.1f} ms; "
          f"ratio bwrap/plain {med['bwrap'] / med['plain']:.2f}x (median of per-round ratios "
          f"{statistics.median(ratios):.2f}x)")
    assert med["bwrap"] < 1.0  # a sandbox start stays well under a second
