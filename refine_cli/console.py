"""Terminal output shared by the commands: stderr console, progress (a bar or log lines), one-line user errors."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

# Logs and pipes get wide lines instead of rich's 80-column default, so table rows stay whole.
err_console = Console(stderr=True, width=None if sys.stderr.isatty() else 160)


def fail(message: str, debug: bool = False) -> None:
    """User error: one red line on stderr, exit 2 (``debug`` re-raises the exception being handled)."""
    if debug:
        raise
    # Escaped: paths and "[h, w]" in messages are not rich markup. Never wrapped: one line.
    err_console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    sys.exit(2)


# Seconds between two progress lines when stderr is a log file or a pipe.
LOG_INTERVAL_S = 10.0


def progress_bar() -> Progress | LogProgress:
    """Progress on stderr: description, done/total, a free ``rate`` field, elapsed, ETA.

    On a terminal a rich bar. Elsewhere (a log file, a pipe, a CI job) rich would print nothing until the
    end, so plain lines are written instead, one every LOG_INTERVAL_S seconds and one at the end.
    """
    if not err_console.is_terminal:
        return LogProgress(err_console, LOG_INTERVAL_S)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=err_console)


@dataclass
class LogTask:
    description: str
    total: float | None
    fields: dict
    completed: float = 0
    start: float = field(default_factory=time.monotonic)
    printed: float | None = None  # monotonic time of the last line; None before the first
    printed_at: float = 0  # ``completed`` at the last line

    @property
    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def line(self) -> str:
        """'refining images: 12/33 (36%) 420 inst, 35.2 inst/s, elapsed 0:12, ETA 0:21'."""
        done = f"{self.completed:g}"
        if self.total:
            done += f"/{self.total:g} ({100 * self.completed / self.total:.0f}%)"
        rate = self.fields.get("rate")
        parts = [f"{self.description}: {done}" + (f" {rate}" if rate else ""), f"elapsed {_clock(self.elapsed)}"]
        if self.total and 0 < self.completed < self.total:
            parts.append(f"ETA {_clock(self.elapsed / self.completed * (self.total - self.completed))}")
        return ", ".join(parts)


class LogProgress:
    """The part of rich's Progress API the commands use (add_task, update, tasks, console), as log lines."""

    def __init__(self, console: Console, interval: float):
        self.console = console
        self.interval = interval
        self.tasks: list[LogTask] = []

    def __enter__(self) -> LogProgress:
        return self

    def __exit__(self, exc_type, exc, traceback) -> None:
        # The closing line, unless the last one already said the same; none on an error, whose own
        # message must stay the last (and only) line about it.
        for task in self.tasks if exc_type is None else []:
            if task.printed is not None and task.printed_at != task.completed:
                self._print(task)

    def add_task(self, description: str, total: float | None = None, **fields) -> int:
        self.tasks.append(LogTask(description, total, fields))
        return len(self.tasks) - 1

    def update(self, task_id: int, *, advance: float | None = None, completed: float | None = None,
               total: float | None = None, **fields) -> None:
        task = self.tasks[task_id]
        if completed is not None:
            task.completed = completed
        if advance is not None:
            task.completed += advance
        if total is not None:
            task.total = total
        task.fields.update(fields)
        if task.printed is None or time.monotonic() - task.printed >= self.interval:
            self._print(task)

    def _print(self, task: LogTask) -> None:
        self.console.print(task.line(), markup=False, highlight=False, soft_wrap=True)
        task.printed, task.printed_at = time.monotonic(), task.completed


def _clock(seconds: float) -> str:
    """0:07, 12:03, 1:02:03 (as rich's elapsed column)."""
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"
