"""The task contract on a tiny synthetic dataset (-T path=), and the starting program on real pbmc68k."""

from dataclasses import replace

import numpy as np
import pytest

from sia_bench.harness import Patch, PatchError
from sia_bench.task import OptionError, TaskError
from tasks.scrna_denoise.task import ScrnaDenoiseTask, extract_program, harness_program


@pytest.fixture
def task(h5ad_path):
    t = ScrnaDenoiseTask(path=str(h5ad_path), timeout_s=60)
    yield t
    t.close()


def test_splits_hold_disjoint_instances(task):
    insts = {s: task.split(s) for s in ("train", "val", "test")}
    assert all(len(v) >= 1 for v in insts.values())
    ids = [i.id for v in insts.values() for i in v]
    assert len(ids) == len(set(ids))
    for split, items in insts.items():  # instances carry summaries and checksums, never the molecules
        for inst in items:
            assert inst.target is None and inst.meta["split"] == split and len(inst.meta["checksum"]) == 16
    info = task.data_info()
    assert info["cells"] == 80 and len(info["checksum"]) == 16 and info["sandbox"] == "bwrap"
    assert sum(i["cells"] for v in info["instances"].values() for i in v) == 80
    with pytest.raises(TaskError, match="not one of this task's instances"):
        task.score(replace(insts["val"][0], id="other-val-0"), task.null_answer(insts["val"][0]))


def test_controls_score_one_and_zero(task):
    controls = task.control_scores("val")
    assert controls["perfect"]["mse_norm"] == 1.0 and controls["null"]["mse_norm"] == 0.0
    for key in ("poisson_norm", "poisson_openproblems_norm"):
        assert controls["perfect"][key] == 1.0 and controls["null"][key] == 0.0


def test_render_shows_skill_and_program(task):
    harness = task.default_harness()
    prompt = task.render(harness, task.split("val")[0])
    assert prompt.messages[0]["content"] == harness.skill
    assert "def denoise(counts, n_components=30)" in prompt.messages[1]["content"]
    assert f"{task.split('val')[0].input['n_cells']} cells" in prompt.messages[1]["content"]


def test_extract_program():
    reply = "Here:\n```python\nimport numpy as np\ndef denoise(counts):\n    return counts\n```\nDone."
    code, _ = extract_program(reply)
    assert code.startswith("import numpy") and "def denoise" in code
    assert extract_program("no code here") == (None, "the reply holds no ```python code block")
    assert "does not parse" in extract_program("```python\ndef denoise(:\n```")[1]
    assert "defines a function denoise" in extract_program("```python\ndef f(x):\n    return x\n```")[1]
    bare, _ = extract_program("def denoise(counts):\n    return counts\n")
    assert bare is not None


def test_parse_falls_back_to_the_harness_program(task):
    harness, inst = task.default_harness(), task.split("val")[0]
    answer = task.parse(harness, inst, "I think denoising is good.")
    assert answer.method == "harness_program" and answer.ok
    assert answer.value["program"] == harness.components["program.py"]
    magic = harness.apply(Patch(op="set_param", param="method", value="magic"))
    answer = task.parse(magic, inst, "")
    assert "MAGIC" in answer.value["program"] and answer.value["source"] == "shipped programs/magic.py"


def test_scoring_the_starting_program_and_a_failure(task):
    harness, inst = task.default_harness(), task.split("val")[0]
    fallback = task.score(inst, task.parse(harness, inst, "no program"))
    assert fallback.details["failure"] is None and np.isfinite(fallback.value)
    assert "Scored the harness program.py because" in fallback.feedback
    assert fallback.value > 0  # low-rank data: sqrt-PCA beats doing nothing
    bad = task.parse(harness, inst, "```python\ndef denoise(counts):\n    return -counts\n```")
    assert bad.method == "model_program"
    scored = task.score(inst, bad)
    assert scored.value == 0.0 and "FAILED" in scored.feedback and "negative" in scored.feedback
    agg = task.aggregate([fallback, scored], [inst, inst])
    assert agg["failures"] == 1.0 and set(agg) >= {"mse_norm", "poisson_norm", "poisson_openproblems_norm", "mse"}


def test_harness_params_and_search_space_validate(task):
    harness = task.default_harness()
    assert harness_program(harness)[1] == "harness program.py"
    for name, values in task.search_space.items():
        for value in values:
            harness.specs[name].validate(name, value)
    with pytest.raises(PatchError):
        harness.specs["method"].validate("method", "dca")


def test_bad_options_and_bad_data(tmp_path, counts):
    with pytest.raises(OptionError):
        ScrnaDenoiseTask(dataset="nope")
    import anndata

    path = tmp_path / "lognorm.h5ad"
    anndata.AnnData(np.log1p(counts)).write_h5ad(path)
    with pytest.raises(TaskError, match="not integer counts"):
        ScrnaDenoiseTask(path=str(path)).split("val")


def test_baselines_run_through_the_sandbox(task):
    from baselines.scrna_denoise import ANCHORS, BASELINES

    inst = task.split("val")
    scores = {}
    for name, baseline in BASELINES.items():
        if name == "magic_impute":
            continue
        answer = baseline.predict(task, inst)[0]
        scores[name] = task.score(inst[0], answer)
        assert scores[name].details["failure"] is None, (name, scores[name].feedback)
    assert scores["no_denoise"].value == pytest.approx(0.0, abs=1e-12)
    assert scores["sqrt_pca"].value > 0
    assert all(a["value"] > 0 and a["source"] for a in ANCHORS)


def test_starting_program_on_pbmc68k():
    from tasks.scrna_denoise.data import pbmc68k_path

    try:
        pbmc68k_path()
    except TaskError as err:
        pytest.skip(str(err))
    task = ScrnaDenoiseTask()
    inst = task.split("val")[0]
    assert inst.input["n_genes"] <= 765 and 50 <= inst.input["n_cells"] <= 60
    score = task.score(inst, task.parse(task.default_harness(), inst, ""))
    assert score.details["failure"] is None and 0.0 < score.value < 1.0
