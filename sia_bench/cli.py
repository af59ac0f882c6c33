"""Command line: argument parsing and printing only; the work happens in loop, records and the registries."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence

from rich.console import Console
from rich.markup import escape
from rich.table import Table

console = Console()
err_console = Console(stderr=True)


def _kv(pairs: Sequence[str] | None, flag: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for pair in pairs or []:
        for item in _split_items(pair):
            if "=" not in item:
                raise ValueError(f"{flag} takes key=value, got {item!r}")
            key, _, value = item.partition("=")
            out[key.strip()] = _auto(value.strip())
    return out


def _split_items(pair: str) -> list[str]:
    """``a=1,b=2`` -> two items, but a comma inside a value without '=' after it stays (``tools=a,b``)."""
    items: list[str] = []
    for part in pair.split(","):
        if "=" in part or not items:
            items.append(part)
        else:
            items[-1] += "," + part
    return items


def _auto(value: str) -> Any:
    if value.lower() in {"true", "false"}:
        return value.lower() == "true"
    if value.lower() in {"none", "null"}:
        return None
    for cast in (int, float):
        try:
            return cast(value)
        except ValueError:
            pass
    return value


def _budget(args: argparse.Namespace):
    from sia_bench.records import Budget

    fields = _kv(args.budget, "--budget")
    if args.generations is not None:
        fields["generations"] = args.generations
    try:
        return Budget(**fields)
    except Exception as err:
        raise ValueError(f"--budget: {err}. Fields: {', '.join(Budget.model_fields)}") from None


class Progress:
    """Rich progress for one run: a line per generation, a bar per split being scored."""

    def __init__(self, quiet: bool = False):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress as RichProgress, TextColumn, TimeElapsedColumn

        self.quiet = quiet
        self.bar = RichProgress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                TimeElapsedColumn(), console=err_console, transient=True, disable=quiet)
        self.current = None

    def __call__(self, kind: str, **info: Any) -> None:
        if kind == "generation":
            if self.current is not None:
                self.bar.remove_task(self.current)
            self.current = self.bar.add_task(f"gen {info['index']}: {info['note']}", total=None)
        elif kind == "sample" and self.current is not None:
            self.bar.advance(self.current)
        elif kind == "generation_done" and not self.quiet:
            g = info["generation"]
            mark = "[green]kept[/]" if g.accepted else ("[yellow]stop[/]" if "stop" in g.levers else "[red]rejected[/]")
            vals = ", ".join(f"{k}={v:.4f}" for k, v in g.val.items())
            levers = "+".join(g.levers) or "-"
            err_console.print(f"gen {g.index} {escape('[' + levers + ']')} {mark} val: {vals or '-'} | "
                              f"{escape(g.reason)}")

    def __enter__(self) -> "Progress":
        self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()


def cmd_run(args: argparse.Namespace) -> int:
    from sia_bench.loop import Loop, RunConfig, new_run_dir, resume

    with Progress(args.quiet) as progress:
        if args.resume:
            record = resume(Path(args.resume), events=progress)
            run_dir = Path(args.resume)
        else:
            if not args.task:
                raise ValueError("--task is required (or --resume RUN_DIR)")
            model = args.model or "hf"
            config = RunConfig(task=args.task, improver=args.improver, task_options=_kv(args.T, "-T"),
                               improver_options=_kv(args.I, "-I"), model=model, model_options=_kv(args.M, "-M"),
                               feedback_model=args.feedback_model, feedback_options=_kv(args.F, "-F"),
                               seed=args.seed, limit=args.limit, budget=_budget(args))
            run_dir = Path(args.run_dir) if args.run_dir else new_run_dir(Path(args.out), config)
            record = Loop(config, run_dir, events=progress).run()
    _print_record(record, run_dir)
    return 0


def _print_record(record: Any, run_dir: Path) -> None:
    m = record.task["metric"]
    table = Table(title=escape(f"{record.task['name']} v{record.task['version']} · improver "
                               f"{record.improver['label']} · seed {record.seed}"))
    for col in ("gen", "levers", "val " + m, "kept", "rollouts", "reason"):
        table.add_column(col)
    for g in record.generations:
        table.add_row(str(g.index), "+".join(g.levers) or "-", f"{g.val.get(m, float('nan')):.4f}" if g.val else "-",
                      "yes" if g.accepted else "", str(g.ledger.task_rollouts()), escape(g.reason[:70]))
    console.print(table)
    final = record.final or {}
    if final:
        console.print(f"best generation {final['best_generation']}: val {m} = {final['val'].get(m, float('nan')):.4f}"
                      f" (normalised {final.get('val_normalised')}), test {m} = "
                      f"{final['test'].get(m, float('nan')):.4f} (normalised {final.get('test_normalised')})")
        others = {k: v for k, v in final["test"].items() if k != m}
        if others:
            console.print("test, other metrics: " + ", ".join(f"{k}={v:.4f}" for k, v in others.items()))
    led = record.ledger
    console.print(f"spent: {led.task_rollouts()} task rollouts ({led.task_tokens()} tokens), "
                  f"{led.feedback_calls} feedback calls, {led.train_steps} training steps ({led.train_seconds:.0f} s), "
                  f"wall {led.wall_seconds:.0f} s · stop: {record.stop_reason} · status: {record.status}")
    console.print(f"run record: {run_dir}/run.json")


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
            desc = registry.describe(name)
        except Exception as err:  # a broken plug-in is listed with its import error, not fatal for the listing
            desc = f"[red]cannot load: {type(err).__name__}: {err}[/]"
        table.add_row(name, desc)
    console.print(table)
    return 0


def cmd_baselines(args: argparse.Namespace) -> int:
    from sia_bench.baselines import list_baselines, run_baselines

    if args.action == "list":
        for name, desc in list_baselines(args.task):
            console.print(f"{name}: {desc}")
        return 0
    for row in run_baselines(args.task, _kv(args.T, "-T"), args.baseline, args.limit,
                             Path(args.out) if args.out else None):
        console.print(row, soft_wrap=True)
    return 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="sia-bench", description="Benchmarks for self-improving agents.")
    sub = p.add_subparsers(dest="command", required=True)
    r = sub.add_parser("run", help="run one improver on one task")
    r.add_argument("--task")
    r.add_argument("--improver", default="none")
    r.add_argument("--model", help="task model backend[:name] (default hf = SmolLM2-135M-Instruct)")
    r.add_argument("--feedback-model", help="Feedback-Agent model backend[:name] (default: heuristic proposer)")
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--limit", type=int, help="at most N val and N test instances (fixed subset)")
    r.add_argument("--generations", type=int, help="generation budget (shortcut for --budget generations=N)")
    r.add_argument("--budget", action="append", help="budget fields: generations, task_rollouts, task_tokens, "
                                                     "wall_seconds, patience, target (k=v, comma-separated)")
    r.add_argument("--out", default="runs", help="parent folder of run directories")
    r.add_argument("--run-dir", help="exact run directory (default: OUT/<task>-<improver>-s<seed>-<time>)")
    r.add_argument("--resume", metavar="RUN_DIR", help="continue a killed run")
    r.add_argument("--quiet", action="store_true")
    for flag, what in (("-T", "task"), ("-I", "improver"), ("-M", "task model"), ("-F", "feedback model")):
        r.add_argument(flag, action="append", metavar="K=V", help=f"{what} option")
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
    b.add_argument("--out", help="also write one record per baseline here (the leaderboard reads them)")
    b.add_argument("-T", action="append", metavar="K=V")
    b.set_defaults(func=cmd_baselines)
    try:
        from sia_bench.ablate import add_commands  # ablate + leaderboard (their own module)

        add_commands(sub)
    except ImportError:
        pass
    return p


def _quiet_libraries() -> None:
    import os

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


def main(argv: Sequence[str] | None = None) -> int:
    from sia_bench.registry import UnknownNameError

    _quiet_libraries()
    from sia_bench.task import OptionError, TaskError

    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except (UnknownNameError, OptionError, TaskError, ValueError, FileNotFoundError) as err:
        err_console.print(f"[bold red]error:[/] {err}")
        return 2
    except KeyboardInterrupt:
        err_console.print("[yellow]interrupted; resume with: sia-bench run --resume RUN_DIR[/]")
        return 130


if __name__ == "__main__":
    sys.exit(main())
