"""The fuzzer of damaged and hostile stores (tests/fuzz_store.py), in its own process
under a memory limit, for a bounded time with a fixed seed. Longer by hand:

    AOE_FUZZ_SECONDS=1800 AOE_FUZZ_SEED=7 python -m pytest tests/test_fuzz.py
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

SECONDS = float(os.environ.get("AOE_FUZZ_SECONDS", "45"))
SEED = int(os.environ.get("AOE_FUZZ_SEED", "2026"))


@pytest.mark.slow
def test_no_damage_crashes_a_reader_writes_outside_dest_or_goes_unnamed(tmp_path: Path) -> None:
    fuzzer = Path(__file__).with_name("fuzz_store.py")
    result = subprocess.run(
        [sys.executable, str(fuzzer), str(tmp_path), "--seed", str(SEED), "--seconds", str(SECONDS),
         "--memory-mb", "1024"],
        capture_output=True, text=True, timeout=SECONDS + 300,
    )
    lines = result.stdout.strip().splitlines()
    problems = [line for line in lines if '"problem"' in line]
    last_round = next((line for line in reversed(lines) if '"round"' in line), "none")
    assert result.returncode == 0 and not problems, (
        f"exit {result.returncode}; last round: {last_round}\n" + "\n".join(problems[:20]) + result.stderr[-3000:])
    summary = json.loads(lines[-1])
    assert summary["rounds"] >= 10, summary  # it did fuzz: every round is a copied store and every reader
    print(f"fuzzed {summary['rounds']} damaged stores in {SECONDS:.0f} s (seed {SEED}): no problem")
