"""Loading: stored trees back into tensors and values (every byte verified, tied tensors
one storage again, sharded tensors put together whole), part of a run's weights, the
weights flattened for safetensors, and a lazy mapping that reads a tensor when asked."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable, Iterator, Mapping
from typing import Any

import numpy
import torch

from ..errors import FormatError, InvalidInputError, NotFoundError, StorageError, UnsupportedValueError
from ..manifests import (
    BigInt,
    NumpyArray,
    NumpyScalar,
    Shape,
    ShardedTensor,
    StateDict,
    TensorRecord,
    TorchDevice,
    TorchDtype,
    tensors,
)
from ..objects import ObjectStore
from .raw import dtype_from_name, raw_view


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
    moved = buffers if device is None else {key: buffer.to(device) for key, buffer in buffers.items()}
    return [_build(tree, moved, buffers) for tree in trees]  # (moved once each: tied tensors stay tied)


def _buffer_key(record: TensorRecord) -> Any:
    return ("alias", record.alias) if record.alias is not None else id(record)


def _build(tree: Any, buffers: dict[Any, torch.Tensor], on_cpu: dict[Any, torch.Tensor]) -> Any:
    """The value a stored tree stands for: tensors from ``buffers`` (on the device asked
    for), numpy arrays from ``on_cpu`` (numpy has no other device)."""
    if isinstance(tree, TensorRecord):
        return buffers[_buffer_key(tree)].view(dtype_from_name(tree.dtype)).reshape(tree.shape)
    if isinstance(tree, ShardedTensor):
        return _assembled(tree, buffers, on_cpu)
    if isinstance(tree, StateDict):
        state: OrderedDict[Any, Any] = OrderedDict((k, _build(v, buffers, on_cpu)) for k, v in tree.items.items())
        if tree.metadata is not None:
            state._metadata = _build(tree.metadata, buffers, on_cpu)  # type: ignore[attr-defined]
        return state
    if isinstance(tree, dict):
        return type(tree)({k: _build(v, buffers, on_cpu) for k, v in tree.items()})  # dict or Counter
    if isinstance(tree, list):
        return [_build(v, buffers, on_cpu) for v in tree]
    if isinstance(tree, Shape):
        return torch.Size(tree)
    if isinstance(tree, tuple):
        return tuple(_build(v, buffers, on_cpu) for v in tree)
    if isinstance(tree, (NumpyArray, NumpyScalar, TorchDtype, TorchDevice, BigInt)):
        return _value(tree, on_cpu)
    return tree


def _value(tree: NumpyArray | NumpyScalar | TorchDtype | TorchDevice | BigInt, on_cpu: dict[Any, torch.Tensor]) -> Any:
    """A numpy array or scalar, a torch.dtype or torch.device, or an int beyond 64 bits, as
    it was saved."""
    if isinstance(tree, NumpyArray):
        record = tree.record
        return on_cpu[_buffer_key(record)].view(dtype_from_name(record.dtype)).reshape(record.shape).numpy()
    if isinstance(tree, NumpyScalar):
        return numpy.frombuffer(tree.data, numpy.dtype(tree.dtype).newbyteorder("<"))[0]
    if isinstance(tree, TorchDtype):
        return dtype_from_name(tree.name)
    if isinstance(tree, TorchDevice):
        return torch.device(tree.spec)
    return tree.value


def _assembled(tree: ShardedTensor, buffers: dict[Any, torch.Tensor], on_cpu: dict[Any, torch.Tensor]
               ) -> torch.Tensor:
    """A sharded tensor put together whole from its pieces (which tile it: checked when
    the manifest was read)."""
    pieces = [(offsets, _build(record, buffers, on_cpu)) for offsets, record in tree.pieces]
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
