"""``sia-bench ablate`` and ``sia-bench leaderboard``: every arm x seed at one matched budget, then tables from records.

An ablation folder ``<out>/<task>-ablation-<id>/`` holds one run directory per arm x seed (``<arm>-s<seed>/``) and an
``ablation.json`` manifest. The id is a digest of the resolved shared settings (task and options, task and feedback
models, budget, eval limit, starting harness, per-arm improver settings; see :class:`sia_bench.config.AblationSpec`),
so the same command finds the same folder again whatever the order of its flags: finished runs are skipped,
unfinished ones resumed, and extra arms or seeds are added beside the existing ones. The folder is locked while an
ablation runs in it.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from sia_bench.config import (AblationSpec, Budget, ConfigError, canonical_json, parse_budget, parse_pairs,
                              resolve_run, split_improver_options)
from sia_bench.executors import Job, JobResult, make_executor, run_status
from sia_bench.records import SCHEMA_VERSION, RunRecord, atomic_write_json, now
from sia_bench.rundir import FolderLock

__all__ = ["AblationSpec", "Budget", "prepare", "run_ablation", "split_improver_options"]

DEFAULT_ARMS = ("none", "h", "w", "wh", "bt")
DEFAULT_LIMIT = 32  # val and test instances per run: a CPU-sized default; --limit 0 uses whole splits
DEFAULT_GENERATIONS = 3
# Default matched task-rollout cap per generation, in val passes: one val pass plus up to two train passes its size.
DEFAULT_ROLLOUT_PASSES = 3
ID_SCHEME = 2  # how the id is computed; folders made under another scheme are refused with that reason


def prepare(spec: AblationSpec) -> tuple[AblationSpec, dict[str, Any]]:
    """Check the arms, names, options and the starting harness before anything runs; return the spec in resolved
    form (typed, canonical options; default rollout cap filled) and facts shared by every arm."""
    from sia_bench.loop import build_improver, build_task, starting_harness
    from sia_bench.task import subsample

    if not spec.arms or not spec.seeds:
        raise ConfigError("an ablation needs at least one arm and one seed")
    if len(set(spec.arms)) != len(spec.arms) or len(set(spec.seeds)) != len(spec.seeds):
        raise ConfigError("arms and seeds must not repeat")
    resolved = {arm: resolve_run(spec.config(arm, spec.seeds[0])) for arm in spec.arms}
    for arm, config in resolved.items():  # an unknown arm or setting fails now, not half-way through the ablation
        try:
            build_improver(arm, config.improver_options)
        except ImportError as err:
            raise ConfigError(f"improver {arm!r} cannot be loaded ({err}); leave it out of --improvers") from None
    first = resolved[spec.arms[0]]
    spec = spec.model_copy(update={
        "task_options": first.task_options, "model_options": first.model_options,
        "feedback_options": first.feedback_options, "harness": first.harness,
        "improver_options": {arm: c.improver_options for arm, c in resolved.items() if c.improver_options}})
    task = build_task(spec.task, spec.task_options)
    try:
        n_val = len(subsample(task.split("val"), spec.limit, 0))
        harness, start = starting_harness(task, spec.harness)
        default_digest = task.default_harness().digest
    finally:
        task.close()
    if n_val == 0:
        raise ConfigError(f"task {spec.task!r} has no val instances with these options; nothing to compare on")
    spec = spec.model_copy(update={"harness": start, "start_digest": None if start.is_default else harness.digest})
    if spec.budget.task_rollouts is None:
        spec = spec.model_copy(update={"budget": spec.budget.model_copy(update={
            "task_rollouts": (spec.budget.generations + 1) * n_val * DEFAULT_ROLLOUT_PASSES})})
    return spec, {"starting_harness": harness.digest, "default_harness": default_digest, "val_instances": n_val}


def ablation_dir(out: Path, spec: AblationSpec) -> Path:
    return Path(out) / f"{spec.task}-ablation-{spec.id}"


def jobs_for(spec: AblationSpec, folder: Path, memo_dir: Path | None = None) -> list[Job]:
    """One job per arm x seed. They share one result memo (the ablation folder's, or ``memo_dir``, which several
    ablations of one plan can share): a result computed under the same key (harness, model and adapter weights,
    task, code, instance, decoding) is reused, e.g. the unchanged starting harness scored on the same test instances
    by every seed of ``none``; reuse is charged as computed."""
    memo = str(memo_dir) if memo_dir else str(folder / "memo")
    return [Job(arm, seed, str(folder / f"{arm}-s{seed}"), spec.config(arm, seed).to_dict(), memo)
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
    manifest = {"schema_version": SCHEMA_VERSION, "kind": "ablation", "id": spec.id, "id_scheme": ID_SCHEME,
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
    if not path.exists():
        return
    try:
        old = json.loads(path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as err:
        raise ConfigError(f"{path} is unreadable ({type(err).__name__}); the file is truncated or corrupt") from None
    if not isinstance(old, dict):
        raise ConfigError(f"{path} does not hold an ablation manifest")
    if old.get("id") != spec.id:
        if old.get("id_scheme") != ID_SCHEME:
            raise ConfigError(f"{folder} holds ablation {old.get('id')} made by an older sia-bench (another id "
                              "scheme); use another folder for this command")
        differ = sorted(k for k, v in spec.comparable().items() if canonical_json(old.get(k)) != canonical_json(v))
        raise ConfigError(f"{folder} holds ablation {old.get('id')} started with other settings "
                          f"({', '.join(differ) or 'id'} differ); use another folder")


def run_ablation(spec: AblationSpec, out: Path, *, executor: str = "local", workers: int = 1,
                 address: str | None = None, folder: Path | None = None, reporter: Any = None,
                 facts: dict[str, Any] | None = None, memo_dir: Path | None = None) -> tuple[Path, list[JobResult]]:
    """Run (or continue) every arm x seed; returns the ablation folder and one result per job."""
    from sia_bench.executors import SilentReporter

    if facts is None:
        spec, facts = prepare(spec)
    runner = make_executor(executor, workers, address)
    folder = Path(folder) if folder else ablation_dir(out, spec)
    check_folder(folder, spec)
    folder.mkdir(parents=True, exist_ok=True)
    with FolderLock(folder, "ablation"):
        check_folder(folder, spec)  # again under the lock: another process may have just written the manifest
        jobs = jobs_for(spec, folder, memo_dir)
        results: dict[str, JobResult] = {}
        write_manifest(folder, spec, facts, results, executor)
        reporter = reporter or SilentReporter()
        done = runner.run(jobs, _Recording(reporter, results,
                                           lambda: write_manifest(folder, spec, facts, results, executor)))
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
        from rich.markup import escape
        from rich.table import Table

        table = Table(title=escape(f"{self.spec.task} ablation {self.spec.id} · budget "
                                   f"{_budget_text(self.spec.budget)} · limit {_limit_text(self.spec)}"))
        table.add_column("arm")
        for seed in self.spec.seeds:
            table.add_column(f"seed {seed}")
        for arm in self.spec.arms:
            table.add_row(escape(arm), *(self.cells[f"{arm}-s{s}"] for s in self.spec.seeds))
        return table

    def _show(self) -> None:
        self.live.update(self._table())

    def started(self, job: Job) -> None:
        self.running[job.key] = job
        self.cells[job.key] = "[cyan]started[/]"
        self._show()

    def event(self, job: Job, kind: str, **info: Any) -> None:
        from rich.markup import escape

        if kind == "generation":
            self.cells[job.key] = f"[cyan]gen {info.get('index')}[/]: " + escape(str(info.get("note", ""))[:45])
            self._show()

    def poll(self) -> None:
        for key, job in list(self.running.items()):
            best, n = _progress_of(job)
            if n is not None:
                self.cells[key] = f"[cyan]gen {n}[/]" + (f" best {best:.3f}" if best is not None else "")
        self._show()

    def finished(self, result: JobResult) -> None:
        from rich.markup import escape

        self.running.pop(result.job.key, None)
        ok, text = _outcome(result)
        self.cells[result.job.key] = f"[green]{escape(text)}[/]" if ok else f"[red]{escape(text)}[/]"
        self._show()

    def __enter__(self) -> "Board":
        self.live.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.live.stop()


class PlainBoard:
    """The same reports as plain, flushed lines (for logs): job starts and ends, and each job's loop events."""

    def __init__(self, spec: AblationSpec, stream: Any = None):
        import time

        from sia_bench.progress import PlainLog

        self.spec, self.started_at = spec, time.perf_counter()
        self.log = PlainLog(stream, started=self.started_at)
        self.logs: dict[str, PlainLog] = {}
        self.seen: dict[str, int] = {}
        self.running: dict[str, Job] = {}
        self.total = len(spec.arms) * len(spec.seeds)
        self.done = 0

    def started(self, job: Job) -> None:
        from sia_bench.progress import PlainLog

        self.running[job.key] = job
        self.logs[job.key] = PlainLog(self.log.stream, prefix=f"{job.key}: ", started=self.started_at)
        self.log.line(f"{job.key}: started, loading task data and model ({self.done}/{self.total} runs done)")

    def event(self, job: Job, kind: str, **info: Any) -> None:
        self.logs[job.key](kind, **info)

    def poll(self) -> None:  # jobs in other processes: report each new finished generation
        for key, job in list(self.running.items()):
            best, n = _progress_of(job)
            if n is not None and n != self.seen.get(key):
                self.seen[key] = n
                self.log.line(f"{key}: {n} generation(s) finished" + (f", best val {best:.4f}" if best is not None
                                                                        else ""))

    def finished(self, result: JobResult) -> None:
        self.running.pop(result.job.key, None)
        self.done += 1
        ok, text = _outcome(result)
        self.log.line(f"{result.job.key}: {text} ({self.done}/{self.total} runs done)")

    def __enter__(self) -> "PlainBoard":
        self.log.line(f"{self.spec.task} ablation {self.spec.id}: {', '.join(self.spec.arms)} x seeds "
                      f"{', '.join(map(str, self.spec.seeds))}; budget {_budget_text(self.spec.budget)}; limit "
                      f"{_limit_text(self.spec)}")
        return self

    def __exit__(self, *exc: Any) -> None: ...


def _progress_of(job: Job) -> tuple[float | None, int | None]:
    """Best val so far and finished generations of a running job, from its run.json (None when not readable yet)."""
    try:
        record = RunRecord.load(Path(job.run_dir))
    except (FileNotFoundError, ValueError):
        return None, None
    return (record.generations[-1].best_so_far if record.generations else None), len(record.generations)


def _outcome(result: JobResult) -> tuple[bool, str]:
    if not result.ok:
        return False, "failed: " + (result.error.strip().splitlines() or ["?"])[-1][:80]
    note = "done earlier" if result.skipped else "done"
    try:
        record = RunRecord.load(Path(result.job.run_dir))
    except (FileNotFoundError, ValueError):
        return True, note
    m = record.task["metric"]
    final = record.final or {}
    val, test = final.get("val", {}).get(m), final.get("test", {}).get(m)
    return True, f"{note} val {val:.3f} test {test:.3f}" if val is not None and test is not None else note


def _limit_text(spec: AblationSpec) -> str:
    return f"{spec.limit}" + (f" (test {spec.test_limit})" if spec.test_limit else "")


def _budget_text(budget: Budget) -> str:
    return ", ".join(f"{k}={v}" for k, v in budget.model_dump().items() if v is not None)


# -- command line ---------------------------------------------------------------------------------------------------
def spec_from_args(args: argparse.Namespace) -> AblationSpec:
    """The ablation the flags ask for; every bad value is a ConfigError naming its flag."""
    from sia_bench.config import HarnessStart

    arms = [a.strip() for a in args.improvers.split(",") if a.strip()]
    if args.seeds < 1:
        raise ConfigError("--seeds must be at least 1")
    if args.seed_start < 0:
        raise ConfigError("--seed-start must be 0 or more")
    if args.limit < 0:
        raise ConfigError("--limit must be 0 (whole splits) or more")
    if args.test_limit is not None and args.test_limit < 1:
        raise ConfigError(f"--test-limit must be at least 1 (leave it out to follow --limit), got {args.test_limit}")
    budget = parse_budget(args.budget, args.generations)
    return AblationSpec(task=args.task, arms=arms, seeds=list(range(args.seed_start, args.seed_start + args.seeds)),
                        task_options=parse_pairs(args.T, "-T"),
                        improver_options=split_improver_options(parse_pairs(args.I, "-I"), arms),
                        model=args.model, model_options=parse_pairs(args.M, "-M"),
                        feedback_model=args.feedback_model, feedback_options=parse_pairs(args.F, "-F"),
                        limit=args.limit or None, test_limit=args.test_limit, budget=budget,
                        harness=HarnessStart(dir=args.harness, params=parse_pairs(args.H, "-H")))


def cmd_ablate(args: argparse.Namespace) -> int:
    from sia_bench.cli import console, err_console

    spec, facts = prepare(spec_from_args(args))  # resolved; the board and the folder name show the matched budget
    make_executor(args.executor, args.workers, args.address)  # bad executor flags fail before any folder exists
    target = Path(args.ablation_dir) if args.ablation_dir else ablation_dir(Path(args.out), spec)
    if args.quiet:
        board: Any = Board(spec, target, _null_console())
    elif err_console.is_terminal:
        board = Board(spec, target, err_console)
    else:
        board = PlainBoard(spec, err_console.file)
    with board:
        folder, results = run_ablation(spec, Path(args.out), executor=args.executor, workers=args.workers,
                                       address=args.address, folder=target, reporter=board, facts=facts,
                                       memo_dir=Path(args.memo_dir).resolve() if args.memo_dir else None)
    failed = [r for r in results if not r.ok]
    for r in failed:
        err_console.print(f"{r.job.key} failed:\n{r.error.strip()}", markup=False, highlight=False)
    console.print(f"ablation folder: {folder} ({len(results) - len(failed)}/{len(results)} runs finished)",
                  markup=False, highlight=False)
    console.print(f"tables: sia-bench leaderboard {folder} --out leaderboard/", markup=False, highlight=False)
    return 1 if failed else 0


def _null_console() -> Any:
    from rich.console import Console

    return Console(quiet=True)


def cmd_leaderboard(args: argparse.Namespace) -> int:
    from sia_bench.cli import console, err_console
    from sia_bench.leaderboard import build_leaderboard

    intro = ""
    if args.intro:
        try:
            intro = " ".join(Path(args.intro).read_text(encoding="utf-8").split())
        except (OSError, UnicodeDecodeError) as err:
            raise ConfigError(f"--intro {args.intro}: cannot be read ({err})") from None
    report = build_leaderboard([Path(p) for p in args.run_dirs], Path(args.out))
    if intro and report.files:
        add_intro(Path(args.out), intro)
    for note in report.skipped:
        err_console.print(f"skipped {note}", markup=False, highlight=False)
    for path in report.files:
        console.print(f"wrote {path}", markup=False, highlight=False)
    if not report.files:
        raise ConfigError(f"no finished run records under {', '.join(args.run_dirs)}")
    return 0


def add_intro(out: Path, text: str) -> None:
    """Put a paragraph saying what the tables show under the title of the generated page and index."""
    from html import escape

    from sia_bench.records import atomic_write_text

    page = out / "index.html"
    html = page.read_text(encoding="utf-8")
    if "</h1>" in html:
        atomic_write_text(page, html.replace("</h1>", f'</h1>\n<p class="intro">{escape(text)}</p>', 1))
    index = out / "README.md"
    lines = index.read_text(encoding="utf-8").split("\n")
    atomic_write_text(index, "\n".join(lines[:1] + ["", text] + lines[1:]))


def add_commands(sub: Any) -> None:
    from sia_bench.cli import add_run_options

    a = sub.add_parser("ablate", help="run every arm x seed at one matched budget")
    a.add_argument("--task", required=True)
    a.add_argument("--improvers", default=",".join(DEFAULT_ARMS), help="comma-separated arms (default: %(default)s)")
    a.add_argument("--seeds", type=int, default=3, help="number of seeds per arm (default: %(default)s)")
    a.add_argument("--seed-start", type=int, default=0, help="first seed (default: %(default)s)")
    a.add_argument("--generations", type=int, default=DEFAULT_GENERATIONS,
                   help="generation budget of every arm (default: %(default)s)")
    a.add_argument("--budget", action="append", help=f"more budget fields, k=v: {Budget.help()}; task_rollouts "
                   f"defaults to {DEFAULT_ROLLOUT_PASSES} val passes per generation")
    a.add_argument("--limit", type=int, default=DEFAULT_LIMIT,
                   help="val and test instances per run, fixed subset (default: %(default)s; 0 = whole splits)")
    a.add_argument("--test-limit", type=int, help="test instances per run when that differs from --limit (the same "
                                                  "fixed subset for every arm and seed)")
    a.add_argument("--model", default="hf", help="task model backend[:name] (default: %(default)s)")
    a.add_argument("--out", default="runs", help="parent of the ablation folder (default: %(default)s)")
    a.add_argument("--ablation-dir", help="exact ablation folder (default: OUT/<task>-ablation-<id>)")
    a.add_argument("--memo-dir", help="result memo of the runs (default: ABLATION_DIR/memo); give several ablations of "
                                      "one plan the same folder and each reuses the others' results (keys cover "
                                      "everything that can change a result)")
    a.add_argument("--executor", choices=["local", "ray"], default="local")
    a.add_argument("--workers", type=int, default=1, help="local: processes (1 = in-process, one shared model); "
                                                          "ray: CPUs of the local Ray instance")
    a.add_argument("--address", help="ray: address of an existing cluster (default: start a local instance)")
    a.add_argument("--quiet", action="store_true")
    add_run_options(a, improver_help="improver option (arm:key=v for one arm)")
    a.set_defaults(func=cmd_ablate)
    lb = sub.add_parser("leaderboard", help="Markdown, CSV, PNG and HTML tables from run and baseline records")
    lb.add_argument("run_dirs", nargs="*", default=["runs"], help="folders searched recursively (default: runs)")
    lb.add_argument("--out", default="leaderboard", help="output folder (default: %(default)s)")
    lb.add_argument("--intro", metavar="FILE", help="a paragraph (text file) saying what the tables show, put under "
                                                    "the page's title")
    lb.set_defaults(func=cmd_leaderboard)
    from sia_bench.results import add_commands as add_results_commands  # `sia-bench results pack`

    add_results_commands(sub)
