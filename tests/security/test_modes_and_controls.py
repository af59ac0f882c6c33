"""Controls for the suite: the weak ``process`` mode is refused unless chosen explicitly and is recorded when chosen,
and the attacks are real (the public-source theft scores near 1.0 where the source is not hidden; a secret read in
the weak mode is redacted from the record)."""

from __future__ import annotations

import json

import pytest

from sia_bench.sandbox import boundary, session
from sia_bench.task import Answer, TaskError
from tests.security.conftest import BWRAP_MISSING, SECRET_NAME, render
from tests.security.hostile_programs import HOSTILE

pytestmark = pytest.mark.skipif(bool(BWRAP_MISSING), reason=f"bubblewrap cannot start here: {BWRAP_MISSING}")
BY_ID = {h.id: h for h in HOSTILE}


def test_without_bubblewrap_the_task_refuses_unless_the_weak_mode_is_chosen(h5ad_path, monkeypatch):
    from tasks.scrna_denoise.task import ScrnaDenoiseTask

    monkeypatch.setattr(boundary, "bwrap_path", lambda: None)
    monkeypatch.setattr(session, "_MODE_CHECKED", {})
    with pytest.raises(TaskError, match="bubblewrap .bwrap. is not installed.*sandbox=process"):
        ScrnaDenoiseTask(path=str(h5ad_path))
    weak = ScrnaDenoiseTask(path=str(h5ad_path), sandbox="process", timeout_s=30)
    inst = weak.split("val")[0]
    score = weak.score(inst, weak.parse(weak.default_harness(), inst, ""))
    assert score.details["sandbox_mode"] == "process" and weak.data_info()["sandbox"] == "process"
    assert score.details["sandbox_limits"] in ("cgroup-v1", "cgroup-v2", "rlimit-per-process")


def test_a_secret_read_in_the_weak_mode_is_redacted_from_the_record(h5ad_path, secret):
    """The weak mode has no boundary: the program can read the harness's environment through /proc. What it sends
    back is cleaned: the secret's value never reaches the feedback or the record."""
    from tasks.scrna_denoise.task import ScrnaDenoiseTask

    weak = ScrnaDenoiseTask(path=str(h5ad_path), sandbox="process", timeout_s=30)
    inst = weak.split("val")[0]
    program = render(BY_ID["secret_from_proc_environ"].body, SECRET_NAME=SECRET_NAME, MARKER="unused")
    score = weak.score(inst, Answer({"program": program, "source": "model"}, method="model_program"))
    record = json.dumps(score.details, default=str) + score.feedback
    assert f"leaked: {SECRET_NAME}=[redacted]" in record  # the weak mode let it read /proc/*/environ ...
    assert secret not in record and "[redacted]" in record  # ... and the harness kept the value out


def test_the_public_source_theft_is_real_where_the_source_is_not_hidden(scrna_task):
    """The same program the suite runs, with the dataset's file left visible: it recovers the held-out molecules."""
    from tasks.scrna_denoise import metrics
    from tasks.scrna_denoise.execute import run_program

    item = scrna_task.instances["val"][0]
    program = render(BY_ID["read_public_source_python"].body, SOURCE=scrna_task.hidden_paths()[0], MARKER="unused")
    run = run_program(program, item.train, timeout_s=60, hidden=[])
    assert run.error is None, run.program_output
    null, perfect = metrics.mse(item.heldout, item.train), metrics.mse(item.heldout, item.heldout)
    assert metrics.normalised(metrics.mse(item.heldout, run.denoised), null, perfect) > 0.9
