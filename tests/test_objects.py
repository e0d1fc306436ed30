"""Objects: addressing, compression, dedup, chunking and verification on every read."""

from __future__ import annotations

import os
import time
from pathlib import Path

import blake3
import numpy as np
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

import aoe.codec
import aoe.objects
from aoe.backends.local import LocalBackend
from aoe.codec import CODEC_PLANES, CODEC_RAW, CODEC_ZSTD, HEADER, PLANE, decode, encode, hash_bytes
from aoe.errors import CorruptObjectError, InvalidNameError, ObjectNotFoundError
from aoe.layout import object_key, pending_key
from aoe.names import parse_digest
from aoe.objects import CHUNK_SIZE, Blob, ObjectStore


@pytest.fixture
def objects(tmp_path: Path) -> ObjectStore:
    return ObjectStore(LocalBackend(tmp_path))


def stored_path(objects: ObjectStore, digest: str) -> Path:
    return objects.backend.path(object_key(digest))  # type: ignore[attr-defined]


def test_the_address_is_the_blake3_of_the_uncompressed_content(objects: ObjectStore) -> None:
    data = b"weights " * 1000
    digest = objects.put(data)
    assert digest == blake3.blake3(data).hexdigest()
    assert stored_path(objects, digest).parent.name == digest[:2]
    assert objects.get(digest) == data


def test_compressible_content_is_stored_with_zstd_and_verifiable_by_hand(objects: ObjectStore) -> None:
    data = b"abc" * 10_000
    digest = objects.put(data)
    stored = stored_path(objects, digest).read_bytes()
    magic, codec, size = HEADER.unpack_from(stored)
    assert (magic, codec, size) == (b"AOE1", CODEC_ZSTD, len(data))
    assert len(stored) < len(data) / 10
    # The recipe of docs/format.md: skip the 13-byte header, zstd -d, b3sum.
    payload = zstandard.ZstdDecompressor().decompress(stored[13:])
    assert blake3.blake3(payload).hexdigest() == digest


def test_incompressible_content_is_stored_raw(objects: ObjectStore) -> None:
    data = os.urandom(50_000)
    stored = stored_path(objects, objects.put(data)).read_bytes()
    assert stored[4] == CODEC_RAW and stored[HEADER.size :] == data


def test_putting_the_same_content_twice_writes_nothing_and_refreshes_mtime(objects: ObjectStore) -> None:
    digest = objects.put(b"same")
    path = stored_path(objects, digest)
    old = time.time() - 86_400
    os.utime(path, (old, old))
    inode = path.stat().st_ino
    assert objects.put(b"same") == digest
    assert path.stat().st_ino == inode and path.stat().st_mtime > old + 3600


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b[:-1] + bytes([b[-1] ^ 0x01]), "zstd cannot decode|does not match its address"),
        (lambda b: b[:5], "truncated"),
        (lambda b: b"XXXX" + b[4:], "bad header"),
        (lambda b: b[:4] + bytes([9]) + b[5:], "unknown codec"),
        (lambda b: b[: HEADER.size] + b"not zstd at all", "zstd cannot decode"),
    ],
)
def test_every_kind_of_damage_is_caught_on_read(objects: ObjectStore, damage, message: str) -> None:
    digest = objects.put(b"abc" * 1000)
    path = stored_path(objects, digest)
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(CorruptObjectError, match=message) as caught:
        objects.get(digest)
    assert digest in str(caught.value) and "aoe store fsck" in str(caught.value)


def test_a_flipped_bit_in_a_raw_object_breaks_the_hash(objects: ObjectStore) -> None:
    digest = objects.put(os.urandom(1000))
    path = stored_path(objects, digest)
    stored = bytearray(path.read_bytes())
    stored[500] ^= 0x10
    path.write_bytes(stored)
    with pytest.raises(CorruptObjectError, match="does not match its address"):
        objects.get(digest)


def test_a_raw_object_with_a_wrong_size_header_is_corrupt() -> None:
    stored = b"".join(bytes(p) for p in encode(os.urandom(100)))
    forged = HEADER.pack(b"AOE1", CODEC_RAW, 99) + stored[HEADER.size :]
    with pytest.raises(CorruptObjectError, match="header says 99"):
        decode(forged, hash_bytes(stored[HEADER.size :]))


def test_a_missing_object_is_named(objects: ObjectStore) -> None:
    digest = hash_bytes(b"never stored")
    with pytest.raises(ObjectNotFoundError, match=digest):
        objects.get(digest)
    assert not objects.has(digest) and not objects.touch(digest)


@pytest.mark.parametrize("text", ["../../etc/passwd", "ABC", "g" * 64, "a" * 63, 42])
def test_invalid_digests_are_refused_before_any_path_is_built(text) -> None:
    with pytest.raises(InvalidNameError):
        parse_digest(text)


def test_large_blobs_are_chunked_and_equal_chunks_stored_once(objects: ObjectStore) -> None:
    data = bytes(CHUNK_SIZE) * 2 + b"tail"
    blob = objects.put_blob(data)
    assert blob.size == len(data) and len(blob.chunks) == 3
    assert blob.chunks[0] == blob.chunks[1]
    assert objects.get_blob(blob) == data
    assert objects.put_blob(b"") == Blob(0, ())
    assert objects.get_blob(Blob(0, ())) == b""


def test_a_blob_whose_chunks_do_not_add_up_is_refused(objects: ObjectStore) -> None:
    digest = objects.put(b"12345")
    with pytest.raises(CorruptObjectError, match="another size"):
        objects.get_blob(Blob(4, (digest,)))
    with pytest.raises(CorruptObjectError, match="another size"):
        objects.get_blob(Blob(6, (digest,)))


def test_progress_callback_counts_bytes(objects: ObjectStore) -> None:
    seen: list[int] = []
    objects.on_progress = seen.append
    objects.get(objects.put(b"x" * 10))
    assert seen == [10, 10]


def test_one_worker_runs_serially(tmp_path: Path) -> None:
    objects = ObjectStore(LocalBackend(tmp_path), workers=1)
    digests = objects.put_many([b"a", b"b"])
    assert list(objects.get_many(digests)) == [b"a", b"b"]


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=5000) | st.builds(lambda n, b: b * n, st.integers(0, 3000), st.binary(min_size=1, max_size=4)))
def test_encode_then_decode_is_the_identity(data: bytes) -> None:
    stored = b"".join(bytes(p) for p in encode(data))
    assert decode(stored, hash_bytes(data)) == data


def trained_like_float32(count: int, seed: int = 0) -> bytes:
    """Weights as training leaves them: small normal values, so the sign/exponent byte
    takes few values while the mantissa bytes are noise."""
    return (np.random.default_rng(seed).standard_normal(count) * 0.02).astype("<f4").tobytes()


def test_floats_are_split_into_byte_planes_and_only_the_exponent_plane_is_compressed(objects: ObjectStore) -> None:
    data = trained_like_float32(200_000)
    digest = objects.put(data, width=4)
    stored = stored_path(objects, digest).read_bytes()
    assert HEADER.unpack_from(stored) == (b"AOE1", CODEC_PLANES, len(data))
    payload = stored[HEADER.size :]
    assert payload[0] == 4
    table = [PLANE.unpack_from(payload, 1 + k * PLANE.size) for k in range(4)]
    assert [codec for codec, _ in table] == [CODEC_RAW, CODEC_RAW, CODEC_RAW, CODEC_ZSTD]
    assert len(stored) < 0.85 * len(data)
    # The recipe of docs/format.md: cut the planes out, decode each, interleave, b3sum.
    offset, planes = 1 + 4 * PLANE.size, []
    for codec, length in table:
        plane = payload[offset : offset + length]
        offset += length
        planes.append(zstandard.ZstdDecompressor().decompress(plane) if codec == CODEC_ZSTD else plane)
    content = np.stack([np.frombuffer(p, np.uint8) for p in planes], axis=1).tobytes()
    assert content == data and blake3.blake3(content).hexdigest() == digest
    assert objects.get(digest) == data


@settings(max_examples=60, deadline=None)
@given(st.sampled_from([2, 4, 8]), st.integers(0, 600), st.integers(0, 2**32 - 1))
def test_planes_round_trip_for_any_width_and_length(width: int, count: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 4, count * width, dtype=np.uint8)  # compressible planes
    values[::width] = rng.integers(0, 256, count, dtype=np.uint8)  # and a noisy one
    data = values.tobytes()
    for trailing in (b"", b"x"):  # a length that is not a multiple of the width cannot use planes
        content = data + trailing
        stored = b"".join(bytes(p) for p in encode(content, width))
        assert bytes(decode(stored, hash_bytes(content))) == content
        if trailing:
            assert stored[4] != CODEC_PLANES


def test_floats_whose_planes_do_not_compress_are_stored_raw(objects: ObjectStore) -> None:
    data = os.urandom(40_000)
    stored = stored_path(objects, objects.put(data, width=4)).read_bytes()
    assert stored[4] == CODEC_RAW and stored[HEADER.size :] == data


def test_incompressible_content_costs_only_a_sample(monkeypatch: pytest.MonkeyPatch) -> None:
    compressed: list[int] = []
    real = zstandard.ZstdCompressor(level=1)

    class Counting:
        def compress(self, data) -> bytes:
            compressed.append(memoryview(data).nbytes)
            return real.compress(data)

    monkeypatch.setattr(aoe.codec, "_compressor", Counting)
    data = os.urandom(1_000_000)  # a PNG is as incompressible as this
    assert encode(data)[1] == data
    assert compressed == [4 * aoe.codec.SAMPLE_BYTES]


def planes_object(data: bytes) -> bytearray:
    return bytearray(b"".join(bytes(p) for p in encode(data, 4)))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda b: b.__setitem__(HEADER.size, 3), "bad plane table"),
        (lambda b: b.__setitem__(HEADER.size, 0), "bad plane table"),
        (lambda b: b.__delitem__(slice(HEADER.size + 5, None)), "bad plane table"),
        (lambda b: b.__setitem__(HEADER.size + 1, 7), "plane 0 has codec 7"),
        (lambda b: b.__delitem__(slice(-10, None)), "planes take .* of a payload"),
        (lambda b: b.extend(b"extra"), "planes take .* of a payload"),
        (lambda b: b.__setitem__(HEADER.size + 40, b[HEADER.size + 40] ^ 1), "does not match its address"),
    ],
)
def test_every_kind_of_damage_to_planes_is_caught(damage, message: str) -> None:
    data = trained_like_float32(10_000)
    stored = planes_object(data)
    assert stored[4] == CODEC_PLANES
    damage(stored)
    with pytest.raises(CorruptObjectError, match=message):
        decode(bytes(stored), hash_bytes(data))


def test_a_plane_of_the_wrong_length_is_corrupt() -> None:
    data = trained_like_float32(1000)
    stored = planes_object(data)
    entry = HEADER.size + 1  # plane 0 is raw: claim one byte less, and give one byte less
    codec, length = PLANE.unpack_from(stored, entry)
    stored[entry : entry + PLANE.size] = PLANE.pack(codec, length - 1)
    del stored[HEADER.size + 1 + 4 * PLANE.size]
    with pytest.raises(CorruptObjectError, match="plane 0 has codec 0 and 999 bytes for 1000 elements"):
        decode(bytes(stored), hash_bytes(data))


def test_decoding_into_a_buffer_fills_it_in_place(objects: ObjectStore) -> None:
    for data, width in ((trained_like_float32(5000), 4), (b"abc" * 5000, 1), (os.urandom(5000), 1)):
        out = memoryview(bytearray(len(data)))
        objects.read_into(objects.put(data, width), out)
        assert out == data
        with pytest.raises(aoe.codec.SizeMismatch):
            objects.read_into(hash_bytes(data), memoryview(bytearray(len(data) + 1)))


def test_verify_reads_without_keeping_and_names_damage(objects: ObjectStore) -> None:
    floats, text = trained_like_float32(50_000), b"feedback " * 100
    digests = [objects.put(floats, width=4), objects.put(text)]
    assert [objects.verify(d) for d in digests] == [len(floats), len(text)]
    path = stored_path(objects, digests[0])
    stored = bytearray(path.read_bytes())
    stored[100] ^= 0x01
    path.write_bytes(stored)
    with pytest.raises(CorruptObjectError, match=digests[0]):
        objects.verify(digests[0])


def test_blobs_cut_into_other_chunk_sizes_are_read_in_order(objects: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """Readers must accept any chunking: the parallel in-place read assumes the standard
    size and falls back to reading in order when a chunk says otherwise."""
    monkeypatch.setattr(aoe.objects, "CHUNK_SIZE", 16)
    data = bytes(range(40))
    standard = objects.put_blob(data)
    assert [objects.get(d) for d in standard.chunks] == [data[:16], data[16:32], data[32:]]
    same_count = Blob(40, tuple(objects.put(part) for part in (data[:10], data[10:30], data[30:])))
    other_count = Blob(40, tuple(objects.put(part) for part in (data[:20], data[20:])))
    for blob in (standard, same_count, other_count):
        assert objects.get_blob(blob) == data
    with pytest.raises(ValueError, match="buffer of 3 bytes"):
        objects.read_blobs_into([(standard, memoryview(bytearray(3)))])


def test_small_contents_are_packed_into_one_object_and_read_back_as_slices(objects: ObjectStore) -> None:
    contents = [bytes([n]) * (100 + n) for n in range(50)]
    blobs = objects.put_blobs(contents)
    assert len({b.chunks for b in blobs}) == 1  # one pack for all fifty
    assert [b.offset for b in blobs[:3]] == [0, 100, 201] and blobs[0].digest == hash_bytes(contents[0])
    assert [objects.get_blob(b) for b in blobs] == contents
    outs = [bytearray(len(c)) for c in contents]
    objects.read_blobs_into((b, memoryview(o)) for b, o in zip(blobs, outs))
    assert outs == contents
    assert {b.identity for b in blobs} == {(hash_bytes(c),) for c in contents}  # as if each were alone


def test_packs_follow_groups_and_a_lone_small_content_is_a_plain_object(objects: ObjectStore) -> None:
    a, b, c, d = objects.put_blobs([b"a" * 10, b"b" * 10, b"c" * 10, b"d" * 10], groups=["x", "x", "y", "z"])
    assert a.chunks == b.chunks != c.chunks  # x's two share a pack, y's and z's are apart
    assert c == Blob(10, (hash_bytes(b"c" * 10),)) and c.identity == c.chunks
    again = objects.put_blobs([b"a" * 10, b"b" * 10], groups=["x", "x"])
    assert again == [a, b]  # the same pack again: deduplicated


def test_equal_small_contents_are_packed_once(objects: ObjectStore) -> None:
    first, other, second = objects.put_blobs([b"same" * 10, b"else" * 10, b"same" * 10])
    assert first == second and objects.get(first.chunks[0]) == b"same" * 10 + b"else" * 10


def test_packs_never_hold_more_than_a_chunk(objects: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aoe.objects, "CHUNK_SIZE", 64)
    blobs = objects.put_blobs([bytes([n]) * 30 for n in range(5)] + [b"big" * 30])
    assert [len(objects.get(b.chunks[0])) for b in blobs[:5]] == [60, 60, 60, 60, 30]
    assert len(blobs[5].chunks) == 2 and blobs[5].offset is None  # not below a chunk: cut, not packed


@pytest.mark.parametrize("blob, message", [
    (lambda b: Blob(b.size, b.chunks, b.offset + 1, b.digest), "are not the content"),
    (lambda b: Blob(b.size, b.chunks, 10_000, b.digest), "are not the content"),
    (lambda b: Blob(b.size + 1, b.chunks, b.offset, b.digest), "are not the content"),
])
def test_a_slice_that_does_not_match_its_address_is_corrupt(objects: ObjectStore, blob, message: str) -> None:
    first, _ = objects.put_blobs([b"x" * 40, b"y" * 40])
    damaged = blob(first)
    with pytest.raises(CorruptObjectError, match=message):
        objects.get_blob(damaged)
    with pytest.raises(CorruptObjectError, match=message):
        objects.read_blobs_into([(damaged, memoryview(bytearray(damaged.size)))])


def test_floats_are_stored_whole_without_planes_when_asked(tmp_path: Path) -> None:
    data = trained_like_float32(100_000)
    planes = ObjectStore(LocalBackend(tmp_path / "a"), compress_floats=True)
    whole = ObjectStore(LocalBackend(tmp_path / "b"), compress_floats=False)
    digest = planes.put(data, 4)
    assert whole.put(data, 4) == digest  # the same address, however it is stored
    assert planes.backend.read(object_key(digest))[4] == CODEC_PLANES
    assert whole.backend.read(object_key(digest))[4] != CODEC_PLANES
    assert planes.get(digest) == whole.get(digest) == data


@pytest.mark.parametrize("cores, env, expected", [(2, "", False), (4, "", True), (2, "1", True), (16, "0", False)])
def test_float_planes_follow_the_cores_unless_told(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                   cores: int, env: str, expected: bool) -> None:
    monkeypatch.setattr(os, "cpu_count", lambda: cores)
    monkeypatch.setenv("AOE_COMPRESS_FLOATS", env)
    assert ObjectStore(LocalBackend(tmp_path)).compress_floats is expected


def test_raw_objects_are_read_in_place_and_still_verified(objects: ObjectStore) -> None:
    data = os.urandom(100_000)  # incompressible: stored raw
    digest = objects.put(data)
    out = bytearray(len(data))
    objects.read_into(digest, memoryview(out))
    assert out == data
    path = stored_path(objects, digest)
    damaged = bytearray(path.read_bytes())
    damaged[-1] ^= 1
    path.write_bytes(bytes(damaged))
    with pytest.raises(CorruptObjectError, match="does not match its address"):
        objects.read_into(digest, memoryview(bytearray(len(data))))


def test_an_object_gc_set_aside_is_still_read_into_place(tmp_path: Path) -> None:
    objects = ObjectStore(LocalBackend(tmp_path))
    data = os.urandom(1000)
    digest = objects.put(data)
    aside = tmp_path / pending_key(digest)
    aside.parent.mkdir(parents=True, exist_ok=True)
    stored_path(objects, digest).rename(aside)
    out = bytearray(len(data))
    objects.read_into(digest, memoryview(out))
    assert out == data


def test_a_recalled_content_is_recognized_by_its_fingerprint_and_a_new_one_hashed(
        objects: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    """``recall`` (a tensor not written to since its last save): a content put with it
    before is recognized by its XXH3 fingerprint, without BLAKE3; any other is hashed,
    and the address is always BLAKE3's."""
    hashed: list[bytes] = []
    real = aoe.objects.hash_bytes
    monkeypatch.setattr(aoe.objects, "hash_bytes", lambda data: hashed.append(bytes(data)) or real(data))
    first = os.urandom(1000)
    changed = bytearray(first)
    changed[500] ^= 1
    assert objects.put(first, recall=True) == blake3.blake3(first).hexdigest()
    assert objects.put(first, recall=True) == blake3.blake3(first).hexdigest()
    assert hashed == [first]  # the second time recognized
    assert objects.put(bytes(changed), recall=True) == blake3.blake3(changed).hexdigest()
    assert objects.put(first) == blake3.blake3(first).hexdigest()  # without recall: hashed
    assert hashed == [first, bytes(changed), first]


def test_a_recalled_content_whose_object_is_gone_is_written_again(objects: ObjectStore) -> None:
    data = os.urandom(2000)
    digest = objects.put(data, recall=True)
    stored_path(objects, digest).unlink()  # collected by a gc meanwhile
    assert objects.put(data, recall=True) == digest
    assert objects.get(digest) == data


def test_recalled_fingerprints_are_bounded(objects: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(aoe.objects, "RECALLED_MAX", 2)
    hashed: list[bytes] = []
    real = aoe.objects.hash_bytes
    monkeypatch.setattr(aoe.objects, "hash_bytes", lambda data: hashed.append(bytes(data)) or real(data))
    contents = [os.urandom(100) for _ in range(3)]
    for data in contents:
        objects.put(data, recall=True)
    objects.put(contents[0], recall=True)  # forgotten when the third came: hashed again
    objects.put(contents[2], recall=True)  # remembered since
    assert hashed == [*contents, contents[0]]


def test_put_blobs_recalls_chunks_and_packs_only_when_every_content_in_them_is_recalled(
        objects: ObjectStore, monkeypatch: pytest.MonkeyPatch) -> None:
    recalled: list[bool] = []
    real = ObjectStore.put
    monkeypatch.setattr(ObjectStore, "put", lambda self, data, width=1, write=None, *, recall=False:
                        recalled.append(recall) or real(self, data, width, write, recall=recall))
    large, small_a, small_b = os.urandom(aoe.objects.PACK_BELOW), os.urandom(10), os.urandom(20)
    objects.put_blobs([large, small_a, small_b], recall=[True, True, False])
    assert recalled == [True, False]  # the large one alone; the pack holds one not recalled
    recalled.clear()
    objects.put_blobs([large, small_a, small_b], recall=[False, True, True])
    assert recalled == [False, True]
