"""The catalog's SQLite file (catalog/database.py): in the user's cache, never the
store's; opened only with aoe's schema; every row it shows checked; started afresh when
damaged or of another layout."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
import torch
from conftest import run_cli, settle

import aoe
from aoe.catalog.database import IndexFile
from aoe.fsck import fsck


def test_an_index_of_another_layout_is_started_afresh(store: aoe.Store, font: str, runs: list[str]) -> None:
    store.list_runs(font)
    store.catalog._db().executescript("DROP TABLE runs; CREATE TABLE runs (x);")
    assert len(store.list_runs(font)) == 6


def test_the_index_is_only_a_cache(store: aoe.Store, font: str, runs: list[str]) -> None:
    store.list_runs(font)
    store.catalog.close()
    index = store.catalog.path
    assert index is not None and store.root not in index.parents  # the user's cache folder, never the store
    index.write_bytes(b"this is not a database")
    fresh = aoe.Store(store.root)
    assert len(fresh.list_runs(font)) == 6
    assert fresh.reindex() == 6


def test_a_read_only_store_lists_with_an_index_in_memory(store: aoe.Store, font: str, runs: list[str], monkeypatch) -> None:
    fresh = aoe.Store(store.root)
    real_open = IndexFile._open
    monkeypatch.setattr(IndexFile, "_open", lambda self: (_ for _ in ()).throw(OSError(30, "Read-only file system"))
                        if self.path is not None else real_open(self))
    assert len(fresh.list_runs(font)) == 6 and fresh.catalog.path is None


@pytest.mark.parametrize("table", ["run_info", "run_json"])
def test_an_index_missing_a_runs_row_is_rebuilt_not_believed(store: aoe.Store, font: str, table: str) -> None:
    runs = [store.save_model(font, {"w": torch.ones(2)}, name=f"run {i}") for i in range(3)]
    store.catalog._db().execute(f"DELETE FROM {table} WHERE run_id = ?", (runs[1],))
    fresh = aoe.Store(store.root)
    assert [i.name for i in fresh.list_runs(font)] == ["run 0", "run 1", "run 2"]
    assert [r["name"] for r in json.loads(aoe.Store(store.root).list_runs_json(font))] == ["run 0", "run 1", "run 2"]


def planted_index(path: Path, font: str, runs: list[str]) -> None:
    """An index as a crafted store would bring it: a run with no ref, a real run hidden,
    metrics its manifest does not hold, and a trigger that would run inside aoe's syncs."""
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path)
    from aoe.catalog.database import SCHEMA, SCHEMA_VERSION

    db.executescript(SCHEMA)
    db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
    db.execute("INSERT INTO runs (font_id, run_id, status, metrics) VALUES (?, '20990101T000000.000000Z-0000', "
               "'completed', '{\"final_loss\": 0}')", (font,))
    db.execute("CREATE TABLE pwned (x)")
    db.execute("CREATE TRIGGER spy AFTER INSERT ON runs BEGIN INSERT INTO pwned VALUES (new.run_id); END")
    db.commit()
    db.close()


def test_an_index_a_store_brings_is_never_read(store: aoe.Store, font: str, runs: list[str],
                                               capsys: pytest.CaptureFixture[str]) -> None:
    """A store handed over (a tarball, a shared folder) brings its .catalog/: aoe lists
    what the refs and manifests say, fsck notes the old index and --repair removes it."""
    planted_index(store.root / ".catalog" / "index.sqlite", font, runs)
    fresh = aoe.Store(store.root)
    assert [i.run_id for i in fresh.list_runs(font)] == runs
    assert fresh.count_runs(font, where=["metrics.final_loss=0"]) == 0
    report = fsck(fresh)
    assert [f.kind for f in report.findings if f.kind == "old-index"] == ["old-index"] and report.clean
    assert "removed the old catalog index .catalog/" in fsck(fresh, repair=True).repaired
    assert not list((store.root / ".catalog").iterdir())
    assert not [f for f in fsck(fresh).findings if f.kind == "old-index"]


def test_sql_an_index_holds_that_aoe_did_not_write_never_runs(store: aoe.Store, font: str, runs: list[str]) -> None:
    """The index in the cache folder with a trigger planted in it: opened, it is found
    not to be aoe's and written anew; the trigger never fires, and reindex makes a new file."""
    store.catalog.close()
    index = store.catalog.path
    assert index is not None
    for leftover in index.parent.iterdir():
        leftover.unlink()
    planted_index(index, font, runs)
    fresh = aoe.Store(store.root)
    assert [i.run_id for i in fresh.list_runs(font)] == runs
    names = {name for (name,) in fresh.catalog._db().execute("SELECT name FROM sqlite_master")}
    assert "spy" not in names and "pwned" not in names
    fresh.catalog._db().execute("CREATE VIEW planted AS SELECT 1")
    fresh.catalog._db().execute("INSERT INTO meta VALUES ('left', 'behind')")
    assert fresh.reindex() == 6
    db = fresh.catalog._db()  # a new file, written from the refs and manifests alone
    assert "planted" not in {name for (name,) in db.execute("SELECT name FROM sqlite_master")}
    assert db.execute("SELECT * FROM meta WHERE key = 'left'").fetchall() == []


@pytest.mark.parametrize("table", ["run_info", "run_json", "packed", "vectors"])
def test_a_garbled_row_is_a_rebuild_never_an_answer(store: aoe.Store, font: str, runs: list[str], table: str,
                                                    capsys: pytest.CaptureFixture[str]) -> None:
    """Each row an answer shows carries the checksum it was written with: one that was
    damaged (a bit flipped on disk) is found out and the index rebuilt."""
    store.save_model(font, {"w": torch.ones(2)}, [0.5, 1.0, 2.0, 4.0], name="with a vector")
    expected = [info.to_dict() for info in store.list_runs(font)]
    assert sum(v is not None for v in store.personality_series(font).values()) == 1  # the vector is kept
    settle(store)
    aoe.Store(store.root).list_runs(font)
    aoe.Store(store.root).list_runs_json(font)  # packed copies of both kinds
    column = {"run_info": "info", "run_json": "json", "packed": "value", "vectors": "vector"}[table]
    db = store.catalog._db()
    [(value,)] = db.execute(f"SELECT {column} FROM {table} WHERE length({column}) > 0 LIMIT 1").fetchall()
    garbled = value.replace("serif", "sErif") if isinstance(value, str) else bytes([value[0] ^ 1]) + value[1:]
    db.execute(f"UPDATE {table} SET {column} = ?", (garbled,))
    reader = aoe.Store(store.root)
    assert [info.to_dict() for info in reader.list_runs(font)] == expected
    assert json.loads(reader.list_runs_json(font)) == expected
    assert all(v is None or len(v) == 4 for v in reader.personality_series(font).values())
    code, out, err = run_cli(capsys, "store", "--root", str(store.root), "ls", font, "--json")
    assert code == 0 and json.loads(out) == expected, err
