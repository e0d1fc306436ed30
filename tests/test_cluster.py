"""A real SeaweedFS cluster on loopback losing a volume server while a team works: one
master, three volume servers with replication 001 (each piece on two of them), a filer
and its S3 gateway. Four trainers save into two fonts while one volume server is killed
with SIGKILL and later restarted; then a gc runs while two more trainers save."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from s3server import SeaweedCluster
from writer import expected_weights

import aoe
from aoe.fsck import fsck
from aoe.gc import collect_garbage

pytestmark = [pytest.mark.slow, pytest.mark.s3, pytest.mark.processes]
WRITER = Path(__file__).with_name("writer.py")
MB = 0.05


@pytest.fixture
def cluster(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):  # type: ignore[no-untyped-def]
    cluster = SeaweedCluster.start(tmp_path / "cluster")
    for key, value in cluster.environment().items():
        monkeypatch.setenv(key, value)
    try:
        yield cluster
    finally:
        cluster.stop()


def trainers(url: str, fonts: list[str], first: int, count: int, tmp_path: Path) -> list[subprocess.Popen[str]]:
    """Two trainer processes per font, each its own machine (its own cache)."""
    processes = []
    for number, font in enumerate(fonts * 2):
        env = {**os.environ, "AOE_CACHE_DIR": str(tmp_path / f"trainer-{first}-{number}")}
        processes.append(subprocess.Popen(
            [sys.executable, str(WRITER), url, font, str(first + 1000 * number), str(count), "--mb", str(MB),
             "--keep-going"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env))
    return processes


def reports(processes: list[subprocess.Popen[str]], fonts: list[str]) -> tuple[dict[str, dict[str, int]], list[str]]:
    """What the trainers said: runs saved (font -> run id -> seed) and failures (lines)."""
    saved: dict[str, dict[str, int]] = {font: {} for font in fonts}
    failed = []
    for number, process in enumerate(processes):
        out, err = process.communicate(timeout=600)
        assert process.returncode == 0, err[-3000:]
        font = (fonts * 2)[number]
        seeds = iter(range(int(process.args[4]), 10**9))  # [python, writer.py, url, font, first, ...]
        for line in out.splitlines():
            seed = next(seeds)
            if line.startswith("failed "):
                failed.append(line)
                assert line.startswith(f"failed {seed}: ") and len(line) > len(f"failed {seed}: ") + 10
            else:
                saved[font][line] = seed
    return saved, failed


def test_a_volume_server_killed_and_restarted_loses_no_saved_run(cluster: SeaweedCluster, tmp_path: Path) -> None:
    url = cluster.url("team")
    store = aoe.Store(url)
    fonts = [store.create_font("fruity"), store.create_font("dumb")]
    writers = trainers(url, fonts, 0, 40, tmp_path)
    deadline = time.monotonic() + 120
    while sum(store.count_runs(font) for font in fonts) < 20 and time.monotonic() < deadline:
        time.sleep(0.2)  # the trainers are under way
    before = sum(store.count_runs(font) for font in fonts)
    cluster.kill_volume(1)
    time.sleep(5)
    during = sum(store.count_runs(font) for font in fonts) - before
    cluster.start_volume(1)
    saved, failed = reports(writers, fonts)
    total = sum(map(len, saved.values()))
    print(f"{before} runs saved before the kill, {during} while the server was down, {total} in all; "
          f"{len(failed)} saves failed: {failed[:3]}")
    assert before > 0 and during > 0  # the kill happened mid-training (trainers may finish before the restart)

    for font in fonts:  # a failed save published nothing: the store holds exactly what was reported saved
        assert [i.run_id for i in store.list_runs(font)] == sorted(saved[font])
        for run_id, seed in saved[font].items():
            weights, vector, _ = store.load_model(font, run_id)
            expected = expected_weights(seed, MB)
            assert all(torch.equal(weights[name], expected[name]) for name in expected), (font, run_id)
            assert vector.tolist() == [float(seed)]
    report = fsck(store, read_data=True)
    assert report.clean, report.errors

    more = trainers(url, fonts, 100_000, 8, tmp_path)  # gc while two fonts are being trained
    time.sleep(1)
    collect_garbage(store, grace=0)
    collect_garbage(store, grace=0)  # the second phase: what the first set aside and nobody needed
    later, _ = reports(more, fonts)
    for font in fonts:
        for run_id, seed in {**saved[font], **later[font]}.items():
            weights, _, _ = store.load_model(font, run_id)
            assert torch.equal(weights["head.weight"], expected_weights(seed, MB)["head.weight"])
    assert fsck(aoe.Store(url), read_data=True).clean
