"""Save and load a ~120 MB trained state_dict: aoe against torch.save and safetensors.

    python benchmarks/bench_save_load.py [--repeats 7] [--dir PATH]

Everything runs in one process on the same disk. Each try of a save writes new files
(a new store, a new .pt) and deletes them afterwards, and the contenders take turns, so
each meets the same page cache and disk state; each figure is the median of --repeats
tries. Ratios below 1 mean aoe is faster or smaller. Beside them are the physical
limits: writing the same bytes raw with one fsync, and hashing them with BLAKE3.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import blake3
import safetensors.torch
import torch
import zstandard

import aoe
from aoe.fsck import fsck
from aoe.weights import raw_view


def trained_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """~120 MB of float32 weights after a few Adam steps (not a fresh init)."""
    torch.manual_seed(seed)
    layers: list[torch.nn.Module] = []
    for _ in range(7):
        layers += [torch.nn.Linear(2048, 2048), torch.nn.GELU()]
    model = torch.nn.Sequential(*layers, torch.nn.Linear(2048, 64))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    for _ in range(3):
        optimizer.zero_grad()
        model(torch.randn(32, 2048)).pow(2).mean().backward()
        optimizer.step()
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def torch_save_fsync(state: dict, path: Path) -> None:
    with open(path, "wb") as f:
        torch.save(state, f)
        f.flush()
        os.fsync(f.fileno())


def safetensors_save_fsync(state: dict, path: Path) -> None:
    safetensors.torch.save_file(state, path)
    with open(path, "rb") as f:
        os.fsync(f.fileno())


def raw_write_fsync(state: dict, path: Path) -> None:
    with open(path, "wb") as f:
        for tensor in state.values():
            f.write(raw_view(tensor))
        f.flush()
        os.fsync(f.fileno())


def new_store(path: Path) -> None:
    aoe.Store(path).create_font("bench")


def aoe_save(state: dict, path: Path) -> None:
    """Into a store created beforehand (untimed), as a trainer's store exists already."""
    aoe.Store(path).save_model("1-bench", state)


def remove(path: Path) -> None:
    shutil.rmtree(path) if path.is_dir() else path.unlink()


def take_turns(contenders: dict[str, Callable[[int], object]], repeats: int,
               after: Callable[[str, int], object] | None = None,
               before: Callable[[str, int], object] | None = None) -> dict[str, float]:
    """Median seconds of each contender, tried in turns (rotating who goes first);
    ``before`` and ``after`` run untimed around each try."""
    times: dict[str, list[float]] = {name: [] for name in contenders}
    names = list(contenders)
    for attempt in range(repeats):
        for name in names[attempt % len(names):] + names[: attempt % len(names)]:
            if before:
                before(name, attempt)
            began = time.perf_counter()
            contenders[name](attempt)
            times[name].append(time.perf_counter() - began)
            if after:
                after(name, attempt)
    return {name: statistics.median(t) for name, t in times.items()}


def saves(state: dict, work: Path, repeats: int, writers: dict[str, Callable[[dict, Path], None]]) -> dict[str, float]:
    """Median seconds of each writer; each try writes a new file or store, then deletes it."""
    return take_turns(
        {name: (lambda attempt, w=w, name=name: w(state, work / f"{name}-{attempt}")) for name, w in writers.items()},
        repeats,
        before=lambda name, attempt: new_store(work / f"{name}-{attempt}") if name == "aoe" else None,
        after=lambda name, attempt: remove(work / f"{name}-{attempt}"),
    )


def stored_size(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / ".objects").rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--dir", default=None, help="where to write (default: a temp folder on /tmp's disk)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aoe-bench-", dir=args.dir))
    try:
        run(work, args.repeats)
    finally:
        shutil.rmtree(work)


def run(work: Path, repeats: int) -> None:
    state = trained_state_dict()
    raw_bytes = sum(t.numel() * t.element_size() for t in state.values())
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"python {platform.python_version()}, aoe {aoe.__version__}")
    print(f"state_dict: {len(state)} tensors, {raw_bytes / 1e6:.1f} MB of float32, "
          f"{repeats} tries each, in turns (median)\n")

    save = saves(state, work, repeats, {"aoe": aoe_save, "torch": torch_save_fsync,
                                        "safetensors": safetensors_save_fsync, "raw": raw_write_fsync})
    store = aoe.Store(work / "store")
    new_store(store.root)
    aoe_save(state, store.root)
    stored = stored_size(store.root)
    t_unchanged = take_turns({"aoe": lambda _: store.save_model("1-bench", state)}, repeats)["aoe"]
    added = stored_size(store.root) - stored

    pt, st = work / "weights.pt", work / "weights.safetensors"
    torch_save_fsync(state, pt)
    safetensors.torch.save_file(state, st)
    load = take_turns({
        "aoe": lambda _: store.load_model("1-bench"),
        "torch": lambda _: torch.load(pt, weights_only=True, map_location="cpu"),
        "safetensors": lambda _: safetensors.torch.load(st.read_bytes()),  # load_file only maps it
    }, repeats)
    lazy = take_turns({
        "open": lambda _: store.open_weights("1-bench")["0.weight"],
        "keys": lambda _: store.load_model("1-bench", keys=["0.weight"]),
    }, repeats)
    loaded = store.load_model("1-bench").weights
    assert all(torch.equal(loaded[k], v) for k, v in state.items()), "round trip is not exact"

    buffers = [raw_view(t) for t in state.values()]
    t_hash = take_turns({"one": lambda _: [blake3.blake3(b).digest() for b in buffers]}, repeats)["one"]
    t_fsck = take_turns({"fsck": lambda _: fsck(store, read_data=True)}, repeats)["fsck"]
    assert fsck(store, read_data=True).clean

    bf16 = {k: v.bfloat16() for k, v in state.items()}
    bf16_store = aoe.Store(work / "bf16")
    bf16_store.save_model(bf16_store.create_font("bench"), bf16)
    bf16_raw = raw_bytes // 2
    zstd3 = sum(len(zstandard.ZstdCompressor(level=3).compress(b)) for b in buffers)

    def row(name: str, ours: float, base: float, base_name: str) -> None:
        print(f"{name:38} {ours * 1000:7.1f}ms {base * 1000:7.1f}ms {ours / base:6.2f}  {base_name}")

    print(f"{'operation':38} {'aoe':>9} {'baseline':>9} {'ratio':>6}  baseline")
    row("save_model (new weights)", save["aoe"], save["torch"], "torch.save+fsync")
    row("save_model (new weights)", save["aoe"], save["safetensors"], "safetensors save_file+fsync")
    row("save_model (unchanged weights)", t_unchanged, save["torch"], "torch.save+fsync")
    row("load_model (every hash verified)", load["aoe"], load["torch"], "torch.load(weights_only)")
    row("load_model (every hash verified)", load["aoe"], load["safetensors"], "safetensors load (reads all)")
    one = state["0.weight"].numel() * 4 / 1e6
    print(f"{'open_weights + read one tensor (' + f'{one:.0f} MB)':38} {lazy['open'] * 1000:7.1f}ms")
    print(f"{'load_model(keys=[one tensor])':38} {lazy['keys'] * 1000:7.1f}ms")

    def limit(name: str, seconds: float) -> None:
        print(f"{name:38} {seconds * 1000:7.1f}ms  {raw_bytes / seconds / 1e9:5.2f} GB/s")

    print(f"\n{'throughput and physical limits':38} {'time':>9}")
    limit("raw write + one fsync of the bytes", save["raw"])
    limit("save_model (new weights)", save["aoe"])
    limit("torch.save + fsync", save["torch"])
    limit("blake3 of the bytes, one thread", t_hash)
    limit("load_model", load["aoe"])
    limit("torch.load", load["torch"])
    limit("fsck --read-data (whole store)", t_fsck)

    print(f"\n{'size':38} {'bytes':>12} {'vs raw':>7}")
    for name, size, base in [
        ("raw float32 tensor bytes", raw_bytes, raw_bytes),
        ("torch.save file", pt.stat().st_size, raw_bytes),
        ("safetensors file", st.stat().st_size, raw_bytes),
        ("zstd level 3 of the bytes", zstd3, raw_bytes),
        ("aoe store, first save", stored, raw_bytes),
        ("aoe store, added by unchanged save", added, raw_bytes),
        ("raw bfloat16 tensor bytes", bf16_raw, bf16_raw),
        ("aoe store of the bfloat16 weights", stored_size(bf16_store.root), bf16_raw),
    ]:
        print(f"{name:38} {size:12,d} {size / base:7.3f}")


if __name__ == "__main__":
    main()
