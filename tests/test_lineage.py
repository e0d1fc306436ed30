"""Lineage: the runs a run's weights came from, kept in its manifest, and what is drawn
from them (children, ``log --graph``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli

import aoe
from aoe.gc import collect_garbage
from aoe.graph import layout, ordered, text_lines


def saved(store: aoe.Store, font: str, value: float, **run: object) -> str:
    return store.save_model(font, {"w": torch.full((2,), value)}, status="trial", **run)


@pytest.fixture(params=["local", "s3"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> aoe.Store:
    if request.param == "s3":
        return aoe.Store(request.getfixturevalue("s3_url"))
    return aoe.Store(tmp_path / "networks")


def test_a_run_names_the_runs_its_weights_came_from(any_store: aoe.Store) -> None:
    store = any_store
    font = store.create_font("fruity")
    other = store.create_font("other")
    base = saved(store, font, 1.0)
    store.set_alias(font, "best", base)
    tuned = saved(store, other, 2.0, parents=f"{font}@best")  # a fine-tune from another font
    loaded = store.load_model(other, tuned)
    merged = saved(store, font, 3.0, parents=[(font, base), loaded])  # a merge of two
    info = store.get_run_info(font, merged)
    assert [(p["font_id"], p["run_id"]) for p in info.parents] == [(font, base), (other, tuned)]
    assert info.parents[1]["manifest"] == loaded.metadata.manifest  # the very version loaded
    assert store.list_runs(font)[-1].parents == info.parents  # the index says what the manifest says
    assert [(c.font_id, c.run_id) for c in store.children_of(f"{font}@best")] == [(font, merged), (other, tuned)]
    store.amend_run(font, merged, name="merged")  # an amend keeps the lineage
    assert store.get_run_info(font, merged).parents == info.parents
    assert store.list_runs(font)[0].parent is None and store.list_runs(font)[-1].parent is not None
    forked, first = store.fork_font(f"{font}@best", "forked")  # no byte copied, on any store
    assert store.get_run_info(forked, first).parents[0]["run_id"] == base
    assert [n.key for n in store.lineage(forked)] == [(forked, first), (font, base)]


@pytest.mark.parametrize(("parents", "error", "message"), [
    ("1-fruity/20260101T000000.000000Z-0000", aoe.RunNotFoundError, "no run"),
    ("9-nothing", aoe.FontNotFoundError, "no font"),
    (["1-fruity", "1-fruity"], aoe.InvalidInputError, "named twice"),
    ([object()], aoe.InvalidInputError, "a parent is a run"),
    ([("1-fruity", f"@{'x' * 3}")], aoe.NotFoundError, "no alias 'xxx'"),
])
def test_parents_that_are_not_runs_are_refused_before_anything_is_written(
        store: aoe.Store, font: str, parents: object, error: type, message: str) -> None:
    saved(store, font, 1.0)
    with pytest.raises(error, match=message):
        saved(store, font, 2.0, parents=parents)
    assert len(store.list_runs(font)) == 1


def test_a_training_resumed_from_an_alias_starts_from_it_and_names_it(store: aoe.Store, font: str) -> None:
    first = saved(store, font, 1.0)
    store.set_alias(font, "best", first)
    with store.start_run(font, resume_from=f"{font}@best") as run:
        assert torch.equal(run.resumed.weights["w"], torch.ones(2))
        run.save({"w": run.resumed.weights["w"] * 2})
    info = store.get_run_info(font, run.run_id)
    assert [p["run_id"] for p in info.parents] == [first] and info.status == "completed"


def test_a_parent_deleted_and_collected_is_shown_as_such_and_breaks_nothing(
        capsys: pytest.CaptureFixture[str], root: Path) -> None:
    store = aoe.Store(root)
    font = store.create_font("fruity")
    base = saved(store, font, 1.0)
    child = saved(store, font, 2.0, parents=[(font, base)])
    store.delete_run(font, base)
    collect_garbage(store, grace=0)
    assert [i.run_id for i in store.list_runs(font)] == [child]
    code, out, _ = run_cli(capsys, "store", "show", font, child)
    assert code == 0 and f"parents: {font}/{base} (not in the store)" in out
    code, out, _ = run_cli(capsys, "store", "log", "--graph", font)
    assert code == 0 and out.splitlines() == [f"*  {child}  trial", f"x  {base}  (not in the store: deleted?)"]
    code, out, _ = run_cli(capsys, "store", "log", "--graph", font, "--json")
    assert json.loads(out)[1] == {"font_id": font, "run_id": base, "in_store": False, "parents": []}


def test_the_graph_of_resumes_branches_and_merges(capsys: pytest.CaptureFixture[str], root: Path) -> None:
    store = aoe.Store(root)
    font = store.create_font("fruity")
    base = saved(store, font, 1.0, name="base")
    resumed = saved(store, font, 2.0, parents=[(font, base)], name="resumed")
    branch = saved(store, font, 3.0, parents=[(font, base)], name="branch")
    merge = saved(store, font, 4.0, parents=[(font, resumed), (font, branch)], name="merge")
    store.set_alias(font, "best", merge)
    code, out, _ = run_cli(capsys, "store", "log", "--graph", font)
    assert code == 0
    assert out.splitlines() == [
        f"*    {merge}  trial  [best]  merge",
        "| \\",
        f"| *  {branch}  trial  branch",
        f"* |  {resumed}  trial  resumed",
        "| /",
        f"*    {base}  trial  base",
    ]


def test_a_run_is_drawn_above_its_parents_whatever_its_time() -> None:
    """A run's id is its start, which a caller may set before its parent's: the graph
    still puts every run above the runs it came from, and keeps the given order otherwise."""
    parents = {"child": ["parent"], "parent": [], "other": []}
    assert ordered(["parent", "other", "child"], parents) == ["other", "child", "parent"]
    rows = layout(["a", "b", "c"], {"a": ["c"], "b": ["c"], "c": []})
    assert [(r.key, r.column, r.joining) for r in rows] == [("a", 0, ()), ("b", 1, ()), ("c", 0, (1,))]
    assert text_lines(rows, {"a": "a", "b": "b", "c": "c"}) == ["*  a", "| *  b", "| /", "*    c"]


def test_the_graph_of_a_font_of_many_runs_is_quick() -> None:
    """10,000 runs, each resumed from the one before, every tenth also from a branch."""
    import time

    keys = [f"r{i:05d}" for i in range(10_000)][::-1]
    parents = {f"r{i:05d}": [f"r{i - 1:05d}"] + ([f"r{i - 5:05d}"] if i % 10 == 0 and i >= 5 else [])
               for i in range(1, 10_000)}
    started = time.perf_counter()
    lines = text_lines(layout(keys, parents), {k: k for k in keys})
    assert time.perf_counter() - started < 1.0 and len(lines) >= 10_000


def test_lineage_is_checked_in_the_manifest(store: aoe.Store, font: str) -> None:
    """A manifest naming itself, the same run twice, or 65 parents is malformed."""
    from aoe.manifests import ParentRun, pack, pack_tree, unpack, unpack_tree

    run_id = saved(store, font, 1.0)
    fields = unpack_tree(pack(store.open_run(font, run_id).manifest))
    digest = store.get_run_info(font, run_id).manifest
    for parents, message in (
            ([{"font_id": font, "run_id": run_id, "manifest": digest}], "names itself"),
            ([{"font_id": font, "run_id": "20260101T000000.000000Z-0000", "manifest": digest}] * 2, "named twice"),
            ([{"font_id": font, "run_id": f"2026010{1 + i // 60}T0000{i % 60:02d}.000000Z-0000", "manifest": digest}
              for i in range(65)], "at most 64"),
            ([{"font_id": font, "run_id": run_id}], "maps of font_id, run_id and manifest")):
        with pytest.raises(aoe.FormatError, match=message):
            unpack(pack_tree({**fields, "parents": parents}))
    assert ParentRun(font, run_id, digest).to_dict()["run_id"] == run_id


def test_a_fork_is_a_new_font_whose_first_run_is_the_runs_content(
        capsys: pytest.CaptureFixture[str], root: Path) -> None:
    """No byte of the run is copied (only a new manifest is written), its lineage is kept,
    and a fork cut short (its font made, no run yet) is finished by forking again."""
    from conftest import object_files

    store = aoe.Store(root)
    font = store.create_font("fruity")
    run_id = store.save_model(font, {"w": torch.arange(1000.0)}, [0.5, 0.25], tags=["serif"], name="base")
    store.set_alias(font, "best", run_id)
    objects = len(object_files(root))
    code, out, _ = run_cli(capsys, "store", "fork", f"{font}@best", "bold")
    assert code == 0 and out.startswith("forked 2-bold from 1-fruity@best")
    forked = store.get_run_info("2-bold")
    assert len(object_files(root)) == objects + 1  # its manifest
    assert (forked.tags, forked.name, forked.parents[0]["run_id"]) == (("serif",), "base", run_id)
    assert torch.equal(store.load_model("2-bold").weights["w"], torch.arange(1000.0))
    assert [(c.font_id, c.run_id) for c in store.children_of(font, run_id)] == [("2-bold", forked.run_id)]
    store.create_font("cut-short")
    assert store.fork_font(font, "cut-short")[0] == "3-cut-short"
    with pytest.raises(aoe.FontExistsError):
        store.fork_font(font, "bold")  # a font that has runs is never forked into
    code, _, err = run_cli(capsys, "store", "fork", font, "other", "--run", "@nothing")
    assert code == 3 and "no alias 'nothing'" in err
