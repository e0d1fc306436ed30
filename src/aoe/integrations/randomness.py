"""The states of the random generators a training draws from (Python's, numpy's, torch's
on the CPU, and CUDA's where there is one), taken and put back as plain values that aoe
stores exactly: a training resumed from a run draws what it would have drawn. The keys
are those of the Hugging Face Trainer's ``rng_state.pth``."""

from __future__ import annotations

import random
from collections.abc import Mapping
from typing import Any

import numpy
import torch


def rng_states() -> dict[str, Any]:
    """Every generator's state, now."""
    states: dict[str, Any] = {"python": random.getstate(), "numpy": numpy.random.get_state(),
                              "cpu": torch.random.get_rng_state()}
    if torch.cuda.is_available():  # pragma: no cover - no GPU here
        states["cuda"] = torch.cuda.random.get_rng_state()  # as the Trainer keeps it, not distributed
    return states


def restore_rng_states(states: Mapping[str, Any]) -> None:
    """Put back what :func:`rng_states` took."""
    random.setstate(states["python"])
    numpy.random.set_state(states["numpy"])
    torch.random.set_rng_state(states["cpu"])
    if "cuda" in states and torch.cuda.is_available():  # pragma: no cover - no GPU here
        torch.cuda.random.set_rng_state(states["cuda"])
