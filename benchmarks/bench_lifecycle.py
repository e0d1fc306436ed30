"""A store that lives for years: retention, aliases and lineage on a font of 10,000 runs.

    python benchmarks/bench_lifecycle.py [--runs 10000] [--dir PATH]

Builds a font of --runs runs, one every 30 minutes (208 days for 10,000), each resumed
from the one before (every 50th also merging the run 10 before: a branch), an alias
moved 1,000 times, and times, each as a user runs it:

- ``aoe store forget --keep-last 10 --keep-daily 7 --keep-best '3 metrics.final_loss'``,
  with ``--dry-run`` and for real (on a fresh copy of the store each time), against what a
  user of plain folders would run instead: ``rm -rf`` of the same runs' folders (which
  cannot be undone);
- a save of a whole training checkpoint (a GPT-2 of 6 layers and its AdamW state) into a
  font with a stored policy, against the same save without one;
- a load through ``FONT@best`` against the same load by run id;
- ``aoe store log --graph`` of the font, against ``aoe store ls`` of it.

Every figure is a median.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import torch
from bench_listing import png, process_time
from timing import median_time

import aoe

START = datetime(2026, 1, 1, tzinfo=UTC)
FORGET = ["--keep-last", "10", "--keep-daily", "7", "--keep-best", "3 metrics.final_loss"]


def build(root: Path, plain: Path, runs: int) -> str:
    """The font (and its runs as plain folders, for the baseline)."""
    store = aoe.Store(root)
    font = store.create_font("fruity")
    weights, images = {"w": torch.zeros(64)}, [png(i) for i in range(4)]
    previous: str | None = None
    ids: list[str] = []
    for i in range(runs):
        parents = [(font, previous)] if previous else []
        if i % 50 == 0 and i >= 10:
            parents.append((font, ids[i - 10]))
        started = START + timedelta(minutes=30 * i)
        previous = store.save_model(font, weights, None, images[i % 4], {"A": images[(i + 1) % 4]},
                                    {"final_loss": round(1.0 / (1 + i % 997), 6)}, started_at=started,
                                    params={"lr": 0.001}, tags=["serif"], parents=parents)
        ids.append(previous)
        folder = plain / font / "runs" / started.strftime("%Y-%m-%dT%H:%M:%S.%f")
        (folder / "eval-glyphs").mkdir(parents=True)
        torch.save(weights, folder / "weights")
        (folder / "sample.png").write_bytes(images[i % 4])
        (folder / "eval-glyphs" / "A.png").write_bytes(images[(i + 1) % 4])
        (folder / "feedback.json").write_text('{"final_loss": 0.1}')
    for move in range(1000):
        store.set_alias(font, "best", ids[(move * 7919) % runs])
    return font


def forget_times(root: Path, plain: Path, font: str, work: Path, repeats: int) -> list[tuple[str, float, float]]:
    """forget --dry-run and forget against rm -rf of the same runs' folders, each on a copy."""
    aoe_cli = [sys.executable, "-m", "aoe", "store", "--root"]
    dry = process_time([*aoe_cli, str(root), "forget", font, *FORGET, "--dry-run"], repeats)
    kept = {info.run_id for info in aoe.Store(root).list_runs(font)} - set(
        aoe.Store(root).forget(font, {"keep_last": 10, "keep_daily": 7, "keep_best": [(3, "metrics.final_loss")]},
                               dry_run=True).forgotten)
    copies = iter(range(repeats * 2 + 2))

    def fresh() -> None:
        copy = work / f"copy-{next(copies)}"
        shutil.copytree(root, copy)
        subprocess.run([*aoe_cli, str(copy), "ls", font, "--count"], check=True, capture_output=True)  # its index
        fresh.copy = copy  # type: ignore[attr-defined]

    def forget() -> None:
        done = subprocess.run([*aoe_cli, str(fresh.copy), "forget", font, *FORGET],  # type: ignore[attr-defined]
                              capture_output=True)
        assert done.returncode == 0, done.stderr.decode()

    real = median_time(forget, repeats, fresh)
    names = sorted((plain / font / "runs").iterdir())
    doomed = [n for n, run in zip(names, sorted(aoe.Store(root).refs.runs(font))) if run not in kept]
    plain_copies = iter(range(repeats * 2 + 2))

    def fresh_plain() -> None:
        copy = work / f"plain-{next(plain_copies)}"
        shutil.copytree(plain, copy)
        fresh_plain.folders = [copy / font / "runs" / n.name for n in doomed]  # type: ignore[attr-defined]

    def rm_rf() -> None:
        subprocess.run(["rm", "-rf", *map(str, fresh_plain.folders)], check=True)  # type: ignore[attr-defined]

    baseline = median_time(rm_rf, repeats, fresh_plain)
    print(f"forget keeps {len(kept)} runs, moves {len(doomed)} to the trash")
    return [("forget --dry-run (process)", dry, baseline), ("forget (process)", real, baseline)]


def checkpoint() -> dict:
    """A whole training checkpoint: a GPT-2 of 6 layers (d 512) and its AdamW state."""
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    model = GPT2LMHeadModel(GPT2Config(n_layer=6, n_embd=512, n_head=8, vocab_size=8192, n_positions=256))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    model(torch.randint(0, 8192, (2, 32)), labels=torch.randint(0, 8192, (2, 32))).loss.backward()
    optimizer.step()
    return {"model": model.state_dict(), "optimizer": optimizer.state_dict(), "step": 1}


def policy_times(work: Path, repeats: int) -> list[tuple[str, float, float]]:
    """A save into a font that keeps a policy (keep the last 20: at steady state each save
    forgets one run) against the same save into a font without one, taken in turns (the
    machine's drift falls on both); and the policy's own part, timed inside the save."""
    from aoe.store.forgetting import Forgetting

    state = checkpoint()
    stores = {}
    for kept in (False, True):
        store = aoe.Store(work / f"policy-{kept}")
        font = store.create_font("fruity")
        if kept:
            store.set_retention(font, {"keep_last": 20})
        for _ in range(25):  # steady state: 20 runs, each save forgets the oldest
            state["step"] += 1
            store.save_model(font, state, feedback={"loss": 1.0 / state["step"]})
        stores[kept] = (store, font)
    applying: list[float] = []
    real = Forgetting.apply_retention

    def timed(self: Forgetting, font_id: str) -> object:
        began = time.perf_counter()
        try:
            return real(self, font_id)
        finally:
            if self is stores[True][0]:
                applying.append(time.perf_counter() - began)

    Forgetting.apply_retention = timed  # type: ignore[method-assign]
    times: dict[bool, list[float]] = {False: [], True: []}
    try:
        for _ in range(repeats):
            for kept, (store, font) in stores.items():
                state["step"] += 1
                state["model"]["lm_head.weight"].add_(1e-3)  # one tensor changed, as a step changes them all
                began = time.perf_counter()
                store.save_model(font, state, feedback={"loss": 1.0 / state["step"]})
                times[kept].append(time.perf_counter() - began)
    finally:
        Forgetting.apply_retention = real  # type: ignore[method-assign]
    with_policy, without = statistics.median(times[True]), statistics.median(times[False])
    applied = statistics.median(applying)
    print(f"a save with the policy: {1000 * with_policy:.1f} ms against {1000 * without:.1f} ms without; "
          f"the policy's part inside it {1000 * applied:.2f} ms (median)")
    return [("save of a 6-layer GPT-2 checkpoint, policy kept", with_policy, without)]


def alias_times(root: Path, font: str, repeats: int) -> list[tuple[str, float, float]]:
    store = aoe.Store(root)
    run_id = store.aliases_of(font)["best"]
    by_id = median_time(lambda: store.load_model(font, run_id), repeats)
    by_alias = median_time(lambda: store.load_model(f"{font}@best"), repeats)
    resolve = median_time(lambda: store.run_named(f"{font}@best"), repeats)
    print(f"resolving FONT@best (1,000 moves in its history) takes {1000 * resolve:.3f} ms; "
          f"a load through it adds {1000 * (by_alias - by_id):.3f} ms")
    return [("load through FONT@best", by_alias, by_id)]


def graph_times(root: Path, font: str, repeats: int) -> list[tuple[str, float, float]]:
    aoe_cli = [sys.executable, "-m", "aoe", "store", "--root", str(root)]
    graph = process_time([*aoe_cli, "log", "--graph", font], repeats)
    listing = process_time([*aoe_cli, "ls", font], repeats)
    return [("log --graph (process)", graph, listing)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--dir", type=Path, default=None, help="where to build (default: a temporary folder)")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aoe-lifecycle-", dir=args.dir))
    os.environ["AOE_CACHE_DIR"] = str(work / "cache")
    try:
        began = time.perf_counter()
        font = build(work / "networks", work / "plain", args.runs)
        print(f"built {args.runs} runs in {time.perf_counter() - began:.0f} s; {platform.processor() or platform.machine()}, "
              f"{os.cpu_count()} cores, Python {platform.python_version()}, torch {torch.__version__}")
        rows = [*forget_times(work / "networks", work / "plain", font, work, args.repeats),
                *policy_times(work, max(args.repeats, 15)),
                *alias_times(work / "networks", font, 200),
                *graph_times(work / "networks", font, args.repeats)]
        print(f"\n{'operation':46} {'aoe':>10} {'baseline':>10} {'ratio':>7}")
        baselines = ["rm -rf of the same run folders", "rm -rf of the same run folders", "the same save, no policy",
                     "the same load by run id", "aoe store ls of the font"]
        for (name, ours, base), what in zip(rows, baselines):
            print(f"{name:46} {ours * 1000:8.1f}ms {base * 1000:8.1f}ms {base / ours:7.2f}  ({what})")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
