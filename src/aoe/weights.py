"""Weights: torch state_dicts to manifest trees of tensor blobs, and back, without pickle.

A tensor is stored as exactly its raw element bytes (little-endian, contiguous), one
blob per tensor, with dtype and shape in the manifest, so equal values deduplicate
whatever their key. Everything else in a state_dict (ints, floats, bools, strings,
None, bytes, lists, tuples, nested mappings) is stored as plain msgpack. Loading
builds tensors from bytes and plain values only: nothing stored is ever executed.

This is the only layer that imports torch; the store imports it lazily, so commands
that need no tensors start fast.
"""

from __future__ import annotations

import ctypes
import functools
import os
import sys
from collections import Counter, OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .errors import FormatError, InvalidInputError, NotFoundError, StorageError, UnsupportedValueError
from .inputs import open_input
from .limits import MAX_DEPTH
from .manifests import BadManifest, Shape, ShardedTensor, StateDict, TensorRecord, check_nesting, tensors
from .objects import ObjectStore

if sys.byteorder != "little":  # pragma: no cover - every platform torch ships for today
    raise ImportError("aoe stores raw little-endian tensor bytes and needs a little-endian host")

_INT_RANGE = (-(2**63), 2**64 - 1)  # what msgpack can hold
MAX_VERSIONS = 1 << 16
"""Tensors whose version a store remembers from its saves (~300 bytes each)."""


@functools.cache  # asked once per tensor: thousands of times in a checkpoint of small tensors
def dtype_name(dtype: torch.dtype) -> str:
    """The canonical name stored in manifests: ``torch.float32`` -> ``"float32"``."""
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: str) -> torch.dtype:
    """The torch dtype a manifest names; a clear error for one this torch lacks."""
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype) or dtype_name(dtype) != name:
        raise UnsupportedValueError(
            f"stored tensor has dtype {name!r}, which this torch {torch.__version__} "
            "does not offer; load it with the torch that wrote it"
        )
    return dtype


def raw_view(tensor: torch.Tensor) -> memoryview:
    """A zero-copy byte view of a contiguous CPU tensor (keep the tensor alive)."""
    nbytes = tensor.numel() * tensor.element_size()
    if nbytes == 0:
        return memoryview(b"")
    return memoryview((ctypes.c_ubyte * nbytes).from_address(tensor.data_ptr())).cast("B")


def plane_width(dtype: torch.dtype) -> int:
    """The float element size whose bytes the objects layer splits into planes (1:
    not floating-point, or one byte wide). A complex number is two floats."""
    if dtype.is_complex:
        return dtype.itemsize // 2
    return dtype.itemsize if dtype.is_floating_point else 1


@dataclass
class _Pending:
    index: int


_CONTAINERS = frozenset({dict, OrderedDict, Counter, list, tuple, set})
"""What a weights tree nests (a torch.Size is a tuple of ints: a leaf here)."""
MAX_TREE_NODES = 1_000_000
"""Most values and containers one tree may have written out: a manifest holds at most
16 MiB, about 100,000 tensors and their values."""


@dataclass
class PreparedTrees:
    """Trees validated and flattened, tensors waiting to be written as blobs."""

    trees: dict[str, Any] = field(default_factory=dict)
    tensors: list[torch.Tensor] = field(default_factory=list)
    shapes: list[tuple[str, tuple[int, ...]]] = field(default_factory=list)
    trees_of: list[str] = field(default_factory=list)
    """The tree each queued tensor belongs to."""
    _tree: str = ""
    views: dict[tuple[Any, ...], int] = field(default_factory=dict)
    """Each tensor queued, by its storage, offset, shape, strides, dtype and device."""
    aliased: set[int] = field(default_factory=set)
    """Tensors met more than once (tied weights): stored once, loaded as one storage."""
    versions: dict[tuple[Any, ...], int] = field(default_factory=dict)
    """torch's version counter of each tensor as it was saved, by storage, offset, shape,
    strides, dtype and device: kept across saves by the store (see :attr:`recall`)."""
    recall: list[bool] = field(default_factory=list)
    """Whether each queued tensor's version is the one it had when saved before: then it
    is likely unchanged, and its blob is recognized by a fast fingerprint first
    (``ObjectStore.put``), which catches writes the counter misses (through ``.data``)."""
    recall_of_copies: Mapping[int, bool] = field(default_factory=dict)
    """The same, decided already for copies a :func:`snapshot` made, by their ``id``."""
    _walked: dict[int, tuple[Any, int]] = field(default_factory=dict)
    """Containers of the tree being walked, by ``id``: what each became and how many
    values and containers it holds written out."""
    _nodes: int = 0
    _tensor_visits: int = 0

    def add(self, name: str, value: Any, level: int = 2) -> None:
        """Validate ``value`` (a state_dict, nn.Module or tensor) and queue its tensors.
        ``level``: where the tree will sit in the manifest (2: the weights; 3: an extra),
        so its nesting is checked as a reader will count it, before anything is written."""
        if isinstance(value, torch.nn.Module):
            value = value.state_dict()
        self._tree = name
        self._walked = {}
        self._nodes = 0
        tree = self._walk(value, name)
        try:
            check_nesting(tree, level)
        except BadManifest as exc:
            raise UnsupportedValueError(f"{name}: cannot be stored: {exc}") from None
        self.trees[name] = tree

    def _walk(self, value: Any, path: str, depth: int = 0) -> Any:
        """The tree of ``value``, every container type kept or refused (never changed
        silently): dict, OrderedDict (with torch's ``_metadata``), Counter, list, tuple,
        set, torch.Size, as ``torch.load(weights_only=True)`` returns them. A container
        met again (``torch.load`` gives one object for a list pickled twice) is walked
        once and stored as a copy each time, as long as the tree written out stays within
        :data:`MAX_TREE_NODES`: forty levels of lists each holding one list twice is a
        kilobyte file and 2**40 leaves."""
        if depth > MAX_DEPTH:
            raise UnsupportedValueError(f"{path}: nested deeper than {MAX_DEPTH} levels")
        if isinstance(value, torch.Tensor):
            self._count(1, path)
            self._tensor_visits += 1
            return self._tensor(value, path)
        if type(value) in _CONTAINERS:
            seen = self._walked.get(id(value))
            if seen is not None:
                self._count(seen[1], path)
                return seen[0]
            nodes, tensors = self._nodes, self._tensor_visits
            tree = self._container(value, path, depth)
            if tensors == self._tensor_visits:  # one holding tensors is walked each time: its tensors tie
                self._walked[id(value)] = (tree, self._nodes - nodes + 1)
            self._count(1, path)
            return tree
        self._count(1, path)
        return self._leaf(value, path, depth)

    def _count(self, nodes: int, path: str) -> None:
        self._nodes += nodes
        if self._nodes > MAX_TREE_NODES:
            raise UnsupportedValueError(
                f"{path}: the state holds more than {MAX_TREE_NODES:,} values and containers when written out "
                "(containers it holds more than once count each time); store it in fewer, larger tensors")

    def _container(self, value: Any, path: str, depth: int) -> Any:
        """A dict, OrderedDict, Counter, list, tuple or set, its items walked."""
        if isinstance(value, Mapping) and type(value) in (dict, OrderedDict, Counter):
            items = {self._key(k, path): self._walk(v, f"{path}[{k!r}]", depth + 1) for k, v in value.items()}
            metadata = getattr(value, "_metadata", None)
            if isinstance(value, Counter):
                return Counter(items)
            if isinstance(value, OrderedDict) or metadata is not None:
                meta = self._walk(metadata, f"{path}._metadata", depth + 1) if metadata is not None else None
                return StateDict(items, meta)
            return items
        if type(value) is list:
            return [self._walk(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
        if type(value) is tuple:
            return tuple(self._walk(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value))
        if type(value) is set:
            if not all(v is None or isinstance(v, (bool, int, float, complex, str, bytes)) for v in value):
                raise UnsupportedValueError(f"{path}: a set may hold only numbers, strings, bytes, bools and None")
            return {self._walk(v, f"{path}{{{v!r}}}", depth + 1) for v in value}
        raise AssertionError(type(value))  # pragma: no cover - only the types of _CONTAINERS come here

    def _leaf(self, value: Any, path: str, depth: int) -> Any:
        """A value that holds no other (a torch.Size holds only ints), kept or refused."""
        if isinstance(value, torch.Size):
            return Shape(int(n) for n in value)
        if isinstance(value, complex):
            return complex(value)
        if value is None or isinstance(value, (bool, str, bytes)):
            return value
        if isinstance(value, int):
            if not _INT_RANGE[0] <= value <= _INT_RANGE[1]:
                raise UnsupportedValueError(f"{path}: integer {value} does not fit in 64 bits")
            return int(value)
        if isinstance(value, float):
            return float(value)
        raise UnsupportedValueError(
            f"{path}: cannot store a value of type {type(value).__module__}.{type(value).__qualname__}"
            f"{' (torch.load(weights_only=True) refuses it too)' if isinstance(value, (Mapping, list, tuple)) else ''}; "
            "weights may hold tensors, ints, floats, complex numbers, bools, strings, bytes, None, and dicts, "
            "OrderedDicts, Counters, lists, tuples, sets and torch.Sizes of those: convert it to one of these"
        )

    def _key(self, key: Any, path: str) -> Any:
        if key is None or isinstance(key, (str, bool)):
            return key
        if isinstance(key, (int, float)):
            return self._walk(key, path)
        raise UnsupportedValueError(
            f"{path}: mapping key {key!r} of type {type(key).__name__} cannot be stored; "
            "keys may be strings, numbers, bools or None"
        )

    def _tensor(self, tensor: torch.Tensor, path: str) -> _Pending:
        if tensor.layout != torch.strided or tensor.is_quantized or tensor.is_meta:
            kind = "quantized" if tensor.is_quantized else f"{tensor.layout}/{tensor.device.type}"
            raise UnsupportedValueError(
                f"{path}: a {kind} tensor cannot be stored; convert it to a dense tensor "
                "with real data (e.g. .to_dense() or .dequantize()) first"
            )
        view = storage_view(tensor)
        if tensor.numel() and view in self.views:  # the same tensor again: tied weights
            index = self.views[view]
            self.aliased.add(index)
            return _Pending(index)
        if tensor.is_cpu and tensor.is_contiguous() and not tensor.is_conj() and not tensor.is_neg():
            dense = tensor  # its bytes as they are (most tensors: a microsecond less each, which counts by thousands)
        else:
            dense = tensor.detach().cpu().resolve_conj().resolve_neg().contiguous()
        self.tensors.append(dense)
        self.shapes.append((dtype_name(dense.dtype), tuple(dense.shape)))
        self.trees_of.append(self._tree)
        self.views[view] = len(self.tensors) - 1
        recall = self.recall_of_copies.get(id(tensor))
        self.recall.append(note_version(self.versions, view, tensor) if recall is None else recall)
        return _Pending(len(self.tensors) - 1)

    def store(self, objects: ObjectStore) -> dict[str, Any]:
        """Write every queued tensor as a blob (in parallel); return the finished trees."""
        blobs = objects.put_blobs((raw_view(t) for t in self.tensors), (plane_width(t.dtype) for t in self.tensors),
                                  self.trees_of, self.recall)  # a tree's small tensors packed together
        aliases = {index: alias for alias, index in enumerate(sorted(self.aliased))}
        records = [TensorRecord(dtype, shape, blob, aliases.get(index))
                   for index, ((dtype, shape), blob) in enumerate(zip(self.shapes, blobs))]
        return {name: _resolve(tree, records) for name, tree in self.trees.items()}


def storage_view(tensor: torch.Tensor) -> tuple[Any, ...]:
    """Which bytes of which storage a tensor shows, as what: equal for one tensor met
    twice in a state (tied weights), and for a tensor saved again."""
    return (tensor.untyped_storage().data_ptr(), tensor.storage_offset(), tensor.shape,
            tensor.stride(), tensor.dtype, tensor.device)


def note_version(versions: dict[tuple[Any, ...], int], view: tuple[Any, ...], tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` is likely unchanged since it was last saved (torch counted no
    in-place write to it); its version is noted for the next save."""
    try:
        version = tensor._version
    except RuntimeError:  # not counted (inference mode)
        return False
    recall = versions.get(view) == version
    if len(versions) >= MAX_VERSIONS:
        versions.clear()  # a bound: tensors the next saves meet are noted again
    versions[view] = version
    return recall


@dataclass
class Snapshot:
    """A copy of a weights tree no training step can change any more (see :func:`snapshot`)."""

    tree: Any
    recall_of_copies: dict[int, bool]
    """Whether each copy's original was likely unchanged since saved, by the copy's ``id``
    (for :attr:`PreparedTrees.recall_of_copies`)."""


def snapshot(tree: Any, versions: dict[tuple[Any, ...], int]) -> Snapshot:
    """Copy a weights tree for a save that runs later (in the background): each tensor
    copied once (to the CPU), tied tensors copied to one tensor again, and each noted as
    a save notes it (:func:`note_version`), since the copy is what will be saved."""
    copies: dict[tuple[Any, ...], torch.Tensor] = {}
    recall_of_copies: dict[int, bool] = {}

    def copy(value: Any) -> Any:
        if isinstance(value, torch.nn.Module):
            value = value.state_dict()
        if isinstance(value, torch.Tensor):
            view = storage_view(value)
            if view not in copies or not value.numel():
                copies[view] = value.detach().to("cpu", copy=True)
                recall_of_copies[id(copies[view])] = note_version(versions, view, value)
            return copies[view]
        if isinstance(value, dict):
            result = type(value)({k: copy(v) for k, v in value.items()})  # a Counter counts what update gets
            metadata = getattr(value, "_metadata", None)
            if metadata is not None:
                result._metadata = metadata  # type: ignore[attr-defined]
            return result
        if type(value) in (list, tuple):
            return type(value)(copy(v) for v in value)
        return value

    return Snapshot(copy(tree), recall_of_copies)


def _resolve(tree: Any, records: list[TensorRecord]) -> Any:
    if isinstance(tree, _Pending):
        return records[tree.index]
    if isinstance(tree, StateDict):
        return StateDict(_resolve(tree.items, records), tree.metadata)
    if isinstance(tree, dict):
        return type(tree)({k: _resolve(v, records) for k, v in tree.items()})  # dict or Counter
    if isinstance(tree, list):
        return [_resolve(v, records) for v in tree]
    if isinstance(tree, tuple) and not isinstance(tree, Shape):
        return tuple(_resolve(v, records) for v in tree)
    return tree


# -- loading ----------------------------------------------------------------------


def load_trees(
    objects: ObjectStore, trees: Iterable[Any], map_location: str | torch.device | None = "cpu"
) -> list[Any]:
    """Rebuild stored trees, reading every tensor (hash-verified) in parallel. Tensors with
    one ``alias`` (tied weights) are read once and share one storage, as with torch.load."""
    device = _device(map_location)
    trees = list(trees)
    buffers: dict[Any, torch.Tensor] = {}
    targets = []
    for tree in trees:
        for record in tensors(tree):
            if _buffer_key(record) not in buffers:
                _check_size(record)  # before anything is allocated for it
                try:
                    buffer = torch.empty(record.blob.size, dtype=torch.uint8)
                except RuntimeError:  # more than this machine can give
                    raise StorageError(
                        f"cannot allocate {record.blob.size:,} bytes for a {record.dtype}{list(record.shape)} "
                        "tensor on this machine") from None
                buffers[_buffer_key(record)] = buffer
                targets.append((record.blob, raw_view(buffer)))
    objects.read_blobs_into(targets)
    if device is not None:  # moved once each, so tied tensors stay tied on the device
        buffers = {key: buffer.to(device) for key, buffer in buffers.items()}
    return [_build(tree, buffers) for tree in trees]


def _buffer_key(record: TensorRecord) -> Any:
    return ("alias", record.alias) if record.alias is not None else id(record)


def _build(tree: Any, buffers: dict[Any, torch.Tensor]) -> Any:
    if isinstance(tree, TensorRecord):
        return buffers[_buffer_key(tree)].view(dtype_from_name(tree.dtype)).reshape(tree.shape)
    if isinstance(tree, ShardedTensor):
        return _assembled(tree, buffers)
    if isinstance(tree, StateDict):
        state: OrderedDict[Any, Any] = OrderedDict((k, _build(v, buffers)) for k, v in tree.items.items())
        if tree.metadata is not None:
            state._metadata = _build(tree.metadata, buffers)  # type: ignore[attr-defined]
        return state
    if isinstance(tree, dict):
        return type(tree)({k: _build(v, buffers) for k, v in tree.items()})  # dict or Counter
    if isinstance(tree, list):
        return [_build(v, buffers) for v in tree]
    if isinstance(tree, Shape):
        return torch.Size(tree)
    if isinstance(tree, tuple):
        return tuple(_build(v, buffers) for v in tree)
    return tree


def _assembled(tree: ShardedTensor, buffers: dict[Any, torch.Tensor]) -> torch.Tensor:
    """A sharded tensor put together whole from its pieces (which tile it: checked when
    the manifest was read)."""
    pieces = [(offsets, _build(record, buffers)) for offsets, record in tree.pieces]
    whole = torch.empty(tree.shape, dtype=dtype_from_name(tree.dtype), device=pieces[0][1].device)
    for offsets, piece in pieces:
        block = whole
        for dim, (start, length) in enumerate(zip(offsets, piece.shape)):
            block = block.narrow(dim, start, length)
        block.copy_(piece)
    return whole


def _check_size(record: TensorRecord) -> None:
    """A tensor's blob holds exactly its elements (checked when its manifest was read;
    again here, for dtypes the format's table does not know but this torch does)."""
    expected = _numel(record.shape) * dtype_from_name(record.dtype).itemsize
    if expected != record.blob.size:
        raise FormatError(
            f"stored tensor {record.dtype}{list(record.shape)} should be {expected} bytes, "
            f"its blob is {record.blob.size}; the manifest is damaged: run `aoe store fsck`"
        )


def _numel(shape: tuple[int, ...]) -> int:
    count = 1
    for n in shape:
        count *= n
    return count


def _device(map_location: Any) -> torch.device | None:
    if map_location is None:
        return None
    try:
        return torch.device(map_location)
    except (TypeError, RuntimeError):
        raise InvalidInputError(
            f"map_location {map_location!r} is not a device; pass e.g. 'cpu' or 'cuda:0'"
        ) from None


def as_tensor(value: Any, what: str = "personality vector") -> torch.Tensor:
    """A tensor from a tensor, a numpy array, a list of floats (kept as float64, so no
    precision is lost), or a path to a torch file holding a tensor."""
    if isinstance(value, (str, os.PathLike)):
        value = load_tensor_file(value, f"{what} file")
        if not isinstance(value, torch.Tensor):
            raise InvalidInputError(f"{what} file holds a {type(value).__name__}, not a tensor")
    if isinstance(value, torch.Tensor):
        return value
    if type(value).__module__ == "numpy":
        return torch.as_tensor(value)
    if isinstance(value, (list, tuple)):
        try:
            return torch.tensor(value, dtype=torch.float64)
        except (TypeError, ValueError, RuntimeError) as exc:
            raise InvalidInputError(f"{what}: {value!r:.80} is not a list of numbers ({exc})") from None
    raise InvalidInputError(
        f"{what}: cannot use a {type(value).__name__}; pass a tensor, a numpy array or a list of floats"
    )


# -- training checkpoints -----------------------------------------------------------

MODEL_KEYS = ("model_state_dict", "state_dict", "model", "model_state", "weights")
TRAINING_STATE_KEYS = {
    "optimizer": ("optimizer_state_dict", "optimizer", "optim", "optimizer_state"),
    "scheduler": ("scheduler_state_dict", "scheduler", "lr_scheduler", "scheduler_state"),
    "scaler": ("scaler_state_dict", "scaler", "grad_scaler"),
}
COUNTER_KEYS = ("epoch", "epochs", "step", "global_step", "iteration")
LOSS_KEYS = ("loss", "train_loss", "training_loss", "val_loss", "validation_loss", "valid_loss",
             "best_val_loss", "best_loss")
PERSONALITY_KEYS = ("personality_vector", "personality")


@dataclass
class Checkpoint:
    """A training checkpoint taken apart: what a finished model keeps, and what it drops."""

    weights: Any
    personality_vector: torch.Tensor | None = None
    training_state: dict[str, Any] = field(default_factory=dict)
    counters: dict[str, Any] = field(default_factory=dict)
    losses: dict[str, float] = field(default_factory=dict)
    other_state: dict[str, Any] = field(default_factory=dict)
    other_values: dict[str, Any] = field(default_factory=dict)


def split_checkpoint(checkpoint: Mapping[str, Any]) -> Checkpoint:
    """Sort a checkpoint's entries: model weights, optimizer/scheduler state, epoch and
    step counters, losses, the personality vector, and anything else (tensor-holding
    entries apart from plain values). A mapping with no model key is the weights."""
    if not isinstance(checkpoint, Mapping):
        raise InvalidInputError(f"a checkpoint is a mapping (a dict saved with torch.save), not a {type(checkpoint).__name__}")
    model_key = next((k for k in MODEL_KEYS if isinstance(checkpoint.get(k), Mapping)), None)
    if model_key is None:
        return Checkpoint(weights=checkpoint)
    parts = Checkpoint(weights=checkpoint[model_key])
    for key, value in checkpoint.items():
        if key == model_key:
            continue
        state_name = next((name for name, keys in TRAINING_STATE_KEYS.items() if key in keys), None)
        if state_name is not None:
            parts.training_state[state_name] = value
        elif key in PERSONALITY_KEYS and isinstance(value, torch.Tensor):
            parts.personality_vector = value
        elif key in COUNTER_KEYS and isinstance(value, int):
            parts.counters[key] = value
        elif key in LOSS_KEYS and isinstance(value, (int, float, torch.Tensor)):
            parts.losses[key] = float(value)
        elif _holds_tensors(value):
            parts.other_state[str(key)] = value
        else:
            parts.other_values[str(key)] = value
    return parts


def _holds_tensors(value: Any) -> bool:
    """Whether a value holds a tensor anywhere: each container looked into once, however
    often it is held (a checkpoint may hold one list in many places)."""
    stack, seen = [value], set()
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            return True
        if isinstance(item, (Mapping, list, tuple)) and id(item) not in seen:
            seen.add(id(item))
            stack.extend(item.values() if isinstance(item, Mapping) else item)
    return False


def load_tensor_file(path: Any, what: str, within: Any = None) -> Any:
    """Read a torch file without unpickling arbitrary objects (``weights_only=True``): a
    regular file, inside the folder ``within`` if given (:func:`inputs.open_input`)."""
    try:
        with open_input(Path(path), what, within) as file:
            return torch.load(file, map_location="cpu", weights_only=True)
    except InvalidInputError:
        raise
    except Exception as exc:  # noqa: BLE001 - torch raises many types for files it will not read safely
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise InvalidInputError(
            f"{what} {path} cannot be read as weights-only torch data ({first_line}); aoe never "
            "unpickles code: re-save it with plain tensors and values"
        ) from None


# -- reading part of a run -------------------------------------------------------------


def entries(tree: Any) -> tuple[dict[Any, Any], Any]:
    """The top-level entries of stored weights, and torch's ``_metadata`` if any."""
    if isinstance(tree, StateDict):
        return tree.items, tree.metadata
    if isinstance(tree, dict):
        return tree, None
    raise InvalidInputError(
        f"these weights are a {type(tree).__name__}, not a mapping of named entries; load them whole"
    )


def select(tree: Any, keys: Iterable[Any]) -> Any:
    """The same weights with only the given top-level entries (``_metadata`` kept)."""
    items, metadata = entries(tree)
    keys = list(keys)
    missing = [k for k in keys if k not in items]
    if missing:
        raise NotFoundError(
            f"no weights entries {', '.join(map(repr, missing[:5]))} in this run "
            f"(it has {len(items)}, e.g. {', '.join(map(repr, list(items)[:5]))})"
        )
    chosen = {k: items[k] for k in keys}
    return StateDict(chosen, metadata) if isinstance(tree, StateDict) else chosen


def flat_tensors(weights: Any) -> tuple[dict[str, torch.Tensor], list[tuple[str, str]]]:
    """Loaded weights as safetensors holds them: one flat mapping of names to tensors
    (nested mappings joined with dots, ``model.layer.weight``), each its own contiguous
    copy where tensors shared storage (tied weights: safetensors refuses shared memory).
    Returns the mapping and the (name, name it shared storage with) pairs. Anything else
    (a list, a number, a key that is not a string) is refused: safetensors cannot hold it."""
    flat: dict[str, torch.Tensor] = {}
    tied: list[tuple[str, str]] = []
    storages: dict[tuple[int, torch.device], str] = {}
    stack: list[tuple[str, Any]] = [("", weights)]
    origins: dict[str, str] = {}  # each flat name, and the entry it came from
    while stack:
        path, value = stack.pop()
        if isinstance(value, torch.Tensor):
            name = _flat_name(path)
            if name in flat:
                raise UnsupportedValueError(
                    f"the weights hold both {origins[name]} and {_entry(path)}, which safetensors would both name "
                    f"{name!r}: export --format pt (which keeps the nesting), or rename one")
            origins[name] = _entry(path)
            storage = (value.untyped_storage().data_ptr(), value.device)
            if value.numel() and storage in storages:
                tied.append((name, storages[storage]))
                value = value.clone()
            else:
                storages[storage] = name
            flat[name] = value.contiguous()
        elif isinstance(value, Mapping) and all(isinstance(key, str) for key in value):
            stack.extend(reversed([(f"{path}\0{key}" if path else key, item) for key, item in value.items()]))
        else:
            raise UnsupportedValueError(
                f"{_flat_name(path) if path else 'the weights'}: a {type(value).__name__} (safetensors holds only "
                "tensors under string names): export --format pt, or --key ENTRY to export one entry of a "
                "checkpoint (e.g. 'model')")
    return flat, sorted(tied)


def _flat_name(path: str) -> str:
    """A tensor's name in a flat file: its keys joined by dots (``model.layer.weight``)."""
    return path.replace("\0", ".") or "tensor"


def _entry(path: str) -> str:
    """Where an entry is in nested weights, unambiguously: ``['a']['b']``."""
    return "".join(f"[{key!r}]" for key in path.split("\0")) if path else "the weights"


class LazyWeights(Mapping[Any, Any]):
    """A run's weights as a mapping that reads an entry (a tensor, usually) only when it
    is accessed, verifying its hash then; entries read once are kept.

    ``describe(key)`` tells a tensor's dtype, shape and size without reading it.
    """

    def __init__(self, objects: ObjectStore, tree: Any, map_location: Any = "cpu") -> None:
        self._objects = objects
        self._items, metadata = entries(tree)
        self._map_location = map_location
        self._loaded: dict[Any, Any] = {}
        self.metadata = load_trees(objects, [metadata])[0] if metadata is not None else None
        self._metadata = self.metadata  # the name module.load_state_dict looks up: module versions

    def __getitem__(self, key: Any) -> Any:
        if key not in self._loaded:
            if key not in self._items:
                raise NotFoundError(f"no weights entry {key!r} (e.g. {', '.join(map(repr, list(self._items)[:5]))})")
            self._loaded[key] = load_trees(self._objects, [self._items[key]], self._map_location)[0]
        return self._loaded[key]

    def __iter__(self) -> Iterator[Any]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def describe(self, key: Any) -> dict[str, Any]:
        """dtype, shape and bytes of the tensors under an entry, without reading them."""
        if key not in self._items:
            raise NotFoundError(f"no weights entry {key!r}")
        item = self._items[key]
        records = list(tensors(item))
        whole = isinstance(item, (TensorRecord, ShardedTensor))  # one tensor (stored whole or in pieces)
        return {
            "tensors": 1 if whole else len(records),
            "bytes": sum(r.blob.size for r in records),
            **({"dtype": item.dtype, "shape": list(item.shape)} if whole else {}),
        }
