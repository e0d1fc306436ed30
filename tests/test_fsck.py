"""fsck: every kind of damage is found, named with what it affects, and repaired when asked."""

from __future__ import annotations

import os
import time
from pathlib import Path

import msgpack
import pytest
import torch
from conftest import TinyFont

import aoe
from aoe.codec import encode, hash_bytes
from aoe.fsck import INFO, WARNING, fsck
from aoe.manifests import FORMAT_VERSION


def object_path(store: aoe.Store, digest: str) -> Path:
    return store.root / ".objects" / digest[:2] / digest


def kinds(report) -> list[tuple[str, str]]:
    return sorted((f.severity, f.kind) for f in report.findings)


@pytest.fixture
def saved(store: aoe.Store, font: str, model: TinyFont, run_files) -> tuple[aoe.Store, str, str]:
    run_id = store.save_model(font, model, **run_files)
    return store, font, run_id


def test_a_healthy_store_is_clean(saved) -> None:
    store, font, run_id = saved
    report = fsck(store, read_data=True)
    assert report.clean and report.findings == []
    assert (report.fonts, report.runs) == (1, 1)
    assert report.objects == report.objects_read >= 3 and report.bytes_read > 0  # packs, manifest


def test_a_flipped_byte_is_found_only_by_read_data_and_named_with_its_run(saved) -> None:
    store, font, run_id = saved
    digest = store.open_run(font).manifest.glyphs["B"].chunks[0]
    path = object_path(store, digest)
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))
    assert fsck(store).clean  # the structural pass does not read blobs
    report = fsck(store, read_data=True)
    [finding] = report.errors
    assert (finding.kind, finding.object, finding.runs) == ("corrupt-object", digest, (f"{font}/{run_id}",))
    assert "--repair" in finding.message


def test_missing_objects_name_every_run_that_needs_them(saved, model) -> None:
    store, font, run_id = saved
    second = store.save_model(font, model)  # shares every weight blob
    digest = store.open_run(font).manifest.weights.items["norm.weight"].blob.chunks[0]
    object_path(store, digest).unlink()
    [finding] = fsck(store).errors
    assert finding.kind == "missing-object" and finding.object == digest
    assert finding.runs == tuple(sorted([f"{font}/{run_id}", f"{font}/{second}"]))


def test_a_dangling_ref_is_reported_and_dropped_on_repair(saved) -> None:
    store, font, run_id = saved
    manifest = store.get_run_info(font).manifest
    object_path(store, manifest).unlink()
    report = fsck(store)
    assert ("error", "dangling-ref") in kinds(report)
    dangling = next(f for f in report.errors if f.kind == "dangling-ref")
    assert dangling.ref == f"{font}/runs/{run_id}" and dangling.object == manifest
    repaired = fsck(store, repair=True)
    assert any("dropped ref" in line for line in repaired.repaired)
    assert store.refs.runs(font) == [] and store.trashed(font)[0].purged_at
    assert ("error", "dangling-ref") not in kinds(fsck(store))


def test_malformed_refs_manifests_and_versions(saved, model) -> None:
    store, font, run_id = saved
    bad_ref = store.save_model(font, model)
    (store.root / font / "runs" / bad_ref).write_text("not a digest\n")
    newer = store.save_model(font, model)
    fields = msgpack.unpackb(store.read_object(store.get_run_info(font, newer).manifest), ext_hook=msgpack.ExtType)
    fields["version"] = FORMAT_VERSION + 1
    forged = msgpack.packb(fields)
    digest = hash_bytes(forged)
    store.backend.write(f".objects/{digest[:2]}/{digest}", encode(forged), exclusive=True)
    (store.root / font / "runs" / newer).write_text(digest + "\n")
    junk = store.save_model(font, model)
    garbage = b"\x93not a manifest"
    store.backend.write(f".objects/{hash_bytes(garbage)[:2]}/{hash_bytes(garbage)}", encode(garbage), exclusive=True)
    (store.root / font / "runs" / junk).write_text(hash_bytes(garbage) + "\n")
    (store.root / font / "runs" / "notes.txt").write_text("mine")

    report = fsck(store)
    found = {f.kind: f for f in report.findings if f.severity != INFO}
    assert set(found) == {"malformed-ref", "unknown-version", "malformed-manifest", "unknown-file"}
    assert found["malformed-ref"].runs == (f"{font}/{bad_ref}",)
    assert f"version {FORMAT_VERSION + 1} needs a newer aoe" in found["unknown-version"].message
    assert found["malformed-manifest"].runs == (f"{font}/{junk}",)
    assert found["unknown-file"].severity == WARNING


def test_a_manifest_copied_under_another_run_id(saved, model) -> None:
    store, font, run_id = saved
    other = store.save_model(font, model)
    (store.root / font / "runs" / other).write_text(store.get_run_info(font, run_id).manifest + "\n")
    [finding] = fsck(store).errors
    assert finding.kind == "mismatched-manifest" and finding.ref == f"{font}/runs/{other}"


def test_incomplete_runs_are_warnings_and_orphans_and_leftovers_information(store, font, model) -> None:
    run_id = store.save_model(font, model, feedback={"loss": 1})
    store.objects.put(b"nobody needs me")
    temp = store.root / ".objects" / f"{aoe.layout.TEMP_PREFIX}abc-dead"
    temp.write_bytes(b"half")
    old = time.time() - 7200
    os.utime(temp, (old, old))
    store.backend.write(".inflight/deadbeef", [b'{"pid": 999999999, "host": "%s", "started_at": "x"}'
                                               % os.uname().nodename.encode()], exclusive=True)
    report = fsck(store)
    assert report.clean
    assert kinds(report) == [(INFO, "orphan-object"), (INFO, "stale-save-marker"), (INFO, "temp-file"),
                             (WARNING, "incomplete-run")]
    incomplete = next(f for f in report.findings if f.kind == "incomplete-run")
    assert "sample" in incomplete.message and f"aoe store amend {font} {run_id}" in incomplete.message
    repaired = fsck(store, repair=True)
    assert len(repaired.repaired) == 2
    assert kinds(fsck(store)) == [(INFO, "orphan-object"), (WARNING, "incomplete-run")]


def test_young_temp_files_are_left_alone_by_repair(store, font) -> None:
    temp = store.root / ".fonts" / f"{aoe.layout.TEMP_PREFIX}young-2"
    temp.write_bytes(b"in progress")
    report = fsck(store, repair=True)
    assert temp.exists() and "may be a write in progress" in report.findings[0].message


def test_repair_moves_a_corrupt_object_aside_and_a_new_save_heals_the_run(saved, model) -> None:
    store, font, run_id = saved
    digest = store.open_run(font).manifest.weights.items["norm.bias"].blob.chunks[0]
    path = object_path(store, digest)
    path.write_bytes(path.read_bytes()[:-1])
    report = fsck(store, read_data=True, repair=True)
    assert any(digest in line for line in report.repaired)
    assert (store.root / ".damaged" / digest).exists() and not path.exists()
    store.save_model(font, model)  # the same weights, so the same object
    assert fsck(store, read_data=True).clean
    assert torch.equal(store.load_model(font, run_id).weights["norm.bias"], model.state_dict()["norm.bias"])


def test_read_data_subsets_cover_every_object_exactly_once(saved) -> None:
    store, _, _ = saved
    total = fsck(store).objects
    parts = [fsck(store, read_data=True, subset=(n, 3)).objects_read for n in (1, 2, 3)]
    assert sum(parts) == total and all(parts)


def test_a_missing_runs_folder_and_a_broken_claim(saved) -> None:
    store, font, _ = saved
    import shutil

    shutil.rmtree(store.root / font / "runs")
    (store.root / ".fonts" / "9").write_text("Not-Valid\n")
    found = {f.kind for f in fsck(store).errors}
    assert found == {"missing-runs-folder", "malformed-claim"}


def test_stray_files_in_objects(saved) -> None:
    store, _, _ = saved
    (store.root / ".objects" / "ab" ).mkdir(exist_ok=True)
    (store.root / ".objects" / "ab" / "README").write_text("?")
    assert [(f.severity, f.kind) for f in fsck(store).findings] == [(WARNING, "stray-file")]


def test_deleted_runs_are_not_orphans_until_gc(saved) -> None:
    store, font, run_id = saved
    store.delete_run(font, run_id)
    assert not [f for f in fsck(store).findings if f.kind == "orphan-object"]


def test_progress_counts_every_object(saved) -> None:
    store, _, _ = saved
    ticks: list[int] = []
    report = fsck(store, read_data=True, progress=ticks.append)
    assert sum(ticks) == report.objects


def test_a_deleted_run_whose_manifest_is_gone_is_reported_as_unrestorable(store, font, model) -> None:
    from aoe.layout import object_key

    run_id = store.save_model(font, model)
    record = store.delete_run(font, run_id)
    store.backend.path(object_key(record.manifest)).unlink()
    [finding] = [f for f in fsck(store).findings if f.kind == "unrestorable-deleted-run"]
    assert finding.severity == "warning" and finding.object == record.manifest
    assert finding.runs == (f"{font}/{run_id}",)
