"""Listing snapshots: a machine that has never listed a font on object storage reads one
snapshot instead of every ref and manifest, and still never believes it blindly."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import pytest
import torch

import aoe
from aoe import catalog, listings
from aoe.errors import FormatError
from aoe.fsck import fsck
from aoe.layout import LISTINGS, listing_at, listing_key

pytestmark = [pytest.mark.s3]
RUNS = 12


@pytest.fixture(autouse=True)
def _small_fonts_use_snapshots(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(catalog, "LISTING_MIN", 5)


@pytest.fixture
def listed(s3_store: aoe.Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[aoe.Store, str, list]:
    """A font of RUNS runs, listed once by its first machine (which writes a snapshot)."""
    font = s3_store.create_font("fruity")
    for i in range(RUNS):
        s3_store.save_model(font, {"w": torch.full((4,), float(i))}, params={"i": i}, tags=["t"] if i % 2 else [],
                            feedback={"final_loss": 1 / (i + 1)})
    infos = s3_store.list_runs(font)
    assert len(list(s3_store.backend.list(LISTINGS))) == 1
    return s3_store, font, infos


def new_machine(store: aoe.Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str) -> tuple[aoe.Store, list[str]]:
    """A Store as another machine opens it (its own cache and catalog), counting what it reads."""
    monkeypatch.setenv("AOE_CACHE_DIR", str(tmp_path / name))
    other = aoe.Store(store.root)
    reads: list[str] = []
    server = other.backend.inner
    real_read = server.read
    monkeypatch.setattr(server, "read", lambda key, **kw: reads.append(key) or real_read(key, **kw))
    return other, reads


def test_a_new_machine_lists_from_the_snapshot_without_reading_a_ref(listed, tmp_path, monkeypatch) -> None:
    store, font, infos = listed
    other, reads = new_machine(store, tmp_path, monkeypatch, "second")
    assert other.list_runs(font) == infos
    assert other.list_runs(font, where=["metrics.final_loss<0.2"], sort="-metrics.final_loss") == \
        store.list_runs(font, where=["metrics.final_loss<0.2"], sort="-metrics.final_loss")
    assert [k for k in reads if "/runs/" in k and not k.endswith(".changes")] == []
    assert [k for k in reads if k.startswith(".objects/")] == []
    assert len([k for k in reads if k.startswith(LISTINGS)]) == 1


def test_refs_changed_since_the_snapshot_are_read_from_the_refs(listed, tmp_path, monkeypatch) -> None:
    store, font, infos = listed
    store.tag_run(font, infos[0].run_id, add=["amended"])
    store.delete_run(font, infos[1].run_id)
    newer = store.save_model(font, {"w": torch.ones(4)})
    other, reads = new_machine(store, tmp_path, monkeypatch, "second")
    listed_now = other.list_runs(font)
    assert [i.run_id for i in listed_now] == [infos[0].run_id, *[i.run_id for i in infos[2:]], newer]
    assert listed_now[0].tags == ("amended",)
    read_refs = sorted(k.rsplit("/", 1)[1] for k in reads if "/runs/" in k and not k.endswith(".changes"))
    assert read_refs == sorted([infos[0].run_id, newer])


def test_a_damaged_or_lying_snapshot_is_passed_over_and_fsck_removes_it(listed, tmp_path, monkeypatch) -> None:
    store, font, infos = listed
    [key] = store.backend.list(LISTINGS)
    data = bytearray(store.backend.read(key))
    data[-1] ^= 1
    store.backend.write(key, [bytes(data)], exclusive=False)
    other, reads = new_machine(store, tmp_path, monkeypatch, "second")
    assert other.list_runs(font) == infos  # every ref read instead
    assert len([k for k in reads if "/runs/" in k and not k.endswith(".changes")]) == RUNS
    report = fsck(store, repair=True)
    assert [(f.kind, f.ref) for f in report.findings if f.ref and f.ref.startswith(LISTINGS)] == [("bad-listing", key)]
    kept = list(store.backend.list(LISTINGS))
    assert key not in kept and len(kept) == 2  # the second machine's own snapshot, and fsck's of what it read
    assert len({k.rsplit("-", 1)[1] for k in kept}) == 1  # the same rows: the same content


def test_a_snapshot_whose_row_names_another_manifest_is_reported(listed, tmp_path, monkeypatch) -> None:
    store, font, infos = listed
    rows = listings.newest(store.backend, font)
    first, second = infos[0].run_id, infos[1].run_id
    token, info = rows[first]
    rows[first] = (token, replace(rows[second][1], run_id=first, name="lie"))
    listings.write(store.backend, font, [(t, i) for t, i in rows.values()])
    report = fsck(store, repair=True)
    assert "bad-listing" in [f.kind for f in report.findings]
    assert all(r.name != "lie" for r in new_machine(store, tmp_path, monkeypatch, "third")[0].list_runs(font))


def test_rows_that_break_a_rule_make_the_whole_snapshot_unreadable(s3_store: aoe.Store) -> None:
    font = s3_store.create_font("fruity")
    run = s3_store.save_model(font, {"w": torch.ones(1)})
    [info] = s3_store.list_runs(font)
    bad = replace(info, status="Not a status!")
    key = listings.write(s3_store.backend, font, [("token", bad)])
    with pytest.raises(FormatError, match="status"):
        listings.read(s3_store.backend, key, font)
    assert listings.newest(s3_store.backend, font) == {}
    assert run


def test_snapshot_names_are_checked(s3_store: aoe.Store) -> None:
    digest = "ab" * 32
    key = listing_key("1-fruity", aoe.names.utc_now(), digest)
    assert listing_at(key)[1] == digest
    assert listing_at(key + "x") is None and listing_at(f"{LISTINGS}/1-fruity/x/{key.rsplit('/', 1)[1]}") is None


def test_a_read_only_machine_writes_no_snapshot_and_rebuild_ignores_them(s3_store: aoe.Store, tmp_path, monkeypatch) -> None:
    font = s3_store.create_font("fruity")
    for i in range(6):
        s3_store.save_model(font, {"w": torch.full((2,), float(i))})
    reader = aoe.Store(s3_store.root, read_only=True)
    assert len(reader.list_runs(font)) == 6
    assert list(s3_store.backend.list(LISTINGS)) == []
    s3_store.list_runs(font)  # a writable machine shares what it read
    assert len(list(s3_store.backend.list(LISTINGS))) == 1
    other, reads = new_machine(s3_store, tmp_path, monkeypatch, "second")
    other.reindex()
    assert len([k for k in reads if "/runs/" in k and not k.endswith(".changes")]) == 6


def test_a_warm_listing_asks_only_the_change_note_until_a_ref_changes(listed, tmp_path, monkeypatch) -> None:
    store, font, infos = listed
    other, reads = new_machine(store, tmp_path, monkeypatch, "second")
    other.list_runs(font)
    listings_sent: list[str] = []
    real_list = other.backend.inner.list_versions
    monkeypatch.setattr(other.backend.inner, "list_versions",
                        lambda prefix, *a: listings_sent.append(prefix) or real_list(prefix, *a))
    reads.clear()
    assert other.list_runs(font) == infos
    assert listings_sent == [] and reads == [".fonts/1", f"{font}/runs/.changes"]  # the font, the note
    newer = store.save_model(font, {"w": torch.ones(4)})  # another machine saves: the note is written after
    assert [i.run_id for i in other.list_runs(font)][-1] == newer
    assert listings_sent == [f"{font}/runs"]


def test_a_ref_written_without_the_note_is_seen_at_the_next_full_listing(listed, tmp_path, monkeypatch) -> None:
    """Writers older than aoe 0.5 write no note: a reader lists the refs whole at least
    once a minute anyway."""
    store, font, infos = listed
    other, _ = new_machine(store, tmp_path, monkeypatch, "second")
    other.list_runs(font)
    copied = infos[0].run_id.replace("-0000", "-0001")
    store.backend.write(f"{font}/runs/{copied}", [f"{infos[0].manifest}\n".encode()], exclusive=True)
    assert len(other.list_runs(font)) == RUNS  # within the minute: the note said nothing changed
    monkeypatch.setattr(catalog, "RELIST_NS", 0)
    assert len(other.list_runs(font)) == RUNS + 1


def forge(store: aoe.Store, font: str, moment, **lies) -> str:
    """A snapshot as a writer with the bucket's keys could write it: every row's ref token
    and manifest right, its other fields (``lies``) not; named at ``moment``."""
    import msgpack

    from aoe.codec import encode, hash_bytes

    rows = [[run_id, token, *listings.row_fields(replace(info, **lies))]
            for run_id, (token, info) in listings.newest(store.backend, font).items()]
    content = msgpack.packb({"format": listings.FORMAT, "version": listings.VERSION, "font_id": font, "runs": rows},
                            use_bin_type=True)
    key = listing_key(font, moment, hash_bytes(content))
    store.backend.write(key, encode(content), exclusive=True)
    return key


def test_fsck_on_a_machine_that_believed_a_lie_leaves_a_snapshot_of_what_the_manifests_say(
        listed, tmp_path, monkeypatch) -> None:
    store, font, infos = listed
    forge(store, font, aoe.names.utc_now(), name="forged")
    believer, _ = new_machine(store, tmp_path, monkeypatch, "second")
    assert {info.name for info in believer.list_runs(font)} == {"forged"}
    assert not fsck(believer, repair=True).clean  # the lie named, its snapshot removed
    truth = {run_id: info.to_dict() for run_id, info in ((i.run_id, i) for i in infos)}
    assert {run_id: info.to_dict() for run_id, (_, info) in listings.newest(store.backend, font).items()} == truth
    fresh, _ = new_machine(store, tmp_path, monkeypatch, "third")
    assert fresh.list_runs(font) == infos


def test_a_snapshot_named_in_the_far_future_is_never_used_and_starves_no_honest_one(
        listed, tmp_path, monkeypatch) -> None:
    from datetime import timedelta

    store, font, infos = listed
    forged = forge(store, font, aoe.names.utc_now() + timedelta(days=3650), name="forged", metrics={"final_loss": 0})
    other, reads = new_machine(store, tmp_path, monkeypatch, "second")
    assert other.list_runs(font) == infos  # not the forged one: the honest snapshot, then the refs
    assert not [k for k in reads if k == forged]
    for _ in range(2):  # writers keep the newest two honest snapshots and remove the forged one
        listings.write(store.backend, font, [(t, info) for t, info in listings.newest(store.backend, font).values()])
    kept = list(store.backend.list(LISTINGS))
    assert forged not in kept and len(kept) == 2


def test_fsck_names_a_lying_snapshot_and_reindex_removes_it(listed, tmp_path, monkeypatch) -> None:
    """A snapshot named now whose rows name the right refs and manifests but say other
    names, tags and metrics: a new machine shows them (that is what a snapshot is for),
    fsck names it as an error, and a reindex anywhere removes it for every machine."""
    from datetime import timedelta

    store, font, infos = listed
    lying = forge(store, font, aoe.names.utc_now(), name="forged", tags=("forged",), metrics={"final_loss": 0})
    future = forge(store, font, aoe.names.utc_now() + timedelta(hours=1), name="later")
    believer, _ = new_machine(store, tmp_path, monkeypatch, "second")
    assert {info.name for info in believer.list_runs(font)} == {"forged"}
    report = fsck(store)
    found = {(f.kind, f.severity, f.ref) for f in report.findings if f.ref and f.ref.startswith(LISTINGS)}
    assert found == {("lying-listing", "error", lying), ("bad-listing", "warning", future)} and not report.clean
    assert future not in set(store.backend.list(LISTINGS))  # fsck writes a snapshot, as writers do: they remove it
    assert f"removed listing snapshot {lying}" in fsck(store, repair=True).repaired
    lying = forge(store, font, aoe.names.utc_now(), name="forged again")
    believer.reindex()
    assert lying not in set(store.backend.list(LISTINGS))
    fresh, _ = new_machine(store, tmp_path, monkeypatch, "third")
    assert fresh.list_runs(font) == infos and fsck(store).clean
