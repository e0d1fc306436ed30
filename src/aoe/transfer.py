"""Transfer: copy fonts and runs between any two stores (push, pull, clone).

Objects are content-addressed, so a transfer copies only the objects the destination
lacks, as stored (no re-compression), each verified against its address before it is
written. A run's ref is created (or moved forward) only after every object its
manifest and its history need is in the destination: an interrupted transfer leaves
whole runs or none, and running it again resumes where it stopped, since present
objects and runs are skipped. While it runs, the destination carries a save marker,
so its gc spares the objects copied but not yet referenced.

A run present on both sides with different manifests is moved forward when the
destination's version is in the source's history (the source amended it), left alone
when the source's is in the destination's history, and otherwise reported as a
conflict. Deleted runs (the trash) are not transferred.

Aliases follow their runs: a destination alias is moved (a new move in its history, with
the source's time and note) to where the source's points when the source's newest move
is newer than the destination's; when the destination's is newer it is kept, and said.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import reachability
from .aliases import MAX_NOTE_LENGTH
from .errors import CorruptObjectError, FormatError, InvalidInputError, NotFoundError, StoreError
from .layout import OBJECTS, digest_at, run_key
from .names import Digest, check_font_id, check_time, font_number
from .store import Store
from .transaction import Transaction

UP_TO_DATE = "up to date"
Plan = tuple[str, Digest, Digest | None, set[Digest]]
"""(run id, source manifest, destination manifest or None, objects needed) of a run to copy."""


@dataclass
class TransferReport:
    fonts: int = 0
    runs_copied: int = 0
    runs_updated: int = 0
    runs_up_to_date: int = 0
    aliases_moved: int = 0
    objects_copied: int = 0
    bytes_copied: int = 0
    conflicts: list[str] = field(default_factory=list)
    """One line per run or font that conflicts with the destination, and why."""
    unreadable: list[str] = field(default_factory=list)
    """One line per source run that was not copied because the source cannot give it
    whole and sound (a missing or corrupt object, a manifest that breaks the format)."""

    @property
    def complete(self) -> bool:
        """Whether every run asked for is in the destination as it is in the source."""
        return not self.conflicts and not self.unreadable

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def transfer(
    source: Store,
    dest: Store,
    *,
    fonts: list[str] | None = None,
    progress: Callable[[int], None] | None = None,
) -> TransferReport:
    """Copy every font (or those in ``fonts``) with its runs from ``source`` to ``dest``.

    ``progress`` gets the byte count of each object copied (as stored).
    """
    source.require_root()
    wanted = [check_font_id(f) for f in fonts] if fonts is not None else source.refs.fonts()
    for font_id in wanted:
        source.refs.require_font(font_id)
    report = TransferReport()
    with dest.transaction() as transaction:  # from here on, dest's gc spares what this copies
        present = _present_objects(dest)
        for font_id in wanted:
            if not _claim(dest, font_id, report):
                continue
            report.fonts += 1
            plans = _plan_font(source, dest, font_id, report)
            needed = {d for _, _, _, digests in plans for d in digests}
            failed = _copy_objects(source, dest, sorted(needed - present), report, progress)
            present |= needed - failed.keys()
            plans = _whole(font_id, plans, failed, report)  # a run whose object could not be copied is left out
            transaction.touch({d for _, _, _, digests in plans for d in digests})  # as a save does: kept from gc
            published = {}
            for (run_id, digest, _, _), outcome in zip(plans, dest.objects.parallel(
                    lambda plan: _publish(transaction, font_id, plan), plans)):
                if outcome == "created":
                    report.runs_copied += 1
                elif outcome == "moved":
                    report.runs_updated += 1
                else:
                    report.conflicts.append(f"{font_id}/{run_id}: {outcome}")
                    continue
                published[run_id] = digest
            _share_rows(source, dest, font_id, published)
            _transfer_aliases(source, dest, font_id, report)
    return report


def _share_rows(source: Store, dest: Store, font_id: str, published: dict[str, Digest]) -> None:
    """Give an object store the listing rows of the runs copied into it (one segment, as
    a writer shares its saves), from the source's listing: its first reader need not read
    each ref and manifest."""
    if dest.pending_rows is not None and published:
        dest.pending_rows.add(info for info in source.list_runs(font_id) if published.get(info.run_id) == info.manifest)
        dest.pending_rows.flush(font_id)


def _transfer_aliases(source: Store, dest: Store, font_id: str, report: TransferReport) -> None:
    """Move each alias of the destination's font to where the source's points, when the
    source's newest move is the newer (see the module doc)."""
    for name, move in source.aliases.newest_of_font(font_id).items():
        if isinstance(move, StoreError):
            report.unreadable.append(f"{font_id}@{name}: {move}")
            continue
        try:
            number = dest.aliases.newest_number(font_id, name)
            there = dest.aliases.read(font_id, name, number) if number else None
        except StoreError as exc:
            report.conflicts.append(f"{font_id}@{name}: the destination's cannot be read ({exc})")
            continue
        if there is not None and (there.run_id, there.manifest) == (move.run_id, move.manifest):
            continue
        if there is not None and check_time(there.at, "time") >= check_time(move.at, "time"):
            report.conflicts.append(f"{font_id}@{name}: the destination's was moved later ({there.at}); kept")
            continue
        if move.run_id is not None and not dest.backend.exists(run_key(font_id, move.run_id)):
            report.conflicts.append(f"{font_id}@{name}: its run {move.run_id} is not in the destination")
            continue
        try:
            dest.aliases.move(font_id, name, move.run_id, move.manifest, move.at, after=number,
                              note=(f"from {source.root}" + (f": {move.note}" if move.note else ""))[:MAX_NOTE_LENGTH])
        except StoreError as exc:
            report.conflicts.append(f"{font_id}@{name}: {exc}")
            continue
        report.aliases_moved += 1


def _publish(transaction: Transaction, font_id: str, plan: Plan) -> str:
    run_id, new, old, _ = plan  # every object it needs was touched with the others of its font
    if old is None:
        return "created" if transaction.create(font_id, run_id, new, ()) else "created in the destination meanwhile"
    moved = transaction.move(font_id, run_id, old, new)
    return "moved" if moved is not None else "changed in the destination meanwhile"


def _present_objects(store: Store) -> set[Digest]:
    """The objects a store holds, from one listing (cheaper than asking per object)."""
    if not store.exists():
        return set()
    return {d for d in map(digest_at, store.backend.list(OBJECTS)) if d is not None}


def _claim(dest: Store, font_id: str, report: TransferReport) -> bool:
    """Make the font exist in the destination under the same id."""
    holder = dest.refs.font_with_number(font_number(font_id)) if dest.exists() else None
    if holder is None:
        if not dest.refs.claim_font(font_id):
            holder = dest.refs.font_with_number(font_number(font_id))
    if holder is not None and holder != font_id:
        report.conflicts.append(
            f"{font_id}: the destination's font number {font_number(font_id)} is {holder!r}; "
            "rename one of them (pull into an empty store, or create the font under a free number)"
        )
        return False
    dest.refs.make_runs_folder(font_id)  # a font the destination had (its folder may have been removed)
    return True


def _plan_font(source: Store, dest: Store, font_id: str, report: TransferReport) -> list[Plan]:
    """(run id, source manifest, destination manifest or None, objects needed) of every
    run to create or move forward; up-to-date runs and conflicts are reported."""
    in_dest = set(dest.refs.runs(font_id)) if dest.exists() else set()

    def plan(run_id: str) -> Plan | str:
        """What to do with one run, or why nothing (read on worker threads). A run the
        source cannot show whole and valid is not copied: a transfer checks what it
        receives, as a read does."""
        new = source.refs.read_run(font_id, run_id)
        old = dest.refs.read_run(font_id, run_id) if run_id in in_dest else None
        if old == new:
            return UP_TO_DATE
        run = reachability.history(source.refs, source.objects, font_id, run_id)
        if run.problem is not None or not run.versions or run.versions[0][0] != new:
            return UnreadableRun(f"{font_id}/{run_id}: not copied, the source's run cannot be read "
                                 f"({run.problem or 'it moved'})")
        if old is not None and old not in {digest for digest, _ in run.versions}:
            if _in_history(dest, old, new):
                return UP_TO_DATE  # the destination amended it further
            return (f"{font_id}/{run_id}: amended differently on each side; keep one with "
                    "`aoe store rm` on the other side, then transfer again")
        return run_id, new, old, run.digests()

    plans = []
    for outcome in dest.objects.parallel(plan, source.refs.runs(font_id)):
        if outcome == UP_TO_DATE:
            report.runs_up_to_date += 1
        elif isinstance(outcome, UnreadableRun):
            report.unreadable.append(str(outcome))
        elif isinstance(outcome, str):
            report.conflicts.append(outcome)
        else:
            plans.append(outcome)
    return plans


class UnreadableRun(str):
    """Why a source run is not copied: the source cannot give it whole and sound."""


def _whole(font_id: str, plans: list[Plan], failed: dict[Digest, str], report: TransferReport) -> list[Plan]:
    """The plans whose every object is in the destination now; the others are reported
    (a bad source run is skipped, never the whole transfer)."""
    kept = []
    for plan in plans:
        missing = sorted(plan[3] & failed.keys())
        if missing:
            report.unreadable.append(f"{font_id}/{plan[0]}: not copied, the source's object {missing[0]} "
                                     f"{failed[missing[0]]}")
        else:
            kept.append(plan)
    return kept


def _in_history(store: Store, head: Digest, digest: Digest) -> bool:
    try:
        return any(d == digest for d, _ in store.versions(head))
    except StoreError:
        return False


def _copy_objects(source: Store, dest: Store, digests: list[Digest], report: TransferReport,
                  progress: Callable[[int], None] | None) -> dict[Digest, str]:
    """Copy objects as stored, many at once; each is verified on arrival, before it is
    written. Returns those the source could not give (missing, corrupt), and why."""
    def copy(digest: Digest) -> tuple[Digest, int, str | None]:
        try:
            stored = source.objects.read_stored(digest)
            dest.objects.put_stored(digest, stored)
        except (NotFoundError, CorruptObjectError, FormatError) as exc:  # the source's: its runs are skipped
            return digest, 0, "is missing" if isinstance(exc, NotFoundError) else f"is damaged ({exc})"
        if progress:
            progress(len(stored))
        return digest, len(stored), None

    failed: dict[Digest, str] = {}
    for digest, size, problem in source.objects.parallel(copy, digests):
        if problem is not None:
            failed[digest] = problem
            continue
        report.objects_copied += 1
        report.bytes_copied += size
    return failed


def clone(source: Store, dest: Store, *, progress: Callable[[int], None] | None = None) -> TransferReport:
    """Copy a whole store into a new, empty one."""
    if dest.exists() and dest.refs.fonts():
        raise InvalidInputError(
            f"{dest.root} already holds fonts: clone makes a new store; use `aoe store pull` "
            "to bring runs into an existing one"
        )
    return transfer(source, dest, progress=progress)
