"""Commands that check, clean and undo: fsck, gc, rm, forget and its stored policy,
restore, trash, reindex, du."""

from __future__ import annotations

import functools
import inspect
import json
import math
from collections.abc import Callable
from typing import Annotated, Any

import typer

from ..errors import (
    InvalidInputError,
)
from ..retention import RetentionPolicy
from ..store import Store
from .app import JsonFlag, store_app
from .runs import warn_absent
from .ui import count, counter, print_json, say, size, table, warn

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
        for kind, times in shown.items():
            if times > SHOWN_PER_KIND:
                say(f"... and {times - SHOWN_PER_KIND} more {kind} (all are in --json)")
        for line in report.repaired:
            say(f"repaired: {line}")
        counts = report.to_dict()["counts"]
        read = f", {report.objects_read} re-hashed ({report.bytes_read / 1e6:.1f} MB)" if read_data or part else ""
        say(f"checked {count(report.fonts, 'font')}, {count(report.runs, 'run')}, {count(report.objects, 'object')}"
            f"{read}: {count(counts['error'], 'error')}, {count(counts['warning'], 'warning')}, "
            f"{count(counts['info'], 'notice')}")
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
        raise InvalidInputError(
            f"name the runs to delete, or add --font to delete {font_id} and its {count(store.count_runs(font_id), 'run')}"
        )
    if run_ids and font:
        raise InvalidInputError("give run ids or --font, not both")
    if font:
        records = store.delete_font(font_id)
        say(f"deleted font {font_id} and {count(len(records), 'run')}; `aoe store restore {font_id}` undoes it "
            "until a gc")
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
    if not records:
        say(f"nothing deleted{f' in {font_id}' if font_id else ''} is kept in the trash")
        return
    table(["font", "run", "deleted at", "restorable"],
          [[r.font_id, r.run_id or "(the font)", r.deleted_at, "no (purged)" if r.purged_at else "yes"]
           for r in records])



@store_app.command()
def reindex(ctx: typer.Context) -> None:
    """Rebuild the catalog index from the refs and manifests (it is only a cache)."""
    say(f"indexed {count(ctx.obj.reindex(), 'run')}")


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


# -- retention --------------------------------------------------------------------

KeepLast = Annotated[int | None, typer.Option("--keep-last", min=1, help="Keep the N newest runs.")]
KeepHourly = Annotated[int | None, typer.Option("--keep-hourly", min=1, help="The newest run of each of N hours.")]
KeepDaily = Annotated[int | None, typer.Option("--keep-daily", min=1, help="The newest run of each of N days (UTC).")]
KeepWeekly = Annotated[int | None, typer.Option("--keep-weekly", min=1, help="The newest run of each of N ISO weeks.")]
KeepMonthly = Annotated[int | None, typer.Option("--keep-monthly", min=1, help="The newest run of each of N months.")]
KeepYearly = Annotated[int | None, typer.Option("--keep-yearly", min=1, help="The newest run of each of N years.")]
KeepWithin = Annotated[str | None, typer.Option(
    "--keep-within", help="Every run within this of the newest (7d, 2w, 1y6m; m: months, as restic).")]
KeepBest = Annotated[list[str] | None, typer.Option(
    "--keep-best", help="'N FIELD': the N best by FIELD (metrics.loss: lowest; -metrics.acc: highest); repeat.")]
KeepTag = Annotated[list[str] | None, typer.Option("--keep-tag", help="Every run with this tag (repeat).")]
KeepAncestors = Annotated[bool, typer.Option(
    "--keep-ancestors", help="Also the runs aliased runs came from (their parents, recursively).")]


KEEP_RULES = {"keep_last": KeepLast, "keep_hourly": KeepHourly, "keep_daily": KeepDaily, "keep_weekly": KeepWeekly,
              "keep_monthly": KeepMonthly, "keep_yearly": KeepYearly, "keep_within": KeepWithin,
              "keep_best": KeepBest, "keep_tag": KeepTag, "keep_ancestors": KeepAncestors}
"""The options that make a retention policy, shared by `forget` and `policy`."""


def with_keep_rules(command: Callable[..., None]) -> Callable[..., None]:
    """A command that takes the --keep-... options and is given them as ``rules`` (a
    RetentionPolicy, empty when none was given): one list of options for every command."""

    @functools.wraps(command)
    def run(**options: Any) -> None:
        command(rules=policy_of(**{name: options.pop(name) for name in KEEP_RULES}), **options)

    own = [p for p in inspect.signature(command, eval_str=True).parameters.values() if p.name != "rules"]
    keep = [inspect.Parameter(name, inspect.Parameter.KEYWORD_ONLY, annotation=kind,
                              default=False if name == "keep_ancestors" else None) for name, kind in KEEP_RULES.items()]
    own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]
    run.__signature__ = inspect.Signature([*own[:2], *keep, *own[2:]])  # type: ignore[attr-defined]
    run.__annotations__ = {p.name: p.annotation for p in [*own, *keep]}
    return run


def policy_of(keep_last: int | None, keep_hourly: int | None, keep_daily: int | None, keep_weekly: int | None,
              keep_monthly: int | None, keep_yearly: int | None, keep_within: str | None, keep_best: list[str] | None,
              keep_tag: list[str] | None, keep_ancestors: bool) -> RetentionPolicy:
    best = []
    for text in keep_best or []:
        count, _, name = text.strip().partition(" ")
        if not count.isdigit() or not name.strip():
            raise InvalidInputError(f"--keep-best {text!r}: expected 'N FIELD', e.g. '3 metrics.final_loss'")
        best.append((int(count), name.strip()))
    return RetentionPolicy(keep_last, keep_hourly, keep_daily, keep_weekly, keep_monthly, keep_yearly, keep_within,
                           tuple(best), tuple(keep_tag or ()), keep_ancestors)


@store_app.command()
@with_keep_rules
def forget(
    ctx: typer.Context,
    font_id: str,
    rules: RetentionPolicy,
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be forgotten; change nothing.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Move to the trash the runs of FONT no rule keeps (restic's forget): the newest run,
    aliased runs and unreadable ones are always kept; no rule given: the font's stored
    policy. Each kept run is listed with the rules that keep it; `restore` undoes, until a gc."""
    store: Store = ctx.obj
    report = store.forget(font_id, None if rules == RetentionPolicy() else rules, dry_run=dry_run)
    if as_json:
        print_json(json.dumps(report.to_dict(), indent=2))
        return
    if report.policy.keep_best:
        warn_absent([name.removeprefix("-") for _, name in report.policy.keep_best], store.list_runs(font_id),
                    f"run of {font_id}")
    say(f"policy: {report.policy.describe()}")
    table(["kept run", "because"], [[run, ", ".join(why)] for run, why in report.kept.items()])
    verb = "would forget" if dry_run else "forgot"
    say(f"{verb} {len(report.forgotten)} run{'s' * (len(report.forgotten) != 1)}"
        + ("" if dry_run or not report.forgotten else f" (in the trash: `aoe store restore {font_id} RUN` until a gc)"))
    for run in report.forgotten:
        say(f"  {run}")
    for run in report.left:
        warn(f"left {run}: it changed while being forgotten (amended, or an alias moved to it)")


@store_app.command()
@with_keep_rules
def policy(
    ctx: typer.Context,
    font_id: str,
    rules: RetentionPolicy,
    clear: Annotated[bool, typer.Option("--clear", help="Remove the font's policy.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Store FONT's retention policy (the rules of `forget`), applied after every save into
    it by the API and the integrations; no rule: show it."""
    store: Store = ctx.obj
    if clear:
        if rules != RetentionPolicy():
            raise InvalidInputError("give rules or --clear, not both")
        store.set_retention(font_id, None)
        say(f"{font_id} has no retention policy now")
        return
    stored = store.retention(font_id) if rules == RetentionPolicy() else store.set_retention(font_id, rules)
    if as_json:
        print_json(json.dumps(stored.to_dict() if stored else None, indent=2))
        return
    say(f"{font_id}: {stored.describe() if stored else 'no retention policy (every run is kept)'}")
