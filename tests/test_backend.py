"""The local-folder backend: crash-safe writes, create-only keys, retries, errors."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from aoe.backends import check_key
from aoe.backends import files as backend_files
from aoe.backends import local as backend_local
from aoe.backends.local import LocalBackend
from aoe.errors import InvalidNameError, StorageError, StorageFullError
from aoe.layout import TEMP_PREFIX


@pytest.fixture
def local(tmp_path: Path) -> LocalBackend:
    return LocalBackend(tmp_path / "root")


def test_write_then_read_round_trips(local: LocalBackend) -> None:
    assert local.write("a/b/c", [b"hello ", memoryview(b"world")], exclusive=False)
    assert local.read("a/b/c") == b"hello world"
    assert local.exists("a/b/c") and not local.exists("a/b")


def test_replace_overwrites_but_exclusive_does_not(local: LocalBackend) -> None:
    local.write("k", [b"one"], exclusive=True)
    assert local.write("k", [b"two"], exclusive=True) is False
    assert local.read("k") == b"one"
    assert local.write("k", [b"three"], exclusive=False) is True
    assert local.read("k") == b"three"


def test_exclusive_write_of_existing_key_refreshes_mtime(local: LocalBackend) -> None:
    local.write("obj", [b"x"], exclusive=True)
    old = time.time() - 7200
    os.utime(local.path("obj"), (old, old))
    assert local.write("obj", [b"x"], exclusive=True) is False
    assert local.path("obj").stat().st_mtime > old + 3600


def test_touch_and_delete_report_missing_keys(local: LocalBackend) -> None:
    assert local.touch("nope") is False
    assert local.delete("nope") is False
    local.write("yes", [b"1"], exclusive=True)
    assert local.touch("yes") and local.delete("yes") and not local.exists("yes")


def test_missing_key_raises_not_found_which_is_a_key_error(local: LocalBackend) -> None:
    with pytest.raises(KeyError, match="missing"):
        local.read("missing")


def test_list_is_sorted_recursive_and_skips_temporary_files(local: LocalBackend) -> None:
    for key in ["f/runs/2", "f/runs/1", "g/x", "top"]:
        local.write(key, [b""], exclusive=True)
    (local.root / "f" / "runs" / f"{TEMP_PREFIX}abc-3").write_bytes(b"partial")
    assert list(local.list("f/runs")) == ["f/runs/1", "f/runs/2"]
    assert list(local.list("")) == ["f/runs/1", "f/runs/2", "g/x", "top"]
    assert list(local.list("absent")) == []


@pytest.mark.parametrize(
    "key", ["../x", "a/../../x", "/abs", "a//b", "a/./b", "a\\b", "bad\x00", "ctl\nx", f"{TEMP_PREFIX}x", ""]
)
def test_keys_that_could_escape_or_clash_are_refused(key: str) -> None:
    with pytest.raises(InvalidNameError):
        check_key(key)


def test_no_temporary_file_survives_a_failed_write(local: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    local.write("d/first", [b"ok"], exclusive=True)

    def disk_full(fd: int, data: object) -> int:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", disk_full)
    with pytest.raises(StorageFullError, match="disk full"):
        local.write("d/second", [b"data"], exclusive=True)
    assert sorted(p.name for p in (local.root / "d").iterdir()) == ["first"]


def test_fsync_failure_is_reported_and_cleaned_up(local: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    def io_error(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    local.write("d/x", [b"1"], exclusive=True)
    monkeypatch.setattr(os, "fsync", io_error)
    with pytest.raises(StorageError, match="Input/output error"):
        local.write("d/y", [b"2"], exclusive=False)
    assert [p.name for p in (local.root / "d").iterdir()] == ["x"]


def test_a_write_that_need_not_be_durable_makes_no_fsync(local: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    local.write("d/first", [b"1"], exclusive=True)  # the folder is there (made durable once)
    fsyncs: list[int] = []
    real_fsync = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (fsyncs.append(fd), real_fsync(fd))[1])
    assert local.write("d/marker", [b"pid"], exclusive=True, durable=False)  # a save marker
    assert fsyncs == [] and local.read("d/marker") == b"pid"
    assert local.write("d/ref", [b"digest"], exclusive=True)
    assert len(fsyncs) >= 2  # the file, then its folder


def test_transient_errors_are_retried_with_backoff(local: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(backend_files.time, "sleep", sleeps.append)
    real_open = os.open
    failures = iter([True, True, False])

    def flaky_open(path: object, flags: int, *args: object) -> int:
        if next(failures, False):
            raise OSError(errno.EBUSY, "Device or resource busy", str(path))
        return real_open(path, flags, *args)  # type: ignore[arg-type]

    local.write("k", [b"v"], exclusive=True)
    monkeypatch.setattr(os, "open", flaky_open)
    assert local.read("k") == b"v"
    assert sleeps == [0.05, 0.2]


def test_a_file_that_stays_locked_gives_a_clear_error(local: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(backend_files.time, "sleep", sleeps.append)

    def locked(*args: object, **kwargs: object) -> None:
        raise OSError(errno.EAGAIN, "Resource temporarily unavailable")

    monkeypatch.setattr(os, "utime", locked)
    with pytest.raises(StorageError, match="locked or busy after 3 retries"):
        local.touch("k")
    assert sleeps == [0.05, 0.2, 0.8]


def test_a_folder_removed_under_us_is_recreated_on_the_next_write(local: LocalBackend) -> None:
    local.write("font/runs/a", [b"1"], exclusive=True)
    for path in (local.root / "font" / "runs").iterdir():
        path.unlink()
    (local.root / "font" / "runs").rmdir()
    assert local.write("font/runs/b", [b"2"], exclusive=True)
    assert list(local.list("font")) == ["font/runs/b"]


def record_folder_fsyncs(monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """The folders fsynced from now on, in order (file fsyncs are not listed)."""
    synced: list[Path] = []
    real = backend_files.fsync_dir
    for module in (backend_files, backend_local):  # atomic writes, and the backend's own folder fsyncs
        monkeypatch.setattr(module, "fsync_dir", lambda folder: (synced.append(Path(folder)), real(folder))[1])
    return synced


def test_a_batch_makes_the_folders_it_created_durable_together_at_its_end(
        local: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    local.write("objects/first", [b"0"], exclusive=True)  # the store and its objects folder exist
    synced = record_folder_fsyncs(monkeypatch)
    with local.write_batch() as write:
        for prefix in ("aa", "bb", "cc"):
            write(f"objects/{prefix}/{prefix}1", [b"1"])
            write(f"objects/{prefix}/{prefix}2", [b"2"])
        assert synced == []  # three folders made, none fsynced into their parent yet
    objects = local.root / "objects"
    assert sorted(synced) == sorted([objects, *(objects / p for p in ("aa", "bb", "cc"))])  # one fsync each
    synced.clear()
    local.write("objects/aa/aa3", [b"3"], exclusive=True)
    assert synced == [objects / "aa"]  # known durable now: only the new file's folder


def test_a_folder_made_by_another_writer_is_trusted_once_its_parent_is_fsynced(
        local: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    other = LocalBackend(local.root)  # another process, which may not have fsynced the folders it made yet
    for prefix in ("aa", "bb"):
        other.write(f"objects/{prefix}/x", [b"x"], exclusive=True)
    synced = record_folder_fsyncs(monkeypatch)
    local.write("objects/aa/mine", [b"1"], exclusive=True)
    objects = local.root / "objects"
    assert synced == [local.root, objects, objects / "aa"]  # the objects folder's parent, its own, the file's
    synced.clear()
    local.write("objects/bb/mine", [b"2"], exclusive=True)  # its sibling was made durable by the same fsync
    assert synced == [objects / "bb"]


def test_a_batch_trusts_folders_another_writer_made_once_it_has_fsynced_their_parent(
        local: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    other = LocalBackend(local.root)
    for prefix in ("aa", "bb"):
        other.write(f"objects/{prefix}/x", [b"x"], exclusive=True)
    synced = record_folder_fsyncs(monkeypatch)
    with local.write_batch() as write:
        write("objects/aa/batched", [b"1"])
        assert synced == []  # the folders it found wait for the batch's end, as those it makes
    objects = local.root / "objects"
    assert sorted(synced) == sorted([local.root, objects, objects / "aa"])
    synced.clear()
    local.write("objects/bb/mine", [b"2"], exclusive=True)  # held by the objects folder when it was fsynced
    assert synced == [objects / "bb"]


def test_a_folder_that_cannot_be_made_durable_is_a_storage_error(
        local: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    LocalBackend(local.root).make_folder("font/runs")  # made by another process
    def io_error(folder: Path) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(backend_local, "fsync_dir", io_error)
    with pytest.raises(StorageError, match="Input/output error"):
        local.make_folder("font/runs")  # trusting it needs its parent's fsync


def test_new_files_are_readable_and_writable_by_the_owner(local: LocalBackend) -> None:
    local.write("p", [b"x"], exclusive=True)
    mode = local.path("p").stat().st_mode
    assert mode & 0o600 == 0o600


# -- what fsck, gc and moving refs need ---------------------------------------------


def test_compare_and_swap_replaces_only_what_it_expects(local: LocalBackend) -> None:
    assert local.compare_and_swap("ref", None, [b"one"])  # create
    assert not local.compare_and_swap("ref", None, [b"two"])  # exists already
    assert not local.compare_and_swap("ref", b"stale", [b"two"])
    assert local.compare_and_swap("ref", b"one", [b"two"]) and local.read("ref") == b"two"
    assert not local.compare_and_swap("ref", b"one", None)
    assert local.compare_and_swap("ref", b"two", None) and not local.exists("ref")


def test_a_lock_is_exclusive_and_released_when_its_holder_dies(local: LocalBackend, tmp_path: Path) -> None:
    import subprocess
    import sys

    with local.lock("gc", wait=False) as first, local.lock("gc", wait=False) as second:
        assert first and not second
    holder = subprocess.Popen(
        [sys.executable, "-c",
         "import sys, time; from aoe.backends.local import LocalBackend\n"
         f"with LocalBackend({str(local.root)!r}).lock('gc', wait=False) as got:\n"
         "    print(got, flush=True); time.sleep(60)"],
        stdout=subprocess.PIPE, text=True,
    )
    assert holder.stdout.readline().strip() == "True"
    with local.lock("gc", wait=False) as taken:
        assert not taken
    holder.kill()
    holder.wait()
    with local.lock("gc", wait=False) as after_crash:
        assert after_crash


def test_delete_if_untouched_keeps_what_was_touched_after_the_cutoff(local: LocalBackend) -> None:
    local.write("old", [b"x"], exclusive=True)
    local.write("new", [b"y"], exclusive=True)
    past = time.time() - 100
    os.utime(local.path("old"), (past, past))
    assert local.delete_if_untouched("old", cutoff=time.time() - 10)
    assert not local.delete_if_untouched("new", cutoff=time.time() - 10)
    assert local.read("new") == b"y" and not local.exists("old")
    assert not local.delete_if_untouched("never", cutoff=time.time())
    assert list(local.temp_files()) == []


def test_a_touch_racing_a_delete_keeps_the_key(local: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    """The touch lands between gc's move-aside and its check: the key is put back."""
    local.write("obj", [b"z"], exclusive=True)
    past = time.time() - 100
    os.utime(local.path("obj"), (past, past))
    real_rename = os.rename

    def rename_then_touch(source: str, target: str) -> None:
        real_rename(source, target)
        os.utime(target)  # a writer's touch of the same inode, just in time

    monkeypatch.setattr(os, "rename", rename_then_touch)
    assert not local.delete_if_untouched("obj", cutoff=time.time() - 10)
    assert local.read("obj") == b"z"


def test_a_copy_stored_while_gc_looked_stands(local: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    local.write("obj", [b"z"], exclusive=True)
    real_rename = os.rename

    def rename_then_store(source: str, target: str) -> None:
        real_rename(source, target)
        local.write("obj", [b"z"], exclusive=True)  # the writer found it gone and stored it again

    monkeypatch.setattr(os, "rename", rename_then_store)
    assert local.delete_if_untouched("obj", cutoff=time.time() + 10)  # gc removed the copy it saw
    assert local.read("obj") == b"z"  # and the writer's new copy is there


def test_temp_files_are_listed_and_removable(local: LocalBackend) -> None:
    local.write("a/b", [b"1"], exclusive=True)
    (local.root / "a" / f"{TEMP_PREFIX}x-b").write_bytes(b"partial")
    [(name, mtime)] = list(local.temp_files())
    assert name == f"a/{TEMP_PREFIX}x-b" and mtime <= time.time()
    local.remove_temp(name)
    assert list(local.temp_files()) == []
    with pytest.raises(InvalidNameError):
        local.remove_temp("a/b")


def test_stat_and_folders(local: LocalBackend) -> None:
    assert local.stat("k") is None
    local.write("k", [b"12345"], exclusive=True)
    size, mtime = local.stat("k")
    assert size == 5 and abs(mtime - time.time()) < 60
    assert not local.has_folder("f/runs")
    local.make_folder("f/runs")
    assert local.has_folder("f/runs")
