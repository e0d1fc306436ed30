"""Objects: content-addressed, verified objects and chunked blobs on top of a backend.

An object's address is the BLAKE3 hex digest of its *uncompressed* content, so the
codec can change without breaking dedup or old objects; the codec is recorded in a
small header of each stored object. Every read re-hashes what it decoded: a damaged
object raises :class:`CorruptObjectError`, it never returns wrong bytes.

Large contents are cut into fixed-size chunks, each its own object, and described by
a :class:`Blob` (total size and chunk digests): unchanged chunks deduplicate, and no
step has to hold more than a chunk of compressed data at once. Small contents are
packed together into shared chunks (restic's pack files, git's packs): a blob is then a
slice of one object, which still verifies as a whole, and a run of hundreds of biases
and counters costs a few objects, not hundreds.
"""

from __future__ import annotations

import os
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from .backends import Backend, BatchWrite, Buffer
from .codec import (
    CODEC_PLANES,
    CODEC_RAW,
    HEADER,
    MAGIC,
    SizeMismatch,
    corrupt,
    decode,
    encode,
    fingerprint,
    hash_bytes,
    stored_raw,
)
from .errors import (
    CorruptObjectError,
    NotFoundError,
    ObjectNotFoundError,
    UnexpectedFileError,
)
from .layout import OBJECTS, object_key, pending_key
from .limits import MAX_OBJECT_BYTES
from .names import Digest, parse_digest

if TYPE_CHECKING:
    from concurrent.futures import Future

PARALLEL_MIN_BYTES = 256 * 1024
"""Contents smaller than this are handled on the calling thread (see ``parallel``)."""

ROUND_TRIP_WORKERS = 16
"""Requests in flight at once where each is a network round trip: latency, not CPU, bounds."""

FLOAT_PLANES_MIN_CORES = 4
"""Byte planes cost ~6 ms of CPU per 8 MiB of floats to save and ~4 to load (measured on
2 cores): with fewer cores than this they make saves ~1.4x and loads ~1.6x slower than
writing and reading the bytes as they are, for ~17% less disk (float32). With more, the
spare cores hide that cost, and the smaller store is free. See ``compress_floats``."""

CHUNK_SIZE = 8 * 1024 * 1024
"""Blobs are cut into chunks of this many bytes (the last one shorter)."""

PACK_BELOW = 256 * 1024
"""Contents smaller than this are packed with others into chunks of up to CHUNK_SIZE:
below it, a file of its own costs more (open, write, fsync, link; a request on S3) than
rewriting its neighbours when it changes."""

RECALLED_MAX = 1 << 16
"""Fingerprints of recalled contents one store keeps (~100 bytes each): more chunks than
a checkpoint of 500 GB has."""
_local = threading.local()
T = TypeVar("T")
R = TypeVar("R")


def _result(entry: Future[R] | tuple[R]) -> R:
    return entry[0] if isinstance(entry, tuple) else entry.result()


@dataclass(frozen=True)
class Blob:
    """A content of ``size`` bytes stored as the concatenation of ``chunks``; or, a
    *slice*, as the ``size`` bytes at ``offset`` in its one chunk, a pack it shares with
    other small contents, with its own address ``digest``."""

    size: int
    chunks: tuple[Digest, ...]
    offset: int | None = None
    digest: Digest | None = None

    @property
    def identity(self) -> tuple[Digest, ...]:
        """What blobs of equal content share, however each is stored: the content's
        address (a slice's ``digest``, a one-chunk blob's chunk), else its chunks'."""
        return (self.digest,) if self.digest is not None else self.chunks


@dataclass
class _Pack:
    """Small contents of one element width on their way into one shared chunk."""

    width: int
    members: list[tuple[int, memoryview, Digest]]  # (index of the content, its bytes, its address)
    size: int = 0

    def data(self) -> bytes:
        return b"".join(view for _, view, _ in self.members)


def _env_flag(name: str) -> bool | None:
    value = os.environ.get(name, "").strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    return None


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

    def __init__(self, backend: Backend, workers: int | None = None, compress_floats: bool | None = None) -> None:
        self.backend = backend
        if compress_floats is None:
            compress_floats = _env_flag("AOE_COMPRESS_FLOATS")
        self.compress_floats = (os.cpu_count() or 1) >= FLOAT_PLANES_MIN_CORES if compress_floats is None \
            else compress_floats
        """Whether floating-point contents are split into byte planes, each compressed if it
        gains, or stored as they are (zstd over whole floats costs more than planes and
        gains less): ``$AOE_COMPRESS_FLOATS`` (1 or 0), else on with FLOAT_PLANES_MIN_CORES
        cores or more. Readers read either; addresses do not change."""
        self.workers = workers or (ROUND_TRIP_WORKERS if backend.round_trips else (os.cpu_count() or 1) + 2)
        """Local: two more than the cores, so workers waiting on the disk leave their cores to
        others (saves of 100-250 MB checkpoints 5-12% faster on 2 cores than one per core)."""
        self.inline_below = 0 if backend.round_trips else PARALLEL_MIN_BYTES
        """Objects smaller than this are read and written on the calling thread: none
        where each call is a round trip worth overlapping (``Backend.round_trips``)."""
        self.on_progress: Callable[[int], None] | None = None
        """Called with the byte count of each object put or got (for progress bars)."""
        self._recalled: dict[tuple[int, bytes], Digest] = {}
        """Addresses of contents put with ``recall``, by :func:`fingerprint` (see :meth:`put`)."""

    def put(self, data: Buffer, width: int = 1, write: BatchWrite | None = None, *, recall: bool = False) -> Digest:
        """Store ``data`` once; storing it again writes nothing but refreshes its mtime.
        ``width`` is the element size of floating-point data (see :func:`encode`);
        ``write``, a batch's (see :meth:`Backend.write_batch`). ``recall`` says the
        content is likely one put before (a tensor not written to since): it is then
        read once for its XXH3 fingerprint, and BLAKE3 is computed only if no content put
        with ``recall`` before had that fingerprint and size. (XXH3 is not cryptographic:
        contents crafted to collide could be taken for each other, but only inside the
        process that saves them, which decides what it saves anyway; by chance, 2^-128.)"""
        digest = self._recall(data) if recall else hash_bytes(data)
        key = object_key(digest)
        if not self.backend.touch(key):
            stored = encode(data, width) if width == 1 or self.compress_floats else stored_raw(data)
            if write is None:
                self.backend.write(key, stored, exclusive=True)
            else:
                write(key, stored)
        self._progress(memoryview(data).nbytes)
        return digest

    def _recall(self, data: Buffer) -> Digest:
        key = fingerprint(data)
        digest = self._recalled.get(key)
        if digest is None:
            digest = hash_bytes(data)
            if len(self._recalled) >= RECALLED_MAX:
                self._recalled.clear()  # a bound, not a cache policy: the next saves fill it again
            self._recalled[key] = digest
        return digest

    def get(self, digest: Digest) -> bytes:
        """The verified content of an object."""
        return bytes(self._decoded(digest))

    def read_into(self, digest: Digest, out: memoryview) -> None:
        """Decode an object's verified content straight into ``out``, which must be
        exactly its size (else :class:`SizeMismatch`). An object stored raw is read where
        it belongs, with no copy in between, where the backend can (a local folder)."""
        digest = parse_digest(digest)
        head = memoryview(bytearray(HEADER.size))
        try:
            whole = self.backend.readinto(object_key(digest), [head, out])
        except NotFoundError:
            whole = False  # maybe set aside by gc: the general path looks there
        except UnexpectedFileError as exc:
            raise corrupt(digest, str(exc)) from None
        if whole and HEADER.unpack(head) == (MAGIC, CODEC_RAW, len(out)):
            if hash_bytes(out) != digest:
                raise corrupt(digest, "content does not match its address")
            self._progress(len(out))
            return
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
            raise corrupt(digest, str(exc)) from None
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
            raise corrupt(digest, "bad header")
        size: int = HEADER.unpack_from(stored)[2]
        if size > MAX_OBJECT_BYTES:
            raise corrupt(digest, f"its header declares {size:,} bytes, more than an object may hold")
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
        """Store many contents, made durable together; large ones are hashed, compressed
        and written in parallel."""
        items = list(zip(contents, widths)) if widths is not None else [(c, 1) for c in contents]
        with self.backend.write_batch() as write:
            return list(self.parallel(lambda item: self.put(*item, write=write), items,
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
        if self.workers == 1 or not items or (sizes is not None and max(sizes) < self.inline_below):
            yield from map(action, items)  # no thread to start (~0.2 ms each)
            return
        from concurrent.futures import ThreadPoolExecutor  # on first use: 5 ms of every start otherwise

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

    def put_blobs(self, contents: Iterable[Buffer], widths: Iterable[int] | None = None,
                  groups: Iterable[object] | None = None, recall: Iterable[bool] | None = None) -> list[Blob]:
        """Store each content as a blob, all made durable together when the call returns.
        ``widths`` gives each content's float element size (1: not floating-point);
        ``recall``, whether it is likely one stored before (see :meth:`put`).

        Contents smaller than :data:`PACK_BELOW` are packed in order, by ``groups`` (what
        changes together: one tree of tensors, a run's glyph images) and width, into
        chunks of up to :data:`CHUNK_SIZE`; equal ones are packed once, and a pack that
        ends up holding one content is just that content's chunk. Larger contents are cut
        into chunks. Packs are joined on the worker that stores them, so memory holds a
        few chunks, not all of them."""
        views = [memoryview(content).cast("B") for content in contents]
        widths = list(widths) if widths is not None else [1] * len(views)
        groups = list(groups) if groups is not None else [None] * len(views)
        recalls = list(recall) if recall is not None else [False] * len(views)
        pack_below = min(PACK_BELOW, CHUNK_SIZE + 1)
        blobs: list[Blob | None] = [None] * len(views)
        pieces: list[tuple[int, memoryview | _Pack]] = []  # what to store: chunks and packs
        open_packs: dict[tuple[object, int], _Pack] = {}
        packed: dict[tuple[object, Digest], int] = {}  # (group, content address) -> first index
        copies: dict[int, int] = {}  # index -> index of an equal content packed before
        for index, (view, width, group) in enumerate(zip(views, widths, groups)):
            if not 0 < view.nbytes < pack_below:
                pieces += [(index, chunk) for chunk in chunk_views(view)]
                continue
            address = hash_bytes(view)
            if (group, address) in packed:
                copies[index] = packed[group, address]
                continue
            packed[group, address] = index
            pack = open_packs.get((group, width))
            if pack is None or pack.size + view.nbytes > CHUNK_SIZE:
                pack = open_packs[group, width] = _Pack(width, [])
                pieces.append((-1, pack))
            pack.members.append((index, view, address))
            pack.size += view.nbytes

        def store(piece: tuple[int, memoryview | _Pack]) -> Digest:
            index, what = piece
            if isinstance(what, _Pack):
                return self.put(what.data() if len(what.members) > 1 else what.members[0][1], what.width, write,
                                recall=all(recalls[member] for member, _, _ in what.members))
            return self.put(what, widths[index], write, recall=recalls[index])

        chunks: dict[int, list[Digest]] = {}
        with self.backend.write_batch() as write:
            digests = self.parallel(store, pieces, [p.size if isinstance(p, _Pack) else p.nbytes for _, p in pieces])
            for (index, what), digest in zip(pieces, digests):
                if not isinstance(what, _Pack):
                    chunks.setdefault(index, []).append(digest)
                    continue
                if len(what.members) == 1:  # a pack of one is just that content's chunk
                    blobs[what.members[0][0]] = Blob(what.size, (digest,))
                    continue
                offset = 0
                for member, view, address in what.members:
                    blobs[member] = Blob(view.nbytes, (digest,), offset, address)
                    offset += view.nbytes
        for index, view in enumerate(views):
            if index in copies:
                blobs[index] = blobs[copies[index]]
            elif blobs[index] is None:
                blobs[index] = Blob(view.nbytes, tuple(chunks.get(index, ())))
        return [blob for blob in blobs if blob is not None]

    def put_blob(self, content: Buffer, width: int = 1) -> Blob:
        return self.put_blobs([content], [width])[0]

    def read_blobs_into(self, targets: Iterable[tuple[Blob, memoryview]]) -> None:
        """Fill each buffer with its blob's verified content. Every chunk is decoded in
        parallel straight into its place, assuming the standard chunk size; a blob cut
        otherwise (another writer's choice, which readers must accept) is read again in
        order. A pack is decoded once, and each of its slices copied out."""
        targets = list(targets)
        for blob, out in targets:
            if len(out) != blob.size:
                raise ValueError(f"buffer of {len(out)} bytes for a blob of {blob.size}")
        slices: dict[Digest, list[tuple[Blob, memoryview]]] = {}
        for blob, out in targets:
            if blob.offset is not None:
                slices.setdefault(blob.chunks[0], []).append((blob, out))
        places: list[tuple[Digest, memoryview, int]] = [
            (digest, out[i * CHUNK_SIZE : (i + 1) * CHUNK_SIZE], index)
            for index, (blob, out) in enumerate(targets) if blob.offset is None
            for i, digest in enumerate(blob.chunks)
        ]
        irregular = {
            index for index, (blob, _) in enumerate(targets)
            if blob.offset is None and len(blob.chunks) != -(-blob.size // CHUNK_SIZE)
        }

        def fill(place: tuple[Digest, memoryview, int]) -> None:
            digest, out, index = place
            if index < 0:
                _copy_slices(self.get(digest), slices[digest])
            elif index not in irregular:
                try:
                    self.read_into(digest, out)
                except SizeMismatch:
                    irregular.add(index)

        places += [(digest, memoryview(b""), -1) for digest in slices]
        sizes = [len(out) if index >= 0 else sum(b.size for b, _ in slices[digest]) for digest, out, index in places]
        for _ in self.parallel(fill, places, sizes):
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
        if blob.offset is not None:
            yield bytes(_slice(self.get(blob.chunks[0]), blob))
            return
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


def _slice(pack: bytes, blob: Blob) -> memoryview:
    """A slice's bytes in its verified pack, checked against the slice's own address."""
    assert blob.offset is not None and blob.digest is not None
    data = memoryview(pack)[blob.offset : blob.offset + blob.size]
    if len(data) != blob.size or hash_bytes(data) != blob.digest:
        raise CorruptObjectError(
            f"the {blob.size:,} bytes at offset {blob.offset:,} of object {blob.chunks[0]} are not the content "
            f"{blob.digest}; the manifest naming them is damaged: run `aoe store fsck`")
    return data


def _copy_slices(pack: bytes, targets: list[tuple[Blob, memoryview]]) -> None:
    for blob, out in targets:
        out[:] = _slice(pack, blob)
