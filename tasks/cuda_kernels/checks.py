"""Static reward-hack checks on a candidate program, before anything runs.

KernelBench's known hacks: calling torch/cuBLAS instead of a kernel, extra CUDA streams (timing only the default
stream), patching the timers, and reaching out of the program (subprocesses, frames, the harness). These checks are
cheap and explainable, but a program that knows them can hide from them (strings, getattr): they are best-effort, for
clear feedback. What holds against a hostile program runs outside it (driver.py, rounds.py, audit.py).
"""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass

# torch compute functions that do the work a kernel should do (torch.X, F.X, tensor.X)
COMPUTE_NAMES = {
    "matmul", "mm", "bmm", "addmm", "addbmm", "baddbmm", "einsum", "tensordot", "mv", "dot", "linear", "conv1d",
    "conv2d", "conv3d", "conv_transpose2d", "softmax", "log_softmax", "layer_norm", "group_norm", "batch_norm",
    "rms_norm", "gelu", "relu", "silu", "sigmoid", "tanh", "exp", "log", "sqrt", "rsqrt", "sum", "mean", "var",
    "std", "cumsum", "cumprod", "max_pool2d", "avg_pool2d", "max", "min", "amax", "amin", "logsumexp", "norm",
    "scaled_dot_product_attention", "mul", "add", "sub", "div", "pow", "where", "clamp", "erf", "prod",
}
TORCH_ROOTS = {"torch", "F", "nn", "functional", "aten", "cudnn"}
SOURCE_PATTERNS = [  # searched in the whole program text, embedded C++/CUDA included
    (r"\bcublas\w*|\bcudnn\w*|\bcutlass::", "torch fallback", "calls a vendor library (cuBLAS/cuDNN/CUTLASS)"),
    (r"\b(?:at|torch|c10)::", "torch fallback", "calls ATen/torch from native code"),
    (r"cudaStreamCreate|torch\.cuda\.Stream\b|torch\.cuda\.stream\b|cupy\.cuda\.Stream\b|\bStream\s*\(",
     "extra stream", "creates a CUDA stream (work off the timed stream escapes timing)"),
    (r"\bcudaDeviceSynchronize\b|\bcudaStreamSynchronize\b", "sync", "synchronises inside a kernel wrapper"),
]
TIMER_NAMES = {"perf_counter", "perf_counter_ns", "time", "time_ns", "monotonic", "monotonic_ns", "Event",
               "elapsed_time", "synchronize", "record", "do_bench"}
FORBIDDEN_MODULES = {"subprocess", "multiprocessing", "threading", "concurrent", "socket", "ctypes", "inspect",
                     "gc", "builtins", "importlib", "pickle", "signal", "os", "sys", "time"}
FORBIDDEN_CALLS = {"setattr", "exec", "eval", "compile", "__import__", "globals", "open", "breakpoint"}


@dataclass(frozen=True)
class Finding:
    kind: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.kind}: {self.message}"


def _dotted(node: ast.AST) -> str:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        parts.append(node.id)
    return ".".join(reversed(parts))


def _hot_path_nodes(tree: ast.Module):
    """Everything that runs per call: ModelNew's methods except __init__, and module-level functions."""
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)) and item.name != "__init__":
                    yield item


def _module_attrs(tree: ast.Module) -> set[str]:
    """``self.x`` attributes set to torch modules in ModelNew.__init__ (e.g. ``self.ln = nn.LayerNorm(d)``)."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and isinstance(node.value, ast.Call):
            ctor = _dotted(node.value.func)
            if ctor.startswith(("nn.", "torch.nn.")) and ctor.split(".")[-1][:1].isupper():
                for target in node.targets:
                    if isinstance(target, ast.Attribute) and _dotted(target.value) == "self":
                        names.add(target.attr)
    return names


def static_check(program: str) -> list[Finding]:
    """All findings for ``program`` (empty: clean). A syntax error is one finding of kind 'syntax'."""
    try:
        tree = ast.parse(program)
    except SyntaxError as err:
        return [Finding("syntax", err.lineno or 0, f"{err.msg}: {(err.text or '').strip()[:120]}")]
    findings: list[Finding] = []
    if not any(isinstance(n, ast.ClassDef) and n.name == "ModelNew" for n in tree.body):
        findings.append(Finding("format", 1, "no top-level class ModelNew"))
    module_attrs = _module_attrs(tree)
    for fn in _hot_path_nodes(tree):
        for node in ast.walk(fn):
            if isinstance(node, ast.BinOp) and isinstance(node.op, ast.MatMult):
                findings.append(Finding("torch fallback", node.lineno, "uses the @ operator (a torch matmul)"))
            if not isinstance(node, ast.Call):
                continue
            name = _dotted(node.func)
            parts = name.split(".")
            if parts[0] in TORCH_ROOTS and len(parts) > 1 and (parts[-1] in COMPUTE_NAMES or parts[0] in {"F", "aten"}
                                                              or "functional" in parts or "ops" in parts):
                findings.append(Finding("torch fallback", node.lineno, f"calls {name}() in the hot path"))
            elif isinstance(node.func, ast.Attribute) and parts[0] != "self" and parts[-1] in COMPUTE_NAMES \
                    and parts[0] not in {"math", "np", "numpy", "triton", "tl"}:
                findings.append(Finding("torch fallback", node.lineno, f"calls tensor method .{parts[-1]}() in the hot path"))
            elif len(parts) == 2 and parts[0] == "self" and parts[1] in module_attrs:
                findings.append(Finding("torch fallback", node.lineno, f"calls the torch module self.{parts[1]}()"))
    for node in ast.walk(tree):
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            mods = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
            for mod in mods:
                if mod.split(".")[0] in FORBIDDEN_MODULES:
                    findings.append(Finding("forbidden import", node.lineno, f"imports {mod} (timing, processes and "
                                                                             f"introspection belong to the harness)"))
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in FORBIDDEN_CALLS:
            findings.append(Finding("forbidden call", node.lineno, f"calls {node.func.id}()"))
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                dotted = _dotted(target) if isinstance(target, ast.Attribute) else ""
                if dotted and dotted.split(".")[0] != "self":
                    kind = "patched timer" if dotted.split(".")[-1] in TIMER_NAMES else "monkeypatch"
                    findings.append(Finding(kind, node.lineno, f"assigns to {dotted} (patching other modules)"))
        elif isinstance(node, ast.Attribute) and node.attr.startswith("__") and node.attr not in {"__init__", "__name__"}:
            findings.append(Finding("introspection", node.lineno, f"touches {node.attr}"))
    for pattern, kind, message in SOURCE_PATTERNS:
        for match in re.finditer(pattern, program):
            findings.append(Finding(kind, program.count("\n", 0, match.start()) + 1, f"{message}: {match.group(0)!r}"))
    return findings
