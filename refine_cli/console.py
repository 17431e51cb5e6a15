"""Terminal output shared by the commands: stderr console, progress bar, one-line user errors."""

from __future__ import annotations

import sys

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


def progress_bar() -> Progress:
    """Bar on stderr: description, bar, done/total, a free ``rate`` field, elapsed, ETA."""
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=err_console)
