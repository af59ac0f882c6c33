"""Count validation, the MCV split, and the loaders (tiny fixtures written here; real data when present)."""

import io
import tarfile

import numpy as np
import pytest
import scipy.sparse as sp

from sia_bench.task import TaskError
from tasks.scrna_denoise import data as scdata


def test_to_counts_accepts_integral_floats(counts):
    out = scdata.to_counts(counts)
    assert out.dtype == np.int64 and sp.isspmatrix_csr(out)
    assert np.array_equal(out.toarray(), counts.astype(np.int64))


@pytest.mark.parametrize("bad, message", [
    (np.array([[1.0, 2.5]]), "not integer counts"),
    (np.array([[1.0, -1.0]]), "negative"),
    (np.array([[1.0, np.nan]]), "NaN"),
    (np.zeros((0, 3)), "empty"),
])
def test_to_counts_rejects_non_counts(bad, message):
    with pytest.raises(TaskError, match=message):
        scdata.to_counts(bad)


def test_drop_empty_cells_and_genes():
    x = np.array([[0, 0, 0], [1, 0, 2], [0, 0, 3]])
    out = scdata.drop_empty(scdata.CountData(scdata.to_counts(x), ["a", "b", "c"], "test"))
    assert out.counts.shape == (2, 2) and out.genes == ["a", "c"]
    assert any("1 all-zero cells" in n for n in out.notes) and any("1 all-zero genes" in n for n in out.notes)
    with pytest.raises(TaskError, match="every cell has zero counts"):
        scdata.drop_empty(scdata.CountData(scdata.to_counts(np.zeros((2, 2))), ["a", "b"], "zeros"))


def test_mcv_split_partitions_molecules(counts):
    x = scdata.to_counts(counts)
    train, test, genes = scdata.mcv_split(x, seed=3)
    assert np.array_equal((train + test).toarray(), x[:, genes].toarray())
    assert train.min() >= 0 and test.min() >= 0
    assert 0.88 < train.sum() / x[:, genes].sum() < 0.92
    assert (np.asarray(train.sum(axis=0)).ravel() > 0).all()  # genes without training counts dropped
    again, _, _ = scdata.mcv_split(x, seed=3)
    other, _, _ = scdata.mcv_split(x, seed=4)
    assert (again != train).nnz == 0 and (other != train).nnz > 0


def test_mcv_split_drops_genes_without_training_counts():
    x = scdata.to_counts(np.array([[5, 1], [7, 0]]))
    for seed in range(50):  # with one molecule, gene 2 lands in test 10% of the time
        train, test, genes = scdata.mcv_split(x, seed)
        if not genes[1]:
            assert train.shape == (2, 1) and test.shape == (2, 1)
            return
    pytest.fail("gene without training counts never occurred")


def test_load_user_h5ad_layers_and_raw(tmp_path, counts):
    import anndata

    adata = anndata.AnnData(np.log1p(counts), layers={"counts": counts})
    adata.raw = anndata.AnnData(counts)
    path = tmp_path / "layers.h5ad"
    adata.write_h5ad(path)
    assert np.array_equal(scdata.load_user(path, "counts").counts.toarray(), counts)
    assert np.array_equal(scdata.load_user(path, "raw").counts.toarray(), counts)
    with pytest.raises(TaskError, match="not integer counts"):
        scdata.load_user(path)  # X holds log data
    with pytest.raises(TaskError, match="no layer 'spliced'"):
        scdata.load_user(path, "spliced")


def test_load_user_zarr_and_mtx_dir(tmp_path, counts):
    import anndata
    import scipy.io

    anndata.AnnData(counts).write_zarr(tmp_path / "tiny.zarr")
    assert np.array_equal(scdata.load_user(tmp_path / "tiny.zarr").counts.toarray(), counts)
    mtx = tmp_path / "mtx"
    mtx.mkdir()
    scipy.io.mmwrite(mtx / "matrix.mtx", sp.coo_matrix(counts.T.astype(np.int64)))  # 10x: genes x cells
    (mtx / "genes.tsv").write_text("".join(f"G{i}\tgene{i}\n" for i in range(counts.shape[1])))
    (mtx / "barcodes.tsv").write_text("".join(f"C{i}\n" for i in range(counts.shape[0])))
    assert np.array_equal(scdata.load_user(mtx).counts.toarray(), counts)


def test_load_user_bad_paths(tmp_path):
    with pytest.raises(TaskError, match="no such file"):
        scdata.load_user(tmp_path / "missing.h5ad")
    corrupt = tmp_path / "corrupt.h5ad"
    corrupt.write_bytes(b"not an hdf5 file")
    with pytest.raises(TaskError, match="cannot read"):
        scdata.load_user(corrupt)
    (tmp_path / "x.csv").write_text("1,2\n")
    with pytest.raises(TaskError, match="unknown format"):
        scdata.load_user(tmp_path / "x.csv")


def _fake_sdist(tmp_path, counts):
    """A tar.gz shaped like the scanpy sdist, holding a tiny zarr store in tests/_data."""
    import anndata

    store = tmp_path / "store.zarr"
    anndata.AnnData(counts).write_zarr(store)
    archive = tmp_path / "scanpy-0.0.tar.gz"
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(store, arcname=f"scanpy-0.0/tests/_data/{scdata.MOUSE10K_NAME}")
        tar.addfile(tarfile.TarInfo("scanpy-0.0/README.md"), io.BytesIO(b""))
    return archive, scdata._zarr_checksum(store)


def test_fetch_mouse10k_checks_checksum(tmp_path, counts, monkeypatch):
    archive, digest = _fake_sdist(tmp_path, counts)
    calls = []

    def downloader(requirement, dest):
        calls.append(requirement)
        target = dest / archive.name
        target.write_bytes(archive.read_bytes())
        return target

    cache = tmp_path / "cache"
    with pytest.raises(TaskError, match="checksum mismatch"):
        scdata.fetch_mouse10k(cache, downloader)
    assert not (cache / "scrna_denoise" / scdata.MOUSE10K_NAME).exists()  # nothing cached on mismatch
    monkeypatch.setattr(scdata, "MOUSE10K_SHA256", digest)
    path = scdata.fetch_mouse10k(cache, downloader)
    assert path == cache / "scrna_denoise" / scdata.MOUSE10K_NAME
    assert np.array_equal(scdata.load_user(path).counts.toarray(), counts)
    assert calls == [scdata.MOUSE10K_SDIST] * 2


def test_mouse10k_path_falls_back_to_fetch(tmp_path, monkeypatch):
    monkeypatch.setenv("SIA_BENCH_DATA", str(tmp_path / "no-shared"))
    fetched = []
    scdata.mouse10k_path(lambda cache: fetched.append(cache) or cache)
    assert fetched == [scdata.cache_dir()]


def test_fetch_rejects_a_broken_archive(tmp_path):
    def downloader(requirement, dest):
        bad = dest / "scanpy.tar.gz"
        bad.write_bytes(b"garbage")
        return bad

    with pytest.raises(TaskError, match="not a readable archive"):
        scdata.fetch_mouse10k(tmp_path / "cache", downloader)


def test_pbmc68k_counts_are_integral():
    try:
        scdata.pbmc68k_path()
    except TaskError as err:
        pytest.skip(str(err))
    data = scdata.load_pbmc68k()
    assert data.counts.shape == (700, 765) and data.counts.dtype == np.int64
    assert data.counts.sum() > 100_000


def test_mouse10k_is_verified_on_load(mouse10k_store, monkeypatch):
    monkeypatch.setenv("SIA_BENCH_DATA", str(mouse10k_store.parents[1]))
    data = scdata.drop_empty(scdata.load_mouse10k())
    assert data.counts.shape[1] == 715 and data.counts.shape[0] <= 10_000
    if mouse10k_store.resolve().is_relative_to(scdata.cache_dir().resolve()):
        return  # fetched into the cache: the shared-copy case below does not apply
    monkeypatch.setattr(scdata, "MOUSE10K_SHA256", "0" * 64)  # as if the shared copy had been altered
    fetched = []
    with pytest.raises(TaskError, match="does not match its checksum"):
        scdata.load_mouse10k(fetch=lambda cache: fetched.append(cache) or cache)
    assert fetched == [] and (mouse10k_store / "X").exists()  # a shared copy is never deleted or replaced


def test_a_tampered_cached_mouse10k_is_fetched_again(tmp_path, counts, monkeypatch):
    import anndata

    cached = scdata.cache_dir() / "scrna_denoise" / scdata.MOUSE10K_NAME
    anndata.AnnData(counts).write_zarr(cached)
    good = tmp_path / "fresh.zarr"
    anndata.AnnData(counts + 1).write_zarr(good)
    monkeypatch.setenv("SIA_BENCH_DATA", str(tmp_path / "no-shared"))
    monkeypatch.setattr(scdata, "MOUSE10K_SHA256", scdata.counts_sha256(scdata.to_counts(counts + 1)))
    fetched = []
    data = scdata.load_mouse10k(fetch=lambda cache: fetched.append(cache) or good)
    assert fetched == [scdata.cache_dir()] and np.array_equal(data.counts.toarray(), counts + 1)
    assert not cached.exists()  # the tampered copy is gone


def _write_10x_h5(path, genomes, counts, legacy):
    """A tiny 10x .h5 (cells x genes ``counts`` per genome): Cell Ranger 2 layout (one group per genome) or 3."""
    import h5py

    with h5py.File(path, "w") as f:
        if legacy:
            for name, x in zip(genomes, counts):
                m = sp.csc_matrix(x.T.astype(np.int32))  # stored genes x cells, CSC of the transpose = CSR
                g = f.create_group(name)
                g["data"], g["indices"], g["indptr"] = m.data, m.indices, m.indptr
                g["shape"] = np.array(m.shape)
                g["barcodes"] = np.array([f"C{i}".encode() for i in range(x.shape[0])])
                g["gene_names"] = np.array([f"{name}_g{i}".encode() for i in range(x.shape[1])])
                g["genes"] = np.array([f"{name}_id{i}".encode() for i in range(x.shape[1])])
            return
        x = np.hstack(counts)
        m = sp.csc_matrix(x.T.astype(np.int32))
        g = f.create_group("matrix")
        g["data"], g["indices"], g["indptr"], g["shape"] = m.data, m.indices, m.indptr, np.array(m.shape)
        g["barcodes"] = np.array([f"C{i}".encode() for i in range(x.shape[0])])
        feats = g.create_group("features")
        labels = [name for name, c in zip(genomes, counts) for _ in range(c.shape[1])]
        feats["genome"] = np.array([n.encode() for n in labels])
        feats["name"] = np.array([f"{n}_g{i}".encode() for i, n in enumerate(labels)])
        feats["id"] = np.array([f"{n}_id{i}".encode() for i, n in enumerate(labels)])
        feats["feature_type"] = np.array([b"Gene Expression"] * len(labels))


@pytest.mark.parametrize("legacy", [True, False], ids=["cellranger2", "cellranger3"])
def test_multi_genome_10x_h5_needs_a_genome(tmp_path, counts, legacy):
    """Issue 17: a 10x .h5 with several genomes asks for one; -T genome= picks it."""
    human, mouse = counts[:, :30], counts[:, 30:] + 1
    path = tmp_path / "barnyard.h5"
    _write_10x_h5(path, ["hg19", "mm10"], [human, mouse], legacy)
    assert scdata.genomes_10x(path) == ["hg19", "mm10"]
    with pytest.raises(TaskError, match="several genomes .hg19, mm10.; choose one with -T genome=NAME"):
        scdata.load_user(path)
    picked = scdata.load_user(path, genome="mm10")
    assert np.array_equal(picked.counts.toarray(), mouse) and "genome mm10" in picked.source
    with pytest.raises(TaskError, match="genome=rn6: barnyard.h5 holds the genomes hg19, mm10"):
        scdata.load_user(path, genome="rn6")
    single = tmp_path / "single.h5"
    _write_10x_h5(single, ["hg19"], [human], legacy)
    assert np.array_equal(scdata.load_user(single).counts.toarray(), human)


def test_genome_applies_to_10x_files_only(h5ad_path):
    with pytest.raises(TaskError, match="10x .h5 files only"):
        scdata.load_user(h5ad_path, genome="hg19")
    with pytest.raises(TaskError, match="user's 10x .h5 file"):
        scdata.load_dataset("pbmc68k", genome="hg19")
