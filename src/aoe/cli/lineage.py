"""Commands about where runs come from and what names them: aliases, and the history of
a run or of an alias."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ..errors import InvalidInputError
from ..names import parse_time, printable
from ..store import Store
from .app import JsonFlag, store_app
from .ui import print_json, say, table, warn, when


@store_app.command()
def alias(
    ctx: typer.Context,
    font_id: str,
    name: Annotated[str | None, typer.Argument(help="The alias (best, production...); none: list them.")] = None,
    run_id: Annotated[str | None, typer.Argument(
        help="The run it points at from now on (a run id, @OTHER; default: the newest run).")] = None,
    remove: Annotated[bool, typer.Option("--remove", help="Remove the alias (its history is kept).")] = False,
    expect: Annotated[str | None, typer.Option(
        "--expect", help="Move only if it points at this run now ('none': if it is not set).")] = None,
    note: Annotated[str, typer.Option(help="Why it moved, kept in its history.")] = "",
    as_json: JsonFlag = False,
) -> None:
    """Point an alias of FONT at a run, atomically (FONT@NAME then names that run wherever
    a run is named); every move is kept: `aoe store log FONT@NAME`. No NAME: list them."""
    store: Store = ctx.obj
    if name is None:
        aliases = store.aliases_of(font_id)
        if as_json:
            print_json(json.dumps(aliases, indent=2))
        else:
            table(["alias", "run"], [[f"{font_id}@{n}", run] for n, run in aliases.items()])
        return
    if remove and run_id is not None:
        raise InvalidInputError("give a run to point at, or --remove, not both")
    expected = {} if expect is None else {"expected_run": None if expect == "none" else expect}
    if remove:
        move = store.remove_alias(font_id, name, note=note, **expected)
        say(f"removed {font_id}@{name} (it pointed at {_pointed_before(store, font_id, name)})")
    else:
        move = store.set_alias(font_id, name, run_id, note=note, **expected)
        say(f"{font_id}@{name} -> {move.run_id}")
    if as_json:
        print_json(json.dumps(move.to_dict(), indent=2))


def _pointed_before(store: Store, font_id: str, name: str) -> str:
    history = store.alias_history(font_id, name)
    return (history[-2].run_id or "no run") if len(history) > 1 else "no run"


@store_app.command()
def log(
    ctx: typer.Context,
    font_id: str,
    run_id: Annotated[str | None, typer.Argument()] = None,
    as_json: JsonFlag = False,
) -> None:
    """A run's history: every version its amends and edits left, newest first. FONT@ALIAS
    alone: every move of the alias, newest first (like git's reflog)."""
    store: Store = ctx.obj
    if "@" in font_id and run_id is None:
        font, _, name = font_id.partition("@")
        moves = store.alias_history(font, name)
        if as_json:
            print_json(json.dumps([move.to_dict() for move in reversed(moves)], indent=2))
            return
        for move in reversed(moves):
            say(f"{move.move:>4}  {when(parse_time(move.at))}  {move.run_id or '(removed)'}"
                + (f"  {printable(move.note)}" if move.note else ""))
        return
    history = store.run_history(font_id, run_id)
    if as_json:
        print_json(json.dumps([info.to_dict() for info in history], indent=2))
        return
    for info in history:
        say(f"{info.manifest}  {when(info.saved_at)}  {info.status}  "
            f"name={info.name or '-'}  tags={','.join(info.tags) or '-'}  missing={','.join(info.missing) or '-'}")
    if history[-1].parent is not None:
        warn(f"the versions before {history[-1].manifest} cannot be read (its parent {history[-1].parent} is missing "
             "or of another run); run `aoe store fsck`")
