"""Comparing two runs: params, feedback, images, and which tensors changed by how much."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import make_png, run_cli

import aoe
from aoe.diff import changes, diff_runs, lines, tensor_table


@pytest.fixture
def pair(store: aoe.Store, font: str) -> tuple[str, str]:
    base = {"frozen": torch.ones(50), "head": torch.ones(10), "gone": torch.zeros(3)}
    first = store.save_model(font, base, [1.0], make_png(1), {"A": make_png(1), "B": make_png(2)},
                             {"final_loss": 0.5, "glyph_loss": {"A": 0.1}}, params={"lr": 0.1, "style": "serif"})
    tuned = {"frozen": torch.ones(50), "head": torch.ones(10) * 1.1, "new": torch.zeros(2),
             "gone": torch.zeros(4)}
    second = store.save_model(font, tuned, [1.0], make_png(1), {"A": make_png(3), "C": make_png(4)},
                              {"final_loss": 0.25, "glyph_loss": {"A": 0.1}}, params={"lr": 0.01, "style": "serif"},
                              tags=["best"])
    return first, second


def test_diff_names_every_difference(store: aoe.Store, font: str, pair: tuple[str, str]) -> None:
    result = diff_runs(store, font, *pair)
    assert [(c.key, c.a, c.b) for c in result.params] == [("lr", 0.1, 0.01)]
    assert [(c.key, c.a, c.b) for c in result.feedback] == [("final_loss", 0.5, 0.25)]
    assert [c.key for c in result.metadata] == ["tags", "ended_at"]  # each saved at its own time
    assert [c.key for c in result.images] == ["glyph A", "glyph B", "glyph C"]  # the samples are equal
    by_name = {t.name: t for t in result.tensors}
    assert by_name["frozen"].status == "same"
    assert by_name["head"].status == "changed" and by_name["head"].relative_change == pytest.approx(0.1, rel=1e-5)
    assert by_name["head"].max_abs_diff == pytest.approx(0.1, rel=1e-5)
    assert (by_name["new"].status, by_name["gone"].status) == ("added", "reshaped")
    text = "\n".join(lines(result))
    assert "params: lr: 0.1 -> 0.01" in text and "tensor: head: changed float32[10] (relative change 0.1" in text
    assert "tensors: 3 differ, 1 identical" in text


def test_diff_without_reading_tensors(store: aoe.Store, font: str, pair: tuple[str, str], monkeypatch) -> None:
    monkeypatch.setattr(aoe.Run, "open_weights", lambda *a, **k: pytest.fail("tensors were read"))
    head = next(t for t in diff_runs(store, font, *pair, measure=False).tensors if t.name == "head")
    assert head.status == "changed" and head.relative_change is None


def test_changes_and_tensor_names() -> None:
    assert changes({"a": {"b": 1, "c": 2}, "d": 3}, {"a": {"b": 1, "c": 5}, "e": 4}) == [
        aoe.diff.Change("a.c", 2, 5), aoe.diff.Change("d", 3, None), aoe.diff.Change("e", None, 4)]
    assert changes(1, 1) == [] and changes([1], [2]) == [aoe.diff.Change("(value)", [1], [2])]
    from aoe.manifests import TensorRecord
    from aoe.objects import Blob

    record = TensorRecord("float32", (2,), Blob(8, ()))
    assert list(tensor_table({"layers": [record, {"x": record}]})) == ["layers[0]", "layers[1].x"]
    assert list(tensor_table(record)) == ["(tensor)"]


def test_the_diff_command(store: aoe.Store, font: str, pair: tuple[str, str], capsys) -> None:
    code, out, _ = run_cli(capsys, "store", "--root", str(store.root), "diff", font, *pair)
    assert code == 0 and "tensor: head: changed" in out and "image: glyph C: added" in out
    code, out, _ = run_cli(capsys, "store", "--root", str(store.root), "diff", font, *pair, "--json", "--no-values")
    data = json.loads(out)
    assert code == 0 and data["params"] == [{"key": "lr", "a": 0.1, "b": 0.01}]
    code, _, err = run_cli(capsys, "store", "--root", str(store.root), "diff", font, pair[0], "20990101T000000.000000Z-0000")
    assert code == 3 and "20990101T000000.000000Z-0000" in err
