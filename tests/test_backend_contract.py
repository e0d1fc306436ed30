"""The backend contract, run unchanged against a local folder, memory, a real S3 server,
and the wrappers (a local cache over memory, fault injection with no fault set).

Every layer above the backend relies on exactly these behaviours, so an object store
must show the same ones: whole-or-nothing writes, create-only writes with one winner,
compare-and-swap, sorted recursive listing, exclusive locks.
"""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from aoe.backends import Backend
from aoe.backends.local import LocalBackend
from aoe.errors import InvalidNameError, NotFoundError


@pytest.fixture(params=["local", "memory", "cached", "faulty", "s3"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Backend:
    from aoe.backends.cache import CachingBackend, ObjectCache
    from aoe.backends.memory import MemoryBackend
    from aoe.backends.wrappers import FaultyBackend

    if request.param == "local":
        return LocalBackend(tmp_path / "store")
    if request.param == "memory":
        return MemoryBackend()
    if request.param == "cached":
        return CachingBackend(MemoryBackend(), ObjectCache(tmp_path / "cache", 10**6))  # type: ignore[return-value]
    if request.param == "faulty":
        return FaultyBackend(LocalBackend(tmp_path / "store"))  # type: ignore[return-value]
    from aoe.backends.s3 import S3Backend

    return S3Backend(request.getfixturevalue("s3_url"))


def test_write_then_read(backend: Backend) -> None:
    assert backend.write("a/b/key", [b"hello ", memoryview(b"world")], exclusive=False)
    assert backend.read("a/b/key") == b"hello world"
    assert backend.exists("a/b/key") and not backend.exists("a/b/other")
    size, mtime = backend.stat("a/b/key")
    assert size == 11 and mtime > 0
    assert backend.stat("a/b/other") is None


def test_a_missing_key_is_not_found(backend: Backend) -> None:
    with pytest.raises(NotFoundError):
        backend.read("nothing/here")


def test_exclusive_writes_create_only(backend: Backend) -> None:
    assert backend.write("refs/r", [b"first"], exclusive=True)
    assert not backend.write("refs/r", [b"second"], exclusive=True)
    assert backend.read("refs/r") == b"first"
    assert backend.write("refs/r", [b"third"], exclusive=False)  # a plain write replaces
    assert backend.read("refs/r") == b"third"


def test_of_many_writers_creating_one_key_exactly_one_wins(backend: Backend) -> None:
    results: dict[int, bool] = {}

    def create(i: int) -> None:
        results[i] = backend.write("refs/contested", [f"writer {i}".encode()], exclusive=True)

    threads = [threading.Thread(target=create, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    winners = [i for i, won in results.items() if won]
    assert len(winners) == 1
    assert backend.read("refs/contested") == f"writer {winners[0]}".encode()


def test_delete(backend: Backend) -> None:
    backend.write("x/y", [b"1"], exclusive=False)
    assert backend.delete("x/y")
    assert not backend.delete("x/y")
    assert not backend.exists("x/y")


def test_list_is_recursive_sorted_and_stays_in_its_folder(backend: Backend) -> None:
    for key in ["ab/2", "ab/1", "ab/deep/3", "abc/4", "zz/5"]:
        backend.write(key, [b"."], exclusive=False)
    assert list(backend.list("ab")) == ["ab/1", "ab/2", "ab/deep/3"]
    assert list(backend.list("missing")) == []
    assert set(backend.list("")) >= {"ab/1", "ab/2", "ab/deep/3", "abc/4", "zz/5"}


def test_list_versions_change_when_a_key_is_written_again(backend: Backend) -> None:
    backend.write("runs/a", [b"1"], exclusive=False)
    backend.write("runs/b", [b"2"], exclusive=False)
    backend.write("runs/sub/c", [b"3"], exclusive=False)
    before = backend.list_versions("runs")
    assert set(before) == {"a", "b"}  # direct children only, by name
    backend.write("runs/a", [b"1 again, longer"], exclusive=False)
    after = backend.list_versions("runs")
    assert after["a"] != before["a"] and after["b"] == before["b"]


def test_a_listing_token_never_claims_other_content(backend: Backend) -> None:
    """``holds`` lets a reader trust a listed row without reading the key: it may say
    "cannot tell" (False), never that a key holds what it does not."""
    backend.write("runs/a", [b"the manifest's digest"], exclusive=True)
    token = backend.list_versions("runs")["a"]
    assert not backend.holds(token, b"the manifest's digesT")
    assert not backend.holds(token, b"the manifest's digest, and more")
    assert backend.holds(token, b"the manifest's digest") == backend.round_trips  # object storage can tell


def test_compare_and_swap(backend: Backend) -> None:
    assert backend.compare_and_swap("ref", None, [b"v1"])  # create when absent
    assert not backend.compare_and_swap("ref", None, [b"v1 again"])
    assert not backend.compare_and_swap("ref", b"stale", [b"v2"])
    assert backend.compare_and_swap("ref", b"v1", [b"v2"])
    assert backend.read("ref") == b"v2"
    assert not backend.compare_and_swap("ref", b"v1", None)
    assert backend.compare_and_swap("ref", b"v2", None)  # delete
    assert not backend.exists("ref")


def test_many_keys_are_deleted_each_only_if_unchanged(backend: Backend) -> None:
    for name, value in (("a", b"1"), ("b", b"2"), ("c", b"3")):
        backend.write(f"runs/{name}", [value], exclusive=False)
    backend.write("other/d", [b"4"], exclusive=False)
    removed = backend.delete_unchanged([("runs/a", b"1"), ("runs/b", b"changed"), ("runs/gone", b"x"),
                                        ("other/d", b"4"), ("runs/c", b"3")])
    assert list(removed) == [True, False, False, True, True]
    assert sorted(backend.list("runs")) == ["runs/b"] and not backend.exists("other/d")


def test_concurrent_compare_and_swap_loses_no_update(backend: Backend) -> None:
    backend.write("counter", [b"0"], exclusive=False)

    def increment() -> None:
        for _ in range(5):
            while True:
                current = backend.read("counter")
                if backend.compare_and_swap("counter", current, [str(int(current) + 1).encode()]):
                    break

    threads = [threading.Thread(target=increment) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert backend.read("counter") == b"20"


def test_locks_are_exclusive_and_released(backend: Backend) -> None:
    with backend.lock("gc", wait=False) as first:
        assert first
        with backend.lock("gc", wait=False) as second:
            assert not second
        with backend.lock("other", wait=False) as unrelated:
            assert unrelated
    with backend.lock("gc", wait=True) as again:
        assert again


@pytest.mark.parametrize("key", ["../escape", "a/../b", "", "a//b", "/abs", "a\\b", ".tmp-x", "a/\x00"])
def test_invalid_keys_are_refused(backend: Backend, key: str) -> None:
    with pytest.raises(InvalidNameError):
        backend.read(key)


def test_no_leftovers_after_writes(backend: Backend) -> None:
    backend.write("k", [b"v" * 1000], exclusive=True)
    assert list(backend.temp_files()) == []


def test_a_write_batch_shows_its_keys_only_when_it_ends(backend: Backend) -> None:
    backend.write("objects/old", [b"before"], exclusive=True)
    with backend.write_batch() as write:
        assert write("objects/a", [b"first ", b"one"]) is True
        assert write("objects/old", [b"again"]) is False  # create-only: the existing key stays
        if "LocalBackend" in repr(backend):  # a folder: nothing shows before the batch's one flush
            assert not backend.exists("objects/a")
    assert backend.read("objects/a") == b"first one" and backend.read("objects/old") == b"before"


def test_a_write_batch_that_fails_leaves_no_half_written_key(backend: Backend) -> None:
    with pytest.raises(RuntimeError), backend.write_batch() as write:
        write("objects/b", [b"x" * 1000])
        raise RuntimeError("the save failed")
    if "LocalBackend" in repr(backend):  # what was not visible yet is discarded, temporary files included
        assert not backend.exists("objects/b") and not list(backend.temp_files())
    else:
        assert backend.read("objects/b") == b"x" * 1000  # durable as it landed: written whole


def test_readinto_fills_buffers_only_with_exactly_their_size(backend: Backend) -> None:
    backend.write("objects/r", [b"head", b"payload!"], exclusive=True)
    head, body = memoryview(bytearray(4)), memoryview(bytearray(8))
    if backend.readinto("objects/r", [head, body]):  # a backend that can read in place
        assert (bytes(head), bytes(body)) == (b"head", b"payload!")
    assert backend.readinto("objects/r", [memoryview(bytearray(5))]) is False
    if "LocalBackend" in repr(backend):  # reads in place, with read()'s errors
        with pytest.raises(NotFoundError):
            backend.readinto("objects/missing", [head])
    else:  # cannot read in place: says so, and callers read()
        assert backend.readinto("objects/missing", [head]) is False
