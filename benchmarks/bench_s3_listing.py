"""Listing a font on object storage as it grows to 1k, 10k and 30k runs: a machine's first
listing (no catalog in its cache), with and without a listing snapshot in the store, and
warm listings; seconds and S3 requests.

    python benchmarks/bench_s3_listing.py [--sizes 1000,10000,30000] [--repeats 3]

A SeaweedFS server (``weed mini``) on 127.0.0.1 of the same machine. The runs are built in
a local store (each with params, a tag, feedback metrics, a tiny shared tensor) and pushed
with ``transfer``, then listed through S3 only. Requests are counted in the S3 backend
(every ListObjectsV2, GET, HEAD and PUT it sends).
"""

from __future__ import annotations

import argparse
import collections
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

import aoe
from aoe.backends import s3 as s3_backend
from aoe.layout import LISTINGS
from aoe.transfer import transfer

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from s3server import SeaweedServer

FONT = "1-fruity"
requests: collections.Counter[str] = collections.Counter()


def counting() -> None:
    """Count every request the S3 backend sends, by its first word (listing, reading...)."""
    real = s3_backend.S3Backend._call

    def call(self: Any, what: str, action: Callable[[], Any]) -> Any:
        requests[what.split(" ", 1)[0]] += 1
        return real(self, what, action)

    s3_backend.S3Backend._call = call  # type: ignore[method-assign]


def grow(local: aoe.Store, start: int, stop: int) -> None:
    weights = {"w": torch.ones(4)}
    for i in range(start, stop):
        local.save_model(FONT, weights, params={"i": i, "lr": 10 ** -(i % 4)}, tags=["serif"] if i % 3 else [],
                         feedback={"final_loss": 1 / (i + 1)}, name=f"run {i}")


def measured(action: Callable[[], int], expected: int) -> tuple[float, int]:
    requests.clear()
    began = time.perf_counter()
    found = action()
    seconds = time.perf_counter() - began
    assert found == expected, (found, expected)
    return seconds, sum(requests.values())


def started(prefix: str, directory: str | None) -> tuple[Path, SeaweedServer, Callable[[], str]]:
    """A work folder, a SeaweedFS server in it (its variables set for this process, its
    requests counted), and a function that makes the next Store "a new machine" (an
    empty cache folder of its own; returns it)."""
    work = Path(tempfile.mkdtemp(prefix=prefix, dir=directory))
    server = SeaweedServer.start(work / "server")
    os.environ.update(server.environment())
    counting()
    machines = iter(range(10_000))

    def new_machine() -> str:
        os.environ["AOE_CACHE_DIR"] = str(work / f"machine-{next(machines)}")
        return os.environ["AOE_CACHE_DIR"]

    return work, server, new_machine


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000,30000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--skip-no-snapshot", action="store_true", help="skip the slow first listing without a snapshot")
    args = parser.parse_args()
    work, server, new_machine = started("aoe-bench-s3-listing-", args.dir)
    try:
        local = aoe.Store(work / "local")
        local.create_font("fruity")
        url = server.url("listing")
        built = 0
        print(f"SeaweedFS on 127.0.0.1 (weed mini), {os.cpu_count()} cores, aoe {aoe.__version__}")
        print("| runs | first listing, no snapshot in the store | a new machine's first listing | warm, same Store "
              "| warm, a new Store | `ls --json`, a new process |")
        print("|---|---|---|---|---|---|")
        for size in (int(s) for s in args.sizes.split(",")):
            began = time.perf_counter()
            grow(local, built, size)
            new_machine()
            transfer(local, aoe.Store(url))
            built = size
            setup = time.perf_counter() - began
            remote = aoe.Store(url)
            if args.skip_no_snapshot:
                none = "-"
                new_machine()
                aoe.Store(url).list_runs(FONT)  # writes the snapshot
            else:
                for key in list(remote.backend.list(LISTINGS)):
                    remote.backend.delete(key)
                new_machine()
                t, n = measured(lambda: len(aoe.Store(url).list_runs(FONT)), size)
                none = f"{t:.2f} s, {n:,} requests"
            firsts = []
            for _ in range(args.repeats):
                new_machine()
                firsts.append(measured(lambda: len(aoe.Store(url).list_runs(FONT)), size))
            warm_store = aoe.Store(url)
            warm_store.list_runs(FONT)
            warm = [measured(lambda: len(warm_store.list_runs(FONT)), size) for _ in range(args.repeats)]
            fresh = [measured(lambda: len(aoe.Store(url).list_runs(FONT)), size) for _ in range(args.repeats)]
            argv = [sys.executable, "-m", "aoe", "store", "--root", url, "ls", FONT, "--json"]
            process = []
            for _ in range(args.repeats):
                began = time.perf_counter()
                subprocess.run(argv, check=True, capture_output=True)
                process.append(time.perf_counter() - began)

            def shown(results: list[tuple[float, int]]) -> str:
                return f"{statistics.median(t for t, _ in results):.2f} s, {statistics.median(n for _, n in results):,.0f} requests"

            print(f"| {size:,} | {none} | {shown(firsts)} | {shown(warm)} | {shown(fresh)} | "
                  f"{statistics.median(process):.2f} s |   (built and pushed in {setup:.0f} s)", flush=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
