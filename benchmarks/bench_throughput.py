"""Save and load throughput against model size (10 MB .. 1 GB): aoe, torch.save, safetensors.

    python benchmarks/bench_throughput.py [--repeats 3] [--dir PATH] [--plot docs/throughput.png]

For each size, a state_dict of float32 tensors with trained-like values (normal, std
0.02; at most 64 MiB a tensor) is saved into new files by each contender in turns (as in
bench_save_load.py: every try writes new files, deleted afterwards, everything fsynced)
and loaded back from a warm page cache: aoe's load verifies every hash, torch.load uses
weights_only=True, safetensors reads the whole file (load_file would only map it).
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import safetensors.torch
import torch
from bench_save_load import aoe_save, new_store, remove, safetensors_save_fsync, saves, take_turns, torch_save_fsync

import aoe

SIZES_MB = (10, 30, 100, 300, 1000)
SAVERS = {"aoe": aoe_save, "torch.save": torch_save_fsync, "safetensors": safetensors_save_fsync}


def model_of(megabytes: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(megabytes)
    remaining, state = megabytes * 1_000_000 // 4, {}
    while remaining:
        count = min(remaining, 16 * 1024 * 1024)
        state[f"layer{len(state)}.weight"] = torch.empty(count).normal_(0, 0.02)
        remaining -= count
    return state


def measure(megabytes: int, work: Path, repeats: int) -> dict[str, tuple[float, float]]:
    """(save, load) throughput in GB/s of each contender."""
    state = model_of(megabytes)
    nbytes = megabytes * 1e6
    save = saves(state, work, repeats, SAVERS)
    new_store(work / "aoe")
    for name, saver in SAVERS.items():
        saver(state, work / name)
    store = aoe.Store(work / "aoe")
    loads = take_turns({
        "aoe": lambda _: store.load_model("1-bench"),
        "torch.save": lambda _: torch.load(work / "torch.save", weights_only=True),
        "safetensors": lambda _: safetensors.torch.load((work / "safetensors").read_bytes()),
    }, repeats)
    for name in SAVERS:
        remove(work / name)
    return {name: (nbytes / save[name] / 1e9, nbytes / loads[name] / 1e9) for name in SAVERS}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--plot", default=None, help="write a PNG plot here (needs matplotlib)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aoe-bench-", dir=args.dir))
    results: dict[int, dict[str, tuple[float, float]]] = {}
    try:
        print(f"{'size':>7}  " + "  ".join(f"{name + ' save/load GB/s':>28}" for name in SAVERS))
        for megabytes in SIZES_MB:
            results[megabytes] = measure(megabytes, work, args.repeats)
            print(f"{megabytes:5d}MB  " + "  ".join(
                f"{save:19.2f} / {load:5.2f}" for save, load in results[megabytes].values()))
    finally:
        shutil.rmtree(work)
    if args.plot:
        plot(results, args.plot)


def plot(results: dict[int, dict[str, tuple[float, float]]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(1, 2, figsize=(10, 4), sharey=False)
    sizes = list(results)
    for column, title in enumerate(("save (+ fsync)", "load (warm cache)")):
        for name in SAVERS:
            axes[column].plot(sizes, [results[s][name][column] for s in sizes], marker="o", label=name)
        axes[column].set_xscale("log")
        axes[column].set_xlabel("model size (MB of float32)")
        axes[column].set_ylabel("GB/s")
        axes[column].set_title(title)
        axes[column].grid(True, alpha=0.3)
    axes[0].legend()
    figure.suptitle("aoe vs torch.save and safetensors, 2-core VM (benchmarks/bench_throughput.py)")
    figure.tight_layout()
    figure.savefig(path, dpi=110)


if __name__ == "__main__":
    main()
