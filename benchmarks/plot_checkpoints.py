"""Plot bench_checkpoints.py's figures: save and load time, as a ratio to torch, against tensor count.

    python benchmarks/bench_checkpoints.py --json results.json
    python benchmarks/plot_checkpoints.py results.json docs/checkpoints.png
"""

from __future__ import annotations

import json
import sys

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

STYLE = {"torch.save": "s", "torch.load": "s", "safetensors": "^", "disk": "x", "aoe": "o"}


def main() -> None:
    with open(sys.argv[1]) as file:
        results = json.load(file)
    figure, axes = plt.subplots(1, 2, figsize=(12, 4.8))
    for axis, kind, base in ((axes[0], "save", "torch.save"), (axes[1], "load", "torch.load")):
        contenders = sorted({name for r in results for name in r[kind]} - {base})
        for name in contenders:
            points = sorted((r["tensors"], r[kind][name] / r[kind][base]) for r in results if name in r[kind])
            axis.plot([p[0] for p in points], [p[1] for p in points], STYLE.get(name, "o"), label=name, ms=8)
        if kind == "save":
            points = sorted((r["tensors"], r["save_unchanged"] / r["save"][base]) for r in results)
            axis.plot([p[0] for p in points], [p[1] for p in points], "o", mfc="none", label="aoe, unchanged", ms=8)
        for r in results:
            axis.annotate(r["name"], (r["tensors"], r[kind]["aoe"] / r[kind][base]), fontsize=7,
                          xytext=(4, 4), textcoords="offset points")
        axis.axhline(1.0, color="grey", lw=0.8)
        axis.set_xscale("log")
        axis.set_yscale("log")
        axis.set_xlabel("tensors in the state saved")
        axis.set_ylabel(f"time / {base} (lower is faster)")
        axis.set_title(f"{kind}: time against {base}, same machine, in turns")
        axis.legend(fontsize=8)
    figure.tight_layout()
    figure.savefig(sys.argv[2], dpi=110)


if __name__ == "__main__":
    main()
