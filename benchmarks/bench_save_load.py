"""Save and load a ~120 MB trained float32 state_dict: aoe against torch.save / torch.load.

    python benchmarks/bench_save_load.py [--repeats 5] [--dir PATH]

Everything runs in one process on the same disk, and each figure is the median of
--repeats tries. Ratios below 1 mean aoe is faster or smaller. The physical limits a
save approaches are printed beside it: writing the same bytes raw with one fsync, and
hashing them with BLAKE3.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import tempfile
from pathlib import Path

import blake3
import torch

import aoe
from timing import median_time


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


def raw_write_fsync(buffers: list[memoryview], path: Path) -> None:
    with open(path, "wb") as f:
        for buffer in buffers:
            f.write(buffer)
        f.flush()
        os.fsync(f.fileno())


def stored_size(root: Path) -> int:
    return sum(p.stat().st_size for p in (root / ".objects").rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where to write (default: a temp folder on /tmp's disk)")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aoe-bench-", dir=args.dir))
    try:
        run(work, args.repeats)
    finally:
        shutil.rmtree(work)


def run(work: Path, repeats: int) -> None:
    from aoe.weights import raw_view

    state = trained_state_dict()
    raw_bytes = sum(t.numel() * t.element_size() for t in state.values())
    buffers = [raw_view(t.contiguous()) for t in state.values()]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}, "
          f"python {platform.python_version()}")
    print(f"state_dict: {len(state)} tensors, {raw_bytes / 1e6:.1f} MB of float32, "
          f"{repeats} repeats (median)\n")

    pt = work / "weights.pt"
    t_torch_save = median_time(lambda: torch_save_fsync(state, pt), repeats)
    t_raw = median_time(lambda: raw_write_fsync(buffers, work / "raw.bin"), repeats)
    t_hash = median_time(lambda: [blake3.blake3(b).digest() for b in buffers], repeats)

    stores = iter(range(10_000))
    current: dict[str, aoe.Store] = {}

    def fresh_store() -> None:
        store = aoe.Store(work / f"store-{next(stores)}")
        store.create_font("bench")
        current["store"] = store

    t_save = median_time(lambda: current["store"].save_model("1-bench", state), repeats, before=fresh_store)
    store = current["store"]
    stored = stored_size(store.root)
    t_save_again = median_time(lambda: store.save_model("1-bench", state), repeats)
    added = stored_size(store.root) - stored

    t_torch_load = median_time(lambda: torch.load(pt, weights_only=True, map_location="cpu"), repeats)
    t_load = median_time(lambda: store.load_model("1-bench"), repeats)
    t_lazy = median_time(lambda: store.open_weights("1-bench")["0.weight"], repeats)
    t_keys = median_time(lambda: store.load_model("1-bench", keys=["0.weight"]), repeats)
    loaded = store.load_model("1-bench").weights
    assert all(torch.equal(loaded[k], v) for k, v in state.items()), "round trip is not exact"

    rows = [
        ("save_model (new weights)", t_save, t_torch_save, "torch.save+fsync"),
        ("save_model (unchanged weights)", t_save_again, t_torch_save, "torch.save+fsync"),
        ("load_model (every hash verified)", t_load, t_torch_load, "torch.load(weights_only)"),
    ]
    print(f"{'operation':36} {'aoe':>9} {'baseline':>9} {'ratio':>6}  baseline")
    for name, ours, base, base_name in rows:
        print(f"{name:36} {ours * 1000:7.0f}ms {base * 1000:7.0f}ms {ours / base:6.2f}  {base_name}")
    one = state["0.weight"].numel() * 4 / 1e6
    print(f"{'open_weights + read one tensor (' + f'{one:.0f} MB)':36} {t_lazy * 1000:7.1f}ms")
    print(f"{'load_model(keys=[one tensor])':36} {t_keys * 1000:7.1f}ms")
    print(f"\n{'physical limits':36} {'time':>9}")
    print(f"{'raw write + fsync of the bytes':36} {t_raw * 1000:7.0f}ms  ({raw_bytes / t_raw / 1e9:.2f} GB/s)")
    print(f"{'blake3 of the bytes, one thread':36} {t_hash * 1000:7.0f}ms  ({raw_bytes / t_hash / 1e9:.2f} GB/s)")
    print(f"{'save_model throughput':36} {'':9}  {raw_bytes / t_save / 1e9:.2f} GB/s")
    print(f"{'load_model throughput':36} {'':9}  {raw_bytes / t_load / 1e9:.2f} GB/s")
    print(f"\n{'size':36} {'bytes':>12} {'vs raw':>7}")
    print(f"{'raw tensor bytes':36} {raw_bytes:12,d} {1:7.3f}")
    print(f"{'torch.save file':36} {pt.stat().st_size:12,d} {pt.stat().st_size / raw_bytes:7.3f}")
    print(f"{'aoe store, first save':36} {stored:12,d} {stored / raw_bytes:7.3f}")
    print(f"{'aoe store, added by unchanged save':36} {added:12,d} {added / raw_bytes:7.5f}")


if __name__ == "__main__":
    main()
