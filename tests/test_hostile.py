"""Hostile and damaged stores: what a buggy or malicious writer can put in a store, and
what every reader must do with it (refuse it, name it, never crash, never write outside
the folder it was given, never allocate what the bytes merely claim).

Each test plants crafted bytes with the helpers below, bypassing every check a save
makes, then runs the readers a user runs.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import msgpack
import pytest
import torch
import zstandard
from conftest import make_png
from hostile import (
    RUN_ID,
    SAVED,
    a_blob,
    aoe_cli,
    assert_one_line_error,
    manifest_fields,
    plant_fields,
    plant_run,
    run_limited,
)

import aoe
from aoe.codec import CODEC_PLANES, CODEC_ZSTD, HEADER, MAGIC, decode, hash_bytes
from aoe.errors import CorruptObjectError, FormatError, InvalidInputError, InvalidNameError
from aoe.fsck import fsck
from aoe.layout import object_key
from aoe.manifests import EXT_STATE_DICT, EXT_TENSOR, EXT_TUPLE, MAX_EXT_DEPTH, unpack

# -- 1. names read from a store become paths only after the checks a save makes ---------


@pytest.mark.parametrize("glyph", ["../../escaped", "{tmp}/absolute", "..", ".hidden", "a/b", "x\x1b[2J"])
def test_a_glyph_name_that_is_a_path_makes_the_run_unreadable_and_nothing_is_written(
        store: aoe.Store, font: str, tmp_path: Path, glyph: str) -> None:
    glyph = glyph.format(tmp=tmp_path)
    png = make_png(5)
    plant_fields(store, font, glyphs={glyph: a_blob(store, png)}, sample=a_blob(store, png))
    dest = tmp_path / "deep" / "dest"
    with pytest.raises(FormatError, match="glyph name"):
        store.export_run(font, RUN_ID, dest)
    assert not dest.exists()
    assert not (tmp_path / "escaped.png").exists() and not (tmp_path / "absolute.png").exists()
    report = fsck(store, read_data=True)
    [finding] = [f for f in report.errors if f.kind == "malformed-manifest"]
    assert finding.runs == (f"{font}/{RUN_ID}",) and "glyph name" in finding.message


def test_an_extra_named_like_a_path_is_refused(store: aoe.Store, font: str, tmp_path: Path) -> None:
    plant_fields(store, font, extras={"../../../x": {}})
    code = aoe_cli(store.root, "get", font, RUN_ID, str(tmp_path / "out"))
    assert_one_line_error(code, 4)
    assert not (tmp_path / "out").exists() and not (tmp_path.parent / "x.pt").exists()


def test_export_refuses_a_destination_that_is_a_symlink(
        store: aoe.Store, font: str, model: torch.nn.Module, tmp_path: Path) -> None:
    store.save_model(font, model)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (tmp_path / "link").symlink_to(elsewhere)
    with pytest.raises(InvalidInputError, match="symlink"):
        store.export_run(font, None, tmp_path / "link")
    assert list(elsewhere.iterdir()) == []


# -- 2. nesting that would overflow the C stack --------------------------------------------


def nested_ext(depth: int) -> bytes:
    data = msgpack.packb(None)
    for level in range(depth):
        data = msgpack.packb(msgpack.ExtType(EXT_TUPLE if level % 2 else EXT_STATE_DICT, data))
    return data


def test_deeply_nested_extension_types_are_refused_without_crashing(store: aoe.Store, font: str) -> None:
    weights = msgpack.ExtType(EXT_TUPLE, nested_ext(3000))
    data = msgpack.packb(manifest_fields(font, weights=weights), use_bin_type=True)
    plant_run(store, font, data)
    with pytest.raises(FormatError, match="nest"):
        unpack(data)
    for args in (["ls"], ["ls", font], ["show", font, RUN_ID], ["fsck"], ["gc", "--dry-run"], ["du"]):
        result = aoe_cli(store.root, *args)
        assert result.returncode in (0, 4, 10), (args, result.returncode, result.stderr)  # SIGSEGV is -11
        assert "Traceback" not in result.stderr, args


def test_nesting_just_within_the_limits_still_reads(store: aoe.Store, font: str) -> None:
    tree: Any = 1.0
    for _ in range(MAX_EXT_DEPTH - 2):
        tree = (tree,)
    run_id = store.save_model(font, {"deep": tree, "w": torch.ones(2)})
    assert store.load_model(font, run_id).weights["deep"] == tree


def test_a_tree_deeper_than_the_limit_is_refused_at_save_time(store: aoe.Store, font: str) -> None:
    tree: Any = [1]
    for _ in range(100):
        tree = [tree]
    with pytest.raises(InvalidInputError):
        store.save_model(font, {"deep": tree})
    assert store.list_runs(font) == []


# -- 3. decompression and allocation bombs ---------------------------------------------


def bomb_code(stored: bytes, digest: str) -> str:
    return f"""
        from aoe.codec import decode
        from aoe.errors import CorruptObjectError
        try:
            decode({stored!r}, {digest!r})
        except CorruptObjectError as exc:
            print("refused:", exc.why)
    """


def test_a_zstd_frame_claiming_a_huge_size_is_refused_before_it_is_allocated() -> None:
    frame = zstandard.ZstdCompressor(level=19).compress(bytes(768 * 1024 * 1024))
    assert len(frame) < 100_000
    stored = HEADER.pack(MAGIC, CODEC_ZSTD, 100) + frame
    result = run_limited(bomb_code(stored, hash_bytes(b"x" * 100)), memory_mb=400)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused: its zstd frame declares 805,306,368 bytes, not 100" in result.stdout


def test_a_plane_header_claiming_a_terabyte_is_refused_before_it_is_allocated() -> None:
    stored = HEADER.pack(MAGIC, CODEC_PLANES, 2**40) + b"\x04"
    result = run_limited(bomb_code(stored, hash_bytes(b"")), memory_mb=400)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "refused: its header declares" in result.stdout


def test_trailing_bytes_after_a_zstd_frame_are_corruption() -> None:
    content = b"abc" * 1000
    stored = HEADER.pack(MAGIC, CODEC_ZSTD, len(content)) + zstandard.compress(content) + b"junk"
    with pytest.raises(CorruptObjectError, match="zstd cannot decode"):
        decode(stored, hash_bytes(content))


@pytest.mark.parametrize("blob", [{"size": 2**40, "chunks": []}, {"size": 2**40, "chunks": ["0" * 64]},
                                  {"size": 5, "chunks": ["0" * 64] * 6}, {"size": -1, "chunks": []}])
def test_a_blob_whose_size_its_chunks_cannot_hold_is_refused(store: aoe.Store, font: str, blob: dict) -> None:
    plant_fields(store, font, sample=blob)
    [info] = store.list_runs(font)
    assert info.status == "unreadable" and "cannot be held" in (info.description or "")
    for args in (["show", font, RUN_ID], ["get", font, RUN_ID, "out"], ["du"], ["ls", font]):
        result = aoe_cli(store.root, *args, cwd=store.root.parent)
        assert "Traceback" not in result.stderr and result.returncode in (0, 4), (args, result.stderr)


def test_a_tensor_whose_blob_does_not_match_dtype_and_shape_is_refused(store: aoe.Store, font: str) -> None:
    tensor = msgpack.ExtType(EXT_TENSOR, msgpack.packb(
        {"dtype": "float32", "shape": [2**20, 2**20], "size": 16, "chunks": [store.objects.put(bytes(16))]}))
    plant_fields(store, font, weights={"w": tensor})
    with pytest.raises(FormatError, match="cannot hold 16 bytes"):
        store.load_model(font, RUN_ID)


def test_a_blob_whose_chunks_add_up_to_less_is_corrupt(store: aoe.Store, font: str) -> None:
    plant_fields(store, font, sample={"size": 100, "chunks": [store.objects.put(make_png(1))]})
    with pytest.raises(CorruptObjectError, match="adding up to another size"):
        store.load_sample(font, RUN_ID)


# -- 4. a diverged run (NaN, Infinity) never empties a listing ----------------------------


def test_non_finite_metrics_are_kept_sorted_and_never_match(store: aoe.Store, font: str) -> None:
    losses = [0.5, float("nan"), float("inf"), 0.25, float("-inf")]
    ids = [store.save_model(font, {"w": torch.ones(1)}, feedback={"loss": loss}) for loss in losses]
    by_loss = store.list_runs(font, sort="metrics.loss")
    assert [r.run_id for r in by_loss] == [ids[4], ids[3], ids[0], ids[2], ids[1]]  # NaN last
    assert [r.run_id for r in store.list_runs(font, sort="-metrics.loss")] == [ids[2], ids[0], ids[3], ids[4], ids[1]]
    assert [r.run_id for r in store.list_runs(font, where=["metrics.loss<1"])] == [ids[0], ids[3], ids[4]]
    assert [r.run_id for r in store.list_runs(font, where=["metrics.loss>1"])] == [ids[2]]
    assert store.count_runs(font, where=["metrics.loss!=0.5"]) == 3  # NaN matches no comparison
    nan_run = store.get_run_info(font, ids[1])
    assert nan_run.metrics["loss"] != nan_run.metrics["loss"]
    result = aoe_cli(store.root, "ls", font, "--sort", "metrics.loss")
    assert result.returncode == 0 and result.stdout.count("completed") == 5, result.stdout
    assert len(aoe.Store(store.root).search("", sort="metrics.loss")) == 5


def test_an_index_that_keeps_failing_is_an_error_never_an_empty_answer(
        store: aoe.Store, font: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import sqlite3

    store.save_model(font, {"w": torch.ones(1)})
    store.list_runs(font)

    def broken(*args: Any) -> Any:
        raise sqlite3.DatabaseError("database disk image is malformed")

    monkeypatch.setattr(aoe.catalog, "build_query", broken)  # what a filtered listing runs
    monkeypatch.setattr(aoe.catalog, "font_state", broken)  # what a whole font's reads
    for filters in ({}, {"status": "completed"}):  # in a new Store: nothing it could answer from memory
        with pytest.raises(aoe.StorageError, match="cannot be used"):
            aoe.Store(store.root).list_runs(font, **filters)
        with pytest.raises(aoe.StorageError, match="cannot be used"):
            aoe.Store(store.root).list_runs_json(font, **filters)


# -- 5. a save racing the deletion of its font ---------------------------------------------


def test_a_save_racing_the_deletion_of_its_font_is_never_lost(
        store: aoe.Store, font: str, model: torch.nn.Module, monkeypatch: pytest.MonkeyPatch) -> None:
    """The font is deleted between the save's check that it exists and its ref: the save
    must fail cleanly, or the run must be in the trash with its font."""
    other = aoe.Store(store.root)
    real_create = store.refs.create_run

    def create_after_deletion(*args: Any, **kwargs: Any) -> bool:
        other.delete_font(font)
        return real_create(*args, **kwargs)

    monkeypatch.setattr(store.refs, "create_run", create_after_deletion)
    with pytest.raises(aoe.FontNotFoundError, match="deleted while"):
        store.save_model(font, model)
    monkeypatch.undo()
    assert store.refs.runs(font) == []
    store.restore_font(font)
    assert store.list_runs(font) == []


def test_a_deletion_that_lists_the_runs_after_a_save_published_includes_it(
        store: aoe.Store, font: str, model: torch.nn.Module) -> None:
    run_id = store.save_model(font, model)
    store.delete_font(font)
    assert [r.run_id for r in store.trashed(font) if r.run_id] == [run_id]
    assert store.restore_font(font) == [run_id]


# -- 6. every field is checked before anything is published ---------------------------------


@pytest.mark.parametrize("bad", [{"feedback_schema": 5}, {"params": "lr=1"}, {"params": [1, 2]},
                                 {"tags": 5}, {"name": "evil\x1b]52;c;aGk=\x07"}, {"status": "Done!"},
                                 {"extras": ["x"]}, {"params": {"deep": [[[[[[[[[[[[[[[[[[[[]]]]]]]]]]]]]]]]]]]]}}])
def test_a_field_that_readers_would_refuse_is_never_published(
        store: aoe.Store, font: str, bad: dict, tmp_path: Path) -> None:
    if "deep" in bad.get("params", {}):
        value: Any = []
        for _ in range(80):
            value = [value]
        bad = {"params": {"deep": value}}
    with pytest.raises(InvalidInputError):
        store.save_model(font, {"w": torch.ones(1)}, feedback={"loss": 1.0}, **bad)
    assert store.list_runs(font) == []


def test_fsck_repair_sets_an_unreadable_run_aside_so_gc_works_again(store: aoe.Store, font: str) -> None:
    digest = plant_fields(store, font, feedback_schema=5)
    assert "cannot be read" in aoe_cli(store.root, "gc").stderr
    report = fsck(store, repair=True)
    assert any("set aside" in line for line in report.repaired), report.repaired
    assert store.list_runs(font) == []
    [record] = [r for r in store.trashed(font) if r.run_id == RUN_ID]
    assert record.manifest == digest
    assert aoe_cli(store.root, "gc").returncode == 0


# -- 7. symlinks and special files -----------------------------------------------------------


def test_the_catalog_never_follows_a_symlink_into_another_database(
        store: aoe.Store, font: str, model: torch.nn.Module, tmp_path: Path) -> None:
    import sqlite3

    store.save_model(font, model)
    victim = tmp_path / "victim.sqlite"
    db = sqlite3.connect(victim)
    db.execute("CREATE TABLE runs (x)")
    db.execute("INSERT INTO runs VALUES (42)")
    db.commit()
    db.close()
    index = store.catalog.path
    assert index is not None
    store.catalog.close()
    for leftover in index.parent.iterdir():
        leftover.unlink()
    index.symlink_to(victim)
    assert len(aoe.Store(store.root).list_runs(font)) == 1
    db = sqlite3.connect(victim)
    assert db.execute("SELECT x FROM runs").fetchall() == [(42,)]


def test_an_object_that_is_a_symlink_to_a_device_is_corrupt_not_read(
        store: aoe.Store, font: str, model: torch.nn.Module) -> None:
    store.save_model(font, model)
    digest = store.get_run_info(font).manifest
    path = store.backend.path(object_key(digest))
    path.unlink()
    path.symlink_to("/dev/zero")
    result = run_limited(f"""
        import aoe
        try:
            aoe.Store({str(store.root)!r}).load_model({font!r})
        except aoe.StoreError as exc:
            print("refused:", exc)
    """, memory_mb=2048, timeout=60)
    assert "refused:" in result.stdout and "symlink" in result.stdout, result.stderr[-2000:]


def test_an_object_that_is_a_fifo_does_not_hang_a_reader(store: aoe.Store, font: str, model: torch.nn.Module) -> None:
    store.save_model(font, model)
    digest = store.get_run_info(font).manifest
    path = store.backend.path(object_key(digest))
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(CorruptObjectError, match="not a regular file"):
        store.objects.get(digest)
    report = fsck(store, read_data=True)
    assert any(f.object == digest for f in report.errors)


def test_a_folder_inside_the_store_that_is_a_symlink_is_never_written_through(
        store: aoe.Store, font: str, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    content = b"some bytes that will shard under one prefix"
    prefix = store.root / ".objects" / hash_bytes(content)[:2]
    prefix.parent.mkdir(parents=True, exist_ok=True)
    prefix.symlink_to(outside)
    with pytest.raises(aoe.StoreError, match="symlink"):
        aoe.Store(store.root).objects.put(content)
    assert list(outside.iterdir()) == []


# -- 9. a bad field makes one run unreadable, never a command crash ---------------------------


@pytest.mark.parametrize("fields", [{"saved_at": "yesterday"}, {"params": {1: 2}}, {"params": {"b": b"\x00"}},
                                    {"metrics": {"loss": "low"}}, {"tags": [1, 2]}, {"font_id": "1-other"},
                                    {"started_at": "0001-01-01T00:00:00+01:00"}])
def test_a_run_with_a_bad_field_is_listed_as_unreadable_and_named_by_fsck(
        store: aoe.Store, font: str, model: torch.nn.Module, fields: dict) -> None:
    store.save_model(font, model)
    plant_fields(store, font, **fields)
    infos = store.list_runs(font)
    assert [i.status for i in infos] == ["unreadable", "completed"] or \
        sorted(i.status for i in infos) == ["completed", "unreadable"]
    for args in (["ls"], ["ls", font], ["ls", font, "--json"], ["show", font, RUN_ID], ["du"], ["log", font, RUN_ID]):
        result = aoe_cli(store.root, *args)
        assert result.returncode in (0, 4), (args, result.stderr)
        assert "Traceback" not in result.stderr, args
    result = aoe_cli(store.root, "fsck")
    assert result.returncode == 10 and RUN_ID in result.stdout, result.stdout


# -- 10. terminal escapes ----------------------------------------------------------------------


def test_control_characters_are_refused_on_input(store: aoe.Store, font: str) -> None:
    for bad in ({"name": "a\x1b[2Jb"}, {"tags": ["\x9b31m"]}, {"description": "ok\x07"}):
        with pytest.raises(InvalidInputError):
            store.save_model(font, {"w": torch.ones(1)}, **bad)
    store.save_model(font, {"w": torch.ones(1)}, description="two\nlines\tand a tab")


def test_control_characters_read_from_a_store_are_escaped_on_output(store: aoe.Store, font: str) -> None:
    plant_fields(store, font, name="\x1b]52;c;ZXZpbA==\x07clip\x7f", description="\x1b[2J\x1b[Hfake row\x9b",
                 tags=["\x1b[31mred"])
    for args in (["ls", font], ["show", font, RUN_ID], ["search", "fake"], ["log", font, RUN_ID],
                 ["ls", font, "--json"], ["search", "fake", "--json"], ["show", font, RUN_ID, "--json"]):
        result = aoe_cli(store.root, *args)
        assert result.returncode == 0, (args, result.stderr)
        assert result.stdout.isascii() or "--json" not in args, args
        assert not [c for c in result.stdout if not c.isprintable() and c not in "\n\t"], args
    assert "\\x1b]52" in aoe_cli(store.root, "show", font, RUN_ID).stdout
    [listed] = json.loads(aoe_cli(store.root, "ls", font, "--json").stdout)
    assert listed["name"] == "\x1b]52;c;ZXZpbA==\x07clip\x7f"  # escaped on the terminal, exact for a program


# -- 11. every CLI failure is one line ------------------------------------------------------


def write_run_folder(folder: Path, **files: Any) -> Path:
    folder.mkdir(parents=True)
    torch.save({"w": torch.ones(2)}, folder / "weights.pt")
    for name, content in files.items():
        (folder / name).write_text(content)
    return folder


@pytest.mark.parametrize("files", [
    {"feedback.json": "[" * 100_000 + "]" * 100_000},
    {"run.json": '{"params": "lr=3"}'},
    {"run.json": '{"params": [1, 2]}'},
    {"run.json": '{"tags": 5}'},
    {"run.json": '{"feedback_schema": 5}'},
    {"run.json": '{"started_at": "0001-01-01T00:00:00+01:00"}'},
    {"run.json": '{"name": "\\u001b[2J"}'},
    {"run.json": "{" * 5000 + "}" * 5000},
])
def test_bad_run_folders_are_one_line_errors(store: aoe.Store, font: str, tmp_path: Path, files: dict) -> None:
    folder = write_run_folder(tmp_path / "run", **files)
    result = aoe_cli(store.root, "put", font, str(folder))
    assert_one_line_error(result, 2)
    assert store.list_runs(font) == []


@pytest.mark.parametrize("args", [["ls", "{font}", "--limit", str(2**63)], ["ls", "{font}", "--offset", str(2**64)],
                                  ["gc", "--grace", "nan"], ["gc", "--grace", "inf"], ["gc", "--grace", "-1"]])
def test_out_of_range_numbers_are_one_line_errors(store: aoe.Store, font: str, args: list[str]) -> None:
    result = aoe_cli(store.root, *[a.format(font=font) for a in args])
    assert_one_line_error(result, 2)


def test_a_where_value_beyond_64_bits_compares_as_a_number(store: aoe.Store, font: str) -> None:
    store.save_model(font, {"w": torch.ones(1)}, feedback={"loss": 1.0})
    result = aoe_cli(store.root, "ls", font, "--where", f"metrics.loss<{2**70}", "--json")
    assert result.returncode == 0, result.stderr
    assert '"run_id"' in result.stdout


def test_a_legacy_folder_named_before_year_one_in_utc_is_skipped_not_fatal(store: aoe.Store, tmp_path: Path) -> None:
    legacy = tmp_path / "legacy"
    write_run_folder(legacy / "1-old" / "runs" / "0001-01-01T00:00:00+01:00")
    write_run_folder(legacy / "1-old" / "runs" / "2026-01-11T08:30:00.000000")
    result = aoe_cli(store.root, "import", str(legacy))
    assert result.returncode == 0, result.stderr
    assert "1 run imported" in result.stdout


def test_diff_of_sub_byte_dtypes_is_not_a_traceback(store: aoe.Store, font: str) -> None:
    """float4 has no arithmetic in torch (copy_ is not implemented): a diff measures what it
    can and says nothing of the rest, instead of a traceback."""
    def run(value: int) -> str:
        raw = torch.full((8,), value, dtype=torch.uint8)
        return store.save_model(font, {"f4": raw.view(torch.float4_e2m1fn_x2), "u4": raw.view(torch.uint4),
                                       "b8": raw.view(torch.bits8), "f32": raw.float()})
    a, b = run(0), run(17)
    result = aoe_cli(store.root, "diff", font, a, b)
    assert result.returncode == 0 and "Traceback" not in result.stderr, result.stderr
    assert "f4" in result.stdout and "f32" in result.stdout


# -- 12. ambiguous input, interrupted deletes ----------------------------------------------


def test_one_glyph_given_by_two_files_is_refused(tmp_path: Path, store: aoe.Store, font: str) -> None:
    glyphs = tmp_path / "eval-glyphs"
    glyphs.mkdir()
    for name in ("A.png", "A.PNG", "B.png"):
        (glyphs / name).write_bytes(make_png(3))
    with pytest.raises(InvalidInputError, match="two images for glyph 'A'"):
        store.save_model(font, {"w": torch.ones(1)}, eval_glyphs=glyphs)


def test_a_trash_record_of_a_live_run_is_found_and_removed_by_fsck(
        store: aoe.Store, font: str, model: torch.nn.Module) -> None:
    from aoe.refs import TrashRecord

    run_id = store.save_model(font, model)
    digest = store.refs.read_run(font, run_id)
    record = TrashRecord(font, run_id, digest, SAVED)  # written, then the process died before the ref went
    store.backend.write(record.key, [record.to_bytes()], exclusive=False)
    report = fsck(store)
    [finding] = [f for f in report.findings if f.kind == "interrupted-delete"]
    assert finding.runs == (f"{font}/{run_id}",)
    fsck(store, repair=True)
    assert store.trashed(font) == []
    assert store.load_model(font, run_id).weights.keys() == model.state_dict().keys()


def test_glyph_names_from_a_mapping_follow_the_same_rules(store: aoe.Store, font: str) -> None:
    with pytest.raises(InvalidNameError):
        store.save_model(font, {"w": torch.ones(1)}, eval_glyphs={"../x": make_png(1)})
