"""A bucket's font that trainers filled and nobody listed: 4 writer processes save runs
through the real write path (each sharing its rows in listing segments), never listing;
then a new machine lists the font. Seconds and S3 requests of that first listing, and the
requests a save sends with and without segments.

    python benchmarks/bench_s3_writers.py [--sizes 1000,10000] [--repeats 3]

A SeaweedFS server (``weed mini``) on 127.0.0.1 of the same machine. Requests are counted
in the S3 backend (every ListObjectsV2, GET, HEAD, PUT and DELETE it sends).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import time

import torch
from bench_s3_listing import counting, measured, requests, started

import aoe
from aoe.layout import LISTINGS

WRITERS = 4


def write(url: str, font: str, start: int, count: int, segments: bool) -> None:
    """One trainer: ``count`` saves, never a listing; prints the requests it sent."""
    counting()
    store = aoe.Store(url)
    if not segments:
        store.pending_rows = None
    weights = {"w": torch.ones(4)}
    for i in range(start, start + count):
        store.save_model(font, weights, params={"i": i, "lr": 10 ** -(i % 4)}, tags=["serif"] if i % 3 else [],
                         feedback={"final_loss": 1 / (i + 1)}, name=f"run {i}")
    store.close()
    print(sum(requests.values()), flush=True)


def writers(url: str, font: str, start: int, count: int, segments: bool = True) -> int:
    """:data:`WRITERS` trainer processes at once, ``count`` saves in all; their requests."""
    share = count // WRITERS
    procs = [subprocess.Popen([sys.executable, __file__, "--writer", url, font, str(start + k * share), str(share),
                               "1" if segments else "0"], stdout=subprocess.PIPE, text=True) for k in range(WRITERS)]
    outputs = [proc.communicate()[0] for proc in procs]
    assert all(proc.returncode == 0 for proc in procs)
    return sum(int(out.split()[-1]) for out in outputs)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000,10000")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--skip-removed", action="store_true", help="skip the slow listing with segments removed")
    parser.add_argument("--writer", nargs=5, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.writer:
        url, font, start, count, segments = args.writer
        write(url, font, int(start), int(count), segments == "1")
        return
    work, server, new_machine = started("aoe-bench-s3-writers-", args.dir)
    try:
        print(f"SeaweedFS on 127.0.0.1 (weed mini), {os.cpu_count()} cores, aoe {aoe.__version__}; "
              f"{WRITERS} writer processes")
        url = server.url("saves")
        new_machine()
        font = aoe.Store(url).create_font("requests")
        per_save = {flag: writers(url, font, 100_000 * flag, 400, flag) / 400 for flag in (False, True)}
        print(f"requests a save sends: {per_save[False]:.2f} without segments, {per_save[True]:.2f} with "
              f"(+{per_save[True] - per_save[False]:.2f})")
        print("| runs | saved by 4 writers in | a new machine's first listing | the same, segments removed |")
        print("|---|---|---|---|")
        for size in (int(s) for s in args.sizes.split(",")):
            url = server.url(f"font-{size}")
            new_machine()
            font = aoe.Store(url).create_font("fruity")
            began = time.perf_counter()
            writers(url, font, 0, size)
            saving = time.perf_counter() - began
            store = aoe.Store(url)
            assert not [k for k in store.backend.list(LISTINGS) if "/segments/" not in k]  # nobody listed
            firsts = []
            for _ in range(args.repeats):
                new_machine()
                firsts.append(measured(lambda: len(aoe.Store(url).list_runs(font)), size))
            without = "-"
            if not args.skip_removed:
                for key in list(store.backend.list(LISTINGS)):
                    store.backend.delete(key)
                new_machine()
                t, n = measured(lambda: len(aoe.Store(url).list_runs(font)), size)
                without = f"{t:.2f} s, {n:,} requests"
            first = f"{statistics.median(t for t, _ in firsts):.2f} s, {statistics.median(n for _, n in firsts):,.0f} requests"
            print(f"| {size:,} | {saving:.0f} s | {first} | {without} |", flush=True)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
