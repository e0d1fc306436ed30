"""The README's quickstart: the example trainer runs and leaves a clean store."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import aoe
from aoe.fsck import fsck

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_fonts.py"


def test_the_example_trains_three_fonts_and_saves_every_run(tmp_path: Path) -> None:
    done = subprocess.run([sys.executable, str(EXAMPLE), "--root", str(tmp_path / "networks")],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    store = aoe.Store(tmp_path / "networks")
    assert [len(store.list_runs(f)) for f in store.list_fonts()] == [3, 3, 3]
    assert "aoe store serve" in done.stdout
    assert fsck(store, read_data=True).clean
    for font_id in store.list_fonts():  # the personality is learned: the web page's trajectory moves
        vectors = [tuple(store.load_personality(font_id, r.run_id).tolist()) for r in store.list_runs(font_id)]
        assert len(set(vectors)) == 3, font_id
