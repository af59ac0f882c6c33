"""What a person watching a run sees: rich bars on a terminal, plain timestamped lines when the output is a log file,
and none of the libraries' deprecation chatter either way.

Both displays consume the loop's events (``generation``, ``pass``, ``sample``, ``pass_done``, ``generation_done``,
``finished``). Plain lines are flushed one by one, so ``make demo > log 2>&1`` shows where a long run is.
"""

from __future__ import annotations

import logging
import os
import sys
import time
import warnings
from typing import IO, Any

from rich.markup import escape

SAMPLE_LINE_SECONDS = 30.0  # in plain mode, a "k/n scored" line at most this often during one evaluation pass
# Library messages that say nothing to a benchmark user (they are about the libraries' own next versions).
NOISE = (r".*past_key_values.*", r".*is_gradient_checkpointing.*", r".*is deprecated.*", r".*will be removed.*",
         r".*generation flags are not valid.*", r".*attention mask.*", r".*pad_token_id.*")


class _DropNoise(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        text = record.getMessage().lower()
        return not (record.levelno < logging.ERROR and ("deprecat" in text or "past_key_values" in text
                                                        or "will be removed" in text))


def quiet_libraries() -> None:
    """Silence deprecation warnings and warning-level chatter of transformers, peft, trl, accelerate and torch in
    this process (and, through the environment, in the processes it starts)."""
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("PYTHONWARNINGS", "ignore::DeprecationWarning,ignore::FutureWarning")
    for category in (DeprecationWarning, FutureWarning, PendingDeprecationWarning):
        warnings.filterwarnings("ignore", category=category)
    for pattern in NOISE:
        warnings.filterwarnings("ignore", message=pattern)
    for name in ("transformers", "peft", "trl", "accelerate", "torch"):
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropNoise) for f in logger.filters):
            logger.addFilter(_DropNoise())
    try:
        from transformers.utils import logging as hf_logging

        hf_logging.set_verbosity_error()
    except ImportError:
        pass


def _metrics(values: dict[str, Any], limit: int = 3) -> str:
    shown = [(k, v) for k, v in values.items() if isinstance(v, (int, float)) and k != "n"][:limit]
    return ", ".join(f"{k}={v:.4f}" for k, v in shown) or "-"


class PlainLog:
    """Loop events as plain lines: one per generation and per evaluation pass (with counts and elapsed time), a
    progress line at most every :data:`SAMPLE_LINE_SECONDS` inside a pass."""

    def __init__(self, stream: IO[str] | None = None, prefix: str = "", started: float | None = None):
        self.stream, self.prefix = stream, prefix
        self.started = time.perf_counter() if started is None else started
        self.total = self.done = 0
        self.split, self.last = "", 0.0

    def line(self, text: str) -> None:
        stream = self.stream or sys.stderr
        elapsed = time.perf_counter() - self.started
        stream.write(f"[{elapsed:7.0f}s] {self.prefix}{text}\n")
        stream.flush()

    def __call__(self, kind: str, **info: Any) -> None:
        if kind == "generation":
            self.line(f"gen {info.get('index')}: {info.get('note', '')}")
        elif kind == "pass":
            self.split, self.total, self.done, self.last = info["split"], info["total"], 0, time.perf_counter()
            self.line(f"  scoring {self.total} {self.split} instances")
        elif kind == "sample":
            self.done += 1
            if time.perf_counter() - self.last >= SAMPLE_LINE_SECONDS and self.done < self.total:
                self.last = time.perf_counter()
                self.line(f"  {self.split}: {self.done}/{self.total} scored")
        elif kind == "pass_done":
            self.line(f"  {info['split']} pass: {info['total']}/{info['total']} in {info['seconds']:.1f} s, "
                      f"{_metrics(info.get('metrics') or {})}")
        elif kind == "generation_done":
            g = info["generation"]
            verdict = "kept" if g.accepted else ("stop" if "stop" in g.levers else "rejected")
            self.line(f"gen {g.index} done [{'+'.join(g.levers) or '-'}] {verdict}: val {_metrics(g.val)} "
                      f"({g.seconds:.0f} s) | {g.reason[:100]}")
        elif kind == "finished":
            record = info["record"]
            final = record.final or {}
            self.line(f"finished: best generation {final.get('best_generation')}, val {_metrics(final.get('val', {}))}"
                      f", test {_metrics(final.get('test', {}))} · stop: {record.stop_reason}")


class RichProgress:
    """Rich progress for one run on a terminal: a line per generation, a bar per split being scored."""

    def __init__(self, console: Any, quiet: bool = False):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.quiet, self.console = quiet, console
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                            console=console, transient=True, disable=quiet)
        self.current = None

    def __call__(self, kind: str, **info: Any) -> None:
        if kind == "generation":
            if self.current is not None:
                self.bar.remove_task(self.current)
            self.current = self.bar.add_task(escape(f"gen {info['index']}: {info['note']}"), total=None)
        elif kind == "pass" and self.current is not None:
            self.bar.update(self.current, total=info["total"], completed=0)
        elif kind == "sample" and self.current is not None:
            self.bar.advance(self.current)
        elif kind == "generation_done" and not self.quiet:
            g = info["generation"]
            mark = "[green]kept[/]" if g.accepted else ("[yellow]stop[/]" if "stop" in g.levers else "[red]rejected[/]")
            levers = "+".join(g.levers) or "-"
            self.console.print(f"gen {g.index} {escape('[' + levers + ']')} {mark} val: {escape(_metrics(g.val))} | "
                               f"{escape(g.reason)}")

    def __enter__(self) -> "RichProgress":
        self.bar.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.bar.stop()


class _Silent:
    def __call__(self, kind: str, **info: Any) -> None: ...

    def __enter__(self) -> "_Silent":
        return self

    def __exit__(self, *exc: Any) -> None: ...


class _PlainContext(PlainLog):
    def __enter__(self) -> "_PlainContext":
        return self

    def __exit__(self, *exc: Any) -> None: ...


def run_progress(console: Any, quiet: bool = False) -> Any:
    """The display for one run: nothing with ``quiet``, rich bars on a terminal, plain lines otherwise."""
    if quiet:
        return _Silent()
    if console.is_terminal:
        return RichProgress(console)
    return _PlainContext(console.file)
