"""The README's quickstart: the example trainer runs and leaves a clean store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aoe
from aoe.fsck import fsck

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_fonts.py"


def test_the_example_trains_three_fonts_then_forks_one(tmp_path: Path) -> None:
    """Three fonts of 3 runs (each resuming from the one before), the best run of the first
    forked into a fourth font trained twice more; 7 runs a font: the policy keeps 5 and the
    best two, the alias best at the lowest loss."""
    done = subprocess.run([sys.executable, str(EXAMPLE), "--root", str(tmp_path / "networks"), "--runs", "7"],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    store = aoe.Store(tmp_path / "networks")
    assert store.list_fonts() == ["1-fruity", "2-dumb", "3-aggressive-sans", "4-fruity-bold"]
    assert [len(store.list_runs(f)) for f in store.list_fonts()] == [5, 5, 5, 3]
    assert [len(store.trashed(f)) for f in store.list_fonts()] == [2, 2, 2, 0]
    assert "aoe store serve" in done.stdout
    assert fsck(store, read_data=True).clean
    for font_id in store.list_fonts()[:3]:  # the personality is learned: the web page's trajectory moves
        runs = store.list_runs(font_id)
        vectors = [tuple(store.load_personality(font_id, r.run_id).tolist()) for r in runs]
        assert len(set(vectors)) == 5, font_id
        assert all(r.parents[0]["run_id"] < r.run_id for r in runs)  # each resumed from an earlier run
        losses = {r.run_id: r.metrics["final_loss"] for r in runs}
        assert store.aliases_of(font_id)["best"] == min(losses, key=losses.__getitem__)
    forked = store.list_runs("4-fruity-bold")[0]
    assert (forked.parents[0]["font_id"], forked.parents[0]["run_id"]) == ("1-fruity", store.aliases_of("1-fruity")["best"])
    readme = (EXAMPLE.parents[1] / "README.md").read_text()
    for line in ("aoe store export 1-fruity [RUN_ID] w.pt [--key model]",
                 "aoe store ls 1-fruity --columns metrics.glyph_loss.A,params.lr,time"):
        assert line in readme
    aoe_command = [sys.executable, "-m", "aoe", "store", "--root", str(tmp_path / "networks")]
    exported = subprocess.run([*aoe_command, "export", "1-fruity", str(tmp_path / "w.pt"), "--key", "model"],
                              capture_output=True, text=True)
    assert exported.returncode == 0 and (tmp_path / "w.pt").stat().st_size > 0, exported.stderr
    listed = subprocess.run([*aoe_command, "ls", "1-fruity", "--columns", "metrics.glyph_loss.A,params.lr,time"],
                            capture_output=True, text=True)
    assert listed.returncode == 0 and "glyph_loss.A" in listed.stdout and "warning" not in listed.stderr, listed

