"""Load KernelBench-format problem files plus their metadata (split, tolerances, size presets).

A problem is a ``.py`` file with ``class Model(nn.Module)``, ``get_inputs()`` and ``get_init_inputs()``; sizes are
module globals, so a preset is just a dict of globals to override. Metadata sits in ``problems.toml`` beside the
files; a directory without one (e.g. KernelBench's own levels) gets a fixed hash-based split, tolerances by output
dtype, and sizes from the size policy (sizing.py).
"""

from __future__ import annotations

import hashlib
import re
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

BUILTIN_DIR = Path(__file__).with_name("problems")
_REQUIRED = ("class Model", "def get_inputs", "def get_init_inputs")


class ProblemError(ValueError):
    """A problem file or its metadata is malformed; the message names the file."""


@dataclass(frozen=True)
class Problem:
    name: str
    path: Path
    split: str
    atol: float | None = None  # None: by the output dtype (compare.DEFAULT_TOLERANCE: float32 1e-4)
    rtol: float | None = None
    dtype: str = "float32"
    # preset name -> list of module-global overrides (one dict per shape); [{}] means "the file's own sizes"
    sizes: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    @property
    def source(self) -> str:
        return self.path.read_text()

    def shapes(self, preset: str) -> list[dict[str, Any]]:
        return self.sizes.get(preset) or [{}]


def _hash_split(name: str) -> str:
    """A fixed 60/20/20 assignment for directories without metadata (stable across machines and runs)."""
    bucket = int(hashlib.sha256(name.encode()).hexdigest(), 16) % 10
    return "train" if bucket < 6 else "val" if bucket < 8 else "test"


def _as_shapes(value: Any, where: str) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return value
    raise ProblemError(f"{where}: a size preset must be a table or a list of tables, got {value!r}")


def load_problems(directory: Path | None = None) -> list[Problem]:
    """All problems in ``directory`` (default: the built-in set), sorted by name."""
    directory = Path(directory or BUILTIN_DIR)
    if not directory.is_dir():
        raise ProblemError(f"problems directory {directory} does not exist")
    meta_file = directory / "problems.toml"
    try:
        meta = tomllib.loads(meta_file.read_text()) if meta_file.exists() else {}
    except tomllib.TOMLDecodeError as err:
        raise ProblemError(f"{meta_file}: {err}") from None
    problems = []
    for path in sorted(directory.glob("*.py")):
        if path.name.startswith("_"):
            continue
        text = path.read_text(errors="replace")
        missing = [r for r in _REQUIRED if not re.search(rf"^\s*{r}\b", text, re.M)]
        if missing:
            raise ProblemError(f"{path} is not a KernelBench-format problem: it lacks {', '.join(missing)}")
        name = path.stem
        info = meta.get(name, {})
        split = info.get("split", _hash_split(name))
        if split not in ("train", "val", "test"):
            raise ProblemError(f"{meta_file} [{name}]: split must be train, val or test, got {split!r}")
        sizes = {preset: _as_shapes(v, f"{meta_file} [{name}].sizes.{preset}")
                 for preset, v in info.get("sizes", {}).items()}
        tolerance = {k: float(info[k]) if k in info else None for k in ("atol", "rtol")}
        problems.append(Problem(name, path.resolve(), split, tolerance["atol"], tolerance["rtol"],
                                info.get("dtype", "float32"), sizes))
    unknown = sorted(set(meta) - {p.name for p in problems})
    if unknown:
        raise ProblemError(f"{meta_file} describes problems with no file: {', '.join(unknown)}")
    if not problems:
        raise ProblemError(f"no problem files (*.py) in {directory}")
    return problems
