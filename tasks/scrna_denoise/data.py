"""Count matrices for the denoising task and the molecular cross-validation (MCV) split.

Sources: ``pbmc68k`` (the 700 x 765 PBMC matrix inside the scanpy wheel, counts recovered from its log-normalised
``raw.X``), ``mouse10k`` (10,000 x 1,000 UMI counts from scanpy's source distribution, read from
``../shared/data`` or fetched once into a cache with pip and checked by checksum), or any user file
(``.h5ad``, ``.zarr``, 10x ``.h5``, or a 10x matrix-market directory).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import scipy.sparse as sp

from sia_bench.task import TaskError

REPO_ROOT = Path(__file__).resolve().parents[2]
MOUSE10K_NAME = "10x-10k-subset.zarr"
MOUSE10K_SDIST = "scanpy==1.11.5"
# sha256 of X as C-ordered little-endian float32 (10,000 x 1,000): identical in ../shared and in the sdist.
MOUSE10K_SHA256 = "fbeaf1f95e926217fa68ec0fbe91783e2e3d21856f286b3d2f239f4d6e75418a"
PBMC_TOLERANCE = 0.1  # the wheel's raw.X is float32 log1p data: recovered counts deviate by up to ~0.08
COUNT_TOLERANCE = 1e-6


@dataclass
class CountData:
    """Integer counts (cells x genes, CSR int64) plus where they came from."""

    counts: sp.csr_matrix
    genes: list[str]
    source: str
    notes: list[str] = field(default_factory=list)

    @property
    def checksum(self) -> str:
        h = hashlib.sha256()
        for part in (self.counts.indptr, self.counts.indices, self.counts.data):
            h.update(np.ascontiguousarray(part, dtype=np.int64).tobytes())
        return h.hexdigest()[:16]


def data_dir() -> Path:
    """``$SIA_BENCH_DATA`` or ``../shared/data`` next to the repository."""
    return Path(os.environ.get("SIA_BENCH_DATA") or REPO_ROOT.parent / "shared" / "data")


def cache_dir() -> Path:
    return Path(os.environ.get("SIA_BENCH_CACHE") or Path.home() / ".cache" / "sia_bench")


# -- counts checks -----------------------------------------------------------------------------------------------
def to_counts(x: Any, tolerance: float = COUNT_TOLERANCE, what: str = "the matrix") -> sp.csr_matrix:
    """Validate a matrix as raw counts (finite, non-negative, integral within ``tolerance``) and return CSR int64."""
    m = sp.csr_matrix(x, dtype=np.float64) if not sp.issparse(x) else x.tocsr().astype(np.float64)
    if m.ndim != 2 or m.shape[0] == 0 or m.shape[1] == 0:
        raise TaskError(f"{what} is empty (shape {m.shape}); the task needs cells x genes counts")
    values = m.data
    if not np.all(np.isfinite(values)):
        raise TaskError(f"{what} holds {int((~np.isfinite(values)).sum())} NaN/inf values: raw counts are needed")
    if values.size and values.min() < 0:
        raise TaskError(f"{what} holds negative values (min {values.min():g}): raw counts are needed, not scaled "
                        "or centred data; pass -T layer=NAME if the counts are in a layer")
    deviation = np.abs(values - np.round(values))
    if deviation.size and deviation.max() > tolerance:
        i = int(deviation.argmax())
        raise TaskError(f"{what} is not integer counts: value {values[i]:g} is {deviation[i]:.3g} from the nearest "
                        f"integer ({int((deviation > tolerance).sum())} such values). Molecular cross-validation "
                        "needs raw UMI counts; pass -T layer=NAME (or 'raw') if they are stored elsewhere")
    out = sp.csr_matrix((np.round(values).astype(np.int64), m.indices, m.indptr), shape=m.shape)
    out.eliminate_zeros()
    return out


def drop_empty(data: CountData) -> CountData:
    """Remove all-zero cells and genes; they carry no molecules to split and no signal to score."""
    x = data.counts
    cells, genes = np.asarray(x.sum(axis=1)).ravel() > 0, np.asarray(x.sum(axis=0)).ravel() > 0
    if not cells.any():
        raise TaskError(f"{data.source}: every cell has zero counts")
    notes = list(data.notes)
    if (~cells).any():
        notes.append(f"dropped {int((~cells).sum())} all-zero cells")
    if (~genes).any():
        notes.append(f"dropped {int((~genes).sum())} all-zero genes")
    return CountData(x[cells][:, genes].tocsr(), [g for g, k in zip(data.genes, genes) if k], data.source, notes)


def subsample_cells(data: CountData, max_cells: int | None, seed: int) -> CountData:
    if not max_cells or data.counts.shape[0] <= max_cells:
        return data
    keep = np.sort(np.random.default_rng(seed).choice(data.counts.shape[0], max_cells, replace=False))
    return CountData(data.counts[keep], data.genes, data.source,
                     data.notes + [f"subsampled {max_cells} of {data.counts.shape[0]} cells (seed {seed})"])


# -- molecular cross-validation ------------------------------------------------------------------------------------
def mcv_split(counts: sp.csr_matrix, seed: int | np.random.Generator,
              train_fraction: float = 0.9) -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray]:
    """``train = Binomial(X, p)``, ``test = X - train``; genes without training counts are dropped.

    The same distribution as ``molecular_cross_validation.util.split_molecules(X, 0.9, 0.0, ...)`` used by
    OpenProblems, drawn only on the non-zero entries with a PCG64 generator (fast; not the same random stream);
    ``seed`` is an integer or a generator. Returns (train, test, kept_gene_mask).
    """
    x = counts.tocsr().copy()
    x.sort_indices()
    drawn = np.random.default_rng(seed).binomial(x.data, train_fraction)
    n_cells, n_genes = x.shape
    genes = np.bincount(x.indices, weights=drawn, minlength=n_genes) > 0
    rows = np.repeat(np.arange(n_cells), np.diff(x.indptr))
    in_genes, new_col = genes[x.indices], (np.cumsum(genes) - 1)[x.indices]
    parts = []
    for values in (drawn, x.data - drawn):  # built directly: CSR column slicing is slow on 10k cells
        keep = in_genes & (values > 0)
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows[keep], minlength=n_cells))])
        parts.append(sp.csr_matrix((values[keep], new_col[keep], indptr), shape=(n_cells, int(genes.sum()))))
    return parts[0], parts[1], genes


# -- sources -------------------------------------------------------------------------------------------------------
def genomes_10x(path: Path) -> list[str]:
    """The genomes a 10x ``.h5`` file holds: groups of a legacy (v2) file, ``features/genome`` of a v3 file."""
    import h5py

    with h5py.File(path, "r") as f:
        if "matrix" not in f:
            return sorted(f.keys())
        features = f["matrix"].get("features")
        if features is None or "genome" not in features:
            return []
        return sorted({g.decode() if isinstance(g, bytes) else str(g) for g in features["genome"][()]})


def _read_10x_h5(path: Path, genome: str | None):
    import scanpy

    genomes = genomes_10x(path)
    if genome and genome not in genomes:
        raise TaskError(f"-T genome={genome}: {path.name} holds the genomes {', '.join(genomes) or '(none named)'}")
    if not genome and len(genomes) > 1:
        raise TaskError(f"{path.name} holds several genomes ({', '.join(genomes)}); choose one with -T genome=NAME")
    return scanpy.read_10x_h5(path, genome=genome)


def _read_anndata(path: Path, genome: str | None = None):
    import anndata

    if genome and path.suffix != ".h5":
        raise TaskError(f"-T genome= applies to 10x .h5 files only, not {path.name}")
    if path.suffix == ".zarr" or (path.is_dir() and (path / ".zgroup").exists()):
        return anndata.read_zarr(path)
    if path.suffix == ".h5ad":
        return anndata.read_h5ad(path)
    import scanpy

    if path.suffix == ".h5":
        return _read_10x_h5(path, genome)
    if path.is_dir():
        return scanpy.read_10x_mtx(path)
    if path.suffix == ".mtx" or path.name.endswith(".mtx.gz"):
        return scanpy.read_mtx(path)
    raise TaskError(f"{path}: unknown format; use .h5ad, .zarr, a 10x .h5 file or a 10x matrix-market directory")


def load_user(path: str | Path, layer: str | None = None, genome: str | None = None) -> CountData:
    """Counts from a user file: ``X``, ``raw`` (``-T layer=raw``) or a named layer; ``genome`` for 10x .h5."""
    path = Path(path).expanduser()
    if not path.exists():
        raise TaskError(f"-T path={path}: no such file or directory")
    try:
        adata = _read_anndata(path, genome)
    except TaskError:
        raise
    except Exception as err:  # corrupt or truncated files: say which file and why
        raise TaskError(f"cannot read {path}: {type(err).__name__}: {err}") from None
    if layer in (None, "", "X"):
        x, genes = adata.X, list(map(str, adata.var_names))
    elif layer == "raw":
        if adata.raw is None:
            raise TaskError(f"{path} has no .raw")
        x, genes = adata.raw.X, list(map(str, adata.raw.var_names))
    elif layer in adata.layers:
        x, genes = adata.layers[layer], list(map(str, adata.var_names))
    else:
        raise TaskError(f"{path} has no layer {layer!r}; layers: {', '.join(adata.layers) or '(none)'}; "
                        "use X, raw or a layer name")
    if x is None:
        raise TaskError(f"{path}: the matrix {layer or 'X'} is empty")
    counts = to_counts(x, what=f"{path.name} [{layer or 'X'}]")
    return CountData(counts, genes, f"{path}[{layer or 'X'}]" + (f" genome {genome}" if genome else ""))


def pbmc68k_path() -> Path:
    spec = importlib.util.find_spec("scanpy")
    if spec is None or not spec.submodule_search_locations:
        raise TaskError("pbmc68k needs the scanpy package (pip install scanpy)")
    path = Path(list(spec.submodule_search_locations)[0]) / "datasets" / "10x_pbmc68k_reduced.h5ad"
    if not path.exists():
        raise TaskError(f"pbmc68k: {path} is missing from the scanpy installation")
    return path


def load_pbmc68k() -> CountData:
    """Integer counts recovered as ``round(expm1(raw.X) * n_counts / 1e4)`` and checked to be integral."""
    import anndata

    adata = anndata.read_h5ad(pbmc68k_path())
    raw = adata.raw.X
    raw = raw.toarray() if sp.issparse(raw) else np.asarray(raw)
    recovered = np.expm1(raw.astype(np.float64)) * adata.obs["n_counts"].to_numpy(np.float64)[:, None] / 1e4
    counts = to_counts(recovered, tolerance=PBMC_TOLERANCE, what="pbmc68k recovered counts")
    deviation = float(np.abs(recovered - np.round(recovered)).max())
    return CountData(counts, list(map(str, adata.raw.var_names)), "scanpy wheel datasets/10x_pbmc68k_reduced.h5ad",
                     [f"counts recovered from raw.X (max deviation {deviation:.3f})"])


def _zarr_checksum(path: Path) -> str:
    import anndata

    x = anndata.read_zarr(path).X
    x = x.toarray() if sp.issparse(x) else np.asarray(x)
    return hashlib.sha256(np.ascontiguousarray(x, dtype="<f4").tobytes()).hexdigest()


def pip_download_sdist(requirement: str, dest: Path) -> Path:
    """Fetch a source distribution with pip (the ordinary registry client) into ``dest``; returns the archive."""
    cmd = [sys.executable, "-m", "pip", "download", requirement, "--no-deps", "--no-binary", ":all:", "-d", str(dest)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=900)
    archives = sorted(dest.glob("*.tar.gz"))
    if proc.returncode != 0 or not archives:
        raise TaskError(f"could not fetch {requirement} with pip: {(proc.stderr or proc.stdout).strip()[-400:]}")
    return archives[0]


def fetch_mouse10k(cache: Path, download: Callable[[str, Path], Path] = pip_download_sdist) -> Path:
    """Extract ``tests/_data/10x-10k-subset.zarr`` from the scanpy sdist into ``cache``, verified by checksum."""
    target = cache / "scrna_denoise" / MOUSE10K_NAME
    if target.resolve().is_relative_to(data_dir().resolve()):
        raise TaskError(f"refusing to fetch into {target}: it lies inside the shared data folder {data_dir()}; "
                        "point $SIA_BENCH_CACHE elsewhere")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        archive = download(MOUSE10K_SDIST, Path(tmp))
        marker = f"tests/_data/{MOUSE10K_NAME}"
        try:
            with tarfile.open(archive) as tar:
                members = [m for m in tar.getmembers() if marker in m.name and m.isfile()]
                if not members:
                    raise TaskError(f"{archive.name} holds no {marker}")
                for member in members:
                    rel = member.name.split(marker, 1)[1].lstrip("/")
                    out = Path(tmp) / "extract" / MOUSE10K_NAME / rel
                    out.parent.mkdir(parents=True, exist_ok=True)
                    out.write_bytes(tar.extractfile(member).read())
        except tarfile.TarError as err:
            raise TaskError(f"{archive.name} is not a readable archive: {err}") from None
        extracted = Path(tmp) / "extract" / MOUSE10K_NAME
        try:
            digest = _zarr_checksum(extracted)
        except Exception as err:
            raise TaskError(f"mouse10k from {archive.name} cannot be read: {type(err).__name__}: {err}") from None
        if digest != MOUSE10K_SHA256:
            raise TaskError(f"mouse10k checksum mismatch: got {digest[:16]}..., expected {MOUSE10K_SHA256[:16]}...; "
                            "nothing was cached")
        if target.exists():
            shutil.rmtree(target)
        extracted.rename(target)
    return target


def mouse10k_path(fetch: Callable[[Path], Path] | None = None) -> Path:
    """The zarr store from ``../shared/data`` (or ``$SIA_BENCH_DATA``), else the cache, else fetched into the cache."""
    for candidate in (data_dir() / "scrna_denoise" / MOUSE10K_NAME, cache_dir() / "scrna_denoise" / MOUSE10K_NAME):
        if (candidate / "X").exists():
            return candidate
    return (fetch or fetch_mouse10k)(cache_dir())


def counts_sha256(counts: sp.csr_matrix) -> str:
    """The mouse10k checksum convention: sha256 of the dense matrix as C-ordered little-endian float32."""
    return hashlib.sha256(np.ascontiguousarray(counts.toarray(), dtype="<f4").tobytes()).hexdigest()


def load_mouse10k(fetch: Callable[[Path], Path] | None = None) -> CountData:
    """mouse10k, verified against its recorded checksum on every load; a cached copy that differs is fetched anew,
    a shared copy that differs is an error (it is read-only here)."""
    path = mouse10k_path(fetch)
    data = load_user(path)
    if counts_sha256(data.counts) != MOUSE10K_SHA256:
        cached = cache_dir().resolve() / "scrna_denoise" / MOUSE10K_NAME
        shared = data_dir().resolve()
        if path.resolve() != cached or cached.is_relative_to(shared):  # never delete anything but our own cache
            raise TaskError(f"mouse10k at {path} does not match its checksum ({MOUSE10K_SHA256[:16]}...); "
                            "restore it, or remove it to use a verified download")
        shutil.rmtree(cached, ignore_errors=True)
        path = (fetch or fetch_mouse10k)(cache_dir())
        data = load_user(path)
        if counts_sha256(data.counts) != MOUSE10K_SHA256:
            raise TaskError(f"mouse10k fetched again into {path} still does not match its checksum")
    return CountData(data.counts, data.genes, f"scanpy sdist tests/_data/{MOUSE10K_NAME} ({path})")


def load_dataset(dataset: str, path: str | None = None, layer: str | None = None,
                 genome: str | None = None) -> CountData:
    if path:
        return load_user(path, layer, genome)
    if genome:
        raise TaskError("-T genome= applies to a user's 10x .h5 file (-T path=...), not a built-in dataset")
    if dataset == "pbmc68k":
        return load_pbmc68k()
    if dataset == "mouse10k":
        return load_mouse10k()
    raise TaskError(f"unknown dataset {dataset!r}; use pbmc68k, mouse10k or -T path=FILE")
