"""Bringing runs in from folders: one run folder (``aoe store put``) or a whole store
in the spec's plain-folder layout (``aoe store import``).

A run folder holds ``weights`` (or ``weights.pt`` / ``weights.pth``), optionally
``personality_vector.pt``, ``sample.png``, ``eval-glyphs/<glyph>.png``,
``feedback.json``, ``run.json`` and ``extras/<name>.pt``. Tensor files are read with
``torch.load(weights_only=True)``: nothing in them is executed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from . import inputs
from .errors import FontExistsError, InvalidInputError, InvalidNameError, NotFoundError, StoreError
from .limits import parse_json
from .names import check_font_id, font_number, format_time, is_run_id
from .refs import run_id_for
from .store import Store

WEIGHT_FILES = ("weights.pt", "weights", "weights.pth")
RUN_FILES = {*WEIGHT_FILES, "personality_vector.pt", "sample.png", "eval-glyphs", "feedback.json", "run.json", "extras"}
RUN_JSON_KEYS = ("params", "started_at", "ended_at", "status", "name", "description", "tags", "feedback_schema")
RUN_JSON_WRITTEN = {"font_id", "run_id", "manifest", "saved_at", "missing", "assets", "glyphs", "extras",
                    "weights_version", "parent", "parents", "source", "metrics"}
"""Keys that ``aoe store get`` writes to run.json which describe the stored run, not inputs."""


@dataclass
class RunFolder:
    """What a run folder holds, as ``save_model`` arguments, and what was left out."""

    arguments: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    written_from: tuple[str, str] | None = None
    """(font id, run id) of the run ``aoe store get`` wrote this folder from (its run.json says)."""


def read_run_folder(run_dir: Path, *, checkpoint: bool = False, within: Path | None = None) -> RunFolder:
    """The save_model arguments a run folder holds; ``notes`` say what is not stored.
    Only regular files are read, and with ``within`` only files inside that folder (a
    store someone hands you: no symlink makes aoe store a file from elsewhere).

    With ``checkpoint`` the weights file is a training checkpoint, taken apart as in
    :meth:`Store.save_model_from_checkpoint` (training state dropped).
    """
    from .weights import load_tensor_file, split_checkpoint

    if not run_dir.is_dir():
        raise InvalidInputError(f"run folder {run_dir} does not exist or is not a folder")
    notes = []
    unknown = sorted(p.name for p in run_dir.iterdir() if p.name not in RUN_FILES and not p.name.startswith("."))
    if unknown:
        notes.append(f"not stored (not part of the run layout): {', '.join(unknown)}")
    weight_files = [run_dir / name for name in WEIGHT_FILES if (run_dir / name).is_file()]
    if len(weight_files) > 1:
        raise InvalidInputError(
            f"{run_dir} has several weights files ({', '.join(p.name for p in weight_files)}); keep one"
        )
    args: dict[str, Any] = {"weights": None}
    if weight_files:
        weights = load_tensor_file(weight_files[0], "weights file", within)
        if checkpoint:
            parts = split_checkpoint(weights)
            weights = parts.weights
            args["personality_vector"] = parts.personality_vector
            args["params"] = {**parts.other_values, **parts.counters}
            args["feedback"] = parts.losses or None
            if parts.training_state:
                notes.append(f"dropped training state: {', '.join(parts.training_state)}")
            args["extras"] = parts.other_state or None
        args["weights"] = weights
    vector = run_dir / "personality_vector.pt"
    if vector.is_file():
        args["personality_vector"] = load_tensor_file(vector, "personality vector file", within)
    if (run_dir / "sample.png").is_file():
        args["sample_image"] = inputs.image_bytes(run_dir / "sample.png", "sample image", within)
    if (run_dir / "eval-glyphs").is_dir():
        args["eval_glyphs"] = inputs.glyph_images(run_dir / "eval-glyphs", within)
    if (run_dir / "feedback.json").is_file():
        if checkpoint and args.get("feedback"):
            fields = _json_object(run_dir / "feedback.json", within)
            args["feedback"] = {**args["feedback"], **fields}
        else:
            args["feedback"] = inputs.feedback_bytes(run_dir / "feedback.json", within)
    if (run_dir / "extras").is_dir():
        extras = {p.stem: load_tensor_file(p, "extra", within) for p in sorted((run_dir / "extras").glob("*.pt"))}
        args["extras"] = {**(args.get("extras") or {}), **extras}
    meta_file = run_dir / "run.json"
    if meta_file.is_file():
        meta = _json_object(meta_file, within)
        ignored = sorted(set(meta) - set(RUN_JSON_KEYS) - RUN_JSON_WRITTEN)
        if ignored:
            notes.append(f"{meta_file.name}: keys not stored: {', '.join(ignored)} (known: {', '.join(RUN_JSON_KEYS)})")
        given = {k: meta[k] for k in RUN_JSON_KEYS if meta.get(k) is not None}
        if "params" in given and args.get("params"):
            given["params"] = {**args["params"], **given["params"]}
        args.update(given)
        origin = (meta.get("font_id"), meta.get("run_id"))
        written_from = (origin[0], origin[1]) if isinstance(origin[0], str) and isinstance(origin[1], str) else None
    else:
        written_from = None
    return RunFolder({k: v for k, v in args.items() if v is not None or k == "weights"}, notes, written_from)


def _json_object(path: Path, within: Path | None) -> dict[str, Any]:
    try:
        value = parse_json(inputs.read_file(path, path.name, within))
    except ValueError as exc:
        raise InvalidInputError(f"{path} is not valid JSON: {exc}") from None
    if not isinstance(value, dict):
        raise InvalidInputError(f"{path} must hold a JSON object")
    return value


# -- importing a plain-folder store ---------------------------------------------------


@dataclass
class ImportReport:
    fonts_created: list[str] = field(default_factory=list)
    imported: list[str] = field(default_factory=list)
    already_imported: list[str] = field(default_factory=list)
    incomplete: list[str] = field(default_factory=list)
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(path, why) of everything that was not imported."""
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {**self.__dict__, "skipped": [{"path": p, "why": w} for p, w in self.skipped]}


def legacy_run_time(name: str) -> datetime | None:
    """The moment a legacy run folder is named after (``2026-01-11T08:30:00.000000``),
    taken as UTC so the imported run id keeps the same digits; None if it is not a time."""
    try:
        moment = datetime.fromisoformat(name.replace("Z", "+00:00"))
        moment = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment
        moment.astimezone(UTC)  # year 1 an hour east of UTC has no UTC time
    except (ValueError, OverflowError):
        return None
    return moment


def import_legacy(
    store: Store, legacy_dir: str | Path, progress: Callable[[int], None] | None = None, *,
    follow_symlinks: bool = False,
) -> ImportReport:
    """Import ``<legacy_dir>/<font-id>/runs/<timestamp>/`` run folders into ``store``.
    Only regular files inside ``legacy_dir`` are read (``follow_symlinks``: also those
    its symlinks point to, elsewhere).

    Run ids keep the folder's time (``2026-01-11T08:30:00.000000`` becomes
    ``20260111T083000.000000Z-0000``); a run missing expected files is imported and
    flagged incomplete; anything that cannot be imported is skipped with the reason.
    Importing again adds nothing: a run already imported from the same folder is
    recognised by its id and its recorded source.
    """
    legacy_dir = Path(legacy_dir)
    if not legacy_dir.is_dir():
        raise InvalidInputError(f"{legacy_dir} does not exist or is not a folder")
    report = ImportReport()
    font_dirs = sorted(p for p in legacy_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    for font_dir in font_dirs:
        font_id = _font_for(store, font_dir, report)
        if font_id is None:
            continue
        runs_dir = font_dir / "runs"
        for run_dir in sorted(p for p in runs_dir.iterdir() if not p.name.startswith(".")):
            if progress:
                progress(1)
            if is_run_id(run_dir.name) and run_dir.is_file():
                continue  # an aoe ref: the legacy folder is also this store's root
            _import_run(store, font_id, run_dir, report, None if follow_symlinks else legacy_dir)
    return report


def _font_for(store: Store, font_dir: Path, report: ImportReport) -> str | None:
    """The store's font for a legacy font folder, created if needed; None to skip it."""
    if not (font_dir / "runs").is_dir():
        report.skipped.append((str(font_dir), "no runs/ folder: not a font of the plain-folder layout"))
        return None
    try:
        font_id = check_font_id(font_dir.name)
    except InvalidNameError as exc:
        report.skipped.append((str(font_dir), str(exc)))
        return None
    holder = store.refs.font_with_number(font_number(font_id)) if store.exists() else None
    if holder == font_id:
        return font_id
    if holder is not None:
        report.skipped.append((str(font_dir), f"font number {font_number(font_id)} is {holder!r} in this store"))
        return None
    try:
        store.create_font(font_id)
    except FontExistsError as exc:
        report.skipped.append((str(font_dir), str(exc)))
        return None
    report.fonts_created.append(font_id)
    return font_id


def _import_run(store: Store, font_id: str, run_dir: Path, report: ImportReport, within: Path | None) -> None:
    where = str(run_dir)
    if not run_dir.is_dir():
        report.skipped.append((where, "not a run folder"))
        return
    moment = legacy_run_time(run_dir.name)
    if moment is None:
        report.skipped.append((where, "the folder name is not a time (expected e.g. 2026-01-11T08:30:00.000000)"))
        return
    run_id = run_id_for(moment)
    source = {"legacy_run": run_dir.name, "legacy_path": str(run_dir.resolve())}
    try:
        existing = store.open_run(font_id, run_id).manifest
    except NotFoundError:
        existing = None
    if existing is not None:
        if existing.source.get("legacy_run") == run_dir.name:
            report.already_imported.append(f"{font_id}/{run_id}")
        else:
            report.skipped.append((where, f"run {run_id} of {font_id} exists and was not imported from here"))
        return
    try:
        folder = read_run_folder(run_dir, within=within)
        args = folder.arguments
        if not any(v is not None for k, v in args.items() if k in ("weights", "sample_image", "eval_glyphs", "feedback")):
            report.skipped.append((where, "empty: no weights, sample, eval glyphs or feedback"))
            return
        args.setdefault("started_at", moment)
        args.setdefault("ended_at", _newest_mtime(run_dir))
        store.import_run(font_id, run_id, source, **args)
    except StoreError as exc:
        report.skipped.append((where, str(exc)))
        return
    report.notes += [f"{where}: {note}" for note in folder.notes]
    report.imported.append(f"{font_id}/{run_id}")
    info = store.get_run_info(font_id, run_id)
    if info.missing:
        report.incomplete.append(f"{font_id}/{run_id}: no {', '.join(info.missing)}")


def _newest_mtime(run_dir: Path) -> str:
    """When the legacy run last wrote a file: the best estimate of when it ended."""
    newest = max((p.stat().st_mtime for p in run_dir.rglob("*") if p.is_file()), default=run_dir.stat().st_mtime)
    return format_time(datetime.fromtimestamp(newest, UTC))
