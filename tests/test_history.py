"""Deleting, restoring and amending published runs; folders removed from under us."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import TinyFont, make_png

import aoe
from aoe.errors import (
    FontExistsError,
    FontFolderMissingError,
    FontNotFoundError,
    NotFoundError,
    RunExistsError,
    RunNotFoundError,
    StoreMissingError,
)
from aoe.gc import collect_garbage


@pytest.fixture
def run_id(store: aoe.Store, font: str, model: TinyFont) -> str:
    return store.save_model(font, model, [1.0], feedback={"loss": 1.0})


def test_a_deleted_run_is_gone_from_listings_and_restorable(store: aoe.Store, font: str, run_id: str, model) -> None:
    record = store.delete_run(font, run_id)
    assert record.run_id == run_id and record.manifest and record.deleted_at.endswith("Z")
    assert store.list_runs(font) == []
    with pytest.raises(RunNotFoundError):
        store.load_model(font, run_id)
    assert [r.run_id for r in store.trashed(font)] == [run_id]
    info = store.restore_run(font, run_id)
    assert info.run_id == run_id and store.trashed() == []
    assert torch.equal(store.load_model(font, run_id).weights["body.0.weight"], model.state_dict()["body.0.weight"])


def test_gc_makes_a_deletion_final_and_keeps_the_record(store: aoe.Store, font: str, run_id: str) -> None:
    store.delete_run(font, run_id)
    report = collect_garbage(store, grace=0)
    assert report.runs_purged == [f"{font}/{run_id}"] and report.swept > 0
    [record] = store.trashed(font)
    assert record.purged_at is not None
    with pytest.raises(RunNotFoundError, match="purged by a gc"):
        store.restore_run(font, run_id)


def test_restoring_needs_a_deleted_run(store: aoe.Store, font: str, run_id: str) -> None:
    with pytest.raises(RunNotFoundError, match="no deleted run"):
        store.restore_run(font, run_id)
    with pytest.raises(RunNotFoundError):
        store.delete_run(font, "20000101T000000.000000Z-0000")


def test_a_run_id_taken_again_blocks_its_restore(store: aoe.Store, font: str, run_id: str) -> None:
    digest = store.refs.read_run(font, run_id)
    store.delete_run(font, run_id)
    store.refs.create_run(font, run_id, digest)  # e.g. imported again meanwhile
    with pytest.raises(RunExistsError, match="exists again"):
        store.restore_run(font, run_id)


def test_a_deleted_font_keeps_its_number_until_restored(store: aoe.Store, font: str, run_id: str) -> None:
    records = store.delete_font(font)
    assert [r.run_id for r in records] == [run_id]
    assert store.list_fonts() == []
    with pytest.raises(FontNotFoundError):
        store.list_runs(font)
    assert store.create_font("other") == "2-other"
    with pytest.raises(FontExistsError, match="deleted font '1-fruity'"):
        store.create_font("1-again")
    assert store.restore_font(font) == [run_id]
    assert store.list_fonts() == [font, "2-other"] and [r.run_id for r in store.list_runs(font)] == [run_id]
    with pytest.raises(FontNotFoundError, match="no deleted font"):
        store.restore_font(font)


def test_a_font_number_reused_blocks_its_restore(store: aoe.Store, font: str) -> None:
    store.delete_font(font)
    store.refs.claim_font("1-squatter")  # e.g. an older aoe that did not know the trash
    with pytest.raises(FontExistsError, match="in use again"):
        store.restore_font(font)


def test_amend_adds_missing_assets_and_keeps_history(store: aoe.Store, font: str, run_id: str, tmp_path: Path) -> None:
    before = store.get_run_info(font, run_id)
    assert before.missing == ("sample", "eval_glyphs")
    glyphs = tmp_path / "glyphs"
    glyphs.mkdir()
    (glyphs / "A.png").write_bytes(make_png(5))
    run = store.amend_run(font, run_id, sample_image=make_png(7), eval_glyphs=glyphs)
    assert run.info.missing == () and run.manifest.parent == before.manifest
    store.amend_run(font, run_id, eval_glyphs={"B": make_png(9)}, name="fixed", tags=["serif"])
    after = store.get_run_info(font, run_id)
    assert after.glyphs == ("A", "B") and after.name == "fixed" and after.tags == ("serif",)
    assert store.load_sample(font, run_id) == make_png(7)
    assert [h.manifest for h in store.run_history(font, run_id)][1:] == [run.digest, before.manifest]
    assert store.load_feedback(font, run_id) == {"loss": 1.0}
    # gc keeps the history: every version stays readable
    collect_garbage(store, grace=0)
    assert len(store.run_history(font, run_id)) == 3


def test_an_amend_that_loses_the_race_retries_on_the_new_version(store: aoe.Store, font: str, run_id: str, monkeypatch) -> None:
    real_move = store.refs.move_run
    raced = []

    def move_after_another_editor(font_id, rid, old, new):
        if not raced:
            raced.append(True)
            store.amend_run(font_id, rid, description="the other editor")  # moves the ref first
        return real_move(font_id, rid, old, new)

    monkeypatch.setattr(store.refs, "move_run", move_after_another_editor)
    store.amend_run(font, run_id, name="mine")
    info = store.get_run_info(font, run_id)
    assert info.name == "mine" and info.description == "the other editor"
    assert len(store.run_history(font, run_id)) == 3


def test_a_removed_runs_folder_is_a_clear_error_and_recreated_by_the_next_save(
    store: aoe.Store, font: str, run_id: str, model
) -> None:
    shutil.rmtree(store.root / font / "runs")
    with pytest.raises(FontFolderMissingError, match=f"{font}/runs is missing") as caught:
        store.list_runs(font)
    assert isinstance(caught.value, KeyError)
    with pytest.raises(FontFolderMissingError):
        store.load_model(font)
    new = store.save_model(font, model)
    assert [r.run_id for r in store.list_runs(font)] == [new]


def test_a_removed_font_folder_too(store: aoe.Store, font: str, run_id: str, model) -> None:
    shutil.rmtree(store.root / font)
    with pytest.raises(FontFolderMissingError, match="removed outside aoe"):
        store.get_run_info(font)
    store.save_model(font, model)
    assert len(store.list_runs(font)) == 1


def test_a_removed_store_root_is_a_clear_error(store: aoe.Store, font: str, run_id: str, model) -> None:
    shutil.rmtree(store.root)
    for call in (lambda: store.list_fonts(), lambda: store.list_runs(font),
                 lambda: store.save_model(font, model), lambda: store.load_model(font)):
        with pytest.raises(StoreMissingError, match="no store at"):
            call()


def test_a_damaged_blob_names_the_object_the_run_and_fsck(store: aoe.Store, font: str, run_id: str) -> None:
    tensor = store.open_run(font, run_id).manifest.weights.items["body.0.weight"]
    digest = tensor.blob.chunks[0]
    path = store.root / ".objects" / digest[:2] / digest
    path.write_bytes(path.read_bytes()[:-4])
    with pytest.raises(aoe.CorruptObjectError) as caught:
        store.load_model(font, run_id)
    message = str(caught.value)
    assert digest in message and run_id in message and "aoe store fsck" in message
    path.unlink()
    with pytest.raises(aoe.ObjectNotFoundError, match=run_id):
        store.load_model(font, run_id)


def test_a_vanished_object_heals_when_the_same_content_is_saved(store: aoe.Store, font: str, run_id: str, model) -> None:
    digest = store.open_run(font, run_id).manifest.weights.items["body.0.weight"].blob.chunks[0]
    (store.root / ".objects" / digest[:2] / digest).unlink()
    with pytest.raises(NotFoundError):
        store.load_model(font, run_id)
    store.save_model(font, model)  # the same weights again
    assert torch.equal(store.load_model(font, run_id).weights["body.0.weight"], model.state_dict()["body.0.weight"])
