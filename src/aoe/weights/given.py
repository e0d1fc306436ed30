"""What a trainer gives besides state_dicts: torch files read without unpickling code, a
training checkpoint taken apart into the model's weights, training state, counters,
losses and the rest, and a personality vector given as a path, an array or a list."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..errors import InvalidInputError
from ..inputs import open_input

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
