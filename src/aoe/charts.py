"""Charts drawn on the server as inline SVG: they need no JavaScript, so the web page's
strict Content-Security-Policy stays, and they are plain text a test can read.

Each function takes the numbers and the links and returns SVG markup, every text
escaped; it knows nothing of stores.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from datetime import datetime
from html import escape

WIDTH, HEIGHT = 760, 240
LEFT, RIGHT, TOP, BOTTOM = 64, 12, 22, 26
"""The plot's margins: numbers on the left, times below, non-finite marks on top."""
TITLED = 2000
"""Up to this many points each has a tooltip (its run and value); beyond, only its link."""


def metric_chart(points: Sequence[tuple[datetime, float, str, str]], *, log: bool = False, title: str = "") -> str:
    """A metric against time: one point per (time, value, link, label), joined in time
    order; points that fall on one pixel (thousands of runs) are drawn once, linking to the
    newest of them. NaN, infinities (and, on a log scale, values <= 0) are not dropped:
    each is a marked point on the top edge at its time, titled with what it is."""
    if not points:
        return '<p class="chart-empty">No run has this metric.</p>'
    times = [moment.timestamp() for moment, _, _, _ in points]
    first, last = min(times), max(times)
    span = (last - first) or 1.0
    plotted = [(t, math.log10(v) if log else v) for t, (_, v, _, _) in zip(times, points)
               if math.isfinite(v) and (v > 0 or not log)]
    low = min((v for _, v in plotted), default=0.0)
    high = max((v for _, v in plotted), default=1.0)
    if high == low:
        low, high = low - 1, high + 1
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM

    def x(t: float) -> float:
        return LEFT + (t - first) / span * inner_w

    def y(v: float) -> float:
        return TOP + (high - v) / (high - low) * inner_h

    marks, line, cells = [], [], {}
    titled = len(points) <= TITLED  # a tooltip each costs a browser more than the point itself
    for t, (_, value, link, label) in zip(times, points):
        if math.isfinite(value) and (value > 0 or not log):
            shown = math.log10(value) if log else value
            line.append(f"{x(t):.1f},{y(shown):.1f}")
            tip = f"<title>{escape(label)}: {value:.6g}</title>" if titled else ""
            cells[round(x(t)), round(y(shown))] = (  # points on one pixel: drawn once, for the newest run
                f'<a href="{escape(link)}"><circle class="point" cx="{x(t):.1f}" cy="{y(shown):.1f}" r="3">'
                f"{tip}</circle></a>")
        else:
            what = "NaN" if math.isnan(value) else ("inf" if value == math.inf else "-inf") if math.isinf(value) \
                else f"{value:.6g} (not on a log scale)"
            marks.append(f'<a href="{escape(link)}"><path class="nonfinite" d="M{x(t) - 4:.1f},6 l8,8 m0,-8 l-8,8">'
                         f"<title>{escape(label)}: {escape(what)}</title></path></a>")
    marks = [*cells.values(), *marks]
    axis = "log10 " if log else ""
    labels = (f'<text x="{LEFT - 6}" y="{TOP + 4}" text-anchor="end">{_number(high, log)}</text>'
              f'<text x="{LEFT - 6}" y="{TOP + inner_h}" text-anchor="end">{_number(low, log)}</text>'
              f'<text x="{LEFT}" y="{HEIGHT - 6}">{escape(_day(points[times.index(first)][0]))}</text>'
              f'<text x="{WIDTH - RIGHT}" y="{HEIGHT - 6}" text-anchor="end">'
              f"{escape(_day(points[times.index(last)][0]))}</text>")
    return (f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
            f'aria-label="{escape(axis + title)} against time">'
            f'<rect class="plot" x="{LEFT}" y="{TOP}" width="{inner_w}" height="{inner_h}"/>'
            f'<polyline class="line" points="{" ".join(line)}"/>{labels}{"".join(marks)}</svg>')


def _number(value: float, log: bool) -> str:
    return f"{10 ** value:.3g}" if log else f"{value:.4g}"


def _day(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%d %H:%M")
