"""The ``aoe`` command: a thin typer layer over :class:`aoe.Store`.

Parse, call the library, render. Library errors become one line on stderr and an
exit code from :data:`EXIT_CODES`; torch is imported only by the verbs that move
tensors (put, get).
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from .errors import (
    CorruptObjectError,
    FontNotFoundError,
    FormatError,
    InvalidInputError,
    InvalidNameError,
    NotFoundError,
    StorageError,
    StorageFullError,
    StoreError,
)
from .names import check_font_id, printable
from .store import Store

EXIT_CODES: list[tuple[type[BaseException], int]] = [
    (NotFoundError, 3),
    (CorruptObjectError, 4),
    (FormatError, 4),
    (StorageFullError, 5),
    (StorageError, 5),
    (InvalidNameError, 2),
    (InvalidInputError, 2),
    (StoreError, 1),
]
"""Exit code per error type, first match wins; 0 is success, 2 also bad usage."""

EXIT_INTERNAL = 70
"""An error aoe did not expect (a bug): one line, like every other (EX_SOFTWARE)."""

PROGRESS_MIN_BYTES = 32 * 1024 * 1024
"""Smaller puts and gets finish too fast to need a progress bar."""

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="aoe: a content-addressed store for ML training runs.")
store_app = typer.Typer(no_args_is_help=True, help="Save, fetch and browse runs in a store.")
app.add_typer(store_app, name="store")

JsonFlag = Annotated[bool, typer.Option("--json", help="Print JSON for machines.")]


def main() -> None:
    """Entry point: run the app, turning every library error into one line."""
    try:
        code = app(standalone_mode=False)
    except typer.TyperException as exc:  # bad usage: one line, and where to look
        ctx = getattr(exc, "ctx", None)
        # typer vendors click privately (typer._click) and compares this name itself
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            say(ctx.get_help())
            raise SystemExit(0) from None
        hint = f" (see `{ctx.command_path} --help`)" if ctx is not None else ""
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


def say(*parts: Any, file: Any = None, flush: bool = False) -> None:
    """Print for a person: every character a terminal would act on (escape sequences,
    bell, bidi overrides) is shown escaped, since names and tags come from the store."""
    text = " ".join(str(p) for p in parts)
    print("\n".join(printable(line) for line in text.split("\n")), file=file, flush=flush)


def fail(message: str, code: int) -> NoReturn:
    say(f"aoe: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def warn(message: str) -> None:
    say(f"aoe: warning: {message}", file=sys.stderr)


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
    from .legacy import read_run_folder

    store: Store = ctx.obj
    if not (run_dir.is_dir() or (from_checkpoint and run_dir.is_file())):
        raise InvalidInputError(f"run folder {run_dir} does not exist or is not a folder")
    if check_font_id(font_id) not in store.refs.fonts():
        if not create:
            raise FontNotFoundError(
                f"no font {font_id!r} in {store.root}; add --create to create it, "
                f"or run `aoe store create-font {font_id}`"
            )
        store.create_font(font_id)
    if from_checkpoint and run_dir.is_file():
        with progress(store, "saving", run_dir.stat().st_size):
            run_id = store.save_model_from_checkpoint(font_id, run_dir)
    else:
        folder = read_run_folder(run_dir, checkpoint=from_checkpoint)
        for note in folder.notes:
            warn(note)
        with progress(store, "saving", _input_bytes(folder.arguments)):
            run_id = store.save_model(font_id, **folder.arguments)
    info = store.get_run_info(font_id, run_id)
    if info.missing:
        warn(f"run {run_id} is incomplete: no {', '.join(info.missing)}")
    say(run_id)


@store_app.command("import")
def import_(
    ctx: typer.Context,
    legacy_dir: Annotated[Path, typer.Argument(metavar="LEGACY_DIR")],
    as_json: JsonFlag = False,
) -> None:
    """Import a plain-folder store (LEGACY_DIR/<font-id>/runs/<timestamp>/...), keeping
    run times; importing again adds nothing."""
    from .legacy import import_legacy

    with counter("importing", None) as advance:
        report = import_legacy(ctx.obj, legacy_dir, progress=advance)
    if as_json:
        say(json.dumps(report.to_dict(), indent=2))
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
    say(f"{len(report.imported)} runs imported, {len(report.already_imported)} already there, "
          f"{len(report.incomplete)} incomplete, {len(report.skipped)} skipped")


def _input_bytes(args: dict[str, Any]) -> int:
    import torch

    total = 0
    stack = [args.get("weights"), *(args.get("extras") or {}).values()]
    while stack:
        value = stack.pop()
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
    if len(run_and_dest) > 2:
        raise InvalidInputError("too many arguments: expected FONT_ID [RUN_ID] DEST")
    run_id, dest = (None, run_and_dest[0]) if len(run_and_dest) == 1 else run_and_dest
    run = store.open_run(font_id, run_id)
    with progress(store, "fetching", run.logical_bytes):
        say(run.export(dest))


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
) -> None:
    """List fonts with their run counts, or the runs of FONT_ID (oldest first), filtered,
    sorted and paged."""
    store: Store = ctx.obj
    if font_id is None:
        summaries = store.font_summaries()
        if as_json:
            say(json.dumps([s.to_dict() for s in summaries]))
        else:
            table(["font", "runs", "newest run"], [[s.font_id, s.runs, s.newest_run or "-"] for s in summaries])
        return
    filters: dict[str, Any] = dict(status=status, tags=tag or (), all_tags=all_tags, since=since, until=until,
                                   where=where or (), sort=sort, descending=desc, limit=limit, offset=offset)
    if count:
        say(store.count_runs(font_id, **filters))
        return
    show_runs(store.list_runs(font_id, **filters), sort, as_json)


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
) -> None:
    """Search the runs of every font by name and description, tags and conditions."""
    store: Store = ctx.obj
    runs = store.search(text, font=font, status=status, tags=tag or (), all_tags=all_tags, where=where or (),
                        sort=sort, descending=desc, limit=None if count else limit, offset=0 if count else offset)
    if count:
        say(len(runs))
        return
    show_runs(runs, sort, as_json, with_font=font is None)


def show_runs(runs: list[Any], sort: str, as_json: bool, *, with_font: bool = False) -> None:
    """Runs as a table (with the sort field when it is a param or metric), or JSON."""
    if as_json:
        say(json.dumps([info.to_dict() for info in runs]))
        return
    field = sort.lstrip("-")
    extra = field if field.startswith(("params.", "metrics.")) else None
    headers = (["font"] if with_font else []) + ["run", "status", "name", "tags"] + ([extra] if extra else []) + ["missing"]
    rows = []
    for info in runs:
        row = ([info.font_id] if with_font else []) + [info.run_id, info.status, info.name or "", ",".join(info.tags)]
        if extra:
            kind, _, key = extra.partition(".")
            if kind == "metrics":  # flat: names may hold dots (glyph_loss.A)
                value: Any = info.metrics.get(key)
            else:  # params nest (params.opt.lr)
                value = info.params
                for part in key.split("."):
                    value = value.get(part) if isinstance(value, dict) else None
            row.append("-" if value is None else value)
        rows.append(row + [",".join(info.missing)])
    table(headers, rows)


@store_app.command()
def show(
    ctx: typer.Context,
    font_id: str,
    run_id: Annotated[str | None, typer.Argument()] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show one run (the newest by default): metadata, assets and what is missing."""
    info = ctx.obj.get_run_info(font_id, run_id).to_dict()
    if as_json:
        say(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        if value in (None, [], {}):
            continue
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        say(f"{key:>16}: {printable(str(value))}")


@store_app.command()
def cat(ctx: typer.Context, object_id: Annotated[str, typer.Argument(metavar="OBJECT")]) -> None:
    """Write an object's raw (verified) content to stdout: `aoe store cat X | b3sum` prints X."""
    data = ctx.obj.read_object(object_id)
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def table(headers: list[str], rows: list[list[Any]]) -> None:
    """Aligned plain-text columns (no colours, so it pipes well)."""
    cells = [headers, *[[printable(str(c)) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        say("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())


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
    from .fsck import fsck

    part = _parse_subset(subset) if subset else None
    with counter("checking", None) as advance:
        report = fsck(ctx.obj, read_data=read_data or part is not None, subset=part, repair=repair,
                      progress=advance)
    if as_json:
        say(json.dumps(report.to_dict(), indent=2))
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


OtherEndpoint = Annotated[str | None, typer.Option(
    "--other-endpoint", help="The S3-compatible server of the other store, if not --endpoint's.")]
FontsOption = Annotated[list[str] | None, typer.Option("--font", help="Only this font (repeat for more).")]
TRANSFER_CONFLICTS = 6
"""Exit code of a push, pull or clone that transferred all it could but found conflicts."""


def _transfer(source: Store, dest: Store, fonts: list[str] | None, as_json: bool, *, new: bool = False) -> None:
    from .transfer import clone, transfer

    with counter(f"copying to {dest.root}", None, in_bytes=True) as advance:
        report = clone(source, dest, progress=advance) if new else transfer(source, dest, fonts=fonts, progress=advance)
    if as_json:
        say(json.dumps(report.to_dict(), indent=2))
    else:
        say(f"{report.runs_copied} runs copied and {report.runs_updated} moved forward in {report.fonts} fonts "
              f"({report.objects_copied} objects, {report.bytes_copied / 1e6:.1f} MB); "
              f"{report.runs_up_to_date} runs were up to date")
        for line in report.conflicts:
            warn(f"not transferred: {line}")
    if report.conflicts:
        raise SystemExit(TRANSFER_CONFLICTS)


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
    from .diff import diff_runs, lines

    result = diff_runs(ctx.obj, font_id, run_a, run_b, measure=values)
    if as_json:
        say(json.dumps(result.to_dict(), indent=2, default=str))
        return
    for line in lines(result):
        say(line)


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
    from .web import make_server

    store: Store = ctx.obj
    store.require_root()
    server = make_server(store, host, port, allow_host or ())
    if host not in ("127.0.0.1", "localhost", "::1"):
        warn(f"listening on {host}: anyone who can reach this machine can read the store")
    say(f"serving {store.root} at http://{host}:{server.server_address[1]}/ (Ctrl-C to stop)", flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()


@store_app.command()
def gc(
    ctx: typer.Context,
    grace: Annotated[str, typer.Option(help="Keep objects younger than this (e.g. 3600, 30m, 1h, 2d).")] = "1h",
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Report what would be freed; remove nothing.")] = False,
    as_json: JsonFlag = False,
) -> None:
    """Remove objects no run needs (deleted runs become final); saves may run meanwhile."""
    from .gc import collect_garbage

    with counter("collecting", None) as advance:
        report = collect_garbage(ctx.obj, grace=parse_duration(grace), dry_run=dry_run, progress=advance)
    if as_json:
        say(json.dumps(report.to_dict(), indent=2))
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
) -> None:
    """Delete runs (or a whole font with --font); `aoe store restore` undoes it until a gc."""
    store: Store = ctx.obj
    if not run_ids and not font:
        count = len(store.refs.runs(font_id))
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
        store.delete_run(font_id, run_id)
        say(f"deleted {font_id} {run_id}")


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
        say(json.dumps(rows, indent=2))
        return
    table(["font", "run", "deleted at", "restorable"],
          [[r.font_id, r.run_id or "(the font)", r.deleted_at, "no (purged)" if r.purged_at else "yes"]
           for r in records])


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


@store_app.command()
def log(
    ctx: typer.Context,
    font_id: str,
    run_id: Annotated[str | None, typer.Argument()] = None,
    as_json: JsonFlag = False,
) -> None:
    """A run's history: every version its amends and edits left, newest first."""
    history = ctx.obj.run_history(font_id, run_id)
    if as_json:
        say(json.dumps([info.to_dict() for info in history], indent=2))
        return
    for info in history:
        say(f"{info.manifest}  {inputs_time(info.saved_at)}  {info.status}  "
              f"name={info.name or '-'}  tags={','.join(info.tags) or '-'}  missing={','.join(info.missing) or '-'}")


def inputs_time(moment: Any) -> str:
    return str(moment.strftime("%Y-%m-%d %H:%M:%S"))


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


@store_app.command()
def reindex(ctx: typer.Context) -> None:
    """Rebuild the catalog index from the refs and manifests (it is only a cache)."""
    say(f"indexed {ctx.obj.reindex()} runs")


@store_app.command()
def du(ctx: typer.Context, as_json: JsonFlag = False) -> None:
    """Logical bytes (what runs hold) against stored bytes (on disk), per font: the dedup ratio."""
    usage = ctx.obj.disk_usage()
    if as_json:
        say(json.dumps(usage, indent=2))
        return
    rows = [[font_id, f["runs"], _megabytes(f["logical_bytes"]), _megabytes(f["stored_bytes"]), f["dedup_ratio"] or "-"]
            for font_id, f in usage["fonts"].items()]
    rows.append(["(store)", sum(f["runs"] for f in usage["fonts"].values()), _megabytes(usage["logical_bytes"]),
                 _megabytes(usage["stored_bytes"]), usage["dedup_ratio"] or "-"])
    table(["font", "runs", "logical MB", "stored MB", "ratio"], rows)
    if usage["unreferenced_objects"]:
        say(f"{usage['unreferenced_objects']} objects no run needs (deleted runs, interrupted saves): `aoe store gc`")


def _megabytes(count: int) -> str:
    return f"{count / 1e6:.1f}"


store_app.command("stats", help="The same as `du`.")(du)
