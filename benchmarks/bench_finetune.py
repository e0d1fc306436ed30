"""Fine-tuning dedup: 20 runs of one model where only the last two layers change.

    python benchmarks/bench_finetune.py [--runs 20] [--dir PATH]

Saves the same sequence of state_dicts three ways: aoe (one store), ``torch.save`` (a
file per run) and ``safetensors`` (a file per run, ``pip install -e .[bench]``). Prints
the bytes each takes against the ideal for content addressing: one full model plus
(runs - 1) x the changed layers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import torch

import aoe


def model_state(seed: int = 0) -> dict[str, torch.Tensor]:
    """~60 MB of float32: a trunk that fine-tuning freezes and a head that it trains."""
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(1024, 1024) for _ in range(14)] + [torch.nn.Linear(1024, 512), torch.nn.Linear(512, 64)]
    return {k: v.detach().clone() for k, v in torch.nn.Sequential(*layers).state_dict().items()}


def fine_tune(state: dict[str, torch.Tensor], step: int, trained: tuple[str, ...]) -> dict[str, torch.Tensor]:
    """The next run: only the trained layers move."""
    generator = torch.Generator().manual_seed(1000 + step)
    return {k: (v + 1e-3 * torch.randn(v.shape, generator=generator) if k.split(".")[0] in trained else v)
            for k, v in state.items()}


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aoe-finetune-", dir=args.dir))
    try:
        run(work, args.runs)
    finally:
        shutil.rmtree(work)


def run(work: Path, runs: int) -> None:
    from safetensors.torch import save_file

    state = model_state()
    names = sorted({k.split(".")[0] for k in state}, key=int)
    trained = tuple(names[-2:])
    model_bytes = sum(v.numel() * v.element_size() for v in state.values())
    changed_bytes = sum(v.numel() * v.element_size() for k, v in state.items() if k.split(".")[0] in trained)
    store = aoe.Store(work / "networks")
    font = store.create_font("fine-tuned")
    (work / "torch").mkdir()
    (work / "safetensors").mkdir()
    times = {"aoe": 0.0, "torch.save": 0.0, "safetensors": 0.0}
    for step in range(runs):
        began = time.perf_counter()
        store.save_model(font, state)
        times["aoe"] += time.perf_counter() - began
        began = time.perf_counter()
        with open(work / "torch" / f"{step}.pt", "wb") as f:
            torch.save(state, f)
            f.flush()
            os.fsync(f.fileno())
        times["torch.save"] += time.perf_counter() - began
        began = time.perf_counter()
        save_file(state, str(work / "safetensors" / f"{step}.safetensors"))
        times["safetensors"] += time.perf_counter() - began
        last, state = state, fine_tune(state, step, trained)

    ideal = model_bytes + (runs - 1) * changed_bytes
    stored = {
        "aoe": folder_bytes(work / "networks" / ".objects"),
        "torch.save": folder_bytes(work / "torch"),
        "safetensors": folder_bytes(work / "safetensors"),
    }
    loaded = store.load_model(font).weights
    assert list(loaded) == list(last) and all(torch.equal(loaded[k], v) for k, v in last.items()), "not exact"
    print(f"{runs} runs of a {model_bytes / 1e6:.1f} MB float32 model; each run changes layers {', '.join(trained)} "
          f"({changed_bytes / 1e6:.2f} MB)")
    print(f"ideal (one model + {runs - 1} x the changed layers): {ideal / 1e6:8.1f} MB")
    print(f"{'layout':14} {'stored MB':>10} {'vs ideal':>9} {'vs 20 full models':>18} {'save s':>8}")
    for name, size in stored.items():
        print(f"{name:14} {size / 1e6:10.1f} {size / ideal:9.2f} {size / (runs * model_bytes):18.3f} {times[name]:8.2f}")


if __name__ == "__main__":
    main()
