"""The ``aoe`` command's application: the typer apps, the store option, and ``main``,
which turns every error into one line and an exit code (:data:`EXIT_CODES`).

The commands live beside this module, one module per group (runs, upkeep, transfer,
serve), each a thin layer: parse, call the library, render with :mod:`aoe.cli.ui`.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Annotated

import typer

from .. import __version__
from ..errors import (
    ConflictError,
    CorruptObjectError,
    FontExistsError,
    FormatError,
    InvalidInputError,
    InvalidNameError,
    NotFoundError,
    RunExistsError,
    StorageError,
    StorageFullError,
    StoreError,
)
from ..manifests import FORMAT_REVISION
from ..store import Store
from .ui import fail, say

EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (NotFoundError, 3),
    (CorruptObjectError, 4),
    (FormatError, 4),
    (StorageFullError, 5),
    (StorageError, 5),
    (ConflictError, 7),
    (InvalidNameError, 2),
    (InvalidInputError, 2),
    (FontExistsError, 2),
    (RunExistsError, 2),
    (StoreError, 1),
]
"""Exit code per error type, first match wins; 0 is success, 2 also bad usage."""

EXIT_INTERNAL = 70
"""An error aoe did not expect (a bug): one line, like every other (EX_SOFTWARE)."""

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="aoe: a content-addressed store for ML training runs.")
store_app = typer.Typer(no_args_is_help=True, help="Save, fetch and browse runs in a store.")
app.add_typer(store_app, name="store")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]


def main() -> None:
    """Entry point: run the app, turning every library error into one line."""
    try:
        with only_the_command_named(sys.argv[1:]):
            code = app(standalone_mode=False)
    except typer.TyperException as exc:  # bad usage: one line, and where to look
        ctx = getattr(exc, "ctx", None)
        # typer vendors click privately (typer._click) and compares this name itself
        if type(exc).__name__ == "NoArgsIsHelpError":  # its help is printed as it is made (rich), else kept
            if exc.format_message():
                say(exc.format_message())
            raise SystemExit(0) from None
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
        misplaced = [o for o in STORE_OPTIONS_WITH_VALUES if exc.format_message().startswith(f"No such option: {o}")]
        if misplaced:
            hint = f" ({misplaced[0]} goes before the command: `aoe store {misplaced[0]} ... COMMAND ...`)"
        fail(exc.format_message() + hint, getattr(exc, "exit_code", 2))
    except typer.Abort:
        fail("interrupted; nothing half-written was published", 130)
    except StoreError as exc:
        fail(str(exc), next(code for kind, code in EXIT_CODES if isinstance(exc, kind)))
    except KeyboardInterrupt:
        fail("interrupted; nothing half-written was published", 130)
    except OSError as exc:
        fail(f"{exc.strerror or exc}: {exc.filename or ''}".rstrip(": "), 1)
    except Exception as exc:  # a bug of aoe's: still one line, and how to see more
        if os.environ.get("AOE_DEBUG"):
            raise
        fail(f"internal error ({type(exc).__name__}: {exc}); please report it (AOE_DEBUG=1 shows the "
             "traceback)", EXIT_INTERNAL)
    if isinstance(code, int) and code:
        raise SystemExit(code)


STORE_OPTIONS_WITH_VALUES = ("--root", "--endpoint")


@contextmanager
def only_the_command_named(args: list[str]) -> Iterator[None]:
    """While the app runs these arguments, register only the store command they name, if
    they name one: typer builds every registered command from its signature at each start
    (20 ms of every `aoe store ls`); help and mistakes (no command, an unknown one) see them all."""
    name = _command_name(args)
    everything = store_app.registered_commands
    named = [info for info in everything if _name_of(info) == name]
    if len(named) == 1:
        store_app.registered_commands = named
    try:
        yield
    finally:
        store_app.registered_commands = everything


def _command_name(args: list[str]) -> str | None:
    """The store command ``aoe ARGS`` runs (``aoe store [--root R] ls ...`` -> ``ls``), or None."""
    if not args or args[0] != "store":
        return None
    rest = iter(args[1:])
    for arg in rest:
        if arg in STORE_OPTIONS_WITH_VALUES:
            next(rest, None)
        elif not arg.startswith("-"):
            return arg
        elif arg.split("=", 1)[0] not in STORE_OPTIONS_WITH_VALUES:
            return None  # --help, or an option typer will refuse with the whole app
    return None


def _name_of(info: typer.models.CommandInfo) -> str:
    return info.name or getattr(info.callback, "__name__", "").replace("_", "-")


def _say_version(asked: bool) -> None:
    if asked:
        say(f"aoe {__version__}: writes format revision {FORMAT_REVISION} (docs/format.md), reads revisions 1 "
            f"to {FORMAT_REVISION}")
        raise typer.Exit()


@app.callback()
def app_options(
    version: Annotated[bool, typer.Option("--version", callback=_say_version, is_eager=True,
                                          help="Say aoe's version and the format it writes, and exit.")] = False,
) -> None:
    """aoe: a content-addressed store for ML training runs."""


@store_app.callback()
def store_options(
    ctx: typer.Context,
    root: Annotated[
        str | None,
        typer.Option("--root", envvar="AOE_STORE",
                     help="The store: a folder, or s3://bucket/prefix (default: ./networks)."),
    ] = None,
    endpoint: Annotated[
        str | None,
        typer.Option("--endpoint", envvar="AOE_S3_ENDPOINT",
                     help="The S3-compatible server of an s3:// store (default: AWS S3)."),
    ] = None,
) -> None:
    ctx.obj = Store(root, endpoint=endpoint)

