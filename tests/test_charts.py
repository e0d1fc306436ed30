"""Charts drawn on the server: plain SVG, one mark per point, nothing dropped."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

import numpy as np

from aoe.charts import COLUMNS, SEQUENTIAL, heatmap, metric_chart, trajectory_chart

START = datetime(2026, 1, 1, tzinfo=UTC)


def points(*values: float) -> list[tuple[datetime, float, str, str]]:
    return [(START + timedelta(hours=i), v, f"/run/f/{i}?a=1&b=<{i}>", f"run {i}") for i, v in enumerate(values)]


def test_every_value_is_a_point_and_a_link_and_non_finite_ones_are_marked() -> None:
    svg = metric_chart(points(0.5, math.nan, 0.25, math.inf, -math.inf, 0.125))
    assert svg.count('class="point"') == 3 and svg.count('class="nonfinite"') == 3
    assert "<title>run 1: NaN</title>" in svg and "<title>run 3: inf</title>" in svg and "run 4: -inf" in svg
    assert svg.count('href="/run/f/') == 6 and 'href="/run/f/0?a=1&amp;b=&lt;0&gt;"' in svg  # escaped
    assert len(re.search(r'class="line" points="([^"]*)"', svg)[1].split()) == 3  # type: ignore[index]  # finite ones
    assert ">0.5<" in svg and ">0.125<" in svg  # the axis spans the values


def test_a_log_scale_marks_values_it_cannot_show() -> None:
    svg = metric_chart(points(10.0, 0.0, 1000.0, -1.0), log=True, title="loss")
    assert svg.count('class="point"') == 2 and svg.count('class="nonfinite"') == 2
    assert "run 1: 0 (not on a log scale)" in svg and ">1e+03<" in svg and ">10<" in svg
    assert 'aria-label="log10 loss against time"' in svg


def test_time_labels_tell_runs_seconds_apart_apart_and_values_have_ticks_between() -> None:
    seconds_apart = [(START + timedelta(seconds=3 * i), float(i), f"/run/f/{i}", f"run {i}") for i in range(5)]
    svg = metric_chart(seconds_apart)
    times = re.findall(r'y="234" text-anchor="\w+">([^<]*)<', svg)
    assert times == ["00:00:00", "00:00:03", "00:00:06", "00:00:09", "00:00:12"]  # five ticks, to the second
    assert all(f">{v}<" in svg for v in ("0", "1", "2", "3", "4"))  # the value axis has ticks between its ends
    days_apart = metric_chart([(START + timedelta(days=30 * i), 1.0 + i, "/r", "r") for i in range(3)], log=True)
    assert ">2026-01-01<" in days_apart and ">2026-03-02<" in days_apart and ">log scale<" in days_apart


def test_a_trajectory_draws_both_axes_in_the_same_units() -> None:
    """A path that hardly moves along its second dimension stays a nearly straight line;
    it is not stretched to the full height (a zigzag it never took)."""
    path = [(START + timedelta(hours=i), float(i), 0.001 * (-1) ** i, f"/run/f/{i}", f"run {i}") for i in range(6)]
    svg = trajectory_chart(path, shares=(0.9999999, 0.0000001))
    ys = [float(y) for y in re.findall(r'class="dot" cx="[^"]*" cy="([^"]*)"', svg)]
    xs = [float(x) for x in re.findall(r'class="dot" cx="([^"]*)"', svg)]
    assert max(xs) - min(xs) > 500 and max(ys) - min(ys) < 2
    assert "the path is a line" in svg


def test_one_point_or_none() -> None:
    assert metric_chart([]) == '<p class="chart-empty">No run has this metric.</p>'
    assert metric_chart(points(3.0)).count('class="point"') == 1


def test_thousands_of_runs_on_one_pixel_are_drawn_once_for_the_newest() -> None:
    many = [(START + timedelta(seconds=i), 1.0 + (i % 3) * 1e-6, f"/run/f/{i}", f"run {i}") for i in range(5000)]
    svg = metric_chart([*many, (START + timedelta(hours=1), 2.0, "/run/f/last", "last")])
    assert svg.count('class="point"') < 800 and 'href="/run/f/last"' in svg and 'href="/run/f/4999"' in svg
    assert "<title>" not in svg  # tooltips only up to 2,000 points


def test_a_trajectory_has_a_point_per_run_coloured_by_time_and_joined_in_order() -> None:
    runs = [(START + timedelta(hours=i), float(i), float(i % 2), f"/run/f/{i}?<x>", f"run {i}") for i in range(5)]
    svg = trajectory_chart(runs, shares=(0.8, 0.15))
    assert svg.count('class="dot"') == 5 and svg.count('href="/run/f/') == 5 and "?&lt;x&gt;" in svg
    colours = re.findall(r'class="dot" cx="[\d.]+" cy="[\d.]+" r="3.5" fill="(#[0-9a-f]{6})"', svg)
    assert colours[0] == SEQUENTIAL[0] and colours[-1] == SEQUENTIAL[-1] and len(set(colours)) == 5
    path = re.search(r'class="path" points="([^"]+)"', svg)[1].split()  # type: ignore[index]
    xs = [float(p.split(",")[0]) for p in path]
    assert len(path) == 5 and xs == sorted(xs)  # joined in run order (x grows with i here)
    assert "PC1 (80.0% of the variance)" in svg and "PC2 (15.0%)" in svg and ">first<" in svg and ">newest<" in svg
    assert trajectory_chart([]) == '<p class="chart-empty">No run has a personality vector.</p>'


def cells(svg: str) -> dict[tuple[int, int], str]:
    """(row, column) -> fill of every heatmap cell, read back from its colour paths."""
    found = {}
    for fill, d in re.findall(r'<path fill="(#[0-9a-f]{6})" d="([^"]+)"', svg):  # in cells, scaled by their group
        for x, y, w in re.findall(r"M(\d+),(\d+)h(\d+)", d):
            for column in range(int(x), int(x) + int(w)):
                assert (int(y), column) not in found  # no cell drawn twice
                found[int(y), column] = fill
    return found


def test_a_heatmap_has_a_cell_per_run_and_row_and_marks_what_is_not_a_number() -> None:
    values = np.array([[0.1, 0.2], [math.nan, 0.4], [0.5, math.inf]])
    missing = np.array([[False, False], [False, False], [False, True]])  # run 2 has no second value
    runs = [(f"/run/f/{i}", f"run {i}") for i in range(3)]
    svg = heatmap(values, ["A", "<B>"], runs, missing=missing, row_links=["/a", "/b"])
    drawn = cells(svg)
    assert len(drawn) == 6 and svg.count('<a href="/run/f/') == 3 and "&lt;B&gt;" in svg
    assert drawn[0, 0] == SEQUENTIAL[0] and drawn[0, 2] == SEQUENTIAL[-1]  # 0.1 lowest, 0.5 highest
    assert drawn[0, 1] == "#cccccc" and drawn[1, 2] == "#f4f4f4"  # NaN: no finite value; missing: nothing
    assert re.search(r'class="nonfinite-cell" [^>]*d="M1,0h1v1h-1z"', svg)  # run 1's A is outlined
    assert "<title>run 1: A no finite value (1 NaN or infinite), &lt;B&gt; 0.4</title>" in svg  # each value told
    assert "<title>run 2: A 0.5, &lt;B&gt; none</title>" in svg  # missing is not NaN: nothing was reported
    assert '<a href="/a"><text' in svg and svg.count("<path") <= 7  # colours and the outline


def test_a_heatmap_of_many_runs_averages_them_into_columns() -> None:
    runs = [(f"/run/f/{i}", f"run {i}") for i in range(1000)]
    values = np.arange(1000.0)[:, None] * np.ones((1, 3))
    values[10, 1] = math.nan
    svg = heatmap(values, ["a", "b", "c"], runs, diverging=True)
    assert len(cells(svg)) == 3 * COLUMNS and svg.count('class="column"') == COLUMNS
    assert 'href="/run/f/999"' in svg and 'href="/run/f/0"' not in svg  # a column links to its newest run
    assert "<title>run 0 to run 5 (6 runs, mean): a 2.5, b 2.5, c 2.5</title>" in svg
    assert re.search(r'class="nonfinite-cell" [^>]*d="M1,1h1v1h-1z"', svg)  # run 10 is in column 1
    assert re.search(r"> -(99\d) to \1 <", svg)  # a diverging scale is symmetric about zero (column means)
    assert svg.count("<path") <= 48 + 2  # one path per colour, not one element per cell
    assert f'transform="translate(15 22) scale({733 / COLUMNS:.4f} ' in svg  # cells to pixels: 733 for 160 columns
    assert heatmap(np.zeros((0, 2)), ["a", "b"], []) == '<p class="chart-empty">Nothing to show.</p>'


def test_thousands_of_distinct_points_are_paths_reached_through_squares() -> None:
    many = [(START + timedelta(minutes=i), float(i % 97), f"/run/f/{i}", f"run {i}") for i in range(10_000)]
    svg = metric_chart(many)
    assert 'class="point"' not in svg and svg.count('class="point-many"') == 1
    squares = re.findall(r'<a href="/run/f/(\d+)"><rect class="hit" x="(-?\d+)" y="(-?\d+)"', svg)
    assert 100 < len(squares) < 3000 and len(svg) < 400_000  # a few thousand elements at most, not 10,000 links
    assert "9999" in {run for run, _, _ in squares}  # the newest run is reachable
    assert len({(x, y) for _, x, y in squares}) == len(squares)  # one link per square
    trajectory = trajectory_chart([(START + timedelta(minutes=i), math.cos(i / 500), math.sin(i / 300),
                                    f"/run/f/{i}", f"run {i}") for i in range(10_000)])
    assert trajectory.count('class="dot-many"') > 10 and 'class="dot"' not in trajectory  # a path per time colour
    assert '<a href="/run/f/9999"><rect class="hit"' in trajectory
