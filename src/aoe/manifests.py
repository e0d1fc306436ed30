"""Manifests: the immutable, versioned msgpack record of one run.

A manifest names every blob of a run (weights tensors, personality vector, sample,
eval glyphs, feedback, extras) and carries its metadata. It is stored as an object
itself, so its digest is its identity and any damage to it is caught by the hash.

Weight trees are nested mappings, lists and tuples of plain values and tensors.
Three msgpack extension types keep them exact without pickle:

- ext 1, a tensor: ``{"dtype", "shape", "size", "chunks"}`` (the tensor's raw bytes
  are the blob); ext 2, a tuple: an array; ext 3, an ordered mapping that carries
  torch's ``_metadata``: ``[map, metadata map or nil]``.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgpack

from .errors import FormatError, UnsupportedValueError
from .objects import Blob, Digest, parse_digest

FORMAT = "aoe.run"
"""The marker every run manifest carries in its ``format`` field."""

FORMAT_VERSION = 1
"""The newest manifest format this aoe writes and reads."""

WEIGHTS_VERSION = "v1"
FEEDBACK_SCHEMA = "1.0"

EXT_TENSOR = 1
EXT_TUPLE = 2
EXT_STATE_DICT = 3


@dataclass(frozen=True)
class TensorRecord:
    """A tensor as stored: dtype name (``"float32"``...), shape, and its raw bytes."""

    dtype: str
    shape: tuple[int, ...]
    blob: Blob


@dataclass
class StateDict:
    """An ordered mapping with torch's ``_metadata`` (module versions) beside it."""

    items: dict[Any, Any]
    metadata: dict[Any, Any] | None = None


@dataclass(frozen=True)
class Manifest:
    """One run, as written once and never changed."""

    font_id: str
    run_id: str
    status: str
    saved_at: str
    started_at: str | None = None
    ended_at: str | None = None
    params: dict[str, Any] = field(default_factory=dict)
    personality: TensorRecord | None = None
    weights: Any = None
    sample: Blob | None = None
    glyphs: dict[str, Blob] = field(default_factory=dict)
    feedback: Blob | None = None
    extras: dict[str, Any] = field(default_factory=dict)
    name: str | None = None
    description: str | None = None
    tags: tuple[str, ...] = ()
    weights_version: str | None = WEIGHTS_VERSION
    feedback_schema: str | None = None
    parent: Digest | None = None
    metrics: dict[str, float] | None = None
    """The numbers in the feedback (see ``catalog.feedback_metrics``), kept here so a
    listing need not read the feedback; None in manifests written before it existed."""
    source: dict[str, Any] = field(default_factory=dict)
    """Where an imported run came from (``{"legacy_path": ..., "legacy_run": ...}``)."""

    def blobs(self) -> Iterator[Blob]:
        """Every blob of the run: files, personality vector, and each tensor of the
        weights and extras (the same content may come more than once)."""
        yield from (b for b in (self.sample, self.feedback) if b is not None)
        yield from self.glyphs.values()
        if self.personality is not None:
            yield self.personality.blob
        for tree in (self.weights, *self.extras.values()):
            yield from (record.blob for record in tensors(tree))

    def digests(self) -> Iterator[Digest]:
        """Every object this run needs, the parent manifest excluded."""
        for blob in self.blobs():
            yield from blob.chunks

    @property
    def logical_bytes(self) -> int:
        """Everything the run holds, uncompressed and counted as if stored alone."""
        return sum(blob.size for blob in self.blobs())


def tensors(tree: Any) -> Iterator[TensorRecord]:
    """Every tensor record in a weights tree, depth first."""
    if isinstance(tree, TensorRecord):
        yield tree
    elif isinstance(tree, StateDict):
        yield from tensors(tree.items)
    elif isinstance(tree, Mapping):
        for value in tree.values():
            yield from tensors(value)
    elif isinstance(tree, (list, tuple)):
        for value in tree:
            yield from tensors(value)


# -- packing --------------------------------------------------------------------


def pack(manifest: Manifest) -> bytes:
    """The manifest's bytes: a msgpack map with sorted keys, absent fields omitted."""
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
        "personality": _tensor_map(manifest.personality) if manifest.personality else None,
        "weights": manifest.weights,
        "sample": _blob_map(manifest.sample) if manifest.sample else None,
        "glyphs": {k: _blob_map(v) for k, v in manifest.glyphs.items()} or None,
        "feedback": _blob_map(manifest.feedback) if manifest.feedback else None,
        "extras": manifest.extras or None,
        "name": manifest.name,
        "description": manifest.description,
        "tags": list(manifest.tags) or None,
        "weights_version": manifest.weights_version,
        "feedback_schema": manifest.feedback_schema,
        "parent": manifest.parent,
        "source": manifest.source or None,
        "metrics": manifest.metrics or None,
    }
    present = {k: fields[k] for k in sorted(fields) if fields[k] is not None}
    return pack_tree(present)


def pack_tree(tree: Any) -> bytes:
    """msgpack bytes of a tree of plain values, tensor records, tuples and state dicts."""
    return msgpack.packb(tree, default=_ext, strict_types=True, use_bin_type=True)


def _ext(value: Any) -> msgpack.ExtType:
    if isinstance(value, TensorRecord):
        return msgpack.ExtType(EXT_TENSOR, pack_tree(_tensor_map(value)))
    if isinstance(value, tuple):
        return msgpack.ExtType(EXT_TUPLE, pack_tree(list(value)))
    if isinstance(value, StateDict):
        return msgpack.ExtType(EXT_STATE_DICT, pack_tree([value.items, value.metadata]))
    raise UnsupportedValueError(f"cannot store a value of type {type(value).__name__}")


def _blob_map(blob: Blob) -> dict[str, Any]:
    return {"size": blob.size, "chunks": list(blob.chunks)}


def _tensor_map(record: TensorRecord) -> dict[str, Any]:
    return {"dtype": record.dtype, "shape": list(record.shape), **_blob_map(record.blob)}


# -- unpacking ------------------------------------------------------------------


def unpack(data: bytes) -> Manifest:
    """Parse and validate manifest bytes; refuse unknown formats and newer versions."""
    try:
        fields = unpack_tree(data)
    except FormatError:
        raise
    except Exception as exc:  # msgpack raises many types for malformed input
        raise FormatError(f"manifest is not valid msgpack ({exc}); run `aoe store fsck`") from None
    if not isinstance(fields, dict) or fields.get("format") != FORMAT:
        raise FormatError(f"not an aoe run manifest (no format marker {FORMAT!r})")
    version = fields.get("version")
    if not isinstance(version, int) or version < 1:
        raise FormatError(f"manifest has an invalid format version {version!r}")
    if version > FORMAT_VERSION:
        raise FormatError(
            f"run manifest format version {version} needs a newer aoe "
            f"(this one reads versions up to {FORMAT_VERSION}); upgrade aoe"
        )
    if version < FORMAT_VERSION:
        fields = migrate(fields, version)
    try:
        return Manifest(
            font_id=_str(fields["font_id"]),
            run_id=_str(fields["run_id"]),
            status=_str(fields["status"]),
            saved_at=_str(fields["saved_at"]),
            started_at=_opt_str(fields.get("started_at")),
            ended_at=_opt_str(fields.get("ended_at")),
            params=dict(fields.get("params") or {}),
            personality=_tensor(fields["personality"]) if "personality" in fields else None,
            weights=fields.get("weights"),
            sample=_blob(fields["sample"]) if "sample" in fields else None,
            glyphs={_str(k): _blob(v) for k, v in (fields.get("glyphs") or {}).items()},
            feedback=_blob(fields["feedback"]) if "feedback" in fields else None,
            extras={_str(k): v for k, v in (fields.get("extras") or {}).items()},
            name=_opt_str(fields.get("name")),
            description=_opt_str(fields.get("description")),
            tags=tuple(_str(t) for t in fields.get("tags") or ()),
            weights_version=_opt_str(fields.get("weights_version")),
            feedback_schema=_opt_str(fields.get("feedback_schema")),
            parent=parse_digest(fields["parent"]) if "parent" in fields else None,
            source=dict(fields.get("source") or {}),
            metrics=dict(fields["metrics"]) if "metrics" in fields else None,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise FormatError(f"malformed run manifest ({exc!r}); run `aoe store fsck`") from None


MIGRATIONS: dict[int, Callable[[dict[str, Any]], dict[str, Any]]] = {}
"""``MIGRATIONS[v]`` turns the fields of a version ``v`` manifest into version ``v + 1``.
Version 1 is the first, so there are none yet; see docs/format.md, *Versions*."""


class FormatMigrationWarning(UserWarning):
    """A manifest of an older format version was migrated in memory when read."""


def migrate(fields: dict[str, Any], version: int) -> dict[str, Any]:
    """Bring an older manifest's fields up to :data:`FORMAT_VERSION`, warning once per read."""
    for step in range(version, FORMAT_VERSION):
        if step not in MIGRATIONS:
            raise FormatError(f"no migration from manifest format version {step}; this aoe cannot read it")
        fields = MIGRATIONS[step](fields)
    warnings.warn(
        f"run {fields.get('font_id')}/{fields.get('run_id')} has manifest format version {version}, "
        f"read as version {FORMAT_VERSION}; it stays as stored (an amend writes the new version)",
        FormatMigrationWarning,
        stacklevel=3,
    )
    return fields


def unpack_tree(data: bytes) -> Any:
    """The inverse of :func:`pack_tree`."""
    return msgpack.unpackb(data, ext_hook=_from_ext, strict_map_key=False, raw=False)


def _from_ext(code: int, payload: bytes) -> Any:
    value = unpack_tree(payload)
    if code == EXT_TENSOR:
        return _tensor(value)
    if code == EXT_TUPLE:
        return tuple(value)
    if code == EXT_STATE_DICT:
        items, metadata = value
        return StateDict(dict(items), metadata)
    raise FormatError(f"unknown msgpack extension type {code} in a manifest; upgrade aoe")


def _blob(value: Any) -> Blob:
    size = value["size"]
    if not isinstance(size, int) or size < 0:
        raise ValueError(f"bad blob size {size!r}")
    return Blob(size, tuple(parse_digest(c) for c in value["chunks"]))


def _tensor(value: Any) -> TensorRecord:
    shape = tuple(value["shape"])
    if not all(isinstance(n, int) and n >= 0 for n in shape):
        raise ValueError(f"bad tensor shape {shape!r}")
    return TensorRecord(_str(value["dtype"]), shape, _blob(value))


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected a string, got {type(value).__name__}")
    return value


def _opt_str(value: Any) -> str | None:
    return None if value is None else _str(value)
