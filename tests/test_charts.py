"""Charts drawn on the server: plain SVG, one mark per point, nothing dropped."""

from __future__ import annotations

import math
import re
from datetime import UTC, datetime, timedelta

from aoe.charts import metric_chart

START = datetime(2026, 1, 1, tzinfo=UTC)


def points(*values: float) -> list[tuple[datetime, float, str, str]]:
    return [(START + timedelta(hours=i), v, f"/run/f/{i}?a=1&b=<{i}>", f"run {i}") for i, v in enumerate(values)]


def test_every_value_is_a_point_and_a_link_and_non_finite_ones_are_marked() -> None:
    svg = metric_chart(points(0.5, math.nan, 0.25, math.inf, -math.inf, 0.125))
    assert svg.count('class="point"') == 3 and svg.count('class="nonfinite"') == 3
    assert "<title>run 1: NaN</title>" in svg and "<title>run 3: inf</title>" in svg and "run 4: -inf" in svg
    assert svg.count('href="/run/f/') == 6 and 'href="/run/f/0?a=1&amp;b=&lt;0&gt;"' in svg  # escaped
    assert len(re.findall(r"\d+\.\d,\d+\.\d", svg)) == 3  # the line joins the finite points only
    assert ">0.5<" in svg and ">0.125<" in svg  # the axis spans the values


def test_a_log_scale_marks_values_it_cannot_show() -> None:
    svg = metric_chart(points(10.0, 0.0, 1000.0, -1.0), log=True, title="loss")
    assert svg.count('class="point"') == 2 and svg.count('class="nonfinite"') == 2
    assert "run 1: 0 (not on a log scale)" in svg and ">1e+03<" in svg and ">10<" in svg
    assert 'aria-label="log10 loss against time"' in svg


def test_one_point_or_none() -> None:
    assert metric_chart([]) == '<p class="chart-empty">No run has this metric.</p>'
    assert metric_chart(points(3.0)).count('class="point"') == 1


def test_thousands_of_runs_on_one_pixel_are_drawn_once_for_the_newest() -> None:
    many = [(START + timedelta(seconds=i), 1.0 + (i % 3) * 1e-6, f"/run/f/{i}", f"run {i}") for i in range(5000)]
    svg = metric_chart([*many, (START + timedelta(hours=1), 2.0, "/run/f/last", "last")])
    assert svg.count('class="point"') < 800 and 'href="/run/f/last"' in svg and 'href="/run/f/4999"' in svg
    assert "<title>" not in svg  # tooltips only up to 2,000 points
