"""Command line: argument parsing and printing only; the work happens in config, loop, records and the registries.

Every bad invocation ends the same way: one ``error:`` line on stderr, exit status 2, no traceback, and nothing
created on disk (settings are checked in full before any folder is made).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, NoReturn, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


class UsageError(Exception):
    """argparse's complaint, raised instead of printed, so that main reports it like every other error."""


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        raise UsageError(f"{self.prog}: {message}")


def error_line(message: Any) -> None:
    """One line on stderr, whatever the message holds (newlines, markup-like brackets, undecodable bytes)."""
    from sia_bench.config import printable

    text = " ".join(printable(message).split())
    sys.stderr.write(f"error: {text}\n")
    sys.stderr.flush()


def _print(text: str, file: Console | None = None) -> None:
    (file or console).print(text, markup=False, highlight=False, soft_wrap=True)


def run_config_from_args(args: argparse.Namespace) -> Any:
    """The RunConfig that ``run``'s flags ask for, checked and typed (ConfigError names the flag)."""
    from sia_bench.config import HarnessStart, build_run_config, parse_budget, parse_pairs, resolve_run

    if args.generations is not None and args.generations < 0:
        from sia_bench.config import ConfigError

        raise ConfigError(f"--generations must be 0 or more, got {args.generations}")
    options = {flag: parse_pairs(getattr(args, flag[1]), flag) for flag in ("-T", "-I", "-M", "-F", "-H")}
    scoped = [k for k in options["-I"] if ":" in k]
    if scoped:
        from sia_bench.config import ConfigError

        raise ConfigError(f"-I {scoped[0]}: the arm:key form is for ablate; run has one improver, use -I key=value")
    config = build_run_config(
        task=args.task, improver=args.improver, task_options=options["-T"], improver_options=options["-I"],
        model=args.model or "hf", model_options=options["-M"], feedback_model=args.feedback_model,
        feedback_options=options["-F"], seed=args.seed, limit=args.limit, test_limit=args.test_limit,
        budget=parse_budget(args.budget, args.generations),
        harness=HarnessStart(dir=args.harness, params=options["-H"]))
    return resolve_run(config)


def cmd_run(args: argparse.Namespace) -> int:
    from sia_bench.config import ConfigError, check_text
    from sia_bench.loop import Loop, new_run_dir, resume
    from sia_bench.progress import run_progress
    from sia_bench.rundir import precheck

    if args.resume:
        extra = [flag for flag, value in (("--task", args.task), ("--run-dir", args.run_dir),
                                          ("--harness", args.harness), ("--limit", args.limit),
                                          ("--test-limit", args.test_limit),
                                          ("--generations", args.generations), ("--budget", args.budget),
                                          ("--model", args.model), ("--feedback-model", args.feedback_model),
                                          *((f, getattr(args, f[1])) for f in ("-T", "-I", "-M", "-F", "-H")))
                 if value is not None]
        if extra:
            raise ConfigError("--resume continues RUN_DIR with the settings it was started with; drop "
                              + ", ".join(extra))
        run_dir = Path(check_text("--resume", args.resume))
        with run_progress(err_console, args.quiet) as progress:
            record = resume(run_dir, events=progress)
    else:
        if not args.task:
            raise ConfigError("--task is required (or --resume RUN_DIR)")
        config = run_config_from_args(args)
        run_dir = Path(check_text("--run-dir", args.run_dir)) if args.run_dir else new_run_dir(
            Path(check_text("--out", args.out)), config)
        precheck(run_dir, config)  # a folder in use or holding another run is refused before the model loads
        loop = Loop(config, run_dir)
        with run_progress(err_console, args.quiet) as progress:
            loop.events = progress
            record = loop.run()
    _print_record(record, run_dir)
    return 0


def _print_record(record: Any, run_dir: Path) -> None:
    m = record.task["metric"]
    table = Table(title=escape(f"{record.task['name']} v{record.task['version']} · improver "
                               f"{record.improver['label']} · seed {record.seed}"))
    for col in ("gen", "levers", "val " + m, "kept", "rollouts", "reason"):
        table.add_column(col)
    for g in record.generations:
        table.add_row(str(g.index), escape("+".join(g.levers) or "-"),
                      f"{g.val.get(m, float('nan')):.4f}" if g.val else "-", "yes" if g.accepted else "",
                      str(g.ledger.task_rollouts()), escape(g.reason[:70]))
    console.print(table)
    final = record.final or {}
    if final:
        _print(f"best generation {final['best_generation']}: val {m} = {final['val'].get(m, float('nan')):.4f}"
               f" (normalised {final.get('val_normalised')}), test {m} = "
               f"{final['test'].get(m, float('nan')):.4f} (normalised {final.get('test_normalised')})")
        others = {k: v for k, v in final["test"].items() if k != m}
        if others:
            _print("test, other metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in others.items()))
    for note in (record.task.get("data") or {}).get("notes", []):
        _print(f"data note: {note}")
    led = record.ledger
    _print(f"spent: {led.task_rollouts()} task rollouts ({led.task_tokens()} tokens), {led.feedback_calls} feedback "
           f"calls, {led.train_steps} training steps ({led.train_seconds:.0f} s), wall {led.wall_seconds:.0f} s · "
           f"stop: {record.stop_reason} · status: {record.status}")
    _print(f"run record: {run_dir}/run.json")


def cmd_show(args: argparse.Namespace) -> int:
    from sia_bench.records import RunRecord

    record = RunRecord.load(Path(args.run_dir))
    if args.json:
        print(json.dumps(record.model_dump(mode="json"), indent=2, ensure_ascii=False))
    else:
        _print_record(record, Path(args.run_dir))
    return 0


def _list(registry: Any, title: str) -> int:
    table = Table(title=title)
    table.add_column("name")
    table.add_column("description")
    for name in registry.names():
        try:
            desc = escape(registry.describe(name))
        except Exception as err:  # a broken plug-in is listed with its import error, not fatal for the listing
            desc = f"[red]cannot load: {escape(f'{type(err).__name__}: {err}')}[/]"
        table.add_row(escape(name), desc)
    console.print(table)
    return 0


def cmd_baselines(args: argparse.Namespace) -> int:
    from sia_bench.baselines import get_baseline, list_baselines, run_baselines
    from sia_bench.config import ConfigError, HarnessStart, parse_pairs, resolve_harness_start, resolve_task_options
    from sia_bench.registry import TASKS

    TASKS.get(args.task)
    if args.action == "list":
        for name, desc in list_baselines(args.task):
            _print(f"{name}: {desc}")
        return 0
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit must be at least 1 (leave it out for whole splits), got {args.limit}")
    if args.baseline:
        get_baseline(args.task, args.baseline)  # an unknown name fails before any fitting
    options = resolve_task_options(args.task, parse_pairs(args.T, "-T"))
    start = resolve_harness_start(HarnessStart(dir=args.harness, params=parse_pairs(args.H, "-H")))
    if args.test_limit is not None and args.test_limit < 1:
        raise ConfigError(f"--test-limit must be at least 1 (leave it out to follow --limit), got {args.test_limit}")
    for line in run_baselines(args.task, options, args.baseline, args.limit, Path(args.out) if args.out else None,
                              harness=start, test_limit=args.test_limit):
        _print(line)
    return 0


def add_run_options(p: argparse.ArgumentParser, improver_help: str = "improver option") -> None:
    """The option flags ``run`` and ``ablate`` share (one definition, one help text)."""
    p.add_argument("--feedback-model", help="Feedback-Agent model backend[:name] (default: heuristic proposer)")
    p.add_argument("--harness", metavar="DIR", help="start from this harness folder (SKILL.md + harness.toml, e.g. a "
                                                    "run's gen_000/harness) instead of the task's default")
    for flag, what in (("-T", "task option"), ("-I", improver_help), ("-M", "task model option"),
                       ("-F", "Feedback-Agent model option"), ("-H", "starting-harness parameter (over --harness or "
                                                                       "the default)")):
        p.add_argument(flag, action="append", metavar="K=V", help=what)


def build_parser() -> argparse.ArgumentParser:
    from sia_bench.config import Budget

    p = Parser(prog="sia-bench", description="Benchmarks for self-improving agents.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run one improver on one task")
    r.add_argument("--task")
    r.add_argument("--improver", default="none")
    r.add_argument("--model", help="task model backend[:name] (default hf = SmolLM2-135M-Instruct)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--limit", type=int, help="at most N val and N test instances (fixed subset)")
    r.add_argument("--test-limit", type=int, help="at most N test instances when that differs from --limit")
    r.add_argument("--generations", type=int, help="generation budget (shortcut for --budget generations=N)")
    r.add_argument("--budget", action="append", help=f"budget fields, k=v (comma-separated): {Budget.help()}")
    r.add_argument("--out", default="runs", help="parent folder of run directories")
    r.add_argument("--run-dir", help="exact run directory (default: OUT/<task>-<improver>-s<seed>-<time>)")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run")
    r.add_argument("--quiet", action="store_true")
    add_run_options(r)
    r.set_defaults(func=cmd_run)
    s = sub.add_parser("show", help="print a run record")
    s.add_argument("run_dir")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_show)
    for name, reg_name in (("tasks", "TASKS"), ("improvers", "IMPROVERS"), ("models", "MODELS")):
        q = sub.add_parser(name, help=f"list registered {name}")
        q.set_defaults(func=lambda a, reg_name=reg_name, name=name: _list(
            getattr(__import__("sia_bench.registry", fromlist=[reg_name]), reg_name), name))
    b = sub.add_parser("baselines", help="list or run a task's classical baselines")
    b.add_argument("action", choices=["list", "run"])
    b.add_argument("--task", required=True)
    b.add_argument("--baseline", help="one baseline (default: all)")
    b.add_argument("--limit", type=int, help="at most N val and N test instances")
    b.add_argument("--test-limit", type=int, help="at most N test instances when that differs from --limit")
    b.add_argument("--out", help="also write one record per baseline here (the leaderboard reads them)")
    b.add_argument("--harness", metavar="DIR", help="harness folder for baselines that run the agent")
    b.add_argument("-T", action="append", metavar="K=V", help="task option")
    b.add_argument("-H", action="append", metavar="K=V", help="harness parameter for baselines that run the agent")
    b.set_defaults(func=cmd_baselines)
    from sia_bench.ablate import add_commands  # ablate + leaderboard (their own module)

    add_commands(sub)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    from sia_bench.progress import quiet_libraries
    from sia_bench.registry import UnknownNameError
    from sia_bench.task import OptionError, TaskError

    quiet_libraries()
    try:
        args = build_parser().parse_args(argv)
        return args.func(args)
    except (UsageError, UnknownNameError, OptionError, TaskError, ValueError, OSError) as err:
        error_line(err)
        return 2
    except KeyboardInterrupt:
        error_line("interrupted; continue with: sia-bench run --resume RUN_DIR (or the same ablate command)")
        return 130
    except Exception as err:  # a bug, not bad input: still one line, with the way to the traceback
        if os.environ.get("SIA_BENCH_DEBUG"):
            raise
        error_line(f"internal error {type(err).__name__}: {err} (rerun with SIA_BENCH_DEBUG=1 for the traceback)")
        return 1


if __name__ == "__main__":
    sys.exit(main())
