"""The Lightning CheckpointIO plugin, with tiny real training runs on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import aoe

lightning = pytest.importorskip("lightning", reason="the lightning extra: pip install 'aoe[lightning]'")
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402

from aoe.integrations.lightning import AoeCheckpointIO  # noqa: E402
from aoe.manifests import unpack  # noqa: E402


class Regression(lightning.LightningModule):  # type: ignore[misc]
    def __init__(self) -> None:
        super().__init__()
        self.layer = torch.nn.Linear(4, 1)

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
        x, y = batch
        return torch.nn.functional.mse_loss(self.layer(x), y)

    def configure_optimizers(self) -> dict:
        optimizer = torch.optim.AdamW(self.parameters(), lr=0.01)
        return {"optimizer": optimizer, "lr_scheduler": torch.optim.lr_scheduler.StepLR(optimizer, 1, 0.5)}

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        generator = torch.Generator().manual_seed(0)
        x = torch.randn(32, 4, generator=generator)
        return torch.utils.data.DataLoader(torch.utils.data.TensorDataset(x, x.sum(1, keepdim=True)), batch_size=8)


def fit(tmp_path: Path, io: AoeCheckpointIO, epochs: int, ckpt_path: str | None = None,
        top_k: int = -1) -> tuple[lightning.Trainer, Regression, ModelCheckpoint]:
    torch.manual_seed(0)
    model, checkpoints = Regression(), ModelCheckpoint(dirpath=tmp_path / "ckpt", save_top_k=top_k, monitor=None
                                                       if top_k == -1 else "step", mode="max", every_n_epochs=1)
    trainer = lightning.Trainer(max_epochs=epochs, plugins=[io], callbacks=[checkpoints], logger=False,
                                enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    trainer.fit(model, ckpt_path=ckpt_path)
    return trainer, model, checkpoints


def test_checkpoints_are_runs_and_training_resumes_from_one(store: aoe.Store, font: str, tmp_path: Path) -> None:
    io = AoeCheckpointIO(store, font, tags=["regression"])
    trainer, model, checkpoints = fit(tmp_path, io, epochs=2)
    runs = store.list_runs(font)
    assert len(runs) == 2 and all(r.tags == ("regression", "lightning") for r in runs)
    assert [r.params["global_step"] for r in runs] == [4, 8] and not list((tmp_path / "ckpt").glob("*.ckpt"))
    saved, _, _ = store.load_model(font)
    assert torch.equal(saved["state_dict"]["layer.weight"], model.layer.weight.detach())
    assert saved["lr_schedulers"][0]["last_epoch"] == 2

    resumed, again, _ = fit(tmp_path / "again", AoeCheckpointIO(store, font), epochs=3,
                            ckpt_path=f"aoe:{font}/{runs[-1].run_id}")
    assert resumed.global_step == 12 and resumed.current_epoch == 3  # one more epoch, not three
    assert len(store.list_runs(font)) == 3
    by_path = AoeCheckpointIO(store, font).load_checkpoint(checkpoints.best_model_path)
    assert by_path["global_step"] == 8


def test_save_top_k_sends_older_checkpoints_to_the_trash(store: aoe.Store, font: str, tmp_path: Path) -> None:
    fit(tmp_path, AoeCheckpointIO(store, font), epochs=3, top_k=1)
    [kept] = store.list_runs(font)
    assert kept.params["global_step"] == 12 and len(store.trashed(font)) == 2


def test_a_path_no_run_was_saved_at_is_a_clear_error(store: aoe.Store, font: str, tmp_path: Path) -> None:
    with pytest.raises(aoe.RunNotFoundError, match="no run of 1-fruity holds a checkpoint saved at"):
        AoeCheckpointIO(store, font).load_checkpoint(tmp_path / "nowhere.ckpt")


class Logged(Regression):
    """Logs its loss, for a ModelCheckpoint to monitor; the loss of each epoch given."""

    def __init__(self, epoch_losses: list[float]) -> None:
        super().__init__()
        self.epoch_losses = epoch_losses

    def training_step(self, batch: tuple[torch.Tensor, torch.Tensor], index: int) -> torch.Tensor:
        loss = super().training_step(batch, index)
        self.log("score", self.epoch_losses[self.current_epoch], on_epoch=True, on_step=False)
        return loss


def test_best_follows_the_monitored_score_and_lineage_chains_the_checkpoints(
        store: aoe.Store, font: str, tmp_path: Path) -> None:
    """ModelCheckpoint(monitor=...) says which checkpoint is best: `best` moves to its run
    (the score kept as its feedback), save_top_k removes the others, each run names the one
    before it; a checkpoint someone aliased is kept when Lightning removes it."""
    io = AoeCheckpointIO(store, font)
    checkpoints = ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="score", mode="min", save_top_k=1)
    trainer = lightning.Trainer(max_epochs=4, plugins=[io], callbacks=[checkpoints], logger=False,
                                enable_progress_bar=False, enable_model_summary=False, accelerator="cpu")
    model = Logged([0.5, 0.25, 0.75, 0.125])
    original = io.save_checkpoint

    def save_then_alias_the_first(checkpoint: dict, path: object, storage_options: object = None) -> None:
        original(checkpoint, path, storage_options)
        if checkpoint["epoch"] == 0:
            store.set_alias(font, "first", io.run_ids[str(path)])

    io.save_checkpoint = save_then_alias_the_first  # type: ignore[method-assign]
    with pytest.warns(UserWarning, match="kept the checkpoint Lightning removed"):
        trainer.fit(model)
    history = store.alias_history(font, "best")
    scores = [unpack(store.objects.get(move.manifest)).metrics["score"] for move in history]  # (some trashed)
    assert scores == [0.5, 0.25, 0.125] and "Lightning ModelCheckpoint" in history[0].note
    runs = store.list_runs(font)
    assert [r.metrics["score"] for r in runs] == [0.5, 0.125]  # the first (aliased) and the best
    assert len(runs[1].parents) == 1 and len(store.trashed(font)) == 1  # epoch 3 (epoch 2 was not kept)
    assert store.load_model(f"{font}@best").weights["epoch"] == 3


def test_a_best_moved_by_another_process_is_left_to_it(store: aoe.Store, font: str, tmp_path: Path) -> None:
    io = AoeCheckpointIO(store, font)
    trainer = lightning.Trainer(max_epochs=2, plugins=[io], logger=False, enable_progress_bar=False,
                                enable_model_summary=False, accelerator="cpu",
                                callbacks=[ModelCheckpoint(dirpath=tmp_path / "ckpt", monitor="score", mode="min")])
    model = Logged([0.5, 0.25])
    original = io.save_checkpoint

    elsewhere = store.save_model(font, {"w": torch.ones(1)})

    def another_moves_it(checkpoint: dict, path: object, storage_options: object = None) -> None:
        original(checkpoint, path, storage_options)
        store.set_alias(font, "best", elsewhere, note="someone else")

    io.save_checkpoint = another_moves_it  # type: ignore[method-assign]
    with pytest.warns(UserWarning, match="moved by another process|points at"):
        trainer.fit(model)
    assert [m.note for m in store.alias_history(font, "best")][-1] == "someone else"
    assert store.aliases_of(font)["best"] == elsewhere
