"""Aliases: names of runs that move (``best``, ``production``), every move kept, moved by
compare-and-swap, protecting the runs they name."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import run_cli

import aoe
from aoe.errors import ConflictError, FormatError, NotFoundError, ProtectedRunError
from aoe.fsck import fsck
from aoe.gc import collect_garbage
from aoe.layout import alias_move_key


@pytest.fixture(params=["local", "s3"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> aoe.Store:
    if request.param == "s3":
        return aoe.Store(request.getfixturevalue("s3_url"))
    return aoe.Store(tmp_path / "networks")


def saved(store: aoe.Store, font: str, value: float) -> str:
    return store.save_model(font, {"w": torch.full((3,), value)}, feedback={"loss": value}, status="trial")


def test_an_alias_names_a_run_wherever_a_run_is_named(any_store: aoe.Store) -> None:
    store = any_store
    font = store.create_font("fruity")
    first, second = saved(store, font, 1.0), saved(store, font, 2.0)
    move = store.set_alias(font, "best", first, note="loss 1.0")
    assert (move.run_id, move.move, move.note) == (first, 1, "loss 1.0")
    assert move.manifest == store.get_run_info(font, first).manifest
    assert store.load_model(f"{font}@best").weights["w"][0] == 1.0
    assert store.get_run_info(font, "@best").run_id == first
    assert store.open_run(f"{font}@best").info.run_id == first
    store.set_alias(font, "best", second)
    store.set_alias(font, "production", "@best")  # where another alias points now
    assert store.aliases_of(font) == {"best": second, "production": second}
    assert [m.run_id for m in store.alias_history(font, "best")] == [first, second]
    store.remove_alias(font, "production")
    assert store.aliases_of(font) == {"best": second}
    with pytest.raises(NotFoundError, match="was removed"):
        store.load_model(f"{font}@production")
    with pytest.raises(NotFoundError, match="aliases: best, production"):
        store.load_model(f"{font}@latest")
    assert [m.run_id for m in store.alias_history(font, "production")] == [second, None]


def test_an_alias_moves_by_compare_and_swap(store: aoe.Store, font: str) -> None:
    """A mover that read move n loses to one that created move n+1 first: ConflictError,
    nothing written; ``expected_run`` moves it only from where the caller saw it."""
    first, second, third = (saved(store, font, v) for v in (1.0, 2.0, 3.0))
    store.set_alias(font, "best", first)
    seen = store.aliases.newest_number(font, "best")
    store.aliases.move(font, "best", second, store.refs.read_run(font, second), "2026-12-07T00:00:00Z", after=seen)
    with pytest.raises(ConflictError, match="moved by another process meanwhile"):
        store.aliases.move(font, "best", third, store.refs.read_run(font, third), "2026-12-07T00:00:00Z", after=seen)
    with pytest.raises(ConflictError, match=f"points at {second}, not {first}"):
        store.set_alias(font, "best", third, expected_run=first)
    store.set_alias(font, "best", third, expected_run=second)
    with pytest.raises(ConflictError, match="points at no run"):
        store.set_alias(font, "new", third, expected_run=first)
    store.set_alias(font, "new", third, expected_run=None)
    assert [m.run_id for m in store.alias_history(font, "best")] == [first, second, third]


@pytest.mark.parametrize("name", ["Best", "", "1st", "a/b", "..", "x" * 65, "best!"])
def test_an_alias_name_is_lowercase_and_a_single_path_part(store: aoe.Store, font: str, name: str) -> None:
    run_id = saved(store, font, 1.0)
    with pytest.raises(aoe.InvalidNameError, match="invalid alias"):
        store.set_alias(font, name, run_id)
    with pytest.raises(aoe.InvalidNameError):
        store.load_model(f"{font}@{name}")


def test_a_run_an_alias_names_is_deleted_only_with_force_and_kept_restorable(store: aoe.Store, font: str) -> None:
    """rm refuses; --force deletes, and gc keeps the run restorable for as long as an
    alias points at it; once the alias moves on, the next gc purges it."""
    kept, other = saved(store, font, 1.0), saved(store, font, 2.0)
    store.set_alias(font, "production", kept)
    with pytest.raises(ProtectedRunError, match=f"{font}@production"):
        store.delete_run(font, kept)
    with pytest.raises(ProtectedRunError):
        store.delete_run(f"{font}@production")
    store.delete_run(f"{font}@production", force=True)
    assert collect_garbage(store, grace=0).runs_purged == []
    report = fsck(store)
    assert [f.kind for f in report.findings] == ["dangling-alias"] and report.clean
    with pytest.raises(aoe.RunNotFoundError, match=f"{font}@production is run {kept}, which is not in the font"):
        store.load_model(f"{font}@production")
    store.restore_run(font, kept)
    assert store.load_model(f"{font}@production").weights["w"][0] == 1.0
    store.delete_run(font, kept, force=True)
    store.set_alias(font, "production", other)
    assert collect_garbage(store, grace=0).runs_purged == [f"{font}/{kept}"]


def test_one_unreadable_alias_is_reported_and_hides_no_other(store: aoe.Store, font: str) -> None:
    first = saved(store, font, 1.0)
    store.set_alias(font, "best", first)
    store.set_alias(font, "broken", first)
    store.set_alias(font, "broken", first)
    store.backend.write(alias_move_key(font, "broken", 2), [b'{"run": "../../etc"}'], exclusive=False)
    assert store.aliases_of(font) == {"best": first}
    assert store.load_model(f"{font}@best").weights["w"][0] == 1.0
    with pytest.raises(FormatError, match="malformed"):
        store.load_model(f"{font}@broken")
    with pytest.raises(FormatError, match="none is deleted without force"):
        store.delete_run(font, first)
    with pytest.raises(FormatError, match="gc stopped before removing anything|malformed"):
        collect_garbage(store, grace=0)
    kinds = {f.kind: f.severity for f in fsck(store).findings}
    assert kinds == {"malformed-alias-move": "error"}
    store.set_alias(font, "broken", first)  # a new move mends it
    assert fsck(store).clean and store.aliases_of(font) == {"best": first, "broken": first}


@pytest.mark.parametrize("content", [
    {"run": None, "manifest": "0" * 64},  # a removal that names a manifest
    {"move": 2},  # says it is another move
    {"alias": "other"},  # copied from another alias
    {"font_id": "2-other"},
    {"at": "yesterday"},
    {"note": "\x1b[2J"},
])
def test_a_move_that_is_not_what_it_says_is_malformed(store: aoe.Store, font: str, content: dict) -> None:
    store.set_alias(font, "best", saved(store, font, 1.0))
    key = alias_move_key(font, "best", 1)
    fields = {**json.loads(store.backend.read(key)), **content}
    store.backend.write(key, [json.dumps(fields).encode()], exclusive=False)
    with pytest.raises(FormatError, match=f"alias move {key}"):
        store.alias_history(font, "best")


def test_the_command_line_sets_lists_logs_and_protects(capsys: pytest.CaptureFixture[str], root: Path) -> None:
    store = aoe.Store(root)
    font = store.create_font("fruity")
    first, second = saved(store, font, 1.0), saved(store, font, 2.0)
    assert run_cli(capsys, "store", "alias", font, "best", first, "--note", "first try")[:2] == \
        (0, f"{font}@best -> {first}\n")
    assert run_cli(capsys, "store", "alias", font, "best", second, "--expect", first)[0] == 0
    code, _, err = run_cli(capsys, "store", "alias", font, "best", first, "--expect", first)
    assert code == 7 and err.count("\n") == 1 and "points at" in err
    code, out, _ = run_cli(capsys, "store", "alias", font)
    assert code == 0 and f"{font}@best" in out and second in out
    code, out, _ = run_cli(capsys, "store", "log", f"{font}@best")
    assert code == 0 and out.index(second) < out.index(first) and "first try" in out
    code, out, _ = run_cli(capsys, "store", "ls", font)
    assert code == 0 and "aliases" in out.splitlines()[0] and any(second in line and "best" in line
                                                                  for line in out.splitlines())
    code, out, _ = run_cli(capsys, "store", "show", f"{font}@best", "--json")
    assert code == 0 and json.loads(out)["aliases"] == ["best"] and json.loads(out)["run_id"] == second
    code, _, err = run_cli(capsys, "store", "rm", f"{font}@best")
    assert code == 2 and "--force" in err and err.count("\n") == 1
    code, out, _ = run_cli(capsys, "store", "rm", f"{font}@best", "--force")
    assert code == 0 and second in out
    assert run_cli(capsys, "store", "alias", font, "best", "--remove")[0] == 0
    code, _, err = run_cli(capsys, "store", "alias", font, "best", "--remove")
    assert code == 3 and "no alias 'best' to remove" in err
    code, _, err = run_cli(capsys, "store", "alias", font, "Best", first)
    assert code == 2 and "invalid alias" in err


@pytest.mark.parametrize("hint", [b"1\n", b"99\n", b"", b"x" * 40, b"-3"])
def test_a_stale_or_garbled_newest_hint_costs_a_listing_never_the_answer(store: aoe.Store, font: str,
                                                                           hint: bytes) -> None:
    """The HEAD file a mover leaves beside an alias's moves is only a hint: taken when its
    move is there and the next is not, else the moves are listed."""
    ids = [saved(store, font, float(v)) for v in range(3)]
    for run_id in ids:
        store.set_alias(font, "best", run_id)
    assert store.backend.read(f"{font}/aliases/best/HEAD") == b"3\n"
    store.backend.write(f"{font}/aliases/best/HEAD", [hint], exclusive=False)
    assert store.aliases.newest_number(font, "best") == 3 and store.aliases_of(font)["best"] == ids[2]
    assert [f.kind for f in fsck(store).findings] == []
