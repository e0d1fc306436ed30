"""A font's lineage drawn in SVG (``/lineage/FONT``): each run a dot in its lane, a line to
each run it came from (across fonts too: those are hollow dots; a run no longer in the
store a grey cross), laid out as ``aoe store log --graph`` lays it out (:mod:`aoe.graph`);
and an alias's history (``/alias/FONT/NAME``). Only strings from what the store says."""

from __future__ import annotations

from ..graph import layout
from ..names import parse_time
from ..store import LineageNode, Store
from .markup import h, run_link, u, when

ROW = 24
LANE = 16
MAX_ROWS = 1000
"""The newest runs a lineage page draws (a font of 10,000 runs: their graph is there to
read in ``aoe store log --graph``)."""


def lineage_html(store: Store, font_id: str, limit: int = MAX_ROWS) -> str:
    """The lineage of a font's runs, newest first, as an SVG with a row per run."""
    nodes = store.lineage(font_id)
    inside = [n for n in nodes if n.font_id == font_id]
    if len(inside) > limit:
        kept = {n.key for n in inside[:limit]}
        wanted = {p for n in inside[:limit] for p in n.parents}
        nodes = [n for n in nodes if n.key in kept or (n.font_id != font_id and n.key in wanted)]
    if not nodes:
        return "<p>No runs yet.</p>"
    aliases: dict[str, list[str]] = {}
    for name, run_id in store.aliases_of(font_id).items():
        aliases.setdefault(run_id, []).append(name)
    by_key = {n.key: n for n in nodes}
    rows = layout([n.key for n in nodes], {n.key: n.parents for n in nodes})
    where = {row.key: (LANE // 2 + row.column * LANE, ROW // 2 + index * ROW) for index, row in enumerate(rows)}
    text_x = LANE * (max(max([*r.lanes, *r.parent_columns, r.column]) for r in rows) + 1) + 8
    lines, dots, labels = [], [], []
    for row in rows:
        x, y = where[row.key]
        node = by_key[row.key]
        for parent, column in zip([p for p in dict.fromkeys(node.parents) if p in where], row.parent_columns):
            px, py = where[parent]
            lane = LANE // 2 + column * LANE
            lines.append(f'<path class=edge d="M{x} {y} L{lane} {y + ROW // 2} L{lane} {py - ROW // 2} L{px} {py}"/>')
        dots.append(_dot(node, x, y, font_id))
        labels.append(_label(node, text_x, y, font_id, aliases.get(node.run_id, []) if node.font_id == font_id else []))
    height = ROW * len(rows)
    shown = f"the newest {limit} of {len(inside)} runs" if len(inside) > limit else f"{len(inside)} runs"
    return (f"<p>{shown} of {h(font_id)}, newest first; a line joins each run to the runs it came from (resumes, "
            "fine-tunes, merges, forks). Hollow: another font's run; a cross: a run no longer in the store.</p>"
            f'<svg class="lineage" id=lineage width="{text_x + 720}" height="{height}" '
            f'viewBox="0 0 {text_x + 720} {height}" role=img aria-label="lineage of {h(font_id)}">'
            f"{''.join(lines)}{''.join(dots)}{''.join(labels)}</svg>")


def _dot(node: LineageNode, x: int, y: int, font_id: str) -> str:
    if node.info is None:
        return f'<path class="missing" d="M{x - 4} {y - 4} L{x + 4} {y + 4} M{x - 4} {y + 4} L{x + 4} {y - 4}"/>'
    kind = "run" if node.font_id == font_id else "other"
    return f'<circle class="{kind}" cx="{x}" cy="{y}" r="5"/>'


def _label(node: LineageNode, x: int, y: int, font_id: str, aliases: list[str]) -> str:
    font = "" if node.font_id == font_id else f"{node.font_id} "
    if node.info is None:
        return f'<text class=gone x="{x}" y="{y + 4}">{h(font + node.run_id)} (not in the store)</text>'
    badges = "".join(f' <tspan class=alias>@{h(name)}</tspan>' for name in aliases)
    name = f" {h(node.info.name)}" if node.info.name else ""
    return (f'<a class=lineage-run href="/run/{u(node.font_id)}/{u(node.run_id)}"><text x="{x}" y="{y + 4}">'
            f"{h(font + node.run_id)}{badges} <tspan class='status {h(node.info.status)}'>{h(node.info.status)}</tspan>"
            f"{name}</text></a>")


def alias_history_html(store: Store, font_id: str, name: str) -> str:
    """Every move of an alias, newest first: where it pointed, when and why."""
    moves = store.alias_history(font_id, name)
    rows = "".join(
        f"<tr><td>{move.move}</td><td>{h(when(parse_time(move.at)))}</td>"
        f"<td>{run_link(font_id, move.run_id) if move.run_id else '(removed)'}</td><td>{h(move.note)}</td></tr>"
        for move in reversed(moves))
    return (f"<p>{len(moves)} moves of {h(font_id)}@{h(name)}, newest first.</p><table id=alias-history>"
            f"<tr><th>move</th><th>at</th><th>run</th><th>note</th></tr>{rows}</table>")
