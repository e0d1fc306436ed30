"""The rules every manifest obeys, checked the same way on each one written and read
(docs/format.md, *Checking a manifest*): names that become paths, times, tags, params and
metrics, every tensor's size against its dtype and shape, every blob's size against its
chunks, tied tensors that agree, sharded tensors whose pieces tile them, and nesting
within the bounds a reader decodes."""

from __future__ import annotations

import heapq
import itertools
import math
from collections import Counter
from collections.abc import Callable
from typing import Any

from ..errors import InvalidInputError, InvalidNameError
from ..limits import MAX_DEPTH, MAX_FILE_BYTES, MAX_OBJECT_BYTES, MAX_SHAPE_PRODUCT, depth_exceeds
from ..names import (
    check_font_id,
    check_name,
    check_run_id,
    check_status,
    check_tags,
    check_text,
    check_time,
    parse_digest,
)
from ..objects import Blob
from .schema import (
    DEVICE_RE,
    DTYPE_NAME_RE,
    DTYPE_SIZES,
    MAX_BIG_INT_BYTES,
    MAX_EXT_DEPTH,
    MAX_PARENTS,
    MAX_PIECES,
    NUMPY_DTYPES,
    BigInt,
    Manifest,
    NumpyArray,
    NumpyScalar,
    ParentRun,
    Shape,
    ShardedTensor,
    StateDict,
    TensorRecord,
    TorchDevice,
    TorchDtype,
)


class BadManifest(ValueError):
    """A manifest breaks a rule of the format (internal: the caller says whose)."""


def check(manifest: Manifest, *, writing: bool = False, decoded: bool = False) -> Manifest:
    """Every rule of the format, checked on each manifest written and read: names that
    become paths, times, tags, params and metrics, every tensor's size against its dtype
    and shape, every blob's size against its chunks, tied tensors that agree, nesting.
    Raises :class:`BadManifest` naming the first field that breaks one. (``decoded``:
    :func:`unpack` made it, which bounded the nesting of the whole manifest and checked
    each tensor record as it decoded it.)

    ``writing`` adds the rules for texts a terminal prints (no control characters in
    names, descriptions and tags): older aoe did not check them, so readers accept them
    and escape them on output instead."""
    try:
        for name, rule in (_WRITTEN_FIELDS if writing else _READ_FIELDS):
            try:
                rule(getattr(manifest, name))
            except (InvalidInputError, InvalidNameError, TypeError) as exc:
                raise BadManifest(f"{name}: {exc}") from None
        if not isinstance(manifest.tags, tuple) or not all(isinstance(t, str) for t in manifest.tags):
            raise BadManifest(f"tags {manifest.tags!r} are not texts")
        if writing and check_tags(manifest.tags) != manifest.tags:
            raise BadManifest(f"tags {manifest.tags!r} are not distinct, trimmed, printable texts")
        _plain(manifest.params, "params", mapping=True, depth_known=decoded)
        _plain(manifest.source, "source", mapping=True, depth_known=decoded)
        if manifest.metrics is not None:
            _metrics(manifest.metrics)
        _parents(manifest)
        for what, files in (("glyph", manifest.glyphs), ("extra", manifest.extras)):
            if not isinstance(files, dict):
                raise BadManifest(f"{what}s must be a mapping")
            for key in files:
                check_name(key, f"{what} name")
        for what, blob in (("sample image", manifest.sample), ("feedback", manifest.feedback),
                           *((f"glyph {name!r}", blob) for name, blob in manifest.glyphs.items())):
            if blob is not None and check_blob(blob).size > MAX_FILE_BYTES:
                raise BadManifest(f"the {what} is {blob.size:,} bytes, more than the {MAX_FILE_BYTES:,} a "
                                  "run's file may hold")
        aliases: dict[int, TensorRecord] = {}
        if manifest.personality is not None:
            if not decoded:
                check_tensor(manifest.personality)
            _same_as_tied(manifest.personality, aliases)
        for level, tree in ((TREE_LEVEL, manifest.weights), *((EXTRA_LEVEL, t) for t in manifest.extras.values())):
            if not decoded:
                check_nesting(tree, level)
            check_tree(tree, decoded=decoded, aliases=aliases)
    except (InvalidInputError, InvalidNameError) as exc:
        raise BadManifest(str(exc)) from None
    return manifest


def _field_rules(text: Callable[..., object]) -> tuple[tuple[str, Callable[[Any], object]], ...]:
    """The rules of a manifest's scalar fields, with ``text`` the rule for its texts."""
    return (
        ("font_id", check_font_id),
        ("run_id", lambda v: v == "" or check_run_id(v)),  # "": a manifest being built
        ("status", check_status),
        ("saved_at", lambda v: check_time(v, "saved_at")),
        ("started_at", lambda v: v is None or check_time(v, "started_at")),
        ("ended_at", lambda v: v is None or check_time(v, "ended_at")),
        ("name", lambda v: text(v, "name")),
        ("description", lambda v: text(v, "description", lines=True)),
        ("weights_version", _optional_str),
        ("feedback_schema", _optional_str),
        ("parent", lambda v: v is None or parse_digest(v)),
    )


def _parents(manifest: Manifest) -> None:
    """Lineage: distinct runs, each named by a valid font, run id and address, none of them
    this run itself."""
    parents = manifest.parents
    if not isinstance(parents, tuple) or len(parents) > MAX_PARENTS:
        raise BadManifest(f"parents must be at most {MAX_PARENTS} runs")
    for parent in parents:
        if not isinstance(parent, ParentRun):
            raise BadManifest("a parent is a font, a run id and a manifest address")
        check_font_id(parent.font_id)
        check_run_id(parent.run_id)
        parse_digest(parent.manifest)
        if (parent.font_id, parent.run_id) == (manifest.font_id, manifest.run_id):
            raise BadManifest(f"run {manifest.run_id} names itself as a parent")
    if len({(p.font_id, p.run_id) for p in parents}) != len(parents):
        raise BadManifest("a parent is named twice")


TREE_LEVEL = 2
"""Where the weights tree sits in a manifest's nesting (the manifest's map is level 1)."""
EXTRA_LEVEL = 3
"""Where an extra's tree sits (inside the ``extras`` map)."""


def check_nesting(tree: Any, level: int) -> None:
    """A tree that will sit at ``level`` of a manifest nests within what a reader decodes:
    at most :data:`MAX_DEPTH` levels counted from the manifest's own map (docs/format.md,
    *Limits*), and at most :data:`MAX_EXT_DEPTH` extension types inside one another. A
    writer checks this before it writes a byte, so it never publishes what readers refuse."""
    if depth_exceeds(tree, MAX_DEPTH - level + 1):
        raise BadManifest(f"it nests deeper than {MAX_DEPTH} levels (counted from the manifest, where this "
                          f"tree starts at level {level})")
    if _ext_depth_exceeds(tree, MAX_EXT_DEPTH):
        raise BadManifest(f"it nests tuples, ordered dicts, Counters, sets, torch.Sizes and tensors more than "
                          f"{MAX_EXT_DEPTH} deep inside one another (each is a msgpack extension type)")


_PLAIN = frozenset({type(None), bool, int, float, str, bytes})


def _ext_depth_exceeds(tree: Any, limit: int) -> bool:
    """Whether a path through ``tree`` holds more than ``limit`` extension types (each
    decoded by a nested call of msgpack's decoder): tuples and torch.Sizes, state dicts,
    Counters and sets count one each around what they hold; a tensor or complex number
    one; a sharded tensor two (its pieces are tensors). Maps and arrays count none."""
    stack: list[tuple[Any, int]] = [(tree, 0)]
    while stack:
        item, depth = stack.pop()
        if type(item) in _PLAIN:
            continue
        children: Any = ()
        if isinstance(item, dict):  # a Counter is an extension type around its map
            depth += isinstance(item, Counter)
            children = [*item.keys(), *item.values()]
        elif isinstance(item, list):
            children = item
        elif isinstance(item, (tuple, set, frozenset, StateDict)):
            depth += 1
            children = item.children() if isinstance(item, StateDict) else item
        else:  # a tensor, a complex number (or a tensor on its way to being stored)
            depth += 2 if isinstance(item, ShardedTensor) else 1
        if depth > limit:
            return True
        stack.extend((child, depth) for child in children)
    return False


def check_blob(blob: Any) -> Blob:
    """A blob's size agrees with its chunks: none for an empty blob, else at least one
    byte and at most :data:`MAX_OBJECT_BYTES` per chunk; a slice (``offset``) is at least
    one byte inside the first :data:`MAX_OBJECT_BYTES` of its one chunk. A reader may then
    allocate ``size`` bytes, which the chunks it can read must fill exactly."""
    if not isinstance(blob, Blob) or not _is_int(blob.size) or not (blob.offset is None or _is_int(blob.offset)):
        raise BadManifest(f"not a blob: {blob!r}")
    count = len(blob.chunks)
    if (blob.offset is None) != (blob.digest is None):
        raise BadManifest("a blob slice needs both an offset and a digest")
    if blob.offset is not None:
        if count != 1 or blob.size < 1 or blob.offset < 0 or blob.offset + blob.size > MAX_OBJECT_BYTES:
            raise BadManifest(f"a slice of {blob.size} bytes at offset {blob.offset} of {count} chunks")
        parse_digest(blob.digest)
    elif blob.size < 0 or (blob.size == 0) != (count == 0) or not count <= blob.size <= count * MAX_OBJECT_BYTES:
        raise BadManifest(f"a blob of {blob.size} bytes cannot be held by {count} chunks")
    for digest in blob.chunks:
        parse_digest(digest)
    return blob


def check_tensor(record: Any, *, sized: bool = True) -> TensorRecord:
    """A tensor's dtype is a name, its shape non-negative ints that torch can make a tensor
    of (:data:`MAX_SHAPE_PRODUCT`), and its blob holds exactly ``prod(shape) * element
    size`` bytes (for the dtypes this format knows)."""
    if not isinstance(record, TensorRecord):
        raise BadManifest(f"not a tensor record: {type(record).__name__}")
    known = isinstance(record.dtype, str) and (record.dtype in DTYPE_SIZES or DTYPE_NAME_RE.fullmatch(record.dtype))
    if not known:
        raise BadManifest(f"bad tensor dtype {record.dtype!r}")
    shape = record.shape
    if not isinstance(shape, tuple) or len(shape) > MAX_DEPTH or not all(
            isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in shape):
        raise BadManifest(f"bad tensor shape {shape!r}")
    size = DTYPE_SIZES.get(record.dtype) if sized else None
    count = math.prod(shape)
    if (not count or size is None) and math.prod(n or 1 for n in shape) > MAX_SHAPE_PRODUCT:
        raise BadManifest(f"no tensor can have the shape {list(shape)}: its dims multiply beyond 2**63")
    if not sized:  # only its dtype and shape (those of a sharded tensor)
        return record
    check_blob(record.blob)
    if record.alias is not None and not (isinstance(record.alias, int) and 0 <= record.alias < 2**31):
        raise BadManifest(f"bad tensor alias {record.alias!r}")
    if size is not None and count * size != record.blob.size:
        raise BadManifest(f"a {record.dtype} tensor of shape {list(shape)} cannot hold {record.blob.size} bytes")
    return record


def _same_as_tied(record: TensorRecord, aliases: dict[int, TensorRecord]) -> None:
    """Tensors of one manifest with the same ``alias`` (personality, weights and every
    extra alike) were one tensor: same dtype, shape and blob, or the manifest is damaged
    (a reader gives them one storage, read from the first)."""
    if record.alias is None:
        return
    first = aliases.setdefault(record.alias, record)
    if first is not record and (first.dtype, first.shape, first.blob) != (record.dtype, record.shape, record.blob):
        raise BadManifest(f"two tensors tied as alias {record.alias} differ: {first.dtype}{list(first.shape)} "
                          f"{first.blob.identity[:1]} and {record.dtype}{list(record.shape)} {record.blob.identity[:1]}")


def check_sharded(tensor: ShardedTensor) -> ShardedTensor:
    """A sharded tensor's pieces are valid tensors of its dtype, each inside its shape,
    none overlapping another, together exactly as many elements as it has: so they tile
    it, and a reader that puts them together leaves no byte unwritten. Empty pieces
    (a rank that held none of it) hold nothing and may sit anywhere inside."""
    shape = tensor.shape
    check_tensor(TensorRecord(tensor.dtype, shape, Blob(0, ())), sized=False)
    if not isinstance(tensor.pieces, tuple) or not 0 < len(tensor.pieces) <= MAX_PIECES:
        raise BadManifest(f"a sharded tensor needs 1 to {MAX_PIECES} pieces")
    boxes = []
    for offsets, record in tensor.pieces:
        check_tensor(record)
        if record.dtype != tensor.dtype or record.alias is not None or not isinstance(offsets, tuple) or \
                len(offsets) != len(shape) or len(record.shape) != len(shape) or not all(
                _is_int(o) and o >= 0 and o + n <= whole for o, n, whole in zip(offsets, record.shape, shape)):
            raise BadManifest(f"a piece {record.dtype}{list(record.shape)} at {offsets!r} does not fit "
                              f"a {tensor.dtype}{list(shape)} tensor")
        if math.prod(record.shape):
            boxes.append((offsets, tuple(o + n for o, n in zip(offsets, record.shape))))
    if sum(math.prod(e - o for o, e in zip(*box)) for box in boxes) != math.prod(shape):
        raise BadManifest(f"the pieces of a {tensor.dtype}{list(shape)} tensor do not add up to it")
    if not _disjoint(boxes, len(shape)):
        raise BadManifest(f"two pieces of a {tensor.dtype}{list(shape)} tensor overlap")
    return tensor


GRID_CELLS_PER_PIECE = 4
"""Pieces whose cuts make a grid of at most this many cells per piece (every sharding
DCP makes: each dimension split into ranges) are checked cell by cell."""


def _disjoint(boxes: list[tuple[tuple[int, ...], tuple[int, ...]]], dims: int) -> bool:
    """Whether no two boxes (start, end: half-open, non-empty) overlap, in about n log n
    for n boxes: on the grid their cuts make when it is small (each cell owned once),
    else by a sweep along the dimension they are cut most along, comparing each box only
    with those whose range on it meets its own."""
    if len(boxes) < 2:
        return True
    cuts = [sorted({b[0][d] for b in boxes} | {b[1][d] for b in boxes}) for d in range(dims)]
    if math.prod(len(c) - 1 for c in cuts) <= GRID_CELLS_PER_PIECE * len(boxes):
        where = [{cut: i for i, cut in enumerate(c)} for c in cuts]
        owned: set[tuple[int, ...]] = set()
        for start, end in boxes:
            for cell in itertools.product(*(range(where[d][start[d]], where[d][end[d]]) for d in range(dims))):
                if cell in owned:
                    return False
                owned.add(cell)
        return True
    axis = max(range(dims), key=lambda d: len(cuts[d]))
    active: list[tuple[int, int]] = []  # (end on the axis, index) of boxes the sweep is inside
    for index, (start, end) in sorted(enumerate(boxes), key=lambda item: item[1][0][axis]):
        while active and active[0][0] <= start[axis]:
            heapq.heappop(active)
        for _, other in active:
            other_start, other_end = boxes[other]
            if all(a < d and c < b for a, b, c, d in zip(start, end, other_start, other_end)):
                return False
        heapq.heappush(active, (end[axis], index))
    return True


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


_LEAVES = (type(None), bool, int, float, complex, str, bytes)


def check_tree(tree: Any, *, decoded: bool = False, aliases: dict[int, TensorRecord] | None = None) -> None:
    """A weights tree holds only plain values, tuples, state dicts and valid tensors, its
    tied tensors agreeing with each other and with those of ``aliases`` (the rest of the
    manifest), checked without recursion. ``decoded``: by :func:`unpack_tree`, which
    bounded its nesting and checked each tensor as it made it."""
    aliases = {} if aliases is None else aliases
    stack = [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, TensorRecord):
            if not decoded:
                check_tensor(item)
            _same_as_tied(item, aliases)
        elif isinstance(item, ShardedTensor):
            if not decoded:
                check_sharded(item)
        elif isinstance(item, StateDict):
            if not isinstance(item.items, dict) or not isinstance(item.metadata, (dict, StateDict, type(None))):
                raise BadManifest("a state dict must hold a mapping and a metadata mapping or nil")
            stack += item.children()
        elif isinstance(item, dict):
            for key in item:
                if not isinstance(key, (str, int, bool, float, type(None), bytes, tuple)):
                    raise BadManifest(f"a weights mapping has a key of type {type(key).__name__}")
            stack += item.values()
        elif isinstance(item, (list, tuple)):
            if isinstance(item, Shape) and not all(isinstance(n, int) and not isinstance(n, bool) for n in item):
                raise BadManifest("a torch.Size holds something other than ints")
            stack += item
        elif isinstance(item, set):
            if not all(isinstance(x, _LEAVES) for x in item):
                raise BadManifest("a set in a weights tree holds something other than plain values")
        elif isinstance(item, (NumpyArray, NumpyScalar, TorchDtype, TorchDevice, BigInt)):
            _check_value(item, decoded, aliases)
        elif not isinstance(item, _LEAVES):
            raise BadManifest(f"a weights tree holds a {type(item).__name__}")


def _check_value(item: Any, decoded: bool, aliases: dict[int, TensorRecord]) -> None:
    """A numpy array or scalar, a torch.dtype or torch.device, or a big int (revision 2.5)."""
    if isinstance(item, NumpyArray):
        if not decoded:
            check_tensor(item.record)
        if item.record.dtype not in NUMPY_DTYPES:
            raise BadManifest(f"a numpy array of dtype {item.record.dtype!r}, which numpy has not")
        _same_as_tied(item.record, aliases)
    elif isinstance(item, NumpyScalar):
        if item.dtype not in NUMPY_DTYPES or not isinstance(item.data, bytes) or \
                len(item.data) != DTYPE_SIZES[item.dtype]:
            raise BadManifest(f"a numpy scalar of dtype {item.dtype!r} cannot be {len(item.data)} bytes")
    elif isinstance(item, TorchDtype):
        if not isinstance(item.name, str) or not DTYPE_NAME_RE.fullmatch(item.name):
            raise BadManifest(f"a torch.dtype named {item.name!r}")
    elif isinstance(item, TorchDevice):
        if not isinstance(item.spec, str) or not DEVICE_RE.fullmatch(item.spec):
            raise BadManifest(f"a torch.device {item.spec!r}")
    elif not _is_int(item.value) or item.value.bit_length() > 8 * MAX_BIG_INT_BYTES - 1:
        raise BadManifest("an int beyond 64 bits that is no int, or longer than 4,095 bits")


def _plain(value: Any, what: str, *, mapping: bool = False, depth_known: bool = False) -> None:
    """JSON-like: string keys, plain values, at most :data:`MAX_DEPTH` deep counted from
    the manifest (whose map holds it: level 2)."""
    if mapping and not isinstance(value, dict):
        raise BadManifest(f"{what} must be a mapping, not {type(value).__name__}")
    if not depth_known and depth_exceeds(value, MAX_DEPTH - TREE_LEVEL + 1):
        raise BadManifest(f"{what} nests deeper than {MAX_DEPTH} levels (counted from the manifest)")
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, inner in item.items():
                if not isinstance(key, str):
                    raise BadManifest(f"{what} has a key of type {type(key).__name__}: keys are texts")
                stack.append(inner)
        elif isinstance(item, list):
            stack += item
        elif not isinstance(item, (type(None), bool, int, float, str)):
            raise BadManifest(f"{what} holds a {type(item).__name__}: only JSON values are allowed")


def _metrics(metrics: Any) -> None:
    if not isinstance(metrics, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool) for k, v in metrics.items()):
        raise BadManifest("metrics must map texts to numbers")


def _optional_text(value: Any, what: str, lines: bool = False) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"{what} must be text, not {type(value).__name__}")


def _optional_str(value: Any) -> None:
    if value is not None and not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")


_READ_FIELDS = _field_rules(_optional_text)
_WRITTEN_FIELDS = _field_rules(check_text)
