"""``sia-bench ablate`` and ``sia-bench leaderboard``: every arm x seed at one matched budget, then tables from records.

An ablation folder ``<out>/<task>-ablation-<id>/`` holds one run directory per arm x seed (``<arm>-s<seed>/``) and an
``ablation.json`` manifest. The id is a hash of everything that makes runs comparable (task and options, task and
feedback models, budget, eval limit, improver settings), so the same command finds the same folder again: finished
runs are skipped, unfinished ones resumed, and extra arms or seeds are added beside the existing ones.
"""

from __future__ import annotations

import argparse
import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sia_bench.executors import Job, JobResult, make_executor, run_status
from sia_bench.records import SCHEMA_VERSION, Budget, RunRecord, atomic_write_json, now

DEFAULT_ARMS = ("none", "h", "w", "wh", "bt")
DEFAULT_LIMIT = 32  # val and test instances per run: a CPU-sized default; --limit 0 uses whole splits
DEFAULT_GENERATIONS = 3
# Default matched task-rollout cap per generation, in val passes: one val pass plus up to two train passes its size.
DEFAULT_ROLLOUT_PASSES = 3


@dataclass
class AblationSpec:
    """Everything shared by the arms; only the improver and the seed differ between runs."""

    task: str
    arms: list[str] = field(default_factory=lambda: list(DEFAULT_ARMS))
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    task_options: dict[str, Any] = field(default_factory=dict)
    improver_options: dict[str, dict[str, Any]] = field(default_factory=dict)  # arm -> settings
    model: str = "hf"
    model_options: dict[str, Any] = field(default_factory=dict)
    feedback_model: str | None = None
    feedback_options: dict[str, Any] = field(default_factory=dict)
    limit: int | None = DEFAULT_LIMIT
    budget: Budget = field(default_factory=lambda: Budget(generations=DEFAULT_GENERATIONS))

    def comparable(self) -> dict[str, Any]:
        """The fields whose equality makes two runs of different arms comparable (arms and seeds excluded)."""
        return {"task": self.task, "task_options": self.task_options, "model": self.model,
                "model_options": self.model_options, "feedback_model": self.feedback_model,
                "feedback_options": self.feedback_options, "limit": self.limit, "budget": self.budget.model_dump(),
                "improver_options": self.improver_options}

    @property
    def id(self) -> str:
        return hashlib.sha256(json.dumps(self.comparable(), sort_keys=True, default=str).encode()).hexdigest()[:10]

    def config(self, arm: str, seed: int) -> dict[str, Any]:
        from sia_bench.loop import RunConfig

        return RunConfig(task=self.task, improver=arm, task_options=dict(self.task_options),
                         improver_options=dict(self.improver_options.get(arm, {})), model=self.model,
                         model_options=dict(self.model_options), feedback_model=self.feedback_model,
                         feedback_options=dict(self.feedback_options), seed=seed, limit=self.limit,
                         budget=self.budget).to_dict()


def split_improver_options(options: dict[str, Any], arms: list[str]) -> dict[str, dict[str, Any]]:
    """``-I key=v`` applies to every arm; ``-I arm:key=v`` to one arm only."""
    out: dict[str, dict[str, Any]] = {arm: {} for arm in arms}
    for key, value in options.items():
        arm, sep, name = key.partition(":")
        if not sep:
            for settings in out.values():
                settings[key] = value
        elif arm not in out:
            raise ValueError(f"-I {key}: {arm!r} is not one of the arms {', '.join(arms)}")
        else:
            out[arm][name] = value
    return {arm: s for arm, s in out.items() if s}


def prepare(spec: AblationSpec) -> dict[str, Any]:
    """Check the arms, task options and improver settings before anything runs; fill the default rollout cap.

    Returns facts shared by every arm: the starting harness digest and the number of val instances scored.
    """
    from sia_bench.loop import build_improver, build_task
    from sia_bench.task import subsample

    if not spec.arms or not spec.seeds:
        raise ValueError("an ablation needs at least one arm and one seed")
    if len(set(spec.arms)) != len(spec.arms) or len(set(spec.seeds)) != len(spec.seeds):
        raise ValueError("arms and seeds must not repeat")
    for arm in spec.arms:  # an unknown arm or setting fails now, not half-way through the ablation
        try:
            build_improver(arm, spec.improver_options.get(arm, {}))
        except ImportError as err:
            raise ValueError(f"improver {arm!r} cannot be loaded ({err}); leave it out of --improvers") from None
    task = build_task(spec.task, spec.task_options)
    try:
        n_val = len(subsample(task.split("val"), spec.limit, 0))
        digest = task.default_harness().digest
    finally:
        task.close()
    if spec.budget.task_rollouts is None:
        spec.budget = spec.budget.model_copy(update={
            "task_rollouts": (spec.budget.generations + 1) * n_val * DEFAULT_ROLLOUT_PASSES})
    return {"starting_harness": digest, "val_instances": n_val}


def ablation_dir(out: Path, spec: AblationSpec) -> Path:
    return Path(out) / f"{spec.task}-ablation-{spec.id}"


def jobs_for(spec: AblationSpec, folder: Path) -> list[Job]:
    return [Job(arm, seed, str(folder / f"{arm}-s{seed}"), spec.config(arm, seed))
            for arm in spec.arms for seed in spec.seeds]


def write_manifest(folder: Path, spec: AblationSpec, facts: dict[str, Any], results: dict[str, JobResult],
                   executor: str) -> dict[str, Any]:
    """``ablation.json``: the shared settings and one entry per arm x seed, merged with earlier invocations."""
    path = folder / "ablation.json"
    old = json.loads(path.read_text()) if path.exists() else {}
    runs = {(r["arm"], r["seed"]): r for r in old.get("runs", [])}
    arms = sorted(set(old.get("arms", [])) | set(spec.arms), key=_arm_order)
    seeds = sorted(set(old.get("seeds", [])) | set(spec.seeds))
    for arm in arms:
        for seed in seeds:
            run_dir = folder / f"{arm}-s{seed}"
            entry = runs.get((arm, seed), {"arm": arm, "seed": seed, "run_dir": run_dir.name})
            entry["status"] = run_status(run_dir)
            result = results.get(f"{arm}-s{seed}")
            entry["error"] = result.error.strip().splitlines()[-1] if result and result.error else entry.get("error", "")
            if entry["status"] == "finished":
                entry["error"] = ""
            runs[(arm, seed)] = entry
    manifest = {"schema_version": SCHEMA_VERSION, "kind": "ablation", "id": spec.id,
                "created_at": old.get("created_at", now()), "updated_at": now(), "executor": executor,
                **spec.comparable(), **facts, "arms": arms, "seeds": seeds,
                "runs": [runs[k] for k in sorted(runs, key=lambda k: (_arm_order(k[0]), k[1]))]}
    atomic_write_json(path, manifest)
    return manifest


def _arm_order(arm: str) -> tuple[int, str]:
    return (DEFAULT_ARMS.index(arm) if arm in DEFAULT_ARMS else len(DEFAULT_ARMS), arm)


def check_folder(folder: Path, spec: AblationSpec) -> None:
    """An explicit ``--ablation-dir`` started with other shared settings is refused: its runs would not compare."""
    path = folder / "ablation.json"
    if path.exists():
        old = json.loads(path.read_text())
        if old.get("id") != spec.id:
            differ = sorted(k for k, v in spec.comparable().items() if json.dumps(old.get(k), sort_keys=True,
                            default=str) != json.dumps(v, sort_keys=True, default=str))
            raise ValueError(f"{folder} holds ablation {old.get('id')} started with other settings "
                             f"({', '.join(differ)} differ); use another folder")


def run_ablation(spec: AblationSpec, out: Path, *, executor: str = "local", workers: int = 1,
                 address: str | None = None, folder: Path | None = None, reporter: Any = None,
                 facts: dict[str, Any] | None = None) -> tuple[Path, list[JobResult]]:
    """Run (or continue) every arm x seed; returns the ablation folder and one result per job."""
    from sia_bench.executors import SilentReporter

    facts = facts or prepare(spec)
    folder = Path(folder) if folder else ablation_dir(out, spec)
    check_folder(folder, spec)
    folder.mkdir(parents=True, exist_ok=True)
    jobs = jobs_for(spec, folder)
    results: dict[str, JobResult] = {}
    write_manifest(folder, spec, facts, results, executor)
    reporter = reporter or SilentReporter()
    done = make_executor(executor, workers, address).run(jobs, _Recording(reporter, results,
                                                                           lambda: write_manifest(
                                                                               folder, spec, facts, results, executor)))
    write_manifest(folder, spec, facts, results, executor)
    return folder, done


class _Recording:
    """Wraps a reporter: stores each result and rewrites the manifest as soon as a job ends."""

    def __init__(self, inner: Any, results: dict[str, JobResult], save: Any):
        self.inner, self.results, self.save = inner, results, save

    def started(self, job: Job) -> None:
        self.inner.started(job)

    def event(self, job: Job, kind: str, **info: Any) -> None:
        self.inner.event(job, kind, **info)

    def finished(self, result: JobResult) -> None:
        self.results[result.job.key] = result
        self.save()
        self.inner.finished(result)

    def poll(self) -> None:
        self.inner.poll()


class Board:
    """One rich live table, arms x seeds: queued / running (generation, best val) / finished (val, test) / failed."""

    def __init__(self, spec: AblationSpec, folder: Path, console: Any):
        from rich.live import Live

        self.spec, self.folder = spec, folder
        self.cells: dict[str, str] = {f"{a}-s{s}": "queued" for a in spec.arms for s in spec.seeds}
        self.running: dict[str, Job] = {}
        self.live = Live(self._table(), console=console, refresh_per_second=4, transient=False)

    def _table(self) -> Any:
        from rich.table import Table

        table = Table(title=f"{self.spec.task} ablation {self.spec.id} · budget {_budget_text(self.spec.budget)}"
                            f" · limit {self.spec.limit}")
        table.add_column("arm")
        for seed in self.spec.seeds:
            table.add_column(f"seed {seed}")
        for arm in self.spec.arms:
            table.add_row(arm, *(self.cells[f"{arm}-s{s}"] for s in self.spec.seeds))
        return table

    def _show(self) -> None:
        self.live.update(self._table())

    def started(self, job: Job) -> None:
        self.running[job.key] = job
        self.cells[job.key] = "[cyan]started[/]"
        self._show()

    def event(self, job: Job, kind: str, **info: Any) -> None:
        if kind == "generation":
            self.cells[job.key] = f"[cyan]gen {info.get('index')}[/]: {info.get('note', '')}"[:60]
            self._show()

    def poll(self) -> None:
        for key, job in list(self.running.items()):
            try:
                record = RunRecord.load(Path(job.run_dir))
            except (FileNotFoundError, ValueError, json.JSONDecodeError):
                continue
            best = record.generations[-1].best_so_far if record.generations else None
            self.cells[key] = f"[cyan]gen {len(record.generations)}[/]" + (f" best {best:.3f}" if best is not None
                                                                            else "")
        self._show()

    def finished(self, result: JobResult) -> None:
        key = result.job.key
        self.running.pop(key, None)
        if not result.ok:
            self.cells[key] = "[red]failed[/]: " + (result.error.strip().splitlines() or ["?"])[-1][:50]
        else:
            record = RunRecord.load(Path(result.job.run_dir))
            m = record.task["metric"]
            final = record.final or {}
            val, test = final.get("val", {}).get(m), final.get("test", {}).get(m)
            note = "done earlier" if result.skipped else "done"
            self.cells[key] = f"[green]{note}[/] val {val:.3f} test {test:.3f}" if val is not None and \
                test is not None else f"[green]{note}[/]"
        self._show()

    def __enter__(self) -> "Board":
        self.live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.stop()


def _budget_text(budget: Budget) -> str:
    return ", ".join(f"{k}={v}" for k, v in budget.model_dump().items() if v is not None)


# -- command line ---------------------------------------------------------------------------------------------------
def spec_from_args(args: argparse.Namespace) -> AblationSpec:
    from sia_bench.cli import _budget, _kv

    arms = [a.strip() for a in args.improvers.split(",") if a.strip()]
    if args.seeds < 1:
        raise ValueError("--seeds must be at least 1")
    budget = _budget(argparse.Namespace(budget=args.budget, generations=args.generations))
    return AblationSpec(task=args.task, arms=arms, seeds=list(range(args.seed_start, args.seed_start + args.seeds)),
                        task_options=_kv(args.T, "-T"), improver_options=split_improver_options(_kv(args.I, "-I"), arms),
                        model=args.model, model_options=_kv(args.M, "-M"), feedback_model=args.feedback_model,
                        feedback_options=_kv(args.F, "-F"), limit=args.limit or None, budget=budget)


def cmd_ablate(args: argparse.Namespace) -> int:
    from sia_bench.cli import console, err_console

    spec = spec_from_args(args)
    folder = Path(args.ablation_dir) if args.ablation_dir else None
    facts = prepare(spec)  # fills the default rollout cap so that the board and the folder name show the matched budget
    target = folder or ablation_dir(Path(args.out), spec)
    with Board(spec, target, err_console if not args.quiet else _null_console()) as board:
        folder, results = run_ablation(spec, Path(args.out), executor=args.executor, workers=args.workers,
                                       address=args.address, folder=target, reporter=board, facts=facts)
    failed = [r for r in results if not r.ok]
    for r in failed:
        err_console.print(f"[red]{r.job.key} failed[/]:\n{r.error.strip()}")
    console.print(f"ablation folder: {folder} ({len(results) - len(failed)}/{len(results)} runs finished)")
    console.print(f"tables: sia-bench leaderboard {folder} --out leaderboard/")
    return 1 if failed else 0


def _null_console() -> Any:
    from rich.console import Console

    return Console(quiet=True)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from sia_bench.cli import console, err_console
    from sia_bench.leaderboard import build_leaderboard

    report = build_leaderboard([Path(p) for p in args.run_dirs], Path(args.out))
    for note in report.skipped:
        err_console.print(f"[yellow]skipped[/] {note}")
    for path in report.files:
        console.print(f"wrote {path}")
    if not report.files:
        raise ValueError(f"no finished run records under {', '.join(args.run_dirs)}")
    return 0


def add_commands(sub: Any) -> None:
    a = sub.add_parser("ablate", help="run every arm x seed at one matched budget")
    a.add_argument("--task", required=True)
    a.add_argument("--improvers", default=",".join(DEFAULT_ARMS), help="comma-separated arms (default: %(default)s)")
    a.add_argument("--seeds", type=int, default=3, help="number of seeds per arm (default: %(default)s)")
    a.add_argument("--seed-start", type=int, default=0, help="first seed (default: %(default)s)")
    a.add_argument("--generations", type=int, default=DEFAULT_GENERATIONS,
                   help="generation budget of every arm (default: %(default)s)")
    a.add_argument("--budget", action="append", help="more budget fields, k=v: task_rollouts (default: "
                   f"{DEFAULT_ROLLOUT_PASSES} val passes per generation), task_tokens, wall_seconds, patience, target")
    a.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                   help="val and test instances per run, fixed subset (default: %(default)s; 0 = whole splits)")
    a.add_argument("--model", default="hf", help="task model backend[:name] (default: %(default)s)")
    a.add_argument("--feedback-model", help="Feedback-Agent model backend[:name] (default: heuristic proposer)")
    a.add_argument("--out", default="runs", help="parent of the ablation folder (default: %(default)s)")
    a.add_argument("--ablation-dir", help="exact ablation folder (default: OUT/<task>-ablation-<id>)")
    a.add_argument("--executor", choices=["local", "ray"], default="local")
    a.add_argument("--workers", type=int, default=1, help="local: processes (1 = in-process, one shared model); "
                                                          "ray: CPUs of the local Ray instance")
    a.add_argument("--address", help="ray: address of an existing cluster (default: start a local instance)")
    a.add_argument("--quiet", action="store_true")
    for flag, what in (("-T", "task"), ("-I", "improver (arm:key=v for one arm)"), ("-M", "task model"),
                       ("-F", "feedback model")):
        a.add_argument(flag, action="append", metavar="K=V", help=f"{what} option")
    a.set_defaults(func=cmd_ablate)
    lb = sub.add_parser("leaderboard", help="Markdown, CSV, PNG and HTML tables from run and baseline records")
    lb.add_argument("run_dirs", nargs="*", default=["runs"], help="folders searched recursively (default: runs)")
    lb.add_argument("--out", default="leaderboard", help="output folder (default: %(default)s)")
    lb.set_defaults(func=cmd_leaderboard)
    from sia_bench.results import add_commands as add_results_commands  # `sia-bench results pack`

    add_results_commands(sub)
