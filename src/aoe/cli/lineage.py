"""Commands about where runs come from and what names them: aliases, the history of a run
or of an alias, lineage graphs."""

from __future__ import annotations

import json
from typing import Annotated

import typer

from ..errors import InvalidInputError
from ..graph import layout, text_lines
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
def fork(
    ctx: typer.Context,
    font_id: str,
    name: Annotated[str, typer.Argument(help="The new font's name (or whole id).")],
    run: Annotated[str | None, typer.Option(help="The run to start from (default: the newest; or @ALIAS).")] = None,
) -> None:
    """Make a new font whose first run is a run of FONT (or FONT@ALIAS): no byte copied,
    the run named as its parent (`aoe store log --graph NEW` draws it)."""
    store: Store = ctx.obj
    new, run_id = store.fork_font(font_id, name, run)
    say(f"forked {new} from {font_id}{'' if run is None else ' ' + run}: its first run is {run_id}")


@store_app.command()
def log(
    ctx: typer.Context,
    font_id: str,
    run_id: Annotated[str | None, typer.Argument()] = None,
    graph: Annotated[bool, typer.Option("--graph", help="The lineage of FONT's runs, as `git log --graph`.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """A run's history: every version its amends and edits left, newest first. FONT@ALIAS
    alone: every move of the alias, newest first (like git's reflog). --graph: which run
    each of FONT's runs came from (resumes, fine-tunes, merges, forks), newest first."""
    store: Store = ctx.obj
    if graph:
        if run_id is not None:
            raise InvalidInputError("--graph draws a whole font: give FONT alone")
        _graph(store, font_id, as_json)
        return
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


def _graph(store: Store, font_id: str, as_json: bool) -> None:
    nodes = store.lineage(font_id)
    if as_json:
        print_json(json.dumps([{"font_id": n.font_id, "run_id": n.run_id, "in_store": n.info is not None,
                                "parents": [list(p) for p in n.parents]} for n in nodes], indent=2))
        return
    if not nodes:
        say("no runs yet")
        return
    named: dict[tuple[str, str], list[str]] = {}
    for name, run in store.aliases_of(font_id).items():
        named.setdefault((font_id, run), []).append(name)
    rows = layout([n.key for n in nodes], {n.key: n.parents for n in nodes})
    labels, marks = {}, {}
    for node in nodes:
        where = "" if node.font_id == font_id else f"{node.font_id} "
        if node.info is None:
            labels[node.key], marks[node.key] = f"{where}{node.run_id}  (not in the store: deleted?)", "x"
            continue
        aliases = ",".join(named.get(node.key, []))
        labels[node.key] = printable(f"{where}{node.run_id}  {node.info.status}"
                                     + (f"  [{aliases}]" if aliases else "") + (f"  {node.info.name}" if node.info.name else ""))
        marks[node.key] = "*" if not where else "o"
    for line in text_lines(rows, labels, marks):
        say(line)
