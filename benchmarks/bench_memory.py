"""Peak memory of saving and loading a 1 GiB state_dict that holds one 512 MiB tensor.

    python benchmarks/bench_memory.py [--dir PATH]

Each operation runs in a fresh child process, which resets its peak-RSS counter
(/proc/self/clear_refs) just before the operation and reads it (VmHWM) after: the
figure is how far the process's resident memory rose above where it stood, against
the tensor bytes. A save starts with the tensors already in memory, so anything above
0 is the saver's own; a load has to hold the tensors it returns (1 GiB), so anything
above 1 GiB is the loader's own. Linux only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

GiB = 1 << 30
MiB = 1 << 20


def state_dict() -> dict:
    """1 GiB of float32: one 512 MiB tensor and eight of 64 MiB, trained-like values."""
    import torch

    torch.manual_seed(0)
    state = {"big": torch.empty(128 * MiB // 1)}
    state["big"].normal_(0, 0.02)
    for i in range(8):
        state[f"layer{i}"] = torch.empty(16 * MiB).normal_(0, 0.02)
    return state


def rss_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/self/status")


def measure(action) -> dict:
    """Run ``action``; how far RSS rose above its level before (bytes)."""
    Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
    before = rss_kib("VmRSS")
    action()
    return {"before": before * 1024, "peak_rise": (rss_kib("VmHWM") - before) * 1024}


def child(operation: str, work: Path) -> dict:
    import torch

    import aoe

    if operation.endswith("save"):
        state = state_dict()
        if operation == "aoe-save":
            store = aoe.Store(work / "store")
            font = store.create_font("memory")
            return measure(lambda: store.save_model(font, state))
        if operation == "torch-save":
            return measure(lambda: torch.save(state, work / "weights.pt"))
        import safetensors.torch

        return measure(lambda: safetensors.torch.save_file(state, work / "weights.safetensors"))
    kept = []  # the loaded tensors must stay alive until the peak is read
    if operation == "aoe-load":
        store = aoe.Store(work / "store")
        result = measure(lambda: kept.append(store.load_model("1-memory")))
        assert kept[0].weights["big"].shape == (128 * MiB,)
        return result
    if operation == "torch-load":
        return measure(lambda: kept.append(torch.load(work / "weights.pt", weights_only=True)))
    import safetensors.torch

    def load_all() -> None:  # load_file maps the file lazily: make it read every byte
        tensors = safetensors.torch.load(Path(work / "weights.safetensors").read_bytes())
        kept.append(tensors)

    return measure(load_all)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dir", default=None, help="where to write (default: a temp folder on /tmp's disk)")
    parser.add_argument("--child", nargs=2, metavar=("OPERATION", "WORK"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(child(args.child[0], Path(args.child[1]))))
        return
    work = Path(tempfile.mkdtemp(prefix="aoe-bench-", dir=args.dir))
    try:
        results = {}
        for operation in ("aoe-save", "torch-save", "safetensors-save", "aoe-load", "torch-load", "safetensors-load"):
            out = subprocess.run([sys.executable, __file__, "--child", operation, str(work)],
                                 check=True, capture_output=True, text=True).stdout
            results[operation] = json.loads(out.strip().splitlines()[-1])
    finally:
        shutil.rmtree(work)
    print(f"state_dict: 1 GiB of float32 (one 512 MiB tensor, eight of 64 MiB); {os.cpu_count()} cores\n")
    print(f"{'operation':22} {'RSS rise':>10} {'beyond the tensors':>19}")
    for operation, figures in results.items():
        rise = figures["peak_rise"]
        beyond = rise - (GiB if operation.endswith("load") else 0)
        print(f"{operation:22} {rise / MiB:8.0f} MiB {beyond / MiB:15.0f} MiB")


if __name__ == "__main__":
    main()
