"""scrna_denoise: write a program that denoises single-cell RNA-seq counts, scored by molecular cross-validation.

Splits leak nothing (:mod:`.splits`): train, val and test hold disjoint cells (a fixed, depth-stratified
partition), each split is cut into several disjoint instances, and each instance has its own MCV split of its own
molecules, so nothing the improver or the agent sees (train inputs and targets, val aggregates) determines a val or
test target. A split's score is the mean of its instances' OpenProblems scores. The held-out molecules live only in
this process's memory (nothing is cached on disk); a program runs in the sandbox on one instance's training
molecules, with the dataset's source file hidden from it. Degenerate outputs score as no denoising with a named
failure (:mod:`.degenerate`), and no score is ever NaN without a failure reason. When the model's reply holds no
valid program, the harness's own program is scored (``Answer.method == "harness_program"``), so edits to the
harness program and its parameters are real levers even for a model that cannot write code.
"""

from __future__ import annotations

import ast
import hashlib
import math
import re
import warnings
from pathlib import Path
from typing import Any, Sequence

import numpy as np
import scipy.sparse as sp

from sia_bench.harness import Harness, ParamSpec, load_default_harness
from sia_bench.sandbox import SandboxUnavailable, require_mode, sandbox_option
from sia_bench.task import Answer, Instance, Metric, Prompt, Score, Task, TaskError

from . import data as scdata
from . import degenerate, metrics, splits
from .execute import run_program

HERE = Path(__file__).resolve().parent
PROGRAMS = HERE / "programs"
PROGRAM = "program.py"
KNOBS = ("n_components", "k", "t")
LOSSES = ("mse", "poisson", "poisson_openproblems")
_CODE_BLOCK = re.compile(r"```[ \t]*(?:python|py|python3)?[ \t]*\n(.*?)```", re.S | re.I)

PARAM_SPECS: dict[str, ParamSpec] = {
    "method": ParamSpec(str, "program", choices=("program", "knn_smooth", "magic", "alra"),
                        help="program to run when the model writes none: the harness's program.py or a shipped one"),
    "n_components": ParamSpec(int, 0, min=0, max=300, help="PCA components / rank; 0 = the program's default"),
    "k": ParamSpec(int, 0, min=0, max=200, help="nearest neighbours; 0 = the program's default"),
    "t": ParamSpec(int, 0, min=0, max=50, help="MAGIC diffusion steps; 0 = the program's default (3)"),
}


def program_params(harness: Harness) -> dict[str, int]:
    """The non-zero knobs, passed to ``denoise`` only where it declares them."""
    return {k: harness[k] for k in KNOBS if harness.params.get(k)}


def harness_program(harness: Harness) -> tuple[str, str]:
    """(source text, label) of the program the harness runs by itself."""
    method = harness["method"]
    if method == "program":
        return harness.components[PROGRAM], f"harness {PROGRAM}"
    return (PROGRAMS / f"{method}.py").read_text(), f"shipped programs/{method}.py"


def extract_program(text: str) -> tuple[str | None, str]:
    """The last code block (or bare code) in ``text`` that compiles and defines ``denoise``; else (None, why)."""
    blocks = _CODE_BLOCK.findall(text or "")
    if not blocks and "def denoise" in (text or ""):
        lines = text.splitlines()
        start = next((i for i, ln in enumerate(lines) if ln.startswith(("import ", "from ", "def "))), None)
        blocks = ["\n".join(lines[start:])] if start is not None else []
    if not blocks:
        return None, "the reply holds no ```python code block"
    why = "no code block defines a function denoise(counts)"
    for block in reversed(blocks):
        try:
            tree = ast.parse(block)
        except SyntaxError as err:
            why = f"the code block does not parse: {err.msg} (line {err.lineno})"
            continue
        if any(isinstance(n, ast.FunctionDef) and n.name == "denoise" for n in tree.body):
            return block.strip() + "\n", ""
    return None, why


class ScrnaDenoiseTask(Task):
    """Denoise scRNA-seq counts (OpenProblems v1 denoising, molecular cross-validation); score mse_norm."""

    name = "scrna_denoise"
    version = "2.0"  # 2.0: disjoint cells per split, several instances per split, degenerate-output rule
    metric = Metric("mse_norm", True)
    description = ("Write denoise(counts) for single-cell RNA-seq UMI counts; scored against held-out molecules "
                   "(MSE of log-normalised counts, normalised so no denoising = 0 and the held-out truth = 1).")
    options = {
        "dataset": ParamSpec(str, "pbmc68k", choices=("pbmc68k", "mouse10k"), help="built-in dataset"),
        "path": ParamSpec(str, None, help="a user .h5ad / .zarr / 10x .h5 / matrix-market dir (overrides dataset)"),
        "layer": ParamSpec(str, None, help="where the raw counts are in a user file: X (default), raw or a layer"),
        "genome": ParamSpec(str, None, help="which genome of a multi-genome 10x .h5 file to read"),
        "max_cells": ParamSpec(int, 0, min=0, help="subsample this many cells (0 = all; fixed seed)"),
        "instance_cells": ParamSpec(int, 0, min=0, help="cells per instance (0 = auto: n_cells/12, 50 to 500)"),
        "seed": ParamSpec(int, 0, min=0, help="added to the MCV seeds of every instance (the cell partition is "
                                              "fixed)"),
        "timeout_s": ParamSpec(float, 300.0, min=1.0, help="wall-time limit of one program run"),
        "memory_mb": ParamSpec(int, 4096, min=256, help="memory limit of one program run (its whole process tree)"),
        "sandbox": sandbox_option(),
    }
    search_space = {"method": ["magic", "alra", "knn_smooth"], "n_components": [10, 20, 50],
                    "k": [5, 15, 30], "t": [2, 3, 5]}

    def __init__(self, **options: Any):
        super().__init__(**options)
        try:  # refuse now, naming the fix, rather than at the first program
            require_mode(self.opts["sandbox"])
        except SandboxUnavailable as err:
            raise TaskError(f"-T sandbox={self.opts['sandbox']}: {err}") from None
        self._data: scdata.CountData | None = None
        self._splits: dict[str, list[splits.SplitInstance]] | None = None
        self._controls: dict[str, dict[str, dict[str, float]]] = {}

    # -- data ------------------------------------------------------------------------------------------------------
    @property
    def counts(self) -> scdata.CountData:
        if self._data is None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                loaded = scdata.load_dataset(self.opts["dataset"], self.opts["path"], self.opts["layer"],
                                             self.opts["genome"])
            loaded = scdata.drop_empty(loaded)
            self._data = scdata.subsample_cells(loaded, self.opts["max_cells"], splits.PARTITION_SEED)
        return self._data

    @property
    def dataset_name(self) -> str:
        return Path(self.opts["path"]).name if self.opts["path"] else self.opts["dataset"]

    @property
    def instances(self) -> dict[str, list[splits.SplitInstance]]:
        """All splits' instances, built in memory once (never cached on disk: nothing to tamper with)."""
        if self._splits is None:
            built = splits.build(self.counts.counts, self.opts["instance_cells"], self.opts["seed"])
            for name, items in built.items():
                splits.check_scorable(items, f"{self.dataset_name} {name}")
            self._splits = built
        return self._splits

    def _instance_id(self, item: splits.SplitInstance) -> str:
        return f"{self.dataset_name}-{item.split}-{item.index}"

    def _lookup(self, instance: Instance) -> splits.SplitInstance:
        split, index = instance.meta.get("split"), instance.meta.get("index")
        items = self.instances.get(split, []) if isinstance(split, str) else []
        if not isinstance(index, int) or not 0 <= index < len(items) or \
                self._instance_id(items[index]) != instance.id:
            raise TaskError(f"instance {instance.id!r} is not one of this task's instances")
        return items[index]

    def load_split(self, split: str) -> list[Instance]:
        out = []
        for item in self.instances[split]:
            train = item.train
            libsize = np.asarray(train.sum(axis=1)).ravel()
            summary = {"dataset": self.dataset_name, "split": split, "n_cells": train.shape[0],
                       "n_genes": train.shape[1], "nonzero_fraction": round(train.nnz / float(np.prod(train.shape)), 4),
                       "median_umis_per_cell": float(np.median(libsize))}
            out.append(Instance(id=self._instance_id(item), input=summary, target=None,
                                meta={"split": split, "index": item.index, "checksum": item.checksum}))
        return out

    def data_info(self) -> dict[str, Any]:
        data = self.counts
        return {**super().data_info(), "dataset": self.dataset_name, "source": data.source,
                "cells": data.counts.shape[0], "genes": data.counts.shape[1], "checksum": data.checksum,
                "notes": data.notes, "partition_seed": splits.PARTITION_SEED,
                "mcv_seeds": {k: v + self.opts["seed"] for k, v in splits.SPLIT_SEEDS.items()},
                "train_fraction": 0.9, "sandbox": self.opts["sandbox"],
                "instances": {name: [{"cells": len(i.cells), "checksum": i.checksum} for i in items]
                              for name, items in self.instances.items()}}

    def hidden_paths(self) -> list[str]:
        """Host files a program must not see even where their folder is mounted (the dataset's own source)."""
        if self.opts["path"]:
            return [str(Path(self.opts["path"]).expanduser().resolve())]
        if self.opts["dataset"] == "pbmc68k":  # inside the scanpy wheel, i.e. inside the mounted site-packages
            return [str(scdata.pbmc68k_path().resolve())]
        return [str(scdata.mouse10k_path().resolve())]

    # -- agent side ------------------------------------------------------------------------------------------------
    def default_harness(self) -> Harness:
        return load_default_harness(HERE, PARAM_SPECS)

    def render(self, harness: Harness, instance: Instance) -> Prompt:
        program, label = harness_program(harness)
        info = instance.input
        params = program_params(harness)
        user = (f"Dataset: {info['n_cells']} cells x {info['n_genes']} genes of raw UMI counts, "
                f"{info['nonzero_fraction']:.1%} non-zero, median {info['median_umis_per_cell']:.0f} UMIs per cell.\n\n"
                f"Current program ({label}; parameters passed: {params or 'none, program defaults'}):\n"
                f"```python\n{program.rstrip()}\n```\n\n"
                "Write an improved program. Reply with exactly one ```python code block that defines "
                "denoise(counts) and returns a non-negative array of the same shape.")
        return Prompt([{"role": "system", "content": harness.skill}, {"role": "user", "content": user}])

    def parse(self, harness: Harness, instance: Instance, text: str) -> Answer:
        code, why = extract_program(text)
        params = program_params(harness)
        if code is not None:
            return Answer({"program": code, "params": params, "source": "model"}, method="model_program")
        program, label = harness_program(harness)
        return Answer({"program": program, "params": params, "source": label, "fallback_reason": why},
                      method="harness_program")

    def tool_answer(self, harness: Harness, instance: Instance) -> str | None:
        """The program the harness carries (its program.py or the shipped method), unchanged, as a reply. No
        reference_text: the only gold is the held-out molecules, which no program reply may carry."""
        return f"```python\n{harness_program(harness)[0].rstrip()}\n```"

    # -- scoring ---------------------------------------------------------------------------------------------------
    def _matrices(self, instance: Instance) -> tuple[sp.csr_matrix, sp.csr_matrix]:
        item = self._lookup(instance)
        return item.train, item.heldout

    def control_losses(self, instance: Instance) -> dict[str, dict[str, float]]:
        if instance.id not in self._controls:
            train, test = self._matrices(instance)
            self._controls[instance.id] = {"null": metrics.all_losses(train, test, train),
                                           "perfect": metrics.perfect_losses(train, test)}
        return self._controls[instance.id]

    def score(self, instance: Instance, answer: Answer) -> Score:
        train, test = self._matrices(instance)
        value = answer.value if isinstance(answer.value, dict) else {}
        details: dict[str, Any] = {"source": value.get("source") or value.get("control") or "none"}
        failure, kind, denoised = None, None, None
        if value.get("control") == "perfect":
            losses = self.control_losses(instance)["perfect"]
        elif value.get("control") == "null":
            denoised = train
        elif not answer.ok or not isinstance(value.get("program"), str):
            failure, kind = f"no program to run ({answer.error or 'answer holds no program'})", "no_program"
            denoised = train
        else:
            program = value["program"]
            details["program_sha"] = hashlib.sha256(program.encode()).hexdigest()[:12]
            details["params"] = value.get("params", {})
            if value.get("fallback_reason"):
                details["fallback_reason"] = value["fallback_reason"]
            run = run_program(program, train, value.get("params"), timeout_s=self.opts["timeout_s"],
                              memory_mb=self.opts["memory_mb"], mode=self.opts["sandbox"], hidden=self.hidden_paths())
            details.update(run.details)
            details["program_seconds"] = round(run.seconds, 3)
            if run.program_output:
                details["program_output"] = run.program_output
            if run.error:
                failure, kind, denoised = run.error, run.details.get("failure_kind", "program"), train
            elif (bad := degenerate.check(run.denoised, train)) is not None:
                failure, kind, denoised = f"degenerate output: {bad.message}", f"degenerate_{bad.kind}", train
                details["output"] = describe_output(run.denoised, train)
            else:
                denoised = run.denoised
        controls = self.control_losses(instance)
        if denoised is not None:
            losses = metrics.all_losses(train, test, denoised)
            if failure is None and not all(math.isfinite(v) for v in losses.values()):
                failure, kind = "the metric is not finite on this output", "metric_nonfinite"
                losses = metrics.all_losses(train, test, train)  # scored as no denoising
        self._normalise(details, losses, controls)
        details["controls"] = controls
        details["failure"], details["failure_kind"] = failure, kind
        if failure is None and "control" not in value:
            details["output"] = describe_output(denoised, train)
        if not math.isfinite(details["mse_norm"]) and failure is None:  # the guard: never NaN without a reason
            details["failure"], details["failure_kind"] = "no finite score for this instance", "metric_nonfinite"
        return Score(details["mse_norm"], self._feedback(details, answer), details)

    @staticmethod
    def _normalise(details: dict[str, Any], losses: dict[str, float], controls: dict[str, dict[str, float]]) -> None:
        for name in LOSSES:
            details[name] = losses[name]
            details[f"{name}_norm"] = metrics.normalised(losses[name], controls["null"][name],
                                                         controls["perfect"][name])

    def _feedback(self, d: dict[str, Any], answer: Answer) -> str:
        lines = []
        if answer.method == "harness_program":
            lines.append(f"Scored the {d['source']} because the model's reply had no usable program "
                         f"({d.get('fallback_reason', 'unknown')}).")
        elif d["source"] == "model":
            lines.append("Scored the program written in the model's reply.")
        if d["failure"]:
            lines.append(f"FAILED: {d['failure']}. Scored as no denoising (mse_norm 0).")
            if d.get("program_output"):
                lines.append(d["program_output"])
        c = d["controls"]
        lines.append(f"mse_norm {d['mse_norm']:.4f} (MSE {d['mse']:.5f}; no denoising {c['null']['mse']:.5f}, "
                     f"held-out truth {c['perfect']['mse']:.5f}); poisson_norm {d['poisson_norm']:.4f} "
                     f"(NLL {d['poisson']:.5f}); OpenProblems-convention poisson_norm "
                     f"{d['poisson_openproblems_norm']:.4f}.")
        out = d.get("output")
        if out and not d["failure"]:
            lines.append(f"Output: total {out['scale']:.3g}x the training counts, {out['zero_fraction']:.1%} zeros "
                         f"(input {out['input_zero_fraction']:.1%}), max {out['max']:.4g}"
                         + (f", {d['program_seconds']:.1f} s." if "program_seconds" in d else "."))
            if not 0.2 < out["scale"] < 5:
                lines.append("The output is far from the count scale of the input; MSE is per-cell normalised "
                             "but the Poisson score compares totals, so keep counts on the input's scale.")
            if d["mse_norm"] < 0:
                lines.append("Worse than returning the input unchanged: smooth less (more components, fewer "
                             "neighbours, fewer diffusion steps).")
        return " ".join(lines)

    def aggregate(self, scores: Sequence[Score], instances: Sequence[Instance]) -> dict[str, float]:
        out: dict[str, float] = {}
        for key in ("mse_norm", "poisson_norm", "poisson_openproblems_norm", *LOSSES):
            values = [s.details.get(key, float("nan")) for s in scores]
            out[key] = float(np.mean(values)) if values else float("nan")
        out["failures"] = float(sum(bool(s.details.get("failure")) for s in scores))
        return out

    # -- controls --------------------------------------------------------------------------------------------------
    def perfect_answer(self, instance: Instance) -> Answer:
        return Answer({"control": "perfect"}, method="control")

    def null_answer(self, instance: Instance) -> Answer:
        return Answer({"control": "null"}, method="control")

    def close(self) -> None:
        self._controls.clear()


def describe_output(denoised: np.ndarray, train: sp.csr_matrix) -> dict[str, float]:
    """Scale, sparsity and range of an output relative to its input, for the feedback text."""
    total = float(train.sum())
    with np.errstate(over="ignore"):
        out_total = float(denoised.sum())
    return {"scale": out_total / total if total else float("nan"),
            "zero_fraction": float((denoised == 0).mean()),
            "input_zero_fraction": 1.0 - train.nnz / float(np.prod(train.shape)),
            "max": float(denoised.max())}
