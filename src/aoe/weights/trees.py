"""Saving: a trainer's state (a state_dict, an nn.Module, nested checkpoints) walked into
a tree the manifest can hold, every container kept or refused (never changed silently),
its tensors queued and written as blobs; tied tensors found; tensors not written to since
this store saved them recognized (version counters); and the copy a background save
takes of a state so training can go on."""

from __future__ import annotations

from collections import Counter, OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy
import torch

from ..errors import UnsupportedValueError
from ..limits import MAX_DEPTH
from ..manifests import (
    MAX_BIG_INT_BYTES,
    NUMPY_DTYPES,
    BadManifest,
    BigInt,
    NumpyArray,
    NumpyScalar,
    Shape,
    StateDict,
    TensorRecord,
    TorchDevice,
    TorchDtype,
    check_nesting,
)
from ..objects import ObjectStore
from .raw import dtype_name, plane_width, raw_view

_INT_RANGE = (-(2**63), 2**64 - 1)  # what msgpack can hold
MAX_VERSIONS = 1 << 16
"""Tensors whose version a store remembers from its saves (~300 bytes each)."""


@dataclass
class _Pending:
    index: int


@dataclass
class _PendingArray:
    """A numpy array on its way: its elements queued as a tensor's."""

    tensor: _Pending


def _tensor_of(array: numpy.ndarray, path: str) -> torch.Tensor:
    """A numpy array's elements as a tensor (sharing its memory where it can), in
    little-endian order; a dtype torch has not (strings, objects, dates) is refused."""
    if array.dtype.name not in NUMPY_DTYPES:
        raise UnsupportedValueError(f"{path}: a numpy array of {array.dtype} cannot be stored; "
                                    f"arrays of {', '.join(sorted(NUMPY_DTYPES))} can")
    if array.dtype.byteorder == ">" or not array.flags.writeable:
        array = array.astype(array.dtype.newbyteorder("<"))  # a copy, in little-endian order
    return torch.from_numpy(numpy.ascontiguousarray(array))


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
        if isinstance(value, (torch.Tensor, numpy.ndarray)):
            self._count(1, path)
            self._tensor_visits += 1
            if isinstance(value, numpy.ndarray):  # its elements stored as a tensor's, given back as an array
                return _PendingArray(self._tensor(_tensor_of(value, path), path))
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
        """A value that holds no other (a torch.Size holds only ints), kept exactly (a
        numpy scalar stays one, an int beyond 64 bits too) or refused."""
        if isinstance(value, torch.Size):
            return Shape(int(n) for n in value)
        if isinstance(value, numpy.generic):  # before float: a numpy float64 is a float too
            if value.dtype.name not in NUMPY_DTYPES:
                raise UnsupportedValueError(f"{path}: a numpy {value.dtype.name} cannot be stored; "
                                            f"numpy scalars of {', '.join(sorted(NUMPY_DTYPES))} can")
            return NumpyScalar(value.dtype.name, numpy.asarray(value).astype(value.dtype.newbyteorder("<")).tobytes())
        if isinstance(value, torch.dtype):
            return TorchDtype(dtype_name(value))
        if isinstance(value, torch.device):
            return TorchDevice(str(value))
        if isinstance(value, complex):
            return complex(value)
        if value is None or isinstance(value, (bool, str, bytes)):
            return value
        if isinstance(value, int):
            if _INT_RANGE[0] <= value <= _INT_RANGE[1]:
                return int(value)
            if value.bit_length() < 8 * MAX_BIG_INT_BYTES:
                return BigInt(int(value))  # a random generator's 128-bit state
            raise UnsupportedValueError(f"{path}: an integer of {value.bit_length():,} bits is too long to store")
        if isinstance(value, float):
            return float(value)
        raise UnsupportedValueError(
            f"{path}: cannot store a value of type {type(value).__module__}.{type(value).__qualname__}"
            f"{' (torch.load(weights_only=True) refuses it too)' if isinstance(value, (Mapping, list, tuple)) else ''}; "
            "weights may hold tensors, numpy arrays and scalars, ints, floats, complex numbers, bools, strings, bytes, "
            "None, torch.dtypes and torch.devices, and dicts, OrderedDicts, Counters, lists, tuples, sets and "
            "torch.Sizes of those: convert it to one of these"
        )

    def _key(self, key: Any, path: str) -> Any:
        if key is None or isinstance(key, (str, bool)):
            return key
        if isinstance(key, (int, float)) and not isinstance(key, numpy.generic):
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
        if isinstance(value, numpy.ndarray):
            return value.copy()  # training may write into it once the save has returned
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
    if isinstance(tree, _PendingArray):
        return NumpyArray(records[tree.tensor.index])
    if isinstance(tree, StateDict):
        return StateDict(_resolve(tree.items, records), tree.metadata)
    if isinstance(tree, dict):
        return type(tree)({k: _resolve(v, records) for k, v in tree.items()})  # dict or Counter
    if isinstance(tree, list):
        return [_resolve(v, records) for v in tree]
    if isinstance(tree, tuple) and not isinstance(tree, Shape):
        return tuple(_resolve(v, records) for v in tree)
    return tree
