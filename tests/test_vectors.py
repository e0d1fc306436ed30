"""Personality vectors as numbers for charts: exact decoding without torch, and PCA."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from aoe.manifests import TensorRecord
from aoe.objects import Blob
from aoe.vectors import MAX_DIMS, chartable, project, values


def record(dtype: str, shape: tuple[int, ...], size: int) -> TensorRecord:
    return TensorRecord(dtype, shape, Blob(size, ("0" * 64,)))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float32, torch.float64, torch.int64, torch.uint8])
def test_stored_bytes_decode_to_the_tensors_values(dtype: torch.dtype) -> None:
    tensor = torch.tensor([1.5, -2.0, 0.25, 100.0]).abs().to(dtype) if dtype == torch.uint8 else \
        torch.tensor([1.5, -2.0, 0.25, 100.0]).to(dtype)
    data = tensor.view(torch.uint8).numpy().tobytes()
    name = str(dtype).removeprefix("torch.")
    assert values(record(name, (2, 2), len(data)), data).tolist() == tensor.double().tolist()


def test_what_cannot_be_charted_is_said_not_guessed() -> None:
    assert chartable(record("float32", (16,), 64))
    assert not chartable(None)
    assert not chartable(record("complex64", (4,), 32))  # not a real number
    assert not chartable(record("float8_e4m3fn", (4,), 4))  # numpy cannot read it
    assert not chartable(record("float32", (MAX_DIMS + 1,), 4 * (MAX_DIMS + 1)))  # too long to project at 10k runs
    assert not chartable(record("float32", (0,), 0))
    with pytest.raises(ValueError, match="cannot be a float32"):
        values(record("float32", (4,), 16), b"\0" * 12)


def test_projection_follows_the_direction_the_vectors_move() -> None:
    steps = np.arange(10.0)[:, None]
    vectors = np.hstack([steps, 2 * steps, np.zeros((10, 1))]) + np.random.default_rng(0).normal(0, 0.01, (10, 3))
    projected, (first, second) = project(vectors)
    assert first > 0.99 and second < 0.01 and math.isclose(first + second, 1.0, abs_tol=1e-3)
    order = np.argsort(projected[:, 0])
    assert list(order) in (list(range(10)), list(range(9, -1, -1)))  # the trajectory is a line, in run order
    assert np.allclose(np.linalg.norm(projected[-1] - projected[0]), math.sqrt(5) * 9, rtol=0.01)
    assert np.array_equal(project(vectors)[0], projected)  # the same picture every time


def test_projection_of_degenerate_or_non_finite_vectors() -> None:
    assert project(np.ones((5, 4)))[1] == (0.0, 0.0)  # no spread: every run at the centre
    assert project(np.ones((1, 4)))[0].tolist() == [[0.0, 0.0]]
    with_nan = np.array([[0.0, 0.0], [1.0, math.nan], [2.0, 0.0], [math.inf, 0.0]])
    projected, _ = project(with_nan)
    assert np.isfinite(projected).all()  # a NaN or infinity counts as its dimension's mean
    single = project(np.arange(4.0)[:, None])  # one dimension: one component
    assert single[1] == (1.0, 0.0) and np.allclose(single[0][:, 1], 0)
