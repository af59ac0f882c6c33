"""Degenerate outputs score as no denoising with a named failure; honest methods never trip the rule; no NaN
without a reason."""

import importlib.util
import math

import numpy as np
import pytest

from sia_bench.task import Answer, TaskError
from tasks.scrna_denoise import degenerate
from tasks.scrna_denoise.data import to_counts
from tasks.scrna_denoise.task import HERE, ScrnaDenoiseTask

HONEST = {"no_denoise": "programs/no_denoise.py", "sqrt_pca": "program.py", "magic": "programs/magic.py",
          "knn_smooth": "programs/knn_smooth.py", "alra": "programs/alra.py"}


def _denoiser(relative):
    spec = importlib.util.spec_from_file_location("honest", HERE / relative)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.denoise


def _honest_outputs(x):
    return {name: np.clip(_denoiser(path)(x.copy()), 0, None) for name, path in HONEST.items()}


def _degenerate_outputs(x):
    """The issue's examples plus other ways of gaming a log-normalised MSE against a sparse held-out sample."""
    rows = np.arange(len(x))
    one = np.zeros_like(x)
    one[0, 0] = 1.0
    onehot = np.zeros_like(x)
    onehot[rows, x.argmax(axis=1)] = 1.0
    dump = x.copy()
    dump[rows, x.argmax(axis=1)] += 1e6
    cut = np.quantile(x[x > 0], 0.7)  # erase the smallest 70% of the observed entries
    return {"zeros_and_a_single_one": (one, "empty_cells"), "constant_1e308": (np.full_like(x, 1e308), "out_of_range"),
            "constant_5e-324": (np.full_like(x, 5e-324), "out_of_range"),
            "denormal_noise": (x + 1e-310, "out_of_range"), "constant_one": (np.ones_like(x), "no_variation"),
            "gene_means": (np.tile(x.mean(axis=0), (len(x), 1)), "no_variation"),
            "near_constant": (np.ones_like(x) + 1e-9 * x, "no_variation"), "one_gene_per_cell": (onehot, "concentrated"),
            "dump_gene": (dump, "concentrated"), "cubed": (x ** 3, "concentrated"),
            "threshold": (np.where(x > cut, x, 0.0), "erased"), "threshold_tiny": (np.where(x > cut, x, 1e-9), "erased")}


def test_honest_methods_pass_and_degenerate_outputs_are_named(counts):
    x = counts.astype(np.float64)
    for name, out in _honest_outputs(x).items():
        assert degenerate.check(out, to_counts(counts)) is None, name
    for name, (out, kind) in _degenerate_outputs(x).items():
        found = degenerate.check(out, to_counts(counts))
        assert found is not None and found.kind == kind, (name, found)


def test_honest_methods_pass_on_pbmc68k_instances():
    from tasks.scrna_denoise.data import pbmc68k_path

    try:
        pbmc68k_path()
    except TaskError as err:
        pytest.skip(str(err))
    task = ScrnaDenoiseTask()
    for item in (task.instances["val"][0], task.instances["test"][3]):
        for name, out in _honest_outputs(item.train.toarray().astype(np.float64)).items():
            assert degenerate.check(out, item.train) is None, (item.split, item.index, name)


@pytest.fixture
def task(h5ad_path):
    t = ScrnaDenoiseTask(path=str(h5ad_path), timeout_s=30)
    yield t
    t.close()


@pytest.mark.parametrize("body, kind", [
    ("out = np.zeros_like(counts); out[0, 0] = 1; return out", "degenerate_empty_cells"),
    ("return np.full_like(counts, 1e308)", "degenerate_out_of_range"),
    ("return np.full_like(counts, 5e-324)", "degenerate_out_of_range"),
    ("return counts ** 3", "degenerate_concentrated"),
    ("return counts * np.inf", "invalid_output"),
])
def test_degenerate_programs_score_as_no_denoising(task, body, kind):
    inst = task.split("val")[0]
    program = f"import numpy as np\n\ndef denoise(counts):\n    {body}\n"
    score = task.score(inst, Answer({"program": program, "source": "model"}, method="model_program"))
    assert score.value == 0.0 and score.details["failure_kind"] == kind, score.feedback
    assert "FAILED" in score.feedback and all(math.isfinite(score.details[k]) for k in ("mse_norm", "poisson_norm"))


def test_a_nan_metric_becomes_a_named_failure(task, monkeypatch):
    """The guard: if the metric itself is not finite on an accepted output, the record says why and scores 0."""
    from tasks.scrna_denoise import metrics

    inst = task.split("val")[0]
    real = metrics.all_losses
    calls = []

    def nan_once(train, test, denoised, *args):
        calls.append(1)
        out = real(train, test, denoised, *args)
        return {k: float("nan") for k in out} if len(calls) == 1 else out

    task.control_losses(inst)  # the controls are computed first, with the real metric
    monkeypatch.setattr(metrics, "all_losses", nan_once)
    score = task.score(inst, task.parse(task.default_harness(), inst, ""))
    assert score.details["failure_kind"] == "metric_nonfinite" and score.value == 0.0
    agg = task.aggregate([score], [inst])
    assert agg["failures"] == 1.0 and math.isfinite(agg["mse_norm"])
