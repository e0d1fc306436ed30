"""Several runs of a font side by side (``/compare/FONT?run=A&run=B&run=C``): their
samples and glyphs (a row per run), their params, feedback and details in one table with what differs
marked, and which tensors changed from each run to the next.

Runs are shown oldest first, so "the next" is the next in time. Tensors are compared by
address (no tensor is read), except between two runs alone, where the page also says how
much each changed tensor moved (read and verified, as ``aoe store diff`` does).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from datetime import datetime
from typing import Any

from ..diff import RunDiff, diff_runs
from ..errors import InvalidInputError
from ..manifests import Manifest
from ..store import Store
from ..store.run import Run
from .markup import h, run_link, short, thumb, u, when

MOST = 12
"""Runs one page compares at most (columns stay readable)."""


def comparison(store: Store, font_id: str, run_ids: list[str], manifest: Callable[[str], Manifest]) -> str:
    """The body of the comparison page of these runs (two to MOST, each named once)."""
    run_ids = sorted(set(run_ids))
    if not 2 <= len(run_ids) <= MOST:
        raise InvalidInputError(f"compare 2 to {MOST} runs ({len(run_ids)} given)")
    runs = [store.open_run(font_id, run_id) for run_id in run_ids]
    steps = [diff_runs(store, font_id, a, b, measure=len(run_ids) == 2) for a, b in itertools.pairwise(run_ids)]
    header = "<tr><th></th>" + "".join(f"<th>{run_link(font_id, r)}</th>" for r in run_ids) + "</tr>"
    values = _value_rows(runs)
    differing = [key for key, row in values if len({repr(v) for v in row}) > 1]
    tensors = len({t.name for step in steps for t in step.tensors})
    moved = "; ".join(f"{len(step.changed_tensors)} from run {i + 1} to run {i + 2}" for i, step in enumerate(steps)) \
        if len(steps) > 1 else f"{len(steps[0].changed_tensors)} differ"
    summary = (f"Of {tensors} tensor{'' if tensors == 1 else 's'}: {moved}. "
               f"{sum(k.startswith('params.') for k in differing)} params and "
               f"{sum(k.startswith('feedback.') for k in differing)} feedback values differ among the runs.")
    measured = "" if len(steps) == 1 else ("<p>How much each changed tensor moved is measured when two runs are "
                                           "compared: follow a column's link.</p>")
    return (f'<p><a href="/">fonts</a> / <a href="/font/{u(font_id)}">{h(font_id)}</a> / compare</p>'
            f"<h2>{len(run_ids)} runs of {h(font_id)}, oldest first</h2><p id=summary>{h(summary)}</p>"
            f"{_image_table(font_id, runs)}"
            f"<h3>Params, feedback and details</h3><p>Rows that differ are marked; a value in bold "
            f"differs from the run before it.</p><table id=values>{header}{_rows(values)}</table>"
            f"<h3>Tensors</h3>{measured}{_tensor_table(font_id, steps)}")


def _image_table(font_id: str, runs: list[Run]) -> str:
    """A row per run: its sample and each glyph, side by side; a column whose image is
    not the same in every run is marked."""
    names = ["sample", *sorted({g for run in runs for g in run.manifest.glyphs})]
    blobs = [[run.manifest.sample if name == "sample" else run.manifest.glyphs.get(name) for name in names]
             for run in runs]
    differs = [len({blob.identity if blob else None for blob in column}) > 1 for column in zip(*blobs)]
    head = "".join(f"<th class='{'differs' if d else 'same'}'>{h(name)}</th>" for name, d in zip(names, differs))
    rows = []
    for run, row in zip(runs, blobs):
        cells = "".join(
            f"<td class='{'differs' if d else 'same'}'>"
            f"{thumb(blob, f'{name} of {run.info.run_id}', css='wide' if name == 'sample' else 'mini')}</td>"
            for name, blob, d in zip(names, row, differs))
        rows.append(f"<tr><th>{run_link(font_id, run.info.run_id)}</th>{cells}</tr>")
    return f"<table class=compare><tr><th>run</th>{head}</tr>{''.join(rows)}</table>"


def _value_rows(runs: list[Run]) -> list[tuple[str, list[Any]]]:
    """(dotted key, each run's value or None) for details, params and feedback leaves."""
    flat = []
    for run in runs:
        info = run.info
        details = {"status": info.status, "name": info.name, "description": info.description,
                   "tags": ", ".join(info.tags), "started": info.started_at, "saved": info.saved_at}
        feedback = run.feedback() if run.manifest.feedback else {}
        flat.append({**dict(_leaves(details, "run")), **dict(_leaves(run.manifest.params, "params")),
                     **dict(_leaves(feedback, "feedback"))})
    keys = list(dict.fromkeys(key for values in flat for key in values))
    return [(key, [values.get(key) for values in flat]) for key in keys]


def _leaves(value: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(value, dict):
        for key in sorted(value, key=str):
            yield from _leaves(value[key], f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix, value


def _rows(values: list[tuple[str, list[Any]]]) -> str:
    rows = []
    for key, row in values:
        cells = "".join(
            f"<td{' class=change' if i and repr(v) != repr(row[i - 1]) else ''}>{_shown(v)}</td>"
            for i, v in enumerate(row))
        rows.append(f"<tr class='{'differs' if len({repr(v) for v in row}) > 1 else 'same'}'><th>{h(key)}</th>"
                    f"{cells}</tr>")
    return "".join(rows)


def _shown(value: Any) -> str:
    if value is None:
        return ""
    return h(when(value) if isinstance(value, datetime) else short(value))


def _tensor_table(font_id: str, steps: list[RunDiff]) -> str:
    """Every tensor, and for each run after the first what became of it: the same,
    changed (by how much, between two runs), added, removed or reshaped."""
    names = list(dict.fromkeys(t.name for step in steps for t in step.tensors))
    by_step = [{t.name: t for t in step.tensors} for step in steps]
    head = "".join(
        f'<th><a href="/compare/{u(font_id)}?run={u(s.a.run_id)}&amp;run={u(s.b.run_id)}">'
        f"{h(s.b.run_id)}</a><br>{len(s.changed_tensors)} differ</th>" for s in steps)
    rows = []
    for name in names:
        changes = [table.get(name) for table in by_step]
        shown = next((c.b or c.a for c in reversed(changes) if c is not None), "")
        cells = "".join(
            "<td></td>" if c is None else
            f"<td class='{h(c.status)}'>{h(c.status)}"
            f"{'' if c.relative_change is None else f' (relative {c.relative_change:.3g}, max |diff| {c.max_abs_diff:.3g})'}</td>"
            for c in changes)
        moved = any(c is not None and c.status != "same" for c in changes)
        rows.append(f"<tr class='{'changed' if moved else 'same'}'><td>{h(name)}</td><td>{h(shown)}</td>{cells}</tr>")
    return (f"<table id=tensors><tr><th>tensor</th><th>dtype, shape</th>{head}</tr>{''.join(rows)}</table>")
