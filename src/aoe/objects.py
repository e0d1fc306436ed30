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
import struct
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, TypeVar

import blake3
import zstandard

from .backends import Backend, Buffer
from .errors import (
    CorruptObjectError,
    NotFoundError,
    ObjectNotFoundError,
    UnexpectedFileError,
)
from .layout import OBJECTS, object_key, pending_key
from .limits import MAX_OBJECT_BYTES
from .names import Digest, parse_digest

MAGIC = b"AOE1"
HEADER = struct.Struct("<4sBQ")  # magic, codec id, uncompressed size
PLANE = struct.Struct("<BQ")  # a plane's codec id (raw or zstd) and stored length
CODEC_RAW = 0
CODEC_ZSTD = 1
CODEC_PLANES = 2
CODEC_NAMES = {CODEC_RAW: "raw", CODEC_ZSTD: "zstd", CODEC_PLANES: "planes"}
ZSTD_LEVEL = 1
MIN_GAIN = 0.98
"""Compressed output larger than this fraction of the input is stored raw instead."""

SAMPLE_BYTES = 16 * 1024
"""Contents over four samples long are compressed only if four samples of this size,
spread over them, gain: incompressible data (PNG, mantissa bytes) then costs ~nothing."""

PARALLEL_MIN_BYTES = 256 * 1024
"""Contents smaller than this are handled on the calling thread (see ``parallel``)."""

ROUND_TRIP_WORKERS = 16
"""Requests in flight at once where each is a network round trip: latency, not CPU, bounds."""

CHUNK_SIZE = 8 * 1024 * 1024
"""Blobs are cut into chunks of this many bytes (the last one shorter)."""

_local = threading.local()
T = TypeVar("T")
R = TypeVar("R")


def _result(entry: Future[R] | tuple[R]) -> R:
    return entry[0] if isinstance(entry, tuple) else entry.result()


def hash_bytes(data: Buffer) -> Digest:
    """The address of ``data``."""
    return Digest(blake3.blake3(data).hexdigest())


# -- codecs -------------------------------------------------------------------------


def encode(data: Buffer, width: int = 1) -> list[Buffer]:
    """The stored form of ``data``: header and payload, compressed only where that pays.

    ``width`` > 1 says ``data`` is an array of floating-point elements of that many
    bytes. Their bytes are then split into planes (byte k of every element), and each
    plane is compressed alone, only if it gains: the sign/exponent plane of trained
    weights shrinks to about a third, the mantissa planes are noise and stay raw.
    """
    view = memoryview(data).cast("B")
    size = view.nbytes
    if width > 1 and size and size % width == 0:
        planes = _encode_planes(view, width)
        if planes:
            return [HEADER.pack(MAGIC, CODEC_PLANES, size), *planes]
    else:
        packed = _pack(view, _compressor())
        if packed is not None:
            return [HEADER.pack(MAGIC, CODEC_ZSTD, size), packed]
    return [HEADER.pack(MAGIC, CODEC_RAW, size), view]


def _pack(view: memoryview, compressor: zstandard.ZstdCompressor) -> bytes | None:
    """``view`` compressed, or None when that would save less than 2%."""
    size = len(view)
    if size == 0:
        return None
    if size > 4 * SAMPLE_BYTES:
        step = size // 4
        sample = b"".join(view[i * step : i * step + SAMPLE_BYTES] for i in range(4))
        if len(compressor.compress(sample)) > len(sample) * MIN_GAIN:
            return None
    packed = compressor.compress(view)
    return packed if len(packed) <= size * MIN_GAIN else None


def _encode_planes(view: memoryview, width: int) -> list[Buffer] | None:
    """The planes payload (a table, then each plane raw or compressed); None if no
    plane gains, as then the raw content is smaller still."""
    np = _numpy()
    columns = np.frombuffer(view, np.uint8).reshape(-1, width)
    table = bytearray([width])
    payloads: list[Buffer] = []
    for k in range(width):
        plane = memoryview(np.ascontiguousarray(columns[:, k]))
        packed = _pack(plane, _plane_compressor())
        table += PLANE.pack(CODEC_ZSTD if packed is not None else CODEC_RAW, len(packed or plane))
        payloads.append(packed if packed is not None else plane)
    if all(table[1 + k * PLANE.size] == CODEC_RAW for k in range(width)):
        return None
    return [bytes(table), *payloads]


def decode(stored: Buffer, digest: Digest, out: memoryview | None = None) -> Buffer:
    """The content of a stored object, verified against its address.

    With ``out`` (a writable buffer of exactly the content's size) the content is
    decoded into it, with no copy beyond that, and ``out`` is returned. Nothing is
    allocated from a size the object declares before that size is checked: against
    ``out``, against :data:`MAX_OBJECT_BYTES`, and against the object's own length
    (raw content and raw planes) or its zstd frame's recorded content size.
    """
    stored = memoryview(stored)
    if len(stored) < HEADER.size:
        raise _corrupt(digest, f"truncated to {len(stored)} bytes")
    magic, codec, size = HEADER.unpack_from(stored)
    if magic != MAGIC:
        raise _corrupt(digest, "bad header")
    if out is not None and len(out) != size:
        raise SizeMismatch(size)
    if size > MAX_OBJECT_BYTES:
        raise _corrupt(digest, f"its header declares {size:,} bytes, more than an object may hold")
    payload = stored[HEADER.size :]
    if codec == CODEC_PLANES:
        table = _plane_table(payload, size, digest)
        target = memoryview(bytearray(size)) if out is None else out
        actual = _decode_planes(payload, table, size, digest, target)
        data: Buffer = target
    else:
        if codec == CODEC_RAW:
            if len(payload) != size:
                raise _corrupt(digest, f"{len(payload)} bytes of raw content, header says {size}")
            data = payload
        elif codec == CODEC_ZSTD:
            data = _decompress(payload, size, digest)
        else:
            raise _corrupt(digest, f"unknown codec id {codec}")
        if out is not None:
            out[:] = data
            data = out
        actual = hash_bytes(data)
    if actual != digest:
        raise _corrupt(digest, "content does not match its address")
    return data


class SizeMismatch(Exception):
    """An object's content is not the size its reader's buffer expects (internal)."""

    def __init__(self, size: int) -> None:
        super().__init__(size)
        self.size = size


def _decompress(payload: Buffer, size: int, digest: Digest) -> bytes:
    """Exactly one zstd frame that records its content size, ``size``, and nothing after
    it. The size is checked before zstd allocates anything: zstd sizes its output by
    the frame's own claim, whatever limit it is given."""
    try:
        declared = zstandard.get_frame_parameters(payload).content_size
        if declared != size:
            raise _corrupt(digest, f"its zstd frame declares {declared:,} bytes, not {size:,}"
                           if declared != zstandard.CONTENTSIZE_UNKNOWN else "its zstd frame records no size")
        return _decompressor().decompress(payload, allow_extra_data=False)
    except zstandard.ZstdError as exc:
        raise _corrupt(digest, f"zstd cannot decode it ({exc})") from None


MERGE_BLOCK = 64 * 1024
"""Elements interleaved and hashed per step of ``_decode_planes``: the block stays in
the CPU cache between the two (24% faster than whole chunks, measured)."""


def _plane_table(payload: memoryview, size: int, digest: Digest) -> list[tuple[int, int, int]]:
    """(codec, offset, length) of each plane, checked against the payload's length and
    the content size before anything is allocated for them."""
    width = payload[0] if len(payload) else 0
    table_size = 1 + width * PLANE.size
    if width < 2 or size % width or len(payload) < table_size:
        raise _corrupt(digest, f"bad plane table (element width {width})")
    count, offset, table = size // width, table_size, []
    for k in range(width):
        codec, length = PLANE.unpack_from(payload, 1 + k * PLANE.size)
        if codec not in (CODEC_RAW, CODEC_ZSTD) or (codec == CODEC_RAW and length != count):
            raise _corrupt(digest, f"plane {k} has codec {codec} and {length} bytes for {count} elements")
        table.append((codec, offset, length))
        offset += length
    if offset != len(payload):
        raise _corrupt(digest, f"its planes take {offset:,} bytes of a payload of {len(payload):,}")
    return table


def _decode_planes(payload: memoryview, table: list[tuple[int, int, int]], size: int, digest: Digest,
                   out: memoryview) -> Digest:
    """Interleave the planes into ``out``; the address of what was written."""
    np = _numpy()
    width = len(table)
    count = size // width
    planes = []
    for codec, offset, length in table:
        stored = payload[offset : offset + length]
        plane: Buffer = _decompress(stored, count, digest) if codec == CODEC_ZSTD else stored
        planes.append(np.frombuffer(plane, np.uint8))
    columns = np.frombuffer(out, np.uint8).reshape(-1, width)
    hasher = blake3.blake3()
    for start in range(0, count, MERGE_BLOCK):
        block = columns[start : start + MERGE_BLOCK]
        for k, plane in enumerate(planes):
            block[:, k] = plane[start : start + MERGE_BLOCK]
        hasher.update(block)
    return Digest(hasher.hexdigest())


def _corrupt(digest: Digest, why: str) -> CorruptObjectError:
    return CorruptObjectError(
        f"object {digest} is corrupt: {why}; run `aoe store fsck` to see what it affects",
        digest=digest, why=why,
    )


def _numpy() -> Any:
    """numpy, imported on first use: only plane-coded objects need it."""
    import numpy

    return numpy


def _compressor() -> zstandard.ZstdCompressor:
    """One compressor per thread: zstandard contexts are not thread-safe."""
    if not hasattr(_local, "compressor"):
        _local.compressor = zstandard.ZstdCompressor(level=ZSTD_LEVEL)
    compressor: zstandard.ZstdCompressor = _local.compressor
    return compressor


def _plane_compressor() -> zstandard.ZstdCompressor:
    """Tuned for byte planes, whose gain is in entropy coding, not in matches: a tiny
    match search and 128 KiB blocks compress the exponent plane of trained float32
    weights to 0.31 at ~0.6 GB/s, against 0.35 at ~0.3 GB/s for level 1 (measured)."""
    if not hasattr(_local, "plane_compressor"):
        params = zstandard.ZstdCompressionParameters(
            window_log=17, hash_log=6, chain_log=6, search_log=1, min_match=7,
            target_length=0, strategy=zstandard.STRATEGY_FAST,
        )
        _local.plane_compressor = zstandard.ZstdCompressor(compression_params=params)
    compressor: zstandard.ZstdCompressor = _local.plane_compressor
    return compressor


def _decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_local, "decompressor"):
        _local.decompressor = zstandard.ZstdDecompressor()
    decompressor: zstandard.ZstdDecompressor = _local.decompressor
    return decompressor


@dataclass(frozen=True)
class Blob:
    """A content of ``size`` bytes stored as the concatenation of ``chunks``."""

    size: int
    chunks: tuple[Digest, ...]


def chunk_views(data: Buffer, chunk_size: int | None = None) -> list[memoryview]:
    """Zero-copy views of ``data`` cut into chunks (none for empty data)."""
    chunk_size = chunk_size or CHUNK_SIZE
    view = memoryview(data).cast("B")
    return [view[i : i + chunk_size] for i in range(0, len(view), chunk_size)]


def _scratch_for(stored: Buffer) -> memoryview | None:
    """For a plane-coded chunk decoded only to be checked: a buffer this thread reuses."""
    if len(stored) < HEADER.size or stored[4] != CODEC_PLANES:
        return None
    size = HEADER.unpack_from(stored)[2]
    if size > CHUNK_SIZE:
        return None
    scratch = getattr(_local, "scratch", None)
    if scratch is None:
        scratch = _local.scratch = memoryview(bytearray(CHUNK_SIZE))
    return scratch[:size]


class ObjectStore:
    """Put and get verified objects and chunked blobs through a backend."""

    def __init__(self, backend: Backend, workers: int | None = None) -> None:
        self.backend = backend
        self.workers = workers or (ROUND_TRIP_WORKERS if backend.round_trips else os.cpu_count() or 1)
        self.inline_below = 0 if backend.round_trips else PARALLEL_MIN_BYTES
        """Objects smaller than this are read and written on the calling thread: none
        where each call is a round trip worth overlapping (``Backend.round_trips``)."""
        self.on_progress: Callable[[int], None] | None = None
        """Called with the byte count of each object put or got (for progress bars)."""

    def put(self, data: Buffer, width: int = 1) -> Digest:
        """Store ``data`` once; storing it again writes nothing but refreshes its mtime.
        ``width`` is the element size of floating-point data (see :func:`encode`)."""
        digest = hash_bytes(data)
        key = object_key(digest)
        if not self.backend.touch(key):
            self.backend.write(key, encode(data, width), exclusive=True)
        self._progress(memoryview(data).nbytes)
        return digest

    def get(self, digest: Digest) -> bytes:
        """The verified content of an object."""
        return bytes(self._decoded(digest))

    def read_into(self, digest: Digest, out: memoryview) -> None:
        """Decode an object's verified content straight into ``out``, which must be
        exactly its size (else :class:`SizeMismatch`)."""
        self._decoded(digest, out)

    def verify(self, digest: Digest, *, fresh: bool = False) -> int:
        """Read and verify an object without keeping it; its content size. ``fresh``
        checks the storage's own copy even when a local cache has one."""
        return len(self._decoded(digest, _scratch_for, fresh=fresh))

    def read_stored(self, digest: Digest) -> bytes:
        """An object as stored (encoded), unchecked: what a transfer copies to another
        store, whose :meth:`put_stored` checks it on arrival."""
        return self._read(parse_digest(digest), fresh=True)

    def put_stored(self, digest: Digest, stored: Buffer) -> None:
        """Store an object as it was stored elsewhere, after checking that it decodes to
        its address; nothing is written when the object is here already."""
        digest = parse_digest(digest)
        self.verify_stored(digest, stored)
        key = object_key(digest)
        if not self.backend.touch(key):
            self.backend.write(key, [stored], exclusive=True)

    @staticmethod
    def verify_stored(digest: Digest, stored: Buffer) -> None:
        """Raise :class:`CorruptObjectError` unless ``stored`` decodes to ``digest``."""
        decode(stored, digest, _scratch_for(stored))

    def _decoded(self, digest: Digest, out: memoryview | Callable[[Buffer], memoryview | None] | None = None,
                 *, fresh: bool = False) -> Buffer:
        """Read, decode and verify an object (into ``out``, or into what ``out`` picks
        for the stored bytes). A copy that fails its check may be a local cache's: it is
        dropped and the storage's own copy checked, so a damaged cache heals itself."""
        digest = parse_digest(digest)
        try:
            return self._decode(self._read(digest, fresh=fresh), digest, out)
        except CorruptObjectError:
            if fresh or not self.backend.round_trips:
                raise  # the storage's own copy is damaged
            self.backend.forget(object_key(digest))
            return self._decode(self._read(digest, fresh=True), digest, out)

    def _decode(self, stored: Buffer, digest: Digest, out: Any) -> Buffer:
        data = decode(stored, digest, out(stored) if callable(out) else out)
        self._progress(len(data))
        return data

    def _read(self, digest: Digest, fresh: bool = False) -> bytes:
        """An object's stored bytes from the backend, or from where gc's first phase
        moved it (see ``gc.py``); ``fresh``: past any local cache."""
        try:
            try:
                stored = self.backend.read(object_key(digest), fresh=fresh)
            except NotFoundError:
                try:
                    stored = self.backend.read(pending_key(digest), fresh=fresh)
                except NotFoundError:
                    raise ObjectNotFoundError(
                        f"object {digest} is missing from {OBJECTS}/; "
                        "run `aoe store fsck` to see what it affects"
                    ) from None
        except UnexpectedFileError as exc:
            raise _corrupt(digest, str(exc)) from None
        return stored

    def _progress(self, nbytes: int) -> None:
        if self.on_progress:
            self.on_progress(nbytes)

    def touch(self, digest: Digest) -> bool:
        """Refresh an object's mtime (protecting it from gc); False if it is missing.
        An object gc's first phase set aside is put back first."""
        key = object_key(parse_digest(digest))
        if self.backend.touch(key):
            return True
        if self.backend.atomic_touch:
            return False
        try:
            stored = self.backend.read(pending_key(digest))
        except NotFoundError:
            return False
        self.backend.write(key, [stored], exclusive=True)
        return True

    def content_size(self, digest: Digest) -> int:
        """The content size an object's header declares, checked against what any object
        may hold (its content is verified only when it is read)."""
        stored = self._read(parse_digest(digest))
        if len(stored) < HEADER.size or stored[:4] != MAGIC:
            raise _corrupt(digest, "bad header")
        size: int = HEADER.unpack_from(stored)[2]
        if size > MAX_OBJECT_BYTES:
            raise _corrupt(digest, f"its header declares {size:,} bytes, more than an object may hold")
        return size

    def stored_size(self, digest: str) -> int:
        """Bytes the object takes on disk (compressed, header included); 0 if missing."""
        stat = self.backend.stat(object_key(parse_digest(digest)))
        return stat[0] if stat else 0

    def has(self, digest: Digest) -> bool:
        """Whether the object is stored (set aside by gc's first phase counts)."""
        digest = parse_digest(digest)
        return self.backend.exists(object_key(digest)) or (
            not self.backend.atomic_touch and self.backend.exists(pending_key(digest)))

    def put_many(self, contents: Iterable[Buffer], widths: Iterable[int] | None = None) -> list[Digest]:
        """Store many contents; large ones are hashed, compressed and written in parallel."""
        items = list(zip(contents, widths)) if widths is not None else [(c, 1) for c in contents]
        return list(self.parallel(lambda item: self.put(*item), items,
                                   [memoryview(c).nbytes for c, _ in items]))

    def get_many(self, digests: Iterable[Digest], sizes: Iterable[int] | None = None) -> Iterator[bytes]:
        """Verified contents in order; large ones (by ``sizes``, if known) read in parallel."""
        items = list(digests)
        return self.parallel(self.get, items, list(sizes) if sizes is not None else None)

    def parallel(self, action: Callable[[T], R], items: Sequence[T], sizes: Sequence[int] | None = None) -> Iterator[R]:
        """``map(action, items)``, with the items of ``inline_below`` bytes or more (all,
        when no sizes are given) on worker threads: blake3, zstd, numpy and file I/O
        release the GIL on large buffers, but for small ones a thread costs more than
        the work. At most two tasks per worker are in flight, so memory stays bounded."""
        if self.workers == 1 or not items:
            yield from map(action, items)
            return
        with ThreadPoolExecutor(self.workers) as pool:
            pending: deque[Future[R] | tuple[R]] = deque()
            for index, item in enumerate(items):
                if sizes is not None and sizes[index] < self.inline_below:
                    pending.append((action(item),))
                else:
                    pending.append(pool.submit(action, item))
                while pending and (isinstance(pending[0], tuple) or len(pending) >= 2 * self.workers):
                    yield _result(pending.popleft())
            while pending:
                yield _result(pending.popleft())

    def put_blobs(self, contents: Iterable[Buffer], widths: Iterable[int] | None = None) -> list[Blob]:
        """Store each content as a chunked blob; all chunks of all blobs go in parallel.
        ``widths`` gives each content's float element size (1: not floating-point)."""
        pieces = [chunk_views(content) for content in contents]
        widths = list(widths) if widths is not None else [1] * len(pieces)
        digests = iter(self.put_many(
            (view for views in pieces for view in views),
            (width for views, width in zip(pieces, widths) for _ in views),
        ))
        return [
            Blob(sum(len(v) for v in views), tuple(next(digests) for _ in views))
            for views in pieces
        ]

    def put_blob(self, content: Buffer, width: int = 1) -> Blob:
        return self.put_blobs([content], [width])[0]

    def read_blobs_into(self, targets: Iterable[tuple[Blob, memoryview]]) -> None:
        """Fill each buffer with its blob's verified content. Every chunk is decoded in
        parallel straight into its place, assuming the standard chunk size; a blob cut
        otherwise (another writer's choice, which readers must accept) is read again in
        order."""
        targets = list(targets)
        for blob, out in targets:
            if len(out) != blob.size:
                raise ValueError(f"buffer of {len(out)} bytes for a blob of {blob.size}")
        places = [
            (digest, out[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE], index)
            for index, (blob, out) in enumerate(targets)
            for i, digest in enumerate(blob.chunks)
        ]
        irregular = {
            index for index, (blob, _) in enumerate(targets)
            if len(blob.chunks) != -(-blob.size // CHUNK_SIZE)
        }

        def fill(place: tuple[Digest, memoryview, int]) -> None:
            digest, out, index = place
            if index not in irregular:
                try:
                    self.read_into(digest, out)
                except SizeMismatch:
                    irregular.add(index)

        for _ in self.parallel(fill, places, [len(out) for _, out, _ in places]):
            pass
        for index in sorted(irregular):
            self._read_in_order(*targets[index])

    def _read_in_order(self, blob: Blob, out: memoryview) -> None:
        offset = 0
        for digest in blob.chunks:
            chunk = decode(self._read(digest), digest)
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
        """A blob's verified content as bytes (images, feedback: small), read chunk by
        chunk: nothing is allocated for the size a manifest declares until chunks that
        verify have filled it."""
        return b"".join(self.iter_blob(blob))

    def iter_blob(self, blob: Blob) -> Iterator[bytes]:
        """A blob's verified chunks in order; a blob whose chunks do not add up to its
        size raises :class:`CorruptObjectError` as soon as that shows."""
        total = 0
        for digest in blob.chunks:
            chunk = self.get(digest)
            total += len(chunk)
            if total > blob.size:
                break
            yield chunk
        if total != blob.size:
            raise CorruptObjectError(
                f"a blob of {blob.size:,} bytes has chunks adding up to another size; "
                "the manifest naming it is damaged: run `aoe store fsck`"
            )
