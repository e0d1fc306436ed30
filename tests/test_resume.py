"""Exact resume: a training stopped, stored as a run with what it needs to go on (the
model, the optimizer, every random generator's state), and resumed from that run in a
fresh model, gives losses bit-identical to the same training uninterrupted (CPU)."""

from __future__ import annotations

import random

import numpy as np
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


def test_a_plain_loop_resumes_exactly_from_a_run(store: aoe.Store, font: str) -> None:
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
