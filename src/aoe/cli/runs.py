"""Commands that save, fetch, list, describe and compare runs."""

from __future__ import annotations

import json
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any

import typer

from ..errors import (
    FontNotFoundError,
    InvalidInputError,
    StoreError,
)
from ..names import printable
from ..query import check_field, parse_condition
from ..runinfo import fields_of
from ..store import Store
from .app import JsonFlag, store_app
from .ui import count, counter, print_json, progress, say, table, warn, when


@store_app.command("create-font")
def create_font(ctx: typer.Context, name: str) -> None:
    """Create a font: NAME takes the next free number, or give a whole id like 7-fruity."""
    say(ctx.obj.create_font(name))


@store_app.command()
def put(
    ctx: typer.Context,
    font_id: str,
    run_dir: Path,
    create: Annotated[bool, typer.Option("--create", help="Create the font if it does not exist.")] = False,
    from_checkpoint: Annotated[bool, typer.Option(
        "--from-checkpoint", help="The weights (or RUN_DIR itself, a file) are a training checkpoint: "
        "keep the model, drop optimizer and scheduler state, record epoch and losses.",
    )] = False,
) -> None:
    """Commit a run from a folder in the spec's layout; prints the run id.

    RUN_DIR holds weights.pt (or weights, weights.pth), personality_vector.pt,
    sample.png, eval-glyphs/<glyph>.png, feedback.json, optionally run.json
    (params, started_at, ended_at, status, name, description, tags) and
    extras/<name>.pt. With --from-checkpoint, RUN_DIR may also be a checkpoint file.
    """
    from ..legacy import read_run_folder

    store: Store = ctx.obj
    if not (run_dir.is_dir() or (from_checkpoint and run_dir.is_file())):
        raise InvalidInputError(f"run folder {run_dir} does not exist or is not a folder")
    if create:
        store.create_font(font_id, exist_ok=True)
    elif not store.has_font(font_id):
        raise FontNotFoundError(
            f"no font {font_id!r} in {store.root}; add --create to create it, "
            f"or run `aoe store create-font {font_id}`"
        )
    if from_checkpoint and run_dir.is_file():
        with progress(store, "saving", run_dir.stat().st_size):
            run_id = store.save_model_from_checkpoint(font_id, run_dir)
    else:
        folder = read_run_folder(run_dir, checkpoint=from_checkpoint)
        for note in folder.notes:
            warn(note)
        with progress(store, "saving", _input_bytes(folder.arguments)):
            run_id = store.save_model(font_id, **folder.arguments)
        _say_if_the_same(store, font_id, folder.written_from, run_id)
    info = store.get_run_info(font_id, run_id)
    if info.missing:
        warn(f"run {run_id} is incomplete: no {', '.join(info.missing)}")
    say(run_id)


def _say_if_the_same(store: Store, font_id: str, origin: tuple[str, str] | None, run_id: str) -> None:
    """A folder `get` wrote, put back unchanged into its font, made a second run like the
    first: say so (aoe keeps every run it is given, so nothing is lost either way)."""
    if origin is None or origin[0] != font_id:
        return
    from ..diff import diff_runs

    try:
        found = diff_runs(store, font_id, origin[1], run_id, measure=False)
    except StoreError:  # that run is gone, or run.json names none: nothing to compare with
        return
    if not (found.metadata or found.params or found.feedback or found.images or found.changed_tensors):
        say(f"aoe: note: run {run_id} has the same weights, images, feedback and metadata as run {origin[1]}, "
            "which this folder was written from; `aoe store rm` one of them if you wanted one", file=sys.stderr)


@store_app.command("import")
def import_(
    ctx: typer.Context,
    legacy_dir: Annotated[Path, typer.Argument(metavar="LEGACY_DIR")],
    follow_symlinks: Annotated[bool, typer.Option(
        "--follow-symlinks", help="Also read files that symlinks in LEGACY_DIR point to outside it.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Import a plain-folder store (LEGACY_DIR/<font-id>/runs/<timestamp>/...), keeping
    run times; importing again adds nothing. Only regular files inside LEGACY_DIR are read."""
    from ..legacy import import_legacy

    with counter("importing", None) as advance:
        report = import_legacy(ctx.obj, legacy_dir, progress=advance, follow_symlinks=follow_symlinks)
    if as_json:
        print_json(json.dumps(report.to_dict(), indent=2))
        return
    for font_id in report.fonts_created:
        say(f"created font {font_id}")
    for run in report.imported:
        say(f"imported {run}")
    for line in report.incomplete:
        say(f"incomplete: {line}")
    for line in report.notes:
        warn(line)
    for path, why in report.skipped:
        warn(f"skipped {path}: {why}")
    say(f"{count(len(report.imported), 'run')} imported, {len(report.already_imported):,} already there, "
        f"{len(report.incomplete):,} incomplete, {len(report.skipped):,} skipped")


def _input_bytes(args: dict[str, Any]) -> int:
    import torch

    total = 0
    stack, seen = [args.get("weights"), *(args.get("extras") or {}).values()], set()
    while stack:
        value = stack.pop()
        if id(value) in seen:  # a tensor or container held twice is saved once
            continue
        seen.add(id(value))
        if isinstance(value, torch.Tensor):
            total += value.numel() * value.element_size()
        elif isinstance(value, dict):
            stack.extend(value.values())
        elif isinstance(value, (list, tuple)):
            stack.extend(value)
    return total


@store_app.command()
def get(
    ctx: typer.Context,
    font_id: str,
    run_and_dest: Annotated[list[str], typer.Argument(metavar="[RUN_ID] DEST")],
) -> None:
    """Write a run (the newest by default) back as a folder, verifying every hash."""
    store: Store = ctx.obj
    run_id, dest = run_and_dest_of(run_and_dest)
    run = store.open_run(font_id, run_id)
    with progress(store, "fetching", run.logical_bytes):
        say(run.export(dest))


def run_and_dest_of(arguments: list[str]) -> tuple[str | None, str]:
    """``[RUN_ID] DEST`` after a font id: the run (None: the newest) and the destination."""
    if len(arguments) > 2:
        raise InvalidInputError("too many arguments: expected FONT_ID [RUN_ID] DEST")
    return (None, arguments[0]) if len(arguments) == 1 else (arguments[0], arguments[1])


@store_app.command()
def export(
    ctx: typer.Context,
    font_id: str,
    run_and_dest: Annotated[list[str], typer.Argument(metavar="[RUN_ID] DEST")],
    format: Annotated[str | None, typer.Option(
        "--format", help="pt or safetensors (default: DEST's suffix).")] = None,
    key: Annotated[str | None, typer.Option(
        help="Only this top-level entry of the weights (e.g. 'model' of a training checkpoint).")] = None,
) -> None:
    """Write a run's weights (the newest run by default) to one new .pt or .safetensors
    file, for tools that do not know aoe; every byte verified."""
    store: Store = ctx.obj
    run_id, dest = run_and_dest_of(run_and_dest)
    path, tied = store.export_weights(font_id, run_id, dest, format, key)
    for name, original in tied:
        warn(f"{name} shared its storage with {original} (tied weights); safetensors cannot hold that, "
             "so it was written as a copy")
    say(path)


StatusOption = Annotated[str | None, typer.Option(help="Only runs with this status.")]
TagOption = Annotated[list[str] | None, typer.Option("--tag", help="Only runs with this tag (repeat: any of them).")]
AllTagsFlag = Annotated[bool, typer.Option("--all-tags", help="Runs must have every --tag.")]
WhereOption = Annotated[list[str] | None, typer.Option(
    "--where", help="A condition FIELD OP VALUE, e.g. 'metrics.final_loss<0.05' or 'params.lr=0.001' (repeat: all).")]
SortOption = Annotated[str, typer.Option(help="Sort by a field: run_id, time, saved_at, name, status, "
                                               "params.NAME, metrics.NAME; '-FIELD' for descending.")]
DescFlag = Annotated[bool, typer.Option("--desc", help="Descending order.")]
LimitOption = Annotated[int | None, typer.Option(help="At most this many runs.", min=0)]
OffsetOption = Annotated[int, typer.Option(help="Skip this many runs first (paging).", min=0)]
CountFlag = Annotated[bool, typer.Option("--count", help="Print only how many runs match.")]
ColumnsOption = Annotated[str | None, typer.Option(
    "--columns", help="Columns besides the run, comma-separated: metrics.NAME, params.NAME, time, status... "
                      "(default: the metrics most of the runs have).")]


@store_app.command("ls")
def ls(
    ctx: typer.Context,
    font_id: Annotated[str | None, typer.Argument()] = None,
    status: StatusOption = None,
    tag: TagOption = None,
    all_tags: AllTagsFlag = False,
    since: Annotated[str | None, typer.Option(help="Only runs from this time on (ISO 8601).")] = None,
    until: Annotated[str | None, typer.Option(help="Only runs before this time (ISO 8601).")] = None,
    where: WhereOption = None,
    sort: SortOption = "run_id",
    desc: DescFlag = False,
    limit: LimitOption = None,
    offset: OffsetOption = 0,
    count: CountFlag = False,
    as_json: JsonFlag = False,
    columns: ColumnsOption = None,
) -> None:
    """List fonts with their run counts, or the runs of FONT_ID (oldest first), filtered,
    sorted and paged."""
    store: Store = ctx.obj
    if font_id is None:
        summaries = store.font_summaries()
        if as_json:
            print_json(json.dumps([s.to_dict() for s in summaries]))
        else:
            table(["font", "runs", "newest run"], [[s.font_id, s.runs, s.newest_run or "-"] for s in summaries])
        return
    filters: dict[str, Any] = dict(status=status, tags=tag or (), all_tags=all_tags, since=since, until=until,
                                   where=where or (), sort=sort, descending=desc, limit=limit, offset=offset)
    if count:
        say(store.count_runs(font_id, **filters))
        return
    if as_json:
        print_json(store.list_runs_json(font_id, **filters))
        return
    runs = store.list_runs(font_id, **filters)
    if not runs and where:
        warn_absent([parse_condition(w).field for w in where], store.list_runs(font_id), f"run of {font_id}")
    filtered = any(v for k, v in filters.items() if k not in ("sort", "descending", "limit"))
    show_runs(runs, sort, as_json=False, columns=columns, empty="no runs match" if filtered else "no runs yet",
              aliases=aliases_by_run(store, font_id))


def aliases_by_run(store: Store, font_id: str) -> dict[str, list[str]]:
    """Run id -> the aliases that point at it."""
    found: dict[str, list[str]] = {}
    for name, run_id in store.aliases_of(font_id).items():
        found.setdefault(run_id, []).append(name)
    return found


@store_app.command()
def search(
    ctx: typer.Context,
    text: Annotated[str, typer.Argument(help="Found in the name or description, in any case.")] = "",
    font: Annotated[str | None, typer.Option(help="Only this font.")] = None,
    status: StatusOption = None,
    tag: TagOption = None,
    all_tags: AllTagsFlag = False,
    where: WhereOption = None,
    sort: SortOption = "run_id",
    desc: DescFlag = False,
    limit: LimitOption = None,
    offset: OffsetOption = 0,
    count: CountFlag = False,
    as_json: JsonFlag = False,
    columns: ColumnsOption = None,
) -> None:
    """Search the runs of every font by name and description, tags and conditions."""
    store: Store = ctx.obj
    if count:
        say(store.count_runs(font, text=text or None, status=status, tags=tag or (), all_tags=all_tags,
                             where=where or ()))
        return
    runs = store.search(text, font=font, status=status, tags=tag or (), all_tags=all_tags, where=where or (),
                        sort=sort, descending=desc, limit=limit, offset=offset)
    if not runs and where:
        warn_absent([parse_condition(w).field for w in where], store.search(font=font), f"run of {font or 'any font'}")
    show_runs(runs, sort, as_json, with_font=font is None, columns=columns)


METRIC_COLUMNS = 4
"""How many metrics ``ls`` shows when not told which (those most of its runs have)."""


def show_runs(runs: list[Any], sort: str, as_json: bool, *, with_font: bool = False,
              columns: str | None = None, empty: str = "no runs match",
              aliases: dict[str, list[str]] | None = None) -> None:
    """Runs as a table, or JSON; ``empty`` when there are none. The table's columns besides
    the run: ``columns`` (fields, comma-separated), else the metrics most of the runs have;
    and the sort field when it is a param or metric; the aliases of runs when any has one.
    A field named that no listed run has is warned about, with those they have."""
    if as_json:
        print_json(json.dumps([info.to_dict() for info in runs]))
        return
    chosen = [check_field(c.strip()) for c in columns.split(",") if c.strip()] if columns is not None else []
    extra = chosen if columns is not None else metric_columns(runs)
    field = sort.lstrip("-")
    if field.startswith(("params.", "metrics.")) and field not in extra:
        extra.append(field)
    if not runs:
        say(empty)
        return
    warn_absent([*chosen, field], runs, "listed run")
    named = aliases if aliases and any(info.run_id in aliases for info in runs) else None
    headers = (["font"] if with_font else []) + ["run", *(["aliases"] if named else []), "status", "name", "tags",
                                                 *extra, "missing"]
    rows = [([info.font_id] if with_font else [])
            + [info.run_id, *([",".join(named.get(info.run_id, []))] if named else []), info.status, info.name or "",
               ",".join(info.tags), *(_cell(info.value(name)) for name in extra), ",".join(info.missing)]
            for info in runs]
    table(headers, rows)


def warn_absent(fields: list[str], runs: list[Any], what: str) -> None:
    """Warn about each ``params.``/``metrics.`` field that none of ``runs`` has, naming
    those of its kind they do have (a typo shows a column of ``-``, or no run, otherwise)."""
    have = fields_of(runs)
    for name in dict.fromkeys(fields):
        kind = name.split(".", 1)[0]
        if kind in ("params", "metrics") and name not in have:
            known = sorted(f for f in have if f.startswith(f"{kind}."))
            listed = ", ".join(known[:8]) + (f" and {len(known) - 8} more" if len(known) > 8 else "")
            warn(f"no {what} has {name}; {f'they have {listed}' if known else f'none has any {kind}'}")


def metric_columns(runs: list[Any]) -> list[str]:
    """The top-level metrics (``final_loss``, not ``glyph_loss.A``) most of these runs
    have, at most :data:`METRIC_COLUMNS`, the commonest first."""
    counts = Counter(name for info in runs for name in info.metrics if "." not in name)
    return [f"metrics.{name}" for name, _ in counts.most_common(METRIC_COLUMNS)]


def _cell(value: Any) -> str:
    """A field's value in a table: numbers to 4 significant digits, times as people read
    them, params as JSON, none as ``-``."""
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, datetime):
        return when(value)
    return value if isinstance(value, str) else json.dumps(value)


@store_app.command()
def show(
    ctx: typer.Context,
    font_id: str,
    run_id: Annotated[str | None, typer.Argument()] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show one run (the newest by default, or FONT@ALIAS): metadata, assets, what is
    missing, the aliases that point at it, the runs it came from and those that came from it."""
    store: Store = ctx.obj
    run = store.get_run_info(font_id, run_id)
    info = {**run.to_dict(), "aliases": aliases_by_run(store, run.font_id).get(run.run_id, []),
            "children": [{"font_id": c.font_id, "run_id": c.run_id} for c in store.children_of(run.font_id, run.run_id)]}
    if as_json:
        print_json(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        if value in (None, [], {}):
            continue
        if key in ("parents", "children"):
            value = ", ".join(f"{r['font_id']}/{r['run_id']}" + ("" if _is_there(store, r) else " (not in the store)")
                              for r in value)
        elif isinstance(value, (dict, list)):
            value = json.dumps(value)
        say(f"{key:>16}: {printable(str(value))}")


def _is_there(store: Store, run: dict[str, str]) -> bool:
    try:
        store.refs.read_run(run["font_id"], run["run_id"])
    except StoreError:
        return False
    return True


@store_app.command()
def cat(ctx: typer.Context, object_id: Annotated[str, typer.Argument(metavar="OBJECT")]) -> None:
    """Write an object's raw (verified) content to stdout: `aoe store cat X | b3sum` prints X."""
    data = ctx.obj.read_object(object_id)
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()



@store_app.command()
def diff(
    ctx: typer.Context,
    font_id: str,
    run_a: str,
    run_b: str,
    values: Annotated[bool, typer.Option(
        "--values/--no-values", help="Read changed tensors to say how much they changed.")] = True,
    as_json: JsonFlag = False,
) -> None:
    """What differs between two runs: params, feedback, images, and which tensors changed by how much."""
    from ..diff import diff_runs, lines

    result = diff_runs(ctx.obj, font_id, run_a, run_b, measure=values)
    if as_json:
        print_json(json.dumps(result.to_dict(), indent=2, default=str))
        return
    for line in lines(result):
        say(line)


@store_app.command()
def amend(
    ctx: typer.Context,
    font_id: str,
    run_id: str,
    sample: Annotated[Path | None, typer.Option(help="A sample image (PNG).")] = None,
    glyphs: Annotated[Path | None, typer.Option(help="A folder of <glyph>.png to add or replace.")] = None,
    feedback: Annotated[Path | None, typer.Option(help="A feedback JSON file.")] = None,
    personality: Annotated[Path | None, typer.Option(help="A personality vector (.pt tensor).")] = None,
    name: Annotated[str | None, typer.Option(help="A new name.")] = None,
    description: Annotated[str | None, typer.Option(help="A new description.")] = None,
    tag: Annotated[list[str] | None, typer.Option(help="Replace the tags (repeat for several).")] = None,
) -> None:
    """Add what a run lacks, or change its texts: a new manifest, history kept."""
    run = ctx.obj.amend_run(font_id, run_id, sample_image=sample, eval_glyphs=glyphs, feedback=feedback,
                            personality_vector=personality, name=name, description=description, tags=tag)
    say(f"amended {font_id} {run_id}: now manifest {run.digest}")
    if run.info.missing:
        warn(f"still incomplete: no {', '.join(run.info.missing)}")


# -- the catalog ---------------------------------------------------------------------


@store_app.command()
def tag(
    ctx: typer.Context,
    font_id: str,
    run_id: str,
    tags: Annotated[list[str] | None, typer.Argument(metavar="[TAG]...", help="Tags to add.")] = None,
    remove: Annotated[list[str] | None, typer.Option("--remove", help="A tag to remove (repeat).")] = None,
) -> None:
    """Add (and --remove) tags of a run; a new version of the run, history kept."""
    if not tags and not remove:
        raise InvalidInputError("name tags to add, or --remove TAG")
    info = ctx.obj.tag_run(font_id, run_id, add=tags or (), remove=remove or ())
    say(f"{font_id} {run_id}: tags {','.join(info.tags) or '(none)'}")


@store_app.command()
def describe(
    ctx: typer.Context,
    font_id: str,
    run_id: str,
    name: Annotated[str | None, typer.Option(help="The run's new name.")] = None,
    description: Annotated[str | None, typer.Option(help="The run's new description.")] = None,
) -> None:
    """Set a run's name and description; a new version of the run, history kept."""
    if name is None and description is None:
        raise InvalidInputError("give --name and/or --description")
    info = ctx.obj.describe_run(font_id, run_id, name=name, description=description)
    say(f"{font_id} {run_id}: name {info.name!r}, description {info.description!r}")

