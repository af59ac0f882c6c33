"""Every hostile program is stopped: it scores no better than returning its input (0) or fails with a named
reason, the harness returns within the timeout plus 5 s, and nothing outside the sandbox changed: no canary, no
site-packages entry, no task source or cache file, no listener reached, no secret in the record, no process left."""

from __future__ import annotations

import json
import os
import resource
import secrets
import time
from pathlib import Path

import pytest

from sia_bench.task import Answer
from tests.security.conftest import (BWRAP_MISSING, GRACE_S, SECRET_NAME, TIMEOUT_S, fingerprint, outside_folders,
                                     render, survivors, wait_for_no_survivors)
from tests.security.hostile_programs import HOSTILE

if BWRAP_MISSING and os.environ.get("CI"):
    raise RuntimeError(f"the sandbox security suite must run in CI, but bubblewrap cannot start: {BWRAP_MISSING}")
pytestmark = pytest.mark.skipif(bool(BWRAP_MISSING), reason=f"bubblewrap cannot start here: {BWRAP_MISSING}")

CLASSES = {h.attack_class for h in HOSTILE}


def test_the_table_covers_every_class_with_several_mechanisms():
    assert len(HOSTILE) >= 30 and len({h.id for h in HOSTILE}) == len(HOSTILE)
    expected = {"read_heldout", "write_outside", "network", "secrets", "processes", "result_files", "huge_output",
                "kill_parent", "disable_guard"}
    assert CLASSES == expected
    per_class = {c: sum(h.attack_class == c for h in HOSTILE) for c in CLASSES}
    assert per_class["read_heldout"] >= 6 and min(per_class.values()) >= 2, per_class


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


@pytest.mark.parametrize("hostile", HOSTILE, ids=[h.id for h in HOSTILE])
def test_hostile_program_is_contained(hostile, scrna_task, listeners, secret, tmp_path):
    from tasks.scrna_denoise import data as scdata
    from tasks.scrna_denoise.task import HERE

    canary = tmp_path / "canary"
    canary.mkdir()
    (canary / "canary.txt").write_text("untouched")
    marker = f"sia-hostile-{secrets.token_hex(6)}"
    source = scrna_task.hidden_paths()[0]
    program = render(hostile.body, CANARY=str(canary), SOURCE=source, TASK_DIR=str(HERE),
                     CACHE=str(scdata.cache_dir()), TCP_PORT=str(listeners.tcp.getsockname()[1]),
                     UDP_PORT=str(listeners.udp.getsockname()[1]), ABSTRACT=listeners.abstract_name,
                     UNIX_PATH=listeners.unix_path, SECRET_NAME=SECRET_NAME, MARKER=marker)
    folders = outside_folders(scrna_task, canary)
    before = fingerprint(*folders)
    etc_preload = Path("/etc/ld.so.preload").exists()
    rss_before = _peak_rss_mb()
    inst = scrna_task.split("val")[0]

    start = time.monotonic()
    score = scrna_task.score(inst, Answer({"program": program, "source": "model"}, method="model_program"))
    elapsed = time.monotonic() - start

    record = json.dumps(score.details, default=str) + score.feedback
    assert elapsed <= TIMEOUT_S + GRACE_S, f"the harness took {elapsed:.1f} s"
    assert score.value <= 1e-9, f"the attack scored {score.value}: {score.feedback}"
    assert score.details["failure"] or abs(score.value) < 1e-9, score.feedback
    assert score.details["failure"] is None or score.details["failure_kind"], "a failure without a kind"
    assert "ATTACK-SUCCEEDED" not in record, score.feedback
    assert secret not in record, "the harness's secret reached the record"
    assert fingerprint(*folders) == before, "something outside the sandbox changed"
    assert Path("/etc/ld.so.preload").exists() == etc_preload
    assert not (canary / "pwned").exists() and (canary / "canary.txt").read_text() == "untouched"
    assert listeners.received() == [], "a host listener was reached"
    assert wait_for_no_survivors(marker) == [], f"processes outlived the program: {survivors(marker)}"
    assert _peak_rss_mb() - rss_before < 400, "the harness's memory grew with the program's output"
    assert "\x1b" not in score.feedback and "\r" not in score.feedback  # program text is cleaned
    assert score.details.get("sandbox_mode") == "bwrap"
    peak = score.details.get("sandbox_memory_peak_mb")
    assert peak is None or peak <= scrna_task.opts["memory_mb"] * 1.02, f"the tree used {peak:.0f} MB"
