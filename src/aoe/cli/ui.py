"""How the command line shows things: lines escaped for a terminal, tables, sizes,
times and progress bars (rich draws the bars and formats sizes; torch is never needed)."""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NoReturn

from ..names import printable
from ..store import Store

PROGRESS_MIN_BYTES = 32 * 1024 * 1024
"""Smaller puts and gets finish too fast to need a progress bar."""


def say(*parts: Any, file: Any = None, flush: bool = False) -> None:
    """Print for a person: every character a terminal would act on (escape sequences,
    bell, bidi overrides) is shown escaped, since names and tags come from the store."""
    text = " ".join(str(p) for p in parts)
    print("\n".join(printable(line) for line in text.split("\n")), file=file, flush=flush)


def print_json(text: str) -> None:
    """Print JSON made by ``json.dumps`` (ASCII: every control character escaped but DEL,
    which is escaped here), so it is safe on a terminal without a scan of every character
    (a listing of 10,000 runs is megabytes)."""
    if "\x7f" in text:  # a scan, not a copy, of the megabytes that usually hold none
        text = text.replace("\x7f", "\\u007f")
    sys.stdout.write(text)
    sys.stdout.write("\n")


def count(number: int, noun: str, plural: str | None = None) -> str:
    """``1 run``, ``2 runs``, ``1,000 runs``."""
    return f"{number:,} {noun if number == 1 else plural or noun + 's'}"


def fail(message: str, code: int) -> NoReturn:
    say(f"aoe: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def warn(message: str) -> None:
    say(f"aoe: warning: {message}", file=sys.stderr)


@contextmanager
def progress(store: Store, label: str, total: int) -> Iterator[None]:
    """A byte progress bar on stderr for a put or get that is not tiny."""
    with counter(label, total if total >= PROGRESS_MIN_BYTES else None, in_bytes=True) as advance:
        store.objects.on_progress = advance
        try:
            yield
        finally:
            store.objects.on_progress = None


@contextmanager
def counter(label: str, total: int | None, *, in_bytes: bool = False) -> Iterator[Callable[[int], None] | None]:
    """Yield a callback advancing a progress bar on stderr when it is a terminal, else None."""
    if not sys.stderr.isatty() or (in_bytes and total is None):
        yield None
        return
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, MofNCompleteColumn, Progress, TransferSpeedColumn

    columns = (DownloadColumn(), TransferSpeedColumn()) if in_bytes else (MofNCompleteColumn(),)
    with Progress("{task.description}", BarColumn(), *columns, transient=True,
                  console=Console(stderr=True)) as bar:
        task = bar.add_task(label, total=total)
        yield lambda n: bar.advance(task, n)


def table(headers: list[str], rows: list[list[Any]]) -> None:
    """Aligned plain-text columns (no colours, so it pipes well)."""
    cells = [headers, *[[printable(str(c)) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        say("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


def when(moment: Any) -> str:
    """A time as people read it in a terminal (UTC)."""
    return str(moment.strftime("%Y-%m-%d %H:%M:%S"))


def size(count: int) -> str:
    """A byte count as people read it (``1.2 GB``), as rich writes it."""
    from rich.filesize import decimal

    return str(decimal(count))

