"""Crash states: what a power cut, a kernel panic or a pulled disk may leave of a
workload's writes, built from a recording of its file-system calls (ALICE, Pillai et al.,
OSDI '14; CrashMonkey, Mohan et al., OSDI '18; LevelDB's FaultInjectionTestFS).

``Recorder`` patches the ``os`` functions aoe writes through (every write of aoe goes
through them: ``backends/files.py``, the local backend, run exports; SQLite's own I/O, the
catalog index in the cache folder, is not a store's and is tested apart) and keeps, under
the folders it watches, one event per call that changes what is on disk: a folder or
file created (with its inode), the bytes a file holds when it is closed or fsynced, an
fsync of a file or a folder, a link, rename, unlink or rmdir. Production code pays
nothing: the recording exists only in tests.

``states`` then gives, for a cut after any event, the trees a persistence model allows,
materialized as real folders:

- **pessimistic** (POSIX, no more): a file's bytes are durable at its fsync; bytes not
  fsynced may be lost or cut short anywhere; a folder's entries are durable at the
  folder's fsync, and each change since (an entry added, removed, renamed in or out)
  may or may not have happened, independently: a rename may have happened in its new
  folder and not its old, so the target holds either version.
- **ext4** (``data=ordered``, delayed allocation): metadata changes reach the disk in
  order, all of those before an fsync (of anything) by its end, so a crash keeps a prefix
  of them at least up to the last fsync; a file's bytes are durable at its fsync, and
  before it a file is whole or empty (its blocks were not allocated yet).

Nothing here knows aoe: the checks of each state are the tests' (``test_crashes.py``).
"""

from __future__ import annotations

import os
import random
import stat
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

METADATA = ("mkdir", "create", "link", "rename", "unlink", "rmdir")
"""Events that change a folder's entries."""


@dataclass
class Event:
    """One change to what is on disk. ``path``/``target`` are (root, relative path)."""

    kind: str
    path: tuple[str, str] | None = None
    target: tuple[str, str] | None = None
    inode: int | None = None
    data: bytes | None = None
    note: Any = None


class Recorder:
    """Records the file-system calls of the process under ``roots`` (name -> folder)."""

    def __init__(self, roots: dict[str, Path]) -> None:
        self.roots = {name: os.path.realpath(path) for name, path in roots.items()}
        self.events: list[Event] = []
        self._lock = threading.RLock()
        self._fds: dict[int, tuple[int, bool]] = {}  # fd -> (inode, opened for writing)
        self._dirs: dict[int, int] = {}  # fd of an opened folder -> its inode

    def mark(self, note: Any) -> None:
        """A point the workload names (a call returned, acknowledging a run)."""
        with self._lock:
            self.events.append(Event("mark", note=note))

    def where(self, path: Any, dir_fd: int | None = None) -> tuple[str, str] | None:
        """(root, relative path) of a path under a watched root, else None."""
        text = os.fsdecode(path)
        if dir_fd is not None and not os.path.isabs(text):
            text = os.path.join(os.readlink(f"/proc/self/fd/{dir_fd}"), text)
        full = os.path.join(os.path.realpath(os.path.dirname(os.path.abspath(text))), os.path.basename(text))
        for name, root in self.roots.items():
            if full == root:
                return name, ""
            if full.startswith(root + os.sep):
                return name, full[len(root) + 1:]
        return None

    @contextmanager
    def recording(self) -> Iterator[Recorder]:
        """The ``os`` functions patched for the block."""
        real = {name: getattr(os, name) for name in ("open", "close", "fsync", "fdatasync", "link", "rename",
                                                      "replace", "unlink", "remove", "mkdir", "rmdir", "truncate",
                                                      "ftruncate")}

        def add(event: Event) -> None:
            with self._lock:
                self.events.append(event)

        def read_back(fd: int) -> bytes:
            reader = real["open"](f"/proc/self/fd/{fd}", os.O_RDONLY)
            try:
                chunks = []
                while chunk := os.read(reader, 1 << 20):
                    chunks.append(chunk)
                return b"".join(chunks)
            finally:
                real["close"](reader)

        def open_(path: Any, flags: int, mode: int = 0o777, *, dir_fd: int | None = None) -> int:
            where = self.where(path, dir_fd)
            existed = where is not None and os.path.lexists(os.path.join(self.roots[where[0]], where[1]))
            fd = real["open"](path, flags, mode, dir_fd=dir_fd)
            if where is not None:
                info = os.fstat(fd)
                if stat.S_ISDIR(info.st_mode):
                    self._dirs[fd] = info.st_ino
                else:
                    if flags & os.O_CREAT and not existed:
                        add(Event("create", where, inode=info.st_ino))
                    self._fds[fd] = (info.st_ino, bool(flags & (os.O_WRONLY | os.O_RDWR)))
            return fd

        def close(fd: int) -> None:
            tracked = self._fds.pop(fd, None)
            self._dirs.pop(fd, None)
            if tracked is not None and tracked[1]:
                add(Event("data", inode=tracked[0], data=read_back(fd)))
            real["close"](fd)

        def fsync(fd: int) -> None:
            real["fsync"](fd)
            if fd in self._dirs:
                add(Event("fsync_dir", inode=self._dirs[fd]))
            elif fd in self._fds:
                inode = self._fds[fd][0]
                add(Event("data", inode=inode, data=read_back(fd)))
                add(Event("fsync", inode=inode))

        def two(kind: str, name: str) -> Callable[..., None]:
            def call(src: Any, dst: Any, *, src_dir_fd: int | None = None, dst_dir_fd: int | None = None,
                     **kwargs: Any) -> None:
                source, target = self.where(src, src_dir_fd), self.where(dst, dst_dir_fd)
                real[name](src, dst, src_dir_fd=src_dir_fd, dst_dir_fd=dst_dir_fd, **kwargs)
                if source is not None or target is not None:
                    assert source is not None and target is not None, (kind, src, dst)
                    add(Event(kind, source, target))
            return call

        def one(kind: str, name: str) -> Callable[..., None]:
            def call(path: Any, *args: Any, dir_fd: int | None = None, **kwargs: Any) -> None:
                where = self.where(path, dir_fd)
                real[name](path, *args, dir_fd=dir_fd, **kwargs)
                if where is not None:
                    inode = os.stat(path, dir_fd=dir_fd, follow_symlinks=False).st_ino if kind == "mkdir" else None
                    add(Event(kind, where, inode=inode))
            return call

        def refused(name: str) -> Callable[..., None]:
            def call(*args: Any, **kwargs: Any) -> None:
                raise AssertionError(f"aoe called os.{name}, which the crash model does not know")
            return call

        patched = {"open": open_, "close": close, "fsync": fsync, "fdatasync": fsync,
                   "link": two("link", "link"), "rename": two("rename", "rename"),
                   "replace": two("rename", "replace"), "unlink": one("unlink", "unlink"),
                   "remove": one("unlink", "remove"), "mkdir": one("mkdir", "mkdir"),
                   "rmdir": one("rmdir", "rmdir"), "truncate": refused("truncate"),
                   "ftruncate": refused("ftruncate")}
        for name, function in patched.items():
            setattr(os, name, function)
        try:
            yield self
        finally:
            for name, function in real.items():
                setattr(os, name, function)


@dataclass
class Node:
    """A file or folder of the model: its state now (the page cache) and on disk."""

    kind: str
    inode: int
    data: bytes = b""
    synced: bytes | None = None
    """A file's bytes as of its last fsync (None: never)."""
    entries: dict[str, Node] = field(default_factory=dict)
    durable: dict[str, Node] = field(default_factory=dict)
    """A folder's entries as of its last fsync (or the start)."""
    pending: list[tuple[int, str, str, Node]] = field(default_factory=list)
    """A folder's entry changes since: (change id, "add" | "remove", name, node). A crash
    keeps or loses each change as a whole: a rename's two halves share their id."""


class Model:
    """The trees of ``roots`` at the start (durable), and the events that followed."""

    def __init__(self, roots: dict[str, Path], events: list[Event]) -> None:
        self.events = events
        self.start = {name: _load(Path(path)) for name, path in roots.items()}

    def replay(self, cut: int, metadata_until: int | None = None) -> dict[str, Node]:
        """The roots after events[:cut] (metadata changes only before ``metadata_until``)."""
        roots = {name: _copy(node) for name, node in self.start.items()}
        inodes: dict[int, Node] = {}
        for node in _walk(roots.values()):
            inodes[node.inode] = node
        last_metadata = cut if metadata_until is None else metadata_until
        for index, event in enumerate(self.events[:cut]):
            if event.kind in METADATA and index >= last_metadata:
                if event.kind in ("create", "mkdir") and event.inode is not None:
                    # its entry never reached the disk: its bytes are a file of no name, never
                    # those of a file whose inode number it took (a removal not on disk either)
                    inodes[event.inode] = Node("dir" if event.kind == "mkdir" else "file", event.inode)
                continue
            _apply(roots, inodes, event, index)
        return roots

    def cuts(self) -> list[int]:
        """Every point a crash can come: after each event (and before the first)."""
        return list(range(len(self.events) + 1))

    def acknowledged(self, cut: int) -> list[Any]:
        """The marks of calls that returned before the cut."""
        return [event.note for event in self.events[:cut] if event.kind == "mark"]

    def states(self, cut: int, model: str, rng: random.Random, count: int) -> Iterator[dict[str, Node]]:
        """Up to ``count`` trees (the same node shared where names share it) that a crash
        at ``cut`` may leave under ``model``: ``pessimistic`` or ``ext4``."""
        if model == "ext4":
            commits = [i + 1 for i, e in enumerate(self.events[:cut]) if e.kind in ("fsync", "fsync_dir")]
            floor = commits[-1] if commits else 0
            metadata = [i for i in range(floor, cut + 1) if i == cut or self.events[i].kind in METADATA]
            chosen = metadata if len(metadata) <= count else [cut, floor, *rng.sample(metadata, count - 2)]
            for until in chosen[:count]:
                roots = self.replay(cut, metadata_until=until)
                yield _settled(roots, lambda node: node.data if node.synced == node.data or rng.random() < 0.5
                               else b"")
            return
        roots = self.replay(cut)
        for attempt in range(count):
            keep = (lambda: True) if attempt == 0 else (lambda: False) if attempt == 1 else \
                (lambda: rng.random() < 0.5)
            contents: dict[int, bytes] = {}

            def content(node: Node) -> bytes:
                if id(node) not in contents:
                    if node.synced == node.data or attempt == 0:
                        contents[id(node)] = node.data
                    else:
                        cut_at = rng.choice([0, len(node.data) // 2, max(0, len(node.data) - 1), len(node.data)])
                        contents[id(node)] = node.data[:cut_at]
                return contents[id(node)]

            yield _crashed(roots, keep, content)


def _settled(roots: dict[str, Node], content: Callable[[Node], bytes]) -> dict[str, Node]:
    """The trees as they are (every entry change of the replay kept), files as ``content`` says."""
    return _crashed(roots, lambda: True, content, entries_now=True)


def _crashed(roots: dict[str, Node], keep: Callable[[], bool], content: Callable[[Node], bytes], *,
             entries_now: bool = False) -> dict[str, Node]:
    """Plain trees (fresh nodes): each folder's durable entries and the pending changes
    ``keep`` keeps (or its entries now), each file's bytes as ``content`` says."""
    made: dict[int, Node] = {}  # id(node) -> its crashed copy
    decided: dict[int, bool] = {}

    def crashed(node: Node) -> Node:  # by the node itself: an inode number may have been two files'
        if id(node) in made:
            return made[id(node)]
        if node.kind == "file":
            copy = made[id(node)] = Node("file", node.inode, content(node))
            return copy
        copy = made[id(node)] = Node("dir", node.inode)
        if entries_now:
            entries = dict(node.entries)
        else:
            entries = dict(node.durable)
            for change_id, change, name, child in node.pending:
                if decided.setdefault(change_id, keep()):
                    if change == "add":
                        entries[name] = child
                    elif entries.get(name) is child:
                        del entries[name]
        copy.entries = {name: crashed(child) for name, child in entries.items()}
        return copy

    return {name: crashed(node) for name, node in roots.items()}


def materialize(roots: dict[str, Node], where: dict[str, Path]) -> None:
    """Write the trees as real folders (each root at ``where[name]``, made fresh)."""
    for name, node in roots.items():
        _write(node, where[name])


def _write(node: Node, path: Path) -> None:
    path.mkdir(parents=True, exist_ok=True)
    for name, child in node.entries.items():
        if child.kind == "dir":
            _write(child, path / name)
        else:
            (path / name).write_bytes(child.data)


def _load(path: Path) -> Node:
    """A tree as it is on disk at the start (all of it durable)."""
    info = os.stat(path, follow_symlinks=False)
    if not stat.S_ISDIR(info.st_mode):
        data = path.read_bytes()
        return Node("file", info.st_ino, data, synced=data)
    node = Node("dir", info.st_ino)
    with os.scandir(path) as entries:
        for entry in entries:
            node.entries[entry.name] = _load(Path(entry.path))
    node.durable = dict(node.entries)
    return node


def _copy(node: Node) -> Node:
    """A deep copy, sharing nothing with the start."""
    copies: dict[int, Node] = {}

    def copy(item: Node) -> Node:
        if item.inode not in copies:
            new = copies[item.inode] = Node(item.kind, item.inode, item.data, item.synced)
            new.entries = {name: copy(child) for name, child in item.entries.items()}
            new.durable = {name: copy(child) for name, child in item.durable.items()}
        return copies[item.inode]

    return copy(node)


def _walk(roots: Any) -> Iterator[Node]:
    stack = list(roots)
    while stack:
        node = stack.pop()
        yield node
        stack.extend(node.entries.values())


def _folder(roots: dict[str, Node], where: tuple[str, str]) -> tuple[Node, str]:
    """The folder holding ``where`` now, and the name in it."""
    root, relative = where
    parts = relative.split("/") if relative else []
    node = roots[root]
    for part in parts[:-1]:
        node = node.entries[part]
    return node, parts[-1]


def _apply(roots: dict[str, Node], inodes: dict[int, Node], event: Event, change: int) -> None:
    """One event on the trees (``change``: the id its entry changes take)."""
    kind = event.kind
    if kind == "mark":
        return
    if kind == "data":
        assert event.inode is not None
        inodes.setdefault(event.inode, Node("file", event.inode)).data = event.data or b""
        return
    if kind == "fsync":
        node = inodes[event.inode]  # type: ignore[index]
        node.synced = node.data
        return
    if kind == "fsync_dir":
        folder = inodes.get(event.inode)  # type: ignore[arg-type]
        if folder is not None:  # a folder outside the roots (a root's parent): nothing of ours in it
            folder.durable = dict(folder.entries)
            folder.pending = []
        return
    assert event.path is not None
    folder, name = _folder(roots, event.path)
    if kind in ("mkdir", "create"):  # a new node: an inode number may be one a removed file had
        assert event.inode is not None
        node = inodes[event.inode] = Node("dir" if kind == "mkdir" else "file", event.inode)
        folder.entries[name] = node
        folder.pending.append((change, "add", name, node))
    elif kind in ("unlink", "rmdir"):
        node = folder.entries.pop(name)
        folder.pending.append((change, "remove", name, node))
    else:  # link, rename
        assert event.target is not None
        node = folder.entries[name]
        target, target_name = _folder(roots, event.target)
        if kind == "rename":
            del folder.entries[name]
            folder.pending.append((change, "remove", name, node))
        target.entries[target_name] = node
        target.pending.append((change, "add", target_name, node))
