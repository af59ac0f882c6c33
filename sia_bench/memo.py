"""Never score the same thing twice: per-instance results memoised on disk under a key of everything that can change
them.

The key (:func:`result_key`) covers the harness digest, the model's identity (base model, numerics, a content hash of
the adapter's weights), the task (name, version, options, data checksums), a digest of the code that renders, parses
and scores, the instance (id and content, target included), and the decoding parameters (the seed only when
sampling). Free generation is batched, so its key also names the instances that shared the pass; ranking processes
each prompt alone and needs no such context. Entries are small JSON files written atomically, one per key, so
parallel workers of an ablation can share one folder without locks; an unreadable entry is a miss, never an error.
"""

from __future__ import annotations

import hashlib
import json
import warnings
from pathlib import Path
from typing import Any, Iterable

from sia_bench.records import atomic_write_json

MEMO_VERSION = 1
_CODE_DIGESTS: dict[tuple[str, ...], str] = {}


def _digest(data: Any) -> str:
    blob = json.dumps(data, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def code_digest(paths: Iterable[Path]) -> str:
    """Hash of the source, prompt and config files among ``paths`` (files or folders; once per process)."""
    key = tuple(sorted(str(Path(f).resolve()) for f in paths))
    if key not in _CODE_DIGESTS:
        h = hashlib.sha256()
        for root in map(Path, key):
            for path in sorted(root.rglob("*")) if root.is_dir() else [root]:
                if path.suffix in {".py", ".md", ".toml", ".json", ".txt"} and "__pycache__" not in path.parts:
                    h.update(str(path.relative_to(root.parent)).encode())
                    h.update(path.read_bytes())
        _CODE_DIGESTS[key] = h.hexdigest()[:16]
    return _CODE_DIGESTS[key]


def instance_digest(instance: Any) -> str:
    return _digest({"id": instance.id, "input": instance.input, "target": instance.target, "meta": instance.meta})


def result_key(context: dict[str, Any], instance: Any, batch: str | None) -> str:
    """The memo key of one instance's result under ``context`` (shared by a pass) and ``batch`` (its batch mates)."""
    return _digest({"memo": MEMO_VERSION, "context": context, "instance": instance_digest(instance),
                    "batch": batch})[:40]


class ResultMemo:
    """A folder of memoised per-instance results: ``<dir>/<key[:2]>/<key>.json``."""

    def __init__(self, directory: Path | str):
        self.directory = Path(directory)
        self.hits = self.misses = self.writes = 0

    def _path(self, key: str) -> Path:
        return self.directory / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        path = self._path(key)
        try:
            entry = json.loads(path.read_text(encoding="utf-8"))
            if entry.get("key") != key or entry.get("memo") != MEMO_VERSION:
                raise ValueError("entry does not match its key")
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError) as err:  # damaged or foreign file: recompute and overwrite
            warnings.warn(f"ignoring unreadable memo entry {path}: {err}")
            self.misses += 1
            return None
        self.hits += 1
        return entry

    def put(self, key: str, entry: dict[str, Any]) -> None:
        try:
            atomic_write_json(self._path(key), {**entry, "key": key, "memo": MEMO_VERSION})
            self.writes += 1
        except OSError as err:  # a full or read-only disk costs speed, never the run
            warnings.warn(f"could not write memo entry {self._path(key)}: {err}")
