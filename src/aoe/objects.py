"""Objects: content-addressed, compressed, verified blobs on top of a backend.

An object's address is the BLAKE3 hex digest of its *uncompressed* content, so the
codec can change without breaking dedup or old objects; the codec is recorded in a
small header of each stored object. Every read re-hashes what it decoded: a damaged
object raises :class:`CorruptObjectError`, it never returns wrong bytes.

Large contents are cut into fixed-size chunks, each its own object, and described by
a :class:`Blob` (total size and chunk digests): unchanged chunks deduplicate, and no
step has to hold more than a chunk of compressed data at once.
"""

from __future__ import annotations

import os
import re
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import NewType, TypeVar

import blake3
import zstandard

from .backend import Backend, Buffer
from .errors import CorruptObjectError, InvalidNameError, NotFoundError, ObjectNotFoundError

Digest = NewType("Digest", str)
"""64 lowercase hex characters: the BLAKE3-256 of an object's uncompressed content."""

OBJECTS_PREFIX = ".objects"
MAGIC = b"AOE1"
HEADER = struct.Struct("<4sBQ")  # magic, codec id, uncompressed size
CODEC_RAW = 0
CODEC_ZSTD = 1
CODEC_NAMES = {CODEC_RAW: "raw", CODEC_ZSTD: "zstd"}
ZSTD_LEVEL = 1
MIN_GAIN = 0.98
"""Compressed output larger than this fraction of the input is stored raw instead."""

PARALLEL_MIN_BYTES = 256 * 1024
"""Contents smaller than this are handled on the calling thread (see ``_parallel``)."""

CHUNK_SIZE = 8 * 1024 * 1024
"""Blobs are cut into chunks of this many bytes (the last one shorter)."""

_DIGEST_RE = re.compile(r"[0-9a-f]{64}")
_local = threading.local()
T = TypeVar("T")
R = TypeVar("R")


def _result(entry: Future[R] | tuple[R]) -> R:
    return entry[0] if isinstance(entry, tuple) else entry.result()


def parse_digest(text: str) -> Digest:
    """Validate a digest before it is used to build any path."""
    if not isinstance(text, str) or not _DIGEST_RE.fullmatch(text):
        raise InvalidNameError(
            f"invalid object id {text!r}: expected 64 lowercase hex characters (a BLAKE3 digest)"
        )
    return Digest(text)


def hash_bytes(data: Buffer) -> Digest:
    """The address of ``data``."""
    return Digest(blake3.blake3(data).hexdigest())


def object_key(digest: Digest) -> str:
    """Where an object lives: sharded by its first two hex characters."""
    return f"{OBJECTS_PREFIX}/{digest[:2]}/{digest}"


def encode(data: Buffer) -> list[Buffer]:
    """The stored form of ``data``: header and payload, compressed only if that pays."""
    size = memoryview(data).nbytes
    packed = _compressor().compress(data) if size else b""
    if size and len(packed) <= size * MIN_GAIN:
        return [HEADER.pack(MAGIC, CODEC_ZSTD, size), packed]
    return [HEADER.pack(MAGIC, CODEC_RAW, size), data]


def decode(stored: bytes, digest: Digest) -> bytes:
    """The content of a stored object, verified against its address."""
    if len(stored) < HEADER.size:
        raise _corrupt(digest, f"truncated to {len(stored)} bytes")
    magic, codec, size = HEADER.unpack_from(stored)
    if magic != MAGIC:
        raise _corrupt(digest, "bad header")
    payload = memoryview(stored)[HEADER.size :]
    if codec == CODEC_RAW:
        data = bytes(payload)
    elif codec == CODEC_ZSTD:
        try:
            data = _decompressor().decompress(payload, max_output_size=size)
        except zstandard.ZstdError as exc:
            raise _corrupt(digest, f"zstd cannot decode it ({exc})") from None
    else:
        raise _corrupt(digest, f"unknown codec id {codec}")
    if len(data) != size:
        raise _corrupt(digest, f"{len(data)} bytes decoded, header says {size}")
    if hash_bytes(data) != digest:
        raise _corrupt(digest, "content does not match its address")
    return data


def _corrupt(digest: Digest, why: str) -> CorruptObjectError:
    return CorruptObjectError(
        f"object {digest} is corrupt: {why}; run `aoe store fsck` to see what it affects",
        digest=digest, why=why,
    )


def _compressor() -> zstandard.ZstdCompressor:
    """One compressor per thread: zstandard contexts are not thread-safe."""
    if not hasattr(_local, "compressor"):
        _local.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    return _local.compressor


def _decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_local, "decompressor"):
        _local.decompressor = zstandard.ZstdDecompressor()
    return _local.decompressor


@dataclass(frozen=True)
class Blob:
    """A content of ``size`` bytes stored as the concatenation of ``chunks``."""

    size: int
    chunks: tuple[Digest, ...]


def chunk_views(data: Buffer, chunk_size: int = CHUNK_SIZE) -> list[memoryview]:
    """Zero-copy views of ``data`` cut into chunks (none for empty data)."""
    view = memoryview(data).cast("B")
    return [view[i : i + chunk_size] for i in range(0, len(view), chunk_size)]


class ObjectStore:
    """Put and get verified objects and chunked blobs through a backend."""

    def __init__(self, backend: Backend, workers: int | None = None) -> None:
        self.backend = backend
        self.workers = workers or os.cpu_count() or 1
        self.on_progress: Callable[[int], None] | None = None
        """Called with the byte count of each object put or got (for progress bars)."""

    def put(self, data: Buffer) -> Digest:
        """Store ``data`` once; storing it again writes nothing but refreshes its mtime."""
        digest = hash_bytes(data)
        key = object_key(digest)
        if not self.backend.touch(key):
            self.backend.write(key, encode(data), exclusive=True)
        if self.on_progress:
            self.on_progress(memoryview(data).nbytes)
        return digest

    def get(self, digest: Digest) -> bytes:
        """The verified content of an object."""
        try:
            stored = self.backend.read(object_key(parse_digest(digest)))
        except NotFoundError:
            raise ObjectNotFoundError(
                f"object {digest} is missing from {OBJECTS_PREFIX}/; "
                "run `aoe store fsck` to see what it affects"
            ) from None
        data = decode(stored, digest)
        if self.on_progress:
            self.on_progress(len(data))
        return data

    def touch(self, digest: Digest) -> bool:
        """Refresh an object's mtime (protecting it from gc); False if it is missing."""
        return self.backend.touch(object_key(parse_digest(digest)))

    def stored_size(self, digest: str) -> int:
        """Bytes the object takes on disk (compressed, header included); 0 if missing."""
        stat = self.backend.stat(object_key(parse_digest(digest)))
        return stat[0] if stat else 0

    def has(self, digest: Digest) -> bool:
        return self.backend.exists(object_key(parse_digest(digest)))

    def put_many(self, contents: Iterable[Buffer]) -> list[Digest]:
        """Store many contents; large ones are hashed, compressed and written in parallel."""
        items = list(contents)
        return list(self._parallel(self.put, items, [memoryview(c).nbytes for c in items]))

    def get_many(self, digests: Iterable[Digest], sizes: Iterable[int] | None = None) -> Iterator[bytes]:
        """Verified contents in order; large ones (by ``sizes``, if known) read in parallel."""
        items = list(digests)
        return self._parallel(self.get, items, list(sizes) if sizes is not None else None)

    def _parallel(self, action: Callable[[T], R], items: Sequence[T], sizes: Sequence[int] | None = None) -> Iterator[R]:
        """``map(action, items)``, with the items of ``PARALLEL_MIN_BYTES`` or more (all,
        when no sizes are given) on worker threads: blake3 and zstd release the GIL on
        large buffers, but for small ones a thread costs more than the work. At most two
        tasks per worker are in flight, so memory stays bounded."""
        if self.workers == 1 or not items:
            yield from map(action, items)
            return
        with ThreadPoolExecutor(self.workers) as pool:
            pending: deque[Future[R] | tuple[R]] = deque()
            for index, item in enumerate(items):
                if sizes is not None and sizes[index] < PARALLEL_MIN_BYTES:
                    pending.append((action(item),))
                else:
                    pending.append(pool.submit(action, item))
                while pending and (isinstance(pending[0], tuple) or len(pending) >= 2 * self.workers):
                    yield _result(pending.popleft())
            while pending:
                yield _result(pending.popleft())

    def put_blobs(self, contents: Iterable[Buffer]) -> list[Blob]:
        """Store each content as a chunked blob; all chunks of all blobs go in parallel."""
        pieces = [chunk_views(content) for content in contents]
        digests = iter(self.put_many(view for views in pieces for view in views))
        return [
            Blob(sum(len(v) for v in views), tuple(next(digests) for _ in views))
            for views in pieces
        ]

    def put_blob(self, content: Buffer) -> Blob:
        return self.put_blobs([content])[0]

    def read_blobs_into(self, targets: Iterable[tuple[Blob, memoryview]]) -> None:
        """Fill each buffer with its blob's verified content; all chunks of all blobs
        are read and decoded in parallel, and copied into place in order."""
        targets = list(targets)
        chunks = self.get_many(
            (d for blob, _ in targets for d in blob.chunks),
            (blob.size // len(blob.chunks) for blob, _ in targets for _ in blob.chunks),
        )
        for blob, out in targets:
            if len(out) != blob.size:
                raise ValueError(f"buffer of {len(out)} bytes for a blob of {blob.size}")
            offset = 0
            for _ in blob.chunks:
                chunk = next(chunks)
                end = offset + len(chunk)
                if end > blob.size:
                    break
                out[offset:end] = chunk
                offset = end
            if offset != blob.size:
                raise CorruptObjectError(
                    f"a blob of {blob.size} bytes has chunks adding up to another size; "
                    "the manifest naming it is damaged: run `aoe store fsck`"
                )

    def get_blob(self, blob: Blob) -> bytes:
        """A blob's verified content as bytes."""
        out = bytearray(blob.size)
        self.read_blobs_into([(blob, memoryview(out))])
        return bytes(out)
