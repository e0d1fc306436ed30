"""One font grown to 1,000, 10,000 and 100,000 runs on a local store: the time and peak
memory of what people run on it, each as a new process, at each size.

    python benchmarks/bench_scale.py [--sizes 1000,10000,100000] [--dir PATH] [--plot PNG]

Every run is saved through ``Store.save_model`` (the real write path): its own weights
(64 floats), personality vector, feedback and metadata, one of four samples and glyph
images (deduplicated). Each operation runs as its own process, as a user's shell runs it;
its peak memory is the process's maximum resident set (``wait4``). ``ls`` right after a
save is measured after another process saved one run.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch
from bench_listing import png, run_fields

import aoe

FONT = "1-fruity"
AOE = [sys.executable, "-m", "aoe", "store"]


def grow(root: Path, start: int, stop: int) -> float:
    """Runs [start, stop) of the font; returns the seconds the saves took."""
    store = aoe.Store(root)
    if FONT not in (store.list_fonts() if root.exists() else []):
        store.create_font("fruity")
    images = [png(i) for i in range(4)]
    began = time.perf_counter()
    for i in range(start, stop):
        f = run_fields(i)
        store.save_model(FONT, {"w": torch.full((64,), float(i))}, torch.full((8,), i / stop), images[i % 4],
                         {"A": images[(i + 1) % 4]}, f["feedback"], params=f["params"], started_at=f["started_at"],
                         tags=f["tags"], name=f["name"])
    return time.perf_counter() - began


LAUNCHER = ("import os, subprocess, sys; p = subprocess.Popen(sys.argv[1:]); _, status, usage = os.wait4(p.pid, 0); "
            "sys.stderr.write(f'\\nmaxrss {usage.ru_maxrss}\\n'); sys.exit(os.waitstatus_to_exitcode(status))")
"""Runs a command and says its peak memory. A child's ``ru_maxrss`` starts from its
parent's at fork (Linux), so the command is started by this small process, not by the
benchmark that holds torch."""


def run_process(argv: list[str], env: dict[str, str]) -> tuple[float, int, str]:
    """(seconds, peak resident bytes, stdout) of one process."""
    began = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", LAUNCHER, *argv], capture_output=True, env=env)
    seconds = time.perf_counter() - began
    assert result.returncode in (0, 10), result.stderr.decode()[-2000:]
    return seconds, int(result.stderr.split()[-1]) * 1024, result.stdout.decode()


def page_time(root: Path, env: dict[str, str]) -> tuple[float, float]:
    """The font page's first and second answer from `aoe store serve` (seconds)."""
    port = 8700 + os.getpid() % 200
    server = subprocess.Popen([*AOE, "--root", str(root), "serve", "--port", str(port)], env=env,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(300):
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=60).read()
                break
            except OSError:
                time.sleep(0.1)
        times = []
        for _ in range(2):
            began = time.perf_counter()
            urllib.request.urlopen(f"http://127.0.0.1:{port}/font/{FONT}", timeout=300).read()
            times.append(time.perf_counter() - began)
        return times[0], times[1]
    finally:
        server.terminate()
        server.wait()


def operations(root: Path, copy: Path) -> list[tuple[str, list[str]]]:
    where = ["--root", str(root)]
    listing = ("import sys, time, aoe; s = aoe.Store(sys.argv[1]); t = time.perf_counter(); "
               "n = len(s.list_runs(sys.argv[2])); print(f'{time.perf_counter() - t:.4f} {n}')")
    return [
        ("ls FONT --json", [*AOE, *where, "ls", FONT, "--json"]),
        ("list_runs, a new Store", [sys.executable, "-c", listing, str(root), FONT]),
        ("ls FONT --count", [*AOE, *where, "ls", FONT, "--count"]),
        ("search (a filter, every font)", [*AOE, *where, "search", "--where", "metrics.final_loss<0.002", "--json"]),
        ("du", [*AOE, *where, "du"]),
        ("fsck", [*AOE, *where, "fsck"]),
        ("fsck --read-data", [*AOE, *where, "fsck", "--read-data"]),
        ("gc (mark and sweep)", [*AOE, *where, "gc"]),
        ("push the whole store (a new folder)", [*AOE, *where, "push", str(copy)]),
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,100000")
    parser.add_argument("--dir", default=None)
    parser.add_argument("--plot", default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aoe-bench-scale-", dir=args.dir))
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["AOE_CACHE_DIR"] = str(work / "cache")
    os.environ["AOE_CACHE_DIR"] = env["AOE_CACHE_DIR"]
    root = work / "networks"
    results: dict[str, dict[int, tuple[float, int]]] = {}
    print(f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, aoe {aoe.__version__}")
    built = 0
    try:
        for size in (int(s) for s in args.sizes.split(",")):
            saving = grow(root, built, size)
            print(f"\n{size:,} runs ({size - built:,} saved in {saving:.0f} s, {saving / (size - built) * 1000:.2f} ms "
                  f"a save); objects: {sum(1 for _ in aoe.Store(root).backend.list('.objects')):,}", flush=True)
            built = size
            subprocess.run([*AOE, "--root", str(root), "ls", FONT, "--count"], env=env, check=True, capture_output=True)
            time.sleep(2.1)  # settled: the index packs its copy on the next listing
            subprocess.run([*AOE, "--root", str(root), "ls", FONT, "--json"], env=env, check=True, capture_output=True)
            rows = []
            for name, argv in operations(root, work / f"copy-{size}"):
                seconds, rss, out = run_process(argv, env)
                if name.startswith("list_runs"):
                    seconds = float(out.split()[0])
                rows.append((name, seconds, rss))
            grow(root, built, built + 1)  # a trainer's save, then a listing right after it
            built += 1
            seconds, rss, _ = run_process([*AOE, "--root", str(root), "ls", FONT, "--json"], env)
            rows.insert(1, ("ls FONT --json, right after a save", seconds, rss))
            first, second = page_time(root, env)
            rows.append(("font page, the server's first answer", first, -1))
            rows.append(("font page, the server's next answer", second, -1))
            print("| operation | seconds | peak memory |\n|---|---|---|")
            for name, seconds, rss in rows:
                results.setdefault(name, {})[size] = (seconds, rss)
                memory = f"{rss / 2**20:,.0f} MiB" if rss > 0 else "-"
                print(f"| {name} | {seconds:.3f} | {memory} |", flush=True)
            shutil.rmtree(work / f"copy-{size}", ignore_errors=True)
        (work / "results.json").write_text(json.dumps(results))
        if args.plot:
            plot(results, args.plot)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def plot(results: dict[str, dict[int, tuple[float, int]]], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    for number, (name, by_size) in enumerate(results.items()):
        sizes, style = sorted(by_size), ("o-", "s--", "^:")[number // 10]  # ten colours, then other lines
        left.loglog(sizes, [by_size[s][0] for s in sizes], style, label=name)
        if all(by_size[s][1] > 0 for s in sizes):
            right.loglog(sizes, [by_size[s][1] / 2**20 for s in sizes], style, label=name)
    for axis, label in ((left, "seconds"), (right, "peak memory (MiB)")):
        axis.set_xlabel("runs in the font")
        axis.set_ylabel(label)
        axis.grid(True, which="both", alpha=0.3)
    left.legend(fontsize=7)
    left.set_title(f"Time, each as a new process ({os.cpu_count()} cores)")
    right.set_title("Peak resident memory of the process")
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    print(f"plot: {path}")


if __name__ == "__main__":
    main()
