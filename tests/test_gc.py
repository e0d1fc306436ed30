"""gc: sweeps what no run needs, keeps what runs, history and saves in progress need."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_concurrency import WRITER, check_every_object_is_whole, check_every_run
from writer import expected_weights

import aoe
from aoe.errors import GcRunningError, StoreError
from aoe.fsck import fsck
from aoe.gc import collect_garbage
from aoe.layout import object_key


def age(store: aoe.Store, seconds: float = 7200) -> None:
    """Make every object look old, as if written hours ago."""
    past = time.time() - seconds
    for key in store.backend.list(".objects"):
        os.utime(store.backend.path(key), (past, past))


def object_count(store: aoe.Store) -> int:
    return sum(1 for _ in store.backend.list(".objects"))


def test_gc_sweeps_only_unreachable_objects_older_than_the_grace(store: aoe.Store, font: str) -> None:
    kept = store.save_model(font, {"w": torch.ones(10)})
    store.objects.put(b"old garbage")
    age(store)
    store.objects.put(b"young garbage")
    report = collect_garbage(store, grace=3600)
    assert (report.swept, report.kept_young) == (1, 1)
    assert report.freed_bytes > 0 and not store.objects.has(aoe.codec.hash_bytes(b"old garbage"))
    assert store.objects.has(aoe.codec.hash_bytes(b"young garbage"))
    assert torch.equal(store.load_model(font, kept).weights["w"], torch.ones(10))
    assert collect_garbage(store, grace=0).swept == 1


def test_a_dry_run_removes_nothing(store: aoe.Store, font: str) -> None:
    store.objects.put(b"garbage")
    age(store)
    before = object_count(store)
    report = collect_garbage(store, grace=0, dry_run=True)
    assert report.dry_run and report.swept == 1 and object_count(store) == before


def test_only_one_gc_at_a_time(store: aoe.Store, font: str) -> None:
    with store.backend.lock("gc", wait=False), pytest.raises(GcRunningError, match="another gc is running"):
        collect_garbage(store)
    collect_garbage(store)  # released


def test_gc_stops_before_removing_anything_when_a_run_cannot_be_read(store: aoe.Store, font: str) -> None:
    run_id = store.save_model(font, {"w": torch.ones(3)})
    store.objects.put(b"garbage")
    age(store)
    manifest = store.get_run_info(font, run_id).manifest
    store.backend.path(object_key(manifest)).write_bytes(b"AOE1\x00garbage")
    before = object_count(store)
    with pytest.raises(StoreError, match="gc stopped before removing anything"):
        collect_garbage(store, grace=0)
    assert object_count(store) == before


def test_a_run_deleted_while_gc_lists_the_refs_holds_nothing(store: aoe.Store, font: str,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    """A ref removed between gc's listing and its reading (forget racing gc) is a deleted
    run, not a damaged one: gc goes on, and sweeps what only that run needed."""
    kept = store.save_model(font, {"w": torch.ones(3)})
    gone = store.save_model(font, {"w": torch.zeros(3)})
    listed = store.refs.runs(font)
    store.delete_run(font, gone)
    monkeypatch.setattr(store.refs, "runs", lambda font_id: listed)  # the listing from before the delete
    age(store)
    assert collect_garbage(store, grace=0).swept >= 2  # the deleted run's manifest and tensor
    assert torch.equal(store.load_model(font, kept).weights["w"], torch.ones(3))


def test_objects_of_a_save_in_progress_survive_a_zero_grace_gc(store: aoe.Store, font: str) -> None:
    with store.transaction() as transaction:
        marker = transaction.marker
        digest = store.objects.put(b"written by a save that has not published yet")
        past = time.time() - 600
        os.utime(store.backend.path(marker), (past - 10, past - 10))  # the save began 10 min ago
        os.utime(store.backend.path(object_key(digest)), (past, past))
        assert collect_garbage(store, grace=0).swept == 0
        assert store.objects.has(digest)
    assert collect_garbage(store, grace=0).swept == 1  # once the save is over, it is garbage


def test_every_publication_is_announced_even_with_nothing_saved_before(store: aoe.Store, font: str, monkeypatch) -> None:
    """A run recorded by start_run without run.save() still writes its manifest under a
    save marker, so a gc cannot sweep the manifest before the ref exists."""
    real_publish = store.refs.publish_run
    seen: list[list[str]] = []

    def publish(*args, **kwargs):  # type: ignore[no-untyped-def]
        seen.append(list(store.backend.list(".inflight")))
        return real_publish(*args, **kwargs)

    monkeypatch.setattr(store.refs, "publish_run", publish)
    with store.start_run(font):
        pass
    store.save_model(font, {"w": torch.ones(1)})
    assert [len(markers) for markers in seen] == [1, 1]  # one marker each, never nested twice
    assert list(store.backend.list(".inflight")) == []


def test_markers_of_dead_saves_protect_nothing(store: aoe.Store, font: str) -> None:
    store.objects.put(b"left by a crashed save")
    age(store)
    store.backend.write(".inflight/dead", [b'{"pid": 999999999, "host": "%s"}' % os.uname().nodename.encode()],
                        exclusive=True)
    assert collect_garbage(store, grace=0).swept == 1


def test_negative_grace_is_refused(store: aoe.Store, font: str) -> None:
    with pytest.raises(StoreError, match="0 or more"):
        collect_garbage(store, grace=-1)


def test_gc_removes_old_leftover_temp_files(store: aoe.Store, font: str) -> None:
    temp = store.root / ".fonts" / ".tmp-crashed-x"
    temp.write_bytes(b"partial")
    old = time.time() - 7200
    os.utime(temp, (old, old))
    assert collect_garbage(store, grace=0).temp_files_removed == 1 and not temp.exists()


def test_saves_running_during_zero_grace_gcs_never_lose_an_object(tmp_path: Path) -> None:
    """Writers in other processes save runs whose objects already exist unreachable and
    old (from deleted runs), so they dedup against exactly what gc wants to sweep, while
    gc runs over and over with no grace period. Garbage nobody touches must go."""
    store = aoe.Store(tmp_path / "networks")
    font = store.create_font("fruity")
    seeds = [[100 * w + i for i in range(6)] for w in range(3)]
    for seed in (s for group in seeds for s in group):  # the same content, saved and deleted before
        run_id = store.save_model(font, expected_weights(seed, 0.5), [float(seed)], feedback={"seed": seed},
                                  params={"seed": seed, "mb": 0.5})
        store.delete_run(font, run_id)
    untouched = [store.objects.put(os.urandom(1000)) for _ in range(20)]
    age(store)

    writers = [subprocess.Popen([sys.executable, WRITER, str(store.root), font, str(group[0]), str(len(group)),
                                 "--mb", "0.5"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for group in seeds]
    for writer in writers:  # every writer is in the middle of its saves before gc starts
        assert writer.stdout.readline(), writer.stderr.read()
    sweeps = 0
    while True:  # at least one gc, even if the writers are already done on a slow machine
        sweeps += collect_garbage(store, grace=0).swept
        if all(w.poll() is not None for w in writers):
            break
    outputs = [w.communicate() for w in writers]
    assert all(w.returncode == 0 for w in writers), [err for _, err in outputs]
    collect_garbage(store, grace=0)

    assert check_every_run(store) == 18
    check_every_object_is_whole(store)
    assert not any(store.objects.has(d) for d in untouched)
    assert sweeps > 0
    assert fsck(store, read_data=True).clean
