"""fsck's checks of the shared listing of each font on object storage: its snapshots
(``listings.py``) and segments (``segments.py``). Readers pass over a bad one (reading
refs instead), but a row that lies is shown by listings on other machines."""

from __future__ import annotations

from . import listings, segments
from .errors import FormatError, InvalidNameError, NotFoundError, StoreError
from .findings import ERROR, WARNING, Report, runs_text
from .layout import LISTINGS, listing_at, runs_folder, segment_at
from .manifests import check_location, unpack
from .names import parse_digest
from .runinfo import RunInfo
from .store import Store


def check_listings(store: Store, report: Report, repair: bool, heads: dict[str, dict[str, RunInfo]]) -> None:
    """Listing snapshots must verify and hold rows by the rules, be named no later than
    now (a name from the future would stay "the newest" for ever), have a row written for
    a ref as it is now name the manifest that ref names, and say of each run what the
    manifest it names says. Readers pass over a bad one (reading refs instead), but a row
    that lies is shown by listings on other machines: an error. Repair removes both."""
    keys = list(store.backend.list(LISTINGS))
    _, future = listings.by_time(k for k in keys if listing_at(k) is not None)
    for key in keys:
        where = key.split("/")
        if segment_at(key) is not None:
            _check_segment(store, report, repair, key, where[1], heads.get(where[1], {}))
            continue
        if listing_at(key) is None:
            report.add(WARNING, "stray-file", f"{key} is not a listing snapshot or segment; move it out of "
                       f"{LISTINGS}/", ref=key)
            continue
        try:
            if key in future:
                raise FormatError(f"listing snapshot {key} is named later than this machine's clock by more than "
                                  f"{listings.FUTURE.seconds // 60} minutes, so readers never use it")
            rows = listings.read(store.backend, key, where[1])
            tokens = store.backend.list_versions(runs_folder(where[1]))
            moved = [run_id for run_id, (token, info) in rows.items()
                     if tokens.get(run_id) == token and _names_another(store, where[1], run_id, info.manifest)]
            if moved:
                raise FormatError(f"listing snapshot {key} names other manifests than the refs of "
                                  f"{runs_text(moved)} do")
        except FormatError as exc:
            _report_bad(store, report, repair, key, exc)
            continue
        except (NotFoundError, InvalidNameError):
            continue  # replaced by a newer one meanwhile, or a folder of no font
        lies = listings.disagreements(rows, _as_manifests_say(store, where[1], rows, heads.get(where[1], {})))
        _report_lies(store, report, repair, key, where[1], lies)


def _check_segment(store: Store, report: Report, repair: bool, key: str, font_id: str,
                   heads: dict[str, RunInfo]) -> None:
    """A listing segment must verify, hold rows by the rules, and say of each run what
    the manifest its row names says (a row of a manifest its ref no longer names is
    stale, not wrong: readers pass over it)."""
    try:
        rows = segments.read(store.backend, key, font_id)
        infos = [segments.checked(font_id, row) for row in rows]
        if None in infos:
            raise FormatError(f"listing segment {key} holds a row that breaks the rules of a manifest")
    except FormatError as exc:
        _report_bad(store, report, repair, key, exc)
        return
    except (NotFoundError, InvalidNameError):
        return  # merged by a writer meanwhile, or a folder of no font
    batches: list[dict[str, tuple[str, RunInfo]]] = []  # a run's rows of other manifests, each in a batch
    for info in infos:
        assert info is not None
        batch = next((b for b in batches if info.run_id not in b), None)
        if batch is None:
            batches.append(batch := {})
        batch[info.run_id] = ("", info)
    lies = sorted({run_id for batch in batches
                   for run_id in listings.disagreements(batch, _as_manifests_say(store, font_id, batch, heads))})
    _report_lies(store, report, repair, key, font_id, lies)


def _report_bad(store: Store, report: Report, repair: bool, key: str, exc: FormatError) -> None:
    report.add(WARNING, "bad-listing", f"{exc}; listings read the refs instead, and "
               "`aoe store fsck --repair` removes it", ref=key)
    _remove_listing(store, report, key, repair)


def _report_lies(store: Store, report: Report, repair: bool, key: str, font_id: str, lies: list[str]) -> None:
    if lies:
        what = "listing segment" if segment_at(key) else "listing snapshot"
        report.add(ERROR, "lying-listing",
                   f"{what} {key} says of {runs_text(lies)} what their manifests do not (their name, tags, metrics "
                   "or other fields): listings on machines that read it show that; `aoe store fsck --repair` "
                   "removes it", ref=key, runs=tuple(f"{font_id}/{r}" for r in lies))
        _remove_listing(store, report, key, repair)


def _as_manifests_say(store: Store, font_id: str, rows: dict[str, tuple[str, RunInfo]],
                      heads: dict[str, RunInfo]) -> dict[str, RunInfo]:
    """Each row's run as the manifest the row names says it is (the run as fsck read it,
    or an older version read now); a manifest that cannot be read is left out."""
    truth = {}
    for run_id, (_, info) in rows.items():
        head = heads.get(run_id)
        if head is not None and head.manifest == info.manifest:
            truth[run_id] = head
            continue
        try:
            manifest = check_location(unpack(store.objects.get(parse_digest(info.manifest))), font_id, run_id)
            truth[run_id] = RunInfo.read(manifest, info.manifest, store.objects)
        except StoreError:
            continue
    return truth


def _remove_listing(store: Store, report: Report, key: str, repair: bool) -> None:
    if repair:
        store.backend.delete(key)
        report.repaired.append(f"removed {'listing segment' if segment_at(key) else 'listing snapshot'} {key}")


def _names_another(store: Store, font_id: str, run_id: str, manifest: str) -> bool:
    try:
        return store.refs.read_run(font_id, run_id) != manifest
    except StoreError:
        return False  # the ref itself is reported by the check of the refs
