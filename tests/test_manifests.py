"""Manifests: exact msgpack round trips, absent fields omitted, versions enforced."""

from __future__ import annotations

import dataclasses
import itertools

import msgpack
import pytest

from aoe.codec import hash_bytes
from aoe.errors import FormatError, InvalidInputError, UnsupportedValueError
from aoe.manifests import (
    FORMAT,
    FORMAT_VERSION,
    Manifest,
    ShardedTensor,
    StateDict,
    TensorRecord,
    pack,
    pack_tree,
    tensors,
    unpack,
    unpack_tree,
)
from aoe.objects import Blob

D1, D2, D3 = (hash_bytes(bytes([i])) for i in range(3))


def full_manifest() -> Manifest:
    record = TensorRecord("float32", (2, 3), Blob(24, (D1,)))
    return Manifest(
        font_id="1-fruity",
        run_id="20260111T083000.000000Z-0000",
        status="completed",
        saved_at="2026-01-11T09:00:00.000000Z",
        started_at="2026-01-11T08:30:00.000000Z",
        ended_at="2026-01-11T08:59:00.000000Z",
        params={"lr": 0.001, "layers": [1, 2]},
        personality=TensorRecord("float64", (4,), Blob(32, (D2,))),
        weights=StateDict({"w": record, 3: (1, 2.5, None, True, "s", b"b")}, {"": {"version": 1}}),
        sample=Blob(10, (D3,)),
        glyphs={"A": Blob(10, (D3,))},
        feedback=Blob(10, (D1,)),
        extras={"vocoder": {"g": record}},
        name="first",
        description="a test",
        tags=("serif", "bold"),
        weights_version="v1",
        feedback_schema="1.0",
        parent=D2,
        metrics={"loss": 0.5, "glyph_loss.A": 1},
        source={"legacy_run": "2026-01-11T08:30:00.000000"},
    )


def test_a_full_manifest_round_trips_exactly() -> None:
    manifest = full_manifest()
    assert unpack(pack(manifest)) == manifest


def test_packing_is_deterministic_with_sorted_keys() -> None:
    data = pack(full_manifest())
    assert data == pack(full_manifest())
    keys = list(msgpack.unpackb(data, strict_map_key=False, ext_hook=lambda c, d: None))
    assert keys == sorted(keys)


def test_absent_optional_fields_are_omitted_not_null() -> None:
    run_id, saved_at = "20260111T083000.000000Z-0000", "2026-01-11T09:00:00.000000Z"
    minimal = Manifest(font_id="1-a", run_id=run_id, status="failed", saved_at=saved_at, weights_version=None)
    fields = msgpack.unpackb(pack(minimal))
    assert fields == {"format": FORMAT, "version": FORMAT_VERSION, "font_id": "1-a", "run_id": run_id,
                      "status": "failed", "saved_at": saved_at}
    assert unpack(pack(minimal)) == minimal


def test_digests_lists_every_object_a_run_needs() -> None:
    assert sorted(set(full_manifest().digests())) == sorted({D1, D2, D3})


def test_tensors_walks_nested_trees() -> None:
    assert len(list(tensors(full_manifest().weights))) == 1


def test_a_newer_format_version_is_refused_with_the_version_it_needs() -> None:
    fields = msgpack.unpackb(pack(full_manifest()), ext_hook=msgpack.ExtType)
    fields["version"] = FORMAT_VERSION + 1
    with pytest.raises(FormatError, match=f"version {FORMAT_VERSION + 1} needs a newer aoe"):
        unpack(msgpack.packb(fields))


@pytest.mark.parametrize(
    "data, message",
    [
        (b"\xc1", "not valid msgpack"),
        (msgpack.packb([1, 2]), "not an aoe run manifest"),
        (msgpack.packb({"format": "other"}), "not an aoe run manifest"),
        (msgpack.packb({"format": FORMAT, "version": 0}), "invalid format version"),
        (msgpack.packb({"format": FORMAT, "version": 1}), "malformed run manifest"),
        (msgpack.packb({"format": FORMAT, "version": 1, "font_id": 3, "run_id": "r", "status": "s",
                        "saved_at": "t"}), "malformed run manifest"),
        (msgpack.packb({"format": FORMAT, "version": 1, "font_id": "f", "run_id": "r", "status": "s",
                        "saved_at": "t", "sample": {"size": -1, "chunks": []}}), "malformed"),
        (msgpack.packb({"format": FORMAT, "version": 1, "font_id": "f", "run_id": "r", "status": "s",
                        "saved_at": "t", "personality": {"dtype": "float32", "shape": [-2],
                                                          "size": 0, "chunks": []}}), "malformed"),
        (msgpack.packb({"format": FORMAT, "version": 1, "weights": msgpack.ExtType(99, b"\x90")}),
         "unknown msgpack extension type 99"),
    ],
)
def test_malformed_manifests_are_refused(data: bytes, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        unpack(data)


def test_trees_keep_tuples_int_keys_and_bytes_apart_from_lists() -> None:
    tree = {"t": (1, [2, (3,)]), 7: b"\x00\xff", "n": None, "f": float("inf")}
    assert unpack_tree(pack_tree(tree)) == tree


def test_values_outside_the_schema_cannot_be_packed() -> None:
    with pytest.raises(UnsupportedValueError):
        pack_tree({"x": object()})


def test_the_format_table_of_dtypes_is_exactly_torchs() -> None:
    import torch

    from aoe.manifests import DTYPE_SIZES

    torch_dtypes = {str(d).removeprefix("torch."): d.itemsize for d in vars(torch).values() if isinstance(d, torch.dtype)}
    assert torch_dtypes == DTYPE_SIZES


def piece(rows: int, cols: int, digest: str = D1, dtype: str = "float32") -> TensorRecord:
    return TensorRecord(dtype, (rows, cols), Blob(rows * cols * 4, (digest,)))


def test_a_sharded_tensor_round_trips_and_names_every_piece() -> None:
    sharded = ShardedTensor("float32", (4, 6), (((0, 0), piece(2, 6, D1)), ((2, 0), piece(2, 6, D2))))
    assert unpack_tree(pack_tree({"w": sharded})) == {"w": sharded}
    assert [r.blob.chunks for r in tensors({"w": sharded, "b": piece(1, 1, D3)})] == [(D1,), (D2,), (D3,)]


@pytest.mark.parametrize(("pieces", "message"), [
    ((((0, 0), piece(2, 6)),), "do not add up"),  # a gap: half the tensor missing
    ((((0, 0), piece(2, 6)), ((1, 0), piece(2, 6)), ((3, 0), piece(1, 6)), ((3, 0), piece(1, 6))),
     "overlap|add up"),
    ((((0, 0), piece(3, 6)), ((1, 0), piece(1, 6))), "overlap"),  # as many elements, one piece over another
    ((((0, 0), piece(2, 6)), ((3, 0), piece(2, 6))), "does not fit"),  # past the end
    ((((0, 0), piece(2, 6)), ((-2, 0), piece(2, 6))), "does not fit"),
    ((((0, 0), piece(2, 6)), ((2, 0), piece(2, 6, dtype="int32"))), "does not fit"),
    ((((0,), piece(2, 6)), ((2, 0), piece(2, 6))), "does not fit"),
    ((), "1 to"),
])
def test_pieces_that_do_not_tile_their_tensor_are_refused(pieces: tuple, message: str) -> None:
    with pytest.raises(FormatError, match=message):
        unpack(manifest_with_weights({"w": ShardedTensor("float32", (4, 6), pieces)}))


def test_overlapping_pieces_as_many_elements_as_the_tensor_are_refused() -> None:
    """Two pieces on one another and a hole elsewhere add up to the right count: the
    sweep, not the sum, refuses them."""
    pieces = (((0, 0), piece(2, 6)), ((1, 0), piece(2, 6)))  # rows 0-2 and 1-3: row 1 twice, row 3 never
    with pytest.raises(FormatError, match="overlap"):
        unpack(manifest_with_weights({"w": ShardedTensor("float32", (4, 6), pieces)}))
    with pytest.raises(InvalidInputError, match="overlap"):  # and never written
        pack(dataclasses.replace(full_manifest(), weights={"w": ShardedTensor("float32", (4, 6), pieces)}))


def manifest_with_weights(weights: object) -> bytes:
    """A manifest's bytes as a writer that skips every check would write them."""
    fields = unpack_tree(pack(full_manifest()))
    fields["weights"] = weights
    return pack_tree(fields)


def test_tensors_tied_by_one_alias_must_be_one_tensor() -> None:
    """Readers give tensors of one alias one storage, read from the first: a manifest whose
    tied tensors name different bytes would load the second as the first. Refused, on the
    way in (across the weights and every extra) and on the way out."""
    first = TensorRecord("float32", (2, 3), Blob(24, (D1,)), alias=0)
    other_bytes = TensorRecord("float32", (2, 3), Blob(24, (D2,)), alias=0)
    other_shape = TensorRecord("float32", (3, 2), Blob(24, (D1,)), alias=0)
    for second in (other_bytes, other_shape):
        with pytest.raises(FormatError, match="tied as alias 0 differ"):
            unpack(manifest_with_weights({"a": first, "b": second}))
        with pytest.raises(InvalidInputError, match="tied as alias 0 differ"):
            pack(dataclasses.replace(full_manifest(), weights={"a": first}, extras={"ema": {"b": second}}))
    tied = unpack(manifest_with_weights({"a": first, "b": first}))
    assert tied.weights == {"a": first, "b": first}


@pytest.mark.parametrize("shape", [(0, 2**63), (0, 2**62, 2), (2**40, 0, 2**40)])
def test_a_shape_torch_cannot_make_is_refused(shape: tuple[int, ...]) -> None:
    empty = TensorRecord("float32", shape, Blob(0, ()))
    with pytest.raises(FormatError, match="no tensor can have the shape"):
        unpack(manifest_with_weights({"w": empty}))
    sharded = ShardedTensor("float32", shape, (((0,) * len(shape), empty),))
    with pytest.raises(FormatError, match="no tensor can have the shape"):
        unpack(manifest_with_weights({"w": sharded}))
    assert unpack(manifest_with_weights({"w": TensorRecord("float32", (0, 2**62), Blob(0, ()))}))


@pytest.mark.parametrize(("code", "data", "message"), [
    (9, {"dtype": "bfloat16", "shape": [1], "size": 2, "chunks": [D1]}, "which numpy has not"),
    (10, ["float64", b"\x00" * 4], "cannot be 4 bytes"),
    (10, ["object", b"\x00" * 8], "numpy scalar of dtype 'object'"),
    (11, "float32; rm -rf", "torch.dtype named"),
    (12, "cuda:0/../x", "torch.device"),
    (13, b"", "at most 512 bytes"),
    (13, b"\x01" * 513, "at most 512 bytes"),
])
def test_values_kept_for_an_exact_resume_are_checked_like_any_other(code: int, data: object, message: str) -> None:
    """Extension types 9 to 13 (revision 2.5): a numpy array or scalar of a dtype numpy
    has not, or of the wrong size, a dtype or device that no torch names, an int of no
    bytes or thousands of them, make the manifest malformed."""
    with pytest.raises(FormatError, match=message):
        unpack(manifest_with_weights({"w": msgpack.ExtType(code, pack_tree(data))}))


@pytest.mark.parametrize("field", ["sample", "feedback", "glyphs"])
def test_a_file_of_a_run_larger_than_any_a_save_takes_is_refused(field: str) -> None:
    """A blob may name one chunk many times: kilobytes of manifest must not claim 2.5 GiB of
    feedback that a listing would read."""
    huge = {"size": 40 * 64 * 1024 * 1024, "chunks": [D1] * 40}
    fields = unpack_tree(pack(full_manifest()))
    fields[field] = {"A": huge} if field == "glyphs" else huge
    with pytest.raises(FormatError, match="more than the 16,777,216"):
        unpack(pack_tree(fields))


def test_sharded_pieces_are_checked_in_about_n_log_n() -> None:
    """4,096 pieces along one dimension (a tensor split by columns), a 64 x 64 grid, and
    4,096 bricks laid like a wall (no grid) are each checked in well under a second."""
    import random
    import time

    def tensor(boxes: list[tuple[tuple[int, int], tuple[int, int]]], shape: tuple[int, int]) -> ShardedTensor:
        return ShardedTensor("uint8", shape, tuple(
            (start, TensorRecord("uint8", size, Blob(size[0] * size[1], (D1,)))) for start, size in boxes))

    columns = tensor([((0, i), (4, 1)) for i in range(4096)], (4, 4096))
    grid = tensor([((i, j), (1, 1)) for i in range(64) for j in range(64)], (64, 64))
    even = [((row, 2 * i), (1, 2)) for row in range(0, 64, 2) for i in range(63)]
    odd = [((row, 2 * i + 1), (1, 2)) for row in range(1, 64, 2) for i in range(62)]
    ends = [((row, column), (1, 1)) for row in range(1, 64, 2) for column in (0, 125)]
    wall = tensor(even + odd + ends, (64, 126))
    rows = []  # each of 64 rows cut at 63 places of its own: no small grid, so the sweep checks them
    for row in range(64):
        cuts = [0, *sorted(random.Random(row).sample(range(1, 100_000), 63)), 100_000]
        rows += [((row, start), (1, end - start)) for start, end in itertools.pairwise(cuts)]
    for sharded in (columns, grid, wall, tensor(rows, (64, 100_000))):
        started = time.perf_counter()
        assert unpack(manifest_with_weights({"w": sharded})).weights == {"w": sharded}
        assert time.perf_counter() - started < 1.0
    overlapping = tensor([((0, 0), (4, 2))] + [((0, i), (4, 1)) for i in range(1, 1023)], (4, 1024))
    with pytest.raises(FormatError, match="overlap|add up"):
        unpack(manifest_with_weights({"w": overlapping}))
    last = len(even) + len(odd) - 1  # the last brick of the last row, at column 123
    shifted = wall.pieces[:last] + (((63, 121), wall.pieces[last][1]),) + wall.pieces[last + 1:]
    with pytest.raises(FormatError, match="overlap"):  # the last brick one column back: a gap, an overlap
        unpack(manifest_with_weights({"w": ShardedTensor("uint8", (64, 126), shifted)}))


def test_empty_pieces_may_sit_anywhere_inside_a_sharded_tensor() -> None:
    empty = TensorRecord("float32", (0, 6), Blob(0, ()))
    pieces = (((0, 0), piece(2, 6, D1)), ((0, 0), empty), ((2, 0), piece(2, 6, D2)), ((4, 0), empty))
    sharded = ShardedTensor("float32", (4, 6), pieces)
    assert unpack(manifest_with_weights({"w": sharded})).weights == {"w": sharded}
