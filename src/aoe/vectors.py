"""Personality vectors as numbers for charts, without torch: a stored tensor's bytes as
float64 values, and a font's vectors projected to two dimensions (PCA).

numpy only; the bytes come verified from the object store, and their length was checked
against the record's dtype and shape by the manifest rules, so decoding here is exact.
"""

from __future__ import annotations

from math import prod
from typing import TYPE_CHECKING, TypeGuard

from .manifests import DTYPE_SIZES, TensorRecord

if TYPE_CHECKING:
    import numpy as np

NUMPY_DTYPES = {"float16": "<f2", "float32": "<f4", "float64": "<f8", "uint8": "u1", "int8": "i1",
                "int16": "<i2", "uint16": "<u2", "int32": "<i4", "uint32": "<u4", "int64": "<i8",
                "uint64": "<u8", "bool": "u1"}
"""The element types a chart reads (little-endian, as the format stores them); bfloat16
is read as the upper half of a float32."""
MAX_DIMS = 256
"""Vectors with more elements than this are not charted (projecting 10,000 runs of them
would cost a page more than its budget); the page says how many runs it left out."""


def chartable(record: TensorRecord | None) -> TypeGuard[TensorRecord]:
    """Whether a personality vector can be drawn: a real number type, 1 to MAX_DIMS elements."""
    return record is not None and (record.dtype in NUMPY_DTYPES or record.dtype == "bfloat16") and \
        1 <= prod(record.shape) <= MAX_DIMS and record.blob.size == prod(record.shape) * DTYPE_SIZES[record.dtype]


def values(record: TensorRecord, data: bytes) -> np.ndarray:
    """The elements of a chartable tensor, flattened, as float64."""
    import numpy as np

    if len(data) != prod(record.shape) * DTYPE_SIZES[record.dtype]:
        raise ValueError(f"{len(data)} bytes cannot be a {record.dtype} tensor of shape {list(record.shape)}")
    if record.dtype == "bfloat16":
        halves = np.frombuffer(data, "<u2").astype("<u4") << 16
        return halves.view("<f4").astype(np.float64)
    return np.frombuffer(data, NUMPY_DTYPES[record.dtype]).astype(np.float64)


def project(vectors: np.ndarray) -> tuple[np.ndarray, tuple[float, float]]:
    """The rows of ``vectors`` (runs x dims) on their first two principal components,
    and the share of the variance each explains. It is computed in units of the largest
    element, so values near 1.8e308 give finite points (in those units, when the
    projection itself would overflow). Non-finite elements count as the dimension's mean;
    fewer than two dimensions (or no spread) give zeros."""
    import numpy as np

    data = np.array(vectors, dtype=np.float64)
    finite = np.isfinite(data)
    largest = float(np.abs(data[finite]).max()) if finite.any() else 0.0
    data /= largest or 1.0  # in units of the largest element: sums and products of 1e300s stay finite
    counts = finite.sum(axis=0)
    means = np.where(counts > 0, np.where(finite, data, 0.0).sum(axis=0) / np.maximum(counts, 1), 0.0)
    data = np.where(finite, data, means) - means
    projected = np.zeros((data.shape[0], 2))
    if data.shape[0] < 2 or not data.any():
        return projected, (0.0, 0.0)
    variance, axes = np.linalg.eigh(data.T @ data)  # dims x dims: 10x faster than an SVD of runs x dims
    order = np.argsort(variance)[::-1][:2]
    axes = axes[:, order]
    signs = np.sign(axes.sum(axis=0))  # the same orientation from one page view to the next
    signs[signs == 0] = 1.0
    projected[:, :len(order)] = data @ (axes * signs)
    with np.errstate(over="ignore"):
        back = projected * (largest or 1.0)
    projected = back if np.isfinite(back).all() else projected
    shares = np.clip(variance[order], 0.0, None) / max(float(np.clip(variance, 0.0, None).sum()), 1e-300)
    return projected, (float(shares[0]), float(shares[1]) if len(order) > 1 else 0.0)
