"""A manifest's bytes: msgpack with extension types for the trees of weights, packed
deterministically (sorted top-level keys, smallest encodings) and unpacked within bounds
(extension types nest at most ``MAX_EXT_DEPTH``, anything at most ``MAX_DEPTH``), every
manifest checked by ``rules`` on its way in and out; older versions migrated in memory."""

from __future__ import annotations

import threading
import warnings
from collections import Counter
from collections.abc import Callable
from typing import Any

import msgpack

from ..errors import (
    FormatError,
    InvalidInputError,
    InvalidNameError,
    MismatchedManifestError,
    NewerFormatError,
    UnsupportedValueError,
)
from ..limits import MAX_DEPTH, MAX_MANIFEST_BYTES, depth_exceeds
from ..objects import Blob
from .rules import BadManifest, check, check_sharded, check_tensor
from .schema import (
    EXT_BIG_INT,
    EXT_COMPLEX,
    EXT_COUNTER,
    EXT_DEVICE,
    EXT_DTYPE,
    EXT_NUMPY,
    EXT_NUMPY_SCALAR,
    EXT_SET,
    EXT_SHARDED,
    EXT_SIZE,
    EXT_STATE_DICT,
    EXT_TENSOR,
    EXT_TUPLE,
    FORMAT,
    FORMAT_VERSION,
    MAX_BIG_INT_BYTES,
    MAX_EXT_DEPTH,
    MAX_PARENTS,
    PARENT_KEYS,
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


def pack(manifest: Manifest) -> bytes:
    """The manifest's bytes: a msgpack map with sorted keys, absent fields omitted.
    A manifest that breaks a rule of the format is refused (:class:`InvalidInputError`):
    aoe never publishes what a reader would refuse."""
    try:
        check(manifest, writing=True)
    except BadManifest as exc:
        raise InvalidInputError(f"cannot publish this run: {exc}") from None
    fields: dict[str, Any] = {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "font_id": manifest.font_id,
        "run_id": manifest.run_id,
        "status": manifest.status,
        "saved_at": manifest.saved_at,
        "started_at": manifest.started_at,
        "ended_at": manifest.ended_at,
        "params": manifest.params or None,
        "personality": tensor_map(manifest.personality) if manifest.personality else None,
        "weights": manifest.weights,
        "sample": blob_map(manifest.sample) if manifest.sample else None,
        "glyphs": {k: blob_map(v) for k, v in manifest.glyphs.items()} or None,
        "feedback": blob_map(manifest.feedback) if manifest.feedback else None,
        "extras": manifest.extras or None,
        "name": manifest.name,
        "description": manifest.description,
        "tags": list(manifest.tags) or None,
        "weights_version": manifest.weights_version,
        "feedback_schema": manifest.feedback_schema,
        "parent": manifest.parent,
        "source": manifest.source or None,
        "metrics": manifest.metrics or None,
        "parents": [parent.to_dict() for parent in manifest.parents] or None,
    }
    present = {k: fields[k] for k in sorted(fields) if fields[k] is not None}
    data = pack_tree(present)
    if len(data) > MAX_MANIFEST_BYTES:
        raise InvalidInputError(
            f"this run's manifest would take {len(data):,} bytes, more than the {MAX_MANIFEST_BYTES:,} "
            "a manifest may; store fewer, larger tensors (or bundle small values into one tensor)")
    return data


def pack_tree(tree: Any) -> bytes:
    """msgpack bytes of a tree of plain values, tensor records, tuples and state dicts."""
    try:
        packed: bytes = msgpack.packb(tree, default=_ext, strict_types=True, use_bin_type=True)
        return packed
    except (OverflowError, ValueError) as exc:  # ints over 64 bits, too deep for msgpack
        raise UnsupportedValueError(f"cannot store this value: {exc}") from None


def _ext(value: Any) -> msgpack.ExtType:
    if isinstance(value, TensorRecord):
        return msgpack.ExtType(EXT_TENSOR, pack_tree(tensor_map(value)))
    if isinstance(value, ShardedTensor):
        pieces = [[list(offsets), record] for offsets, record in value.pieces]
        return msgpack.ExtType(EXT_SHARDED, pack_tree({"dtype": value.dtype, "shape": list(value.shape),
                                                       "pieces": pieces}))
    if isinstance(value, Counter):
        return msgpack.ExtType(EXT_COUNTER, pack_tree(dict(value)))
    if isinstance(value, (set, frozenset)):
        return msgpack.ExtType(EXT_SET, pack_tree(list(value)))
    if isinstance(value, Shape):
        return msgpack.ExtType(EXT_SIZE, pack_tree(list(value)))
    if isinstance(value, complex):
        return msgpack.ExtType(EXT_COMPLEX, pack_tree([value.real, value.imag]))
    if isinstance(value, tuple):
        return msgpack.ExtType(EXT_TUPLE, pack_tree(list(value)))
    if isinstance(value, StateDict):
        return msgpack.ExtType(EXT_STATE_DICT, pack_tree([value.items, value.metadata]))
    if isinstance(value, NumpyArray):
        return msgpack.ExtType(EXT_NUMPY, pack_tree(tensor_map(value.record)))
    if isinstance(value, NumpyScalar):
        return msgpack.ExtType(EXT_NUMPY_SCALAR, pack_tree([value.dtype, value.data]))
    if isinstance(value, TorchDtype):
        return msgpack.ExtType(EXT_DTYPE, pack_tree(value.name))
    if isinstance(value, TorchDevice):
        return msgpack.ExtType(EXT_DEVICE, pack_tree(value.spec))
    if isinstance(value, BigInt):
        size = (value.value.bit_length() + 8) // 8  # a sign bit too
        return msgpack.ExtType(EXT_BIG_INT, pack_tree(value.value.to_bytes(size, "little", signed=True)))
    raise UnsupportedValueError(f"cannot store a value of type {type(value).__name__}")


def blob_map(blob: Blob) -> dict[str, Any]:
    where = {} if blob.offset is None else {"offset": blob.offset, "digest": blob.digest}
    return {"size": blob.size, "chunks": list(blob.chunks), **where}


def tensor_map(record: TensorRecord) -> dict[str, Any]:
    """A tensor record as plain values, as a manifest holds it (:func:`tensor_from_map` reads it back)."""
    alias = {} if record.alias is None else {"alias": record.alias}
    return {"dtype": record.dtype, "shape": list(record.shape), **blob_map(record.blob), **alias}


# -- unpacking ------------------------------------------------------------------


def unpack(data: bytes) -> Manifest:
    """Parse and check manifest bytes; refuse unknown formats, newer versions and any
    manifest that breaks a rule of the format (:func:`check`)."""
    if len(data) > MAX_MANIFEST_BYTES:
        raise FormatError(f"a manifest of {len(data):,} bytes is larger than any aoe writes; run `aoe store fsck`")
    try:
        fields = unpack_tree(data)
    except FormatError:
        raise
    except (BadManifest, InvalidNameError) as exc:  # raised by a tensor record, from an extension type
        raise FormatError(f"malformed run manifest ({exc}); run `aoe store fsck`") from None
    except Exception as exc:  # noqa: BLE001 - msgpack raises many types for malformed input
        raise FormatError(f"manifest is not valid msgpack ({exc}); run `aoe store fsck`") from None
    if not isinstance(fields, dict) or fields.get("format") != FORMAT:
        raise FormatError(f"not an aoe run manifest (no format marker {FORMAT!r})")
    version = fields.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise FormatError(f"manifest has an invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise NewerFormatError(
            f"run manifest format version {version} needs a newer aoe "
            f"(this one reads versions up to {FORMAT_VERSION}); upgrade aoe"
        )
    if version < FORMAT_VERSION:
        fields = migrate(fields, version)
    try:
        manifest = check(decoded=True, manifest=Manifest(
            font_id=fields["font_id"],
            run_id=fields["run_id"],
            status=fields["status"],
            saved_at=fields["saved_at"],
            started_at=fields.get("started_at"),
            ended_at=fields.get("ended_at"),
            params=fields.get("params", {}),
            personality=tensor_from_map(fields["personality"]) if "personality" in fields else None,
            weights=fields.get("weights"),
            sample=_blob(fields["sample"]) if "sample" in fields else None,
            glyphs={k: _blob(v) for k, v in _mapping(fields.get("glyphs", {})).items()},
            feedback=_blob(fields["feedback"]) if "feedback" in fields else None,
            extras=fields.get("extras", {}),
            name=fields.get("name"),
            description=fields.get("description"),
            tags=tuple(_sequence(fields.get("tags", []))),
            weights_version=fields.get("weights_version"),
            feedback_schema=fields.get("feedback_schema"),
            parent=fields.get("parent"),
            source=fields.get("source", {}),
            metrics=fields.get("metrics"),
            parents=tuple(ParentRun(p["font_id"], p["run_id"], p["manifest"]) for p in _parent_maps(fields)),
        ))
        if version < 2 and any(blob.offset is not None for blob in manifest.blobs()):
            raise BadManifest("a version 1 manifest holds a blob slice, which version 2 introduced")
        return manifest
    except (KeyError, TypeError, ValueError, AttributeError, InvalidNameError) as exc:
        why = str(exc) if isinstance(exc, (BadManifest, InvalidNameError)) else repr(exc)
        raise FormatError(f"malformed run manifest ({why}); run `aoe store fsck`") from None


def _parent_maps(fields: dict[str, Any]) -> list[dict[str, Any]]:
    """The ``parents`` of a decoded manifest: an array of maps of exactly their three keys."""
    parents = _sequence(fields.get("parents", []))
    if len(parents) > MAX_PARENTS or not all(isinstance(p, dict) and p.keys() == PARENT_KEYS for p in parents):
        raise BadManifest(f"parents must be at most {MAX_PARENTS} maps of font_id, run_id and manifest")
    return parents


def check_location(manifest: Manifest, font_id: str, run_id: str) -> Manifest:
    """A manifest read through the ref ``font_id/runs/run_id`` must be that run's: a ref
    copied or edited to name another run's manifest is refused, not shown as that run."""
    if (manifest.font_id, manifest.run_id) != (font_id, run_id):
        raise MismatchedManifestError(
            f"the ref of run {run_id} of {font_id} names the manifest of run {manifest.run_id} of "
            f"{manifest.font_id} (a ref copied or edited by hand); run `aoe store fsck`")
    return manifest


def _from_version_1(fields: dict[str, Any]) -> dict[str, Any]:
    """Version 1 is version 2 without blob slices: nothing changes (a slice in a version 1
    manifest is refused by :func:`unpack`)."""
    return fields


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {1: _from_version_1}
"""``MIGRATIONS[v]`` turns the fields of a version ``v`` manifest into version ``v + 1``,
returning them unchanged (the same dict) when they mean the same; see docs/format.md,
*Versions*."""


class FormatMigrationWarning(UserWarning):
    """A manifest of an older format version was migrated in memory when read."""


def migrate(fields: dict[str, Any], version: int) -> dict[str, Any]:
    """Bring an older manifest's fields up to :data:`FORMAT_VERSION`, warning once per read
    when that changed them."""
    original = fields
    for step in range(version, FORMAT_VERSION):
        if step not in MIGRATIONS:
            raise FormatError(f"no migration from manifest format version {step}; this aoe cannot read it")
        fields = MIGRATIONS[step](fields)
    if fields is not original:
        warnings.warn(
            f"run {fields.get('font_id')}/{fields.get('run_id')} has manifest format version {version}, "
            f"read as version {FORMAT_VERSION}; it stays as stored (an amend writes the new version)",
            FormatMigrationWarning,
            stacklevel=3,
        )
    return fields


_depth = threading.local()


def unpack_tree(data: bytes) -> Any:
    """The inverse of :func:`pack_tree`, refusing extension types nested deeper than
    :data:`MAX_EXT_DEPTH` and any nesting deeper than :data:`MAX_DEPTH`."""
    level = getattr(_depth, "level", 0)
    if level > MAX_EXT_DEPTH:
        raise FormatError(f"manifest nests extension types deeper than {MAX_EXT_DEPTH}; run `aoe store fsck`")
    _depth.level = level + 1
    try:
        tree = msgpack.unpackb(data, ext_hook=_from_ext, strict_map_key=False, raw=False)
    finally:
        _depth.level = level
    if level == 0 and depth_exceeds(tree):
        raise FormatError(f"manifest nests deeper than {MAX_DEPTH}; run `aoe store fsck`")
    return tree


def _from_ext(code: int, payload: bytes) -> Any:
    value = unpack_tree(payload)
    if code == EXT_TENSOR:
        return tensor_from_map(value)
    if code == EXT_TUPLE:
        return tuple(_sequence(value))
    if code == EXT_STATE_DICT:
        items, metadata = _sequence(value)
        return StateDict(_mapping(items), metadata)
    if code == EXT_COUNTER:
        return Counter(_mapping(value))
    if code == EXT_SET:
        return set(_sequence(value))
    if code == EXT_SIZE:
        return Shape(_sequence(value))
    if code == EXT_SHARDED:
        value = _mapping(value)
        pieces = []
        for piece in _sequence(value["pieces"]):
            offsets, record = _sequence(piece)
            if not isinstance(record, TensorRecord):
                raise TypeError("a piece of a sharded tensor is a tensor record")
            pieces.append((tuple(_sequence(offsets)), record))
        return check_sharded(ShardedTensor(value["dtype"], tuple(_sequence(value["shape"])), tuple(pieces)))
    if code == EXT_NUMPY:
        return NumpyArray(tensor_from_map(value))
    if code == EXT_NUMPY_SCALAR:
        dtype, data = _sequence(value)
        return NumpyScalar(dtype, data)
    if code == EXT_DTYPE:
        return TorchDtype(value)
    if code == EXT_DEVICE:
        return TorchDevice(value)
    if code == EXT_BIG_INT:
        if not isinstance(value, bytes) or not 0 < len(value) <= MAX_BIG_INT_BYTES:
            raise TypeError("an int beyond 64 bits is at most 512 bytes of bin")
        return BigInt(int.from_bytes(value, "little", signed=True))
    if code == EXT_COMPLEX:
        real, imag = _sequence(value)
        if not all(isinstance(x, float) for x in (real, imag)):
            raise TypeError("a complex number is two floats")
        return complex(real, imag)
    raise FormatError(f"unknown msgpack extension type {code} in a manifest; upgrade aoe")


def _mapping(value: Any) -> dict[Any, Any]:
    if not isinstance(value, dict):
        raise TypeError(f"expected a mapping, got {type(value).__name__}")
    return value


def _sequence(value: Any) -> list[Any]:
    if not isinstance(value, list):
        raise TypeError(f"expected an array, got {type(value).__name__}")
    return value


def _blob(value: Any) -> Blob:
    """A blob from plain values, unchecked: its manifest's :func:`check`, or the tensor
    record holding it, checks it."""
    value = _mapping(value)
    return Blob(value["size"], tuple(_sequence(value["chunks"])), value.get("offset"), value.get("digest"))


def tensor_from_map(value: Any) -> TensorRecord:
    """A tensor record from plain values, checked by the manifest rules (BadManifest if not)."""
    value = _mapping(value)
    return check_tensor(TensorRecord(value["dtype"], tuple(_sequence(value["shape"])), _blob(value),
                                     value.get("alias")))
