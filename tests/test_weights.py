"""Weights: every dtype bit for bit, nested state, no pickle, clear errors."""

from __future__ import annotations

import io
from collections import OrderedDict, defaultdict
from pathlib import Path
from typing import Any

import pytest
import torch

import aoe
import aoe.objects
import aoe.weights
from aoe.backends.local import LocalBackend
from aoe.errors import FormatError, InvalidInputError, UnsupportedValueError
from aoe.manifests import pack_tree, tensors, unpack_tree
from aoe.objects import CHUNK_SIZE, ObjectStore
from aoe.weights import PreparedTrees, as_tensor, dtype_from_name, dtype_name, load_trees

ALL_DTYPES = sorted(
    {v for v in vars(torch).values() if isinstance(v, torch.dtype)}, key=str
)


@pytest.fixture
def objects(tmp_path: Path) -> ObjectStore:
    return ObjectStore(LocalBackend(tmp_path))


def round_trip(objects: ObjectStore, value, map_location="cpu"):
    """Store a tree, pass its manifest form through msgpack, and load it back."""
    prepared = PreparedTrees()
    prepared.add("w", value)
    tree = unpack_tree(pack_tree(prepared.store(objects)["w"]))
    return load_trees(objects, [tree], map_location)[0]


def same_bits(a: torch.Tensor, b: torch.Tensor) -> bool:
    return (
        a.dtype == b.dtype
        and a.shape == b.shape
        and torch.equal(a.contiguous().reshape(-1).view(torch.uint8), b.contiguous().reshape(-1).view(torch.uint8))
    )


@pytest.mark.parametrize("dtype", ALL_DTYPES, ids=str)
def test_every_dtype_round_trips_bit_for_bit(objects: ObjectStore, dtype: torch.dtype) -> None:
    raw = torch.randint(0, 256, (5 * 6 * dtype.itemsize,), dtype=torch.uint8, generator=torch.Generator().manual_seed(1))
    tensor = raw.view(dtype).reshape(5, 6)
    back = round_trip(objects, {"t": tensor})["t"]
    assert same_bits(back, tensor)


def test_nan_payloads_and_negative_zero_survive(objects: ObjectStore) -> None:
    tensor = torch.tensor([float("nan"), -0.0, float("inf")]).view(torch.int32)
    tensor[0] = 0x7FC00123  # a NaN with a payload
    floats = tensor.view(torch.float32)
    assert same_bits(round_trip(objects, {"f": floats})["f"], floats)


@pytest.mark.parametrize(
    "make",
    [
        lambda: torch.arange(24.0).reshape(4, 6).t(),  # non-contiguous
        lambda: torch.arange(24.0).reshape(4, 6)[:, ::2],  # strided slice
        lambda: torch.tensor(3.5),  # 0-d
        lambda: torch.empty(0, 3),  # no elements
        lambda: torch.randn(3, 2, dtype=torch.complex64).conj(),  # lazy conjugate
        lambda: torch.randn(4).neg().expand(2, 4),  # expanded view
        lambda: torch.nn.Parameter(torch.randn(3)),
    ],
)
def test_views_are_stored_as_their_values_made_contiguous(objects: ObjectStore, make) -> None:
    tensor = make()
    back = round_trip(objects, {"t": tensor})["t"]
    assert back.is_contiguous() and back.shape == tensor.shape and back.dtype == tensor.dtype
    assert torch.equal(back, tensor.detach().resolve_conj())


def test_an_optimizer_state_dict_resumes_exactly(objects: ObjectStore) -> None:
    torch.manual_seed(0)
    model = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.01)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(5, 3)).sum().backward()
        optimizer.step()
    state = {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "epoch": 3}
    back = round_trip(objects, state)
    resumed = torch.optim.Adam(torch.nn.Linear(3, 2).parameters())
    resumed.load_state_dict(back["optimizer"])
    assert back["epoch"] == 3
    assert resumed.state_dict()["param_groups"] == optimizer.state_dict()["param_groups"]
    for key, value in optimizer.state_dict()["state"][0].items():
        assert torch.equal(resumed.state_dict()["state"][0][key], value)


def test_modules_state_dict_order_and_metadata_survive(objects: ObjectStore) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    back = round_trip(objects, model)
    assert isinstance(back, OrderedDict) and list(back) == list(model.state_dict())
    assert back._metadata == model.state_dict()._metadata
    fresh = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    fresh.load_state_dict(back)
    assert all(torch.equal(a, b) for a, b in zip(fresh.state_dict().values(), model.state_dict().values()))


def test_plain_values_keep_their_types(objects: ObjectStore) -> None:
    state = {"i": 2**63 - 1, "neg": -(2**63), "f": 0.1, "b": False, "s": "x", "n": None, "bytes": b"\x00",
             "list": [1, (2, 3)], "size": torch.Size([2, 3]), 5: "int key", 1.5: "float key", None: "none key"}
    back = round_trip(objects, state)
    assert back == {**state, "size": (2, 3)}
    assert type(back["list"][1]) is tuple and type(back["b"]) is bool


def test_equal_tensors_under_different_keys_are_stored_once(objects: ObjectStore) -> None:
    tensor = torch.randn(100)
    prepared = PreparedTrees()
    prepared.add("w", {"a": tensor, "b": tensor.clone()})
    tree = prepared.store(objects)["w"]
    a, b = tensors(tree)
    assert a.blob == b.blob


def test_large_tensors_are_chunked_and_read_back(objects: ObjectStore) -> None:
    tensor = torch.randn(CHUNK_SIZE // 4 + 100)
    prepared = PreparedTrees()
    prepared.add("w", {"big": tensor})
    tree = prepared.store(objects)["w"]
    assert len(next(iter(tensors(tree))).blob.chunks) == 2
    assert torch.equal(load_trees(objects, [tree])[0]["big"], tensor)


@pytest.mark.parametrize(
    "value, where",
    [
        ({"layer": {"bad": object()}}, "w['layer']['bad']"),
        ({"x": [1, frozenset({2, 3})]}, "w['x'][1]"),
        ({"big": 2**5000}, "w['big']"),
        ({(1, 2): 3}, "tuple"),
        ({"q": torch.quantize_per_tensor(torch.randn(3), 0.1, 0, torch.qint8)}, "quantized"),
        ({"s": torch.randn(3, 3).to_sparse()}, "w['s']"),
        ({"m": torch.empty(3, device="meta")}, "w['m']"),
    ],
)
def test_values_that_cannot_be_represented_name_their_key(value, where: str) -> None:
    with pytest.raises(UnsupportedValueError, match=__import__("re").escape(where)):
        PreparedTrees().add("w", value)


def test_map_location_moves_tensors_and_rejects_nonsense(objects: ObjectStore) -> None:
    assert round_trip(objects, {"t": torch.ones(2)}, map_location=torch.device("cpu"))["t"].device.type == "cpu"
    assert round_trip(objects, {"t": torch.ones(2)}, map_location=None)["t"].device.type == "cpu"
    with pytest.raises(InvalidInputError, match="not a device"):
        round_trip(objects, {"t": torch.ones(2)}, map_location="no-such-device")


def test_a_tensor_whose_size_disagrees_with_its_blob_is_refused(objects: ObjectStore) -> None:
    prepared = PreparedTrees()
    prepared.add("w", torch.ones(4))
    record = prepared.store(objects)["w"]
    forged = type(record)("float32", (5,), record.blob)
    with pytest.raises(FormatError, match="manifest is damaged"):
        load_trees(objects, [forged])


def test_dtype_names_are_canonical_and_unknown_ones_refused() -> None:
    assert dtype_name(torch.float) == "float32" and dtype_from_name("bfloat16") is torch.bfloat16
    for name in ["float", "nonsense", "Tensor"]:
        with pytest.raises(UnsupportedValueError, match="does not offer"):
            dtype_from_name(name)


def test_personality_vectors_from_lists_arrays_tensors_and_files(tmp_path: Path) -> None:
    numpy = pytest.importorskip("numpy")
    assert as_tensor([0.1, 0.2]).dtype == torch.float64 and as_tensor([0.1, 0.2]).tolist() == [0.1, 0.2]
    assert as_tensor(numpy.arange(3, dtype=numpy.float32)).dtype == torch.float32
    tensor = torch.ones(2)
    assert as_tensor(tensor) is tensor
    with pytest.raises(InvalidInputError, match="not a list of numbers"):
        as_tensor(["a", "b"])
    with pytest.raises(InvalidInputError, match="does not exist"):
        as_tensor("0.1 0.2")
    with pytest.raises(InvalidInputError, match="cannot use a dict"):
        as_tensor({"x": 1})
    torch.save(torch.tensor([0.5]), tmp_path / "v.pt")
    assert as_tensor(tmp_path / "v.pt").tolist() == [0.5]
    torch.save({"not": "a tensor"}, tmp_path / "d.pt")
    with pytest.raises(InvalidInputError, match="holds a dict, not a tensor"):
        as_tensor(str(tmp_path / "d.pt"))


def test_lazy_weights_read_only_what_is_accessed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import aoe

    store = aoe.Store(tmp_path / "networks")
    font = store.create_font("fruity")
    model = torch.nn.Sequential(torch.nn.Linear(64, 64), torch.nn.BatchNorm1d(64))
    store.save_model(font, model)
    reads: list[str] = []
    backend = store.objects.backend
    real_read = backend.read
    monkeypatch.setattr(backend, "read", lambda key, **kw: reads.append(key) or real_read(key, **kw))

    lazy = store.open_weights(font)
    assert list(lazy) == list(model.state_dict()) and len(lazy) == 7
    assert lazy.describe("0.weight") == {"tensors": 1, "bytes": 64 * 64 * 4, "dtype": "float32", "shape": [64, 64]}
    manifest_reads = len(reads)
    assert torch.equal(lazy["0.bias"], model.state_dict()["0.bias"])
    assert len(reads) == manifest_reads + 1  # one tensor, one object
    lazy["0.bias"]
    assert len(reads) == manifest_reads + 1  # kept once read
    assert lazy.metadata == model.state_dict()._metadata
    with pytest.raises(KeyError, match="no weights entry 'nope'"):
        lazy["nope"]
    with pytest.raises(KeyError):
        lazy.describe("nope")


def test_loading_a_subset_of_keys(tmp_path: Path) -> None:
    import aoe

    store = aoe.Store(tmp_path / "networks")
    font = store.create_font("fruity")
    model = torch.nn.Linear(4, 4)
    store.save_model(font, model, [1.0])
    weights, vector, _ = store.load_model(font, keys=["bias"])
    assert list(weights) == ["bias"] and torch.equal(weights["bias"], model.bias.detach()) and vector.tolist() == [1.0]
    with pytest.raises(KeyError, match="no weights entries 'nope'"):
        store.load_model(font, keys=["nope"])
    store.save_model(font, [torch.ones(1)])  # weights that are not a mapping
    with pytest.raises(InvalidInputError, match="not a mapping"):
        store.open_weights(font)


def test_floating_point_tensors_are_stored_as_byte_planes(tmp_path: Path) -> None:
    from aoe.codec import CODEC_PLANES, HEADER
    from aoe.layout import object_key
    from aoe.weights import plane_width

    assert [plane_width(d) for d in (torch.float32, torch.bfloat16, torch.float64, torch.complex64,
                                     torch.float8_e4m3fn, torch.int32, torch.bool)] == [4, 2, 8, 4, 1, 1, 1]
    import aoe

    store = aoe.Store(tmp_path / "networks")
    font = store.create_font("fruity")
    torch.manual_seed(0)
    weights = {"w": torch.randn(100_000) * 0.02, "bf": (torch.randn(100_000) * 0.02).bfloat16(),
               "steps": torch.arange(100_000)}
    store.save_model(font, weights)
    tree = store.open_run(font).manifest.weights
    codecs = {}
    for name in weights:
        record = tree[name]  # a plain dict of tensors is stored as a plain map
        stored = store.objects.backend.read(object_key(record.blob.chunks[0]))
        codecs[name] = (HEADER.unpack_from(stored)[1], len(stored) / record.blob.size)
    assert codecs["w"][0] == CODEC_PLANES and codecs["w"][1] < 0.85
    assert codecs["bf"][0] == CODEC_PLANES and codecs["bf"][1] < 0.72
    assert codecs["steps"][0] != CODEC_PLANES
    assert all(torch.equal(store.load_model(font).weights[k], v) for k, v in weights.items())


# -- torch's semantics, against torch.save / torch.load -----------------------------------


def torch_round_trip(value: Any) -> Any:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    buffer.seek(0)
    return torch.load(buffer, weights_only=True)


class Tied(torch.nn.Module):
    """An embedding tied to the output layer, as GPT-2, BERT and T5 do."""

    def __init__(self) -> None:
        super().__init__()
        self.embed = torch.nn.Embedding(10, 4)
        self.head = torch.nn.Linear(4, 10, bias=False)
        self.head.weight = self.embed.weight
        self.zero_a = torch.nn.Parameter(torch.zeros(3))
        self.zero_b = torch.nn.Parameter(torch.zeros(3))  # equal values, not tied


def shares_storage(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.untyped_storage().data_ptr() == b.untyped_storage().data_ptr()


def test_tied_weights_load_as_one_storage_as_with_torch_load(store: aoe.Store, font: str) -> None:
    state = Tied().state_dict()
    expected = torch_round_trip(state)
    assert shares_storage(expected["embed.weight"], expected["head.weight"])
    loaded = store.load_model(font, store.save_model(font, state)).weights
    assert shares_storage(loaded["embed.weight"], loaded["head.weight"])
    assert not shares_storage(loaded["zero_a"], loaded["zero_b"])  # equal values stay apart
    loaded["embed.weight"][0, 0] = 42.0  # an in-place edit of one reaches the other
    assert loaded["head.weight"][0, 0] == 42.0
    model = Tied().to("meta")
    model.load_state_dict(store.load_model(font).weights, assign=True)
    assert model.head.weight is model.embed.weight or shares_storage(model.head.weight, model.embed.weight)


def test_a_tie_is_stored_once_and_recorded_by_its_alias(store: aoe.Store, font: str) -> None:
    run = store.open_run(font, store.save_model(font, Tied().state_dict()))
    embed, head = run.manifest.weights.items["embed.weight"], run.manifest.weights.items["head.weight"]
    assert embed == head and embed.alias == 0  # the same blob and alias: one storage when loaded
    assert run.manifest.weights.items["zero_a"].alias is None


def test_containers_torch_load_accepts_come_back_as_themselves(store: aoe.Store, font: str) -> None:
    from collections import Counter

    value = {"milestones": Counter({2: 1, 4: 1}), "s": {1, 2}, "size": torch.Size([2, 3]), "z": 1 + 2j,
             "od": OrderedDict(a=1), "t": (1, [2])}
    expected = torch_round_trip(value)
    loaded = store.load_model(font, store.save_model(font, value)).weights
    for key in value:
        assert type(loaded[key]) is type(expected[key]) and loaded[key] == expected[key], key


def test_a_multistep_scheduler_resumes_from_a_stored_checkpoint(store: aoe.Store, font: str) -> None:
    model = torch.nn.Linear(2, 2)
    optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[2, 4], gamma=0.5)
    for _ in range(3):
        optimizer.step()
        scheduler.step()
    run_id = store.save_model(font, model, extras={"scheduler": scheduler.state_dict(),
                                                   "optimizer": optimizer.state_dict()})
    fresh_optimizer = torch.optim.SGD(model.parameters(), lr=1.0)
    fresh = torch.optim.lr_scheduler.MultiStepLR(fresh_optimizer, milestones=[9], gamma=0.5)
    fresh_optimizer.load_state_dict(store.load_extra(font, run_id, "optimizer"))
    fresh.load_state_dict(store.load_extra(font, run_id, "scheduler"))
    with pytest.warns(UserWarning, match="epoch parameter"):
        fresh.step(5)  # the call that failed with a plain dict of milestones ('dict' has no 'elements')
    assert fresh.milestones == scheduler.milestones


@pytest.mark.parametrize("value", [defaultdict(int, {1: 2}), frozenset({1}), range(3)])
def test_containers_torch_load_refuses_are_refused_clearly(store: aoe.Store, font: str, value: Any) -> None:
    with pytest.raises(UnsupportedValueError, match="cannot store a value of type"):
        store.save_model(font, {"w": torch.ones(1), "x": value})
    assert store.list_runs(font) == []


def test_lazy_weights_give_modules_their_version_metadata(store: aoe.Store, font: str) -> None:
    model = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    run_id = store.save_model(font, model)
    lazy = store.open_weights(font, run_id)
    assert lazy._metadata == torch_round_trip(model.state_dict())._metadata
    seen: list[Any] = []
    real = torch.nn.BatchNorm1d._load_from_state_dict

    def spy(self, state_dict, prefix, local_metadata, *args):  # type: ignore[no-untyped-def]
        seen.append(local_metadata.get("version"))
        return real(self, state_dict, prefix, local_metadata, *args)

    fresh = torch.nn.Sequential(torch.nn.Linear(2, 2), torch.nn.BatchNorm1d(2))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(torch.nn.BatchNorm1d, "_load_from_state_dict", spy)
        fresh.load_state_dict(lazy)
    assert seen == [2]  # BatchNorm's version reached the module


def test_tensors_saved_before_and_not_written_since_are_marked_for_recall(monkeypatch: pytest.MonkeyPatch) -> None:
    """A store remembers each saved tensor's version counter: one that has not moved is
    likely unchanged (its bytes are then checked by fingerprint, see test_objects)."""
    a, b = torch.ones(3), torch.zeros(3)
    versions: dict[Any, int] = {}

    def recall(value: Any) -> list[bool]:
        prepared = PreparedTrees(versions=versions)
        prepared.add("w", value)
        return prepared.recall

    assert recall({"a": a, "b": b}) == [False, False]  # never saved
    assert recall({"a": a, "b": b}) == [True, True]
    b.add_(1)
    assert recall({"a": a, "b": b}) == [True, False]
    with torch.inference_mode():
        counted_not = torch.ones(2)  # inference tensors have no version counter
    assert recall(counted_not) == [False] and recall(counted_not) == [False]
    monkeypatch.setattr(aoe.weights.trees, "MAX_VERSIONS", 1)
    recall({"a": a, "b": b})
    assert len(versions) == 1


def test_a_write_behind_the_version_counter_is_saved_as_the_tensor_is_now(store: aoe.Store, font: str) -> None:
    """Writes through ``.data`` or numpy do not move torch's version counter: the
    fingerprint of the bytes catches them, in a tensor of its own and in a pack."""
    large, small = torch.randn(100_000), torch.randn(10)
    state = {"large": large, "small": small}
    for _ in range(3):  # the third save recognizes both by fingerprint
        store.save_model(font, state)
    versions = large._version, small._version
    large.data[0] += 1.0
    large.numpy()[1] = 7.0
    small.data[0] += 1.0
    assert (large._version, small._version) == versions
    loaded = store.load_model(font, store.save_model(font, state)).weights
    assert torch.equal(loaded["large"], large) and torch.equal(loaded["small"], small)


def test_an_unchanged_tensor_is_saved_without_blake3_and_a_changed_one_without_a_fingerprint(
        store: aoe.Store, font: str, hashing: list[str]) -> None:
    weight = torch.randn(100_000)  # 400,000 bytes: an object of its own

    def save() -> list[str]:
        hashing.clear()
        store.save_model(font, {"w": weight})
        return list(hashing)

    assert save() == ["hash_bytes"]  # first seen
    assert save() == ["fingerprint", "hash_bytes"]  # same version: fingerprinted, not yet known
    assert save() == ["fingerprint"]  # recognized
    weight.add_(1)
    assert save() == ["hash_bytes"]  # a counted write: no fingerprint to pay for
    assert torch.equal(store.load_model(font).weights["w"], weight)


def nested(kind: str, depth: int, leaf: Any) -> Any:
    """``leaf`` inside ``depth`` containers of one kind."""
    value = leaf
    for _ in range(depth):
        value = {"x": value} if kind == "dict" else (value,) if kind == "tuple" else \
            OrderedDict(x=value) if kind == "OrderedDict" else [value]
    return value


@pytest.mark.parametrize(("kind", "depths"), [("dict", range(58, 66)), ("list", range(58, 66)),
                                             ("tuple", range(12, 19)), ("OrderedDict", range(12, 19))])
@pytest.mark.parametrize("leaf", ["plain", "tensor"])
@pytest.mark.parametrize("where", ["weights", "extra"])
def test_a_save_publishes_only_what_readers_read_back(
        store: aoe.Store, font: str, kind: str, depths: range, leaf: str, where: str) -> None:
    """Around the nesting limits (64 levels counted from the manifest; 16 extension types
    inside one another), a save either refuses the tree before it writes anything, or
    publishes a run that loads back as it was: never a run readers refuse."""
    published = refused = 0
    for depth in depths:
        value = nested(kind, depth, torch.arange(3) if leaf == "tensor" else 7)
        weights, extras = ({"w": value}, None) if where == "weights" else ({"w": torch.ones(1)}, {"ema": value})
        objects_before = sorted(store.backend.list(".objects")) if store.exists() else []
        try:
            run_id = store.save_model(font, weights, extras=extras)
        except UnsupportedValueError as exc:
            assert "nests" in str(exc) or "nested" in str(exc), exc
            assert (sorted(store.backend.list(".objects")) if store.exists() else []) == objects_before
            refused += 1
            continue
        published += 1
        back = store.load_model(font, run_id).weights if where == "weights" else store.load_extra(font, run_id, "ema")
        assert repr(back) == repr(weights if where == "weights" else value)
    assert published and refused  # the range straddles the limit


def test_what_a_trainer_keeps_to_resume_exactly_comes_back_exactly(objects: ObjectStore) -> None:
    """numpy arrays and scalars, the RNG states of Python, numpy (legacy and Generator:
    a 128-bit int) and torch, torch.dtype and torch.device: stored as values (never a
    pickle), returned as the same types with the same values."""
    import random

    import numpy as np

    generator = np.random.default_rng(7)
    generator.random()
    state = {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state(),
             "generator": generator.bit_generator.state, "best_acc": np.float64(0.875), "epoch": np.int32(3),
             "done": np.bool_(False), "dtype": torch.bfloat16, "device": torch.device("cuda", 1),
             "table": np.arange(12, dtype=">i4").reshape(3, 4), "empty": np.zeros((0, 3), np.float16),
             "big": -(2**127) + 3}
    back = round_trip(objects, state)
    assert back.keys() == state.keys()
    assert back["python"] == state["python"] and back["generator"] == state["generator"]
    assert back["numpy"][0] == "MT19937" and np.array_equal(back["numpy"][1], state["numpy"][1])
    assert back["numpy"][1].dtype == np.uint32 and back["numpy"][2:] == state["numpy"][2:]
    for key in ("best_acc", "epoch", "done", "dtype", "device", "big"):
        assert back[key] == state[key] and type(back[key]) is type(state[key]), key
    assert np.array_equal(back["table"], state["table"]) and back["table"].dtype == np.int32  # little-endian now
    assert back["empty"].shape == (0, 3) and back["empty"].dtype == np.float16


@pytest.mark.parametrize("value", ["strings", "objects", "dates", "huge int", "numpy key"])
def test_values_that_cannot_be_kept_exactly_are_refused_naming_them(objects: ObjectStore, value: str) -> None:
    import numpy as np

    bad = {"strings": np.array(["a", "b"]), "objects": np.array([object()]),
           "dates": np.datetime64("2026-01-01"), "huge int": 2**5000, "numpy key": {np.int64(3): 1}}[value]
    with pytest.raises(UnsupportedValueError, match="x"):
        PreparedTrees().add("w", {"x": bad})
