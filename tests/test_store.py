"""The public API, as a trainer uses it."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import msgpack
import pytest
import torch
from conftest import TinyFont, make_png, object_files, run_cli, stored_bytes
from PIL import Image

import aoe
from aoe.errors import (
    FontExistsError,
    FontNotFoundError,
    InvalidInputError,
    InvalidNameError,
    NotFoundError,
    RunNotFoundError,
    StoreError,
)
from aoe.layout import object_key


def states_equal(a: dict, b: dict) -> bool:
    return list(a) == list(b) and all(torch.equal(a[k], b[k]) for k in a)


# -- fonts ---------------------------------------------------------------------------


def test_create_font_numbers_fonts_in_order(store: aoe.Store) -> None:
    assert store.create_font("fruity") == "1-fruity"
    assert store.create_font("dumb") == "2-dumb"
    assert store.create_font("7-aggressive-sans") == "7-aggressive-sans"
    assert store.create_font("bold") == "8-bold"
    assert store.list_fonts() == ["1-fruity", "2-dumb", "7-aggressive-sans", "8-bold"]


def test_duplicate_fonts_are_impossible(store: aoe.Store) -> None:
    store.create_font("fruity")
    with pytest.raises(FontExistsError, match="taken by '1-fruity'"):
        store.create_font("1-other")
    with pytest.raises(FontExistsError, match="already exists: '1-fruity'"):
        store.create_font("fruity")
    with pytest.raises(FontExistsError, match="already exists"):
        store.create_font("5-fruity")
    with pytest.raises(InvalidNameError, match="lowercase"):
        store.create_font("Fruity")
    with pytest.raises(InvalidNameError, match=r"\{number\}-\{name\}"):
        store.create_font("1-Fruity")
    assert store.list_fonts() == ["1-fruity"]


@pytest.mark.parametrize("name", ["", "a b", "../x", "fruity!", "x/y", "-x"])
def test_malformed_font_names_are_refused(store: aoe.Store, name: str) -> None:
    with pytest.raises(InvalidNameError):
        store.create_font(name)


def test_a_store_that_does_not_exist_says_so(tmp_path: Path) -> None:
    store = aoe.Store(tmp_path / "nowhere")
    with pytest.raises(NotFoundError, match="no store at"):
        store.list_fonts()


# -- save and load --------------------------------------------------------------------


def test_a_run_round_trips_everything(store: aoe.Store, font: str, model: TinyFont, run_files: dict) -> None:
    started = datetime(2026, 1, 11, 8, 30, tzinfo=UTC)
    run_id = store.save_model(
        font, model, **run_files, params={"lr": 0.001, "steps": 3, "layers": (16, 64)},
        started_at=started, ended_at=started + timedelta(minutes=5), name="first", description="base",
        tags=["serif", "bold", "serif"],
    )
    assert run_id == "20260111T083000.000000Z-0000"
    weights, vector, info = store.load_model(font, run_id)
    assert states_equal(weights, model.state_dict())
    assert torch.equal(vector, run_files["personality_vector"]) and vector.dtype == torch.float32
    assert info.status == "completed" and not info.incomplete
    assert info.params == {"lr": 0.001, "steps": 3, "layers": [16, 64]}
    assert (info.started_at, info.ended_at) == (started, started + timedelta(minutes=5))
    assert info.tags == ("serif", "bold") and info.name == "first" and info.description == "base"
    assert info.weights_version == aoe.WEIGHTS_VERSION and info.feedback_schema == aoe.FEEDBACK_SCHEMA
    assert store.load_sample(font) == run_files["sample_image"]
    assert store.load_glyphs(font) == run_files["eval_glyphs"]
    assert store.load_feedback(font) == run_files["feedback"]
    fresh = TinyFont()
    fresh.load_state_dict(weights)
    fresh.eval(), model.eval()
    assert torch.equal(fresh(vector.unsqueeze(0)), model(vector.unsqueeze(0)))


def test_load_model_unpacks_as_a_named_tuple(store: aoe.Store, font: str, model: TinyFont) -> None:
    store.save_model(font, model, [0.5])
    loaded = store.load_model(font)
    assert isinstance(loaded, aoe.LoadedModel) and loaded.metadata.font_id == font
    assert loaded.personality_vector.tolist() == [0.5]


def test_saving_the_same_weights_twice_adds_no_weight_bytes(store: aoe.Store, font: str, model: TinyFont, run_files) -> None:
    store.save_model(font, model, **run_files)
    before = stored_bytes(store.root)
    objects_before = len(object_files(store.root))
    store.save_model(font, model, **run_files)
    assert len(object_files(store.root)) == objects_before + 1  # only the new manifest
    assert stored_bytes(store.root) - before < 2000


def test_runs_list_oldest_first_and_none_means_newest(store: aoe.Store, font: str, model: TinyFont) -> None:
    base = datetime(2026, 3, 1, tzinfo=UTC)
    ids = [store.save_model(font, model, started_at=base + timedelta(hours=h)) for h in (2, 0, 1)]
    listed = [info.run_id for info in store.list_runs(font)]
    assert listed == sorted(ids)
    assert store.newest_run(font) == ids[0] == store.get_run_info(font).run_id
    assert store.load_model(font).metadata.run_id == ids[0]


def test_two_runs_in_the_same_microsecond_get_distinct_ids(store: aoe.Store, font: str) -> None:
    moment = datetime(2026, 5, 5, 5, 5, 5, 5, tzinfo=UTC)
    first = store.save_model(font, {"x": torch.ones(1)}, started_at=moment)
    second = store.save_model(font, {"x": torch.zeros(1)}, started_at=moment)
    assert (first[-4:], second[-4:]) == ("0000", "0001") and first[:-5] == second[:-5]


def test_images_from_paths_pil_and_glyph_folders(store: aoe.Store, font: str, tmp_path: Path) -> None:
    glyphs = tmp_path / "eval-glyphs"
    glyphs.mkdir()
    for name, color in [("A", 1), ("B", 2)]:
        (glyphs / f"{name}.png").write_bytes(make_png(color))
    (glyphs / ".DS_Store").write_bytes(b"ignored")
    (tmp_path / "sample.png").write_bytes(make_png(9))
    (tmp_path / "feedback.json").write_text('{"loss": 1.0,  "spacing": "kept exactly"}')
    store.save_model(font, {"w": torch.ones(2)}, None, tmp_path / "sample.png", glyphs, tmp_path / "feedback.json")
    assert store.load_sample(font) == make_png(9)
    assert store.load_glyphs(font) == {"A": make_png(1), "B": make_png(2)}
    assert store.objects.get_blob(store.open_run(font).manifest.feedback) == (tmp_path / "feedback.json").read_bytes()

    image = Image.new("RGB", (4, 4), (255, 0, 0))
    store.save_model(font, {"w": torch.ones(2)}, None, image, {"A": str(glyphs / "A.png")})
    assert Image.open(__import__("io").BytesIO(store.load_sample(font))).getpixel((0, 0)) == (255, 0, 0)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"sample_image": b"GIF89a..."}, "not a PNG"),
        ({"sample_image": "missing.png"}, "does not exist"),
        ({"sample_image": 42}, "cannot use a int"),
        ({"eval_glyphs": {"../A": make_png()}}, "invalid glyph name"),
        ({"eval_glyphs": {"A/B": make_png()}}, "invalid glyph name"),
        ({"eval_glyphs": ["A.png"]}, "mapping of glyph name"),
        ({"eval_glyphs": "no-such-folder"}, "does not exist"),
        ({"feedback": {"x": object()}}, "cannot be written as JSON"),
        ({"feedback": b"{not json"}, "not valid JSON"),
        ({"feedback": 3.5}, "pass a dict or a path"),
        ({"params": {"lr": object()}}, r"params\['lr'\]"),
        ({"params": {1: "x"}}, "not a string"),
        ({"status": "Done!"}, "invalid status"),
        ({"tags": ["ok", ""]}, "invalid tag"),
        ({"started_at": "yesterday"}, "not an ISO 8601 time"),
        ({"started_at": 12}, "must be a datetime"),
        ({"name": 5}, "name must be text"),
        ({"extras": {"../x": {}}}, "invalid extra name"),
        ({"weights": {"w": object()}}, r"weights\['w'\]"),
    ],
)
def test_bad_input_is_refused_before_anything_is_written(store: aoe.Store, font: str, kwargs, message) -> None:
    arguments = {"weights": {"w": torch.ones(3)}, **kwargs}
    with pytest.raises(StoreError, match=message):
        store.save_model(font, **arguments)
    assert store.list_runs(font) == []
    assert object_files(store.root) == []


def test_a_glyph_folder_with_other_files_is_refused(store: aoe.Store, font: str, tmp_path: Path) -> None:
    (tmp_path / "A.png").write_bytes(make_png())
    (tmp_path / "B.jpg").write_bytes(b"jpeg")
    with pytest.raises(InvalidInputError, match="B.jpg"):
        store.save_model(font, None, eval_glyphs=tmp_path)


def test_saving_to_a_missing_font_names_the_fonts_there(store: aoe.Store, font: str) -> None:
    with pytest.raises(FontNotFoundError, match="fonts: 1-fruity") as caught:
        store.save_model("2-dumb", {"w": torch.ones(1)})
    assert isinstance(caught.value, KeyError)


def test_missing_runs_and_fonts_are_key_errors(store: aoe.Store, font: str, model: TinyFont) -> None:
    with pytest.raises(NotFoundError, match="has no runs yet"):
        store.load_model(font)
    run_id = store.save_model(font, model)
    with pytest.raises(RunNotFoundError, match=f"newest runs: {run_id}"):
        store.load_model(font, "20000101T000000.000000Z-0000")
    with pytest.raises(KeyError):
        store.get_run_info("9-none")
    with pytest.raises(InvalidNameError):
        store.load_model(font, "../../etc")


def test_an_incomplete_run_is_flagged_and_still_loads(store: aoe.Store, font: str, model: TinyFont) -> None:
    run_id = store.save_model(font, model, [1.0], feedback={"loss": 2.0})
    info = store.get_run_info(font, run_id)
    assert info.incomplete and info.missing == ("sample", "eval_glyphs")
    assert states_equal(store.load_model(font).weights, model.state_dict())
    with pytest.raises(NotFoundError, match="has no sample image"):
        store.load_sample(font)
    assert store.load_glyphs(font) == {}


def test_a_failed_run_without_weights_is_recorded_but_not_loadable(store: aoe.Store, font: str) -> None:
    store.save_model(font, None, status="failed", feedback={"error": "diverged"})
    info = store.get_run_info(font)
    assert info.status == "failed" and info.missing == ()
    with pytest.raises(NotFoundError, match="has no weights"):
        store.load_model(font)
    with pytest.raises(NotFoundError, match="no personality vector"):
        store.load_personality(font)


def test_extras_are_bundled_deduplicated_and_loaded_by_name(store: aoe.Store, font: str, model: TinyFont) -> None:
    vocoder = {"gain": torch.randn(8), "layers": [torch.ones(2)]}
    run_id = store.save_model(font, model, extras={"vocoder": vocoder, "ema": model.state_dict()})
    assert store.get_run_info(font, run_id).extras == ("vocoder", "ema")
    back = store.load_extra(font, run_id, "vocoder")
    assert torch.equal(back["gain"], vocoder["gain"]) and torch.equal(back["layers"][0], torch.ones(2))
    with pytest.raises(NotFoundError, match="extras: vocoder, ema"):
        store.load_extra(font, run_id, "missing")
    without = store.save_model(font, model)
    packed = msgpack.unpackb(store.read_object(store.get_run_info(font, without).manifest), ext_hook=msgpack.ExtType)
    assert "extras" not in packed and "weights" in packed


def test_the_personality_vector_exports_on_its_own(store: aoe.Store, font: str, model: TinyFont, tmp_path: Path) -> None:
    vector = torch.tensor([[0.1, 0.2], [0.3, 0.4]], dtype=torch.float64)
    store.save_model(font, model, vector)
    assert torch.equal(store.load_personality(font), vector)
    pt = store.export_personality(font, None, tmp_path / "v.pt")
    assert torch.equal(torch.load(pt, weights_only=True), vector)
    data = json.loads(store.export_personality(font, None, tmp_path / "v.json").read_text())
    assert data == {"dtype": "float64", "shape": [2, 2], "values": vector.tolist()}
    numpy = pytest.importorskip("numpy")
    assert numpy.load(store.export_personality(font, None, tmp_path / "v.npy")).tolist() == vector.tolist()
    with pytest.raises(InvalidInputError, match=".pt, .json or .npy"):
        store.export_personality(font, None, tmp_path / "v.txt")


def test_export_writes_the_run_folder_whole_or_not_at_all(store: aoe.Store, font: str, model, run_files, tmp_path: Path) -> None:
    store.save_model(font, model, **run_files)
    dest = store.export_run(font, None, tmp_path / "exported")
    assert sorted(p.name for p in dest.iterdir()) == [
        "eval-glyphs", "feedback.json", "personality_vector.pt", "run.json", "sample.png", "weights.pt"]
    assert (dest / "eval-glyphs" / "a.png").read_bytes() == run_files["eval_glyphs"]["a"]
    with pytest.raises(InvalidInputError, match="not empty"):
        store.export_run(font, None, dest)

    glyph = store.open_run(font).manifest.glyphs["B"].chunks[0]
    path = store.root / ".objects" / glyph[:2] / glyph
    path.write_bytes(path.read_bytes()[:-1] + b"!")
    with pytest.raises(aoe.CorruptObjectError, match=glyph):
        store.export_run(font, None, tmp_path / "second")
    assert sorted(p.name for p in tmp_path.iterdir() if p.name not in ("networks", "aoe-cache")) == ["exported"]


def test_run_info_is_json_ready(store: aoe.Store, font: str, model: TinyFont, run_files) -> None:
    store.save_model(font, model, **run_files, tags=["a"])
    data = store.get_run_info(font).to_dict()
    assert json.loads(json.dumps(data)) == data
    assert data["tags"] == ["a"] and data["missing"] == [] and data["saved_at"].endswith("Z")


def test_feedback_declares_its_schema(store: aoe.Store, font: str) -> None:
    store.save_model(font, None, feedback={"feedback_schema": "2.1", "loss": 1})
    assert store.get_run_info(font).feedback_schema == "2.1"


def test_naive_times_are_local_time(store: aoe.Store, font: str) -> None:
    naive = datetime(2026, 6, 1, 12, 0, 0)
    store.save_model(font, None, started_at=naive)
    assert store.get_run_info(font).started_at == naive.astimezone(UTC)


# -- start_run -------------------------------------------------------------------------


def test_start_run_records_times_and_completion(store: aoe.Store, font: str, model: TinyFont, run_files) -> None:
    with store.start_run(font, params={"lr": 0.1}, tags=["loop"]) as run:
        run.save(model, run_files["personality_vector"])
        run.save(sample_image=run_files["sample_image"], eval_glyphs={"A": make_png(1)},
                 feedback={"loss": 0.1}, params={"steps": 10})
        run.save(eval_glyphs={"B": make_png(2)})
    info = store.get_run_info(font, run.run_id)
    assert info.status == "completed" and info.params == {"lr": 0.1, "steps": 10} and not info.incomplete
    assert info.started_at <= info.ended_at and info.tags == ("loop",)
    assert info.glyphs == ("A", "B")


def test_start_run_records_a_failure_with_what_it_has_and_reraises(store: aoe.Store, font: str, model: TinyFont) -> None:
    with pytest.raises(RuntimeError, match="diverged"), store.start_run(font) as run:
        run.save(model)
        raise RuntimeError("loss diverged")
    info = store.get_run_info(font)
    assert info.status == "failed" and "weights" in info.assets
    assert states_equal(store.load_model(font).weights, model.state_dict())


def test_start_run_refuses_bad_metadata_at_the_start(store: aoe.Store, font: str) -> None:
    with pytest.raises(InvalidInputError, match="invalid tag"):
        store.start_run(font, tags=[""])


def test_start_run_marks_ctrl_c_as_interrupted(store: aoe.Store, font: str) -> None:
    with pytest.raises(KeyboardInterrupt), store.start_run(font):
        raise KeyboardInterrupt
    assert store.get_run_info(font).status == "interrupted"


def test_a_run_that_cannot_be_recorded_keeps_the_original_error(store: aoe.Store, font: str, monkeypatch) -> None:
    with pytest.raises(ValueError, match="original") as caught, store.start_run(font) as run:
        monkeypatch.setattr(store.refs, "require_font", lambda f: (_ for _ in ()).throw(FontNotFoundError("gone")))
        raise ValueError("original")
    assert any("could not record this run as failed: gone" in n for n in caught.value.__notes__)
    assert run.run_id is None


def test_saved_blobs_that_vanish_before_publication_are_reported(store: aoe.Store, font: str, model) -> None:
    with pytest.raises(StoreError, match="vanished before the run was published"), store.start_run(font) as run:
        run.save(model)
        for path in object_files(store.root):
            path.unlink()
    assert store.list_runs(font) == []


# -- module level ----------------------------------------------------------------------


def test_module_functions_use_the_default_store(tmp_path: Path, monkeypatch, model: TinyFont) -> None:
    monkeypatch.setenv("AOE_STORE", str(tmp_path / "env-store"))
    font_id = aoe.create_font("fruity")
    run_id = aoe.save_model(font_id, model, [1.0, 2.0])
    assert aoe.list_fonts() == [font_id] and [r.run_id for r in aoe.list_runs(font_id)] == [run_id]
    assert states_equal(aoe.load_model(font_id).weights, model.state_dict())
    assert aoe.get_run_info(font_id, run_id).run_id == run_id
    assert aoe.count_runs() == 1 and aoe.tag_run(font_id, run_id, add=["x"]).tags == ("x",)
    assert [r.run_id for r in aoe.search("", tags=["x"])] == [run_id]
    assert set(aoe.__all__) <= set(dir(aoe))
    assert (tmp_path / "env-store" / font_id / "runs" / run_id).is_file()
    monkeypatch.delenv("AOE_STORE")
    monkeypatch.chdir(tmp_path)
    assert aoe.Store().root == Path("networks")


def test_reading_objects_by_id(store: aoe.Store, font: str, model: TinyFont) -> None:
    store.save_model(font, model)
    digest = store.get_run_info(font).manifest
    assert aoe.manifests.unpack(store.read_object(digest)).font_id == font


def test_a_store_closes_what_it_holds_open_and_reopens_on_use(tmp_path: Path) -> None:
    with aoe.Store(tmp_path / "networks") as store:
        font = store.create_font("fruity")
        store.save_model(font, {"w": torch.ones(1)})
        assert len(store.list_runs(font)) == 1
        index = store.catalog.path
        assert index is not None and open_files_under(index.parent)  # the catalog index, in the user's cache
    assert open_files_under(index.parent) == []  # released
    assert len(store.list_runs(font)) == 1  # and opened again when needed
    store.close()


def open_files_under(folder: Path) -> list[str]:
    """Files under ``folder`` this process holds open (Linux)."""
    found = []
    for fd in Path("/proc/self/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith(str(folder)):
            found.append(target)
    return found


def test_create_font_may_accept_a_font_that_exists(store: aoe.Store) -> None:
    font = store.create_font("fruity")
    assert store.has_font(font) and not store.has_font("2-other")
    assert store.create_font(font, exist_ok=True) == font
    with pytest.raises(aoe.FontExistsError):
        store.create_font(font)
    assert store.list_fonts() == [font]


def test_saving_and_loading_pause_the_garbage_collector_only_while_they_run(store: aoe.Store, font: str,
                                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    import gc

    seen: list[bool] = []
    import aoe.weights

    original = aoe.weights.PreparedTrees.add

    def spy(self, name, value):  # type: ignore[no-untyped-def]
        seen.append(gc.isenabled())
        return original(self, name, value)

    monkeypatch.setattr(aoe.weights.PreparedTrees, "add", spy)
    run_id = store.save_model(font, {f"t{i}": torch.ones(2) for i in range(100)})
    assert seen == [False] and gc.isenabled()
    gc.disable()
    try:
        store.load_model(font, run_id)
        assert not gc.isenabled()  # the caller's choice is kept
    finally:
        gc.enable()
    with pytest.raises(aoe.StoreError):
        store.save_model(font, {"w": object()})
    assert gc.isenabled()


# -- weights for tools that do not know aoe -------------------------------------------


def test_weights_export_to_pt_and_safetensors_load_back_exactly(store: aoe.Store, font: str, tmp_path: Path) -> None:
    import safetensors.torch

    embed = torch.nn.Embedding(10, 4)
    model = torch.nn.ModuleDict({"embed": embed, "head": torch.nn.Linear(4, 10, bias=False)})
    model["head"].weight = embed.weight  # tied, as GPT-2's are
    run = store.save_model(font, model)
    path, tied = store.export_weights(font, run, tmp_path / "w.pt")
    loaded = torch.load(path, weights_only=True)
    assert loaded["head.weight"].data_ptr() == loaded["embed.weight"].data_ptr()  # ties kept in .pt
    path, tied = store.export_weights(font, None, tmp_path / "w.safetensors")
    flat = safetensors.torch.load_file(path)
    assert tied == [("head.weight", "embed.weight")]
    assert torch.equal(flat["head.weight"], embed.weight) and torch.equal(flat["embed.weight"], embed.weight)
    assert safetensors.safe_open(path, "pt").metadata()["aoe_run"] == run


def test_names_that_collide_once_flattened_are_an_error_naming_both(store: aoe.Store, font: str,
                                                                     tmp_path: Path) -> None:
    """{"a.b": t1, "a": {"b": t2}} is two tensors a save keeps apart; safetensors would name
    both "a.b": refused, naming both, and nothing written (the .pt export keeps both)."""
    store.save_model(font, {"a.b": torch.ones(2), "a": {"b": torch.zeros(3)}})
    with pytest.raises(aoe.UnsupportedValueError, match=r"both \['a.b'\] and \['a'\]\['b'\].*'a.b'"):
        store.export_weights(font, None, tmp_path / "w.safetensors")
    assert not (tmp_path / "w.safetensors").exists()
    path, _ = store.export_weights(font, None, tmp_path / "w.pt")
    loaded = torch.load(path, weights_only=True)
    assert loaded["a.b"].shape == (2,) and loaded["a"]["b"].shape == (3,)


def test_a_checkpoint_exports_to_safetensors_one_entry_at_a_time(store: aoe.Store, font: str, tmp_path: Path) -> None:
    import safetensors.torch

    checkpoint = {"model": {"layer": {"w": torch.ones(2)}, "b": torch.zeros(1)}, "optimizer": {"step": 3, "lr": 0.1}}
    store.save_model(font, checkpoint)
    with pytest.raises(aoe.UnsupportedValueError, match=r"optimizer.step: a int .*--key ENTRY"):
        store.export_weights(font, None, tmp_path / "all.safetensors")
    assert not (tmp_path / "all.safetensors").exists()
    path, _ = store.export_weights(font, None, tmp_path / "model.safetensors", key="model")
    assert sorted(safetensors.torch.load_file(path)) == ["b", "layer.w"]
    with pytest.raises(aoe.InvalidInputError, match="already exists"):
        store.export_weights(font, None, path, key="model")
    with pytest.raises(aoe.InvalidInputError, match="use --format pt or safetensors"):
        store.export_weights(font, None, tmp_path / "w.bin")
    with pytest.raises(aoe.NotFoundError, match="no weights entries 'nope'"):
        store.export_weights(font, None, tmp_path / "x.pt", key="nope")
    path, _ = store.export_weights(font, None, tmp_path / "weights", format="pt")
    assert torch.load(path, weights_only=True)["optimizer"] == {"step": 3, "lr": 0.1}


def test_export_from_the_command_line(capsys, root: Path, tmp_path: Path) -> None:
    store = aoe.Store(root)
    font = store.create_font("fruity")
    run = store.save_model(font, {"w": torch.arange(3.0)})
    code, out, _ = run_cli(capsys, "store", "export", font, run, str(tmp_path / "w.safetensors"))
    assert code == 0 and out.strip() == str(tmp_path / "w.safetensors")
    code, _, err = run_cli(capsys, "store", "export", font, str(tmp_path / "w.safetensors"))
    assert code == 2 and err.count("\n") == 1 and "already exists" in err


def test_personality_vectors_for_charts_are_read_once_then_kept_in_the_index(store: aoe.Store, font: str) -> None:
    runs = [store.save_model(font, {"w": torch.ones(1)}, [float(i), 2.0 * i]) for i in range(3)]
    runs.append(store.save_model(font, {"w": torch.ones(1)}))  # no vector
    runs.append(store.save_model(font, {"w": torch.ones(1)}, torch.ones(2, dtype=torch.complex64)))  # not chartable
    store.catalog.rebuild()  # forget the vectors the saves kept: the charts read them
    store.list_runs(font)  # the sync notes where each vector is: the manifests are not read again
    for run_id in runs[:3]:
        (Path(store.root) / object_key(store.get_run_info(font, run_id).manifest)).unlink()
    first = store.personality_series(font)
    assert list(first) == runs and first[runs[3]] is None and first[runs[4]] is None
    assert [first[r].tolist() for r in runs[:3]] == [[0.0, 0.0], [1.0, 2.0], [2.0, 4.0]]  # type: ignore[union-attr]
    for path in object_files(Path(store.root)):  # every object gone, the vectors too: the index answers alone
        path.unlink()
    again = aoe.Store(store.root).personality_series(font)
    assert [v.tolist() if v is not None else None for v in again.values()] == \
        [v.tolist() if v is not None else None for v in first.values()]


def test_an_unreadable_personality_vector_is_left_out_and_tried_again(store: aoe.Store, font: str) -> None:
    run_id = store.save_model(font, {"w": torch.ones(1)}, [1.0, 2.0])
    record = store.open_run(font, run_id).manifest.personality
    assert record is not None
    store.catalog.rebuild()  # the index forgets the vector the save kept: a chart must read it
    path = Path(store.root) / object_key(record.blob.chunks[0])
    saved = path.read_bytes()
    path.write_bytes(saved[:-1] + bytes([saved[-1] ^ 1]))  # damaged: fails its check
    assert store.personality_series(font)[run_id] is None  # no crash, nothing remembered
    path.write_bytes(saved)
    assert store.personality_series(font)[run_id].tolist() == [1.0, 2.0]  # type: ignore[union-attr]


def test_a_local_save_keeps_its_personality_vector_for_charts(store: aoe.Store, font: str) -> None:
    run_id = store.save_model(font, {"w": torch.ones(1)}, torch.tensor([0.5, -1.5], dtype=torch.bfloat16))
    record = store.open_run(font, run_id).manifest.personality
    assert record is not None
    (Path(store.root) / object_key(record.blob.chunks[0])).unlink()  # gone before any chart asked for it
    assert aoe.Store(store.root).personality_series(font)[run_id].tolist() == [0.5, -1.5]  # type: ignore[union-attr]
