"""Real processes racing on one store: movers of one alias, and forget racing trainers
saving and a gc collecting."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from test_concurrency import check_every_run, start_writer

import aoe
from aoe.fsck import fsck

RACER = str(Path(__file__).with_name("racer.py"))


def racer(root: object, font: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, RACER, str(root), font, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)


@pytest.mark.parametrize("where", ["local", "s3"])
def test_processes_moving_one_alias_lose_no_move(tmp_path: Path, where: str, request: pytest.FixtureRequest) -> None:
    """Three processes move `best` 25 times each, each from where it saw it: every move one
    of them reports made is in the alias's history, once, in the order of its number; the
    others were told of the conflict; the history has no gap."""
    store = aoe.Store(request.getfixturevalue("s3_url") if where == "s3" else tmp_path / "networks")
    font = store.create_font("fruity")
    for seed in range(5):
        store.save_model(font, {"seed": seed})
    movers = [racer(store.root, font, "move", "best", "25") for _ in range(3)]
    outputs = [mover.communicate(timeout=300) for mover in movers]
    assert all(mover.returncode == 0 for mover in movers), [err for _, err in outputs]
    lines = [line.split() for out, _ in outputs for line in out.splitlines()]
    moved = {int(line[1]): line[2] for line in lines if line[0] == "moved"}
    assert len(moved) == sum(line[0] == "moved" for line in lines)  # no move number reported twice
    assert len(lines) == 75 and moved
    history = store.alias_history(font, "best")
    assert [move.move for move in history] == list(range(1, len(history) + 1)) == sorted(moved)
    assert all(history[number - 1].run_id == run_id for number, run_id in moved.items())
    assert fsck(store).clean


def test_forget_racing_saves_and_a_gc_loses_no_run_it_should_keep(tmp_path: Path) -> None:
    """Two trainers save 12 runs each while one process forgets (--keep-last 3, again and
    again) and another collects garbage (grace 0): every run a trainer reported is there
    or in the trash, never half gone; the 3 newest and the aliased run are there at the
    end; every run there loads bit for bit; fsck is clean."""
    store = aoe.Store(tmp_path / "networks")
    font = store.create_font("fruity")
    writers = [start_writer(store.root, font, 100 * i, 12) for i in (1, 2)]
    first = writers[0].stdout.readline().strip()  # type: ignore[union-attr]
    store.set_alias(font, "production", first)
    forgetter, collector = racer(store.root, font, "forget", "12"), racer(store.root, font, "gc", "12")
    saved = [first] + [line.strip() for writer in writers for line in writer.communicate(timeout=300)[0].splitlines()]
    assert all(writer.returncode == 0 for writer in writers)
    forgetting, collecting = forgetter.communicate(timeout=300), collector.communicate(timeout=300)
    assert forgetter.returncode == 0 and collector.returncode == 0, (forgetting[1], collecting[1])
    forgotten = [line.split()[1] for line in forgetting[0].splitlines()]
    purged = [run for line in collecting[0].splitlines() for run in line.split()[1:]]
    assert len(saved) == 24
    there = {info.run_id for info in store.list_runs(font)}
    trashed = {record.run_id: record for record in store.trashed(font)}
    assert set(saved) == there | set(trashed) and not there & set(trashed)
    assert set(forgotten) == set(trashed) and first in there
    assert set(sorted(saved)[-3:]) <= there
    assert set(purged) <= {f"{font}/{r}" for r, rec in trashed.items() if rec.purged_at}  # "FONT/RUN" each
    assert check_every_run(store) == len(there)
    assert fsck(store, read_data=True).clean
    for run_id, record in trashed.items():  # a forgotten run no gc purged comes back whole
        if not record.purged_at:
            store.restore_run(font, run_id)
    assert check_every_run(store) == len(store.list_runs(font))
