"""A process that races others on one store, for tests/test_racing.py.

    python racer.py ROOT FONT move ALIAS COUNT   # move an alias COUNT times, compare-and-swap
    python racer.py ROOT FONT forget SECONDS     # forget --keep-last 3, again and again
    python racer.py ROOT FONT gc SECONDS         # a zero-grace gc, again and again

Prints one line per thing done: ``moved NUMBER RUN`` or ``conflict``; ``forgot RUN``;
``gc PURGED...``.
"""

from __future__ import annotations

import random
import sys
import time

import aoe
from aoe.gc import collect_garbage


def main(argv: list[str]) -> None:
    root, font, action = argv[0], argv[1], argv[2]
    store = aoe.Store(root)
    if action == "move":
        alias, count = argv[3], int(argv[4])
        runs = [info.run_id for info in store.list_runs(font)]
        for _ in range(count):
            now = store.aliases_of(font).get(alias)
            try:
                move = store.set_alias(font, alias, random.choice(runs), expected_run=now)
            except aoe.ConflictError:
                print("conflict", flush=True)
                continue
            print(f"moved {move.move} {move.run_id}", flush=True)
        return
    deadline = time.monotonic() + float(argv[3])
    while time.monotonic() < deadline:
        if action == "forget":
            for run_id in store.forget(font, {"keep_last": 3}).forgotten:
                print(f"forgot {run_id}", flush=True)
        else:
            try:
                print("gc", *collect_garbage(store, grace=0).runs_purged, flush=True)
            except aoe.GcRunningError:
                pass
        time.sleep(0.02)


if __name__ == "__main__":
    main(sys.argv[1:])
