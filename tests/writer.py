"""A trainer in its own process, for the concurrency and kill -9 tests.

    python writer.py ROOT FONT_ID FIRST COUNT [--same-moment] [--mb N] [--keep-going]

saves COUNT runs whose weights are derived from their seed (FIRST, FIRST+1, ...), so
any run found later can be checked bit for bit against :func:`expected_weights`. Prints
each run id; with --keep-going a save that fails prints ``failed SEED: <the error>`` (one
line, as aoe's errors are) and the writer goes on with the next seed.
"""

from __future__ import annotations

import sys
from datetime import UTC, datetime

import torch

import aoe

SAME_MOMENT = datetime(2026, 1, 1, tzinfo=UTC)


def expected_weights(seed: int, megabytes: float = 0.1) -> dict[str, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    shared = torch.Generator().manual_seed(12345)  # a layer every run shares: exercises dedup
    count = int(megabytes * 1024 * 1024 / 4)
    return {
        "frozen.weight": torch.randn(256, generator=shared),
        "head.weight": torch.randn(count, generator=generator),
        "head.bias": torch.randn(7, generator=generator),
    }


def main(argv: list[str]) -> None:
    root, font_id, first, count = argv[0], argv[1], int(argv[2]), int(argv[3])
    megabytes = float(argv[argv.index("--mb") + 1]) if "--mb" in argv else 0.1
    store = aoe.Store(root)
    for seed in range(first, first + count):
        started = SAME_MOMENT if "--same-moment" in argv else None
        try:
            run_id = store.save_model(
                font_id, expected_weights(seed, megabytes), [float(seed)], feedback={"seed": seed},
                params={"seed": seed, "mb": megabytes}, started_at=started,
            )
        except aoe.StoreError as exc:
            if "--keep-going" not in argv:
                raise
            print(f"failed {seed}: {exc}", flush=True)
            continue
        print(run_id, flush=True)


if __name__ == "__main__":
    main(sys.argv[1:])
