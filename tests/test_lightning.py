"""The Lightning CheckpointIO plugin, with tiny real training runs on CPU."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import aoe

lightning = pytest.importorskip("lightning", reason="the lightning extra: pip install 'aoe[lightning]'")
from lightning.pytorch.callbacks import ModelCheckpoint  # noqa: E402

from aoe.integrations.lightning import AoeCheckpointIO  # noqa: E402


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
