"""Run records: a typed, versioned schema, atomic writes, append-only per-sample JSONL, and reading runs back.

Layout of a run directory::

    run.json                    RunRecord (rewritten atomically after every generation)
    gen_000/harness/            SKILL.md, harness.toml, other components
    gen_000/adapter/            LoRA adapter, when the candidate has one
    gen_000/generation.json     GenerationRecord
    gen_000/val.jsonl           one line per scored sample
    final/test.jsonl            test samples of the best candidate (scored once)
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import tempfile
from datetime import datetime, timezone
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Iterator

from pydantic import BaseModel, Field, ValidationError

from sia_bench.config import Budget  # noqa: F401  (re-exported: records and tests import it from here)

SCHEMA_VERSION = "1.0"
TRACKED_PACKAGES = ("sia-bench", "torch", "transformers", "peft", "trl", "accelerate", "datasets", "scikit-learn",
                    "scanpy", "anndata", "numpy", "cupy-cuda13x", "triton", "openai", "ray")


def atomic_write_text(path: Path, text: str) -> None:
    """Write via a temporary file in the same directory and ``os.replace``: readers never see half a file."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="") as f:  # exact text: no newline translation
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, ensure_ascii=False, sort_keys=True, default=str) + "\n")


class JsonlWriter:
    """Append-only JSON lines, flushed and fsynced per line; a torn last line from a crash is dropped on reopen."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        if self.path.exists():
            data = self.path.read_bytes()
            if data and not data.endswith(b"\n"):
                atomic_write_text(self.path, data[: data.rfind(b"\n") + 1].decode("utf-8"))
        self._f = self.path.open("a", encoding="utf-8")

    def write(self, row: dict[str, Any]) -> None:
        self._f.write(json.dumps(row, ensure_ascii=False, default=str) + "\n")
        self._f.flush()
        os.fsync(self._f.fileno())

    def close(self) -> None:
        self._f.close()

    def __enter__(self) -> "JsonlWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()


def read_jsonl(path: Path) -> Iterator[dict[str, Any]]:
    with Path(path).open(encoding="utf-8") as f:
        for line in f:
            if line.endswith("\n") and line.strip():
                yield json.loads(line)


class Ledger(BaseModel):
    """Everything a run spent.

    The per-purpose dicts are written by the meter (:mod:`sia_bench.metering`), which every model call goes through:
    purposes are ``val`` / ``test`` / ``train`` (agent rollouts), ``train_rollout`` / ``train_step`` (trainers),
    ``feedback`` / ``meta`` (proposer models). ``flops`` is the compute unit: 2 x parameters x tokens for a forward
    call, 6 x for a training pass, on the tokens a call must process (each distinct prompt once, plus every option or
    generated token); reuse across calls (a cached system block, a memoised result) is charged as if recomputed, so
    caches never change a budget decision. ``model_seconds`` is measured.
    ``rollouts`` counts agent instances; the ``train_*`` scalars are the trainers' own budget units.
    """

    rollouts: dict[str, int] = Field(default_factory=dict)
    tokens_in: dict[str, int] = Field(default_factory=dict)
    tokens_out: dict[str, int] = Field(default_factory=dict)
    model_seconds: dict[str, float] = Field(default_factory=dict)
    calls: dict[str, int] = Field(default_factory=dict)  # metered model calls actually made
    flops: dict[str, float] = Field(default_factory=dict)
    flops_unknown: dict[str, int] = Field(default_factory=dict)  # calls to models of unknown size (API models)
    reused: dict[str, int] = Field(default_factory=dict)  # results served from the memo instead of the model
    feedback_calls: int = 0
    feedback_tokens: int = 0
    train_steps: int = 0
    train_seconds: float = 0.0
    train_rollouts: int = 0
    train_tokens: int = 0
    sandbox_seconds: float = 0.0
    wall_seconds: float = 0.0

    def count_rollouts(self, purpose: str, n: int) -> None:
        self.rollouts[purpose] = self.rollouts.get(purpose, 0) + n

    def charge(self, purpose: str, *, calls: int = 0, tokens_in: int = 0, tokens_out: int = 0, seconds: float = 0.0,
               flops: float | None = 0.0, reused: int = 0) -> None:
        """Add one metered call (or replayed result) under ``purpose``; ``flops=None`` means the size is unknown."""
        for field_, value in ((self.calls, calls), (self.tokens_in, tokens_in), (self.tokens_out, tokens_out),
                              (self.model_seconds, seconds), (self.flops, flops or 0.0), (self.reused, reused),
                              (self.flops_unknown, calls if flops is None else 0)):
            if value:
                field_[purpose] = field_.get(purpose, 0) + value

    def total_flops(self, exclude_test: bool = True) -> float:
        """FLOPs charged to the compute budget: every purpose but the final test pass."""
        return float(sum(v for k, v in self.flops.items() if not (exclude_test and k == "test")))

    def task_rollouts(self, exclude_test: bool = True) -> int:
        """Task-model rollouts charged to the budget: every purpose but the final test pass, plus training samples."""
        return sum(v for k, v in self.rollouts.items() if not (exclude_test and k == "test")) + self.train_rollouts

    def task_tokens(self, exclude_test: bool = True) -> int:
        own = sum(self.tokens_in.get(k, 0) + self.tokens_out.get(k, 0) for k in self.rollouts
                  if not (exclude_test and k == "test"))
        return own + self.train_tokens

    def plus(self, other: "Ledger") -> "Ledger":
        out = self.model_copy(deep=True)
        for name in ("rollouts", "tokens_in", "tokens_out", "model_seconds", "calls", "flops", "flops_unknown",
                     "reused"):
            mine = getattr(out, name)
            for k, v in getattr(other, name).items():
                mine[k] = mine.get(k, 0) + v
        for name in ("feedback_calls", "feedback_tokens", "train_steps", "train_seconds", "train_rollouts",
                     "train_tokens", "sandbox_seconds", "wall_seconds"):
            setattr(out, name, getattr(out, name) + getattr(other, name))
        return out


class RecordError(ValueError):
    """A record file that exists but cannot be used; the message names the file."""


class Candidate(BaseModel):
    harness_digest: str
    harness_dir: str  # relative to the run directory
    adapter_dir: str | None = None


class GenerationRecord(BaseModel):
    index: int
    proposer: str = ""
    diagnosis: str = ""
    actions: list[dict[str, Any]] = Field(default_factory=list)  # what was proposed, with per-action outcome
    levers: list[str] = Field(default_factory=list)  # "harness", "weights", "stop"
    candidate: Candidate | None = None
    val: dict[str, float] = Field(default_factory=dict)
    accepted: bool = False
    best_so_far: float | None = None
    reason: str = ""
    ledger: Ledger = Field(default_factory=Ledger)  # spent during this generation
    seconds: float = 0.0
    finished_at: str = ""


class RunRecord(BaseModel):
    schema_version: str = SCHEMA_VERSION
    run_id: str
    created_at: str
    status: str = "running"  # running | finished | failed
    task: dict[str, Any]  # name, version, options, data
    improver: dict[str, Any]  # name, args
    models: dict[str, Any]  # task, feedback
    seed: int
    limit: int | None = None
    test_limit: int | None = None  # test instances, where they differ from ``limit``
    budget: Budget
    environment: dict[str, Any] = Field(default_factory=dict)
    controls: dict[str, dict[str, dict[str, float]]] = Field(default_factory=dict)  # split -> control -> metrics
    generations: list[GenerationRecord] = Field(default_factory=list)
    best_generation: int | None = None
    stop_reason: str = ""
    final: dict[str, Any] = Field(default_factory=dict)  # val and test metrics of the best candidate, normalised
    ledger: Ledger = Field(default_factory=Ledger)
    config: dict[str, Any] | None = None  # the RunConfig the run was started with (resume reads it from here)
    start_harness: dict[str, Any] = Field(default_factory=dict)  # source, parameter overrides and digest
    # What a seed changes (so seeds are replicates) and what it never changes (so arms compare pairwise).
    replicate: dict[str, Any] = Field(default_factory=dict)

    def save(self, run_dir: Path) -> None:
        atomic_write_json(Path(run_dir) / "run.json", self.model_dump(mode="json"))

    @classmethod
    def load(cls, run_dir: Path) -> "RunRecord":
        """Read ``run.json``; every failure is a RecordError naming the file and what is wrong with it."""
        path = Path(run_dir) / "run.json"
        if not path.exists():
            raise FileNotFoundError(f"{run_dir} is not a run directory (no run.json)")
        try:
            data = json.loads(path.read_bytes().decode("utf-8"))
        except (UnicodeDecodeError, ValueError, RecursionError) as err:
            raise RecordError(f"{path} is unreadable ({type(err).__name__}: {str(err)[:80]}); the file is truncated "
                              "or corrupt") from None
        except OSError as err:
            raise RecordError(f"{path} cannot be read: {err.strerror or err}") from None
        if not isinstance(data, dict):
            raise RecordError(f"{path} does not hold a run record (a JSON object)")
        if str(data.get("schema_version", "0")).split(".")[0] != SCHEMA_VERSION.split(".")[0]:
            raise RecordError(f"{path}: schema {data.get('schema_version')} is not readable by {SCHEMA_VERSION}")
        try:
            return cls.model_validate(data)
        except ValidationError as err:
            first = err.errors(include_url=False)[0]
            raise RecordError(f"{path} is not a valid run record: {'.'.join(map(str, first['loc']))}: "
                              f"{first['msg']}") from None


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def package_versions() -> dict[str, str]:
    out = {}
    for name in TRACKED_PACKAGES:
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            pass
    return out


def git_state(path: Path | None = None) -> dict[str, Any]:
    cwd = path or Path(__file__).resolve().parent
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=5)
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=cwd,
                               capture_output=True, text=True, timeout=5)
        return {"sha": sha.stdout.strip() or None, "dirty": bool(dirty.stdout.strip())}
    except (OSError, subprocess.SubprocessError):
        return {"sha": None, "dirty": None}


def hardware() -> dict[str, Any]:
    info: dict[str, Any] = {"platform": platform.platform(), "python": platform.python_version(),
                            "cpu": platform.processor() or platform.machine(), "cpus": os.cpu_count()}
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                info["cpu"] = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import torch

        info["torch"] = torch.__version__
        info["cuda"] = torch.version.cuda
        info["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else None
    except ImportError:
        pass
    return info


def environment() -> dict[str, Any]:
    return {"packages": package_versions(), "git": git_state(), "hardware": hardware()}
