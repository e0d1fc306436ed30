"""Objects: addressing, compression, dedup, chunking and verification on every read."""

from __future__ import annotations

import os
import time
from pathlib import Path

import blake3
import pytest
import zstandard
from hypothesis import given, settings
from hypothesis import strategies as st

from aoe.backend import LocalBackend
from aoe.errors import CorruptObjectError, InvalidNameError, ObjectNotFoundError
from aoe.objects import (
    CHUNK_SIZE,
    CODEC_RAW,
    CODEC_ZSTD,
    HEADER,
    Blob,
    ObjectStore,
    decode,
    encode,
    hash_bytes,
    object_key,
    parse_digest,
)


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
