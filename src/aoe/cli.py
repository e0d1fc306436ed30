"""The ``aoe`` command: a thin typer layer over :class:`aoe.Store`.

Parse, call the library, render. Library errors become one line on stderr and an
exit code from :data:`EXIT_CODES`; torch is imported only by the verbs that move
tensors (put, get).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated, Any, NoReturn, Optional

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
from .refs import check_font_id
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

WEIGHT_FILES = ("weights.pt", "weights", "weights.pth")
RUN_FILES = {*WEIGHT_FILES, "personality_vector.pt", "sample.png", "eval-glyphs", "feedback.json", "run.json", "extras"}
PROGRESS_MIN_BYTES = 32 * 1024 * 1024
"""Smaller puts and gets finish too fast to need a progress bar."""
RUN_JSON_KEYS = ("params", "started_at", "ended_at", "status", "name", "description", "tags", "feedback_schema")

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
        if type(exc).__name__ == "NoArgsIsHelpError" and ctx is not None:
            print(ctx.get_help())
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
    if isinstance(code, int) and code:
        raise SystemExit(code)


def fail(message: str, code: int) -> NoReturn:
    print(f"aoe: error: {message}", file=sys.stderr)
    raise SystemExit(code)


def warn(message: str) -> None:
    print(f"aoe: warning: {message}", file=sys.stderr)


@store_app.callback()
def store_options(
    ctx: typer.Context,
    root: Annotated[
        Optional[Path],
        typer.Option("--root", envvar="AOE_STORE", help="The store folder [default: ./networks]."),
    ] = None,
) -> None:
    ctx.obj = Store(root)


@store_app.command("create-font")
def create_font(ctx: typer.Context, name: str) -> None:
    """Create a font: NAME takes the next free number, or give a whole id like 7-fruity."""
    print(ctx.obj.create_font(name))


@store_app.command()
def put(
    ctx: typer.Context,
    font_id: str,
    run_dir: Path,
    create: Annotated[bool, typer.Option("--create", help="Create the font if it does not exist.")] = False,
) -> None:
    """Commit a run from a folder in the spec's layout; prints the run id.

    RUN_DIR holds weights.pt (or weights, weights.pth), personality_vector.pt,
    sample.png, eval-glyphs/<glyph>.png, feedback.json, optionally run.json
    (params, started_at, ended_at, status, name, description, tags) and
    extras/<name>.pt.
    """
    store: Store = ctx.obj
    if not run_dir.is_dir():
        raise InvalidInputError(f"run folder {run_dir} does not exist or is not a folder")
    if check_font_id(font_id) not in store.refs.fonts():
        if not create:
            raise FontNotFoundError(
                f"no font {font_id!r} in {store.root}; add --create to create it, "
                f"or run `aoe store create-font {font_id}`"
            )
        store.create_font(font_id)
    args = read_run_dir(run_dir)
    with progress(store, "saving", _input_bytes(args)):
        run_id = store.save_model(font_id, **args)
    info = store.get_run_info(font_id, run_id)
    if info.missing:
        warn(f"run {run_id} is incomplete: no {', '.join(info.missing)}")
    print(run_id)


def read_run_dir(run_dir: Path) -> dict[str, Any]:
    """The save_model arguments a run folder holds (tensor files read without pickle)."""
    import torch

    def load_tensors(path: Path) -> Any:
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises many types for bad files
            raise InvalidInputError(
                f"{path} cannot be read as weights-only torch data ({str(exc).splitlines()[0]})"
            ) from None

    unknown = sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_FILES and not p.name.startswith("."))
    if unknown:
        warn(f"not stored (not part of the run layout): {', '.join(unknown)}")
    weight_files = [run_dir / name for name in WEIGHT_FILES if (run_dir / name).is_file()]
    if len(weight_files) > 1:
        raise InvalidInputError(f"{run_dir} has several weights files ({', '.join(p.name for p in weight_files)}); keep one")
    args: dict[str, Any] = {"weights": load_tensors(weight_files[0]) if weight_files else None}
    vector = run_dir / "personality_vector.pt"
    if vector.is_file():
        args["personality_vector"] = load_tensors(vector)
    if (run_dir / "sample.png").is_file():
        args["sample_image"] = run_dir / "sample.png"
    if (run_dir / "eval-glyphs").is_dir():
        args["eval_glyphs"] = run_dir / "eval-glyphs"
    if (run_dir / "feedback.json").is_file():
        args["feedback"] = run_dir / "feedback.json"
    if (run_dir / "extras").is_dir():
        args["extras"] = {p.stem: load_tensors(p) for p in sorted((run_dir / "extras").glob("*.pt"))}
    meta_file = run_dir / "run.json"
    if meta_file.is_file():
        try:
            meta = json.loads(meta_file.read_bytes())
        except ValueError as exc:
            raise InvalidInputError(f"{meta_file} is not valid JSON: {exc}") from None
        if not isinstance(meta, dict):
            raise InvalidInputError(f"{meta_file} must hold a JSON object")
        ignored = sorted(set(meta) - set(RUN_JSON_KEYS) - {"font_id", "run_id", "manifest", "saved_at"})
        if ignored:
            warn(f"{meta_file.name}: keys not stored: {', '.join(ignored)} (known: {', '.join(RUN_JSON_KEYS)})")
        args.update({k: meta[k] for k in RUN_JSON_KEYS if meta.get(k) is not None})
    return args


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
    with progress(store, "fetching", _manifest_bytes(run.manifest)):
        print(run.export(dest))


def _manifest_bytes(manifest: Any) -> int:
    from .manifests import tensors

    blobs = [b for b in (manifest.sample, manifest.feedback) if b is not None] + list(manifest.glyphs.values())
    records = [*tensors(manifest.weights), *([manifest.personality] if manifest.personality else [])]
    for tree in manifest.extras.values():
        records += tensors(tree)
    return sum(b.size for b in blobs) + sum(r.blob.size for r in records)


@contextmanager
def progress(store: Store, label: str, total: int) -> Iterator[None]:
    """A byte progress bar on stderr when it is a terminal (and the job is not tiny)."""
    if not sys.stderr.isatty() or total < PROGRESS_MIN_BYTES:
        yield
        return
    from rich.progress import BarColumn, DownloadColumn, Progress, TransferSpeedColumn

    with Progress("{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                  transient=True, console=_stderr_console()) as bar:
        task = bar.add_task(label, total=total)
        store.objects.on_progress = lambda n: bar.advance(task, n)
        try:
            yield
        finally:
            store.objects.on_progress = None


def _stderr_console() -> Any:
    from rich.console import Console

    return Console(stderr=True)


@store_app.command("ls")
def ls(ctx: typer.Context, font_id: Annotated[Optional[str], typer.Argument()] = None, as_json: JsonFlag = False) -> None:
    """List fonts (with run counts), or the runs of FONT_ID, oldest first."""
    store: Store = ctx.obj
    if font_id is None:
        rows = [{"font_id": f, "runs": len(r), "newest_run": r[-1] if r else None}
                for f, r in store.iter_fonts_with_runs()]
        if as_json:
            print(json.dumps(rows, indent=2))
        else:
            table(["font", "runs", "newest run"], [[r["font_id"], r["runs"], r["newest_run"] or "-"] for r in rows])
        return
    runs = store.list_runs(font_id)
    if as_json:
        print(json.dumps([info.to_dict() for info in runs], indent=2))
        return
    table(
        ["run", "status", "name", "tags", "missing"],
        [[i.run_id, i.status, i.name or "", ",".join(i.tags), ",".join(i.missing)] for i in runs],
    )


@store_app.command()
def show(
    ctx: typer.Context,
    font_id: str,
    run_id: Annotated[Optional[str], typer.Argument()] = None,
    as_json: JsonFlag = False,
) -> None:
    """Show one run (the newest by default): metadata, assets and what is missing."""
    info = ctx.obj.get_run_info(font_id, run_id).to_dict()
    if as_json:
        print(json.dumps(info, indent=2))
        return
    for key, value in info.items():
        if value in (None, [], {}):
            continue
        if isinstance(value, (dict, list)):
            value = json.dumps(value)
        print(f"{key:>16}: {value}")


@store_app.command()
def cat(ctx: typer.Context, object_id: Annotated[str, typer.Argument(metavar="OBJECT")]) -> None:
    """Write an object's raw (verified) content to stdout: `aoe store cat X | b3sum` prints X."""
    data = ctx.obj.read_object(object_id)
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def table(headers: list[str], rows: list[list[Any]]) -> None:
    """Aligned plain-text columns (no colours, so it pipes well)."""
    cells = [headers, *[[str(c) for c in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    for row in cells:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
