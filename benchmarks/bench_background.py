"""The training stall of a checkpoint: how long the training loop waits, per save.

A GPT-2-shaped model built from its layers (6 blocks, 384 wide, tied embedding and
output layer, a 50,257-token vocabulary), trained a few steps with AdamW, saved whole as
trainers do: model, optimizer, scheduler, grad scaler and RNG state. Contenders, taking
turns in one process, each writing new files:

- torch.save + fsync of one file: the loop waits for all of it;
- aoe save_model: the loop waits for all of it;
- aoe save_in_background: the loop waits only for the copy of the tensors;
- the floor: copying every tensor once (``clone``), what any snapshot must do.

    python benchmarks/bench_background.py [--repeats 5]
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import torch
from bench_save_load import remove, take_turns, torch_save_fsync

import aoe


class Block(torch.nn.Module):
    def __init__(self, width: int) -> None:
        super().__init__()
        self.layer = torch.nn.TransformerEncoderLayer(width, nhead=6, dim_feedforward=4 * width, batch_first=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layer(x)


class GPT2Shaped(torch.nn.Module):
    def __init__(self, vocab: int = 50257, width: int = 384, blocks: int = 6, context: int = 256) -> None:
        super().__init__()
        self.wte = torch.nn.Embedding(vocab, width)
        self.wpe = torch.nn.Embedding(context, width)
        self.blocks = torch.nn.Sequential(*(Block(width) for _ in range(blocks)))
        self.ln_f = torch.nn.LayerNorm(width)
        self.head = torch.nn.Linear(width, vocab, bias=False)
        self.head.weight = self.wte.weight  # tied, as GPT-2's

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        x = self.wte(tokens) + self.wpe(torch.arange(tokens.shape[1]))
        return self.head(self.ln_f(self.blocks(x)))


def training_checkpoint() -> dict:
    torch.manual_seed(0)
    model = GPT2Shaped()
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4)
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[100, 200])
    scaler = torch.amp.GradScaler("cpu", enabled=False)
    for _ in range(2):
        tokens = torch.randint(0, 50257, (2, 32))
        loss = model(tokens).logsumexp(-1).mean()
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
        scheduler.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "scheduler": scheduler.state_dict(),
            "scaler": scaler.state_dict(), "rng": torch.get_rng_state(), "step": 2}


def tensors_of(tree: object) -> list[torch.Tensor]:
    found, stack = [], [tree]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            found.append(item)
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
    return found


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    checkpoint = training_checkpoint()
    tensors = tensors_of(checkpoint)
    size = sum(t.numel() * t.element_size() for t in {t.untyped_storage().data_ptr(): t for t in tensors}.values())
    work = Path(tempfile.mkdtemp(prefix="aoe-bench-background-"))
    try:
        def store(attempt: int | str) -> aoe.Store:
            root = work / f"store-{attempt}"
            if not root.exists():
                aoe.Store(root).create_font("fruity")
            return aoe.Store(root)

        stores = {attempt: store(attempt) for attempt in range(args.repeats)}

        contenders = {
            "torch.save + fsync": lambda attempt: torch_save_fsync(checkpoint, work / f"ckpt-{attempt}.pt"),
            "aoe save_model": lambda attempt: stores[attempt].save_model("1-fruity", checkpoint),
            "clone every tensor (the floor)": lambda attempt: [t.clone() for t in tensors],
        }
        def tidy(name: str, attempt: int) -> None:
            if (work / f"ckpt-{attempt}.pt").exists():
                remove(work / f"ckpt-{attempt}.pt")

        blocked = take_turns(contenders, args.repeats, after=tidy)
        stalls, totals = [], []
        for attempt in range(args.repeats):  # the stall alone: the call returns, the save goes on
            fresh = store(f"background-{attempt}")  # new weights for it, as for the others
            began = time.perf_counter()
            pending = fresh.save_in_background("1-fruity", checkpoint)
            stalls.append(time.perf_counter() - began)
            pending.result()
            totals.append(time.perf_counter() - began)
        blocked["aoe save_in_background (stall)"] = sorted(stalls)[len(stalls) // 2]
        blocked["  ... until its run is published"] = sorted(totals)[len(totals) // 2]
        print(f"training checkpoint: {len(tensors)} tensors, {size / 1e6:.0f} MB (tied embedding counted once)")
        base = blocked["torch.save + fsync"]
        for name, seconds in blocked.items():
            print(f"{name:34} {seconds * 1000:8.1f} ms  {seconds / base:5.2f}x torch.save")
        floor = blocked["clone every tensor (the floor)"]
        print(f"stall / copy floor: {blocked['aoe save_in_background (stall)'] / floor:.2f}x")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
