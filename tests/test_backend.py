"""The local-folder backend: crash-safe writes, create-only keys, retries, errors."""

from __future__ import annotations

import errno
import os
import time
from pathlib import Path

import pytest

from aoe import backend as backend_module
from aoe.backend import TEMP_PREFIX, LocalBackend, check_key
from aoe.errors import InvalidNameError, NotFoundError, StorageError, StorageFullError


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


def test_transient_errors_are_retried_with_backoff(local: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(backend_module.time, "sleep", sleeps.append)
    real_open = open
    failures = iter([True, True, False])

    def flaky_open(path: object, mode: str = "r", *args: object, **kwargs: object):  # type: ignore[no-untyped-def]
        if next(failures, False):
            raise OSError(errno.EBUSY, "Device or resource busy", str(path))
        return real_open(path, mode, *args, **kwargs)

    local.write("k", [b"v"], exclusive=True)
    monkeypatch.setattr("builtins.open", flaky_open)
    assert local.read("k") == b"v"
    assert sleeps == [0.05, 0.2]


def test_a_file_that_stays_locked_gives_a_clear_error(local: LocalBackend, monkeypatch: pytest.MonkeyPatch) -> None:
    sleeps: list[float] = []
    monkeypatch.setattr(backend_module.time, "sleep", sleeps.append)

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


def test_new_files_are_readable_and_writable_by_the_owner(local: LocalBackend) -> None:
    local.write("p", [b"x"], exclusive=True)
    mode = local.path("p").stat().st_mode
    assert mode & 0o600 == 0o600
