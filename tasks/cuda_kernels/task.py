"""The cuda_kernels task: given a PyTorch reference (KernelBench format), write a faster kernel.

Every candidate runs in a sandboxed subprocess (``runner.py``) that compiles it, checks it against the reference on
fresh seeded inputs with identical weights, and times both; the score is the speed-up over torch eager when correct
and 0 otherwise. Backends: ``cpu`` (C++/OpenMP via g++ and ctypes, real end to end without a GPU), ``cuda`` (nvcc or
NVRTC, launched through CuPy; compiled but never executed without a GPU) and ``triton`` (the Triton interpreter
without a GPU: correctness only).
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any, Sequence

from sia_bench.harness import Harness, ParamSpec, load_default_harness
from sia_bench.sandbox import run_python
from sia_bench.task import Answer, Instance, Metric, OptionError, Prompt, Score, Task, TaskError

from .checks import static_check
from .problem_set import Problem, ProblemError, load_problems

HERE = Path(__file__).resolve().parent
KERNELS = HERE / "kernels"
BACKENDS = ("cpu", "cuda", "triton")
SPLIT_SEEDS = {"train": 1000, "val": 2000, "test": 3000}
BEST_CPP_FLAGS = "-O3 -march=native -fopenmp"
_BLOCK = re.compile(r"```(?:python|py)?[ \t]*\n(.*?)(?:```|\Z)", re.S)

HARNESS_SPECS: dict[str, ParamSpec] = {
    "starting_program": ParamSpec(str, "reference", choices=("reference", "none"),
                                  help="what is scored when the reply holds no ModelNew: the harness's starting "
                                       "program (reference kernel) or nothing"),
    "show_program": ParamSpec(bool, True, help="show the starting program in the prompt"),
    "cpp_flags": ParamSpec(str, "-O2 -fopenmp", choices=("-O2 -fopenmp", "-O3 -march=native -fopenmp",
                                                         "-O3 -march=native -fopenmp -ffast-math"),
                           help="default g++ flags for load_cpp (cpu backend)"),
    "nvcc_flags": ParamSpec(str, "-O3", choices=("-O3", "-O3 --use_fast_math"),
                            help="default nvcc flags for load_cuda (cuda backend)"),
}


def reference_program(backend: str, problem: str) -> str | None:
    """The hand-written kernel for ``problem`` on ``backend``, if there is one."""
    path = KERNELS / backend / f"{problem}.py"
    return path.read_text() if path.exists() else None


def extract_program(text: str) -> str | None:
    """The last fenced code block that defines ModelNew (an unterminated last block counts: replies get cut)."""
    blocks = [b for b in _BLOCK.findall(text) if "class ModelNew" in b]
    if blocks:
        return blocks[-1].strip() + "\n"
    if "class ModelNew" in text and "```" not in text:
        return text.strip() + "\n"
    return None


class CudaKernelsTask(Task):
    """Faster kernels for PyTorch reference ops (KernelBench format, TriMul): compiled, checked, timed in a sandbox."""

    name = "cuda_kernels"
    version = "1.0"
    metric = Metric("speedup", higher_is_better=True)
    description = "Write a kernel faster than torch eager for a reference op; scored by measured speed-up when correct."
    options = {
        "backend": ParamSpec(str, "cpu", choices=BACKENDS, help="cpu (C++/OpenMP), cuda (CUDA C++), triton"),
        "problem": ParamSpec(str, None, help="single-problem mode: this problem in every split, different seeds"),
        "problems_dir": ParamSpec(str, None, help="a directory of KernelBench-format problems (default: built-in)"),
        "size": ParamSpec(str, "auto", choices=("auto", "cpu", "gpu"), help="size preset; auto: gpu on a GPU"),
        "trials": ParamSpec(int, 3, min=2, max=20, help="correctness trials with fresh inputs (>= 2: replay check)"),
        "threads": ParamSpec(int, 1, min=1, max=256, help="CPU threads for both the candidate and torch"),
        "timeout_s": ParamSpec(float, 180.0, min=5, max=3600, help="sandbox wall-time limit per candidate"),
        "memory_mb": ParamSpec(int, -1, min=-1, help="sandbox address-space limit; -1: 4096 on cpu, none on GPU "
                                                       "backends (CUDA reserves huge virtual ranges)"),
        "instances": ParamSpec(int, 1, min=1, max=50, help="single-problem mode: instances (seeds) per split"),
        "torch_compile": ParamSpec(bool, False, help="also time torch.compile (GPU only)"),
        "time": ParamSpec(bool, True, help="time correct candidates (off: correctness only)"),
        "timing_budget_s": ParamSpec(float, 6.0, min=0.1, max=600, help="seconds of timing per shape (all timed "
                                                                         "functions together)"),
        "cpu_stat": ParamSpec(str, "min", choices=("min", "median"),
                              help="CPU timing statistic over interleaved samples (min resists noisy neighbours)"),
        "cache_dir": ParamSpec(str, None, help="compile cache (default ~/.cache/sia-bench/kernels)"),
    }
    search_space = {
        "cpp_flags": ["-O3 -march=native -fopenmp", "-O3 -march=native -fopenmp -ffast-math"],
        "nvcc_flags": ["-O3 --use_fast_math"],
        "show_program": [False],
    }

    def __init__(self, **options: Any):
        super().__init__(**options)
        self.backend: str = self.opts["backend"]
        try:
            self.problems = {p.name: p for p in load_problems(self.opts["problems_dir"])}
        except ProblemError as err:
            raise TaskError(str(err)) from None
        single = self.opts["problem"]
        if single and single not in self.problems:
            raise OptionError(f"-T problem: unknown problem {single!r}; have {', '.join(sorted(self.problems))}")
        cache = self.opts["cache_dir"] or Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sia-bench" / "kernels"
        self.cache_dir = Path(cache).expanduser()
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self._scratch = Path(tempfile.mkdtemp(prefix="sia-cuda-kernels-"))

    # -- data ------------------------------------------------------------------------------------------------------
    def load_split(self, split: str) -> list[Instance]:
        single = self.opts["problem"]
        if single:  # the paper's setting: one problem, different input seeds per split
            return [Instance(f"{single}#seed{SPLIT_SEEDS[split] + i}", {"problem": single, "seed": SPLIT_SEEDS[split] + i},
                             meta={"mode": "single-problem", "seed": SPLIT_SEEDS[split] + i})
                    for i in range(self.opts["instances"])]
        return [Instance(p.name, {"problem": p.name, "seed": SPLIT_SEEDS[split]}, meta={"mode": "problem-set"})
                for p in self.problems.values() if p.split == split]

    def data_info(self) -> dict[str, Any]:
        splits = {s: [p.name for p in self.problems.values() if p.split == s] for s in SPLIT_SEEDS}
        return {"options": dict(self.opts), "problems_dir": str(next(iter(self.problems.values())).path.parent),
                "splits": splits, "single_problem_seeds": SPLIT_SEEDS if self.opts["problem"] else None}

    # -- agent side ------------------------------------------------------------------------------------------------
    def default_harness(self) -> Harness:
        harness = load_default_harness(HERE, HARNESS_SPECS)
        single = self.opts["problem"]
        program = reference_program(self.backend, single) if single else None
        if program:  # single-problem mode: the starting program is a harness component an improver may edit
            harness = Harness({**harness.components, "program.py": program}, harness.params, harness.specs)
        return harness

    def starting_program(self, harness: Harness, problem: str) -> str | None:
        if "program.py" in harness.components and problem == self.opts["problem"]:
            return harness.components["program.py"]
        return reference_program(self.backend, problem)

    def render(self, harness: Harness, instance: Instance) -> Prompt:
        problem = self.problems[instance.input["problem"]]
        sizes = problem.sizes.get("cpu" if self.backend == "cpu" else "gpu")
        parts = [f"Backend: {self.backend}. Problem: {problem.name} (tolerance atol={problem.atol:g}, "
                 f"rtol={problem.rtol:g}, dtype {problem.dtype}).",
                 f"Reference implementation:\n```python\n{problem.source.strip()}\n```"]
        if sizes:
            parts.append("Sizes used for timing: " + "; ".join(", ".join(f"{k}={v}" for k, v in s.items()) for s in sizes))
        start = self.starting_program(harness, problem.name) if harness["show_program"] else None
        if start:
            parts.append(f"A correct starting program; make it faster:\n```python\n{start.strip()}\n```")
        parts.append("Reply with one ```python block holding the complete program that defines ModelNew.")
        return Prompt([{"role": "system", "content": harness.skill}, {"role": "user", "content": "\n\n".join(parts)}])

    def parse(self, harness: Harness, instance: Instance, text: str) -> Answer:
        flags = {"cpp_flags": harness["cpp_flags"], "nvcc_flags": harness["nvcc_flags"]}
        program = extract_program(text or "")
        if program:
            return Answer({"program": program, "source": "model", **flags}, "code_block")
        fallback = self.starting_program(harness, instance.input["problem"])
        if harness["starting_program"] == "reference" and fallback:
            return Answer({"program": fallback, "source": "harness_program", **flags}, "harness_program")
        return Answer(None, "none", "no ```python block defining class ModelNew in the reply")

    # -- scoring -----------------------------------------------------------------------------------------------------
    def score(self, instance: Instance, answer: Answer) -> Score:
        problem = self.problems[instance.input["problem"]]
        base = {"problem": problem.name, "backend": self.backend, "compiled": False, "executed": False,
                "correct": False, "timed": False, "speedup": 0.0, "sandbox_seconds": 0.0}
        if answer.value is None:
            return Score(0.0, f"No program to score: {answer.error or 'empty answer'}.", {**base, "checks_run": []})
        value = answer.value
        base["program_source"] = value.get("source", "model")
        note = ("The reply held no ModelNew, so the harness's starting program was scored instead.\n"
                if base["program_source"] == "harness_program" else "")
        trusted = value.get("source", "").startswith("baseline:")  # set only by baselines, never by parse()
        findings = [] if trusted else static_check(value["program"])
        checks = ["syntax", "format", "static torch fallback", "static streams", "static timers"] if not trusted else []
        if findings:
            details = {**base, "checks_run": checks, "failures": [{"kind": f.kind, "message": str(f)} for f in findings]}
            return Score(0.0, note + "Rejected before running:\n" + "\n".join(f"- {f}" for f in findings[:10]), details)
        return self._run_sandbox(problem, instance, value, base, checks, note, trusted)

    def _run_sandbox(self, problem: Problem, instance: Instance, value: dict[str, Any], base: dict[str, Any],
                     checks: list[str], note: str, trusted: bool) -> Score:
        workdir = Path(tempfile.mkdtemp(dir=self._scratch, prefix=f"{problem.name}-"))
        try:
            (workdir / "answer.py").write_text(value["program"])
            config = {"problem": problem.to_config(), "program": str(workdir / "answer.py"), "backend": self.backend,
                      "preset": self.opts["size"], "seed": instance.input["seed"], "trials": self.opts["trials"],
                      "threads": self.opts["threads"], "torch_compile": self.opts["torch_compile"],
                      "time": self.opts["time"], "trusted": trusted,
                      "cpu_stat": self.opts["cpu_stat"], "timing": {"budget_s": self.opts["timing_budget_s"]}}
            (workdir / "config.json").write_text(json.dumps(config))
            memory = self.opts["memory_mb"]
            memory = (4096 if self.backend == "cpu" else 0) if memory == -1 else memory
            env = {"SIA_KERNEL_CACHE": str(self.cache_dir), "SIA_CPP_FLAGS": value.get("cpp_flags", BEST_CPP_FLAGS),
                   "SIA_NVCC_FLAGS": value.get("nvcc_flags", "-O3")}
            res = run_python(HERE / "runner.py", [str(workdir / "config.json")], workdir=workdir,
                             timeout_s=self.opts["timeout_s"], memory_mb=memory, threads=self.opts["threads"],
                             readable=[HERE, problem.path.parent, self.cache_dir], env=env)
        finally:
            shutil.rmtree(workdir, ignore_errors=True)
        out = res.output if isinstance(res.output, dict) else {}
        details = {**base, **{k: out[k] for k in out if k not in ("done",)}, "sandbox_seconds": res.seconds,
                   "checks_run": checks + out.get("checks_run", [])}
        failures = list(out.get("failures", []))
        if res.error or not out.get("done"):
            why = res.error or "the program ended the process early"
            failures.append({"kind": "crash", "message": f"{why} (during {out.get('stage', 'start-up')})",
                             "log": res.stderr[-1500:]})
            details["correct"] = details["timed"] = False
        details["failures"] = failures
        ok = details.get("correct") and details.get("timed") and not failures
        details["speedup"] = float(out.get("speedup", 0.0)) if ok else 0.0
        return Score(details["speedup"], note + self._feedback(details), details)

    @staticmethod
    def _feedback(d: dict[str, Any]) -> str:
        lines = [f"Problem {d['problem']} on {d['backend']} ({d.get('device', '?')}, preset {d.get('preset', '?')}): "
                 f"compiled={d['compiled']}, executed={d['executed']}, correct={d['correct']}, timed={d['timed']}."]
        for f in d.get("failures", [])[:3]:
            lines.append(f"- {f['kind']}: {f['message']}")
            if f.get("mismatch"):
                m = f["mismatch"]
                lines.append(f"  first mismatch at index {m['index']}: expected {m['expected']:.6g}, got {m['got']:.6g} "
                             f"({100 * m['mismatched_fraction']:.1f}% of elements off, max abs error {m['max_abs_error']:.3g})")
            if f.get("log"):
                lines.append("  log:\n" + "\n".join("    " + ln for ln in f["log"].strip().splitlines()[-15:]))
        if d.get("timed"):
            extra = f", torch.compile {d['compile_us']:.1f} us" if "compile_us" in d else ""
            lines.append(f"Timing: yours {d['candidate_us']:.1f} us, torch eager {d['eager_us']:.1f} us{extra} "
                         f"-> speed-up {d['speedup']:.3f}x ({d.get('statistic', 'median')} of interleaved samples; "
                         f"IQR {d.get('spread_pct', 0):.1f}% of the median).")
        elif d.get("correct") and d.get("interpreted"):
            lines.append("Correct under the Triton interpreter; interpreter timings are meaningless, so speed-up is 0.")
        return "\n".join(lines)

    def aggregate(self, scores: Sequence[Score], instances: Sequence[Instance]) -> dict[str, float]:
        n = len(scores)
        if not n:
            return {"speedup": float("nan")}
        d = [s.details for s in scores]
        timed = [s.value for s in scores if s.value > 0]
        out = {"speedup": sum(s.value for s in scores) / n,
               "geomean_speedup": math.exp(sum(map(math.log, timed)) / len(timed)) if timed else float("nan"),
               "fast_1": sum(v > 1.0 for v in timed) / n, "fast_2": sum(v > 2.0 for v in timed) / n}
        for key in ("compiled", "executed", "correct", "timed"):
            out[f"{key}_rate"] = sum(bool(x.get(key)) for x in d) / n
        times = [x["candidate_us"] for x, s in zip(d, scores) if s.value > 0 and "candidate_us" in x]
        if times:
            out["candidate_us_geomean"] = math.exp(sum(map(math.log, times)) / len(times))
        return out

    # -- controls --------------------------------------------------------------------------------------------------
    def perfect_answer(self, instance: Instance) -> Answer:
        program = reference_program(self.backend, instance.input["problem"])
        if program is None:
            return Answer(None, "reference", f"no reference kernel for {instance.input['problem']} on {self.backend}")
        return Answer({"program": program, "source": "reference", "cpp_flags": BEST_CPP_FLAGS,
                       "nvcc_flags": "-O3"}, "reference")

    def null_answer(self, instance: Instance) -> Answer:
        return Answer(None, "null", "null control: no program")

    def close(self) -> None:
        shutil.rmtree(self._scratch, ignore_errors=True)
