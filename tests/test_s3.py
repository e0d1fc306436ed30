"""A store on a real S3-compatible server (SeaweedFS on 127.0.0.1): the same guarantees
as a folder, the read cache, two-phase gc, many writers and faults."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import make_png, run_cli
from s3server import SeaweedServer

import aoe
from aoe.backends.cache import ObjectCache
from aoe.backends.s3 import S3Backend
from aoe.codec import hash_bytes
from aoe.errors import InvalidNameError, StorageError, StoreMissingError
from aoe.fsck import fsck
from aoe.gc import collect_garbage
from aoe.layout import object_key, pending_key

WRITER = Path(__file__).with_name("writer.py")


def weights(seed: int, count: int = 50_000) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return {"layer.weight": torch.randn(count, generator=generator), "layer.bias": torch.randn(8, generator=generator)}


def test_a_store_on_s3_works_like_a_folder(s3_store: aoe.Store) -> None:
    with pytest.raises(StoreMissingError, match="no store at s3://"):
        s3_store.list_fonts()
    font = s3_store.create_font("fruity")
    first = s3_store.save_model(font, weights(1), [1.0, 2.0], sample_image=make_png(100),
                                eval_glyphs={"A": make_png(1), "B": make_png(2)}, feedback={"loss": 0.5},
                                params={"lr": 0.1})
    second = s3_store.save_model(font, weights(2), [3.0, 4.0], params={"lr": 0.2})
    assert s3_store.list_fonts() == [font]
    assert [r.run_id for r in s3_store.list_runs(font)] == [first, second]
    assert [r.run_id for r in s3_store.list_runs(font, where=["params.lr>0.15"])] == [second]
    loaded = s3_store.load_model(font, first)
    assert all(torch.equal(loaded.weights[k], v) for k, v in weights(1).items())
    assert s3_store.load_glyphs(font, first) == {"A": make_png(1), "B": make_png(2)}
    s3_store.tag_run(font, first, add=["best"])
    assert s3_store.get_run_info(font, first).tags == ("best",)
    s3_store.delete_run(font, second)
    assert [r.run_id for r in s3_store.list_runs(font)] == [first]
    s3_store.restore_run(font, second)
    report = fsck(s3_store, read_data=True)
    assert report.clean and report.objects_read == report.objects > 0


def test_a_second_machine_sees_the_same_store(s3_store: aoe.Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    font = s3_store.create_font("fruity")
    run = s3_store.save_model(font, weights(1))
    monkeypatch.setenv("AOE_CACHE_DIR", str(tmp_path / "other-machine"))
    other = aoe.Store(s3_store.root)
    assert [r.run_id for r in other.list_runs(font)] == [run]
    assert torch.equal(other.load_model(font).weights["layer.weight"], weights(1)["layer.weight"])


def test_listed_tokens_are_the_ones_botocores_own_time_parser_gives(s3_url: str) -> None:
    """Listings parse LastModified with the standard library (botocore's dateutil was most of
    a listing's time); a ref's token must stay exactly what older aoe wrote in snapshots."""
    import boto3

    store = aoe.Store(s3_url)
    font = store.create_font("fruity")
    store.save_model(font, weights(1, 4))
    bucket, _, prefix = s3_url.removeprefix("s3://").partition("/")
    plain = boto3.client("s3", endpoint_url=os.environ["AOE_S3_ENDPOINT"])  # botocore's parser
    page = plain.list_objects_v2(Bucket=bucket, Prefix=f"{prefix}/{font}/runs/", Delimiter="/")
    expected = {item["Key"].rsplit("/", 1)[1]: f"{item['ETag']}:{item['LastModified'].timestamp()}:{item['Size']}"
                for item in page["Contents"]}
    assert store.backend.list_versions(f"{font}/runs") == expected and len(expected) == 2  # the run, the change note


def test_objects_are_read_from_the_cache_and_a_damaged_entry_heals(s3_store: aoe.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    font = s3_store.create_font("fruity")
    s3_store.save_model(font, weights(1))
    s3_store.load_model(font)  # fills the cache
    reads: list[str] = []
    server = s3_store.backend.inner  # the S3 backend under the caching wrapper
    real_read = server.read
    monkeypatch.setattr(server, "read", lambda key, **kw: reads.append(key) or real_read(key, **kw))
    s3_store.load_model(font)
    assert not [k for k in reads if k.startswith(".objects/")]  # every object came from the cache
    victim = next(s3_store.backend.cache.folder.glob("*/*"))
    victim.write_bytes(victim.read_bytes()[:-1] + b"\x00")  # damage one cached copy
    assert torch.equal(s3_store.load_model(font).weights["layer.weight"], weights(1)["layer.weight"])
    assert object_key(victim.name) in reads  # fetched again from the server
    assert s3_store.objects.verify(victim.name) > 0  # and the cache holds a good copy again
    assert s3_store.backend.cache.get(victim.name) is not None


def test_the_cache_stays_within_its_bound(tmp_path: Path) -> None:
    cache = ObjectCache(tmp_path / "cache", max_bytes=1_000_000)
    for i in range(30):
        data = os.urandom(100_000)
        cache.put(hash_bytes(data), data)
        if i == 0:
            first = hash_bytes(data)
        entry = cache.folder / hash_bytes(data)[:2] / hash_bytes(data)
        if entry.exists():  # use order by explicit mtimes: a file's own can lag the clock by ms
            os.utime(entry, (1_000_000 + i, 1_000_000 + i))
    total = sum(p.stat().st_size for p in (tmp_path / "cache").glob("*/*"))
    assert 0 < total <= 1_000_000
    assert cache.get(first) is None  # the least recently used went first
    cache.put(hash_bytes(b"x" * 400_000), b"x" * 400_000)  # over a quarter of the bound: not kept
    assert cache.get(hash_bytes(b"x" * 400_000)) is None


def test_gc_sets_aside_then_purges(s3_store: aoe.Store) -> None:
    font = s3_store.create_font("fruity")
    keep = s3_store.save_model(font, weights(1))
    gone = s3_store.save_model(font, weights(2))
    unique = [d for d in s3_store.open_run(font, gone).manifest.digests()]
    s3_store.delete_run(font, gone)
    time.sleep(1.1)  # HTTP dates have whole seconds: let the objects be older than "now"
    first = collect_garbage(s3_store, grace=0)
    assert first.set_aside >= 2 and first.swept == 0  # a pack of its tensors, its manifest
    assert all(s3_store.backend.exists(pending_key(d)) and not s3_store.backend.exists(object_key(d))
               for d in unique if d not in set(s3_store.open_run(font, keep).manifest.digests()))
    time.sleep(1.1)  # the stamps must be older than the grace period by the server's clock
    second = collect_garbage(s3_store, grace=0)
    assert second.swept == first.set_aside and second.freed_bytes > 0
    assert not list(s3_store.backend.list(".gc-pending"))
    assert fsck(s3_store, read_data=True).clean
    assert torch.equal(s3_store.load_model(font, keep).weights["layer.weight"], weights(1)["layer.weight"])
    assert second.runs_purged == [f"{font}/{gone}"]  # the run's data is gone: its record says so
    [record] = s3_store.refs.trashed(font)
    assert record.run_id == gone and record.purged_at is not None
    assert collect_garbage(s3_store, grace=0).runs_purged == []  # recorded once


def test_a_save_that_reused_an_object_gc_set_aside_gets_it_back(s3_store: aoe.Store, monkeypatch: pytest.MonkeyPatch) -> None:
    """A writer finds an old unreachable object present and reuses it; gc sets it aside
    before the writer's ref exists. The save puts it back; gc, seeing the save in
    progress, purges nothing meanwhile."""
    font = s3_store.create_font("fruity")
    s3_store.delete_run(font, s3_store.save_model(font, weights(7)))  # weights(7): unreachable now
    time.sleep(1.1)
    reports = []
    original = aoe.transaction.Transaction.publish

    def gc_first(self, *args, **kwargs):  # type: ignore[no-untyped-def]  # other machines' gcs, between dedup and ref
        reports.append(collect_garbage(aoe.Store(s3_store.root), grace=0))
        time.sleep(1.1)
        reports.append(collect_garbage(aoe.Store(s3_store.root), grace=0))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(aoe.transaction.Transaction, "publish", gc_first)
    run = s3_store.save_model(font, weights(7))
    monkeypatch.undo()
    assert reports[0].set_aside >= 2 and reports[1].swept == 0  # the live save blocked every purge
    assert torch.equal(aoe.Store(s3_store.root, cache_bytes=0).load_model(font, run).weights["layer.weight"],
                       weights(7)["layer.weight"])
    assert fsck(s3_store, read_data=True).clean
    after = collect_garbage(s3_store, grace=0)
    assert (after.restored == 0 and not [k for k in s3_store.backend.list(".gc-pending") if not k.endswith(".moved")]) \
        or after.restored > 0
    assert fsck(s3_store, read_data=True).clean


def test_many_writers_on_many_machines_land_every_run_once(s3_store: aoe.Store, tmp_path: Path) -> None:
    fonts = [s3_store.create_font("fruity"), s3_store.create_font("bold")]
    processes = []
    for writer in range(4):
        env = {**os.environ, "AOE_CACHE_DIR": str(tmp_path / f"machine-{writer}")}
        for font in fonts:
            processes.append(subprocess.Popen(
                [sys.executable, str(WRITER), s3_store.root, font, str(100 * writer), "3", "--same-moment"],
                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True))
    for process in processes:
        out, err = process.communicate(timeout=300)
        assert process.returncode == 0, err
    for font in fonts:
        runs = s3_store.list_runs(font)
        assert len(runs) == 12 and len({r.run_id for r in runs}) == 12
        assert sorted(r.params["seed"] for r in runs) == sorted(100 * w + i for w in range(4) for i in range(3))
    assert fsck(s3_store, read_data=True).clean


def test_a_damaged_object_on_the_server_is_named_by_fsck(s3_store: aoe.Store, seaweed: SeaweedServer) -> None:
    font = s3_store.create_font("fruity")
    s3_store.save_model(font, weights(1))
    s3_store.load_model(font)  # the cache holds good copies: fsck must check the server's
    digest = s3_store.open_run(font).manifest.weights["layer.weight"].blob.chunks[0]
    key = f"{s3_store.backend.prefix}/{object_key(digest)}"
    client = seaweed.client()
    stored = bytearray(client.get_object(Bucket=s3_store.backend.bucket, Key=key)["Body"].read())
    stored[-1] ^= 0xFF
    client.put_object(Bucket=s3_store.backend.bucket, Key=key, Body=bytes(stored))
    report = fsck(s3_store, read_data=True)
    assert [f.object for f in report.errors] == [digest] and report.errors[0].kind == "corrupt-object"


def test_large_contents_go_up_in_parts_and_unfinished_uploads_are_temp_files(s3_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import aoe.backends.s3

    monkeypatch.setattr(aoe.backends.s3, "MULTIPART_THRESHOLD", 6 * 1024 * 1024)
    monkeypatch.setattr(aoe.backends.s3, "PART_SIZE", 5 * 1024 * 1024)
    backend = S3Backend(s3_url)
    data = os.urandom(12 * 1024 * 1024 + 5)
    assert backend.write("big", [data[:1000], data[1000:]], exclusive=True)
    assert backend.read("big") == data
    assert not backend.write("big", [data], exclusive=True)  # create-only holds for parts too
    upload = backend.client.create_multipart_upload(Bucket=backend.bucket, Key=backend._key("left"))["UploadId"]
    leftovers = list(backend.temp_files())
    assert [name for name, _ in leftovers] == [f"left#upload={upload}"]
    backend.remove_temp(leftovers[0][0])
    assert list(backend.temp_files()) == []
    with pytest.raises(InvalidNameError):
        backend.remove_temp("left")


def test_a_lock_whose_holder_died_expires_and_a_live_one_is_renewed(s3_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import aoe.backends.s3

    monkeypatch.setattr(aoe.backends.s3, "LOCK_TTL", 1.0)
    monkeypatch.setattr(aoe.backends.s3, "LOCK_POLL", 0.1)
    backend = S3Backend(s3_url)
    assert backend._acquire(".locks/gc", wait=False)  # taken, never released: a crashed holder
    with backend.lock("gc", wait=False) as acquired:
        assert not acquired
    time.sleep(2.2)
    with backend.lock("gc", wait=False) as acquired:
        assert acquired  # expired, taken over
        time.sleep(2.5)  # held past its TTL: the lease keeps it
        with S3Backend(s3_url).lock("gc", wait=False) as other:
            assert not other
    with backend.lock("gc", wait=True) as again:
        assert again


def test_bad_credentials_missing_buckets_and_bad_urls_are_clear_errors(s3_url: str, seaweed: SeaweedServer,
                                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "wrong-secret-value")
    with pytest.raises(StorageError, match="refused.*check the credentials") as caught:
        aoe.Store(s3_url).list_fonts()
    assert "wrong-secret-value" not in str(caught.value)
    monkeypatch.undo()
    with pytest.raises(StoreMissingError, match="no bucket 'no-such-bucket'"):
        aoe.Store("s3://no-such-bucket/x").create_font("fruity")
    with pytest.raises(InvalidNameError):
        aoe.Store("s3:///nobucket")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    with pytest.raises(StorageError, match="cannot reach"):
        aoe.Store(s3_url, endpoint="http://127.0.0.1:9").list_fonts()


def test_the_cli_works_on_s3(s3_url: str, capsys: pytest.CaptureFixture[str], tmp_path: Path, model) -> None:
    code, out, _ = run_cli(capsys, "store", "--root", s3_url, "create-font", "fruity")
    assert code == 0 and "1-fruity" in out
    (tmp_path / "run").mkdir()
    torch.save(model.state_dict(), tmp_path / "run" / "weights.pt")
    code, out, err = run_cli(capsys, "store", "--root", s3_url, "put", "1-fruity", str(tmp_path / "run"))
    assert code == 0, err
    code, out, err = run_cli(capsys, "store", "--root", s3_url, "get", "1-fruity", str(tmp_path / "back"))
    assert code == 0, err
    assert torch.equal(torch.load(tmp_path / "back" / "weights.pt", weights_only=True)["body.0.weight"],
                       model.state_dict()["body.0.weight"])
    code, out, _ = run_cli(capsys, "store", "--root", s3_url, "ls", "1-fruity", "--json")
    assert code == 0 and out.count('"run_id"') == 1
    code, out, _ = run_cli(capsys, "store", "--root", s3_url, "fsck", "--read-data")
    assert code == 0


def test_a_save_interrupted_by_the_server_stopping_fails_cleanly_and_can_be_retried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    server = SeaweedServer.start(tmp_path / "server")
    try:
        for key, value in server.environment().items():
            monkeypatch.setenv(key, value)
        monkeypatch.setenv("AWS_MAX_ATTEMPTS", "2")
        store = aoe.Store(server.url("faults"))
        font = store.create_font("fruity")
        puts = []
        real_write = store.backend.write

        def stop_midway(key, parts, *, exclusive, durable=True):
            puts.append(key)
            if len(puts) == 3:
                server.stop()
            return real_write(key, parts, exclusive=exclusive, durable=durable)

        monkeypatch.setattr(store.backend, "write", stop_midway)
        big = {"w": torch.randn(3 * 1024 * 1024)}  # 12 MB: two chunks and more
        with pytest.raises(StorageError, match="cannot reach|server answered 5"):  # refused, or 500 while stopping
            store.save_model(font, big)
        monkeypatch.undo()
        for key, value in server.environment().items():
            monkeypatch.setenv(key, value)
        server.launch()
        store = aoe.Store(server.url("faults"))
        assert store.list_runs(font) == []  # nothing published
        run = store.save_model(font, big)
        assert torch.equal(store.load_model(font, run).weights["w"], big["w"])
        report = fsck(store, read_data=True)
        assert report.clean
    finally:
        server.stop()


def test_saves_on_other_machines_during_zero_grace_gcs_never_lose_an_object(s3_store: aoe.Store, tmp_path: Path) -> None:
    """As on a local disk (test_gc.py), but on S3 with its two-phase gc: writer processes,
    each with its own cache, save runs whose objects exist unreachable and old, while gc
    runs over and over with no grace period. Garbage nobody uses must go."""
    from test_concurrency import check_every_object_is_whole, check_every_run
    from writer import expected_weights

    font = s3_store.create_font("fruity")
    seeds = [[100 * w + i for i in range(4)] for w in range(3)]
    for seed in (s for group in seeds for s in group):
        run_id = s3_store.save_model(font, expected_weights(seed, 0.5), [float(seed)], feedback={"seed": seed},
                                     params={"seed": seed, "mb": 0.5})
        s3_store.delete_run(font, run_id)
    untouched = [s3_store.objects.put(os.urandom(1000)) for _ in range(10)]
    time.sleep(1.1)
    writers = [subprocess.Popen(
        [sys.executable, str(WRITER), s3_store.root, font, str(group[0]), str(len(group)), "--mb", "0.5"],
        env={**os.environ, "AOE_CACHE_DIR": str(tmp_path / f"machine-{i}")},
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i, group in enumerate(seeds)]
    for writer in writers:  # every writer is in the middle of its saves before gc starts
        assert writer.stdout.readline(), writer.stderr.read()
    reports = []
    while True:
        reports.append(collect_garbage(aoe.Store(s3_store.root), grace=0))
        if all(w.poll() is not None for w in writers) and len(reports) >= 2:
            break
        time.sleep(0.5)
    outputs = [w.communicate() for w in writers]
    assert all(w.returncode == 0 for w in writers), [err for _, err in outputs]
    for _ in range(2):  # no save in progress now: what is still unreachable goes, what is needed comes back
        time.sleep(1.1)
        reports.append(collect_garbage(s3_store, grace=0))
    assert sum(r.set_aside for r in reports) > 0 and sum(r.swept for r in reports) > 0
    assert check_every_run(aoe.Store(s3_store.root, cache_bytes=0)) == 12
    check_every_object_is_whole(s3_store)
    assert not any(s3_store.objects.has(d) for d in untouched)
    assert fsck(s3_store, read_data=True).clean


def test_the_cache_size_comes_from_the_environment(s3_url: str, monkeypatch: pytest.MonkeyPatch,
                                                   capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import run_cli

    monkeypatch.setenv("AOE_CACHE_BYTES", "2G")
    assert aoe.Store(s3_url).backend.cache.max_bytes == 2 * 1024**3
    monkeypatch.setenv("AOE_CACHE_BYTES", "0")
    assert not hasattr(aoe.Store(s3_url).backend, "cache")  # no cache: the S3 backend itself
    monkeypatch.setenv("AOE_CACHE_BYTES", "lots")
    code, _, err = run_cli(capsys, "store", "--root", s3_url, "ls")
    assert code == 2 and "AOE_CACHE_BYTES='lots' is not a size" in err


def test_a_font_page_on_s3_charts_personality_and_glyphs(s3_store: aoe.Store, tmp_path: Path,
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    from aoe.web import Browser

    font = s3_store.create_font("fruity")
    runs = [s3_store.save_model(font, {"w": torch.ones(2)}, [float(i), -float(i), 1.0], make_png(i), {"A": make_png(9)},
                                {"final_loss": 1 / (i + 1), "glyph_loss": {"A": 0.1 * i}}) for i in range(4)]
    monkeypatch.setenv("AOE_CACHE_DIR", str(tmp_path / "other-machine"))  # another machine: its vectors are read in parallel
    other = aoe.Store(s3_store.root)
    vectors = other.personality_series(font)
    assert [vectors[r].tolist() for r in runs] == [[float(i), -float(i), 1.0] for i in range(4)]  # type: ignore[union-attr]
    html = Browser(other).respond(f"/font/{font}")[2].decode()
    assert html.count('class="dot"') == 4 and 'id="glyph-losses"' in html and "Glyph A across runs (4 shown)" in html
