"""PyTorch Lightning's checkpoint storage as aoe runs: a ``CheckpointIO`` plugin, the
place Lightning gives to where checkpoints live.

    io = AoeCheckpointIO(store, "1-fruity", with_rng_state=True)
    trainer = Trainer(plugins=[io], callbacks=[ModelCheckpoint(monitor="val_loss", ...)])
    trainer.fit(model)                                          # each checkpoint is a run
    trainer.fit(model, ckpt_path="aoe:1-fruity@best")           # resume from one

Every checkpoint Lightning writes (model, optimizers, schedulers, loops, callbacks) is
saved whole as a run of ``font_id``, with the path Lightning asked for, the epoch and the
step as params, and the score ``ModelCheckpoint`` monitors as feedback; a checkpoint
Lightning removes (``save_top_k``) goes to the trash. To resume, pass ``aoe:FONT/RUN_ID``,
``aoe:FONT@ALIAS`` (or the path Lightning reported, e.g.
``checkpoint_callback.best_model_path``) as ``ckpt_path``. Values a checkpoint holds
that aoe cannot store exactly (an object of a custom class in ``hyper_parameters``) make
the save fail with the entry named, never a silently changed type.

``with_rng_state=True`` keeps the random generators' states in each checkpoint and puts
them back when training resumes from it, so it draws what it would have drawn (Lightning's
own checkpoints do not keep them). Each run names the run it came from (the checkpoint
saved before it, or the one training resumed from) as its parent. When a
``ModelCheckpoint`` with a ``monitor`` says a checkpoint is its best, the alias
``best_alias`` (``best``) moves to its run, by compare-and-swap from where this training
last put it (if another process moved it meanwhile, a warning says so and it is left alone).

Needs ``pip install 'aoe[lightning]'``.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from lightning.fabric.plugins import CheckpointIO

from ..errors import ProtectedRunError, RunNotFoundError
from ..manifests import ParentRun
from ..store import Store
from .best import BestAlias
from .randomness import restore_rng_states, rng_states

PREFIX = "aoe:"
RNG_STATE = "aoe_rng_state"
"""The checkpoint entry that holds the random generators' states (``with_rng_state``)."""


class AoeCheckpointIO(CheckpointIO):
    """Saves and loads Lightning's checkpoints as aoe runs of ``font_id``; ``run_ids``
    maps each path Lightning saved to in this process to its run."""

    def __init__(self, store: Store, font_id: str, *, tags: Sequence[str] = (), with_rng_state: bool = False,
                 best_alias: str | None = "best") -> None:
        store.refs.require_font(font_id)
        self.store, self.font_id, self.tags = store, font_id, tuple(tags)
        self.with_rng_state = with_rng_state
        self.best = BestAlias(store, font_id, best_alias)
        self.run_ids: dict[str, str] = {}
        self.parent: ParentRun | None = None
        """The run the next checkpoint came from: the last saved, or the one loaded."""

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None) -> None:
        params = {"lightning_path": str(path), "epoch": checkpoint.get("epoch"),
                  "global_step": checkpoint.get("global_step")}
        monitored = _monitored(checkpoint)
        stored = {**checkpoint, RNG_STATE: rng_states()} if self.with_rng_state else checkpoint
        run_id = self.store.save_model(
            self.font_id, stored, params=params, name=Path(str(path)).name, tags=[*self.tags, "lightning"],
            feedback={name: score for name, score, _ in monitored} or None,
            parents=[self.parent] if self.parent else None)
        self.run_ids[str(path)] = run_id
        self.parent = self.store.parent_runs([(self.font_id, run_id)])[0]
        if any(best == str(path) for _, _, best in monitored):
            self.best.move(run_id, f"best {monitored[0][0]} (Lightning ModelCheckpoint)")

    def load_checkpoint(self, path: Any, map_location: Any = None, weights_only: bool | None = None) -> dict[str, Any]:
        font_id, run_id = self.run_of(path)
        device = map_location if isinstance(map_location, str) or map_location is None else "cpu"
        loaded = self.store.load_model(font_id, run_id, map_location=device or "cpu")
        checkpoint: dict[str, Any] = loaded.weights
        states = checkpoint.pop(RNG_STATE, None)
        if states is not None:
            restore_rng_states(states)
        self.parent = self.store.parent_runs([loaded])[0]
        return checkpoint

    def remove_checkpoint(self, path: Any) -> None:
        """Lightning no longer wants it (``save_top_k``): to the trash, unless an alias
        names it (someone chose it: it stays, with a warning)."""
        font_id, run_id = self.run_of(path)
        try:
            self.store.delete_run(font_id, run_id)
        except ProtectedRunError as exc:
            warnings.warn(f"kept the checkpoint Lightning removed: {exc}", stacklevel=2)
        self.run_ids.pop(str(path), None)

    def run_of(self, path: Any) -> tuple[str, str]:
        """The run a ``ckpt_path`` names: ``aoe:FONT/RUN_ID``, ``aoe:FONT@ALIAS``, or a path
        Lightning saved to (the newest run saved there)."""
        text = str(path)
        if text.startswith(PREFIX):
            font_id, _, run_id = text[len(PREFIX):].partition("/")
            return self.store.run_named(font_id, run_id or None)
        if text in self.run_ids:
            return self.font_id, self.run_ids[text]
        found = self.store.list_runs(self.font_id, where=[("params.lightning_path", "=", text)], sort="-run_id",
                                     limit=1)
        if not found:
            raise RunNotFoundError(f"no run of {self.font_id} holds a checkpoint saved at {text}; "
                                   f"pass ckpt_path='{PREFIX}{self.font_id}/<run id>' (see `aoe store ls {self.font_id}`)")
        return self.font_id, found[0].run_id



def _monitored(checkpoint: dict[str, Any]) -> list[tuple[str, float, str]]:
    """(monitor, its score now, the path of the best checkpoint) of each ModelCheckpoint
    with a monitor, as the checkpoint's callback states say."""
    found = []
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if str(key).startswith("ModelCheckpoint") and isinstance(state, dict) and state.get("monitor"):
            score = state.get("current_score")
            if score is not None:
                found.append((str(state["monitor"]), float(score), str(state.get("best_model_path"))))
    return found
