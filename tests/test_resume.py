"""Exact resume: a training stopped, stored as a run with what it needs to go on (the
model, the optimizer, every random generator's state), and resumed from that run in a
fresh model, gives losses bit-identical to the same training uninterrupted (CPU)."""

from __future__ import annotations

import random
from pathlib import Path

import numpy as np
import pytest
import torch

import aoe


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def rng_states() -> dict:
    return {"python": random.getstate(), "numpy": np.random.get_state(), "torch": torch.get_rng_state()}


def set_rng_states(states: dict) -> None:
    random.setstate(states["python"])
    np.random.set_state(states["numpy"])
    torch.set_rng_state(states["torch"])


def a_model() -> tuple[torch.nn.Module, torch.optim.Optimizer]:
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Dropout(0.2), torch.nn.Linear(16, 1))
    return model, torch.optim.AdamW(model.parameters(), lr=1e-2)


def steps(model: torch.nn.Module, optimizer: torch.optim.Optimizer, count: int) -> list[float]:
    """Training steps that draw from every generator: torch (data, dropout), numpy
    (noise), Python (which half of the batch)."""
    losses = []
    for _ in range(count):
        x = torch.randn(32, 8)
        y = x.sum(dim=1, keepdim=True) + torch.from_numpy(np.random.normal(0, 0.1, (32, 1))).float()
        half = random.choice([slice(0, 16), slice(16, 32)])
        loss = torch.nn.functional.mse_loss(model(x[half]), y[half])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    return losses


@pytest.mark.parametrize("where", ["local", "s3"])
def test_a_plain_loop_resumes_exactly_from_a_run(where: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    store = aoe.Store(request.getfixturevalue("s3_url") if where == "s3" else tmp_path / "networks")
    font = store.create_font("fruity")
    seed_everything(0)
    model, optimizer = a_model()
    uninterrupted = steps(model, optimizer, 8)

    seed_everything(0)
    model, optimizer = a_model()
    before = steps(model, optimizer, 4)
    run_id = store.save_model(font, {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                                     "rng": rng_states(), "step": 4, "best_loss": np.float64(min(before))})
    seed_everything(123)  # another process: other weights, other generators
    model, optimizer = a_model()
    stored = store.load_model(font, run_id).weights
    model.load_state_dict(stored["model"])
    optimizer.load_state_dict(stored["optimizer"])
    set_rng_states(stored["rng"])
    after = steps(model, optimizer, 4)
    assert before + after == uninterrupted  # bit for bit
    assert type(stored["best_loss"]) is np.float64 and stored["step"] == 4


def test_a_hugging_face_trainer_resumes_exactly_from_a_run(store: aoe.Store, font: str, tmp_path) -> None:
    """The Trainer stopped at step 4 of 8 (its checkpoint a run, with trainer and random
    states), then a fresh Trainer resumed from that run: the losses of steps 5 to 8 are
    those of the training that never stopped, bit for bit."""
    transformers = pytest.importorskip("transformers")
    from aoe.integrations.huggingface import AoeCallback

    class Tokens(torch.utils.data.Dataset):  # type: ignore[type-arg]
        def __len__(self) -> int:
            return 32

        def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
            ids = torch.randint(0, 64, (8,), generator=torch.Generator().manual_seed(index))
            return {"input_ids": ids, "labels": ids}

    class StopAt(transformers.TrainerCallback):  # type: ignore[misc]
        def on_step_end(self, args, state, control, **kwargs):  # type: ignore[no-untyped-def]
            if state.global_step == 4:
                control.should_training_stop = True

    def trainer(folder: str, callbacks: list, seed: int) -> transformers.Trainer:
        torch.manual_seed(seed)  # another model to start from, when resuming
        config = transformers.GPT2Config(n_layer=1, n_embd=16, n_head=2, vocab_size=64, n_positions=8)
        args = transformers.TrainingArguments(
            output_dir=str(tmp_path / folder), max_steps=8, save_steps=4, logging_steps=1,
            per_device_train_batch_size=4, learning_rate=1e-3, report_to=[], use_cpu=True, disable_tqdm=True,
            save_strategy="steps", seed=0)
        return transformers.Trainer(model=transformers.GPT2LMHeadModel(config), args=args, train_dataset=Tokens(),
                                    callbacks=callbacks)

    def losses(trained: transformers.Trainer) -> dict[int, float]:
        return {entry["step"]: entry["loss"] for entry in trained.state.log_history if "loss" in entry}

    whole = trainer("whole", [], seed=0)
    whole.train()
    callback = AoeCallback(store, font, with_trainer_state=True, with_rng_state=True)
    first = trainer("first", [callback, StopAt()], seed=0)
    first.train()
    checkpoint = callback.run_ids[0]
    again = AoeCallback(store, font, with_trainer_state=True, with_rng_state=True)
    resumed = trainer("again", [again], seed=123)
    resumed.train(resume_from_checkpoint=again.resume_from(f"{font}/{checkpoint}"))
    assert losses(first) == {step: loss for step, loss in losses(whole).items() if step <= 4}
    after = {step: loss for step, loss in losses(resumed).items() if step > 4}  # (its log starts with the first 4)
    assert after == {step: loss for step, loss in losses(whole).items() if step > 4} and len(after) == 4
    assert [p["run_id"] for p in store.get_run_info(font, again.run_ids[0]).parents] == [checkpoint]


def test_a_lightning_training_resumes_exactly_from_a_run(store: aoe.Store, font: str, tmp_path) -> None:
    """Two epochs of four, checkpointed as a run with the random states; a fresh model and
    Trainer resumed from that run (``aoe:FONT@ALIAS``): epochs 3 and 4 give the losses of
    the training that never stopped, bit for bit (dropout and shuffling draw from torch)."""
    lightning = pytest.importorskip("lightning")
    from lightning.pytorch.callbacks import ModelCheckpoint

    from aoe.integrations.lightning import AoeCheckpointIO

    class Noisy(lightning.LightningModule):  # type: ignore[misc]
        def __init__(self) -> None:
            super().__init__()
            self.net = torch.nn.Sequential(torch.nn.Linear(4, 16), torch.nn.ReLU(), torch.nn.Dropout(0.3),
                                           torch.nn.Linear(16, 1))
            self.losses: list[float] = []

        def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
            x, y = batch
            loss = torch.nn.functional.mse_loss(self.net(x + torch.from_numpy(np.random.normal(0, 0.01, x.shape))
                                                         .float()), y)
            self.losses.append(loss.item())
            return loss

        def configure_optimizers(self) -> torch.optim.Optimizer:
            return torch.optim.AdamW(self.parameters(), lr=0.01)

        def train_dataloader(self) -> torch.utils.data.DataLoader:
            x = torch.randn(32, 4, generator=torch.Generator().manual_seed(0))
            return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)),
                                               batch_size=8, shuffle=True)

    def fit(epochs: int, io: AoeCheckpointIO | None, seed: int, ckpt_path: str | None = None) -> Noisy:
        seed_everything(seed)
        model = Noisy()
        trainer = lightning.Trainer(max_epochs=epochs, plugins=[io] if io else [], logger=False,
                                    enable_progress_bar=False, enable_model_summary=False, accelerator="cpu",
                                    callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=-1)],
                                    enable_checkpointing=True)
        trainer.fit(model, ckpt_path=ckpt_path)
        return model

    whole = fit(4, AoeCheckpointIO(store, store.create_font("whole")), seed=0)
    first = fit(2, AoeCheckpointIO(store, font, with_rng_state=True), seed=0)
    store.set_alias(font, "stopped", store.newest_run(font))
    resumed = fit(4, AoeCheckpointIO(store, font, with_rng_state=True), seed=123, ckpt_path=f"aoe:{font}@stopped")
    assert first.losses == whole.losses[:8] and resumed.losses == whole.losses[8:]
    runs = store.list_runs(font)
    assert [p["run_id"] for p in runs[-1].parents] == [runs[-2].run_id]  # epoch 4 came from epoch 3
    assert [p["run_id"] for p in runs[-2].parents] == [runs[1].run_id]  # epoch 3 from the run resumed
