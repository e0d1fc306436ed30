"""The fuzzer's damage to derived data (tests/fuzz_store.py): the catalog index a first
listing wrote in the cache, the fonts' change notes, listing snapshots as a machine on
object storage writes them; and the check that a new Store still lists and prints what the
refs and manifests say (derived data may make an answer slower, never wrong)."""

from __future__ import annotations

import dataclasses
import json
import os
import random
import sqlite3
from datetime import timedelta
from pathlib import Path

import msgpack
from object_storage_like import LikeObjectStorage

import aoe
from aoe import listings
from aoe.backends.local import LocalBackend
from aoe.codec import encode, hash_bytes
from aoe.errors import StoreError
from aoe.layout import LISTINGS, listing_key


class Damage:
    """One mutation and what fsck must say about it."""

    def __init__(self, what: str, must_name: str | None, *, truthful: bool = True) -> None:
        self.what = what
        self.must_name = must_name
        """A digest, key or font/run that some fsck finding must mention (None: nothing to name)."""
        self.truthful = truthful
        """Whether listings must still say what the refs and manifests say (derived data
        damaged: slower, never wrong)."""


INDEX_KEYS = {"run_info": "font_id, run_id", "run_json": "font_id, run_id", "runs": "font_id, run_id",
              "packed": "font_id, kind", "vectors": "manifest", "fonts": "font_id"}
"""Each table of the catalog index and the columns that name a row."""


def files_under(folder: Path) -> list[Path]:
    return sorted(p for p in folder.rglob("*") if p.is_file() and not p.is_symlink() and ".tmp-" not in p.name)


def object_files(root: Path) -> list[Path]:
    return files_under(root / ".objects")


HOSTILE_NAMES = ["../../escape", "/abs/path", "..", ".hidden", "a/b", "C:\\x", "\x1b[2J", "\u202eevil", "", "x" * 500,
                 "a\x00b", " ", "NUL"]


class DerivedDamage:
    """Mutations of derived data (a mixin of the fuzzer's Mutator, which has ``rng``)."""

    rng: random.Random

    def index(self, root: Path) -> Damage:
        """The catalog index in the cache, as a first listing wrote it (rows, packed copies,
        vectors), then damaged: a row's bytes, a trigger or view planted, rows removed, the
        file garbled or of another schema."""
        store = aoe.Store(root)
        for font in store.list_fonts():
            store.list_runs(font)
            store.list_runs_json(font)
            store.personality_series(font)
        path = store.catalog.path
        store.close()
        assert path is not None
        db = sqlite3.connect(path, isolation_level=None)
        how = self.rng.choice(["row bytes", "row text", "trigger", "view", "rows removed", "schema version",
                               "garbage file", "truncated file"])
        if how == "row bytes":
            table, column = self.rng.choice([("run_info", "info"), ("packed", "value"), ("vectors", "vector")])
            key = INDEX_KEYS[table]
            for found in db.execute(f"SELECT {key}, {column} FROM {table} WHERE length({column}) > 0 LIMIT 3"
                                    ).fetchall():
                garbled = bytearray(found[-1])
                garbled[self.rng.randrange(len(garbled))] ^= 1 << self.rng.randrange(8)
                matches = " AND ".join(f"{part} = ?" for part in key.split(", "))
                db.execute(f"UPDATE {table} SET {column} = ? WHERE {matches}", (bytes(garbled), *found[:-1]))
            how = f"{table} bytes flipped"
        elif how == "row text":
            db.execute("UPDATE run_json SET json = replace(json, '\"run ', '\"RUN ')")
        elif how == "trigger":
            db.execute("CREATE TRIGGER spy AFTER INSERT ON runs BEGIN DELETE FROM runs; END")
        elif how == "view":
            db.execute("CREATE VIEW extra AS SELECT 1")
        elif how == "rows removed":
            table = self.rng.choice(sorted(INDEX_KEYS))
            key = INDEX_KEYS[table]
            db.execute(f"DELETE FROM {table} WHERE ({key}) IN (SELECT {key} FROM {table} LIMIT 2)")
            how = f"rows of {table} removed"
        elif how == "schema version":
            db.execute("UPDATE meta SET value = '3' WHERE key = 'schema'")
        if how.startswith(("row", "run_info", "vectors")) and self.rng.random() < 0.5:
            db.execute("DELETE FROM packed")  # so readers read the rows, not the packed copies
            how += ", no packed copy"
        db.close()
        if how == "garbage file":
            path.write_bytes(os.urandom(8192))
        elif how == "truncated file":
            path.write_bytes(path.read_bytes()[:4096])
        return Damage(f"catalog index: {how}", None)

    def change_note(self, root: Path) -> Damage:
        runs = self.rng.choice(sorted(p for p in root.glob("*/runs") if p.is_dir()))
        note = runs / ".changes"
        if note.exists() or note.is_symlink():
            note.unlink()
        how = self.rng.choice(["folder", "symlink", "fifo", "garbage", "huge"])
        if how == "folder":
            note.mkdir()
        elif how == "symlink":
            note.symlink_to("/etc/hostname")
        elif how == "fifo":
            os.mkfifo(note)
        elif how == "garbage":
            note.write_bytes(os.urandom(100))
        else:
            note.write_bytes(b"x" * 100_000)
        key = f"{runs.parent.name}/runs/.changes"
        return Damage(f"change note {key}: {how}", key if how in ("folder", "symlink", "fifo") else None)

    def snapshot(self, root: Path) -> Damage:
        """Listing snapshots as a machine reading the store as object storage wrote them,
        then one damaged, forged (rows with the right tokens but other fields), named in
        the far future, or naming runs that do not exist."""
        sharing = aoe.Store(backend=LikeObjectStorage(LocalBackend(root)))
        for font in sharing.list_fonts():
            sharing.list_runs(font)
        keys = files_under(root / LISTINGS)
        if not keys:
            return Damage("no listing snapshot was written", None)
        path = self.rng.choice(keys)
        font = path.parent.name
        how = self.rng.choice(["garbage", "flipped", "forged now", "forged in the future", "runs that are not"])
        if how in ("garbage", "flipped"):
            data = bytearray(path.read_bytes())
            if how == "garbage":
                data = bytearray(os.urandom(len(data)))
            else:
                data[self.rng.randrange(13, len(data))] ^= 1
            path.write_bytes(bytes(data))
            return Damage(f"snapshot {path.name}: {how}", f"{LISTINGS}/{font}/{path.name}")
        rows = listings.read(sharing.backend, f"{LISTINGS}/{font}/{path.name}", font)
        if how == "runs that are not":
            forged = [[run_id.replace("-000", "-900"), token, *listings.row_fields(info)]
                      for run_id, (token, info) in rows.items()]
        else:
            lies = {"name": self.rng.choice(HOSTILE_NAMES[:4] + ["forged"]), "tags": ("forged",),
                    "metrics": {"final_loss": self.rng.choice([0.0, -1e308, 1e300])}}
            forged = [[run_id, token, *listings.row_fields(dataclasses.replace(info, **lies))]
                      for run_id, (token, info) in rows.items()]
        content = msgpack.packb({"format": listings.FORMAT, "version": listings.VERSION, "font_id": font,
                                 "runs": forged}, use_bin_type=True)
        moment = aoe.names.utc_now() + (timedelta(days=3650) if how == "forged in the future" else timedelta(0))
        key = listing_key(font, moment, hash_bytes(content))
        sharing.backend.write(key, encode(content), exclusive=True)
        if how == "runs that are not":
            return Damage(f"snapshot {key}: rows of {how}", None)
        return Damage(f"snapshot {key}: {how}", key, truthful=how != "forged now")


def agrees_with_refs(root: Path, damage: Damage, problems: list[str]) -> None:
    """What a new Store lists (its index in the cache; and a machine reading the store as
    object storage, with snapshots) is what the refs and manifests say, read one by one."""
    if not damage.truthful:
        return
    try:
        truth_store = aoe.Store(root)
        fonts = truth_store.list_fonts()
        truth = {font: [i.to_dict() for i in truth_store.catalog.read_infos(font, truth_store.refs.runs(font))]
                 for font in fonts if truth_store.refs.has_runs_folder(font)}
    except StoreError:
        return  # a store the refs of which cannot be read: the readers above met it already
    for name, reader in (("a new Store", lambda: aoe.Store(root)),
                         ("a new machine on object storage", lambda: aoe.Store(backend=LikeObjectStorage(
                             LocalBackend(root))))):
        for font, expected in truth.items():
            try:
                listed = [i.to_dict() for i in reader().list_runs(font)]
                printed = json.loads(reader().list_runs_json(font))  # what `ls FONT --json` prints
            except StoreError as exc:
                problems.append(f"{name} cannot list {font} after {damage.what}: {exc}")
                continue
            for what, got in (("lists", listed), ("prints as JSON", printed)):
                if json.dumps(got, default=str) != json.dumps(expected, default=str):
                    problems.append(f"{name} {what} {font} otherwise than its refs and manifests after {damage.what}")
