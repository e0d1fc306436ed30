"""A Hugging Face ``transformers`` ``TrainerCallback`` that keeps a Trainer's checkpoints as
aoe runs.

    callback = AoeCallback(store, "1-fruity", with_trainer_state=True, with_rng_state=True)
    trainer = Trainer(..., callbacks=[callback])
    trainer.train()                                                     # each checkpoint a run
    trainer.train(resume_from_checkpoint=callback.resume_from("1-fruity@best"))  # go on from one

At each of the Trainer's save steps (``save_strategy``/``save_steps``) the model's weights
become a run (status ``running``, tag ``checkpoint``), and at the end of training one more
(status ``completed``; the same weights are stored once). Each run's params are the
TrainingArguments that shape training; its feedback the newest of each number the Trainer
logged (``loss``, ``eval_loss``, ``learning_rate``, ``epoch``) and the step, so ``aoe store
ls`` shows the curve. ``with_trainer_state=True`` also keeps what resuming needs as extras:
the optimizer's and scheduler's state and the TrainerState; ``with_rng_state=True`` the
random generators' states as the Trainer keeps them (Python's, numpy's, torch's), so a
resumed training draws what it would have drawn.

Lineage: each run names the run saved before it (or the run :meth:`AoeCallback.resume_from`
resumed from) as its parent. When the Trainer tracks a best checkpoint
(``metric_for_best_model``), the alias ``best_alias`` (``best``) follows it, moved by
compare-and-swap from where this training last put it; if another process moved it
meanwhile, a warning says so and this training leaves it alone.

Needs ``pip install 'aoe[transformers]'``.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..errors import InvalidInputError
from ..manifests import ParentRun
from ..store import Store
from .best import BestAlias
from .randomness import rng_states

ARGUMENTS = ("learning_rate", "weight_decay", "num_train_epochs", "max_steps", "per_device_train_batch_size",
             "gradient_accumulation_steps", "warmup_steps", "lr_scheduler_type", "seed")
"""The TrainingArguments kept as a run's params: those that shape the training."""

CHECKPOINT_FILES = {"optimizer": "optimizer.pt", "lr_scheduler": "scheduler.pt", "rng_state": "rng_state.pth"}
"""The extras a resume needs, by the name the Trainer gives their file in a checkpoint folder."""


class AoeCallback(TrainerCallback):
    """Saves the model being trained as aoe runs of ``font_id``; see the module doc.
    ``run_ids`` lists the runs saved, oldest first."""

    def __init__(self, store: Store, font_id: str, *, tags: Sequence[str] = (), name: str | None = None,
                 with_trainer_state: bool = False, with_rng_state: bool = False,
                 best_alias: str | None = "best") -> None:
        store.refs.require_font(font_id)
        self.store, self.font_id = store, font_id
        self.tags, self.name = tuple(tags), name
        self.with_trainer_state, self.with_rng_state = with_trainer_state, with_rng_state
        self.best = BestAlias(store, font_id, best_alias)
        self.run_ids: list[str] = []
        self.parent: ParentRun | None = None
        """The run the next one came from: the last saved, or the one resumed from."""
        self._folders: list[tempfile.TemporaryDirectory[str]] = []

    def resume_from(self, run: str, folder: str | Path | None = None) -> str:
        """A Trainer checkpoint folder made from a run this callback saved (``"FONT@best"``,
        ``"FONT/RUN_ID"``) with ``with_trainer_state`` (and ``with_rng_state`` for an exact
        resume), for ``trainer.train(resume_from_checkpoint=...)``: the weights, optimizer,
        scheduler, TrainerState and random states, every byte verified. ``folder`` defaults
        to a temporary one, removed when training ends. The runs saved next name it."""
        parent = self.store.parent_runs([run])[0]
        stored = self.store.open_run(parent.font_id, parent.run_id)
        if "trainer_state" not in stored.manifest.extras:
            raise InvalidInputError(f"{run} holds no trainer_state: it was not saved with with_trainer_state=True, "
                                    "so a Trainer cannot resume from it (load its weights instead)")
        if folder is None:
            self._folders.append(tempfile.TemporaryDirectory(prefix="aoe-resume-"))
            folder = self._folders[-1].name
        place = Path(folder)
        place.mkdir(parents=True, exist_ok=True)
        torch.save(stored.load().weights, place / "pytorch_model.bin")
        for extra, file in CHECKPOINT_FILES.items():
            if extra in stored.manifest.extras:
                torch.save(stored.extra(extra), place / file)
        (place / "trainer_state.json").write_text(json.dumps(stored.extra("trainer_state"), indent=2))
        self.parent = self.store.parent_runs([stored])[0]
        return str(place)

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                **kwargs: Any) -> None:
        self._save(args, state, kwargs, "running", ("checkpoint",))

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        self._save(args, state, kwargs, "completed", ())
        for folder in self._folders:
            folder.cleanup()
        self._folders.clear()

    def _save(self, args: TrainingArguments, state: TrainerState, objects: dict[str, Any], status: str,
              tags: tuple[str, ...]) -> None:
        model = objects.get("model")
        if model is None:
            return
        extras: dict[str, Any] = {}
        if self.with_trainer_state:
            for name in ("optimizer", "lr_scheduler"):
                if objects.get(name) is not None:
                    extras[name] = objects[name].state_dict()
            extras["trainer_state"] = json.loads(json.dumps(dataclasses.asdict(state), default=str))  # plain values
        if self.with_rng_state:
            extras["rng_state"] = rng_states()
        run_id = self.store.save_model(
            self.font_id, model.state_dict(), feedback=_feedback(state),
            params=json.loads(json.dumps({name: getattr(args, name) for name in ARGUMENTS if hasattr(args, name)},
                                         default=str)),  # enums (lr_scheduler_type) as their text
            status=status, tags=[*self.tags, *tags], name=self.name, extras=extras or None,
            parents=[self.parent] if self.parent else None,
        )
        self.run_ids.append(run_id)
        self.parent = self.store.parent_runs([(self.font_id, run_id)])[0]
        if status == "running" and getattr(state, "best_global_step", None) == state.global_step:
            self.best.move(run_id, f"best {args.metric_for_best_model} (Hugging Face Trainer)")



def _feedback(state: TrainerState) -> dict[str, Any]:
    """The newest value of each number the Trainer logged (a NaN loss kept as NaN: aoe
    lists it as such), and the step."""
    numbers: dict[str, Any] = {}
    for entry in state.log_history:
        numbers.update({k: v for k, v in entry.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return {**numbers, "global_step": state.global_step}
