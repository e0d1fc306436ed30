"""How a font evolves: the charts above its run table. A metric against time, the
personality vectors' trajectory (PCA) and their dimensions over runs, the per-glyph
losses (glyph x run), and one glyph's image across runs.

Everything is drawn from the font's RunInfos (the index keeps them, and updates only the
changed ones after a save) and its personality vectors (read once, then kept in the
index); what is derived from them (metric counts, the projection, the glyph matrix) is
kept per font until one of its runs changes, so a font of 10,000 runs stays fast. The
strip reads the manifests of the few runs it shows. Every choice is a link (``?metric=``,
``?log=1``, ``?dims=change``, ``?glyphs=``, ``?glyph=``) that keeps the others: no script.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar, cast
from urllib.parse import urlencode

from ..charts import heatmap, metric_chart, trajectory_chart
from ..manifests import Manifest
from ..runinfo import RunInfo
from ..store import Store
from ..vectors import project
from .markup import Query, h, one, thumb, u

if TYPE_CHECKING:
    import numpy as np

CHART_METRICS = 12
"""Metrics a font page offers to chart (the commonest top-level ones)."""
MENU_METRICS = 500
"""At most this many metrics (the commonest) in the menu of every metric."""
SHOWN_DIMS = 64
"""Dimensions of the personality heatmap (the first ones; the page says how many more)."""
SHOWN_GLYPHS = 96
"""Rows of the per-glyph heatmap, and glyphs offered for the strip."""
STRIP = 24
"""Runs in a glyph's strip, evenly spaced from the first to the newest."""
FONTS_KEPT = 8
"""Fonts whose derived chart data a server keeps at once."""
DERIVED_KEPT = 48
"""Things derived from one font's runs kept at once (data and drawn charts, by choice)."""
T = TypeVar("T")
Personality = tuple[list[RunInfo], "np.ndarray", "np.ndarray", tuple[float, float], int]
GlyphMatrix = tuple[list[RunInfo], list[str], "np.ndarray", "np.ndarray"]


class FontData:
    """What a font's charts are drawn from, derived once from its runs (in run id order,
    which is time order) and kept while those runs are the same objects."""

    def __init__(self, store: Store, font_id: str, runs: list[RunInfo]) -> None:
        self.store, self.font_id, self.runs = store, font_id, runs
        self._derived: dict[Any, Any] = {}
        self._lock = threading.RLock()  # one derivation may ask for another

    def same_runs(self, runs: list[RunInfo]) -> bool:
        """Whether ``runs`` are the runs this was derived from (the index hands out the same
        immutable RunInfo objects until a run changes; these are kept alive here, so an
        object's identity cannot be reused)."""
        return len(runs) == len(self.runs) and all(a is b for a, b in zip(runs, self.runs))

    def derived(self, key: Any, compute: Callable[[], T]) -> T:
        """``compute()``, once for this font's runs."""
        with self._lock:
            if key in self._derived:
                return cast(T, self._derived[key])
            value = self._derived[key] = compute()
            while len(self._derived) > DERIVED_KEPT:  # charts for many different choices: the oldest go
                del self._derived[next(iter(self._derived))]
            return value

    def metric_counts(self) -> list[tuple[str, int]]:
        """Each metric with how many runs have it, the commonest first."""
        return self.derived("metrics", lambda: sorted(
            Counter(name for info in self.runs for name in info.metrics).items(), key=lambda kv: (-kv[1], kv[0])))

    def links(self) -> dict[str, tuple[str, Any]]:
        """Each run's page address and time, by run id (10,000 of them are worth keeping)."""
        return self.derived("links", lambda: {
            info.run_id: (f"/run/{u(self.font_id)}/{u(info.run_id)}", info.value("time")) for info in self.runs})

    def glyph_names(self) -> list[str]:
        return self.derived("glyphs", lambda: sorted(set().union(*(info.glyphs for info in self.runs))))

    def personality(self) -> Personality | None:
        """Runs with a vector of the commonest length, their vectors, the projection, the
        variance each axis explains, and how many runs were left out; None without vectors."""
        def compute() -> Personality | None:
            import numpy as np

            series = self.store.personality_series(self.font_id)
            lengths = Counter(len(v) for v in series.values() if v is not None)
            if not lengths:
                return None
            length = lengths.most_common(1)[0][0]
            pairs = [(info, v) for info in self.runs if (v := series.get(info.run_id)) is not None and len(v) == length]
            kept = [info for info, _ in pairs]
            vectors = np.stack([v for _, v in pairs])
            projected, shares = project(vectors)
            return kept, vectors, projected, shares, len(self.runs) - len(kept)

        return self.derived("personality", compute)

    def glyph_matrix(self, group: str) -> GlyphMatrix:
        """The runs that have ``group.<glyph>`` metrics, the glyphs, their values (runs x
        glyphs) and where a run has no value (not the same as NaN)."""
        def compute() -> GlyphMatrix:
            import numpy as np

            prefix = group + "."
            names = sorted(n[len(prefix):] for n, _ in self.metric_counts() if n.startswith(prefix))[:SHOWN_GLYPHS]
            keys = [prefix + name for name in names]
            runs = [info for info in self.runs if any(key in info.metrics for key in keys)]
            values = np.array([[info.metrics.get(key, math.nan) for key in keys] for info in runs], dtype=np.float64)
            values = values.reshape(len(runs), len(keys))
            missing = np.zeros(values.shape, dtype=bool)
            for row in np.nonzero(np.isnan(values).any(axis=1))[0]:  # NaN reported, or nothing: tell them apart
                missing[row] = [key not in runs[row].metrics for key in keys]
            return runs, names, values, missing

        return self.derived(("glyphs", group), compute)


class FontCharts:
    """The charts of font pages, drawn from :class:`FontData` kept per font."""

    def __init__(self, store: Store, manifest: Callable[[str], Manifest]) -> None:
        self.store, self.manifest = store, manifest
        self._fonts: dict[str, FontData] = {}
        self._lock = threading.Lock()

    def data(self, font_id: str) -> FontData:
        runs = self.store.list_runs(font_id)
        with self._lock:
            kept = self._fonts.get(font_id)
            if kept is None or not kept.same_runs(runs):
                kept = self._fonts[font_id] = FontData(self.store, font_id, runs)
                while len(self._fonts) > FONTS_KEPT:
                    del self._fonts[next(iter(self._fonts))]
            return kept

    def html(self, font_id: str, query: Query) -> str:
        """Every chart of the font page, in the order people ask: is it getting better, how
        is its personality moving, which glyphs are hard, how does one glyph look over time."""
        data = self.data(font_id)
        return metric_section(data, query) + personality_section(data, query) + \
            glyph_sections(data, query, self.manifest)


def default_metric(metrics: list[tuple[str, int]]) -> str | None:
    """The metric a font page charts first: the commonest top-level one, a loss among
    equally common ones."""
    top = [(name, count) for name, count in metrics if "." not in name] or metrics
    return min(top, key=lambda item: (-item[1], "loss" not in item[0], item[0]))[0] if top else None


def choice(font_id: str, query: Query, **changes: Any) -> str:
    """The font page's address with these parameters changed and the others kept (the run
    table's page goes back to 1), escaped for an ``href``."""
    kept = {k: v for k, v in query.items() if k not in changes and k != "page"}
    return f"/font/{u(font_id)}?" + h(urlencode({**kept, **{k: [v] for k, v in changes.items()}}, doseq=True))


def chooser(font_id: str, query: Query, name: str, options: Sequence[str], current: str | None) -> str:
    return " ".join(f'<a href="{choice(font_id, query, **{name: option})}"'
                    f'{" class=current" if option == current else ""}>{h(option)}</a>' for option in options)


def metric_section(data: FontData, query: Query) -> str:
    """A metric of every run against time (``?metric=``, ``?log=1``), with links to choose
    another metric or scale; nothing when no run has metrics."""
    metrics = data.metric_counts()
    metric = one(query, "metric") or default_metric(metrics)
    if metric is None:
        return ""
    log = one(query, "log") == "1"

    def chart() -> tuple[int, str]:
        links = data.links()
        points = [(links[info.run_id][1], float(value), links[info.run_id][0], info.run_id)
                  for info in data.runs if (value := info.metrics.get(metric)) is not None]
        return len(points), metric_chart(points, log=log, title=metric)

    count, svg = data.derived(("metric chart", metric, log), chart)
    top = [name for name, _ in metrics if "." not in name][:CHART_METRICS]  # per-glyph ones: from the heatmap
    offered = chooser(data.font_id, query, "metric", top if metric in top else [*top, metric], metric)
    scale = (f'<a href="{choice(data.font_id, query, log=int(not log))}" id="scale">'
             f'{"linear" if log else "log"} scale</a>')
    every = metric_form(data.font_id, query, [name for name, _ in metrics[:MENU_METRICS]], metric) \
        if len(metrics) > len(top) else ""
    return (f'<section id="metric-chart"><h3>{h(metric)} against time ({count} runs)</h3>'
            f"<div class=choices>{offered} · {scale}{every}</div>{svg}</section>")  # a div: a form may not be in a p


def metric_form(font_id: str, query: Query, names: Sequence[str], current: str) -> str:
    """Every metric (nested ones too: ``glyph_loss.A``) in a menu, the page's other choices
    kept: a form, since the page runs no script."""
    kept = "".join(f'<input type="hidden" name="{h(k)}" value="{h(v)}">'
                   for k, values in query.items() if k not in ("metric", "page") for v in values)
    options = "".join(f'<option{" selected" if name == current else ""}>{h(name)}</option>' for name in names)
    return (f' · <form class="inline" method="get" action="/font/{u(font_id)}">{kept}'
            f'<select name="metric" aria-label="any metric">{options}</select> <button>chart</button></form>')


def personality_section(data: FontData, query: Query) -> str:
    """The runs' personality vectors projected to two dimensions, in run order, and their
    dimensions over runs (``?dims=change``: each minus the first run's, so a slow drift
    shows); runs whose vectors have another length than most are left out (and counted)."""
    found = data.personality()
    if found is None:
        return ""
    kept, vectors, projected, shares, left_out = found
    length = vectors.shape[1]
    links = data.links()

    def trajectory() -> str:
        points = [(links[info.run_id][1], x, y, links[info.run_id][0], info.run_id)
                  for info, (x, y) in zip(kept, projected.tolist())]
        return trajectory_chart(points, shares=shares)

    shown = min(length, SHOWN_DIMS)
    note = f"{len(kept)} runs with a vector of {length} numbers"
    if left_out:
        note += f"; {left_out} runs without one (or of another length) left out"
    more = f" (the first {shown} of {length})" if shown < length else ""
    change = one(query, "dims") == "change"
    what = "change since the first run" if change else "values"
    other = (f'<a href="{choice(data.font_id, query, dims="values" if change else "change")}" id="dims">'
             f'{"values" if change else "change since the first run"}</a>')
    dimensions = data.derived(("personality heatmap", change), lambda: heatmap(
        vectors[:, :shown] - vectors[0, :shown] if change else vectors[:, :shown], [f"dim {i}" for i in range(shown)],
        [(links[info.run_id][0], info.run_id) for info in kept], diverging=True, title=f"personality {what}"))
    return (f'<section id="personality"><h3>Personality trajectory</h3><p>{h(note)}</p>'
            f'{data.derived("trajectory", trajectory)}'
            f"<h3>Personality dimensions over runs{more}: {what}</h3><p>show {other}</p>{dimensions}</section>")


def glyph_sections(data: FontData, query: Query, manifest: Callable[[str], Manifest]) -> str:
    """The per-glyph losses as a heatmap (glyph x run), when the feedback has a group of
    numbers by glyph name (``{"glyph_loss": {"A": 0.1, ...}}``, or ``?glyphs=GROUP``), and
    a strip of one glyph's image across runs (``?glyph=A``), of any glyph a run has."""
    glyph_names = data.glyph_names()
    groups = glyph_groups(data.metric_counts(), set(glyph_names))
    group = one(query, "glyphs") or (groups[0] if groups else "")
    sections, losses = [], {}
    if group:
        runs, glyphs, values, missing = data.glyph_matrix(group)
        if runs:
            pages = data.links()
            links = [choice(data.font_id, query, metric=f"{group}.{glyph}", glyph=glyph) for glyph in glyphs]
            others = f"<p>{chooser(data.font_id, query, 'glyphs', groups, group)}</p>" if len(groups) > 1 else ""
            title = f"{group} by glyph over runs"
            svg = data.derived(("glyph heatmap", group, tuple(links)), lambda: heatmap(
                values, glyphs, [(pages[info.run_id][0], info.run_id) for info in runs], missing=missing,
                title=title, row_links=links))
            sections.append(f'<section id="glyph-losses"><h3>{h(title)} ({len(runs)} runs)</h3>{others}{svg}</section>')
            losses = {name: (runs, values[:, i]) for i, name in enumerate(glyphs)}
    if glyph_names:
        sections.append(_strip(data, query, glyph_names, losses, manifest))
    return "".join(sections)


def glyph_groups(metrics: list[tuple[str, int]], glyph_names: set[str]) -> list[str]:
    """Groups of metrics by glyph (``group.<glyph>``): those naming the most of the
    font's glyphs first; a group whose name says glyph counts too."""
    overlap: Counter[str] = Counter()
    for name, _ in metrics:
        if "." in name:
            group, inner = name.split(".", 1)
            overlap[group] += inner in glyph_names or "glyph" in group.lower()
    return [group for group, count in overlap.most_common() if count]


def _strip(data: FontData, query: Query, glyph_names: list[str],
           losses: dict[str, tuple[list[RunInfo], np.ndarray]], manifest: Callable[[str], Manifest]) -> str:
    """One glyph's image in up to STRIP runs, evenly spaced from the first run that has
    it to the newest, each linking to its run (and with its loss, when known)."""
    glyph = one(query, "glyph") or glyph_names[0]

    def pictures() -> tuple[int, str]:
        having = [info for info in data.runs if glyph in info.glyphs and info.manifest]
        if len(having) > STRIP:
            having = [having[round(i * (len(having) - 1) / (STRIP - 1))] for i in range(STRIP)]
        runs, values = losses.get(glyph, ([], []))
        loss_of = dict(zip((info.run_id for info in runs), values))
        figures, pages = [], data.links()
        for info in having:
            blob = manifest(info.manifest).glyphs.get(glyph)
            loss = f" · {loss_of[info.run_id]:.3g}" if info.run_id in loss_of else ""
            picture = thumb(blob, f"{glyph} in {info.run_id}", css="glyph")
            figures.append(f'<figure><a href="{pages[info.run_id][0]}">{picture}</a><figcaption>'
                           f"{h(info.value('time').strftime('%m-%d %H:%M'))}{h(loss)}</figcaption></figure>")
        return len(having), "".join(figures)

    shown, figures = data.derived(("strip", glyph, tuple(losses)), pictures)
    offered = chooser(data.font_id, query, "glyph", glyph_names[:SHOWN_GLYPHS], glyph)
    return (f'<section id="glyph-strip"><h3>Glyph {h(glyph)} across runs ({shown} shown)</h3>'
            f'<p class=choices>{offered}</p><div class="glyphs strip">{figures or "no run has it"}</div>'
            "</section>")
