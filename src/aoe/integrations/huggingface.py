"""A Hugging Face ``transformers`` ``TrainerCallback`` that keeps a Trainer's checkpoints as
aoe runs.

    trainer = Trainer(..., callbacks=[AoeCallback(store, "1-fruity")])

At each of the Trainer's save steps (``save_strategy``/``save_steps``) the model's weights
become a run (status ``running``, tag ``checkpoint``), and at the end of training one more
(status ``completed``; the same weights are stored once). Each run's params are the
TrainingArguments that shape training; its feedback the newest of each number the Trainer
logged (``loss``, ``eval_loss``, ``learning_rate``, ``epoch``) and the step, so ``aoe store
ls`` shows the curve. ``with_trainer_state=True`` also keeps what resuming needs as extras:
the optimizer's and scheduler's state and the TrainerState.

Needs ``pip install 'aoe[transformers]'``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from typing import Any

from transformers import TrainerCallback, TrainerControl, TrainerState, TrainingArguments

from ..store import Store

ARGUMENTS = ("learning_rate", "weight_decay", "num_train_epochs", "max_steps", "per_device_train_batch_size",
             "gradient_accumulation_steps", "warmup_steps", "lr_scheduler_type", "seed")
"""The TrainingArguments kept as a run's params: those that shape the training."""


class AoeCallback(TrainerCallback):
    """Saves the model being trained as aoe runs of ``font_id``; see the module doc.
    ``run_ids`` lists the runs saved, oldest first."""

    def __init__(self, store: Store, font_id: str, *, tags: Sequence[str] = (), name: str | None = None,
                 with_trainer_state: bool = False) -> None:
        store.refs.require_font(font_id)
        self.store, self.font_id = store, font_id
        self.tags, self.name, self.with_trainer_state = tuple(tags), name, with_trainer_state
        self.run_ids: list[str] = []

    def on_save(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                **kwargs: Any) -> None:
        self._save(args, state, kwargs, "running", ("checkpoint",))

    def on_train_end(self, args: TrainingArguments, state: TrainerState, control: TrainerControl,
                     **kwargs: Any) -> None:
        self._save(args, state, kwargs, "completed", ())

    def _save(self, args: TrainingArguments, state: TrainerState, objects: dict[str, Any], status: str,
              tags: tuple[str, ...]) -> None:
        model = objects.get("model")
        if model is None:
            return
        extras = {}
        if self.with_trainer_state:
            for name in ("optimizer", "lr_scheduler"):
                if objects.get(name) is not None:
                    extras[name] = objects[name].state_dict()
            extras["trainer_state"] = json.loads(json.dumps(dataclasses.asdict(state), default=str))  # plain values
        self.run_ids.append(self.store.save_model(
            self.font_id, model.state_dict(), feedback=_feedback(state),
            params=json.loads(json.dumps({name: getattr(args, name) for name in ARGUMENTS if hasattr(args, name)},
                                         default=str)),  # enums (lr_scheduler_type) as their text
            status=status, tags=[*self.tags, *tags], name=self.name, extras=extras or None,
        ))


def _feedback(state: TrainerState) -> dict[str, Any]:
    """The newest value of each number the Trainer logged (a NaN loss kept as NaN: aoe
    lists it as such), and the step."""
    numbers: dict[str, Any] = {}
    for entry in state.log_history:
        numbers.update({k: v for k, v in entry.items() if isinstance(v, (int, float)) and not isinstance(v, bool)})
    return {**numbers, "global_step": state.global_step}
