"""Queries: filters, sorting, paging and search over the catalog, and the grammar of a
condition (query.py): numbers compare as numbers, text as text, never across; a value at
the precision written; a condition that cannot be read is an error naming the part."""

from __future__ import annotations

import re

import pytest
import torch
from conftest import names, run_cli

import aoe
from aoe.query import Query, parse_condition


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


def test_query_defaults() -> None:
    assert Query().sort == "run_id" and Query().limit is None


# -- the command line ---------------------------------------------------------------


def test_a_run_answers_for_a_field_as_queries_name_it(store: aoe.Store, font: str) -> None:
    run_id = store.save_model(font, {"w": torch.ones(1)}, feedback={"loss": 0.5, "glyph_loss": {"A": 0.25}},
                              params={"opt": {"lr": 0.01}, "steps": 3})
    info = store.get_run_info(font, run_id)
    assert info.value("metrics.glyph_loss.A") == 0.25 and info.value("metrics.loss") == 0.5
    assert info.value("params.opt.lr") == 0.01 and info.value("params.steps") == 3
    assert info.value("params.opt.missing") is None and info.value("status") == "completed"
    assert info.value("nonsense") is None
