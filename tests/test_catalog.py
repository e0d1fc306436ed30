"""The catalog: a derived index that answers listings and searches, and never lies."""

from __future__ import annotations

import contextlib
import json
import os
import re
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
from conftest import run_cli

import aoe
from aoe.backends import local as local_backend
from aoe.catalog import Catalog
from aoe.catalog.database import IndexFile
from aoe.catalog.rows import whole_font_sql
from aoe.fsck import fsck
from aoe.query import Query, parse_condition
from aoe.runinfo import feedback_metrics


@pytest.fixture
def runs(store: aoe.Store, font: str) -> list[str]:
    """Six runs with params, feedback metrics, tags, names and times to query."""
    specs = [
        ("serif light", "thin strokes", ["serif"], 0.001, 0.30, "completed"),
        ("serif bold", "heavy Serif strokes", ["serif", "bold"], 0.01, 0.10, "completed"),
        ("sans", "clean", ["sans"], 0.001, 0.20, "completed"),
        ("sans bold", None, ["sans", "bold"], 0.1, 0.50, "failed"),
        (None, "100% effort_", [], 0.01, 0.05, "completed"),
        ("no feedback", None, ["serif"], None, None, "completed"),
    ]
    ids = []
    for day, (name, description, tags, lr, loss, status) in enumerate(specs, start=1):
        feedback = None if loss is None else {"final_loss": loss, "glyph_loss": {"A": loss * 2}, "ok": True}
        ids.append(store.save_model(
            font, {"w": torch.ones(2)}, name=name, description=description, tags=tags,
            params={} if lr is None else {"lr": lr, "opt": {"name": "adam"}}, feedback=feedback, status=status,
            started_at=datetime(2026, 3, day, tzinfo=UTC),
        ))
    return ids


def names(infos) -> list[str | None]:
    return [i.name for i in infos]


def test_listing_filters_combine(store: aoe.Store, font: str, runs: list[str]) -> None:
    assert len(store.list_runs(font)) == 6
    assert names(store.list_runs(font, status="failed")) == ["sans bold"]
    assert names(store.list_runs(font, tags=["bold", "sans"])) == ["serif bold", "sans", "sans bold"]
    assert names(store.list_runs(font, tags=["bold", "sans"], all_tags=True)) == ["sans bold"]
    assert names(store.list_runs(font, since="2026-03-02", until="2026-03-04")) == ["serif bold", "sans"]
    assert names(store.list_runs(font, where=["params.lr=0.001"])) == ["serif light", "sans"]
    assert names(store.list_runs(font, where=["metrics.final_loss<0.25", "status=completed"])) == \
        ["serif bold", "sans", None]
    assert names(store.list_runs(font, where=[("metrics.glyph_loss.A", ">=", 0.6)])) == ["serif light", "sans bold"]
    assert names(store.list_runs(font, where=["params.opt.name='adam'", "params.lr!=0.01"])) == \
        ["serif light", "sans", "sans bold"]
    assert names(store.list_runs(font, where=["name=null"])) == [None]
    assert names(store.list_runs(font, where=["description!=null", "tags_unused=1"][:1])) == \
        ["serif light", "serif bold", "sans", None]


def test_sorting_by_any_field_and_paging(store: aoe.Store, font: str, runs: list[str]) -> None:
    by_loss = store.list_runs(font, sort="metrics.final_loss")
    assert names(by_loss) == [None, "serif bold", "sans", "serif light", "sans bold", "no feedback"]  # missing last
    assert names(store.list_runs(font, sort="-metrics.final_loss"))[:2] == ["sans bold", "serif light"]
    assert names(store.list_runs(font, sort="metrics.final_loss", descending=True))[:2] == ["sans bold", "serif light"]
    assert [i.run_id for i in store.list_runs(font, sort="-time")] == runs[::-1]
    assert names(store.list_runs(font, sort="name", limit=2)) == ["no feedback", "sans"]
    assert names(store.list_runs(font, sort="name", limit=2, offset=2)) == ["sans bold", "serif bold"]
    assert names(store.list_runs(font, offset=5)) == ["no feedback"]
    assert store.count_runs(font) == 6 and store.count_runs(font, tags=["serif"], limit=1) == 3


def test_search_across_fonts(store: aoe.Store, font: str, runs: list[str]) -> None:
    other = store.create_font("dumb")
    store.save_model(other, {"w": torch.zeros(1)}, name="Bold experiment", tags=["bold"])
    assert names(store.search("BOLD")) == ["serif bold", "sans bold", "Bold experiment"]
    assert names(store.search("serif")) == ["serif light", "serif bold"]  # name or description
    assert names(store.search("strokes", sort="-name")) == ["serif light", "serif bold"]
    assert names(store.search("bold", font=other)) == ["Bold experiment"]
    assert names(store.search("bold", tags=["sans"])) == ["sans bold"]
    assert names(store.search("100%")) == [None] and names(store.search("t_")) == [None]  # no wildcards
    assert len(store.search()) == 7 and store.count_runs() == 7
    assert names(store.search("", tags=["bold", "serif"], all_tags=True)) == ["serif bold"]


def test_deleted_fonts_are_not_searched_or_counted(store: aoe.Store, font: str, runs: list[str]) -> None:
    assert len(store.search("bold")) == 2
    store.delete_font(font)
    assert store.search("bold") == [] and store.count_runs() == 0 and store.font_summaries() == []
    store.restore_font(font)
    assert len(store.search("bold")) == 2


@pytest.mark.parametrize("condition", ["nonsense", "lr=0.1", "params.=1", "metrics.a'b<1", "x ~ 1", "drop table<1"])
def test_bad_conditions_and_fields_are_refused(store: aoe.Store, font: str, condition: str) -> None:
    with pytest.raises(aoe.InvalidInputError):
        store.list_runs(font, where=[condition])


def test_bad_sort_fields_and_operators(store: aoe.Store, font: str) -> None:
    with pytest.raises(aoe.InvalidInputError, match="unknown field"):
        store.list_runs(font, sort="weights")
    with pytest.raises(aoe.InvalidInputError, match="unknown operator"):
        parse_condition(("status", "LIKE", "x"))


def test_values_in_conditions() -> None:
    def parsed(text: str) -> tuple:
        condition = parse_condition(text)
        return condition.field, condition.op, condition.kind, condition.value, condition.span

    assert parsed("metrics.loss <= 1e-3") == ("metrics.loss", "<=", "number", 0.001, None)
    assert parsed("metrics.loss == 0.0025") == ("metrics.loss", "=", "number", 0.0025, (0.00245, 0.00255))
    assert parsed("params.n=3") == ("params.n", "=", "number", 3, None)  # a whole number: exact
    assert parsed('name="a b"') == ("name", "=", "text", "a b", None)
    assert parsed("status=3") == ("status", "=", "text", "3", None)  # a text column: text
    assert parsed("params.flag=true") == ("params.flag", "=", "bool", True, None)
    assert parsed("params.opt=adam") == ("params.opt", "=", "text", "adam", None)
    assert parsed("params.opt!='a<b'") == ("params.opt", "!=", "text", "a<b", None)
    assert parsed("ended_at=null") == ("ended_at", "=", "null", None, None)
    assert parsed("time=2026-03-02T14:22Z")[3:] == ("2026-03-02T14:22:00.000000Z",
                                                    ("2026-03-02T14:22:00.000000Z", "2026-03-02T14:23:00.000000Z"))
    assert parsed("time<2026-03-02T05+01:00")[3:] == ("2026-03-02T04:00:00.000000Z", None)
    assert parsed("saved_at!=2026-03-02T05+01:00")[4] == ("2026-03-02T04:00:00.000000Z", "2026-03-02T05:00:00.000000Z")


@pytest.mark.parametrize(("condition", "message"), [
    ("metrics.final_loss<abc", "metrics.final_loss is a number, and 'abc' is not one"),
    ("metrics.final_loss <<0.1", "'<0.1' is not one"),
    ("metrics.final_loss=true", "is a number, and true is not one"),
    ("metrics.final_loss='0.1'", "is a number"),
    ("metrics.final_loss=nan", "'nan' is not one"),
    ("params.lr<<0.1", "'<0.1' is not a value"),
    ("params.lr<null", "take = and != only"),
    ("params.flag>true", "take = and != only"),
    ("time>yesterday", "not an ISO 8601 time"),
    ("name=a b", "not a value: write text in quotes"),
    ("metrics.x=>1", "'>1' is not one"),
])
def test_a_condition_that_cannot_be_read_is_an_error_naming_the_part(
        store: aoe.Store, font: str, runs: list[str], condition: str, message: str) -> None:
    """Never "every run" or "no run": one error naming what could not be read, in the
    API, the command (exit 2, one line) and the web's filter box (400, the form kept)."""
    with pytest.raises(aoe.InvalidInputError, match=re.escape(message)):
        store.list_runs(font, where=[condition])
    with pytest.raises(aoe.InvalidInputError, match=re.escape(message)):
        store.count_runs(font, where=[condition])


def test_numbers_compare_as_numbers_text_as_text_and_never_across(store: aoe.Store, font: str) -> None:
    ids = {name: store.save_model(font, None, name=name, params={"lr": lr, "opt": opt}, feedback={"loss": loss})
           for name, lr, opt, loss in [("a", 0.001, "adam", 0.0025028144), ("b", "auto", "sgd", 0.0026624),
                                       ("c", 0.01, 3, 0.004569)]}

    def listed(*where: str) -> list[str]:
        return [info.name for info in store.list_runs(font, where=list(where))]

    assert listed("metrics.loss==0.002503") == ["a"]  # as `ls` prints it: at the precision written
    assert listed("metrics.loss=0.0025") == ["a"] and listed("metrics.loss=0.00250281450") == []
    assert listed("metrics.loss!=0.002503") == ["b", "c"]
    assert listed("params.lr<1") == ["a", "c"]  # the text "auto" is not less than a number
    assert listed("params.lr>'a'") == ["b"]  # and no number is greater than a text
    assert listed("params.lr=auto") == ["b"] and listed("params.opt!=adam") == ["b"]  # 3 is not text
    assert listed("params.opt=3") == ["c"] and listed("params.opt=null") == []
    assert listed("params.momentum=null") == ["a", "b", "c"] and listed("params.momentum!=null") == []
    assert listed("metrics.loss<inf", "metrics.loss>-inf") == ["a", "b", "c"]
    assert ids


def test_the_command_line_refuses_a_bad_condition_and_warns_of_fields_no_run_has(
        store: aoe.Store, font: str, runs: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    root = ["store", "--root", str(store.root)]
    code, out, err = run_cli(capsys, *root, "ls", font, "--where", "metrics.final_loss<abc")
    assert code == 2 and out == "" and err.strip().splitlines() == [
        "aoe: error: in 'metrics.final_loss<abc': metrics.final_loss is a number, and 'abc' is not one: write "
        "e.g. 0.05, 1e-3, -inf, or null for runs without it"]
    code, out, err = run_cli(capsys, *root, "ls", font, "--where", "metrics.final_los<1")
    assert code == 0 and out.strip() == "no runs match"
    assert err.startswith(f"aoe: warning: no run of {font} has metrics.final_los; they have metrics.final_loss")
    code, out, err = run_cli(capsys, *root, "ls", font, "--sort", "metrics.nosuch", "--columns", "params.lr,params.x")
    assert code == 0 and out.count("\n") == 7
    assert "no listed run has params.x; they have params.lr, params.opt, params.opt.name" in err
    assert "no listed run has metrics.nosuch" in err and "params.lr;" not in err
    code, out, err = run_cli(capsys, *root, "search", "--where", "metrics.nosuch>1")
    assert code == 0 and "no run of any font has metrics.nosuch" in err


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


def test_an_index_of_another_layout_is_started_afresh(store: aoe.Store, font: str, runs: list[str]) -> None:
    store.list_runs(font)
    store.catalog._db().executescript("DROP TABLE runs; CREATE TABLE runs (x);")
    assert len(store.list_runs(font)) == 6


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


def settle(store: aoe.Store) -> None:
    """Make the index believe its fonts last changed long ago (and were synced since)."""
    db = store.catalog._db()
    db.execute("UPDATE fonts SET changed_ns = changed_ns - 10000000000, synced_ns = synced_ns + 10000000000")


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


def test_the_index_is_only_a_cache(store: aoe.Store, font: str, runs: list[str]) -> None:
    store.list_runs(font)
    store.catalog.close()
    index = store.catalog.path
    assert index is not None and store.root not in index.parents  # the user's cache folder, never the store
    index.write_bytes(b"this is not a database")
    fresh = aoe.Store(store.root)
    assert len(fresh.list_runs(font)) == 6
    assert fresh.reindex() == 6


def test_fsck_finds_and_repairs_a_lying_index(store: aoe.Store, font: str, runs: list[str]) -> None:
    store.list_runs(font)
    store.catalog._db().execute("UPDATE runs SET manifest = ? WHERE run_id = ?", ("0" * 64, runs[0]))
    report = fsck(store)
    [finding] = [f for f in report.findings if f.kind == "stale-index"]
    assert finding.runs == (f"{font}/{runs[0]}",) and report.clean
    assert fsck(store, repair=True).repaired == ["rebuilt the catalog index"]
    assert not [f for f in fsck(store).findings if f.kind == "stale-index"]


def test_a_read_only_store_lists_with_an_index_in_memory(store: aoe.Store, font: str, runs: list[str], monkeypatch) -> None:
    fresh = aoe.Store(store.root)
    real_open = IndexFile._open
    monkeypatch.setattr(IndexFile, "_open", lambda self: (_ for _ in ()).throw(OSError(30, "Read-only file system"))
                        if self.path is not None else real_open(self))
    assert len(fresh.list_runs(font)) == 6 and fresh.catalog.path is None


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


def test_query_defaults() -> None:
    assert Query().sort == "run_id" and Query().limit is None


# -- the command line ---------------------------------------------------------------


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


def test_a_run_answers_for_a_field_as_queries_name_it(store: aoe.Store, font: str) -> None:
    run_id = store.save_model(font, {"w": torch.ones(1)}, feedback={"loss": 0.5, "glyph_loss": {"A": 0.25}},
                              params={"opt": {"lr": 0.01}, "steps": 3})
    info = store.get_run_info(font, run_id)
    assert info.value("metrics.glyph_loss.A") == 0.25 and info.value("metrics.loss") == 0.5
    assert info.value("params.opt.lr") == 0.01 and info.value("params.steps") == 3
    assert info.value("params.opt.missing") is None and info.value("status") == "completed"
    assert info.value("nonsense") is None


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


@pytest.mark.parametrize("table", ["run_info", "run_json"])
def test_an_index_missing_a_runs_row_is_rebuilt_not_believed(store: aoe.Store, font: str, table: str) -> None:
    runs = [store.save_model(font, {"w": torch.ones(2)}, name=f"run {i}") for i in range(3)]
    store.catalog._db().execute(f"DELETE FROM {table} WHERE run_id = ?", (runs[1],))
    fresh = aoe.Store(store.root)
    assert [i.name for i in fresh.list_runs(font)] == ["run 0", "run 1", "run 2"]
    assert [r["name"] for r in json.loads(aoe.Store(store.root).list_runs_json(font))] == ["run 0", "run 1", "run 2"]


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
