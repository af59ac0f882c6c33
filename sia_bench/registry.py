"""One generic registry for tasks, improvers, model backends and baselines.

Built-ins are registered *lazily* as ``"module:attribute"`` strings so that ``sia-bench tasks`` does not import torch;
third-party packages add entries through the entry-point groups ``sia_bench.tasks``, ``sia_bench.improvers``,
``sia_bench.models`` and ``sia_bench.baselines`` without touching this repository.
"""

from __future__ import annotations

import difflib
import importlib
from importlib.metadata import entry_points
from typing import Any, Callable, Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """A name that no registry entry answers to; the message suggests the closest names."""

    def __init__(self, kind: str, name: str, available: list[str]):
        self.kind, self.name, self.available = kind, name, available
        close = difflib.get_close_matches(name, available, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        super().__init__(f"unknown {kind} {name!r}.{hint} Available: {', '.join(available) or '(none)'}.")

    def __str__(self) -> str:  # KeyError quotes its message otherwise
        return self.args[0]


class Registry(Generic[T]):
    """Maps names to objects (usually classes), resolving lazy entries and entry points on first use."""

    def __init__(self, kind: str, group: str):
        self.kind, self.group = kind, group
        self._entries: dict[str, T | str] = {}
        self._entry_points_loaded = False

    def register(self, name: str, obj: T | str | None = None) -> Callable[[T], T] | None:
        """Register ``obj`` (or a ``"module:attr"`` string) under ``name``; without ``obj`` acts as a decorator."""
        if obj is not None:
            self._entries[name] = obj
            return None

        def decorator(target: T) -> T:
            self._entries[name] = target
            return target

        return decorator

    def _load_entry_points(self) -> None:
        if self._entry_points_loaded:
            return
        self._entry_points_loaded = True
        for ep in entry_points(group=self.group):
            self._entries.setdefault(ep.name, ep.value)

    def names(self) -> list[str]:
        self._load_entry_points()
        return sorted(self._entries)

    def __contains__(self, name: str) -> bool:
        self._load_entry_points()
        return name in self._entries

    def get(self, name: str) -> T:
        self._load_entry_points()
        if name not in self._entries:
            raise UnknownNameError(self.kind, name, self.names())
        entry = self._entries[name]
        if isinstance(entry, str):
            module_name, _, attr = entry.partition(":")
            obj: Any = importlib.import_module(module_name)
            for part in attr.split(".") if attr else []:
                obj = getattr(obj, part)
            self._entries[name] = obj
            entry = obj
        return entry  # type: ignore[return-value]

    def describe(self, name: str) -> str:
        """First docstring line of an entry, for listings."""
        obj = self.get(name)
        doc = (getattr(obj, "__doc__", None) or "").strip()
        return doc.splitlines()[0] if doc else ""


TASKS: Registry[Any] = Registry("task", "sia_bench.tasks")
IMPROVERS: Registry[Any] = Registry("improver", "sia_bench.improvers")
MODELS: Registry[Any] = Registry("model backend", "sia_bench.models")
BASELINES: Registry[Any] = Registry("baseline", "sia_bench.baselines")

# Built-ins, lazily: importing this module costs nothing.
for _name, _target in {
    "toy_arithmetic": "tasks.toy_arithmetic.task:ToyArithmeticTask",
    "legal_charges": "tasks.legal_charges.task:LegalChargesTask",
    "scrna_denoise": "tasks.scrna_denoise.task:ScrnaDenoiseTask",
    "cuda_kernels": "tasks.cuda_kernels.task:CudaKernelsTask",
}.items():
    TASKS.register(_name, _target)

for _name, _target in {
    "none": "sia_bench.improvers.none:NoImprover",
    "h": "sia_bench.improvers.harness:HarnessImprover",
    "w": "sia_bench.improvers.weights:WeightsImprover",
    "wh": "sia_bench.improvers.sia:SIAImprover",
    "bt": "sia_bench.improvers.controls:BetterTogether",
    "w+h-alternate": "sia_bench.improvers.controls:AlternateImprover",
    "tool-only": "sia_bench.improvers.attribution:ToolOnly",
    "random-search": "sia_bench.improvers.attribution:RandomSearch",
    "best-of-n": "sia_bench.improvers.attribution:BestOfN",
    "sft": "sia_bench.improvers.sft:SupervisedImprover",
}.items():
    IMPROVERS.register(_name, _target)

for _name, _target in {
    "hf": "sia_bench.models.hf:HFModel",
    "openai": "sia_bench.models.openai_chat:OpenAIChatModel",
    "tiny": "sia_bench.models.tiny:tiny_model",
}.items():
    MODELS.register(_name, _target)

# Baselines are grouped per task: each entry is a dict ``{baseline_name: Baseline}`` from ``baselines/<task>.py``.
for _name in ("toy_arithmetic", "legal_charges", "scrna_denoise", "cuda_kernels"):
    BASELINES.register(_name, f"baselines.{_name}:BASELINES")
