"""The ``aoe`` command: a thin typer layer over :class:`aoe.Store`.

Parse, call the library, render. Library errors become one line on stderr and an exit
code (:data:`aoe.cli.app.EXIT_CODES`); torch is imported only by the verbs that move
tensors (put, get). Start at :mod:`aoe.cli.app`; each group of commands is a module.
"""

from __future__ import annotations

from . import lineage, runs, serve, transfer, ui, upkeep
from .app import EXIT_CODES, app, main

__all__ = ["EXIT_CODES", "app", "lineage", "main", "runs", "serve", "transfer", "ui", "upkeep"]
