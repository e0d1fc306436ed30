"""Charts drawn on the server as inline SVG: they need no JavaScript, so the web page's
strict Content-Security-Policy stays, and they are plain text a test can read.

Each function takes the numbers and the links and returns SVG markup, every text
escaped; it knows nothing of stores. Nothing is dropped: NaN and infinities are marked,
and thousands of runs share pixels (drawn once) or columns (averaged, the count said).
"""

from __future__ import annotations

import functools
import itertools
import math
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from html import escape
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np

WIDTH, HEIGHT = 760, 240
LEFT, RIGHT, TOP, BOTTOM = 72, 12, 22, 26
"""The plot's margins: numbers on the left, times below, non-finite marks on top."""
TITLED = 2000
"""Up to this many points (or heatmap cells) each has a tooltip; beyond, only its link."""
DRAWN = 300
"""Up to this many distinct points a chart draws each as its own linked circle; beyond,
as paths, with links by 8-pixel square (see ``_dots``)."""
X_TICKS, Y_TICKS = 5, 5
"""Labelled times along a chart, and values up it (with light grid lines)."""
COLUMNS = 160
"""A heatmap has at most this many columns; more runs share a column, averaged."""
LEVELS = 48
"""Colours a heatmap draws with: cells of one colour are one SVG path, so a heatmap of
thousands of cells is a few dozen elements for a browser to lay out."""
SEQUENTIAL = ("#440154", "#472d7b", "#3b528b", "#2c728e", "#21918c", "#28ae80", "#5ec962", "#addc30", "#fde725")
"""viridis: dark for low values, yellow for high ones; readable in grey and by the colour-blind."""
DIVERGING = ("#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7", "#fddbc7", "#f4a582", "#d6604d", "#b2182b")
"""Blue below zero, white at zero, red above."""


def metric_chart(points: Sequence[tuple[datetime, float, str, str]], *, log: bool = False, title: str = "") -> str:
    """A metric against time: one point per (time, value, link, label), joined in time
    order, each linking to its run (see :func:`_dots` for thousands). NaN, infinities
    (and, on a log scale, values <= 0) are not dropped: each is a marked point on the top
    edge at its time, titled with what it is."""
    import numpy as np

    if not points:
        return '<p class="chart-empty">No run has this metric.</p>'
    times = np.array([moment.timestamp() for moment, _, _, _ in points])
    values = np.array([value for _, value, _, _ in points], dtype=np.float64)
    first, last = int(times.argmin()), int(times.argmax())
    span = (times[last] - times[first]) or 1.0
    shown = np.isfinite(values) & ((values > 0) | (not log))
    with np.errstate(divide="ignore", invalid="ignore"):
        plotted = np.log10(values) if log else values
    low, high = (float(plotted[shown].min()), float(plotted[shown].max())) if shown.any() else (0.0, 1.0)
    if high == low:
        low, high = _around(low)
    inner_w, inner_h = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    xs = LEFT + (times - times[first]) / span * inner_w
    ys = TOP + (1 - _along(np.where(shown, plotted, low), low, high)) * inner_h
    drawn = np.nonzero(shown)[0].tolist()
    tips = [f"{points[i][3]}: {values[i]:.6g}" for i in drawn] if len(points) <= TITLED else None
    dots = _dots(xs[drawn], ys[drawn], [points[i][2] for i in drawn], tips, None, "point")
    marks = []
    for i in np.nonzero(~shown)[0].tolist():
        value = values[i]
        what = "NaN" if math.isnan(value) else ("inf" if value == math.inf else "-inf") if math.isinf(value) \
            else f"{value:.6g} (not on a log scale)"
        marks.append(f'<a href="{escape(points[i][2])}"><path class="nonfinite" d="M{xs[i] - 4:.1f},6 l8,8 m0,-8 l-8,8">'
                     f"<title>{escape(points[i][3])}: {escape(what)}</title></path></a>")
    axis = "log10 " if log else ""
    labels = "".join(
        f'<line class="gridline" x1="{LEFT}" x2="{LEFT + inner_w}" y1="{y:.1f}" y2="{y:.1f}"/>'
        f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{_number(value, log)}</text>'
        for value, y in ((_between(low, high, k / (Y_TICKS - 1)), TOP + inner_h * (1 - k / (Y_TICKS - 1)))
                         for k in range(Y_TICKS)))
    labels += "".join(
        f'<line class="tick" x1="{x:.1f}" x2="{x:.1f}" y1="{TOP + inner_h}" y2="{TOP + inner_h + 4}"/>'
        f'<text x="{x:.1f}" y="{HEIGHT - 6}" text-anchor="{anchor}">{escape(text)}</text>'
        for x, anchor, text in _time_ticks(float(times[first]), float(times[last]), LEFT, inner_w))
    if log:
        labels += f'<text x="{WIDTH - RIGHT}" y="{TOP - 7}" text-anchor="end">log scale</text>'
    return (f'<svg class="chart" viewBox="0 0 {WIDTH} {HEIGHT}" width="{WIDTH}" height="{HEIGHT}" role="img" '
            f'aria-label="{escape(axis + title)} against time">'
            f'<rect class="plot" x="{LEFT}" y="{TOP}" width="{inner_w}" height="{inner_h}"/>'
            f'{labels}<polyline class="line" points="{_line(xs[drawn], ys[drawn])}"/>{dots}{"".join(marks)}</svg>')


def _between(low: float, high: float, fraction: float) -> float:
    """The value ``fraction`` of the way from ``low`` to ``high``, finite for any finite ends."""
    return _finite(low * (1 - fraction) + high * fraction)


def _time_ticks(start: float, end: float, left: float, width: float) -> list[tuple[float, str, str]]:
    """(x, text-anchor, label) of :data:`X_TICKS` times evenly across a time axis (one when
    every point has the same time), labelled at the resolution that tells them apart."""
    count = X_TICKS if end > start else 1
    step = (end - start) / max(count - 1, 1)
    ticks = []
    for k in range(count):
        moment = datetime.fromtimestamp(start + step * k, UTC)
        anchor = "start" if k == 0 else "end" if k == count - 1 else "middle"
        ticks.append((left + width * k / max(count - 1, 1), anchor, _when(moment, step)))
    return ticks


def _when(moment: datetime, resolution: float) -> str:
    """A time as precisely as ``resolution`` seconds (between ticks, or across a chart) needs."""
    if resolution < 120:
        return moment.strftime("%H:%M:%S")
    if resolution < 2 * 86400:
        return moment.strftime("%m-%d %H:%M")
    return moment.strftime("%Y-%m-%d")


def _dots(xs: np.ndarray, ys: np.ndarray, links: Sequence[str], tips: Sequence[str] | None,
          colours: Sequence[str] | None, css: str) -> str:
    """Points at pixel positions, in order, each reachable from its link. Points within
    three pixels of a later one are drawn once, for the later (newer) run. Up to DRAWN
    points each is a circle in a link (with its tooltip, when given); beyond, they are
    drawn as one path per colour, and each 8-pixel square where points are links to the
    newest run there: thousands of runs stay a few hundred elements."""

    keep = _newest_per_cell(xs, ys, 3)
    if len(keep) <= DRAWN:
        return "".join(
            f'<a href="{escape(links[i])}"><circle class="{css}" cx="{xs[i]:.1f}" cy="{ys[i]:.1f}" r="3.5"'
            f'{f" fill={chr(34)}{colours[i]}{chr(34)}" if colours else ""}>'
            f'{f"<title>{escape(tips[i])}</title>" if tips else ""}</circle></a>' for i in keep)
    groups: dict[str, list[str]] = {}
    for i in keep:
        groups.setdefault(colours[i] if colours else "", []).append(f"M{xs[i]:.0f},{ys[i]:.0f}h0")
    paths = "".join(f'<path class="{css}-many" d="{"".join(d)}"{f" stroke={chr(34)}{c}{chr(34)}" if c else ""}/>'
                    for c, d in groups.items())
    squares = "".join(
        f'<a href="{escape(links[i])}"><rect class="hit" x="{round(xs[i] / 8) * 8 - 4}" y="{round(ys[i] / 8) * 8 - 4}">'
        f'{f"<title>{escape(tips[i])}</title>" if tips else ""}</rect></a>'
        for i in _newest_per_cell(xs, ys, 8))
    return paths + squares


def _newest_per_cell(xs: np.ndarray, ys: np.ndarray, cell: int) -> np.ndarray:
    """Indices of the last point in each ``cell``-pixel square, in order."""
    import numpy as np

    keys = np.rint(xs / cell).astype(np.int64) * 65536 + np.rint(ys / cell).astype(np.int64)
    _, last = np.unique(keys[::-1], return_index=True)
    return np.sort(len(keys) - 1 - last)


def _line(xs: np.ndarray, ys: np.ndarray) -> str:
    """Polyline points, leaving out each that lands on the pixel of the one before."""
    import numpy as np

    px, py = np.rint(xs).astype(np.int64), np.rint(ys).astype(np.int64)
    moved = np.ones(len(px), dtype=bool)
    moved[1:] = (px[1:] != px[:-1]) | (py[1:] != py[:-1])
    return " ".join(f"{x},{y}" for x, y in zip(px[moved].tolist(), py[moved].tolist()))


def _number(value: float, log: bool) -> str:
    """An axis end as people read it (on a log scale, the value whose log it is)."""
    if not log:
        return f"{value:.3g}"
    try:
        return f"{10 ** value:.3g}"
    except OverflowError:  # the padded end of a scale reaching the largest float
        return f"1e{value:.4g}"


def _day(moment: datetime) -> str:
    """A point's time in its tooltip: to the second."""
    return moment.strftime("%Y-%m-%d %H:%M:%S")


def trajectory_chart(points: Sequence[tuple[datetime, float, float, str, str]], *,
                     shares: tuple[float, float] = (0.0, 0.0)) -> str:
    """Points in 2-D (a projection of personality vectors), one per (time, x, y, link,
    label) in run order, coloured by time (dark: oldest, yellow: newest) and joined in
    that order so the path the font took is visible; the first and last are ringed. Each
    links to its run (see :func:`_dots` for thousands)."""
    import numpy as np

    if not points:
        return '<p class="chart-empty">No run has a personality vector.</p>'
    size_w, size_h = WIDTH, 320
    inner_w, inner_h = size_w - LEFT - RIGHT, size_h - TOP - BOTTOM
    xs, ys = np.array([p[1] for p in points]), np.array([p[2] for p in points])
    (x_low, x_high), (y_low, y_high) = _equal_units(_span(xs), _span(ys), inner_w / inner_h)
    px = LEFT + _along(xs, x_low, x_high) * inner_w
    py = TOP + (1 - _along(ys, y_low, y_high)) * inner_h
    times = np.array([p[0].timestamp() for p in points])
    fractions = (times - times.min()) / ((times.max() - times.min()) or 1.0)
    palette = _levels(SEQUENTIAL)
    colours = [palette[i] for i in np.rint(fractions * (len(palette) - 1)).astype(int).tolist()]
    tips = [f"{label}: {_day(moment)}" for moment, _, _, _, label in points] if len(points) <= TITLED else None
    dots = _dots(px, py, [p[3] for p in points], tips, colours, "dot")
    ends = "".join(f'<circle class="end" cx="{px[i]:.1f}" cy="{py[i]:.1f}" r="7"/>'
                   + (f'<text x="{px[i] + 9:.1f}" y="{max(py[i] - 6, 10):.1f}">{word}</text>' if px[i] < size_w / 2 else
                      f'<text x="{px[i] - 9:.1f}" y="{max(py[i] - 6, 10):.1f}" text-anchor="end">{word}</text>')
                   for i, word in ((0, "first"), (len(points) - 1, "newest")))  # the label stays inside the chart
    flat = " (the path is a line: one dimension explains it all)" if shares[1] < 0.0005 else ""
    span = float(times.max() - times.min())
    legend = (f'<text x="{LEFT + inner_w / 2}" y="{size_h - 6}" text-anchor="middle">PC1 ({shares[0]:.1%} of the '
              f'variance){flat}</text><text x="14" y="{TOP + inner_h / 2}" '
              f'transform="rotate(-90 14 {TOP + inner_h / 2})" text-anchor="middle">PC2 ({shares[1]:.1%})</text>'
              f'<text x="{LEFT}" y="{TOP - 7}">colour is time: <tspan fill="{SEQUENTIAL[0]}">&#9679;</tspan> '
              f'{escape(_when(points[0][0], span))}</text><text x="{size_w - RIGHT}" y="{TOP - 7}" text-anchor="end">'
              f'<tspan fill="{SEQUENTIAL[-1]}">&#9679;</tspan> {escape(_when(points[-1][0], span))}</text>')
    return (f'<svg class="chart trajectory" viewBox="0 0 {size_w} {size_h}" width="{size_w}" height="{size_h}" '
            f'role="img" aria-label="personality vectors projected to two dimensions, in run order">'
            f'<rect class="plot" x="{LEFT}" y="{TOP}" width="{inner_w}" height="{inner_h}"/>'
            f'<polyline class="path" points="{_line(px, py)}"/>{dots}{ends}{legend}</svg>')


def heatmap(values: np.ndarray, rows: Sequence[str], runs: Sequence[tuple[str, str]], *,
            missing: np.ndarray | None = None, diverging: bool = False, title: str = "",
            row_links: Sequence[str] = ()) -> str:
    """A heatmap of ``values`` (one row per run, one column per name in ``rows``) drawn
    with runs across and the rows down: each column links to a run, its tooltip says
    which (and, for small maps, each value); with more runs than COLUMNS, consecutive runs
    share a column, its cells the mean of their finite values and its link the newest of
    them. A cell with NaN or an infinity among its values is outlined in red (grey when it
    has no finite value), with the count in its tooltip; ``missing`` marks values a run
    does not have (a pale cell when none is left).
    ``diverging``: blue below zero and red above (vectors), else viridis from low to high.
    ``row_links``: where each row's name leads (already escaped, as an ``href``)."""
    import numpy as np

    data = np.asarray(values, dtype=np.float64).reshape(len(runs), len(rows))
    if not len(runs) or not len(rows):
        return '<p class="chart-empty">Nothing to show.</p>'
    edges = np.linspace(0, len(runs), min(len(runs), COLUMNS) + 1).round().astype(int)
    present = np.ones(data.shape, dtype=bool) if missing is None else ~np.asarray(missing, dtype=bool)
    finite = np.isfinite(data) & present
    starts = edges[:-1]
    counts = np.add.reduceat(finite, starts, axis=0)
    nonfinite = np.add.reduceat(present & ~finite, starts, axis=0)
    unit = (float(np.abs(data[finite]).max()) if finite.any() else 1.0) or 1.0
    # sums of values near 1.8e308 would overflow: summed in units of the largest
    means = np.add.reduceat(np.where(finite, data / unit, 0.0), starts, axis=0) / np.maximum(counts, 1) * unit
    known = means[counts > 0]
    if diverging:
        reach = float(np.abs(known).max()) if known.size else 1.0
        low, high = -(reach or 1.0), reach or 1.0
    else:
        low, high = (float(known.min()), float(known.max())) if known.size else (0.0, 1.0)
        if high == low:
            low, high = _around(low)
    palette = DIVERGING if diverging else SEQUENTIAL
    label_w = 8 + 7 * min(16, max(len(r) for r in rows))
    inner_w = WIDTH - label_w - RIGHT
    row_h = max(3.0, min(14.0, 360 / len(rows)))
    cell_w = inner_w / len(starts)
    height = TOP + row_h * len(rows) + BOTTOM
    level = np.where(counts > 0, np.rint(np.clip(_along(means, low, high), 0, 1) * (LEVELS - 1)), -1)
    level = np.where((counts == 0) & (nonfinite > 0), -2, level).astype(int)  # -1: no value, -2: none finite
    fills = {-1: "#f4f4f4", -2: "#cccccc", **dict(enumerate(_levels(palette)))}
    shapes: dict[int, list[str]] = {}
    for row in range(len(rows)):  # each run of equal colours along a row: one rectangle in its colour's path
        cells = level[:, row]
        changes = [0, *(np.nonzero(np.diff(cells))[0] + 1).tolist(), len(cells)]
        for begin, end in itertools.pairwise(changes):  # in cells: the group below scales them to pixels
            shapes.setdefault(int(cells[begin]), []).append(f"M{begin},{row}h{end - begin}v1h{begin - end}z")
    paths = "".join(f'<path fill="{fills[key]}" d="{"".join(parts)}"/>' for key, parts in sorted(shapes.items()))
    titled = len(starts) * len(rows) <= TITLED
    marked = [f"M{column},{row}h1v1h-1z" for column, row in zip(*np.nonzero(nonfinite))]
    marks = f'<path class="nonfinite-cell" vector-effect="non-scaling-stroke" d="{"".join(marked)}"/>' if marked else ""
    columns = []
    for column, (start, end) in enumerate(itertools.pairwise(edges)):
        link, label = runs[end - 1]
        span = label if end - start == 1 else f"{runs[start][1]} to {label} ({end - start} runs, mean)"
        told, bad = [], int(nonfinite[column].sum())
        if titled:  # a small map says each value
            for row in range(len(rows)):
                count, wrong = int(counts[column, row]), int(nonfinite[column, row])
                said = f"{means[column, row]:.4g}" if count else "no finite value" if wrong else "none"
                told.append(f"{rows[row]} {said}{f' ({wrong} NaN or infinite)' if wrong else ''}")
        elif bad:
            told.append(f"{bad} values NaN or infinite")
        tip = escape(span + (": " + ", ".join(told) if told else ""))
        columns.append(f'<a href="{escape(link)}"><rect class="column" x="{label_w + column * cell_w:.1f}" y="{TOP}" '
                       f'width="{cell_w:.1f}" height="{row_h * len(rows):.1f}"><title>{tip}</title></rect></a>')
    step = max(1, math.ceil(len(rows) / (360 / 12)))  # a label every 12 pixels at most
    names = "".join(
        (f'<a href="{row_links[i]}">' if row_links else "")
        + f'<text x="{label_w - 4}" y="{TOP + (i + 0.5) * row_h + 4:.1f}" text-anchor="end">{escape(name[:16])}</text>'
        + ("</a>" if row_links else "") for i, name in enumerate(rows) if i % step == 0)
    scale = (f'<text x="{label_w}" y="{height - 6:.0f}">{escape(runs[0][1])}</text>'
             f'<text x="{WIDTH - RIGHT}" y="{height - 6:.0f}" text-anchor="end">{escape(runs[-1][1])}</text>'
             f'<text x="{label_w + inner_w / 2:.0f}" y="{height - 6:.0f}" text-anchor="middle">'
             f'<tspan fill="{palette[0]}">&#9632;</tspan> {low:.3g} to {high:.3g} '
             f'<tspan fill="{palette[-1]}">&#9632;</tspan></text>')
    return (f'<svg class="chart heatmap" viewBox="0 0 {WIDTH} {height:.0f}" width="{WIDTH}" height="{height:.0f}" '
            f'role="img" aria-label="{escape(title)}"><g shape-rendering="crispEdges" '
            f'transform="translate({label_w} {TOP}) scale({cell_w:.4f} {row_h:.4f})">{paths}{marks}</g>'
            f'{"".join(columns)}{names}{scale}</svg>')


def _span(values: np.ndarray) -> tuple[float, float]:
    """The range of finite values, padded by 5% each side (in finite arithmetic)."""
    low, high = float(values.min()), float(values.max())
    if high == low:
        return _around(low)
    pad = (high / 2 - low / 2) / 10  # (high - low) may overflow; its half cannot
    return _finite(low - pad), _finite(high + pad)


def _equal_units(x: tuple[float, float], y: tuple[float, float], aspect: float
                 ) -> tuple[tuple[float, float], tuple[float, float]]:
    """Ranges for a plot ``aspect`` times wider than high in which one unit is as long
    across as up (a direction that explains little of the variance stays short): the
    narrower range is widened about its middle."""
    width, height = x[1] / 2 - x[0] / 2, y[1] / 2 - y[0] / 2  # halves: finite for any floats
    if width >= height * aspect:
        middle, reach = y[0] / 2 + y[1] / 2, width / aspect
        return x, (_finite(middle - reach), _finite(middle + reach))
    middle, reach = x[0] / 2 + x[1] / 2, height * aspect
    return (_finite(middle - reach), _finite(middle + reach)), y


def _finite(value: float) -> float:
    """A range's end held within the largest float of each sign (an overflow rounds to it)."""
    return max(-sys.float_info.max, min(sys.float_info.max, value))


def _around(value: float) -> tuple[float, float]:
    """A range around one value (every point had it): one unit, or a tenth of the value, each way."""
    reach = max(1.0, abs(value) / 10)
    return _finite(value - reach), _finite(value + reach)


def _along(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Where each value lies from ``low`` (0) to ``high`` (1), computed so that no step
    overflows: values up to the largest float (1.8e308) chart, they never make NaN."""
    scale = max(abs(low), abs(high)) or 1.0
    return (values / scale - low / scale) / (high / scale - low / scale)


@functools.cache
def _levels(palette: tuple[str, ...]) -> list[str]:
    """LEVELS colours evenly along a palette."""
    return [_colour(i / (LEVELS - 1), palette) for i in range(LEVELS)]


def _colour(fraction: float, palette: Sequence[str]) -> str:
    """The colour at ``fraction`` (0 to 1) along a palette, interpolated between its stops."""
    place = min(max(fraction, 0.0), 1.0) * (len(palette) - 1)
    index = min(int(place), len(palette) - 2)
    share = place - index
    a, b = palette[index], palette[index + 1]
    mixed = (round(int(a[i:i + 2], 16) * (1 - share) + int(b[i:i + 2], 16) * share) for i in (1, 3, 5))
    return "#" + "".join(f"{c:02x}" for c in mixed)
