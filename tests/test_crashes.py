"""Power loss at any instant loses no run that was reported saved: every write path of aoe
recorded (tests/crashsim.py), and the disk states a power cut may leave of it, under a
pessimistic model and ext4's ``data=ordered``, opened as a new process would.

On every state: each run a call acknowledged before the cut (saved, amended, tagged,
restored, imported, pulled, forked) loads, bit for bit, each run it deleted or forgot is
restorable, each alias move it made is in the alias's history; no run is half there (fsck finds nothing
but leftovers: temporary files, orphan objects, markers of saves that died, a deletion
cut short), and after ``fsck --repair`` and a gc nothing at all; what a listing says is
what the refs say, from a fresh index and from the index the workload left; an export's
DEST is whole or absent.

CI checks a sample (a fixed seed, CRASH_STATES states in all); by hand, all of them or more:

    AOE_CRASH_STATES=20000 AOE_CRASH_SEED=7 python -m pytest tests/test_crashes.py -k states
"""

from __future__ import annotations

import os
import platform
import random
import shutil
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import make_png
from crashsim import Model, Recorder, materialize
from object_storage_like import LikeObjectStorage

import aoe
from aoe import catalog
from aoe.backends.local import LocalBackend
from aoe.fsck import fsck
from aoe.gc import collect_garbage
from aoe.layout import object_key
from aoe.legacy import import_legacy
from aoe.manifests import ShardedTensor
from aoe.transaction import Transaction
from aoe.transfer import transfer

STATES = int(os.environ.get("AOE_CRASH_STATES", "600"))
SEED = int(os.environ.get("AOE_CRASH_SEED", "2026"))
LEFTOVERS = {"temp-file", "orphan-object", "stale-save-marker", "interrupted-delete", "incomplete-run"}
"""What fsck may find after a crash: what an interrupted write leaves, which --repair and gc
remove; and a run published without a sample or glyphs (as the workload made it)."""
RUN_PROPERTIES = {"incomplete-run"}
"""Findings about what a run holds, not about damage: they stay after --repair."""


@dataclass
class Workload:
    """What a workload wrote (its recording) and what its calls acknowledged."""

    name: str
    model: Model
    index: Path | None = None
    """The catalog index the workload's Store left in the cache (to open each state with)."""
    known: set[tuple[str, str | None]] = field(default_factory=set)
    """fsck's findings (kind, ref) on the store as the workload began (what it repairs)."""


def weights(seed: int, big: bool = False) -> dict[str, torch.Tensor]:
    """A small state: packed small tensors, and (``big``) one of its own object."""
    generator = torch.Generator().manual_seed(seed)
    state = {"layer.weight": torch.randn(8, 4, generator=generator), "layer.bias": torch.randn(8, generator=generator),
             "step": torch.tensor(seed)}
    if big:
        state["embed"] = torch.randn(300, 256, generator=generator)  # 300 KiB: an object of its own
    return state


def files(seed: int) -> dict[str, Any]:
    return {"personality_vector": [0.5, float(seed)], "sample_image": make_png(seed),
            "eval_glyphs": {"A": make_png(seed + 1), "b": make_png(99)}, "feedback": {"final_loss": 1 / (seed + 2)}}


def saved(note: dict[str, Any], font: str, run_id: str, state: dict[str, torch.Tensor]) -> dict[str, Any]:
    return {**note, "kind": "run", "font": font, "run": run_id, "weights": {k: v.clone() for k, v in state.items()}}


def record(tmp_path: Path, name: str, setup: Callable[[Path], Any], work: Callable[[Path, Recorder, Any], None],
           ) -> Workload:
    """Run ``setup`` (its result on disk is the durable start), then ``work`` recorded."""
    area = tmp_path / name
    area.mkdir()
    context = setup(area)
    known = {(f.kind, f.ref) for f in fsck(aoe.Store(area / "networks")).findings} \
        if (area / "networks").exists() else set()
    recorder = Recorder({"area": area})
    model = Model({"area": area}, recorder.events)
    with recorder.recording():
        work(area, recorder, context)
    index = aoe.Store(area / "networks").catalog.path
    return Workload(name, model, index if index is not None and index.exists() else None, known)


def check_state(state: Path, acknowledged: list[dict[str, Any]], index: Path | None,
                known: set[tuple[str, str | None]] = frozenset()) -> list[str]:  # type: ignore[assignment]
    """What is wrong with one crash state (``state/networks`` the store); [] if nothing.
    ``known``: findings the store had before the workload (kind, ref)."""
    problems: list[str] = []
    root = state / "networks"
    os.environ["AOE_CACHE_DIR"] = str(state.with_name(state.name + "-cache"))  # a new machine's cache
    if index is not None and root.exists():  # the index the workload left, as a later process finds it
        place = aoe.Store(root).catalog.path
        assert place is not None
        place.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(index, place)
    store = aoe.Store(root)
    latest = {(note.get("font"), note.get("run"), note.get("dest"), note.get("alias")): note for note in acknowledged}
    acknowledged = list(latest.values())  # a run deleted, then restored: what the last call said
    for note in acknowledged:
        problems += _check_note(store, state, note)
    if not root.exists():
        return problems
    report = fsck(store, read_data=True)
    bad = [f"{f.kind}: {f.message}" for f in report.findings
           if f.severity != "info" and f.kind not in LEFTOVERS and (f.kind, f.ref) not in known]
    problems += [f"fsck after the crash: {line}" for line in bad]
    try:
        truth = {font: [i.to_dict() for i in store.catalog.read_infos(font, store.refs.runs(font))]
                 for font in store.list_fonts()}
        listed = {font: [i.to_dict() for i in store.list_runs(font)] for font in store.list_fonts()}
    except aoe.StoreError as exc:
        return problems + [f"listing after the crash: {exc}"]
    if listed != truth:
        problems.append("a listing says other than the refs and manifests")
    remote = aoe.Store(backend=LikeObjectStorage(LocalBackend(root)))  # a new machine: listing snapshots, no index
    if {font: [i.to_dict() for i in remote.list_runs(font)] for font in truth} != truth:
        problems.append("a machine reading the store as object storage lists other than the refs and manifests")
    fsck(store, repair=True)
    collect_garbage(store, grace=0)
    after = [f"{f.kind}: {f.message}" for f in fsck(store, read_data=True).findings
             if f.severity != "info" and f.kind not in RUN_PROPERTIES]
    problems += [f"fsck after --repair and gc: {line}" for line in after]
    for note in acknowledged:  # (a gc makes a deletion final: a deleted run needs no longer be restorable)
        if note["kind"] != "deleted":
            problems += [f"after --repair and gc: {p}" for p in _check_note(store, state, note)]
    return problems


def _check_note(store: aoe.Store, state: Path, note: dict[str, Any]) -> list[str]:
    """Whether what an acknowledged call did is there."""
    kind = note["kind"]
    try:
        if kind == "run":
            loaded = store.load_model(note["font"], note["run"]).weights
            for key, tensor in note["weights"].items():
                if not torch.equal(loaded[key], tensor) or loaded[key].dtype != tensor.dtype:
                    return [f"run {note['font']}/{note['run']}: {key} differs"]
            for field_name, value in note.get("fields", {}).items():
                if getattr(store.get_run_info(note["font"], note["run"]), field_name) != value:
                    return [f"run {note['font']}/{note['run']}: {field_name} is not {value!r}"]
        elif kind == "font":
            store.list_runs(note["font"])
        elif kind == "alias":  # every acknowledged move kept, in order (a later one may have landed too)
            moves = [move.run_id for move in store.alias_history(note["font"], note["alias"])]
            if moves[:len(note["moves"])] != note["moves"]:
                return [f"alias {note['font']}@{note['alias']} moved {moves}, not {note['moves']} first"]
        elif kind == "deleted":  # in the trash, restorable (or back already: a restore may be under way)
            records = [r for r in store.trashed(note["font"]) if r.run_id == note["run"] and not r.purged_at]
            back = store.refs.has_runs_folder(note["font"]) and note["run"] in store.refs.runs(note["font"])
            if not back and not (records and store.objects.has(records[0].manifest)):
                return [f"run {note['font']}/{note['run']} was deleted, and can be restored no more"]
        elif kind == "purged":
            [record] = [r for r in store.trashed(note["font"]) if r.run_id == note["run"]]
            if not record.purged_at:
                return [f"run {note['font']}/{note['run']}: its gc returned, and its trash record is not purged"]
        elif kind == "dest":  # whole (or, while the export runs, absent): never part of it
            dest = state / note["dest"]
            if note["whole"] == "or absent" and not dest.exists():
                return []
            found = sorted((p.relative_to(dest).as_posix(), p.read_bytes()) for p in dest.rglob("*")
                           if p.is_file() and p.name != "run.json")
            if found != note["files"]:
                return [f"{note['dest']} holds {[name for name, _ in found]}, not all of "
                        f"{[name for name, _ in note['files']]} as exported"]
    except aoe.StoreError as exc:
        return [f"{kind} {note.get('font')}/{note.get('run')}: {exc}"]
    return []


def check_workload(workload: Workload, budget: int, rng: random.Random, tmp_path: Path
                   ) -> tuple[dict[str, int], list[str]]:
    """Check ``budget`` crash states of a workload (every cut when they fit, else a sample);
    how many states of each model were checked, and the problems found."""
    cuts = workload.model.cuts()
    mixed = min(12, max(2, budget // len(cuts) - 5))  # a bigger budget: more mixes of what a crash kept
    per_cut = mixed + 5  # pessimistic: all kept, none kept, the mixes; ext4: 2; and the first again, old index
    chosen = cuts if len(cuts) * per_cut <= budget else sorted(rng.sample(cuts, max(1, budget // per_cut)))
    checked, problems = 0, []
    counts = {"pessimistic": 0, "ext4": 0}
    for cut in chosen:
        acknowledged = workload.model.acknowledged(cut)
        for model, count in (("pessimistic", 2 + mixed), ("ext4", 2)):
            for number, roots in enumerate(workload.model.states(cut, model, rng, count)):
                for index in (None, workload.index) if number == 0 else (None,):
                    state = tmp_path / "states" / f"{workload.name}-{cut}-{model}-{number}-{checked}"
                    materialize(roots, {"area": state})
                    found = check_state(state, acknowledged, index, workload.known)
                    checked += 1
                    counts[model] += 1
                    problems += [f"{workload.name}, cut {cut} of {len(cuts) - 1} ({model} #{number}"
                                 f"{', the old index' if index else ''}): {p}" for p in found]
                    shutil.rmtree(state, ignore_errors=True)
                    shutil.rmtree(state.with_name(state.name + "-cache"), ignore_errors=True)
    return counts, problems


# -- the workloads ---------------------------------------------------------------------------


def a_store(area: Path, runs: int = 1) -> tuple[aoe.Store, str, list[str]]:
    """A store in use: a font with ``runs`` runs (durable: the recording starts after)."""
    store = aoe.Store(area / "networks")
    font = store.create_font("fruity")
    ids = [store.save_model(font, weights(i), **files(i)) for i in range(runs)]
    store.close()
    return store, font, ids


def save_new_store(area: Path, recorder: Recorder, _: Any) -> None:
    store = aoe.Store(area / "networks")
    font = store.create_font("fruity")
    recorder.mark({"kind": "font", "font": font})
    state = weights(1, big=True)
    run_id = store.save_model(font, state, **files(1))
    recorder.mark(saved({}, font, run_id, state))


def save_in_use(area: Path, recorder: Recorder, context: Any) -> None:
    store, font, _ = context
    store = aoe.Store(store.root)
    for seed in (5, 6):
        state = weights(seed, big=seed == 6)
        run_id = store.save_model(font, state, **files(seed), tags=["t"])
        recorder.mark(saved({}, font, run_id, state))


def acknowledge_setup(store: aoe.Store, font: str, recorder: Recorder) -> None:
    """The runs the setup saved (durable before the recording) must stay, whatever comes."""
    for info in store.list_runs(font):
        run = store.load_model(font, info.run_id).weights
        recorder.mark(saved({}, font, info.run_id, run))


def background_and_start_run(area: Path, recorder: Recorder, context: Any) -> None:
    store, font, _ = context
    store = aoe.Store(store.root)
    state = weights(7, big=True)
    run_id = store.save_in_background(font, state, **files(7)).result()
    recorder.mark(saved({}, font, run_id, state))
    with store.start_run(font, params={"lr": 0.1}) as run:
        state = weights(8)
        run.save(state, **files(8))
    recorder.mark(saved({"fields": {"status": "completed"}}, font, run.run_id, state))


def amend_tag_describe(area: Path, recorder: Recorder, context: Any) -> None:
    store, font, ids = context
    store = aoe.Store(store.root)
    acknowledge_setup(store, font, recorder)
    first = store.load_model(font, ids[0]).weights
    store.amend_run(font, ids[0], sample_image=make_png(200), name="amended")
    recorder.mark(saved({"fields": {"name": "amended"}}, font, ids[0], first))
    store.tag_run(font, ids[0], add=["kept"])
    recorder.mark(saved({"fields": {"name": "amended", "tags": ("kept",)}}, font, ids[0], first))
    store.describe_run(font, ids[1], description="second")
    recorder.mark(saved({"fields": {"description": "second"}}, font, ids[1], store.load_model(font, ids[1]).weights))


def delete_and_restore(area: Path, recorder: Recorder, context: Any) -> None:
    store, font, ids = context
    store = aoe.Store(store.root)
    kept = store.load_model(font, ids[1]).weights
    recorder.mark(saved({}, font, ids[1], kept))
    gone = store.load_model(font, ids[0]).weights
    store.delete_run(font, ids[0])
    recorder.mark({"kind": "deleted", "font": font, "run": ids[0]})
    store.restore_run(font, ids[0])
    recorder.mark(saved({}, font, ids[0], gone))


def delete_and_restore_font(area: Path, recorder: Recorder, context: Any) -> None:
    store, font, ids = context
    store = aoe.Store(store.root)
    states = {run_id: store.load_model(font, run_id).weights for run_id in ids}
    store.delete_font(font)
    for run_id in ids:
        recorder.mark({"kind": "deleted", "font": font, "run": run_id})
    store.restore_font(font)
    for run_id, state in states.items():
        recorder.mark(saved({}, font, run_id, state))


def gc_after_delete(area: Path, recorder: Recorder, context: Any) -> None:
    store, font, ids = context
    store = aoe.Store(store.root)
    recorder.mark(saved({}, font, ids[1], store.load_model(font, ids[1]).weights))
    collect_garbage(store, grace=0)
    recorder.mark({"kind": "purged", "font": font, "run": ids[0]})


def deleted_run(area: Path) -> tuple[aoe.Store, str, list[str]]:
    store, font, ids = a_store(area, runs=2)
    store.delete_run(font, ids[0])
    store.close()
    return store, font, ids


@pytest.fixture(autouse=True)
def _every_listing_shares_a_snapshot(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "LISTING_MIN", 1)


def share_listings(area: Path, recorder: Recorder, context: Any) -> None:
    """Machines listing a font on object storage write listing snapshots (and keep the
    newest two); a crash may leave one half written, or none."""
    store, font, ids = context
    remote = aoe.Store(backend=LikeObjectStorage(LocalBackend(store.root)))
    acknowledge_setup(remote, font, recorder)
    for seed in (3, 4):
        remote.list_runs(font)  # shares a snapshot of what it read
        state = weights(seed)
        run_id = remote.save_model(font, state, **files(seed))
        recorder.mark(saved({}, font, run_id, state))
        remote = aoe.Store(backend=LikeObjectStorage(LocalBackend(store.root)))  # another machine, another day

def gc_in_two_phases(area: Path, recorder: Recorder, context: Any) -> None:
    store, font, ids = context
    remote = aoe.Store(backend=LikeObjectStorage(LocalBackend(store.root)))
    recorder.mark(saved({}, font, ids[1], remote.load_model(font, ids[1]).weights))
    collect_garbage(remote, grace=0)  # sets the deleted run's objects aside
    lease = store.root / ".locks" / "gc"  # an object store's lease is rewritten: its clock moves on
    os.utime(lease, (lease.stat().st_mtime + 1,) * 2)
    collect_garbage(remote, grace=0)  # and deletes them for good
    recorder.mark({"kind": "purged", "font": font, "run": ids[0]})


def gc_racing_a_save(area: Path, recorder: Recorder, context: Any) -> None:
    """A save pauses after its objects are written, before its ref; a zero-grace gc runs
    meanwhile (another process, in the real world); then the save publishes."""
    store, font, ids = context
    saver, collector = aoe.Store(store.root), aoe.Store(store.root)
    recorder.mark(saved({}, font, ids[1], saver.load_model(font, ids[1]).weights))
    written, collected = threading.Event(), threading.Event()
    real_publish = Transaction.publish

    def paused(self: Transaction, *args: Any, **kwargs: Any) -> Any:
        written.set()
        collected.wait(30)
        return real_publish(self, *args, **kwargs)

    state, result = weights(11, big=True), []
    Transaction.publish = paused  # type: ignore[method-assign]
    try:
        thread = threading.Thread(target=lambda: result.append(saver.save_model(font, state, **files(11))))
        thread.start()
        written.wait(30)
        collect_garbage(collector, grace=0)
        collected.set()
        thread.join(30)
    finally:
        Transaction.publish = real_publish  # type: ignore[method-assign]
    recorder.mark(saved({}, font, result[0], state))


def two_ranks_then_the_coordinator(area: Path, recorder: Recorder, context: Any) -> None:
    """What a DCP save of two ranks writes: each rank its shards, in a transaction of its
    own (``AoeStorageWriter.write_data``), then the coordinator one manifest naming them
    (``finish``: ``publish_stored``)."""
    store, font, _ = context
    store = aoe.Store(store.root)
    whole = torch.arange(2 * 300 * 256, dtype=torch.float32).reshape(600, 256)
    pieces = []
    for rank, rows in enumerate((slice(0, 300), slice(300, 600))):
        prepared = store.prepare_trees()
        prepared.add("dcp", {0: whole[rows].clone(), 1: torch.tensor(rank)})
        with store.transaction():
            stored = prepared.store(store.objects)["dcp"]
        pieces.append(((rows.start, 0), stored[0]))
    run_id = store.publish_stored(font, {"w": ShardedTensor("float32", (600, 256), tuple(pieces)), "step": 3})
    recorder.mark(saved({}, font, run_id, {"w": whole}))


def a_source(area: Path) -> aoe.Store:
    """A store elsewhere (not recorded): the source of a pull."""
    source = aoe.Store(area.parent / f"{area.name}-source")
    font = source.create_font("fruity")
    for seed in (1, 2):
        source.save_model(font, weights(seed, big=seed == 2), **files(seed))
    source.amend_run(font, source.refs.runs(font)[0], name="amended")
    return source


def pull_into_a_local_store(area: Path, recorder: Recorder, source: aoe.Store) -> None:
    dest = aoe.Store(area / "networks")
    report = transfer(source, dest)
    assert report.complete
    for font in source.list_fonts():
        for info in source.list_runs(font):
            recorder.mark(saved({"fields": {"name": info.name}}, font, info.run_id,
                                source.load_model(font, info.run_id).weights))


def an_aliased_store(area: Path) -> tuple[aoe.Store, str, list[str]]:
    """Five runs, the first named by an alias (as a deployed model is)."""
    store, font, ids = a_store(area, runs=5)
    store.set_alias(font, "production", ids[0])
    store.close()
    return store, font, ids


def alias_moves(area: Path, recorder: Recorder, context: Any) -> None:
    store, font, ids = context
    store = aoe.Store(store.root)
    acknowledge_setup(store, font, recorder)
    moves: list[str | None] = []
    for run_id in (ids[1], ids[3], None, ids[2]):
        if run_id is None:
            store.remove_alias(font, "best")
        else:
            store.set_alias(font, "best", run_id, expected_run=moves[-1] if moves else None)
        moves.append(run_id)
        recorder.mark({"kind": "alias", "font": font, "alias": "best", "moves": list(moves)})


def forget_and_a_policy(area: Path, recorder: Recorder, context: Any) -> None:
    """forget (by rules, then by a stored policy after a save): every run it moved to the
    trash restorable, every other run and the alias's run there."""
    store, font, ids = context
    store = aoe.Store(store.root)
    recorder.mark(saved({}, font, ids[0], store.load_model(f"{font}@production").weights))  # aliased: stays
    report = store.forget(font, {"keep_last": 2})
    assert report.forgotten == ids[1:3]
    for run_id in report.forgotten:
        recorder.mark({"kind": "deleted", "font": font, "run": run_id})
    store.set_retention(font, {"keep_last": 1})
    state = weights(11)
    run_id = store.save_model(font, state, **files(11))
    recorder.mark(saved({}, font, run_id, state))
    for run_id in ids[3:]:
        recorder.mark({"kind": "deleted", "font": font, "run": run_id})


def fork_a_font(area: Path, recorder: Recorder, context: Any) -> None:
    store, font, ids = context
    store = aoe.Store(store.root)
    acknowledge_setup(store, font, recorder)
    forked, run_id = store.fork_font(f"{font}@production", "bold")
    parent = {"font_id": font, "run_id": ids[0], "manifest": store.get_run_info(font, ids[0]).manifest}
    recorder.mark(saved({"fields": {"parents": (parent,)}}, forked, run_id, store.load_model(font, ids[0]).weights))


def a_legacy_folder(area: Path) -> Path:
    """A plain-folder store elsewhere (not recorded) to import."""
    legacy = area.parent / f"{area.name}-legacy"
    for seed, moment in ((1, "2026-01-11T08:30:00.000000"), (2, "2026-01-11T09:30:00.000000")):
        run = legacy / "1-fruity" / "runs" / moment
        (run / "eval-glyphs").mkdir(parents=True)
        torch.save(weights(seed), run / "weights.pt")
        (run / "sample.png").write_bytes(make_png(seed))
        (run / "eval-glyphs" / "A.png").write_bytes(make_png(seed + 1))
    return legacy


def legacy_import(area: Path, recorder: Recorder, legacy: Path) -> None:
    store = aoe.Store(area / "networks")
    report = import_legacy(store, legacy)
    for seed, run in enumerate(report.imported, start=1):
        font, run_id = run.split("/")
        recorder.mark(saved({}, font, run_id, weights(seed)))


def export_a_run(area: Path, recorder: Recorder, context: Any) -> None:
    store, font, ids = context
    store = aoe.Store(store.root)
    reference = area.parent / f"{area.name}-reference"
    store.export_run(font, ids[0], reference)  # what DEST must hold, exported apart (not recorded)
    expected = sorted((p.relative_to(reference).as_posix(), p.read_bytes()) for p in reference.rglob("*")
                      if p.is_file() and p.name != "run.json")
    recorder.mark({"kind": "dest", "dest": "dest", "whole": "or absent", "files": expected})
    store.export_run(font, ids[0], area / "dest")
    recorder.mark({"kind": "dest", "dest": "dest", "whole": "complete", "files": expected})


def repair_and_reindex(area: Path, recorder: Recorder, context: Any) -> None:
    """fsck --repair sets aside a run whose manifest is gone, removes an old temporary file
    and a stale marker; reindex writes a new index: none of it may lose a sound run."""
    store, font, ids = context
    store = aoe.Store(store.root)
    acknowledge_setup(store, font, recorder)
    fsck(store, repair=True)
    store.reindex()


def with_leftovers(area: Path) -> tuple[aoe.Store, str, list[str]]:
    store, font, ids = a_store(area, runs=2)
    dangling = store.create_font("dangling")
    run_id = store.save_model(dangling, weights(9))
    manifest = store.backend.path(object_key(store.get_run_info(dangling, run_id).manifest))
    manifest.unlink()
    old = store.root / ".objects" / ".tmp-0123456789abcdef-leftover"
    old.write_bytes(b"x")
    os.utime(old, (0, 0))
    marker = store.root / ".inflight" / "0123456789abcdef"
    marker.parent.mkdir(exist_ok=True)
    marker.write_text('{"pid": 999999999, "host": "' + platform.node() + '", "started_at": "2026-01-01T00:00:00Z"}')
    store.close()
    return store, font, ids


WORKLOADS: dict[str, tuple[Callable[[Path], Any], Callable[[Path, Recorder, Any], None]]] = {
    "save into a new store": (lambda area: None, save_new_store),
    "save into a store in use": (a_store, save_in_use),
    "background save and start_run": (a_store, background_and_start_run),
    "amend, tag, describe": (lambda area: a_store(area, runs=2), amend_tag_describe),
    "rm and restore": (lambda area: a_store(area, runs=2), delete_and_restore),
    "rm --font and restore": (lambda area: a_store(area, runs=2), delete_and_restore_font),
    "gc after rm": (deleted_run, gc_after_delete),
    "gc in two phases (object storage)": (deleted_run, gc_in_two_phases),
    "gc racing a save": (deleted_run, gc_racing_a_save),
    "DCP: two ranks, then the coordinator": (a_store, two_ranks_then_the_coordinator),
    "pull into a local store": (a_source, pull_into_a_local_store),
    "legacy import": (a_legacy_folder, legacy_import),
    "export into DEST": (a_store, export_a_run),
    "fsck --repair and reindex": (with_leftovers, repair_and_reindex),
    "listing snapshots (object storage)": (lambda area: a_store(area, runs=2), share_listings),
    "alias moves": (an_aliased_store, alias_moves),
    "forget, then a policy after a save": (an_aliased_store, forget_and_a_policy),
    "fork": (an_aliased_store, fork_a_font),
}


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(WORKLOADS))
def test_no_crash_state_loses_an_acknowledged_run(tmp_path: Path, name: str) -> None:
    setup, work = WORKLOADS[name]
    workload = record(tmp_path, name.replace(" ", "-"), setup, work)
    rng = random.Random(f"{SEED} {name}")
    counts, problems = check_workload(workload, max(14, STATES // len(WORKLOADS)), rng, tmp_path)
    print(f"{name}: {len(workload.model.events)} events, crash states checked: {counts['pessimistic']} "
          f"pessimistic, {counts['ext4']} ext4")
    assert not problems, "\n".join(problems[:20]) + f"\n({len(problems)} problems in {sum(counts.values())} states)"


@pytest.mark.slow
@pytest.mark.parametrize("fsync", ["fsync_dir", "fsync_file"])
def test_the_model_finds_what_a_missing_fsync_loses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                    fsync: str) -> None:
    """The simulator has teeth: with aoe's folder fsyncs (or its batch's file fsyncs) made
    to do nothing, crash states lose runs that saves acknowledged."""
    import aoe.backends.files
    import aoe.backends.local

    for module in (aoe.backends.files, aoe.backends.local):
        if hasattr(module, fsync):
            monkeypatch.setattr(module, fsync, lambda path: None)
    workload = record(tmp_path, "without", a_store, save_in_use)
    monkeypatch.undo()
    _, problems = check_workload(workload, 400, random.Random(SEED), tmp_path)
    assert any("run 1-fruity/" in p and ("cannot" in p or "not found" in p or "no run" in p or "differs" in p)
               for p in problems), problems[:5]


@pytest.mark.slow
@pytest.mark.parametrize("name", ["save into a new store", "gc after rm", "fsck --repair and reindex"])
def test_the_windows_the_simulator_found_stay_closed_at_every_cut(tmp_path: Path, name: str) -> None:
    """The states the simulator found losing or damaging data, each at every cut of the
    workload that had it: a font whose claim was durable before its runs/ folder (listed,
    its runs "lost", its name refused); a gc cut short after removing some objects of a
    deleted run its trash still offered to restore; a repair that dropped a ref before
    saying its run was purged."""
    setup, work = WORKLOADS[name]
    workload = record(tmp_path, name.replace(" ", "-"), setup, work)
    counts, problems = check_workload(workload, 7 * len(workload.model.cuts()), random.Random(SEED), tmp_path)
    assert sum(counts.values()) >= 6 * len(workload.model.cuts())
    assert not problems, "\n".join(problems[:20])
