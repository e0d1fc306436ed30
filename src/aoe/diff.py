"""Diff: what differs between two runs of a font, for ``aoe store diff`` and the web view.

Images, feedback and params are compared as stored; tensors by address first (equal
addresses are equal tensors, nothing to read), and only tensors whose bytes differ are
read (lazily, verified) to say by how much: the relative L2 change and the largest
absolute difference.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from .manifests import ShardedTensor, TensorRecord, blob_map, walk
from .names import format_time
from .objects import Blob
from .runinfo import RunInfo
from .store import Store


@dataclass(frozen=True)
class Change:
    """One differing value: ``a`` and ``b`` are None where a side lacks it."""

    key: str
    a: Any
    b: Any


@dataclass(frozen=True)
class TensorChange:
    name: str
    status: str
    """``same``, ``changed``, ``added``, ``removed`` or ``reshaped`` (dtype or shape differ)."""
    a: str | None
    b: str | None
    """``dtype[shape]`` on each side."""
    nbytes: int
    relative_change: float | None = None
    """||b - a|| / ||a|| for changed floating-point tensors (None when not measured)."""
    max_abs_diff: float | None = None


@dataclass
class RunDiff:
    font_id: str
    a: RunInfo
    b: RunInfo
    params: list[Change] = field(default_factory=list)
    feedback: list[Change] = field(default_factory=list)
    metadata: list[Change] = field(default_factory=list)
    images: list[Change] = field(default_factory=list)
    """``sample`` and ``glyph X``: a and b are the blobs (None where absent)."""
    tensors: list[TensorChange] = field(default_factory=list)

    @property
    def changed_tensors(self) -> list[TensorChange]:
        return [t for t in self.tensors if t.status != "same"]

    def to_dict(self) -> dict[str, Any]:
        def change(c: Change) -> dict[str, Any]:
            return {"key": c.key, "a": _plain(c.a), "b": _plain(c.b)}

        return {
            "font_id": self.font_id, "a": self.a.run_id, "b": self.b.run_id,
            "params": [change(c) for c in self.params], "feedback": [change(c) for c in self.feedback],
            "metadata": [change(c) for c in self.metadata], "images": [change(c) for c in self.images],
            "tensors": [t.__dict__ for t in self.tensors],
        }


def diff_runs(store: Store, font_id: str, run_a: str, run_b: str, *, measure: bool = True) -> RunDiff:
    """Compare two runs; ``measure`` reads changed tensors to say how much they changed."""
    first, second = store.open_run(font_id, run_a), store.open_run(font_id, run_b)
    result = RunDiff(font_id, first.info, second.info)
    result.params = changes(first.manifest.params, second.manifest.params)
    result.feedback = changes(_feedback(first), _feedback(second))
    for key in ("name", "description", "status", "tags", "started_at", "ended_at"):
        a, b = getattr(first.info, key), getattr(second.info, key)
        if a != b:
            result.metadata.append(Change(key, a, b))
    if _identity(first.manifest.sample) != _identity(second.manifest.sample):
        result.images.append(Change("sample", first.manifest.sample, second.manifest.sample))
    for glyph in sorted(set(first.manifest.glyphs) | set(second.manifest.glyphs)):
        a, b = first.manifest.glyphs.get(glyph), second.manifest.glyphs.get(glyph)
        if _identity(a) != _identity(b):
            result.images.append(Change(f"glyph {glyph}", a, b))
    left, right = tensor_table(first.manifest.weights), tensor_table(second.manifest.weights)
    for name in list(left) + [n for n in right if n not in left]:
        a, b = left.get(name), right.get(name)
        shown_a, shown_b = (_shown(a) if a else None), (_shown(b) if b else None)
        if a is None or b is None:
            status = "added" if a is None else "removed"
            present = a if a is not None else b
            assert present is not None  # a name comes from one side or the other
            result.tensors.append(TensorChange(name, status, shown_a, shown_b, present.blob.size))
        elif a.blob.identity == b.blob.identity and shown_a == shown_b:
            result.tensors.append(TensorChange(name, "same", shown_a, shown_b, a.blob.size))
        elif shown_a != shown_b:
            result.tensors.append(TensorChange(name, "reshaped", shown_a, shown_b, b.blob.size))
        else:
            relative = largest = None
            if measure and a.dtype.startswith(("float", "bfloat", "complex")):
                relative, largest = _how_much(store, a, b)
            result.tensors.append(TensorChange(name, "changed", shown_a, shown_b, a.blob.size, relative, largest))
    return result


def _identity(blob: Blob | None) -> tuple[str, ...] | None:
    return blob.identity if blob is not None else None


def tensor_table(tree: Any) -> dict[str, TensorRecord]:
    """Every tensor of a weights tree by its dotted name (``layer.0.weight``); a sharded
    tensor's pieces each by the block they hold (``embed.weight[16:32, 0:64]``), so what
    changed between two checkpoints is told piece by piece, as it was stored."""
    table = {}
    for name, leaf in walk(tree):
        if isinstance(leaf, TensorRecord):
            table[name or "(tensor)"] = leaf
        elif isinstance(leaf, ShardedTensor):
            for offsets, record in leaf.pieces:
                block = ", ".join(f"{start}:{start + length}" for start, length in zip(offsets, record.shape))
                table[f"{name}[{block}]"] = record
    return table


def changes(a: Any, b: Any, prefix: str = "") -> list[Change]:
    """The differing leaves of two JSON-like values, by dotted path."""
    if isinstance(a, dict) and isinstance(b, dict):
        found: list[Change] = []
        for key in sorted(set(a) | set(b), key=str):
            path = f"{prefix}.{key}" if prefix else str(key)
            if key not in a:
                found.append(Change(path, None, b[key]))
            elif key not in b:
                found.append(Change(path, a[key], None))
            else:
                found.extend(changes(a[key], b[key], path))
        return found
    return [] if a == b else [Change(prefix or "(value)", a, b)]


def _feedback(run: Any) -> Any:
    return run.feedback() if run.manifest.feedback else {}


def _shown(record: TensorRecord) -> str:
    return f"{record.dtype}{list(record.shape)}"


def _how_much(store: Store, first: TensorRecord, second: TensorRecord) -> tuple[float | None, float | None]:
    """Relative L2 change and largest absolute difference of two tensors (read and
    verified); None for a dtype torch cannot compute with (float4, say)."""
    import torch

    from .weights import load_trees

    try:
        a, b = (t.to(torch.float64) for t in load_trees(store.objects, [first, second]))
    except (RuntimeError, TypeError):
        return None, None
    delta = (b - a).abs()
    norm = float(torch.linalg.vector_norm(a))
    change = float(torch.linalg.vector_norm(b - a))
    return (change / norm if norm else float("inf") if change else 0.0), float(delta.max()) if delta.numel() else 0.0


def _plain(value: Any) -> Any:
    if isinstance(value, Blob):
        return blob_map(value)
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, datetime):
        return format_time(value)  # as `show` prints it
    return value


def lines(result: RunDiff) -> Iterator[str]:
    """The diff as text, a section at a time (``aoe store diff``)."""
    yield f"--- {result.font_id} {result.a.run_id}"
    yield f"+++ {result.font_id} {result.b.run_id}"
    for title, items in (("metadata", result.metadata), ("params", result.params), ("feedback", result.feedback)):
        for c in items:
            yield f"{title}: {c.key}: {_text(c.a)} -> {_text(c.b)}"
    for c in result.images:
        yield f"image: {c.key}: {'added' if c.a is None else 'removed' if c.b is None else 'differs'}"
    same = [t for t in result.tensors if t.status == "same"]
    for t in result.changed_tensors:
        how = ""
        if t.relative_change is not None:
            how = f" (relative change {t.relative_change:.3g}, max |diff| {t.max_abs_diff:.3g})"
        shapes = t.a if t.a == t.b else f"{t.a} -> {t.b}"
        yield f"tensor: {t.name}: {t.status} {shapes}{how}"
    yield (f"tensors: {len(result.changed_tensors)} differ, {len(same)} identical "
           f"({sum(t.nbytes for t in same) / 1e6:.1f} MB shared)")


def _text(value: Any) -> str:
    return "absent" if value is None else repr(_plain(value))
