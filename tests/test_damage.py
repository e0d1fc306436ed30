"""Fault injection, many rounds: writers killed with SIGKILL at random moments, then
bytes flipped and objects truncated at random. After each round fsck must report
exactly the damaged objects, and every run that none of them touches must load bit
for bit."""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest
import torch
from test_concurrency import start_writer
from writer import expected_weights

import aoe
from aoe.fsck import fsck
from aoe.layout import object_key
from aoe.manifests import unpack


def needed_by_run(store: aoe.Store, font: str, run_id: str) -> set[str]:
    digest = store.refs.read_run(font, run_id)
    return {digest, *unpack(store.objects.get(digest)).digests()}


def damage(path: Path, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    if rng.random() < 0.5:
        data[rng.randrange(len(data))] ^= 1 << rng.randrange(8)
        how = "flipped"
    else:
        data = data[: rng.randrange(len(data))]
        how = "truncated"
    path.write_bytes(bytes(data))
    return how


@pytest.mark.parametrize("round_", range(6))
def test_fsck_names_exactly_the_damage_and_the_rest_loads(tmp_path: Path, round_: int) -> None:
    rng = random.Random(1000 + round_)
    store = aoe.Store(tmp_path / "networks")
    font = store.create_font("fruity")

    # A writer killed at a random moment of its saves: some runs whole, maybe one cut short.
    writer = start_writer(store.root, font, 10 * round_, 40, "--mb", "4")
    assert writer.stdout.readline(), writer.stderr.read()
    time.sleep(rng.uniform(0.0, 0.5))
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()

    runs = {info.run_id: info.params["seed"] for info in store.list_runs(font)}
    needs = {run_id: needed_by_run(store, font, run_id) for run_id in runs}
    in_use = sorted(set().union(*needs.values()))
    damaged = set(rng.sample(in_use, k=min(len(in_use), rng.randint(1, 4))))
    for digest in damaged:
        damage(store.backend.path(object_key(digest)), rng)

    report = fsck(store, read_data=True)
    assert sorted(f.object for f in report.errors) == sorted(damaged)
    assert {f.kind for f in report.errors} == {"corrupt-object"}
    manifests = {run_id: store.refs.read_run(font, run_id) for run_id in runs}
    for finding in report.errors:  # each names every run it breaks whose manifest can be read
        named = {
            f"{font}/{run_id}" for run_id, need in needs.items()
            if finding.object in need and (manifests[run_id] not in damaged or manifests[run_id] == finding.object)
        }
        assert set(finding.runs) == named

    for run_id, seed in runs.items():
        if needs[run_id] & damaged:
            with pytest.raises(aoe.CorruptObjectError):
                weights, _, _ = store.load_model(font, run_id)
                store.load_feedback(font, run_id)
        else:
            weights = store.load_model(font, run_id).weights
            for key, tensor in expected_weights(seed, 4).items():
                assert torch.equal(weights[key], tensor)
            assert store.load_feedback(font, run_id) == {"seed": seed}
