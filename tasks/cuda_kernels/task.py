"""The cuda_kernels task: given a PyTorch reference (KernelBench format), write a faster kernel.

Scoring goes through the trusted :mod:`.driver`: the reference, the input generator, the comparison and the clock
live outside the candidate's sandboxed worker, every call gets fresh inputs and has its output checked, and the
score is the speed-up over torch eager when correct, else 0. Backends: ``cpu`` (C++/OpenMP through ``load_cpp``,
real end to end without a GPU), ``cuda`` (nvcc; compiled but never executed without a GPU) and ``triton`` (the
Triton interpreter without a GPU: correctness only).
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Sequence

from sia_bench.harness import Harness, ParamSpec, load_default_harness
from sia_bench.sandbox import SandboxUnavailable, require_mode, sandbox_option
from sia_bench.task import Answer, Instance, Metric, OptionError, Prompt, Score, Task, TaskError

from .driver import EAGER_PROGRAM, Driver, DriverOptions
from .problem_set import ProblemError, load_problems
from .record import KernelResult
from .sizing import SizeBudget
from .timing import geomean

HERE = Path(__file__).resolve().parent
KERNELS = HERE / "kernels"
BACKENDS = ("cpu", "cuda", "triton")
SPLIT_SEEDS = {"train": 1000, "val": 2000, "test": 3000}
BEST_CPP_FLAGS = "-O3 -march=native -fopenmp -ffast-math"
FAST_P = (0.0, 1.0, 1.5, 2.0)
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
    """Faster kernels for PyTorch reference ops (KernelBench format, TriMul), scored by a trusted driver."""

    name = "cuda_kernels"
    version = "2.0"
    metric = Metric("speedup", higher_is_better=True)
    description = "Write a kernel faster than torch eager for a reference op; scored by measured speed-up when correct."
    options = {
        "backend": ParamSpec(str, "cpu", choices=BACKENDS, help="cpu (C++/OpenMP), cuda (CUDA C++), triton"),
        "problem": ParamSpec(str, None, help="single-problem mode: this problem in every split, different seeds"),
        "problems_dir": ParamSpec(str, None, help="a directory of KernelBench-format problems (default: built-in)"),
        "size": ParamSpec(str, "auto", choices=("auto", "cpu", "gpu"),
                          help="size preset; auto: gpu on a GPU; problems without the preset are scaled to a budget"),
        "size_budget_mb": ParamSpec(float, 32.0, min=0.01, max=4096, help="size policy: bytes one call may move"),
        "size_budget_ms": ParamSpec(float, 8.0, min=0.01, max=10000, help="size policy: estimated ms one call may take"),
        "trials": ParamSpec(int, 3, min=2, max=20, help="correctness rounds per timed shape (fresh inputs each)"),
        "threads": ParamSpec(int, 1, min=1, max=256, help="CPU threads (pinned cores) for the candidate and eager"),
        "timeout_s": ParamSpec(float, 180.0, min=5, max=3600, help="time budget per candidate, compilation included"),
        "memory_mb": ParamSpec(int, -1, min=-1, help="candidate memory limit (whole process tree); -1: 4096 on "
                                                       "cpu, none on GPU backends"),
        "instances": ParamSpec(int, 1, min=1, max=50, help="single-problem mode: instances (seeds) per split"),
        "time": ParamSpec(bool, True, help="time correct candidates (off: correctness only)"),
        "timing_budget_s": ParamSpec(float, 6.0, min=0.1, max=600, help="seconds of timing rounds per timed shape"),
        "target_ci_pct": ParamSpec(float, 1.0, min=0.05, max=50, help="stop timing once both medians' 95% "
                                                                       "intervals are within +- this percentage"),
        "min_rounds": ParamSpec(int, 10, min=3, max=10000, help="timing rounds before the interval may stop it"),
        "sample_ms": ParamSpec(float, 10.0, min=0.1, max=10000, help="eager time one timing sample aims at (the "
                                                                     "number of calls K per sample follows)"),
        "slots_mb": ParamSpec(float, 256.0, min=1, max=1 << 20, help="shared memory for one shape's call slots "
                                                                     "(inputs, expected, candidate and eager outputs)"),
        "audit": ParamSpec(bool, True, help="sample where the candidate's CPU time goes (perf events)"),
        "cache_dir": ParamSpec(str, None, help="compile cache, written only by the builder "
                                               "(default ~/.cache/sia-bench/kernels)"),
        "sandbox": sandbox_option(),
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
        try:
            require_mode(self.opts["sandbox"])
        except SandboxUnavailable as err:
            raise TaskError(str(err)) from None
        memory = self.opts["memory_mb"]
        cache = self.opts["cache_dir"] or Path.home() / ".cache" / "sia-bench" / "kernels"
        self.driver = Driver(DriverOptions(
            backend=self.backend, mode=self.opts["sandbox"], threads=self.opts["threads"], preset=self.opts["size"],
            trials=self.opts["trials"], time=self.opts["time"], timing_budget_s=self.opts["timing_budget_s"],
            target_ci_pct=self.opts["target_ci_pct"], min_rounds=self.opts["min_rounds"],
            sample_ms=self.opts["sample_ms"], arena_mb=self.opts["slots_mb"],
            timeout_s=self.opts["timeout_s"], audit=self.opts["audit"], cache_dir=Path(cache).expanduser(),
            memory_mb=(4096 if self.backend == "cpu" else None) if memory == -1 else (memory or None),
            budget=SizeBudget(max_call_mb=self.opts["size_budget_mb"], max_call_ms=self.opts["size_budget_ms"])))

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
        tolerance = (f"atol={problem.atol:g}, rtol={problem.rtol:g}" if problem.atol is not None and problem.rtol
                     is not None else "the dtype default: 1e-4 for float32, 1e-2 for half types")
        parts = [f"Backend: {self.backend}. Problem: {problem.name} (tolerance {tolerance}; every call is checked "
                 f"on fresh inputs, and the output's relative error per row must stay within 10x rtol).",
                 f"Reference implementation:\n```python\n{problem.source.strip()}\n```"]
        try:
            parts.append(self.driver.size_policy(problem).describe() + ".")
        except Exception as err:  # noqa: BLE001 - the prompt still renders; scoring will report the harness error
            parts.append(f"(The sizes could not be resolved: {err}.)")
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

    def tool_answer(self, harness: Harness, instance: Instance) -> str | None:
        """The starting program the harness carries (shown to the model or scored as its fallback), unchanged."""
        if not (harness["show_program"] or harness["starting_program"] == "reference"):
            return None
        program = self.starting_program(harness, instance.input["problem"])
        return f"```python\n{program.strip()}\n```" if program else None

    def reference_text(self, harness: Harness, instance: Instance) -> str | None:
        """The hand-written kernel for this problem and backend (the perfect control's program), where there is one."""
        program = reference_program(self.backend, instance.input["problem"])
        return f"```python\n{program.strip()}\n```" if program else None

    # -- scoring -----------------------------------------------------------------------------------------------------
    def score(self, instance: Instance, answer: Answer) -> Score:
        problem = self.problems[instance.input["problem"]]
        if answer.value is None:
            empty = KernelResult(problem.name, self.backend, self.opts["sandbox"])
            return Score(0.0, f"No program to score: {answer.error or 'empty answer'}.", empty.to_details())
        value = answer.value
        source = str(value.get("source", "model"))
        note = ("The reply held no ModelNew, so the harness's starting program was scored instead.\n"
                if source == "harness_program" else "")
        # Only the task's own controls and baselines (never parse()) may run torch as the "kernel".
        trusted = source.startswith("baseline:") or source == "reference_eager"
        result = self.driver.score(problem, value["program"], seed=int(instance.input["seed"]), source=source,
                                   cpp_flags=value.get("cpp_flags") or BEST_CPP_FLAGS,
                                   nvcc_flags=value.get("nvcc_flags") or "-O3", trusted=trusted)
        return Score(result.score, note + result.feedback(), result.to_details())

    def aggregate(self, scores: Sequence[Score], instances: Sequence[Instance]) -> dict[str, float]:
        """KernelBench's headline metrics over the instances the harness could score (its own errors excluded):
        mean speed-up (0 when wrong), fast_p (correct and faster than p x eager), geometric-mean speed-up over
        correct timed answers, correct rate."""
        valid = [s for s in scores if not s.details.get("harness_error")]
        n = len(valid)
        error_rate = (len(scores) - n) / len(scores) if scores else 0.0
        if not n:
            return {"speedup": float("nan"), "harness_error_rate": error_rate}
        d = [s.details for s in valid]
        timed = [s.value for s in valid if s.value > 0]
        out: dict[str, float] = {"speedup": sum(s.value for s in valid) / n,
                                 "geomean_speedup": geomean(timed) if timed else float("nan"),
                                 "correct_rate": sum(bool(x.get("correct")) for x in d) / n}
        for p in FAST_P:
            key = f"fast_{p:g}"
            out[key] = (sum(bool(x.get("correct")) for x in d) if p == 0 else sum(v > p for v in timed)) / n
        out["harness_error_rate"] = error_rate
        for key in ("compiled", "executed", "timed"):
            out[f"{key}_rate"] = sum(bool(x.get(key)) for x in d) / n
        times = [x["candidate_us"] for x, s in zip(d, valid) if s.value > 0 and x.get("candidate_us")]
        if times:
            out["candidate_us_geomean"] = math.exp(sum(map(math.log, times)) / len(times))
        return out

    # -- controls --------------------------------------------------------------------------------------------------
    def perfect_answer(self, instance: Instance) -> Answer:
        """The hand-written kernel for this backend; where there is none, torch eager itself (so the perfect
        control is always defined and scores about 1)."""
        program = reference_program(self.backend, instance.input["problem"])
        if program is None:
            return Answer({"program": EAGER_PROGRAM, "source": "reference_eager", "cpp_flags": BEST_CPP_FLAGS,
                           "nvcc_flags": "-O3"}, "reference_eager")
        return Answer({"program": program, "source": "reference", "cpp_flags": BEST_CPP_FLAGS,
                       "nvcc_flags": "-O3 --use_fast_math"}, "reference")

    def null_answer(self, instance: Instance) -> Answer:
        return Answer(None, "null", "null control: no program")

    def close(self) -> None:
        self.driver.close()
