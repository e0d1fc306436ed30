"""PyTorch Lightning's checkpoint storage as aoe runs: a ``CheckpointIO`` plugin, the
place Lightning gives to where checkpoints live.

    trainer = Trainer(plugins=[AoeCheckpointIO(store, "1-fruity")], callbacks=[ModelCheckpoint(...)])
    trainer.fit(model)                                          # each checkpoint is a run
    trainer.fit(model, ckpt_path="aoe:1-fruity/<run id>")       # resume from one

Every checkpoint Lightning writes (model, optimizers, schedulers, loops, callbacks) is
saved whole as a run of ``font_id``, with the path Lightning asked for, the epoch and the
step as params; a checkpoint Lightning removes (``save_top_k``) goes to the trash. To
resume, pass ``aoe:FONT/RUN_ID`` (or the path Lightning reported, e.g.
``checkpoint_callback.best_model_path``) as ``ckpt_path``. Values a checkpoint holds
that aoe cannot store exactly (an object of a custom class in ``hyper_parameters``) make
the save fail with the entry named, never a silently changed type.

Needs ``pip install 'aoe[lightning]'``.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.fabric.plugins import CheckpointIO

from ..errors import RunNotFoundError
from ..store import Store

PREFIX = "aoe:"


class AoeCheckpointIO(CheckpointIO):
    """Saves and loads Lightning's checkpoints as aoe runs of ``font_id``; ``run_ids``
    maps each path Lightning saved to in this process to its run."""

    def __init__(self, store: Store, font_id: str, *, tags: Sequence[str] = ()) -> None:
        store.refs.require_font(font_id)
        self.store, self.font_id, self.tags = store, font_id, tuple(tags)
        self.run_ids: dict[str, str] = {}

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        params = {"lightning_path": str(path), "epoch": checkpoint.get("epoch"),
                  "global_step": checkpoint.get("global_step")}
        self.run_ids[str(path)] = self.store.save_model(
            self.font_id, checkpoint, params=params, name=Path(str(path)).name, tags=[*self.tags, "lightning"])

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        font_id, run_id = self.run_of(path)
        device = map_location if isinstance(map_location, str) or map_location is None else "cpu"
        checkpoint: dict[str, Any] = self.store.load_model(font_id, run_id, map_location=device or "cpu").weights
        return checkpoint

    def remove_checkpoint(self, path: Any) -> None:
        font_id, run_id = self.run_of(path)
        self.store.delete_run(font_id, run_id)
        self.run_ids.pop(str(path), None)

    def run_of(self, path: Any) -> tuple[str, str]:
        """The run a ``ckpt_path`` names: ``aoe:FONT/RUN_ID``, or a path Lightning saved
        to (the newest run saved there)."""
        text = str(path)
        if text.startswith(PREFIX):
            font_id, _, run_id = text[len(PREFIX):].partition("/")
            return font_id, run_id
        if text in self.run_ids:
            return self.font_id, self.run_ids[text]
        found = self.store.list_runs(self.font_id, where=[("params.lightning_path", "=", text)], sort="-run_id",
                                     limit=1)
        if not found:
            raise RunNotFoundError(f"no run of {self.font_id} holds a checkpoint saved at {text}; "
                                   f"pass ckpt_path='{PREFIX}{self.font_id}/<run id>' (see `aoe store ls {self.font_id}`)")
        return self.font_id, found[0].run_id
