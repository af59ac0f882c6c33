"""The sandbox core: results come back over the channel, and the boundary holds for the basic escape routes."""

import os
import time

import numpy as np
import pytest

from sia_bench.sandbox import Limits, Session, check_mode, run

pytestmark = pytest.mark.skipif(check_mode("bwrap") is not None, reason="bubblewrap cannot start here")


def _run(code: str, **limits):
    return run(["python", "p.py"], files={"p.py": code.encode()}, limits=Limits(**{"wall_s": 10, **limits}))


def test_result_and_arrays_come_back():
    res = _run("import numpy as np, sandbox_child as c\nc.send({'kind': 'result', 'x': 2}, [np.eye(2)])\n")
    assert res.ok, res.error
    msg = res.last("result")
    assert msg.header["x"] == 2 and np.array_equal(msg.arrays[0], np.eye(2))


def test_the_project_and_the_harness_are_invisible():
    code = ("import os, sandbox_child as c\n"
            "c.send({'kind': 'result', 'root': sorted(os.listdir('/')), 'procs': sorted(p for p in os.listdir('/proc')"
            " if p.isdigit()), 'env': sorted(os.environ)})\n")
    res = _run(code)
    head = res.last("result").header
    assert len(head["procs"]) <= 3  # own PID namespace: the harness is not there
    assert not any(k.endswith("_KEY") or k.startswith("OPENAI") for k in head["env"])


def test_timeout_kills_the_whole_tree_promptly():
    code = ("import os, time\nfor _ in range(5):\n    if os.fork() == 0:\n        os.setsid(); time.sleep(1000)\n"
            "time.sleep(1000)\n")
    t0 = time.monotonic()
    res = _run(code, wall_s=2)
    assert res.timed_out and time.monotonic() - t0 < 7


def test_session_round_trip():
    code = ("import sandbox_child as c\nwhile True:\n    h, a = c.recv()\n    if h['kind'] == 'stop': break\n"
            "    c.send({'kind': 'sum', 'v': float(a[0].sum())})\n")
    with Session(["python", "w.py"], files={"w.py": code.encode()}, limits=Limits(wall_s=20)) as s:
        s.send({"kind": "go"}, [np.ones(10)])
        assert s.recv(10).header["v"] == 10.0
        s.send({"kind": "stop"})
        assert s.wait() == 0


def test_child_headers_encode_as_json_does():
    """The kit encodes headers without importing json (start-up cost); it must agree with json.dumps(default=str)."""
    import json
    import sys

    from sia_bench.sandbox.boundary import KIT

    sys.path.insert(0, str(KIT))
    try:
        import sandbox_child
    finally:
        sys.path.remove(str(KIT))
    value = {"a": 1, "b": [1.5, None, True, False, 'x"\n\u00e9\U0001f600'], 3: float("nan"), "i": float("-inf"),
             "n": np.int64(5), "f": np.float64(2.5), "t": (1, "2"), "d": {"k": {}}, 2.5: "k", None: 1, True: 2,
             "big": 10 ** 30, "o": object}
    assert sandbox_child._dumps(value) == json.dumps(value, separators=(",", ":"), default=str)


def test_a_program_runs_as_a_fresh_main_module():
    code = ("import sys, pickle, sandbox_child as c\nclass Point:\n    pass\n"
            "c.send({'kind': 'result', 'main': sys.modules['__main__'].__dict__.get('Point') is Point,"
            " 'file': __file__, 'argv': sys.argv, 'pickled': len(pickle.dumps(Point()))})\n")
    res = run(["python", "p.py", "--flag"], files={"p.py": code.encode()}, limits=Limits(wall_s=10))
    head = res.last("result").header
    assert head["main"] and head["file"] == "p.py" and head["argv"] == ["p.py", "--flag"] and head["pickled"] > 0


def test_without_a_writable_cgroup_rlimits_fence_each_process_and_the_record_says_so(monkeypatch):
    from sia_bench.sandbox import cgroups

    monkeypatch.setattr(cgroups, "create", lambda *a, **k: None)
    ok = _run("import sandbox_child as c\nc.send({'kind': 'result'})\n")
    assert ok.ok and ok.stats["limits"] == "rlimit-per-process"
    hog = _run("import numpy as np\nx = np.ones((30_000, 30_000))\n", memory_mb=512)
    assert not hog.ok and "memory" in hog.error.lower()


def test_stale_cgroups_of_dead_harnesses_are_swept(tmp_path):
    """A harness killed mid-run leaves its (empty) cgroups behind; the next one removes them, and only them."""
    from sia_bench.sandbox import cgroups

    dead = subprocess_pid_that_exited()
    stale, live, busy = (tmp_path / f"sia-sandbox-{dead}-aaaa", tmp_path / f"sia-sandbox-{os.getpid()}-bbbb",
                         tmp_path / f"sia-sandbox-{dead}-cccc")
    for d in (stale, live, busy):
        d.mkdir()
        (d / "cgroup.procs").write_text("")
    (busy / "cgroup.procs").write_text("123\n")
    for d in (stale, live):  # a real cgroup directory empties itself; here the files stand in for it
        (d / "cgroup.procs").unlink()
    assert cgroups.sweep_stale(tmp_path) == 1
    assert not stale.exists() and live.exists() and busy.exists()


def subprocess_pid_that_exited() -> int:
    import subprocess

    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid
