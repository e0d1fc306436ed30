"""Commands that check, clean and undo: fsck, gc, rm, restore, trash, reindex, du."""

from __future__ import annotations

import json
import math
from typing import Annotated

import typer

from ..errors import (
    InvalidInputError,
)
from ..store import Store
from .app import JsonFlag, store_app
from .ui import counter, print_json, say, size, table

# -- integrity and upkeep ---------------------------------------------------------

EXIT_FSCK_ERRORS = 10
"""`aoe store fsck` found errors (corrupt or missing data, broken refs)."""
SHOWN_PER_KIND = 10


@store_app.command("fsck")
def fsck_command(
    ctx: typer.Context,
    read_data: Annotated[bool, typer.Option("--read-data", help="Decompress and re-hash every object.")] = False,
    subset: Annotated[str | None, typer.Option(
        "--read-data-subset", metavar="N/M", help="Re-hash only part N of M of the objects (implies --read-data).",
    )] = None,
    repair: Annotated[bool, typer.Option(
        "--repair", help="Remove leftover temp files, drop refs whose manifest is gone, move corrupt objects aside.",
    )] = False,
    as_json: JsonFlag = False,
) -> None:
    """Check the whole store and report every problem; exit 10 if any is an error."""
    from ..fsck import fsck

    part = _parse_subset(subset) if subset else None
    with counter("checking", None) as advance:
        report = fsck(ctx.obj, read_data=read_data or part is not None, subset=part, repair=repair,
                      progress=advance)
    if as_json:
        print_json(json.dumps(report.to_dict(), indent=2))
    else:
        shown: dict[str, int] = {}
        for finding in report.findings:
            shown[finding.kind] = shown.get(finding.kind, 0) + 1
            if shown[finding.kind] <= SHOWN_PER_KIND:
                say(f"{finding.severity}: {finding.kind}: {finding.message}")
        for kind, count in shown.items():
            if count > SHOWN_PER_KIND:
                say(f"... and {count - SHOWN_PER_KIND} more {kind} (all are in --json)")
        for line in report.repaired:
            say(f"repaired: {line}")
        counts = report.to_dict()["counts"]
        read = f", {report.objects_read} re-hashed ({report.bytes_read / 1e6:.1f} MB)" if read_data or part else ""
        say(f"checked {report.fonts} fonts, {report.runs} runs, {report.objects} objects{read}: "
              f"{counts['error']} errors, {counts['warning']} warnings, {counts['info']} notices")
    if not report.clean:
        raise SystemExit(EXIT_FSCK_ERRORS)


def _parse_subset(text: str) -> tuple[int, int]:
    try:
        n, m = (int(x) for x in text.split("/"))
        if 1 <= n <= m:
            return n, m
    except ValueError:
        pass
    raise InvalidInputError(f"--read-data-subset {text!r}: expected N/M with 1 <= N <= M, e.g. 1/7")


DURATION_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """Seconds from '90', '90s', '30m', '1h' or '2d'."""
    unit = text[-1:] if text[-1:] in DURATION_UNITS else "s"
    number = text[:-1] if text[-1:] in DURATION_UNITS else text
    try:
        value = float(number) * DURATION_UNITS[unit]
    except ValueError:
        value = -1
    if not math.isfinite(value) or value < 0:
        raise InvalidInputError(f"invalid duration {text!r}: use seconds or a number with s, m, h or d (e.g. 1h)")
    return value


@store_app.command()
def gc(
    ctx: typer.Context,
    grace: Annotated[str, typer.Option(help="Keep objects younger than this (e.g. 3600, 30m, 1h, 2d).")] = "1h",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be freed; remove nothing.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Remove objects no run needs (deleted runs become final); saves may run meanwhile."""
    from ..gc import collect_garbage

    with counter("collecting", None) as advance:
        report = collect_garbage(ctx.obj, grace=parse_duration(grace), dry_run=dry_run, progress=advance)
    if as_json:
        print_json(json.dumps(report.to_dict(), indent=2))
        return
    verb = "would free" if dry_run else "freed"
    say(f"{verb} {report.freed_bytes / 1e6:.1f} MB in {report.swept} objects; kept {report.reachable} "
          f"objects that runs need and {report.kept_young} younger than the grace period")
    if report.set_aside or report.restored:
        say(f"object storage: set aside {report.set_aside} unreachable objects (a later gc deletes them), "
              f"put back {report.restored} that runs need again")
    if report.temp_files_removed:
        say(f"removed {report.temp_files_removed} leftover temporary files")
    for run in report.runs_purged:
        say(f"deleted run {run} can no longer be restored")


@store_app.command()
def rm(
    ctx: typer.Context,
    font_id: str,
    run_ids: Annotated[list[str] | None, typer.Argument(metavar="[RUN_ID]...")] = None,
    font: Annotated[bool, typer.Option("--font", help="Delete the whole font and all its runs.")] = False,
    force: Annotated[bool, typer.Option("--force", help="Delete runs aliases point at too.")] = False,
) -> None:
    """Delete runs (or a whole font with --font); `aoe store restore` undoes it until a gc.
    FONT@ALIAS names the run an alias points at; such runs are kept unless --force."""
    store: Store = ctx.obj
    if "@" in font_id and not font:
        run_ids = [*(run_ids or []), ""]
    if not run_ids and not font:
        count = store.count_runs(font_id)
        raise InvalidInputError(
            f"name the runs to delete, or add --font to delete {font_id} and its {count} runs"
        )
    if run_ids and font:
        raise InvalidInputError("give run ids or --font, not both")
    if font:
        records = store.delete_font(font_id)
        say(f"deleted font {font_id} and {len(records)} runs; `aoe store restore {font_id}` undoes it until a gc")
        return
    for run_id in run_ids or []:
        record = store.delete_run(font_id, run_id or None, force=force)
        say(f"deleted {record.font_id} {record.run_id}")


@store_app.command()
def restore(
    ctx: typer.Context,
    font_id: str,
    run_ids: Annotated[list[str] | None, typer.Argument(metavar="[RUN_ID]...")] = None,
) -> None:
    """Bring back deleted runs, or a deleted font (no run ids), if no gc purged them."""
    store: Store = ctx.obj
    if not run_ids:
        for run_id in store.restore_font(font_id):
            say(f"restored {font_id} {run_id}")
        say(f"restored font {font_id}")
        return
    for run_id in run_ids:
        say(f"restored {font_id} {store.restore_run(font_id, run_id).run_id}")


@store_app.command()
def trash(
    ctx: typer.Context,
    font_id: Annotated[str | None, typer.Argument()] = None,
    as_json: JsonFlag = False,
) -> None:
    """What was deleted, when, and whether a gc has made it final."""
    records = ctx.obj.trashed(font_id)
    rows = [{k: v for k, v in r.__dict__.items()} for r in records]
    if as_json:
        print_json(json.dumps(rows, indent=2))
        return
    table(["font", "run", "deleted at", "restorable"],
          [[r.font_id, r.run_id or "(the font)", r.deleted_at, "no (purged)" if r.purged_at else "yes"]
           for r in records])



@store_app.command()
def reindex(ctx: typer.Context) -> None:
    """Rebuild the catalog index from the refs and manifests (it is only a cache)."""
    say(f"indexed {ctx.obj.reindex()} runs")


@store_app.command()
def du(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Logical bytes (what runs hold) against stored bytes (on disk), per font: the dedup ratio."""
    usage = ctx.obj.disk_usage()
    if as_json:
        print_json(json.dumps(usage, indent=2))
        return
    rows = [[font_id, f["runs"], size(f["logical_bytes"]), size(f["stored_bytes"]), f["dedup_ratio"] or "-"]
            for font_id, f in usage["fonts"].items()]
    rows.append(["(store)", sum(f["runs"] for f in usage["fonts"].values()), size(usage["logical_bytes"]),
                 size(usage["stored_bytes"]), usage["dedup_ratio"] or "-"])
    table(["font", "runs", "logical MB", "stored MB", "ratio"], rows)
    if usage["unreferenced_objects"]:
        say(f"{usage['unreferenced_objects']} objects no run needs (deleted runs, interrupted saves): `aoe store gc`")



store_app.command("stats", help="The same as `du`.")(du)
