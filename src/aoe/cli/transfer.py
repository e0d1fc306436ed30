"""Commands that copy runs between stores: push, pull, clone."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ..store import Store
from .app import JsonFlag, store_app
from .ui import count, counter, print_json, say, warn

OtherEndpoint = Annotated[str | None, typer.Option(
    "--other-endpoint", help="The S3-compatible server of the other store, if not --endpoint's.")]
FontsOption = Annotated[list[str] | None, typer.Option("--font", help="Only this font (repeat for more).")]
TRANSFER_INCOMPLETE = 6
"""Exit code of a push, pull or clone that transferred all it could, but not every run:
some conflict with the destination, or the source cannot give them whole."""


def _transfer(source: Store, dest: Store, fonts: list[str] | None, as_json: bool, *, new: bool = False) -> None:
    from ..transfer import clone, transfer

    with counter(f"copying to {dest.root}", None, in_bytes=True) as advance:
        report = clone(source, dest, progress=advance) if new else transfer(source, dest, fonts=fonts, progress=advance)
    if as_json:
        print_json(json.dumps(report.to_dict(), indent=2))
    else:
        say(f"{count(report.runs_copied, 'run')} copied and {report.runs_updated:,} moved forward in "
            f"{count(report.fonts, 'font')} ({count(report.objects_copied, 'object')}, "
            f"{report.bytes_copied / 1e6:.1f} MB); {count(report.runs_up_to_date, 'run')} up to date"
            + (f"; {count(report.aliases_moved, 'alias', 'aliases')} moved" if report.aliases_moved else ""))
        for line in report.conflicts + report.unreadable:
            warn(f"not transferred: {line}")
    if not report.complete:
        raise SystemExit(TRANSFER_INCOMPLETE)


@store_app.command()
def push(
    ctx: typer.Context,
    dest: Annotated[str, typer.Argument(help="The store to copy into: a folder or s3://bucket/prefix.")],
    other_endpoint: OtherEndpoint = None,
    font: FontsOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Copy this store's runs into DEST: only missing objects, verified, refs last; resumable."""
    store: Store = ctx.obj
    _transfer(store, Store(dest, endpoint=other_endpoint or store.backend_endpoint), font, as_json)


@store_app.command()
def pull(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="The store to copy from: a folder or s3://bucket/prefix.")],
    other_endpoint: OtherEndpoint = None,
    font: FontsOption = None,
    as_json: JsonFlag = False,
) -> None:
    """Copy SOURCE's runs into this store: only missing objects, verified, refs last; resumable."""
    store: Store = ctx.obj
    _transfer(Store(source, endpoint=other_endpoint or store.backend_endpoint), store, font, as_json)


@store_app.command("clone")
def clone_store(
    ctx: typer.Context,
    source: Annotated[str, typer.Argument(help="The store to copy.")],
    dest: Annotated[str, typer.Argument(help="A new store (a folder or s3://bucket/prefix); must hold no fonts.")],
    other_endpoint: Annotated[str | None, typer.Option(
        "--other-endpoint", help="The S3-compatible server of DEST, if not --endpoint's.")] = None,
    as_json: JsonFlag = False,
) -> None:
    """Copy a whole store into a new one (--root is not used)."""
    endpoint = ctx.obj.backend_endpoint
    _transfer(Store(source, endpoint=endpoint), Store(dest, endpoint=other_endpoint or endpoint), None, as_json,
              new=True)


