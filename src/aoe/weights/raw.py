"""A tensor's raw bytes and dtype as the format stores them: names of dtypes both ways,
a view of a tensor's memory, and the float width byte planes split by."""

from __future__ import annotations

import ctypes
import functools
import sys

import torch

from ..errors import UnsupportedValueError

if sys.byteorder != "little":  # pragma: no cover - every platform torch ships for today
    raise ImportError("aoe stores raw little-endian tensor bytes and needs a little-endian host")


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
