"""The catalog: a derived index that answers listings and searches, and never lies."""

from __future__ import annotations

import contextlib
import json
import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import msgpack
import pytest
import torch
from conftest import run_cli, settle

import aoe
from aoe.backends import local as local_backend
from aoe.catalog import Catalog
from aoe.catalog.rows import whole_font_sql
from aoe.fsck import fsck
from aoe.query import Query
from aoe.runinfo import feedback_metrics


def test_feedback_metrics_are_numbers_only() -> None:
    assert feedback_metrics(b'{"a": 1, "b": true, "c": "x", "d": {"e": 2.5, "f": [1]}, "g": null}') == {"a": 1, "d.e": 2.5}
    assert feedback_metrics(b"[1, 2]") == {} and feedback_metrics(b"not json") == {}


def test_metrics_follow_amended_feedback_and_old_manifests_without_them(store: aoe.Store, font: str) -> None:
    run_id = store.save_model(font, None, feedback={"loss": 1.0})
    store.amend_run(font, run_id, feedback={"notes": "no numbers now"})
    assert store.get_run_info(font, run_id).metrics == {} and store.list_runs(font)[0].metrics == {}
    old = store.open_run(font, run_id).manifest
    from dataclasses import replace

    from aoe.manifests import pack

    older = replace(old, metrics=None, feedback=store.objects.put_blob(b'{"loss": 2}'))  # as written before
    digest = store.objects.put(pack(older))
    assert store.refs.move_run(font, run_id, store.refs.read_run(font, run_id), digest)
    assert store.get_run_info(font, run_id).metrics == {"loss": 2}
    assert store.list_runs(font)[0].metrics == {"loss": 2}


def test_run_info_has_the_same_metrics_whichever_way_it_is_read(store: aoe.Store, font: str, runs: list[str]) -> None:
    listed = store.list_runs(font)[1]
    direct = store.get_run_info(font, runs[1])
    assert listed == direct and listed.metrics == {"final_loss": 0.1, "glyph_loss.A": 0.2}


def test_another_process_saving_and_deleting_shows_up_in_the_next_listing(store: aoe.Store, font: str) -> None:
    first = store.save_model(font, {"w": torch.ones(1)})
    assert len(store.list_runs(font)) == 1  # the index now knows one run
    code = (
        "import sys, torch, aoe\n"
        "s = aoe.Store(sys.argv[1])\n"
        "print(s.save_model('1-fruity', {'w': torch.zeros(1)}, name='from elsewhere'))\n"
        "s.delete_run('1-fruity', sys.argv[2])\n"
    )
    result = subprocess.run([sys.executable, "-c", code, str(store.root), first], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert [(i.run_id, i.name) for i in store.list_runs(font)] == [(result.stdout.strip(), "from elsewhere")]


def test_runs_indexed_by_another_process_reach_this_ones_answers(store: aoe.Store, font: str, monkeypatch) -> None:
    store.save_model(font, {"w": torch.ones(1)})
    assert len(store.list_runs(font)) == 1
    code = (
        "import sys, torch, aoe\n"
        "s = aoe.Store(sys.argv[1])\n"
        "s.save_model('1-fruity', {'w': torch.zeros(1)}, name='theirs')\n"
        "assert len(s.list_runs('1-fruity')) == 2\n"  # they bring the shared index up to date
    )
    result = subprocess.run([sys.executable, "-c", code, str(store.root)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    monkeypatch.setattr(store.catalog, "_sync_font", lambda font_id: None)  # this process reads nothing itself
    assert [i.name for i in store.list_runs(font)] == [None, "theirs"]


def test_an_amend_replaces_the_listed_row(store: aoe.Store, font: str, runs: list[str]) -> None:
    store.list_runs(font)
    store.tag_run(font, runs[0], add=["new"], remove=["serif"])
    store.describe_run(font, runs[0], name="renamed")
    [info] = store.list_runs(font, tags=["new"])
    assert info.run_id == runs[0] and info.name == "renamed" and info.tags == ("new",)


def test_a_change_in_the_same_clock_tick_is_not_missed(store: aoe.Store, font: str, monkeypatch) -> None:
    """Pretend the folder's mtime cannot move (a coarse clock): a run added after a sync
    must still appear, because a recently changed folder is always scanned again."""
    store.save_model(font, {"w": torch.ones(1)})
    frozen = store.backend.folder_version(f"{font}/runs")
    monkeypatch.setattr(store.backend, "folder_version", lambda prefix: frozen)
    assert len(store.list_runs(font)) == 1
    store.save_model(font, {"w": torch.zeros(1)})
    assert len(store.list_runs(font)) == 2


def test_an_unchanged_folder_is_not_scanned(store: aoe.Store, font: str, monkeypatch) -> None:
    store.save_model(font, {"w": torch.ones(1)})
    store.list_runs(font)
    db = store.catalog._db()
    db.execute("UPDATE fonts SET synced_ns = synced_ns + 10000000000")  # synced long after the last change
    monkeypatch.setattr(store.backend, "list_versions", lambda *args: pytest.fail("scanned an unchanged folder"))
    assert len(store.list_runs(font)) == 1


def packed_generations(store: aoe.Store, font: str, kind: str = "info") -> list[int]:
    return [g for (g,) in store.catalog._db().execute(
        "SELECT generation FROM packed WHERE font_id = ? AND kind = ?", (font, kind))]


class Statements:
    """The SQL a Store's index runs, as SQLite traces it (its values written in)."""

    def __init__(self, store: aoe.Store) -> None:
        self.seen: list[str] = []
        store.catalog._db().set_trace_callback(self.seen.append)

    def read(self, kind: str, *, later_only: bool) -> bool:
        """Whether it read the font's values of a kind: all of them, or those written later."""
        sql = whole_font_sql(kind, later=later_only)
        return any(s.startswith(sql.split(":font")[0]) and ("generation >" in s) == later_only for s in self.seen)


def test_a_settled_font_is_listed_from_one_packed_value(store: aoe.Store, font: str, runs: list[str]) -> None:
    expected = [info.to_dict() for info in store.list_runs(font)]
    assert packed_generations(store, font) == []  # just changed: being trained, maybe; nothing packed
    settle(store)
    assert [info.to_dict() for info in aoe.Store(store.root).list_runs(font)] == expected  # reads the rows, packs them
    assert len(packed_generations(store, font)) == 1
    lister = aoe.Store(store.root)
    statements = Statements(lister)
    assert [info.to_dict() for info in lister.list_runs(font)] == expected
    assert not statements.read("info", later_only=False)  # not the rows: the packed value


def test_a_settled_font_is_listed_as_json_from_one_packed_value(store: aoe.Store, font: str, runs: list[str]) -> None:
    expected = json.loads(store.list_runs_json(font))
    assert [run["run_id"] for run in expected] == runs and packed_generations(store, font, "json") == []
    settle(store)
    assert json.loads(aoe.Store(store.root).list_runs_json(font)) == expected  # reads the rows, packs them
    assert len(packed_generations(store, font, "json")) == 1
    lister = aoe.Store(store.root)
    statements = Statements(lister)
    assert json.loads(lister.list_runs_json(font)) == expected
    assert not statements.read("json", later_only=False)
    store.catalog._db().execute("UPDATE packed SET value = ? WHERE kind = 'json'", (b"\xff\xfe",))  # not UTF-8
    assert json.loads(aoe.Store(store.root).list_runs_json(font)) == expected
    store.catalog._db().execute("UPDATE packed SET runs = runs + 1")  # of another number of runs than the index
    assert json.loads(aoe.Store(store.root).list_runs_json(font)) == expected
    assert json.loads(aoe.Store(store.root).list_runs_json(font, status="failed")) == \
        [run for run in expected if run["status"] == "failed"]


def packed_json_then(store: aoe.Store, font: str, change: Callable[[], object]) -> tuple[list[dict], Statements]:
    """The font's JSON packed while settled, then ``change``: what a new Store lists, and
    the SQL it ran."""
    store.list_runs(font)
    settle(store)
    aoe.Store(store.root).list_runs_json(font)  # packs the JSON
    change()
    lister = aoe.Store(store.root)
    statements = Statements(lister)
    return json.loads(lister.list_runs_json(font)), statements


def test_the_packed_json_is_read_with_the_runs_saved_since(store: aoe.Store, font: str, runs: list[str]) -> None:
    saved: list[str] = []
    listed, statements = packed_json_then(store, font, lambda: saved.append(store.save_model(font, {"w": torch.ones(3)})))
    assert [run["run_id"] for run in listed] == [*runs, *saved]
    assert statements.read("json", later_only=True) and not statements.read("json", later_only=False)
    assert listed == [info.to_dict() for info in aoe.Store(store.root).list_runs(font)]


def test_the_packed_json_is_not_used_when_a_run_was_replaced(store: aoe.Store, font: str, runs: list[str]) -> None:
    listed, statements = packed_json_then(store, font, lambda: store.amend_run(font, runs[-1], name="amended"))
    assert [run["run_id"] for run in listed] == runs and listed[-1]["name"] == "amended"
    assert statements.read("json", later_only=False)  # the copy cannot say where the old JSON was: all read


def test_the_packed_json_is_not_used_when_a_run_sorts_before_it(store: aoe.Store, font: str, runs: list[str]) -> None:
    saved: list[str] = []
    listed, statements = packed_json_then(store, font, lambda: saved.append(
        store.save_model(font, {"w": torch.ones(3)}, started_at=datetime(2020, 1, 1, tzinfo=UTC))))
    assert [run["run_id"] for run in listed] == [*saved, *runs]  # a run of 2020 comes first
    assert statements.read("json", later_only=False)


def test_a_packed_copy_is_read_with_the_rows_written_since(store: aoe.Store, font: str, runs: list[str]) -> None:
    store.list_runs(font)
    settle(store)
    aoe.Store(store.root).list_runs(font)  # packs the rows
    [packed_at] = packed_generations(store, font)
    new = store.save_model(font, {"w": torch.ones(3)}, name="after")
    store.amend_run(font, runs[0], name="amended")
    lister = aoe.Store(store.root)
    statements = Statements(lister)
    listed = lister.list_runs(font)
    assert [i.run_id for i in listed] == [*runs, new]
    assert listed[-1].name == "after" and listed[0].name == "amended"  # a new run and a changed one
    assert statements.read("info", later_only=True) and not statements.read("info", later_only=False)
    assert packed_generations(store, font) == [packed_at]  # the font changed just now: not packed again
    settle(store)
    assert [i.to_dict() for i in aoe.Store(store.root).list_runs(font)] == [i.to_dict() for i in listed]
    assert packed_generations(store, font) == [packed_at + 1]  # settled again: packed with the new rows


def test_a_sync_reads_the_refs_tokens_from_their_packed_copy(store: aoe.Store, font: str, runs: list[str]) -> None:
    store.list_runs(font)
    settle(store)
    store.save_model(font, {"w": torch.ones(3)})
    aoe.Store(store.root).list_runs(font)  # reads every token to find the new run; they had settled: packed
    assert len(packed_generations(store, font, "tokens")) == 1
    new = store.save_model(font, {"w": torch.ones(4)})
    lister = aoe.Store(store.root)
    statements = Statements(lister)
    assert [i.run_id for i in lister.list_runs(font)][-1] == new
    assert statements.read("tokens", later_only=True) and not statements.read("tokens", later_only=False)


def test_packed_copies_are_dropped_when_a_run_is_removed(store: aoe.Store, font: str, runs: list[str]) -> None:
    store.list_runs(font)
    settle(store)
    aoe.Store(store.root).list_runs(font)
    assert packed_generations(store, font) != []
    store.delete_run(font, runs[1])
    assert [i.run_id for i in aoe.Store(store.root).list_runs(font)] == [runs[0], *runs[2:]]
    assert [*packed_generations(store, font), *packed_generations(store, font, "tokens")] == []


def test_a_packed_copy_of_another_number_of_runs_is_not_used(store: aoe.Store, font: str, runs: list[str]) -> None:
    store.list_runs(font)
    settle(store)
    aoe.Store(store.root).list_runs(font)
    new = store.save_model(font, {"w": torch.ones(3)}, name="after")
    store.catalog._db().execute("UPDATE packed SET runs = runs + 1")  # of as many runs as the font has now
    listed = aoe.Store(store.root).list_runs(font)
    assert [i.run_id for i in listed] == [*runs, new] and listed[-1].name == "after"


@pytest.mark.parametrize("packed", [False, True])
def test_a_sync_committed_while_a_listing_reads_is_not_taken_for_damage(
        store: aoe.Store, font: str, runs: list[str], packed: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    store.list_runs(font)
    if packed:
        settle(store)
        aoe.Store(store.root).list_runs(font)
    writer, reader = aoe.Store(store.root), aoe.Store(store.root)
    reader.catalog.sync([font])
    saved: list[str] = []

    def another_process_saves(statement: str) -> None:  # as the listing starts reading its runs' rows
        if not saved and statement.startswith("SELECT generation, runs, value, checked FROM packed" if packed
                                               else "SELECT run_id, info, checked FROM run_info"):
            saved.append(writer.save_model(font, {"w": torch.ones(5)}))
            writer.list_runs(font)  # its sync commits the new run's rows

    reader.catalog._db().set_trace_callback(another_process_saves)
    monkeypatch.setattr(Catalog, "_start_afresh", lambda self: pytest.fail("took a concurrent sync for damage"))
    assert [i.run_id for i in reader.catalog.runs(Query([font]))] == runs  # the index as the listing began
    assert saved and [i.run_id for i in reader.list_runs(font)] == [*runs, *saved]


def test_a_busy_index_is_not_waited_for_to_keep_a_packed_copy(store: aoe.Store, font: str, runs: list[str]) -> None:
    expected = [info.to_dict() for info in store.list_runs(font)]
    settle(store)
    other = sqlite3.connect(store.catalog.path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")  # another process writing the index
    began = time.monotonic()
    assert [info.to_dict() for info in aoe.Store(store.root).list_runs(font)] == expected
    assert time.monotonic() - began < 5  # the index waits 30 s for a sync's write, not for this
    other.execute("ROLLBACK")
    assert packed_generations(store, font) == []
    aoe.Store(store.root).list_runs(font)
    assert len(packed_generations(store, font)) == 1


@pytest.mark.parametrize("damage", [b"not msgpack", [[], []], [["a", "a"], [b"", b""]], [[1], [2]]])
def test_a_damaged_packed_copy_is_passed_over(store: aoe.Store, font: str, runs: list[str], damage) -> None:
    expected = [info.to_dict() for info in store.list_runs(font)]
    settle(store)
    aoe.Store(store.root).list_runs(font)
    value = damage if isinstance(damage, bytes) else msgpack.packb(damage, use_bin_type=True)
    store.catalog._db().execute("UPDATE packed SET value = ? WHERE kind = 'info'", (value,))
    assert [info.to_dict() for info in aoe.Store(store.root).list_runs(font)] == expected


class CountedStats:
    """``os.scandir`` as the local backend calls it, counting the refs it stats."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.stats = 0
        real = local_backend.os.scandir

        @contextlib.contextmanager
        def scandir(path):
            with real(path) as entries:
                yield [self.Entry(self, entry) for entry in entries]

        monkeypatch.setattr(local_backend.os, "scandir", scandir)

    class Entry:
        def __init__(self, counter: CountedStats, entry: os.DirEntry) -> None:
            self.counter, self.entry, self.name = counter, entry, entry.name

        def __getattr__(self, name: str):
            return getattr(self.entry, name)

        def stat(self, **kwargs):
            self.counter.stats += 1
            return self.entry.stat(**kwargs)


def test_a_new_run_costs_a_listing_one_stat_and_a_moved_ref_a_full_check(
    store: aoe.Store, font: str, runs: list[str], monkeypatch
) -> None:
    store.list_runs(font)
    counted = CountedStats(monkeypatch)
    new = store.save_model(font, {"w": torch.ones(3)})
    assert [i.run_id for i in store.list_runs(font)] == [*runs, new]
    assert counted.stats == 1  # the new ref; the others are the same files as before
    counted.stats = 0
    store.tag_run(font, runs[0], add=["moved"])  # a ref moved: its font's change note is rewritten
    assert [i.run_id for i in store.list_runs(font, tags=["moved"])] == [runs[0]]
    assert counted.stats == len(runs) + 2  # after a move every ref is checked once (and the note)


def test_an_amend_whose_ref_reuses_the_old_file_number_is_seen(store: aoe.Store, font: str, runs: list[str]) -> None:
    """Two amends between listings can put a ref in a file with the inode its first file
    had (the file system reuses the freed number): the change note written before each
    move is what makes the listing look again."""
    store.list_runs(font)
    ref = store.root / font / "runs" / runs[0]
    first_file, inode = ref.with_name("kept"), os.stat(ref).st_ino
    os.link(ref, first_file)  # keeps the first file's inode for the amended ref to reuse
    aoe.Store(store.root).tag_run(font, runs[0], add=["amended"])  # another process amends
    first_file.write_bytes(ref.read_bytes())
    os.replace(first_file, ref)
    assert os.stat(ref).st_ino == inode
    assert store.list_runs(font)[0].tags == ("serif", "amended")
    report = fsck(store)
    assert report.clean and not [f for f in report.findings if f.kind == "unknown-file"]  # the note is no stray


def test_unreadable_runs_are_listed_as_such(store: aoe.Store, font: str, runs: list[str]) -> None:
    (store.root / font / "runs" / runs[2]).write_text("garbage\n")
    listed = {i.run_id: i for i in store.list_runs(font)}
    assert listed[runs[2]].status == "unreadable" and "aoe store fsck" in listed[runs[2]].description
    assert len(listed) == 6


def test_fsck_finds_and_repairs_a_lying_index(store: aoe.Store, font: str, runs: list[str]) -> None:
    store.list_runs(font)
    store.catalog._db().execute("UPDATE runs SET manifest = ? WHERE run_id = ?", ("0" * 64, runs[0]))
    report = fsck(store)
    [finding] = [f for f in report.findings if f.kind == "stale-index"]
    assert finding.runs == (f"{font}/{runs[0]}",) and report.clean
    assert fsck(store, repair=True).repaired == ["rebuilt the catalog index"]
    assert not [f for f in fsck(store).findings if f.kind == "stale-index"]


def test_font_summaries_and_disk_usage(store: aoe.Store, font: str, runs: list[str]) -> None:
    store.create_font("empty")
    [fruity, empty] = store.font_summaries()
    assert (fruity.runs, fruity.newest_run, empty.runs, empty.newest_run) == (6, runs[-1], 0, None)
    weights = {"w": torch.randn(50_000)}  # 200 kB, saved three times: stored once
    for _ in range(3):
        store.save_model("2-empty", weights)
    usage = store.disk_usage()
    assert usage["fonts"][font]["runs"] == 6 and usage["fonts"]["2-empty"]["runs"] == 3
    assert usage["fonts"]["2-empty"]["logical_bytes"] == 3 * 200_000
    assert 3.3 <= usage["fonts"]["2-empty"]["dedup_ratio"] < 3.8  # 3 copies, each stored in ~0.84 of its size
    assert usage["dedup_ratio"] > 2 and usage["unreferenced_objects"] == 0


def test_ls_filters_sorting_and_count(capsys, root: Path, tmp_path: Path) -> None:
    store = aoe.Store(root)
    font = store.create_font("fruity")
    for loss, tag in [(0.3, "a"), (0.1, "b"), (0.2, "a")]:
        store.save_model(font, {"w": torch.ones(1)}, feedback={"final_loss": loss}, tags=[tag], name=f"loss {loss}")
    code, out, _ = run_cli(capsys, "store", "ls", font, "--tag", "a", "--sort", "metrics.final_loss")
    lines = out.splitlines()
    assert code == 0 and "metrics.final_loss" in lines[0] and "loss 0.2" in lines[1] and "loss 0.3" in lines[2]
    code, out, _ = run_cli(capsys, "store", "ls", font, "--where", "metrics.final_loss<0.25", "--json")
    assert [r["name"] for r in json.loads(out)] == ["loss 0.1", "loss 0.2"]
    code, out, _ = run_cli(capsys, "store", "ls", font, "--count", "--tag", "a")
    assert out == "2\n"
    code, out, _ = run_cli(capsys, "store", "ls", font, "--sort", "-name", "--limit", "1", "--offset", "1")
    assert "loss 0.2" in out and "loss 0.3" not in out
    code, _, err = run_cli(capsys, "store", "ls", font, "--where", "bogus")
    assert code == 2 and "FIELD OP VALUE" in err


def test_ls_shows_the_metrics_most_runs_have_or_the_columns_asked_for(capsys, root: Path) -> None:
    store = aoe.Store(root)
    font = store.create_font("fruity")
    for i in range(3):
        feedback = {"final_loss": 0.5 / (i + 1), "val_loss": float("nan"), "glyph_loss": {"A": 0.1}}
        if i == 2:
            feedback["bleu"] = 12.25
        store.save_model(font, {"w": torch.ones(1)}, feedback=feedback, params={"lr": 10 ** -i, "opt": {"b": 1}})
    code, out, _ = run_cli(capsys, "store", "ls", font)
    header, *rows = out.splitlines()
    assert code == 0 and header.split() == ["run", "status", "name", "tags", "metrics.final_loss", "metrics.val_loss",
                                            "metrics.bleu", "missing"]  # the commonest first; no glyph_loss.A
    assert rows[0].split()[2:5] == ["0.5", "nan", "-"] and rows[2].split()[2:5] == ["0.1667", "nan", "12.25"]
    code, out, _ = run_cli(capsys, "store", "ls", font, "--columns", "params.lr, params.opt,time,metrics.glyph_loss.A")
    header, first, *_ = out.splitlines()
    assert header.split()[4:8] == ["params.lr", "params.opt", "time", "metrics.glyph_loss.A"]
    assert first.split()[2:5] == ["1", '{"b":', '1}'] and first.split()[-2:] == ["0.1", "sample,eval_glyphs"]
    code, out, _ = run_cli(capsys, "store", "ls", font, "--columns", "", "--sort", "-params.lr")
    assert out.splitlines()[0].split() == ["run", "status", "name", "tags", "params.lr", "missing"]
    code, _, err = run_cli(capsys, "store", "ls", font, "--columns", "metrics.x,colour")
    assert code == 2 and err.count("\n") == 1 and "unknown field 'colour'" in err


def test_search_tag_describe_reindex_du(capsys, root: Path) -> None:
    store = aoe.Store(root)
    font = store.create_font("fruity")
    run_id = store.save_model(font, {"w": torch.ones(1000)}, name="first try")
    store.save_model(font, {"w": torch.ones(1000)}, name="second")
    code, out, _ = run_cli(capsys, "store", "search", "TRY")
    assert code == 0 and "first try" in out and "second" not in out and font in out
    code, out, _ = run_cli(capsys, "store", "search", "--count")
    assert out == "2\n"
    code, out, _ = run_cli(capsys, "store", "search", "second", "--json", "--font", font)
    assert [r["name"] for r in json.loads(out)] == ["second"]
    code, out, _ = run_cli(capsys, "store", "tag", font, run_id, "serif", "bold")
    assert code == 0 and "tags serif,bold" in out
    code, out, _ = run_cli(capsys, "store", "tag", font, run_id, "--remove", "bold")
    assert "tags serif" in out and store.get_run_info(font, run_id).tags == ("serif",)
    code, _, err = run_cli(capsys, "store", "tag", font, run_id)
    assert code == 2 and "--remove" in err
    code, out, _ = run_cli(capsys, "store", "describe", font, run_id, "--name", "best", "--description", "kept")
    assert code == 0 and store.get_run_info(font, run_id).description == "kept"
    code, _, err = run_cli(capsys, "store", "describe", font, run_id)
    assert code == 2
    code, out, _ = run_cli(capsys, "store", "log", font, run_id)
    assert len(out.splitlines()) == 4  # the save and three edits
    code, out, _ = run_cli(capsys, "store", "reindex")
    assert out == "indexed 2 runs\n"
    code, out, _ = run_cli(capsys, "store", "du")
    assert code == 0 and "(store)" in out and font in out
    store.objects.put(b"orphan")
    code, out, _ = run_cli(capsys, "store", "du", "--json")
    usage = json.loads(out)
    assert usage["unreferenced_objects"] == 1 and usage["fonts"][font]["dedup_ratio"] > 1
    code, out, _ = run_cli(capsys, "store", "du")
    assert "objects no run needs" in out


def test_the_json_listing_is_what_the_run_infos_say(store: aoe.Store, font: str) -> None:
    for i in range(3):
        store.save_model(font, {"w": torch.ones(2)}, feedback={"final_loss": [0.5, float("nan"), 0.25][i]},
                         params={"lr": 0.1 * i}, tags=["bold"] if i else [])
    for filters in ({}, {"tags": ["bold"], "sort": "-metrics.final_loss"}, {"limit": 1, "offset": 1}):
        infos = store.list_runs(font, **filters)
        assert store.list_runs_json(font, **filters) == json.dumps([info.to_dict() for info in infos])


def test_run_infos_from_the_index_decode_on_first_use_and_compare_equal(store: aoe.Store, font: str) -> None:
    run_id = store.save_model(font, {"w": torch.ones(2)}, params={"lr": 0.1}, tags=["bold"])
    direct = store.get_run_info(font, run_id)
    [listed] = aoe.Store(store.root).list_runs(font)
    assert "_row" in listed.__dict__  # nothing decoded yet
    assert listed == direct and listed.params == {"lr": 0.1} and listed.tags == ("bold",)
    assert "_row" not in listed.__dict__ and not hasattr(listed, "no_such_field")


def test_a_page_of_runs_reads_only_its_rows(store: aoe.Store, font: str) -> None:
    runs = [store.save_model(font, {"w": torch.ones(2)}, name=f"run {i}") for i in range(5)]
    fresh = aoe.Store(store.root)
    page = fresh.list_runs(font, limit=2, offset=1)
    assert [i.run_id for i in page] == runs[1:3]
    assert set(fresh.catalog._built[font][1]) == set(runs[1:3])  # the other rows were not read
    assert [i.run_id for i in fresh.list_runs(font)] == runs


def test_listing_every_run_of_a_font_reads_its_rows_in_one_scan_and_keeps_its_order(store: aoe.Store, font: str) -> None:
    runs = [store.save_model(font, {"w": torch.ones(2)}, name=f"run {i}") for i in range(4)]
    fresh = aoe.Store(store.root)
    assert [i.run_id for i in fresh.list_runs(font)] == runs
    assert [r["run_id"] for r in json.loads(fresh.list_runs_json(font))] == runs
    newer = store.save_model(font, {"w": torch.ones(2)}, name="run 4")
    assert [i.run_id for i in fresh.list_runs(font)] == runs + [newer]  # kept objects and the new one, in order
    assert [i.name for i in fresh.list_runs(font, descending=True, limit=2)] == ["run 4", "run 3"]
