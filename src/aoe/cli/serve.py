"""`aoe store serve`: the web browser of a store."""

from __future__ import annotations

from typing import Annotated

import typer

from ..store import Store
from .app import store_app
from .ui import say, warn


@store_app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[str, typer.Option(help="Where to listen; anything but loopback shows the store to the network.")]
    = "127.0.0.1",
    port: Annotated[int, typer.Option(help="The port (0: any free one).", min=0, max=65535)] = 8765,
    allow_host: Annotated[list[str] | None, typer.Option(
        "--allow-host", help="Also answer requests for this host name (repeat for more); by default only "
        "the address it listens on and localhost, so other web pages cannot read the store.")] = None,
) -> None:
    """Browse the store in a web browser: fonts, runs, samples, glyphs, comparisons (read only)."""
    from ..web import make_server

    store: Store = ctx.obj
    store.require_root()
    server = make_server(store, host, port, allow_host or ())
    if host not in ("127.0.0.1", "localhost", "::1"):
        warn(f"listening on {host}: anyone who can reach this machine can read the store"
             + ("" if allow_host else "; pages are answered only for the names given with --allow-host"))
    say(f"serving {store.root} at http://{host}:{server.server_address[1]}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()

