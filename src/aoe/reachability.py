"""Reachability: the one walk over what a store's runs need.

A run needs its manifest, every object that manifest names, and, since amends keep
history (``aoe store log``), the manifests it replaced (its ``parent`` chain) and theirs.
A deleted run that an alias still points at is needed too (as its trash record says):
it stays restorable while the alias names it, whatever forced its deletion.
gc marks with it, fsck checks with it, ``du`` counts with it and transfer copies with it:
one definition of "needed", so none of them can disagree about what may be removed.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Iterator
from dataclasses import dataclass, field

from .aliases import Aliases
from .errors import FormatError, MismatchedManifestError, NotFoundError, StoreError
from .manifests import Manifest, check_location, unpack
from .names import Digest
from .objects import ObjectStore
from .refs import Refs, TrashRecord


def versions(objects: ObjectStore, digest: Digest, *, seen: set[Digest] | None = None
             ) -> Iterator[tuple[Digest, Manifest]]:
    """A manifest and the ones it amended (its ``parent`` chain), newest first, each read
    and verified, and each of the same run (MismatchedManifestError at one of another);
    stops before a digest already in ``seen`` (and at a loop)."""
    visited: set[Digest] = set()
    next_digest: Digest | None = digest
    run: tuple[str, str] | None = None
    while next_digest is not None and next_digest not in visited and (seen is None or next_digest not in seen):
        visited.add(next_digest)
        manifest = unpack(objects.get(next_digest))
        if run is not None and (manifest.font_id, manifest.run_id) != run:
            raise MismatchedManifestError(
                f"manifest {next_digest}, named as an earlier version of run {run[1]} of {run[0]}, is run "
                f"{manifest.run_id} of {manifest.font_id}: the history stops there; run `aoe store fsck`")
        run = manifest.font_id, manifest.run_id
        yield next_digest, manifest
        next_digest = manifest.parent


@dataclass
class RunHistory:
    """One run as the walk found it: its versions, newest first, as far as they could be
    read, and why the walk stopped early if it did."""

    font_id: str
    run_id: str
    versions: list[tuple[Digest, Manifest]] = field(default_factory=list)
    problem: StoreError | None = None
    """Why the run cannot be read whole: its ref (``at`` None) or a manifest (``at``)."""
    at: Digest | None = None

    @property
    def head(self) -> Manifest | None:
        """The run as it is now (None when its ref or manifest cannot be read)."""
        return self.versions[0][1] if self.versions and not (self.problem and self.at == self.versions[0][0]) \
            else None

    def digests(self) -> set[Digest]:
        """Every object this run needs that the walk could name: the manifests read, the
        objects they name, and the manifest it could not read (it is needed too)."""
        needed = {digest for digest, _ in self.versions}
        for _, manifest in self.versions:
            needed.update(manifest.digests())
        if self.at is not None:
            needed.add(self.at)
        return needed


def history(refs: Refs, objects: ObjectStore, font_id: str, run_id: str) -> RunHistory:
    """Read one run's ref and its whole history, never raising: a problem is recorded."""
    run = RunHistory(font_id, run_id)
    try:
        head = refs.read_run(font_id, run_id)
    except (FormatError, NotFoundError) as exc:
        run.problem = exc
        return run
    at: Digest | None = head
    try:
        for digest, manifest in versions(objects, head):
            if digest == head:
                check_location(manifest, font_id, run_id)
            run.versions.append((digest, manifest))
            at = manifest.parent
    except StoreError as exc:
        run.problem, run.at = exc, at
    return run


def walk(refs: Refs, objects: ObjectStore, fonts: Iterable[str] | None = None) -> Iterator[RunHistory]:
    """Every run of the store (or of ``fonts``), each with its history."""
    for font_id in refs.fonts() if fonts is None else fonts:
        if not refs.has_runs_folder(font_id):
            continue
        for run_id in refs.runs(font_id):
            yield history(refs, objects, font_id, run_id)


def held_by_aliases(refs: Refs, aliases: Aliases, font_id: str, runs: Collection[str]) -> list[TrashRecord]:
    """The deleted runs of a font (whose live runs are ``runs``) that an alias points at,
    not purged yet. An alias that cannot be read raises FormatError: it may name any."""
    targets = set()
    for move in aliases.newest_of_font(font_id).values():
        if isinstance(move, FormatError):
            raise move
        if move.run_id is not None and move.run_id not in runs:
            targets.add(move.run_id)
    if not targets:
        return []
    return [r for r in refs.trashed(font_id) if r.run_id in targets and r.manifest and not r.purged_at]


def reachable(refs: Refs, objects: ObjectStore, aliases: Aliases) -> set[Digest]:
    """Every object some run needs, and those of deleted runs aliases hold. A run that
    cannot be read whole makes this raise: what it needs is unknown, so nothing may be
    taken as unneeded. (A deleted run that cannot be read holds nothing.)"""
    needed: set[Digest] = set()
    for font_id in refs.fonts():
        runs = refs.runs(font_id) if refs.has_runs_folder(font_id) else []
        for run in (history(refs, objects, font_id, run_id) for run_id in runs):
            if isinstance(run.problem, NotFoundError) and run.at is None:
                continue  # its ref was removed since the listing (deleted, forgotten): it holds nothing now
            if run.problem is not None:
                raise FormatError(
                    f"run {run.run_id} of {run.font_id} cannot be read ({run.problem}); run `aoe store fsck` "
                    "and deal with the damage first")
            needed |= run.digests()
        for record in held_by_aliases(refs, aliases, font_id, set(runs)):
            assert record.manifest is not None  # held_by_aliases gives only records with one
            try:
                for digest, manifest in versions(objects, record.manifest):
                    needed |= {digest, *manifest.digests()}
            except StoreError:
                continue
    return needed
