"""Listing 10,000 runs: aoe's catalog against the spec's plain folders (and MLflow).

    python benchmarks/bench_listing.py [--runs 10000] [--dir PATH] [--mlflow] [--plot PNG]

Builds the same runs twice, in an aoe store and in the spec's plain-folder layout
(``<font>/runs/<time>/{weights,sample.png,eval-glyphs/,feedback.json}``), then times
listing, a filtered sorted query, a search across fonts and the newest 100, warm and
cold (page cache dropped when this process may, else a fresh process). ``--mlflow``
adds MLflow's SQLite and file tracking stores on the same runs (``pip install
-e .[bench]``); ``--plot`` measures 1k..30k runs and draws listing time against count.
Every figure is a median; ratios are baseline / aoe (higher is better for aoe).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import torch
from timing import median_time

import aoe

FONTS = {"1-fruity": 1.0, "2-dumb": 0.1, "3-aggressive-sans": 0.01}
"""Each font's share of the runs: the first holds exactly --runs runs."""
STYLES = ("serif", "sans", "mono", "script")
START = datetime(2026, 1, 1, tzinfo=UTC)


def run_fields(i: int) -> dict[str, Any]:
    """The metadata of run i, the same in every layout."""
    return {
        "params": {"lr": [0.1, 0.01, 0.001][i % 3], "batch": 32 * (1 + i % 4), "style": STYLES[i % 4]},
        "feedback": {"final_loss": round(1.0 / (1 + i % 997), 6), "val_loss": round((i % 89) / 89, 6),
                     "epochs": 1 + i % 50},
        "tags": [STYLES[i % 4]] + (["bold"] if i % 5 == 0 else []),
        "name": f"run {i} {'bold ' if i % 5 == 0 else ''}{STYLES[i % 4]}",
        "started_at": START + timedelta(seconds=37 * i),
    }


def png(level: int) -> bytes:
    from PIL import Image

    buffer = io.BytesIO()
    Image.new("L", (8, 8), level % 256).save(buffer, format="PNG")
    return buffer.getvalue()


def build(root: Path, plain: Path, runs: int, start: int = 0) -> tuple[float, float]:
    """Runs [start, runs) of every font in both layouts; returns (aoe s, plain s)."""
    store = aoe.Store(root)
    for font in FONTS:
        if font not in (store.list_fonts() if root.exists() else []):
            store.create_font(font)
    weights = {"w": torch.zeros(64)}
    images = [png(i) for i in range(4)]
    t_aoe = t_plain = 0.0
    for font, share in FONTS.items():
        for i in range(int(start * share), int(runs * share)):
            f = run_fields(i)
            began = time.perf_counter()
            store.save_model(font, weights, None, images[i % 4], {"A": images[(i + 1) % 4]}, f["feedback"],
                             params=f["params"], started_at=f["started_at"], tags=f["tags"], name=f["name"])
            t_aoe += time.perf_counter() - began
            began = time.perf_counter()
            folder = plain / font / "runs" / f["started_at"].strftime("%Y-%m-%dT%H:%M:%S.%f")
            (folder / "eval-glyphs").mkdir(parents=True)
            torch.save(weights, folder / "weights")
            (folder / "sample.png").write_bytes(images[i % 4])
            (folder / "eval-glyphs" / "A.png").write_bytes(images[(i + 1) % 4])
            record = {**f["feedback"], "params": f["params"], "tags": f["tags"], "name": f["name"],
                      "started_at": f["started_at"].isoformat()}
            (folder / "feedback.json").write_text(json.dumps(record))
            t_plain += time.perf_counter() - began
    return t_aoe, t_plain


# -- the plain-folder baseline: what a user of the spec's layout would write ---------------


def plain_list(plain: Path, font: str) -> list[dict[str, Any]]:
    runs = []
    for folder in sorted((plain / font / "runs").iterdir()):
        with open(folder / "feedback.json") as f:
            runs.append({"run": folder.name, **json.load(f)})
    return runs


def plain_query(plain: Path, font: str) -> list[dict[str, Any]]:
    runs = [r for r in plain_list(plain, font) if "serif" in r["tags"] and r["final_loss"] < 0.01]
    return sorted(runs, key=lambda r: r["final_loss"])


def plain_search(plain: Path, text: str) -> list[dict[str, Any]]:
    return [r for font in FONTS for r in plain_list(plain, font) if text in r["name"].lower()]


def plain_newest(plain: Path, font: str, count: int) -> list[dict[str, Any]]:
    folders = sorted((plain / font / "runs").iterdir())[-count:]
    return [{"run": f.name, **json.loads((f / "feedback.json").read_text())} for f in folders][::-1]


PLAIN_SCRIPT = """
import json, os, sys
runs = []
for name in sorted(os.listdir(sys.argv[1])):
    with open(os.path.join(sys.argv[1], name, "feedback.json")) as f:
        runs.append({"run": name, **json.load(f)})
print(json.dumps(runs))
"""
"""The plain-folder listing as a script of its own: only os and json, nothing to import."""


# -- timing -----------------------------------------------------------------------------------


def can_drop_caches() -> bool:
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


def process_time(argv: list[str], repeats: int, before: Callable[[], object] | None = None) -> float:
    """Median seconds of a whole process, as a user's shell runs it: with Python's bytecode
    cache (an environment with PYTHONDONTWRITEBYTECODE would compile every changed module
    on every start, which no installed aoe does), written by an untimed first run."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}

    def run() -> None:
        result = subprocess.run(argv, capture_output=True, env=env)
        assert result.returncode == 0, result.stderr.decode()

    run()
    return median_time(run, repeats, before)


def report(rows: list[tuple[str, float, float | None, str]]) -> None:
    print(f"{'operation':44} {'aoe':>10} {'baseline':>10} {'ratio':>7}  baseline")
    for name, ours, base, base_name in rows:
        base_text = f"{base * 1000:8.1f}ms" if base is not None else f"{'-':>10}"
        ratio = f"{base / ours:7.1f}" if base is not None else f"{'-':>7}"
        print(f"{name:44} {ours * 1000:8.1f}ms {base_text} {ratio}  {base_name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default=None, help="where to build the stores (default: a temp folder)")
    parser.add_argument("--mlflow", action="store_true", help="also time MLflow's tracking stores")
    parser.add_argument("--mlflow-file-store", action="store_true", help="with --mlflow, its file store too (slow)")
    parser.add_argument("--plot", default=None, help="measure 1k..30k runs and save a plot here")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aoe-listing-", dir=args.dir))
    try:
        if args.plot:
            sweep(work, args.plot, args.repeats)
        else:
            compare(work, args)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def compare(work: Path, args: argparse.Namespace) -> None:
    root, plain = work / "networks", work / "plain"
    total = sum(int(args.runs * share) for share in FONTS.values())
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python {platform.python_version()}, "
          f"aoe {aoe.__version__}; {total} runs ({', '.join(f'{f}: {int(args.runs * s)}' for f, s in FONTS.items())})")
    t_aoe, t_plain = build(root, plain, args.runs)
    print(f"building: aoe {t_aoe:.1f} s ({t_aoe / total * 1000:.2f} ms a run, every run fsynced), "
          f"plain folders {t_plain:.1f} s ({t_plain / total * 1000:.2f} ms a run, no fsync)\n")
    drop = can_drop_caches()
    cold = "page cache dropped" if drop else "fresh process (page cache could not be dropped)"
    font, repeats = "1-fruity", args.repeats
    store = aoe.Store(root)

    first = median_time(lambda: aoe.Store(root).reindex(), 1, can_drop_caches if drop else None)
    small_first = _first_listing(root, "3-aggressive-sans", drop)
    store.list_runs(font)
    time.sleep(2.1)  # past the racy window: the folders are settled, as in daily use
    store.list_runs(font)
    assert len(store.list_runs(font)) == len(plain_list(plain, font)) == args.runs

    plain_warm = median_time(lambda: plain_list(plain, font), repeats)
    rows = [
        (f"list_runs, {args.runs} runs with metadata, warm", median_time(lambda: store.list_runs(font), repeats),
         plain_warm, "scan folders + read feedback.json"),
        ("list_runs, warm, a new Store each time", median_time(lambda: aoe.Store(root).list_runs(font), repeats),
         plain_warm, "same"),
    ]
    if drop:
        rows.append(("list_runs, cold (page cache dropped)",
                     median_time(lambda: aoe.Store(root).list_runs(font), repeats, can_drop_caches),
                     median_time(lambda: plain_list(plain, font), repeats, can_drop_caches), "same, cold"))
    aoe_cli = [sys.executable, "-m", "aoe", "store", "--root", str(root), "ls", font, "--json"]
    plain_cli = [sys.executable, "-c", PLAIN_SCRIPT, str(plain / font / "runs")]
    rows.append(("`aoe store ls FONT --json`, whole process", process_time(aoe_cli, repeats),
                 process_time(plain_cli, repeats), "python script doing the scan"))
    if drop:
        rows.append(("`aoe store ls FONT --json`, cold", process_time(aoe_cli, repeats, can_drop_caches),
                     process_time(plain_cli, repeats, can_drop_caches), "same, cold"))
    query = dict(tags=["serif"], where=["metrics.final_loss<0.01"], sort="metrics.final_loss")
    assert [i.name for i in store.list_runs(font, **query)] == [r["name"] for r in plain_query(plain, font)]
    rows += [
        ("filtered, sorted (tag, loss<0.01, by loss)", median_time(lambda: store.list_runs(font, **query), repeats),
         median_time(lambda: plain_query(plain, font), repeats), "scan + filter + sort in Python"),
        ("search 'bold' across all fonts", median_time(lambda: store.search("bold"), repeats),
         median_time(lambda: plain_search(plain, "bold"), repeats), "scan every font"),
        ("newest 100 runs", median_time(lambda: store.list_runs(font, sort="-time", limit=100), repeats),
         median_time(lambda: plain_newest(plain, font, 100), repeats), "sort names, read 100"),
        ("fonts with run counts and newest run", median_time(store.font_summaries, repeats),
         median_time(lambda: [(f, len(os.listdir(plain / f / "runs"))) for f in FONTS], repeats), "listdir each font"),
    ]
    rows += growing(root, font, repeats)
    report(rows)
    print(f"\nthe spec's floors (first listing, no index, {cold}):")
    print(f"  discover {int(args.runs * FONTS['3-aggressive-sans'])} runs: {small_first:.2f} s (floor: 2 s for 100+)")
    print(f"  discover {total} runs of {len(FONTS)} fonts: {first:.2f} s (floor: 5 s for 10,000)")
    if args.mlflow:
        compare_mlflow(work, args, store, plain, font)


def growing(root: Path, font: str, repeats: int) -> list[tuple[str, float, float | None, str]]:
    """A font being trained while it is listed (a trainer saves, ``serve`` or a person
    lists): the first listing after each save, in the Store that listed before and in a
    new one, then the next listing, and three 3 s after a save (the median). Each must show the new run."""
    lister, writer = aoe.Store(root), aoe.Store(root)
    count = len(lister.list_runs(font))
    same, fresh, after, later = [], [], [], []

    def timed(action: Callable[[], list[Any]], expected: int) -> float:
        began = time.perf_counter()
        found = action()
        seconds = time.perf_counter() - began
        assert len(found) == expected, (len(found), expected)
        return seconds

    for i in range(repeats):  # a trainer saves; the same lister (a `serve`) lists after each save
        writer.save_model(font, {"w": torch.zeros(64)}, params={"growing": i})
        count += 1
        same.append(timed(lambda: lister.list_runs(font), count))
        after.append(timed(lambda: lister.list_runs(font), count))
    for i in range(repeats):  # a person types `aoe store ls` after each save: a new Store each time
        writer.save_model(font, {"w": torch.zeros(64)}, params={"growing": i})
        count += 1
        fresh.append(timed(lambda: aoe.Store(root).list_runs(font), count))
    mixed = []
    for i in range(repeats):  # both: the lister finds the rows changed by another process's listing
        writer.save_model(font, {"w": torch.zeros(64)}, params={"growing": i})
        aoe.Store(root).list_runs(font)
        count += 1
        mixed.append(timed(lambda: lister.list_runs(font), count))
    for i in range(3):  # one sample can hold a pause of Python's collector (~115 ms here with torch loaded)
        writer.save_model(font, {"w": torch.zeros(64)}, params={"later": i})
        count += 1
        lister.list_runs(font)
        time.sleep(3)
        later.append(timed(lambda: lister.list_runs(font), count))
    median = statistics.median
    return [("first list_runs after a save, same Store", median(same), None, ""),
            ("first list_runs after a save, a new Store", median(fresh), None, ""),
            ("first list_runs after a save another process listed", median(mixed), None, ""),
            ("the next list_runs", median(after), None, ""),
            ("list_runs 3 s after the last save", median(later), None, "")]


def _first_listing(root: Path, font: str, drop: bool) -> float:
    store = aoe.Store(root)
    store.catalog.rebuild()
    store.catalog.close()
    if drop:
        can_drop_caches()
    began = time.perf_counter()
    aoe.Store(root).list_runs(font)
    return time.perf_counter() - began


def compare_mlflow(work: Path, args: argparse.Namespace, store: aoe.Store, plain: Path, font: str) -> None:
    """The same runs of the first font in MLflow's tracking stores, with MLflow's own API."""
    os.environ["MLFLOW_ALLOW_FILE_STORE"] = "true"
    import mlflow
    from mlflow.tracking import MlflowClient

    stores = {"sqlite": f"sqlite:///{work / 'mlflow.db'}"}
    if args.mlflow_file_store:
        stores["file"] = (work / "mlruns").as_uri()
    print(f"\nMLflow {mlflow.__version__}, the {args.runs} runs of {font} (params, feedback numbers as metrics, tags):")
    rows = []
    for kind, uri in stores.items():
        client = MlflowClient(tracking_uri=uri)
        experiment = client.create_experiment(font)
        began = time.perf_counter()
        for i in range(args.runs):
            f = run_fields(i)
            run = client.create_run(experiment, start_time=int(f["started_at"].timestamp() * 1000),
                                    tags={**{t: "1" for t in f["tags"]}, "mlflow.runName": f["name"]})
            client.log_batch(run.info.run_id, metrics=[mlflow.entities.Metric(k, v, 0, 0) for k, v in f["feedback"].items()],
                             params=[mlflow.entities.Param(k, str(v)) for k, v in f["params"].items()])
            client.set_terminated(run.info.run_id)
        created = time.perf_counter() - began

        def list_all() -> int:
            found, token = 0, None
            while True:
                page = client.search_runs([experiment], max_results=1000, page_token=token)
                found += len(page)
                token = page.token
                if not token:
                    return found

        assert list_all() == args.runs
        query = lambda: client.search_runs(  # noqa: E731
            [experiment], "metrics.final_loss < 0.01 and tags.serif = '1'", order_by=["metrics.final_loss ASC"],
            max_results=10000)
        newest = lambda: client.search_runs([experiment], order_by=["attributes.start_time DESC"], max_results=100)  # noqa: E731
        repeats = 3
        rows += [
            (f"create {args.runs} runs ({kind} store)", created, None),
            (f"list all ({kind}, pages of 1,000)", median_time(list_all, repeats), median_time(lambda: store.list_runs(font), repeats)),
            (f"filtered, sorted by a metric ({kind})", median_time(query, repeats),
             median_time(lambda: store.list_runs(font, tags=["serif"], where=["metrics.final_loss<0.01"],
                                                 sort="metrics.final_loss"), repeats)),
            (f"newest 100 ({kind})", median_time(newest, repeats),
             median_time(lambda: store.list_runs(font, sort="-time", limit=100), repeats)),
        ]
    print(f"{'operation':44} {'MLflow':>10} {'aoe':>10} {'ratio':>7}")
    for name, theirs, ours in rows:
        ours_text = f"{ours * 1000:8.1f}ms" if ours is not None else f"{'-':>10}"
        print(f"{name:44} {theirs * 1000:8.1f}ms {ours_text} {theirs / ours if ours else float('nan'):7.1f}")


def sweep(work: Path, plot: str, repeats: int) -> None:
    """Listing time against run count, both layouts, drawn to ``plot``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    root, plain = work / "networks", work / "plain"
    counts, built, ours, theirs = (1_000, 3_000, 10_000, 30_000), 0, [], []
    for count in counts:
        build(root, plain, count, start=built)
        built = count
        store = aoe.Store(root)
        store.list_runs("1-fruity")
        time.sleep(2.1)
        ours.append(median_time(lambda: store.list_runs("1-fruity"), repeats))
        theirs.append(median_time(lambda: plain_list(plain, "1-fruity"), repeats))
        print(f"{count:6d} runs: aoe {ours[-1] * 1000:8.1f} ms, plain folders {theirs[-1] * 1000:8.1f} ms, "
              f"ratio {theirs[-1] / ours[-1]:.1f}")
    plt.figure(figsize=(6, 4))
    plt.loglog(counts, [t * 1000 for t in theirs], "o-", label="plain folders: scan + read feedback.json")
    plt.loglog(counts, [t * 1000 for t in ours], "o-", label="aoe list_runs (catalog index)")
    plt.xlabel("runs in the font")
    plt.ylabel("listing time, warm (ms)")
    plt.title(f"Listing a font's runs with metadata ({os.cpu_count()} cores)")
    plt.grid(True, which="both", alpha=0.3)
    plt.legend()
    plt.tight_layout()
    plt.savefig(plot, dpi=120)
    print(f"plot: {plot}")


if __name__ == "__main__":
    main()
