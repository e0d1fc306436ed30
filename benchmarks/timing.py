"""What every benchmark here times with: the median of repeated tries."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def median_time(action: Callable[[], object], repeats: int, before: Callable[[], object] | None = None) -> float:
    """Median seconds of ``action`` over ``repeats`` tries; ``before`` runs untimed ahead of each."""
    times = []
    for _ in range(repeats):
        if before:
            before()
        began = time.perf_counter()
        action()
        times.append(time.perf_counter() - began)
    return statistics.median(times)
