"""Listing segments: trainers that never list still leave a font that a new machine lists
from a few objects, and nothing a segment says is believed unless the ref agrees."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import msgpack
import pytest
import torch
from test_listings import new_machine

import aoe
from aoe import catalog, segments
from aoe.codec import encode, hash_bytes
from aoe.fsck import fsck
from aoe.gc import collect_garbage
from aoe.layout import LISTINGS, listing_at, segment_at, segment_key, segments_folder
from aoe.names import utc_now
from aoe.transfer import transfer

pytestmark = [pytest.mark.s3]


@pytest.fixture(autouse=True)
def _small_segments(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "LISTING_MIN", 5)
    monkeypatch.setattr(segments, "FLUSH_RUNS", 4)
    monkeypatch.setattr(segments, "FAN_IN", 3)


def save(store: aoe.Store, font: str, i: int) -> str:
    return store.save_model(font, {"w": torch.full((4,), float(i))}, params={"i": i}, tags=["t"] if i % 2 else [],
                            feedback={"final_loss": 1 / (i + 1)}, name=f"run {i}")


def refs_read(reads: list[str]) -> list[str]:
    return sorted(k.rsplit("/", 1)[1] for k in reads if "/runs/" in k and not k.endswith(".changes"))


def segment_keys(store: aoe.Store, font: str) -> list[str]:
    return [k for k in store.backend.list(segments_folder(font)) if segment_at(k)]


def test_runs_saved_by_writers_that_never_list_are_listed_from_their_segments(
        s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    first, second = aoe.Store(s3_url), aoe.Store(s3_url)
    font = first.create_font("fruity")
    for i in range(30):  # two trainers, taking turns
        save(first if i % 2 else second, font, i)
    first.close()  # each writes what it kept back: 30 runs, none of them left to read
    second.close()
    assert not [k for k in first.backend.list(LISTINGS) if listing_at(k)]  # nobody listed: no snapshot
    levels = [segment_at(k)[0] for k in segment_keys(first, font)]  # type: ignore[index]
    assert 1 in levels and all(levels.count(level) < segments.FAN_IN for level in set(levels))  # merged as they grew
    other, reads = new_machine(first, tmp_path, monkeypatch, "new")
    listed = other.list_runs(font)
    assert [info.name for info in listed] == [f"run {i}" for i in range(30)]
    assert refs_read(reads) == [] and not [k for k in reads if k.startswith(".objects/")]
    assert len([k for k in reads if k.startswith(LISTINGS)]) == len(levels)
    monkeypatch.setenv("AOE_CACHE_DIR", str(tmp_path / "rebuilt"))
    fresh = aoe.Store(s3_url, read_only=True)
    fresh.catalog.rebuild()  # every ref and manifest: what the segments must agree with
    assert [i.to_dict() for i in listed] == [i.to_dict() for i in fresh.list_runs(font)]


def test_a_row_is_taken_only_for_a_ref_that_names_its_manifest(
        s3_store: aoe.Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    font = s3_store.create_font("fruity")
    runs = [save(s3_store, font, i) for i in range(8)]  # two segments
    writer = aoe.Store(s3_store.root)  # another machine amends and deletes, and keeps its rows back
    writer.tag_run(font, runs[0], add=["amended"])
    writer.delete_run(font, runs[1])
    writer.pending_rows = None
    other, reads = new_machine(s3_store, tmp_path, monkeypatch, "new")
    listed = {info.run_id: info for info in other.list_runs(font)}
    assert sorted(listed) == sorted([runs[0], *runs[2:]])
    assert listed[runs[0]].tags == ("amended",)  # the segment's row names the manifest before the amend
    assert refs_read(reads) == [runs[0]]


def test_a_forged_or_damaged_segment_is_never_believed_and_fsck_removes_it(
        s3_store: aoe.Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    font = s3_store.create_font("fruity")
    runs = [save(s3_store, font, i) for i in range(8)]
    truth = {info.run_id: info for info in s3_store.list_runs(font)}
    rows = segments.rows_of(truth.values())
    rows[0][1 + 5] = "a name its manifest does not hold"  # a lie about a real run, its manifest named rightly
    rows.append([runs[0].rsplit("-", 1)[0] + "-0999", *rows[1][1:]])  # a run that has no ref (sequence 999)
    lying = segments.write(s3_store.backend, font, rows)
    content = b"not msgpack"
    damaged = segment_key(font, 0, utc_now(), hash_bytes(content))
    s3_store.backend.write(damaged, encode(content), exclusive=True)
    other, _ = new_machine(s3_store, tmp_path, monkeypatch, "new")
    listed = other.list_runs(font)
    assert [i.run_id for i in listed] == runs  # the forged run is not listed: it has no ref
    # A reader takes a row for a ref that names its manifest: the lie shows, until fsck finds it.
    report = fsck(s3_store)
    kinds = {(f.kind, f.ref) for f in report.findings}
    assert ("lying-listing", lying) in kinds and ("bad-listing", damaged) in kinds and not report.clean
    fsck(s3_store, repair=True)
    assert lying not in segment_keys(s3_store, font) and damaged not in segment_keys(s3_store, font)
    again, _ = new_machine(s3_store, tmp_path, monkeypatch, "again")
    assert [i.to_dict() for i in again.list_runs(font)] == [i.to_dict() for i in truth.values()]


def test_reindex_removes_every_segment_that_lies_or_breaks_a_rule(s3_store: aoe.Store) -> None:
    font = s3_store.create_font("fruity")
    for i in range(8):
        save(s3_store, font, i)
    honest = segment_keys(s3_store, font)
    rows = segments.rows_of(s3_store.list_runs(font))
    rows[0][1 + 7] = ["a tag it does not have"]
    lying = segments.write(s3_store.backend, font, rows[:1])
    broken = segments.write(s3_store.backend, font, [rows[1][:3]])
    truth = {info.run_id: info for info in s3_store.list_runs(font)}
    assert sorted(segments.remove_untrue(s3_store.backend, font, truth)) == sorted([lying, broken])
    assert sorted(segment_keys(s3_store, font)) == sorted(honest)
    segments.write(s3_store.backend, font, rows[:1])
    s3_store.reindex()  # its snapshot covers the honest segments; the lying one goes either way
    assert not segment_keys(s3_store, font)


def test_rows_breaking_a_rule_are_passed_over(s3_store: aoe.Store, tmp_path: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    font = s3_store.create_font("fruity")
    runs = [save(s3_store, font, i) for i in range(5)]
    s3_store.pending_rows = None
    truth = s3_store.list_runs(font)
    for key in segment_keys(s3_store, font):
        s3_store.backend.delete(key)
    rows = segments.rows_of(truth)
    rows[2][1 + 1] = "not a time"  # saved_at
    rows[3] = rows[3][:4]
    segments.write(s3_store.backend, font, rows)
    other, reads = new_machine(s3_store, tmp_path, monkeypatch, "new")
    assert [i.to_dict() for i in other.list_runs(font)] == [i.to_dict() for i in truth]
    assert refs_read(reads) == sorted(runs[2:4])


@pytest.mark.parametrize("upkeep", [lambda store: collect_garbage(store, grace=0), fsck], ids=["gc", "fsck"])
def test_a_snapshot_written_by_gc_or_fsck_removes_the_segments_it_covers(
        s3_store: aoe.Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, upkeep) -> None:
    font = s3_store.create_font("fruity")
    runs = [save(s3_store, font, i) for i in range(12)]
    s3_store.close()
    assert segment_keys(s3_store, font)
    upkeep(s3_store)
    assert [k for k in s3_store.backend.list(LISTINGS) if listing_at(k)] and not segment_keys(s3_store, font)
    other, reads = new_machine(s3_store, tmp_path, monkeypatch, "new")
    assert [i.run_id for i in other.list_runs(font)] == runs and refs_read(reads) == []


def test_a_push_to_object_storage_shares_its_rows(tmp_path: Path, s3_url: str,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    local = aoe.Store(tmp_path / "local")
    font = local.create_font("fruity")
    runs = [save(local, font, i) for i in range(40)]
    transfer(local, aoe.Store(s3_url))
    other, reads = new_machine(aoe.Store(s3_url), tmp_path, monkeypatch, "new")
    assert [i.run_id for i in other.list_runs(font)] == runs and refs_read(reads) == []
    assert [segment_at(k)[0] for k in segment_keys(other, font)] == [2]  # type: ignore[index]  # one of 40 rows


@pytest.mark.parametrize("how", ["exit", "kill"])
def test_a_writer_process_shares_its_rows_when_it_exits_and_a_killed_one_loses_nothing(
        s3_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, how: str) -> None:
    store = aoe.Store(s3_url)
    font = store.create_font("fruity")
    script = (f"import os, aoe, torch\nstore = aoe.Store({s3_url!r})\n"
              f"for i in range(6): store.save_model({font!r}, {{'w': torch.full((4,), float(i))}})\n"
              + ("os.kill(os.getpid(), 9)\n" if how == "kill" else ""))
    subprocess.run([sys.executable, "-c", script], check=how == "exit")
    other, reads = new_machine(store, tmp_path, monkeypatch, "new")
    assert len(other.list_runs(font)) == 6
    assert len(refs_read(reads)) == (6 if how == "kill" else 0)


def test_a_level_is_merged_by_one_writer_at_a_time(s3_store: aoe.Store) -> None:
    """Writers that find a level full at once would each write a merged copy of it (four
    trainers left 3.4 rows a run); the one holding the font's merge lease merges, the
    others leave it."""
    font = s3_store.create_font("fruity")
    backend = s3_store.backend
    for i in range(segments.FAN_IN):
        segments.write(backend, font, [[f"20261207T00000{i}.000000Z-0000", "x"]], level=0)
    full = segment_keys(s3_store, font)
    with backend.lock(f"merge-{font}", wait=True):  # another writer is merging
        segments.compact(backend, font, full)
        assert segment_keys(s3_store, font) == full
    segments.compact(backend, font, full)
    [merged] = segment_keys(s3_store, font)
    assert segment_at(merged)[0] == 1 and len(segments.read(backend, merged, font)) == segments.FAN_IN  # type: ignore[index]
    segments.compact(backend, font, full)  # a stale listing: the level is merged already, nothing more
    assert segment_keys(s3_store, font) == [merged]


def test_levels_and_merges() -> None:
    assert [segments.level_for(n) for n in (1, 4, 12, 13 * 8)] == [0, 0, 1, 2]  # FLUSH 4, FAN_IN 3 here
    row = ["20261207T000000.000000Z-000", "x"]
    assert segments.merged([[row, ["b"]], [list(row)], [["b"]]]) == [row, ["b"]]
    with pytest.raises(ValueError):
        segment_key("1-fruity", 10, utc_now(), hash_bytes(b""))
    content = msgpack.packb({"format": "aoe-listing", "runs": []})
    assert segment_at(segment_key("1-fruity", 0, utc_now(), hash_bytes(content))) is not None
    assert segment_at(".listings/1-fruity/x") is None
