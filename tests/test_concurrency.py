"""Real processes: many writers at once, and writers killed with SIGKILL mid-save."""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from writer import expected_weights

import aoe
from aoe.names import parse_digest
from aoe.objects import ObjectStore

WRITER = str(Path(__file__).with_name("writer.py"))


def start_writer(root: Path, font: str, first: int, count: int, *flags: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, WRITER, str(root), font, str(first), str(count), *flags],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )


def check_every_run(store: aoe.Store) -> int:
    """Every published run loads, bit for bit as its writer made it; returns the count."""
    count = 0
    for font in store.list_fonts():
        for info in store.list_runs(font):
            seed, megabytes = info.params["seed"], info.params["mb"]
            weights, vector, _ = store.load_model(font, info.run_id)
            for key, tensor in expected_weights(seed, megabytes).items():
                assert torch.equal(weights[key], tensor), (info.run_id, key)
            assert vector.tolist() == [float(seed)]
            assert store.load_feedback(font, info.run_id) == {"seed": seed}
            count += 1
    return count


def check_every_object_is_whole(store: aoe.Store) -> None:
    """No object under its final name is partial: each decodes to its address."""
    objects = ObjectStore(store.backend)
    for key in store.backend.list(".objects"):
        objects.get(parse_digest(key.rsplit("/", 1)[1]))


def test_many_processes_saving_at_once_never_collide(tmp_path: Path) -> None:
    store = aoe.Store(tmp_path / "networks")
    fruity, dumb = store.create_font("fruity"), store.create_font("dumb")
    writers = [start_writer(store.root, fruity, 100 * i, 5, "--same-moment") for i in range(3)]
    writers.append(start_writer(store.root, dumb, 900, 5))
    outputs = [w.communicate(timeout=300) for w in writers]
    assert all(w.returncode == 0 for w in writers), [err for _, err in outputs]
    same_moment_ids = [line for out, _ in outputs[:3] for line in out.split()]
    assert len(same_moment_ids) == len(set(same_moment_ids)) == 15
    assert sorted(same_moment_ids) == [i.run_id for i in store.list_runs(fruity)]
    assert {i[-4:] for i in same_moment_ids} == {f"{n:04d}" for n in range(15)}
    assert check_every_run(store) == 20
    check_every_object_is_whole(store)


def test_processes_creating_fonts_at_once_get_distinct_numbers(tmp_path: Path) -> None:
    root = tmp_path / "networks"
    code = "import aoe, sys; print(aoe.Store(sys.argv[1]).create_font(sys.argv[2]))"
    names = [f"font{i}" for i in range(6)]
    procs = [subprocess.Popen([sys.executable, "-c", code, str(root), name], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for name in names]
    created = [p.communicate(timeout=120)[0].strip() for p in procs]
    numbers = sorted(int(font_id.split("-")[0]) for font_id in created)
    assert numbers == list(range(1, 7))
    assert sorted(aoe.Store(root).list_fonts()) == sorted(created)


def test_processes_claiming_the_same_font_id_have_one_winner(tmp_path: Path) -> None:
    root = tmp_path / "networks"
    code = (
        "import aoe, sys\n"
        "try: print(aoe.Store(sys.argv[1]).create_font('5-same'))\n"
        "except aoe.FontExistsError: print('refused')\n"
    )
    procs = [subprocess.Popen([sys.executable, "-c", code, str(root)], stdout=subprocess.PIPE, text=True)
             for _ in range(4)]
    results = sorted(p.communicate(timeout=120)[0].strip() for p in procs)
    assert results == ["5-same", "refused", "refused", "refused"]


@pytest.mark.parametrize("round_", range(8))
def test_kill_9_at_a_random_moment_leaves_whole_runs_or_none(tmp_path: Path, round_: int) -> None:
    store = aoe.Store(tmp_path / "networks")
    font = store.create_font("fruity")
    rng = random.Random(round_)
    writer = start_writer(store.root, font, 1000 * round_, 50, "--mb", "12")
    # Wait for torch to load in the writer, then kill it somewhere inside its saves.
    first_line = writer.stdout.readline()  # one run is published: saving is under way
    assert first_line, writer.stderr.read()
    time.sleep(rng.uniform(0.0, 0.6))
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    assert writer.returncode == -signal.SIGKILL
    assert check_every_run(store) >= 1
    check_every_object_is_whole(store)
