"""Splits that leak nothing: disjoint cells per split, several instances per split, one MCV split per instance.

The old design drew three molecular cross-validation (MCV) splits of the *same* cells, so
``train_input + train_target - val_input`` rebuilt the val (and test) targets exactly. Here:

1. The cells are partitioned once into train / val / test thirds, stratified by sequencing depth (cells sorted by
   library size, each consecutive triple shuffled across the three splits) with a fixed seed, independent of the
   ``seed`` option, so no cell is ever in two splits, in any run.
2. Each split's cells are cut into ``n`` instances the same way (depth-stratified, disjoint).
3. Each instance gets its own MCV split of its own molecules (``train = Binomial(X, 0.9)``, ``heldout = X - train``,
   OpenProblems' denoising protocol) and is scored with the OpenProblems metric on its own; a split's score is the
   mean over its instances (per-instance scores are kept for paired statistics).

The binomial draw is seeded from the split seed, the instance index *and a hash of the instance's full counts*: a
program that sees only the training molecules (and might know the seeds from the sources) cannot replay the
generator to recover which molecules were held out, because the seed depends on the molecules it does not see.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from sia_bench.task import TaskError

from .data import mcv_split

SPLIT_ORDER = ("train", "val", "test")
PARTITION_SEED = 20240531  # fixed: the cell partition never depends on run options
SPLIT_SEEDS = {"test": 0, "val": 1, "train": 2}  # MCV seeds; the task's seed option is added
MIN_INSTANCE_CELLS = 10


@dataclass(frozen=True)
class SplitInstance:
    """One scoring unit: the molecules a program sees (``train``) and those held out from it (``heldout``)."""

    split: str
    index: int
    cells: np.ndarray  # row indices into the task's count matrix
    train: sp.csr_matrix
    heldout: sp.csr_matrix
    genes: np.ndarray  # indices of the genes kept (those with training molecules in these cells)

    @property
    def checksum(self) -> str:
        """sha256 (16 hex) of both matrices: records name exactly which molecules were scored."""
        h = hashlib.sha256()
        for m in (self.train, self.heldout):
            for part in (m.indptr, m.indices, m.data):
                h.update(np.ascontiguousarray(part, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]


def counts_digest(counts: sp.csr_matrix) -> bytes:
    x = counts.tocsr()
    x.sort_indices()
    h = hashlib.sha256(np.asarray(x.shape, dtype=np.int64).tobytes())
    for part in (x.indptr, x.indices, x.data):
        h.update(np.ascontiguousarray(part, dtype=np.int64).tobytes())
    return h.digest()


def stratified_groups(order_key: np.ndarray, n_groups: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Indices 0..len-1 dealt into ``n_groups`` disjoint groups of near-equal size, stratified by ``order_key``:
    items sorted by the key, each consecutive run of ``n_groups`` shuffled over the groups."""
    order = np.argsort(order_key, kind="stable")
    labels = np.empty(len(order), dtype=np.int64)
    for start in range(0, len(order), n_groups):
        run = order[start:start + n_groups]
        labels[run] = rng.permutation(n_groups)[:len(run)]
    return [np.sort(np.flatnonzero(labels == g)) for g in range(n_groups)]


def default_instance_cells(n_cells: int) -> int:
    """About four instances per split for small data (pbmc68k: 700 cells -> 58), at most 500 cells each."""
    return int(min(500, max(50, n_cells // 12)))


def instance_rng(split: str, index: int, seed: int, full: sp.csr_matrix) -> np.random.Generator:
    words = np.frombuffer(counts_digest(full), dtype=np.uint32)
    return np.random.default_rng([SPLIT_SEEDS[split] + seed, index, *map(int, words)])


def build(counts: sp.csr_matrix, instance_cells: int = 0, seed: int = 0) -> dict[str, list[SplitInstance]]:
    """Every split's instances, deterministic given the counts, ``instance_cells`` (0 = automatic) and ``seed``."""
    counts = counts.tocsr()
    n_cells = counts.shape[0]
    size = instance_cells or default_instance_cells(n_cells)
    if n_cells < 3 * MIN_INSTANCE_CELLS:
        raise TaskError(f"the data hold {n_cells} cells; the task needs at least {3 * MIN_INSTANCE_CELLS} "
                        f"(disjoint train, val and test cells, {MIN_INSTANCE_CELLS} or more each)")
    if size < MIN_INSTANCE_CELLS:
        raise TaskError(f"-T instance_cells={size}: at least {MIN_INSTANCE_CELLS} cells per instance are needed")
    libsize = np.asarray(counts.sum(axis=1)).ravel()
    rng = np.random.default_rng(PARTITION_SEED)
    parts = stratified_groups(libsize, len(SPLIT_ORDER), rng)
    out: dict[str, list[SplitInstance]] = {}
    for split, cells in zip(SPLIT_ORDER, parts):
        n = max(1, len(cells) // size)
        blocks = [cells[g] for g in stratified_groups(libsize[cells], n, rng)]
        out[split] = []
        for index, block in enumerate(blocks):
            full = counts[block]
            train, heldout, genes = mcv_split(full, instance_rng(split, index, seed, full))
            out[split].append(SplitInstance(split, index, block, train, heldout, np.flatnonzero(genes)))
    return out


def check_scorable(instances: list[SplitInstance], where: str) -> None:
    """A held-out part without molecules cannot be scored (no truth to compare with): say so, and what to do."""
    for inst in instances:
        total = int(inst.heldout.sum())
        if total == 0 or inst.train.shape[1] == 0:
            raise TaskError(f"{where}: instance {inst.split}-{inst.index} ({len(inst.cells)} cells, "
                            f"{int(inst.train.sum())} training molecules) has no held-out molecules to score; "
                            "the data hold too few counts per cell for molecular cross-validation. Use a deeper "
                            "dataset or larger instances (-T instance_cells=...)")
