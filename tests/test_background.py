"""Saving in the background: the caller waits only for a copy of the tensors."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import make_png

import aoe
from aoe.fsck import fsck


def test_a_background_save_stores_the_tensors_as_they_were_when_called(store: aoe.Store, font: str) -> None:
    model = torch.nn.Linear(64, 64)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    pending = store.save_in_background(font, model, [1.0, 2.0], make_png(3), feedback={"loss": 0.5})
    with torch.no_grad():
        model.weight.add_(1.0)  # training goes on at once
    run_id = pending.result(timeout=60)
    assert pending.done() and store.get_run_info(font, run_id).metrics == {"loss": 0.5}
    loaded = store.load_model(font, run_id).weights
    assert all(torch.equal(loaded[k], v) for k, v in before.items())


def test_tied_weights_stay_tied_through_the_copy(store: aoe.Store, font: str) -> None:
    embed = torch.nn.Embedding(8, 4)
    state = {"embed": embed.weight, "head": embed.weight}
    loaded = store.load_model(font, store.save_in_background(font, state).result()).weights
    assert loaded["embed"].untyped_storage().data_ptr() == loaded["head"].untyped_storage().data_ptr()


def test_a_background_save_recognizes_unchanged_tensors_as_a_save_does(
        store: aoe.Store, font: str, hashing: list[str]) -> None:
    """The copy is new memory each time; what its original was is noted when it is made."""
    weight = torch.randn(100_000)  # 400,000 bytes: an object of its own

    def save() -> list[str]:
        hashing.clear()
        store.save_in_background(font, {"w": weight}).result()
        return list(hashing)

    assert [save(), save(), save()] == [["hash_bytes"], ["fingerprint", "hash_bytes"], ["fingerprint"]]
    weight.data[0] += 1.0  # behind torch's version counter: the fingerprint sees it
    assert save() == ["fingerprint", "hash_bytes"]
    weight.add_(1.0)
    assert save() == ["hash_bytes"]
    assert torch.equal(store.load_model(font).weights["w"], weight)


def test_bad_input_is_refused_at_once_in_the_callers_thread(store: aoe.Store, font: str) -> None:
    with pytest.raises(aoe.InvalidInputError, match="not a PNG"):
        store.save_in_background(font, {"w": torch.ones(2)}, sample_image=b"not a png")
    assert store.list_runs(font) == []


def test_a_failure_surfaces_on_the_handle_and_then_not_again(store: aoe.Store, font: str, monkeypatch) -> None:
    def full(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise aoe.StorageFullError("disk full while writing: nothing was published")

    monkeypatch.setattr(store.objects, "put_blobs", full)
    pending = store.save_in_background(font, {"w": torch.ones(2)})
    with pytest.raises(aoe.StorageFullError):
        pending.result()
    monkeypatch.undo()
    assert store.save_model(font, {"w": torch.ones(2)})  # seen on the handle: not raised again
    assert len(store.list_runs(font)) == 1


def test_a_failure_nobody_looked_at_surfaces_on_the_next_save(store: aoe.Store, font: str, monkeypatch) -> None:
    def full(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise aoe.StorageFullError("disk full while writing: nothing was published")

    monkeypatch.setattr(store.objects, "put_blobs", full)
    store.save_in_background(font, {"w": torch.ones(2)})
    store.background.wait()
    monkeypatch.undo()
    with pytest.raises(aoe.StoreError, match="earlier background save into 1-fruity failed: disk full"):
        store.save_model(font, {"w": torch.ones(2)})
    assert store.save_model(font, {"w": torch.ones(2)})  # raised once
    assert len(store.list_runs(font)) == 1


def test_at_most_two_saves_are_pending_and_the_third_caller_waits(store: aoe.Store, font: str, monkeypatch) -> None:
    release = threading.Event()
    real = store.objects.put_blobs

    def slow(*args, **kwargs):  # type: ignore[no-untyped-def]
        release.wait(30)
        return real(*args, **kwargs)

    monkeypatch.setattr(store.objects, "put_blobs", slow)
    first, second = (store.save_in_background(font, {"w": torch.ones(2) * i}) for i in range(2))
    third: list[aoe.PendingSave] = []
    caller = threading.Thread(target=lambda: third.append(store.save_in_background(font, {"w": torch.zeros(2)})))
    caller.start()
    time.sleep(0.3)
    assert not third and not first.done()  # the third caller is held back, not queued without bound
    release.set()
    caller.join(30)
    runs = [p.result(timeout=60) for p in (first, second, third[0])]
    assert len(set(runs)) == 3 and len(store.list_runs(font)) == 3


def run_python(code: str, root: Path, **kwargs) -> subprocess.Popen[str]:  # type: ignore[no-untyped-def]
    return subprocess.Popen([sys.executable, "-c", textwrap.dedent(code), str(root)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def test_the_process_exiting_waits_for_its_background_saves(store: aoe.Store, font: str) -> None:
    process = run_python(f"""
        import sys, torch, aoe
        store = aoe.Store(sys.argv[1])
        store.save_in_background({font!r}, {{"w": torch.arange(3_000_000, dtype=torch.float32)}})
        print("submitted", flush=True)
    """, store.root)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 0 and "submitted" in out, err
    [info] = store.list_runs(font)
    assert torch.equal(store.load_model(font, info.run_id).weights["w"], torch.arange(3_000_000, dtype=torch.float32))


def test_kill_9_during_a_background_save_leaves_the_whole_run_or_none(store: aoe.Store, font: str) -> None:
    for delay in (0.05, 0.3, 0.8):
        process = run_python(f"""
            import sys, torch, aoe
            store = aoe.Store(sys.argv[1])
            print("go", flush=True)
            pending = store.save_in_background({font!r}, {{"w": torch.randn(8_000_000)}})
            pending.result()
            print("saved", flush=True)
            import time; time.sleep(60)
        """, store.root)
        assert process.stdout.readline().strip() == "go"
        time.sleep(delay)
        os.kill(process.pid, signal.SIGKILL)
        process.wait()
        for info in store.list_runs(font):
            assert store.load_model(font, info.run_id).weights["w"].shape == (8_000_000,)
    assert fsck(store, read_data=True).clean


def test_a_whole_training_checkpoint_comes_back_with_its_types(store: aoe.Store, font: str) -> None:
    from collections import Counter

    model = torch.nn.Linear(3, 3)
    optimizer = torch.optim.AdamW(model.parameters())
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, milestones=[100, 200])
    checkpoint = {"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                  "scheduler": scheduler.state_dict(), "rng": torch.get_rng_state(), "step": 7}
    loaded = store.load_model(font, store.save_in_background(font, checkpoint).result()).weights
    assert loaded["scheduler"]["milestones"] == Counter({100: 1, 200: 1})
    assert type(loaded["scheduler"]["milestones"]) is Counter and loaded["step"] == 7
    assert torch.equal(loaded["rng"], checkpoint["rng"])
