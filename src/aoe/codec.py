"""The codecs of stored objects: a 13-byte header, then raw bytes, one zstd frame, or
byte planes of floating-point elements (docs/format.md, *Objects*).

An object's address is the BLAKE3 hex digest of its *uncompressed* content, so the codec
can change without breaking dedup or old objects. :func:`decode` re-hashes what it
decoded and checks every size before it allocates: a damaged or hostile object raises
:class:`CorruptObjectError`, it never returns wrong bytes nor claims memory it does not hold.
"""

from __future__ import annotations

import struct
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import blake3
import xxhash

from .backends import Buffer
from .errors import CorruptObjectError
from .limits import MAX_OBJECT_BYTES
from .names import Digest

if TYPE_CHECKING:
    import zstandard

MAGIC = b"AOE1"
HEADER = struct.Struct("<4sBQ")  # magic, codec id, uncompressed size
PLANE = struct.Struct("<BQ")  # a plane's codec id (raw or zstd) and stored length
CODEC_RAW = 0
CODEC_ZSTD = 1
CODEC_PLANES = 2
CODEC_NAMES = {CODEC_RAW: "raw", CODEC_ZSTD: "zstd", CODEC_PLANES: "planes"}
ZSTD_LEVEL = 1
_local = threading.local()
MIN_GAIN = 0.98
"""Compressed output larger than this fraction of the input is stored raw instead."""

SAMPLE_BYTES = 16 * 1024
"""Contents over four samples long are compressed only if four samples of this size,
spread over them, gain: incompressible data (PNG, mantissa bytes) then costs ~nothing."""

def hash_bytes(data: Buffer) -> Digest:
    """The address of ``data``."""
    return Digest(blake3.blake3(data).hexdigest())


def fingerprint(data: Buffer) -> tuple[int, bytes]:
    """Size and 128-bit XXH3 of ``data``: three times BLAKE3's speed here, to recognize
    contents this process has hashed before (never stored, never an address)."""
    return memoryview(data).nbytes, xxhash.xxh3_128_digest(data)


def row_check(*parts: Buffer | str | None) -> int:
    """A 63-bit XXH3 of a row's parts (text as UTF-8), which fits SQLite's integers: kept
    beside each row of derived data, so a row that was damaged is found out when read
    (never an address, never a defence against someone who may write the file)."""
    if len(parts) == 1:  # the common case, by thousands: one call
        part = parts[0]
        return xxhash.xxh3_64_intdigest(part.encode() if isinstance(part, str) else b"" if part is None else part) >> 1
    state = xxhash.xxh3_64()
    for part in parts:
        data = b"" if part is None else part.encode() if isinstance(part, str) else part
        state.update(len(memoryview(data)).to_bytes(8, "little"))
        state.update(data)
    return state.intdigest() >> 1


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
    return stored_raw(view)


def stored_raw(data: Buffer) -> list[Buffer]:
    """The stored form of ``data`` as it is (codec 0)."""
    view = memoryview(data).cast("B")
    return [HEADER.pack(MAGIC, CODEC_RAW, view.nbytes), view]


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
    table = bytearray([width])
    payloads: list[Buffer] = []
    for plane in _split_planes(np, view, width):
        packed = _pack(plane, _plane_compressor())
        table += PLANE.pack(CODEC_ZSTD if packed is not None else CODEC_RAW, len(packed or plane))
        payloads.append(packed if packed is not None else plane)
    if all(table[1 + k * PLANE.size] == CODEC_RAW for k in range(width)):
        return None
    return [bytes(table), *payloads]


def _split_planes(np: Any, view: memoryview, width: int) -> Iterator[memoryview]:
    """Byte k of every element, for each k: shifts of whole elements where numpy has an
    integer of that width (vectorised, about 1.5x faster than a strided copy), else a
    strided copy of each byte column."""
    element = {2: np.uint16, 4: np.uint32, 8: np.uint64}.get(width)
    if element is not None:
        words = np.frombuffer(view, element)
        for k in range(width):
            yield memoryview((words >> (8 * k)).astype(np.uint8))
    else:
        columns = np.frombuffer(view, np.uint8).reshape(-1, width)
        for k in range(width):
            yield memoryview(np.ascontiguousarray(columns[:, k]))


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
        raise corrupt(digest, f"truncated to {len(stored)} bytes")
    magic, codec, size = HEADER.unpack_from(stored)
    if magic != MAGIC:
        raise corrupt(digest, "bad header")
    if out is not None and len(out) != size:
        raise SizeMismatch(size)
    if size > MAX_OBJECT_BYTES:
        raise corrupt(digest, f"its header declares {size:,} bytes, more than an object may hold")
    payload = stored[HEADER.size :]
    if codec == CODEC_PLANES:
        table = _plane_table(payload, size, digest)
        target = memoryview(bytearray(size)) if out is None else out
        actual = _decode_planes(payload, table, size, digest, target)
        data: Buffer = target
    else:
        if codec == CODEC_RAW:
            if len(payload) != size:
                raise corrupt(digest, f"{len(payload)} bytes of raw content, header says {size}")
            data = payload
        elif codec == CODEC_ZSTD:
            data = _decompress(payload, size, digest)
        else:
            raise corrupt(digest, f"unknown codec id {codec}")
        if out is not None:
            out[:] = data
            data = out
        actual = hash_bytes(data)
    if actual != digest:
        raise corrupt(digest, "content does not match its address")
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
    zstd = _zstd()
    try:
        declared = zstd.get_frame_parameters(payload).content_size
        if declared != size:
            raise corrupt(digest, f"its zstd frame declares {declared:,} bytes, not {size:,}"
                           if declared != zstd.CONTENTSIZE_UNKNOWN else "its zstd frame records no size")
        return _decompressor().decompress(payload, allow_extra_data=False)
    except zstd.ZstdError as exc:
        raise corrupt(digest, f"zstd cannot decode it ({exc})") from None


MERGE_BLOCK = 64 * 1024
"""Elements interleaved and hashed per step of ``_decode_planes``: the block stays in
the CPU cache between the two (24% faster than whole chunks, measured)."""


def _plane_table(payload: memoryview, size: int, digest: Digest) -> list[tuple[int, int, int]]:
    """(codec, offset, length) of each plane, checked against the payload's length and
    the content size before anything is allocated for them."""
    width = payload[0] if len(payload) else 0
    table_size = 1 + width * PLANE.size
    if width < 2 or size % width or len(payload) < table_size:
        raise corrupt(digest, f"bad plane table (element width {width})")
    count, offset, table = size // width, table_size, []
    for k in range(width):
        codec, length = PLANE.unpack_from(payload, 1 + k * PLANE.size)
        if codec not in (CODEC_RAW, CODEC_ZSTD) or (codec == CODEC_RAW and length != count):
            raise corrupt(digest, f"plane {k} has codec {codec} and {length} bytes for {count} elements")
        table.append((codec, offset, length))
        offset += length
    if offset != len(payload):
        raise corrupt(digest, f"its planes take {offset:,} bytes of a payload of {len(payload):,}")
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


def corrupt(digest: Digest, why: str) -> CorruptObjectError:
    return CorruptObjectError(
        f"object {digest} is corrupt: {why}; run `aoe store fsck` to see what it affects",
        digest=digest, why=why,
    )


def _numpy() -> Any:
    """numpy, imported on first use: only plane-coded objects need it."""
    import numpy

    return numpy


def _zstd() -> Any:
    """zstandard, imported on first use: a listing that reads no object never needs it
    (2.5 ms of every command's start)."""
    import zstandard

    return zstandard


def _compressor() -> zstandard.ZstdCompressor:
    """One compressor per thread: zstandard contexts are not thread-safe."""
    if not hasattr(_local, "compressor"):
        _local.compressor = _zstd().ZstdCompressor(level=ZSTD_LEVEL)
    compressor: zstandard.ZstdCompressor = _local.compressor
    return compressor


def _plane_compressor() -> zstandard.ZstdCompressor:
    """Tuned for byte planes, whose gain is in entropy coding, not in matches: a tiny
    match search and 128 KiB blocks compress the exponent plane of trained float32
    weights to 0.31 at ~0.6 GB/s, against 0.35 at ~0.3 GB/s for level 1 (measured)."""
    if not hasattr(_local, "plane_compressor"):
        zstd = _zstd()
        params = zstd.ZstdCompressionParameters(
            window_log=17, hash_log=6, chain_log=6, search_log=1, min_match=7,
            target_length=0, strategy=zstd.STRATEGY_FAST,
        )
        _local.plane_compressor = zstd.ZstdCompressor(compression_params=params)
    compressor: zstandard.ZstdCompressor = _local.plane_compressor
    return compressor


def _decompressor() -> zstandard.ZstdDecompressor:
    if not hasattr(_local, "decompressor"):
        _local.decompressor = _zstd().ZstdDecompressor()
    decompressor: zstandard.ZstdDecompressor = _local.decompressor
    return decompressor


