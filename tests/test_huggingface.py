"""The Hugging Face Trainer callback, with a tiny real training run on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import aoe

transformers = pytest.importorskip("transformers", reason="the transformers extra: pip install 'aoe[transformers]'")
from aoe.integrations.huggingface import AoeCallback  # noqa: E402


class Tokens(torch.utils.data.Dataset):  # type: ignore[type-arg]
    """16 sequences of 8 token ids, their own labels (language modelling)."""

    def __init__(self) -> None:
        self.ids = torch.randint(0, 64, (16, 8), generator=torch.Generator().manual_seed(0))

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return {"input_ids": self.ids[index], "labels": self.ids[index]}


def trainer(tmp_path: Path, callback: AoeCallback) -> transformers.Trainer:
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=8)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), max_steps=4, save_steps=2, logging_steps=1, per_device_train_batch_size=4,
        learning_rate=1e-3, report_to=[], use_cpu=True, save_strategy="steps", disable_tqdm=True)
    return transformers.Trainer(model=transformers.GPT2LMHeadModel(config), args=args, train_dataset=Tokens(),
                                callbacks=[callback])


def test_a_trainer_saves_its_checkpoints_and_final_model_as_runs(store: aoe.Store, font: str, tmp_path: Path) -> None:
    callback = AoeCallback(store, font, tags=["hf"], with_trainer_state=True)
    run = trainer(tmp_path, callback)
    run.train()
    runs = store.list_runs(font)
    assert [i.run_id for i in runs] == callback.run_ids and len(runs) == 3  # steps 2 and 4, then the end
    assert [i.status for i in runs] == ["running", "running", "completed"]
    assert runs[0].tags == ("hf", "checkpoint") and runs[-1].tags == ("hf",)
    assert runs[-1].params["learning_rate"] == 1e-3 and runs[-1].params["max_steps"] == 4
    assert runs[0].metrics["global_step"] == 2 and runs[-1].metrics["global_step"] == 4
    assert "loss" in runs[0].metrics and "learning_rate" in runs[-1].metrics
    weights, _, _ = store.load_model(font)
    final = run.model.state_dict()
    assert weights.keys() == final.keys() and all(torch.equal(weights[k], final[k]) for k in final)
    assert weights["lm_head.weight"].data_ptr() == weights["transformer.wte.weight"].data_ptr()  # still tied
    state = store.load_extra(font, runs[1].run_id, "trainer_state")
    assert state["global_step"] == 4
    optimizer = store.load_extra(font, runs[1].run_id, "optimizer")
    assert optimizer["state"] and optimizer["param_groups"][0]["lr"] == 0.0  # linear decay ends at 0 at step 4


def test_a_font_that_does_not_exist_is_refused_before_training(store: aoe.Store) -> None:
    with pytest.raises(aoe.FontNotFoundError):
        AoeCallback(store, "9-missing")


def test_best_follows_the_trainers_best_checkpoint_and_runs_chain(store: aoe.Store, font: str, tmp_path: Path) -> None:
    """With metric_for_best_model, `best` moves to the run of each checkpoint the Trainer
    finds best; every run names the one saved before it."""
    callback = AoeCallback(store, font)
    torch.manual_seed(0)
    config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=8)
    args = transformers.TrainingArguments(
        output_dir=str(tmp_path / "hf"), max_steps=6, save_steps=2, eval_steps=2, eval_strategy="steps",
        logging_steps=1, per_device_train_batch_size=4, learning_rate=1e-2, report_to=[], use_cpu=True,
        save_strategy="steps", disable_tqdm=True, metric_for_best_model="eval_loss")
    trainer = transformers.Trainer(model=transformers.GPT2LMHeadModel(config), args=args, train_dataset=Tokens(),
                                   eval_dataset=Tokens(), callbacks=[callback])
    trainer.train()
    best_step = trainer.state.best_global_step
    moves = store.alias_history(font, "best")
    assert moves and "eval_loss" in moves[0].note
    assert store.get_run_info(f"{font}@best").metrics["global_step"] == best_step
    runs = store.list_runs(font)
    assert [[p["run_id"] for p in r.parents] for r in runs] == [[]] + [[r.run_id] for r in runs[:-1]]
    losses = [store.get_run_info(font, m.run_id).metrics["eval_loss"] for m in moves]
    assert losses == sorted(losses, reverse=True)  # each move to a better one
