"""Splits that leak nothing: disjoint cells, several instances per split, and a reconstruction attack that fails.

The attack uses everything an improver or the agent can see: the train instances' inputs *and* targets (so the
full counts of every train cell) and a val or test instance's input (what a program sees). For each target cell it
looks for a visible full cell that contains the input molecules (``full >= input`` on every gene) and predicts
``full - input`` as the held-out molecules: ``train_input + train_target - val_input``. It must recover the old
design's targets exactly (so this test can fail) and nothing of the new design's.
"""

import numpy as np
import pytest
import scipy.sparse as sp

from sia_bench.task import TaskError
from tasks.scrna_denoise import metrics, splits
from tasks.scrna_denoise.data import mcv_split, to_counts
from tasks.scrna_denoise.task import ScrnaDenoiseTask


def reconstruct(visible_full: np.ndarray, target_input: np.ndarray) -> tuple[np.ndarray, int]:
    """(predicted held-out counts, number of cells matched): ``full - input`` from the closest dominating cell."""
    predicted = np.zeros_like(target_input)
    matched = 0
    for row, observed in enumerate(target_input):
        dominating = np.flatnonzero((visible_full >= observed).all(axis=1))
        if dominating.size:
            best = dominating[np.argmin((visible_full[dominating] - observed).sum(axis=1))]
            predicted[row] = visible_full[best] - observed
            matched += 1
    return predicted, matched


def reconstruction_score(visible_full: np.ndarray, target_input: np.ndarray, heldout: np.ndarray) -> tuple[float, int]:
    """mse_norm of the reconstruction as a denoised output (1.0: the held-out truth recovered exactly)."""
    predicted, matched = reconstruct(visible_full, target_input)
    predicted = predicted + 1e-3 * (predicted.sum(axis=1, keepdims=True) == 0)  # keep every cell non-empty
    null, perfect = metrics.mse(heldout, target_input), metrics.mse(heldout, heldout)
    return metrics.normalised(metrics.mse(heldout, predicted), null, perfect), matched


def _genes_of(item: splits.SplitInstance, n_genes: int, matrix: sp.csr_matrix) -> np.ndarray:
    """An instance's matrix placed back on the dataset's full gene axis (generous to the attacker)."""
    out = np.zeros((matrix.shape[0], n_genes))
    out[:, item.genes] = matrix.toarray()
    return out


def test_the_attack_recovers_the_old_design_exactly(counts):
    """The pre-2.0 design: three MCV splits of the same cells. train_input + train_target - val_input = val_target."""
    x = to_counts(counts)
    train_in, train_target, genes = mcv_split(x, seed=2)
    val_in, val_target, val_genes = mcv_split(x, seed=1)
    full = np.zeros(x.shape)
    full[:, genes] = (train_in + train_target).toarray()
    val_input = np.zeros(x.shape)
    val_input[:, val_genes] = val_in.toarray()
    heldout = np.zeros(x.shape)
    heldout[:, val_genes] = val_target.toarray()
    score, matched = reconstruction_score(full, val_input, heldout)
    assert matched == x.shape[0] and score == pytest.approx(1.0)


def _attack_task(task: ScrnaDenoiseTask) -> dict[str, tuple[float, int, int]]:
    n_genes = task.counts.counts.shape[1]
    visible = np.vstack([_genes_of(i, n_genes, i.train + i.heldout) for i in task.instances["train"]])
    out = {}
    for split in ("val", "test"):
        for item in task.instances[split]:
            score, matched = reconstruction_score(visible, _genes_of(item, n_genes, item.train),
                                                  _genes_of(item, n_genes, item.heldout))
            out[f"{split}-{item.index}"] = (score, matched, len(item.cells))
    return out


def test_the_attack_recovers_nothing_of_the_new_splits(h5ad_path):
    task = ScrnaDenoiseTask(path=str(h5ad_path))
    cells = {s: np.concatenate([i.cells for i in task.instances[s]]) for s in splits.SPLIT_ORDER}
    assert sum(len(c) for c in cells.values()) == len(set(np.concatenate(list(cells.values())))) == 80
    for name, (score, matched, n) in _attack_task(task).items():
        assert score < 0.2, (name, score, matched, n)  # far from the 1.0 of the old design


def test_the_attack_fails_on_pbmc68k():
    from tasks.scrna_denoise.data import pbmc68k_path

    try:
        pbmc68k_path()
    except TaskError as err:
        pytest.skip(str(err))
    task = ScrnaDenoiseTask()
    assert {s: len(task.split(s)) for s in splits.SPLIT_ORDER} == {"train": 4, "val": 4, "test": 4}
    results = _attack_task(task)
    assert max(score for score, _, _ in results.values()) < 0.2, results


def test_instances_are_disjoint_balanced_and_deterministic(h5ad_path):
    task = ScrnaDenoiseTask(path=str(h5ad_path), instance_cells=10)
    every = [i for s in splits.SPLIT_ORDER for i in task.instances[s]]
    cells = np.concatenate([i.cells for i in every])
    assert len(cells) == len(set(cells)) == 80 and {len(task.split(s)) for s in splits.SPLIT_ORDER} == {2}
    depth = np.asarray(task.counts.counts.sum(axis=1)).ravel()
    means = [depth[i.cells].mean() for i in every]
    assert max(means) / min(means) < 1.5  # depth-stratified
    for item in every:  # each instance's molecules split into train + held-out, nothing else
        full = task.counts.counts[item.cells][:, item.genes].toarray()
        assert np.array_equal((item.train + item.heldout).toarray(), full)
    again = ScrnaDenoiseTask(path=str(h5ad_path), instance_cells=10)
    assert [i.meta["checksum"] for i in again.split("test")] == [i.meta["checksum"] for i in task.split("test")]
    reseeded = ScrnaDenoiseTask(path=str(h5ad_path), instance_cells=10, seed=1)
    same_cells = [np.array_equal(a.cells, b.cells) for a, b in zip(reseeded.instances["test"], task.instances["test"])]
    assert all(same_cells)  # the seed changes the molecules drawn, never which cells are where
    assert [i.meta["checksum"] for i in reseeded.split("test")] != [i.meta["checksum"] for i in task.split("test")]


def test_the_mcv_seed_depends_on_unseen_molecules():
    """Replaying the generator needs the held-out molecules: two blocks differing only there get other draws."""
    a = to_counts(np.array([[5, 3, 2], [4, 4, 1]]))
    b = to_counts(np.array([[5, 3, 2], [4, 4, 2]]))
    draw = [splits.instance_rng("val", 0, 0, m).integers(1 << 30) for m in (a, b)]
    assert draw[0] != draw[1]


def test_no_held_out_molecules_is_a_clear_error(tmp_path):
    """Issue 17: one molecule per cell can leave an instance with nothing held out; say so instead of crashing."""
    import anndata

    x = np.zeros((60, 8), dtype=np.float32)
    x[np.arange(60), np.arange(60) % 8] = 1  # one molecule a cell: the 10% held out is usually empty
    path = tmp_path / "sparse.h5ad"
    anndata.AnnData(x).write_h5ad(path)
    with pytest.raises(TaskError, match="no held-out molecules"):
        ScrnaDenoiseTask(path=str(path), instance_cells=10).split("val")


def test_too_few_cells_or_too_small_instances(tmp_path, counts, h5ad_path):
    import anndata

    path = tmp_path / "few.h5ad"
    anndata.AnnData(counts[:20]).write_h5ad(path)
    with pytest.raises(TaskError, match="at least 30"):
        ScrnaDenoiseTask(path=str(path)).split("val")
    with pytest.raises(TaskError, match="instance_cells=5"):
        ScrnaDenoiseTask(path=str(h5ad_path), instance_cells=5).split("val")
