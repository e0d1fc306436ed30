"""The backends package as a user of it sees it: stores by location, in memory with a
clock of their own, read-only, behind a cache, and with faults injected."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest
import torch

import aoe
from aoe.backends import open_backend
from aoe.backends.local import LocalBackend
from aoe.backends.memory import MemoryBackend
from aoe.backends.wrappers import FaultyBackend
from aoe.fsck import fsck
from aoe.gc import collect_garbage


def test_a_location_picks_its_backend(tmp_path: Path) -> None:
    assert isinstance(open_backend(tmp_path / "networks"), LocalBackend)
    assert isinstance(open_backend("memory://picks"), MemoryBackend)
    assert open_backend("memory://picks") is open_backend("memory://picks")  # one store per name
    assert type(open_backend("s3://bucket/prefix", cache_bytes=0)).__name__ == "S3Backend"
    assert type(open_backend("s3://bucket/prefix", cache_bytes=10**6)).__name__ == "CachingBackend"


def test_a_whole_store_in_memory(model: torch.nn.Module) -> None:
    store = aoe.Store("memory://whole")
    font = store.create_font("fruity")
    run_id = store.save_model(font, model, [1.0, 2.0], feedback={"loss": 0.5}, tags=["a"])
    weights, vector, info = store.load_model(font)
    assert all(torch.equal(weights[k], v) for k, v in model.state_dict().items())
    assert info.run_id == run_id and store.list_runs(font, where=["metrics.loss<1"])[0].run_id == run_id
    assert fsck(store, read_data=True).clean
    assert aoe.Store("memory://whole").list_fonts() == [font]  # the same store by name


def test_gc_grace_with_an_injected_clock_instead_of_sleeping(model: torch.nn.Module) -> None:
    now = [1_000_000.0]
    backend = MemoryBackend("memory://clock", clock=lambda: now[0])
    MemoryBackend._named["memory://clock"] = backend
    store = aoe.Store("memory://clock")
    font = store.create_font("fruity")
    kept = store.save_model(font, {"w": torch.ones(3)})
    gone = store.save_model(font, {"w": torch.zeros(5)})
    store.delete_run(font, gone)
    now[0] += 100
    assert collect_garbage(store, grace=3600).swept == 0  # younger than the grace period
    now[0] += 3600
    report = collect_garbage(store, grace=3600)
    assert report.swept >= 2 and f"{font}/{gone}" in report.runs_purged
    assert torch.equal(store.load_model(font, kept).weights["w"], torch.ones(3))


def test_a_read_only_store_lists_and_loads_and_refuses_every_change(store: aoe.Store, font: str) -> None:
    run_id = store.save_model(font, {"w": torch.ones(2)})
    store.list_runs(font)
    assert store.catalog.path is not None and store.root not in store.catalog.path.parents  # the user's cache
    index = store.catalog.path.parent
    before = sorted(p.name for p in index.iterdir())
    files = {p: p.stat().st_mtime_ns for p in store.root.rglob("*")}
    reader = aoe.Store(store.root, read_only=True)
    assert [r.run_id for r in reader.list_runs(font)] == [run_id]
    assert torch.equal(reader.load_model(font).weights["w"], torch.ones(2))
    for change in (lambda: reader.save_model(font, {"w": torch.ones(1)}), lambda: reader.delete_run(font, run_id),
                   lambda: reader.create_font("other"), lambda: collect_garbage(reader)):
        with pytest.raises(aoe.StorageError, match="read-only"):
            change()
    assert {p: p.stat().st_mtime_ns for p in store.root.rglob("*")} == files  # nothing written to the store
    assert [r.run_id for r in store.list_runs(font)] == [run_id]
    assert sorted(p.name for p in index.iterdir()) == before


def test_a_save_whose_ref_cannot_be_written_publishes_nothing(tmp_path: Path) -> None:
    faulty = FaultyBackend(LocalBackend(tmp_path / "networks"))
    store = aoe.Store(backend=faulty)
    font = store.create_font("fruity")
    faulty.fail("write", error=errno.ENOSPC, when=lambda key: "/runs/" in key)
    with pytest.raises(aoe.StorageFullError, match="disk full"):
        store.save_model(font, {"w": torch.ones(4)})
    faulty.heal()
    assert store.list_runs(font) == [] and fsck(store).clean
    assert store.save_model(font, {"w": torch.ones(4)})
