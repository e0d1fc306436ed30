"""Old data: plain-folder stores, training checkpoints, older formats and feedback."""

from __future__ import annotations

import json
import os
import warnings
from pathlib import Path

import msgpack
import pytest
import torch
from conftest import make_png, run_cli

import aoe
from aoe import manifests
from aoe.fsck import fsck
from aoe.legacy import import_legacy, legacy_run_time


def legacy_run(folder: Path, seed: int, *, files: tuple[str, ...] = ("weights", "sample", "glyphs", "feedback")) -> dict:
    """A run folder as the old trainer wrote it: torch.save'd weights, PNGs, feedback."""
    folder.mkdir(parents=True)
    weights = {"layer.weight": torch.full((3, 3), float(seed)), "layer.bias": torch.zeros(3)}
    if "weights" in files:
        torch.save(weights, folder / "weights")
    if "sample" in files:
        (folder / "sample.png").write_bytes(make_png(seed))
    if "glyphs" in files:
        (folder / "eval-glyphs").mkdir()
        (folder / "eval-glyphs" / "A.png").write_bytes(make_png(seed + 1))
    if "feedback" in files:
        (folder / "feedback.json").write_text(json.dumps({"final_loss": 0.1 * seed}))  # an old, short feedback
    return weights


@pytest.fixture
def legacy(tmp_path: Path) -> Path:
    """networks/ in the spec's plain-folder layout, with the trouble old stores have."""
    root = tmp_path / "old-networks"
    legacy_run(root / "1-fruity" / "runs" / "2026-01-11T08:30:00.000000", 1)
    legacy_run(root / "1-fruity" / "runs" / "2026-01-11T10:15:30.500000", 2, files=("weights", "feedback"))
    legacy_run(root / "2-dumb" / "runs" / "2026-01-10T14:22:10.300000", 3)
    legacy_run(root / "2-dumb" / "runs" / "not-a-time", 4)
    (root / "2-dumb" / "runs" / "2026-01-12T00:00:00").mkdir()  # empty
    evil = root / "2-dumb" / "runs" / "2026-01-13T00:00:00"
    evil.mkdir()

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"w": Payload()}, evil / "weights")
    (root / "Bad Font" / "runs").mkdir(parents=True)
    (root / "notes").mkdir()
    return root


def test_a_plain_folder_store_is_imported_keeping_run_times(store: aoe.Store, legacy: Path, tmp_path: Path) -> None:
    report = import_legacy(store, legacy)
    assert report.fonts_created == ["1-fruity", "2-dumb"]
    assert report.imported == ["1-fruity/20260111T083000.000000Z-0000", "1-fruity/20260111T101530.500000Z-0000",
                               "2-dumb/20260110T142210.300000Z-0000"]
    assert report.incomplete == ["1-fruity/20260111T101530.500000Z-0000: no sample, eval_glyphs"]
    why = {Path(p).name: w for p, w in report.skipped}
    assert set(why) == {"not-a-time", "2026-01-12T00:00:00", "2026-01-13T00:00:00", "Bad Font", "notes"}
    assert "not a time" in why["not-a-time"] and "empty" in why["2026-01-12T00:00:00"]
    assert "weights-only" in why["2026-01-13T00:00:00"] and "invalid font id" in why["Bad Font"]
    assert not (tmp_path / "pwned").exists()

    weights, _, info = store.load_model("1-fruity", "20260111T083000.000000Z-0000")
    assert torch.equal(weights["layer.weight"], torch.full((3, 3), 1.0))
    assert info.started_at.isoformat() == "2026-01-11T08:30:00+00:00" and info.ended_at is not None
    assert store.load_sample("1-fruity", info.run_id) == make_png(1)
    assert store.open_run("1-fruity", info.run_id).manifest.source["legacy_run"] == "2026-01-11T08:30:00.000000"
    assert fsck(store, read_data=True).clean


def test_importing_twice_adds_nothing(store: aoe.Store, legacy: Path) -> None:
    first = import_legacy(store, legacy)
    objects = sorted(store.backend.list(".objects"))
    again = import_legacy(store, legacy)
    assert again.imported == [] and sorted(again.already_imported) == sorted(first.imported)
    assert sorted(store.backend.list(".objects")) == objects


def test_import_refuses_to_mix_fonts_or_runs(store: aoe.Store, legacy: Path) -> None:
    store.create_font("1-other")
    clash = store.create_font("2-dumb")
    store.save_model(clash, {"w": torch.ones(1)}, started_at="2026-01-10T14:22:10.300000+00:00")
    report = import_legacy(store, legacy)
    why = {Path(p).name: w for p, w in report.skipped}
    assert "is '1-other' in this store" in why["1-fruity"]
    assert "exists and was not imported from here" in why["2026-01-10T14:22:10.300000"]


def test_legacy_times(tmp_path: Path) -> None:
    assert legacy_run_time("2026-01-11T08:30:00.000000").isoformat() == "2026-01-11T08:30:00+00:00"
    assert legacy_run_time("2026-01-11T08:30:00Z").isoformat() == "2026-01-11T08:30:00+00:00"
    assert legacy_run_time("yesterday") is None
    with pytest.raises(aoe.InvalidInputError):
        import_legacy(aoe.Store(tmp_path / "s"), tmp_path / "missing")


def test_an_old_layout_store_is_recognised_and_refused_with_what_to_do(legacy: Path) -> None:
    with pytest.raises(aoe.FormatError, match="plain-folder store of the old layout.*aoe store --root NEW_ROOT import"):
        aoe.Store(legacy).list_fonts()


def test_import_in_place_then_the_store_opens(legacy: Path) -> None:
    store = aoe.Store(legacy)
    report = import_legacy(store, legacy)
    assert len(report.imported) == 3 and store.list_fonts() == ["1-fruity", "2-dumb"]
    assert len(import_legacy(store, legacy).already_imported) == 3


def test_the_import_command(capsys, legacy: Path, tmp_path: Path) -> None:
    code, out, err = run_cli(capsys, "store", "--root", str(tmp_path / "new"), "import", str(legacy))
    assert code == 0 and "created font 1-fruity" in out and "3 runs imported, 0 already there, 1 incomplete, 5 skipped" in out
    assert "skipped" in err and "not-a-time" in err
    code, out, _ = run_cli(capsys, "store", "--root", str(tmp_path / "new"), "import", str(legacy), "--json")
    assert code == 0 and len(json.loads(out)["already_imported"]) == 3


# -- checkpoints --------------------------------------------------------------------------


@pytest.fixture
def checkpoint() -> dict:
    torch.manual_seed(0)
    model = torch.nn.Linear(64, 64)
    optimizer = torch.optim.Adam(model.parameters())
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, 10)
    model(torch.randn(4, 64)).sum().backward()
    optimizer.step()
    return {"model_state_dict": model.state_dict(), "optimizer_state_dict": optimizer.state_dict(),
            "scheduler_state_dict": scheduler.state_dict(), "epoch": 12, "loss": torch.tensor(0.25),
            "val_loss": 0.5, "config": {"hidden": 64}, "ema": {"weight": torch.ones(2)},
            "personality_vector": torch.tensor([0.5, 0.25])}


def test_a_checkpoint_becomes_a_finished_model_about_half_its_size(store: aoe.Store, font: str, checkpoint: dict, tmp_path: Path) -> None:
    torch.save(checkpoint, tmp_path / "ckpt.pt")
    run_id = store.save_model_from_checkpoint(font, tmp_path / "ckpt.pt", feedback={"notes": "good"})
    run = store.open_run(font, run_id)
    weights, vector, info = run.load()
    assert torch.equal(weights["weight"], checkpoint["model_state_dict"]["weight"])
    assert vector.tolist() == [0.5, 0.25]
    assert info.params == {"config": {"hidden": 64}, "epoch": 12} and info.extras == ("ema",)
    assert run.feedback() == {"loss": 0.25, "val_loss": 0.5, "notes": "good"}
    model_bytes = sum(t.nbytes for t in checkpoint["model_state_dict"].values())
    stored = sum(r.blob.size for r in manifests.tensors(run.manifest.weights))
    assert stored == model_bytes  # optimizer moments (2x the model) are not stored

    resumable = store.save_model_from_checkpoint(font, checkpoint, keep_training_state=True)
    assert store.get_run_info(font, resumable).extras == ("ema", "optimizer", "scheduler")
    restored = store.load_extra(font, resumable, "optimizer")
    assert restored["param_groups"] == checkpoint["optimizer_state_dict"]["param_groups"]


def test_a_plain_state_dict_is_a_checkpoint_of_just_weights(store: aoe.Store, font: str) -> None:
    run_id = store.save_model_from_checkpoint(font, {"w": torch.ones(2)})
    assert torch.equal(store.load_model(font, run_id).weights["w"], torch.ones(2))


def test_bad_checkpoints(store: aoe.Store, font: str, tmp_path: Path) -> None:
    with pytest.raises(aoe.InvalidInputError, match="does not exist"):
        store.save_model_from_checkpoint(font, tmp_path / "none.pt")
    torch.save([1, 2], tmp_path / "list.pt")
    with pytest.raises(aoe.InvalidInputError, match="is a mapping"):
        store.save_model_from_checkpoint(font, tmp_path / "list.pt")
    with pytest.raises(aoe.InvalidInputError, match="feedback as a dict"):
        store.save_model_from_checkpoint(font, {"w": torch.ones(1)}, feedback="feedback.json")


def test_put_from_checkpoint(capsys, root: Path, checkpoint: dict, tmp_path: Path) -> None:
    torch.save(checkpoint, tmp_path / "ckpt.pt")
    code, out, err = run_cli(capsys, "store", "put", "1-x", str(tmp_path / "ckpt.pt"), "--create", "--from-checkpoint")
    assert code == 0, err
    assert aoe.Store(root).get_run_info("1-x", out.strip()).params["epoch"] == 12
    folder = tmp_path / "run"
    folder.mkdir()
    torch.save(checkpoint, folder / "weights.pt")
    (folder / "feedback.json").write_text('{"notes": "from the folder"}')
    (folder / "run.json").write_text('{"params": {"lr": 0.1}}')
    code, out, err = run_cli(capsys, "store", "put", "1-x", str(folder), "--from-checkpoint")
    assert code == 0 and "dropped training state: optimizer, scheduler" in err
    info = aoe.Store(root).get_run_info("1-x", out.strip())
    assert info.params == {"config": {"hidden": 64}, "epoch": 12, "lr": 0.1}
    assert aoe.Store(root).load_feedback("1-x", info.run_id) == {"loss": 0.25, "val_loss": 0.5, "notes": "from the folder"}


# -- versions -------------------------------------------------------------------------------


def test_legacy_feedback_loads_with_defaults(store: aoe.Store, font: str) -> None:
    store.save_model(font, None, feedback={"final_loss": 0.3})
    assert store.load_feedback(font) == {"final_loss": 0.3}
    assert store.load_feedback(font, with_defaults=True) == {
        "final_loss": 0.3, "val_loss": None, "epochs": None, "glyph_loss": {}, "notes": ""}


def test_an_older_manifest_version_is_migrated_with_a_warning(store: aoe.Store, font: str, monkeypatch) -> None:
    run_id = store.save_model(font, {"w": torch.ones(1)}, name="old")
    monkeypatch.setattr(manifests.encoding, "FORMAT_VERSION", 3)
    monkeypatch.setitem(manifests.MIGRATIONS, 2, lambda fields: {**fields, "name": fields["name"] + " (migrated)"})
    with pytest.warns(manifests.FormatMigrationWarning, match="format version 2, read as version 3"):
        info = store.get_run_info(font, run_id)
    assert info.name == "old (migrated)"
    monkeypatch.setattr(manifests.encoding, "FORMAT_VERSION", 4)
    with pytest.raises(aoe.FormatError, match="no migration from manifest format version 3"):
        store.get_run_info(font, run_id)


def test_version_1_manifests_read_as_they_are_without_a_warning(store: aoe.Store, font: str) -> None:
    """Version 2 only added blob slices: what aoe 0.3 wrote reads unchanged."""
    run_id = store.save_model(font, {"w": torch.arange(4.0)}, sample_image=make_png(3), name="old")
    manifest = store.open_run(font, run_id).manifest
    fields = msgpack.unpackb(manifests.pack(manifest), strict_map_key=False, ext_hook=msgpack.ExtType)
    fields["version"] = 1
    old = manifests.unpack(msgpack.packb(fields))
    assert old == manifest
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        manifests.unpack(msgpack.packb(fields))


def test_a_version_1_manifest_holding_a_slice_is_refused(store: aoe.Store, font: str) -> None:
    run_id = store.save_model(font, {"a": torch.ones(3), "b": torch.zeros(3)})  # packed together: slices
    manifest = store.open_run(font, run_id).manifest
    assert manifest.weights["a"].blob.offset is not None
    fields = msgpack.unpackb(manifests.pack(manifest), strict_map_key=False, ext_hook=msgpack.ExtType)
    fields["version"] = 1
    with pytest.raises(aoe.FormatError, match="version 1 manifest holds a blob slice"):
        manifests.unpack(msgpack.packb(fields))


def test_format_constants_are_exported() -> None:
    assert (aoe.FORMAT, aoe.FORMAT_VERSION, aoe.WEIGHTS_VERSION, aoe.FEEDBACK_SCHEMA) == ("aoe.run", 2, "v1", "1.0")


def test_an_import_reads_only_regular_files_inside_the_folder_it_was_given(
        store: aoe.Store, tmp_path: Path) -> None:
    """A folder someone hands you: a symlink to a file elsewhere on this machine is not
    followed into the store (unless asked), a FIFO among the extras does not block the
    import forever, and the sound runs beside them are imported."""
    root = tmp_path / "handed"
    legacy_run(root / "1-fruity" / "runs" / "2026-01-11T08:30:00.000000", 1)
    leaking = root / "1-fruity" / "runs" / "2026-01-11T09:00:00.000000"
    legacy_run(leaking, 2, files=("weights",))
    secret = tmp_path / "secret.json"
    secret.write_text(json.dumps({"token": "do not store me"}))
    (leaking / "feedback.json").symlink_to(secret)
    blocking = root / "1-fruity" / "runs" / "2026-01-11T10:00:00.000000"
    legacy_run(blocking, 3, files=("weights",))
    (blocking / "extras").mkdir()
    os.mkfifo(blocking / "extras" / "ema.pt")

    report = import_legacy(store, root)
    assert report.imported == ["1-fruity/20260111T083000.000000Z-0000"]
    why = {Path(p).name: w for p, w in report.skipped}
    assert "outside" in why["2026-01-11T09:00:00.000000"] and "--follow-symlinks" in why["2026-01-11T09:00:00.000000"]
    assert "not a regular file" in why["2026-01-11T10:00:00.000000"]
    assert b"do not store me" not in b"".join(p.read_bytes() for p in (store.root / ".objects").rglob("*") if p.is_file())

    followed = import_legacy(store, root, follow_symlinks=True)
    assert followed.imported == ["1-fruity/20260111T090000.000000Z-0000"]
    assert store.load_feedback("1-fruity", "20260111T090000.000000Z-0000") == {"token": "do not store me"}


def test_weights_whose_lists_share_references_are_walked_once_and_bounded(
        store: aoe.Store, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """torch.load gives one object for a list pickled twice: forty levels of lists each
    holding one list twice is a tiny file but 2**40 leaves written out. Refused at once;
    a list shared a few times is stored as copies."""
    import time

    deep: list = [1]
    for _ in range(40):
        deep = [deep, deep]
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    torch.save({"w": torch.ones(2), "deep": deep}, run_dir / "weights.pt")
    assert (run_dir / "weights.pt").stat().st_size < 10_000
    font = store.create_font("fruity")
    started = time.perf_counter()
    code, _, err = run_cli(capsys, "store", "--root", str(store.root), "put", font, str(run_dir))
    assert code == 2 and "more than 1,000,000 values" in err, err
    assert time.perf_counter() - started < 10

    shared = [1.5, "x"]
    torch.save({"w": torch.ones(2), "a": shared, "b": {"c": shared}}, run_dir / "weights.pt")
    code, out, err = run_cli(capsys, "store", "--root", str(store.root), "put", font, str(run_dir))
    assert code == 0, err
    assert store.load_model(font, out.strip()).weights["b"] == {"c": [1.5, "x"]}

