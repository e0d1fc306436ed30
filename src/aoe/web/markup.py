"""What every page is made of: escaping, links to runs and blobs, small tables, and
the page template with its style sheet. Only strings; no store, no HTTP."""

from __future__ import annotations

import html
import json
from collections.abc import Iterable
from typing import Any
from urllib.parse import quote, urlencode

from ..errors import InvalidNameError
from ..names import is_run_id
from ..objects import Blob

Query = dict[str, list[str]]
"""A request's query: each name with its values, in order."""
Response = tuple[int, dict[str, str], bytes]
"""Status, headers and body of a page."""


def h(value: Any) -> str:
    """HTML-escape anything shown on a page."""
    return html.escape(str(value), quote=True)


def u(value: str) -> str:
    """Quote a path segment."""
    return quote(value, safe="")


def one(query: Query, name: str) -> str:
    """The first value of a query parameter, stripped; empty when absent."""
    values = query.get(name) or [""]
    return values[0].strip()


def run_id_param(text: str) -> str:
    """A run id from a URL, checked before it names anything."""
    if not is_run_id(text):
        raise InvalidNameError(f"invalid run id {text!r}")
    return text


def run_link(font_id: str, run_id: str, text: str | None = None) -> str:
    return f'<a href="/run/{u(font_id)}/{u(run_id)}">{h(run_id if text is None else text)}</a>'


def blob_url(blob: Blob, kind: str) -> str:
    """Where a blob is served: by the addresses of its chunks (and, for a slice of a pack,
    where in it and its own address), so the URL never goes stale."""
    where = "" if blob.offset is None else "?" + urlencode(
        {"offset": blob.offset, "size": blob.size, "digest": blob.digest})
    return f"/blob/{','.join(blob.chunks)}.{kind}{where}"


def thumb(blob: Blob | None, alt: str, css: str = "thumb") -> str:
    """An image of a stored PNG (lazily loaded), or an empty box when there is none."""
    if blob is None or not blob.chunks:
        return f'<div class="{css} empty">none</div>'
    return f'<img class="{css}" src="{h(blob_url(blob, "png"))}" alt="{h(alt)}" loading="lazy">'


def when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def compact(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={short(v)}" for k, v in sorted(values.items()))


def short(value: Any) -> str:
    """A value in at most 80 characters (floats to 4 significant digits)."""
    if isinstance(value, float):
        return f"{value:.4g}"
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def table(items: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{h(k)}</th><td>{h(short(v))}</td></tr>" for k, v in items)
    return f"<table>{rows or '<tr><td>none</td></tr>'}</table>"


def page_numbers(page: int, pages: int) -> list[int]:
    shown = {1, pages, *range(max(1, page - 3), min(pages, page + 3) + 1)}
    return sorted(shown)


SEARCH_FORM = ('<form action="/search" method="get" class=search><input name=q value="{q}" '
               'placeholder="search run names and descriptions" id=search><button>search</button></form>')

FILTER_FORM = """<form action="/font/{font}" method="get" class=filters id=filters>
<input name=q value="{q}" placeholder="name or description" id=font-search>
<input name=status value="{status}" placeholder="status" size=10>
<input name=tag value="{tag}" placeholder="tag" size=10>
<input name=where value="{where}" placeholder="metrics.final_loss&lt;0.05" size=24>
<input name=sort value="{sort}" placeholder="-time" size=12>
<button>filter</button></form>"""

PAGE = """<!doctype html><html lang=en><head><meta charset=utf-8>
<meta name=viewport content="width=device-width, initial-scale=1"><title>{title} - aoe</title>
<style>
body{{font:14px/1.4 system-ui,sans-serif;margin:1.5em;color:#222}} a{{color:#1558b0}}
header{{display:flex;gap:1em;align-items:baseline;border-bottom:1px solid #ddd;margin-bottom:1em}}
header h1{{font-size:18px;margin:0}} header span{{color:#777}}
.grid{{display:flex;flex-wrap:wrap;gap:12px}} .card{{display:flex;flex-direction:column;gap:4px;padding:8px;
border:1px solid #ddd;border-radius:6px;text-decoration:none;color:inherit;width:150px}}
.thumb,.sample,.glyph,.wide{{image-rendering:pixelated;background:#f4f4f4}} .thumb{{width:160px;height:80px;object-fit:contain}}
.card .thumb{{width:150px;height:150px}} .wide{{width:192px;height:64px;object-fit:contain}}
.mini{{width:36px;height:36px;object-fit:contain;image-rendering:pixelated;background:#f4f4f4}}
table.compare td,table.compare th{{padding:2px 3px}} table.compare .wide{{width:144px;height:48px}}
td.differs{{background:#fff6e0}} th.differs{{color:#a15c00}} img.sample{{width:256px;height:256px;object-fit:contain}}
.glyphs{{display:flex;flex-wrap:wrap;gap:8px}} .glyph{{width:64px;height:64px;object-fit:contain}}
figure{{margin:0;text-align:center}} a[href^="/run/"]{{white-space:nowrap}} table{{border-collapse:collapse;margin:.5em 0}}
td,th{{border-bottom:1px solid #eee;padding:3px 8px;text-align:left;vertical-align:top}}
.chart{{width:100%;max-width:1100px;height:auto;font-size:11px}} .chart .plot{{fill:#fafafa;stroke:#ddd}}
.chart .line{{fill:none;stroke:#9bb7e0;stroke-width:1}} .chart .gridline{{stroke:#eee}} form.inline{{display:inline}} .choices{{margin:.5em 0}} .chart .tick{{stroke:#bbb}} .chart .point{{fill:#1558b0}}
.chart .nonfinite{{stroke:#c0392b;stroke-width:2}} .chart text{{fill:#555}} a.current{{font-weight:bold}}
.chart .path{{fill:none;stroke:#c8c8c8;stroke-width:1}} .chart .dot{{stroke:#fff;stroke-width:.5}}
.chart .end{{fill:none;stroke:#222;stroke-width:1.5}} .chart .nonfinite-cell{{fill:none;stroke:#c0392b;stroke-width:1.5;shape-rendering:geometricPrecision}}
.chart .column,.chart .hit{{fill:transparent}} .chart .hit{{width:8px;height:8px}} .chart .column:hover,.chart .hit:hover{{stroke:#222;stroke-width:1}}
.chart .point-many{{fill:none;stroke:#1558b0;stroke-width:6;stroke-linecap:round}}
.chart .dot-many{{fill:none;stroke-width:7;stroke-linecap:round}}
section{{margin-bottom:1em}} .strip figcaption{{font-size:11px;color:#666}} td.change{{font-weight:bold}}
.status.completed{{color:#17803d}} .status.failed{{color:#b3261e}} .status.interrupted{{color:#a15c00}}
tr.changed td,tr.differs td{{background:#fff6e0}} tr.added td{{background:#e6f6ea}} tr.removed td{{background:#fde8e8}}
.pages a{{margin:0 2px}} .pages a.current{{font-weight:bold}} .error{{color:#b3261e}} pre{{background:#f7f7f7;padding:8px}}
.empty{{display:flex;align-items:center;justify-content:center;color:#999;font-size:11px}}
a.alias{{background:#e8f0fb;border-radius:8px;padding:0 6px;font-size:12px;text-decoration:none}} .gone{{color:#999}}
.lineage{{font-size:12px}} .lineage .edge{{fill:none;stroke:#9bb7e0;stroke-width:1.5}} .lineage .run{{fill:#1558b0}}
.lineage .other{{fill:#fff;stroke:#1558b0;stroke-width:1.5}} .lineage .missing{{stroke:#999;stroke-width:2}}
.lineage text{{fill:#222}} .lineage .alias{{fill:#1558b0;font-weight:bold}} .lineage .gone{{fill:#999}}
</style></head><body><header><h1><a href="/">aoe</a></h1><span>{root}</span></header>
{body}</body></html>"""
