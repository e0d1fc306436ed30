"""One bad run, file or value makes that run unreadable, never its font, the store or a
transfer: a name in runs/ that is no run, a change note that is not a file, a manifest
claiming gigabytes in kilobytes or a shape torch cannot make, a history cut short, a
source run a pull cannot copy whole."""

from __future__ import annotations

import os
from pathlib import Path

import msgpack
import pytest
import torch
from conftest import make_png, run_cli
from hostile import RUN_ID, a_blob, aoe_cli, assert_one_line_error, plant_fields, run_limited

import aoe
from aoe.codec import hash_bytes
from aoe.errors import FormatError
from aoe.fsck import fsck
from aoe.layout import object_key
from aoe.manifests import EXT_TENSOR


def test_a_pull_copies_the_good_runs_and_reports_a_malformed_one(store: aoe.Store, font: str, tmp_path: Path) -> None:
    good = store.save_model(font, {"w": torch.ones(2)})
    plant_fields(store, font, glyphs={"../../x": a_blob(store, make_png(1))})
    dest = aoe.Store(tmp_path / "copy")
    from aoe.transfer import transfer

    report = transfer(store, dest)
    assert [r.run_id for r in dest.list_runs(font)] == [good]
    assert len(report.unreadable) == 1 and RUN_ID in report.unreadable[0] and "not copied" in report.unreadable[0]
    assert report.conflicts == [] and not report.complete


@pytest.mark.parametrize("damage", ["missing", "corrupt"])
def test_a_source_run_whose_object_is_gone_is_skipped_never_the_whole_pull(
        store: aoe.Store, font: str, tmp_path: Path, damage: str, capsys: pytest.CaptureFixture[str]) -> None:
    """A run naming an object the source lacks (or holds damaged) is reported and left
    out; every sound run arrives, each time the pull runs, and the exit code says so."""
    sound = [store.save_model(font, {"w": torch.full((100_000,), float(i))}) for i in range(2)]
    bad = store.save_model(font, {"w": torch.full((100_000,), 7.0)})
    [chunk] = store.open_run(font, bad).manifest.weights["w"].blob.chunks
    path = store.backend.path(object_key(chunk))
    path.unlink() if damage == "missing" else path.write_bytes(path.read_bytes()[:-1] + b"\0")
    dest = tmp_path / "copy"
    for _ in range(2):  # again: the same, nothing lost, nothing half there
        code, out, err = run_cli(capsys, "store", "--root", str(dest), "pull", str(store.root))
        assert code == 6, err
        assert f"not transferred: {font}/{bad}: not copied, the source's object {chunk}" in err
        assert [r.run_id for r in aoe.Store(dest).list_runs(font)] == sound
    assert fsck(aoe.Store(dest), read_data=True).clean


# -- 8. one bad entry never blinds its font, or the store ------------------------------------


def test_a_name_shaped_like_a_run_id_but_no_real_time_is_not_a_run(store: aoe.Store, font: str,
                                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from aoe.web import Browser

    run_id = store.save_model(font, {"w": torch.ones(1)})
    (store.root / font / "runs" / "20261399T250000.000000Z-0000").write_text("0" * 64 + "\n")
    assert [i.run_id for i in aoe.Store(store.root).list_runs(font)] == [run_id]
    assert len(aoe.Store(store.root).search("")) == 1
    for args in (["ls"], ["ls", font], ["search", ""]):
        code, out, err = run_cli(capsys, "store", "--root", str(store.root), *args)
        assert code == 0 and "Traceback" not in err, (args, err)
    for page in ("/", f"/font/{font}"):
        assert Browser(aoe.Store(store.root, read_only=True)).respond(page)[0] == 200
    [finding] = [f for f in fsck(store).findings if f.kind == "unknown-file"]
    assert "20261399T250000.000000Z-0000" in finding.message


@pytest.mark.parametrize("kind", ["folder", "symlink", "fifo"])
def test_a_change_note_that_is_not_a_file_slows_listings_never_blinds_them(
        store: aoe.Store, font: str, kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    runs = [store.save_model(font, {"w": torch.ones(1)}) for _ in range(2)]
    store.amend_run(font, runs[0], name="amended")  # the note exists now
    note = store.root / font / "runs" / ".changes"
    note.unlink()
    if kind == "folder":
        note.mkdir()
    elif kind == "symlink":
        note.symlink_to(tmp_path / "elsewhere")
    else:
        os.mkfifo(note)
    code, out, err = run_cli(capsys, "store", "--root", str(store.root), "ls", font)
    assert code == 0 and all(r in out for r in runs) and "amended" in out, err
    [finding] = [f for f in fsck(store).findings if f.kind == "bad-change-note"]
    assert finding.ref == f"{font}/runs/.changes"
    if kind == "folder":  # a writer cannot replace a folder: fsck says so, and what to do
        assert any("remove it by hand" in line for line in fsck(store, repair=True).repaired)
        note.rmdir()
    store.amend_run(font, runs[1], name="again")  # a writer replaces a symlink or FIFO with a note
    assert [i.name for i in aoe.Store(store.root).list_runs(font)] == ["amended", "again"]
    assert not [f for f in fsck(store).findings if f.kind == "bad-change-note"]


def test_kilobytes_of_manifest_cannot_make_a_listing_read_gigabytes(store: aoe.Store, font: str,
                                                                    tmp_path: Path) -> None:
    """A feedback naming one 64 MiB object 40 times: 2.5 GiB claimed by a few KB. The run
    is malformed (a run's files hold at most 16 MiB), so no listing, show, get or page
    reads it; the font's sound runs are listed beside it, in a process of 600 MB."""
    sound = store.save_model(font, {"w": torch.ones(2)}, feedback={"loss": 0.5})
    chunk = store.objects.put(bytes(64 * 1024 * 1024))
    plant_fields(store, font, feedback={"size": 40 * 64 * 1024 * 1024, "chunks": [chunk] * 40})
    assert sum(p.stat().st_size for p in (store.root / ".objects").rglob("*") if p.is_file()) < 200_000
    result = run_limited(f"""
        import aoe
        runs = aoe.Store({str(store.root)!r}).list_runs({font!r})
        print(sorted((r.run_id, r.status) for r in runs))
    """, memory_mb=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == str(sorted([(sound, "completed"), (RUN_ID, "unreadable")]))
    for args in (["show", font, RUN_ID], ["get", font, RUN_ID, str(tmp_path / "out")]):
        assert_one_line_error(aoe_cli(store.root, *args), 4)
    [finding] = [f for f in fsck(store).errors if f.kind == "malformed-manifest"]
    assert "16,777,216" in finding.message


def test_a_shape_torch_cannot_make_is_a_malformed_run_never_a_crash(store: aoe.Store, font: str,
                                                                    tmp_path: Path) -> None:
    empty = msgpack.ExtType(EXT_TENSOR, msgpack.packb({"dtype": "float32", "shape": [0, 2**63], "size": 0,
                                                       "chunks": []}))
    plant_fields(store, font, weights={"w": empty})
    with pytest.raises(FormatError, match="no tensor can have the shape"):
        store.load_model(font, RUN_ID)
    assert_one_line_error(aoe_cli(store.root, "get", font, RUN_ID, str(tmp_path / "out")), 4)
    assert [f.kind for f in fsck(store, read_data=True).errors] == ["malformed-manifest"]


@pytest.mark.parametrize("parent", ["missing", "another run's"])
def test_a_parent_missing_or_of_another_run_ends_the_history_never_the_run(
        store: aoe.Store, font: str, parent: str, capsys: pytest.CaptureFixture[str]) -> None:
    other = store.save_model(font, {"w": torch.ones(1)}, name="other")
    named = hash_bytes(b"gone") if parent == "missing" else store.get_run_info(font, other).manifest
    digest = plant_fields(store, font, parent=named, name="head")
    assert {i.name for i in store.list_runs(font)} == {"other", "head"}  # the run itself reads
    [version] = store.run_history(font, RUN_ID)
    assert version.manifest == digest and version.parent == named
    code, out, err = run_cli(capsys, "store", "--root", str(store.root), "log", font, RUN_ID)
    assert code == 0 and digest in out and "cannot be read" in err
    kinds = {f.kind for f in fsck(store).errors}
    assert kinds == ({"missing-object"} if parent == "missing" else {"mismatched-manifest"})
