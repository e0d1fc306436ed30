"""The pages of ``aoe store serve``, as functions of a request's path and query (no HTTP
here): the fonts, a font (its charts and runs), a run, a comparison, blobs and downloads.
Every path part is validated before it names anything; every user string is escaped."""

from __future__ import annotations

import functools
import io
import itertools
import json
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator
from http import HTTPStatus
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit

from ..diff import tensor_table
from ..errors import InvalidInputError, InvalidNameError, NotFoundError, StoreError
from ..manifests import Manifest, check_blob, unpack
from ..names import Digest, check_alias, check_font_id, parse_digest
from ..objects import Blob
from ..runinfo import RunInfo
from ..store import Store
from .compare import comparison
from .lineage import alias_history_html, lineage_html
from .markup import (
    FILTER_FORM,
    PAGE,
    SEARCH_FORM,
    Query,
    Response,
    blob_url,
    compact,
    h,
    one,
    page_numbers,
    run_id_param,
    table,
    thumb,
    u,
    when,
)
from .trends import FontCharts

PAGE_SIZE = 100
NEARBY = 25
"""A run page says which tensors the runs up to this many before and after it share."""
IMMUTABLE = "public, max-age=31536000, immutable"
CONTENT_TYPES = {"png": "image/png", "json": "application/json", "bin": "application/octet-stream"}
MAX_PAGES = 10**9
MANIFEST_CACHE = 20_000
"""Manifests kept in memory by address (they never change): a page of runs reads none twice."""


class Browser:
    """The pages, as functions of a request's path and query; no HTTP here."""

    def __init__(self, store: Store) -> None:
        self.store = store if store.read_only else Store(
            store.root, endpoint=store.backend_endpoint, workers=store.objects.workers, read_only=True)
        """Read only: every change is refused, and the catalog index lives in memory,
        seeded from the store's own."""
        self.manifest = functools.lru_cache(maxsize=MANIFEST_CACHE)(self._read_manifest)
        """A manifest by address (thread-safe; manifests never change, so never stale)."""
        self.charts = FontCharts(self.store, self.manifest)
        """Font pages' charts, with what they are drawn from kept until a font changes."""

    # -- routing ------------------------------------------------------------------

    def respond(self, target: str) -> tuple[int, dict[str, str], bytes | Iterator[bytes]]:
        """Status, headers and body for a GET of ``target`` (path and query)."""
        parts = urlsplit(target)
        query = {k: v for k, v in parse_qs(parts.query, keep_blank_values=False).items()}
        routes: list[tuple[str, Callable[..., Response]]] = [
            (r"/", self.fonts_page),
            (r"/search", self.search_page),
            (r"/font/([^/]+)", self.font_page),
            (r"/run/([^/]+)/([^/]+)", self.run_page),
            (r"/compare/([^/]+)", self.compare_page),
            (r"/lineage/([^/]+)", self.lineage_page),
            (r"/alias/([^/]+)/([^/]+)", self.alias_page),
            (r"/blob/([0-9a-f,]+)\.(png|json|bin)", self.blob),
            (r"/download/([^/]+)/([^/]+)\.zip", self.download),
        ]
        for pattern, handler in routes:
            match = re.fullmatch(pattern, parts.path)
            if match:
                try:
                    return handler(*match.groups(), query=query)
                except (InvalidNameError, InvalidInputError, ValueError) as exc:
                    return self.error(HTTPStatus.BAD_REQUEST, str(exc))
                except NotFoundError as exc:
                    return self.error(HTTPStatus.NOT_FOUND, str(exc))
                except StoreError as exc:
                    return self.error(HTTPStatus.INTERNAL_SERVER_ERROR, str(exc))
                except Exception as exc:  # noqa: BLE001 - a page that fails answers, it never drops the connection
                    return self.error(HTTPStatus.INTERNAL_SERVER_ERROR, f"{type(exc).__name__}: {exc}")
        return self.error(HTTPStatus.NOT_FOUND, f"nothing at {parts.path}")

    def error(self, status: HTTPStatus, message: str) -> Response:
        """An error page (never cached)."""
        return self._page(status.value, f"{status.value} {status.phrase}", f"<p class=error>{h(message)}</p>")

    def _page(self, status: int, title: str, body: str) -> Response:
        document = PAGE.format(title=h(title), root=h(str(self.store.root)), body=body)
        caching = "no-cache" if status == 200 else "no-store"  # a failure is never kept
        return status, {"Content-Type": "text/html; charset=utf-8", "Cache-Control": caching}, document.encode()

    def _read_manifest(self, digest: str) -> Manifest:
        return unpack(self.store.objects.get(parse_digest(digest)))

    # -- pages --------------------------------------------------------------------

    def fonts_page(self, query: Query) -> Response:
        cards = []
        for summary in self.store.font_summaries():
            image = '<div class="thumb empty">no runs</div>'
            if summary.newest_run:
                try:
                    info = self.store.get_run_info(summary.font_id, summary.newest_run)
                    image = thumb(self.manifest(info.manifest).sample, "newest sample")
                except StoreError:  # one unreadable run does not take the front page down
                    image = '<div class="thumb empty">unreadable</div>'
            cards.append(
                f'<a class="card font" href="/font/{u(summary.font_id)}">{image}'
                f"<b>{h(summary.font_id)}</b><span>{summary.runs} runs</span></a>")
        body = SEARCH_FORM.format(q="") + f'<div class="grid">{"".join(cards) or "<p>No fonts yet.</p>"}</div>'
        return self._page(200, "Fonts", body)

    def search_page(self, query: Query) -> Response:
        text = one(query, "q")
        runs = self.store.search(text, limit=PAGE_SIZE, sort="-time") if text else []
        body = SEARCH_FORM.format(q=h(text)) + f"<h2>{len(runs)} runs match {h(repr(text))}</h2>"
        return self._page(200, f"Search {text}", body + self._run_table(runs, compare=False, fonts=True))

    def font_page(self, font_id: str, query: Query) -> Response:
        font_id = check_font_id(font_id)
        page = int(one(query, "page") or 1)
        if not 1 <= page <= MAX_PAGES:
            raise InvalidInputError(f"page {page}: pages are numbered from 1 to {MAX_PAGES:,}")
        filters: dict[str, Any] = {
            "status": one(query, "status") or None, "tags": [t for t in query.get("tag", []) if t],
            "where": [w for w in query.get("where", []) if w],
        }
        text, sort = one(query, "q"), one(query, "sort") or "-time"
        try:
            runs = self.store.search(text, font=font_id, sort=sort, limit=PAGE_SIZE,
                                     offset=(page - 1) * PAGE_SIZE, **filters)  # no text: every run
            total, problem = self.store.count_runs(font_id, text=text or None, **filters), ""
        except InvalidInputError as exc:  # a filter that cannot be read: said beside the form, never "no runs"
            self.store.list_runs(font_id)  # the font itself must be there
            runs, total, problem = [], 0, f"<p class=error>{h(str(exc))}</p>"
        pages = max(1, -(-total // PAGE_SIZE))
        form = FILTER_FORM.format(
            font=u(font_id), q=h(text), status=h(filters["status"] or ""), tag=h(",".join(filters["tags"])),
            where=h(" ".join(filters["where"])), sort=h(sort))
        kept = {k: v for k, v in query.items() if k != "page"}
        nav = " ".join(
            f'<a href="/font/{u(font_id)}?{urlencode({**kept, "page": [n]}, doseq=True)}"'
            f'{" class=current" if n == page else ""}>{n}</a>'
            for n in page_numbers(page, pages))
        named = {name: run for name, run in self.store.aliases_of(font_id).items()}
        aliases = " ".join(f'<a class=alias href="/run/{u(font_id)}/{u(run)}">@{h(name)}</a>'
                           f' <a class=history href="/alias/{u(font_id)}/{u(name)}" title="its moves">&#8634;</a>'
                           for name, run in named.items())
        body = (f'<p><a href="/">fonts</a> / <b>{h(font_id)}</b> · <a href="/lineage/{u(font_id)}" id=lineage-link>'
                f"lineage</a>{' · aliases: ' + aliases if aliases else ''}{self._retention(font_id)}</p>"
                f"{self.charts.html(font_id, query)}{form}"
                f"{problem}<p>{total} runs; page {page} of {pages} <span class=pages>{nav}</span></p>"
                f'<form action="/compare/{u(font_id)}" method="get" id="compare">'
                f'{self._run_table(runs, compare=True)}'
                f'<button type="submit" id="compare-button">Compare the runs ticked</button></form>')
        return self._page(400 if problem else 200, font_id, body)

    def run_page(self, font_id: str, run_id: str, query: Query) -> Response:
        font_id = check_font_id(font_id)
        run_id = self.store.run_named(font_id, run_id)[1] if run_id.startswith("@") else run_id_param(run_id)
        run = self.store.open_run(font_id, run_id)
        info, manifest = run.info, run.manifest
        neighbours = self.store.list_runs(font_id, where=[("run_id", "<", run_id)], sort="-run_id", limit=1)
        previous = neighbours[0].run_id if neighbours else None
        glyphs = "".join(
            f'<figure><a href="{h(blob_url(blob, "png"))}">{thumb(blob, f"glyph {name}", css="glyph")}</a>'
            f"<figcaption>{h(name)}</figcaption></figure>"
            for name, blob in sorted(manifest.glyphs.items()) if blob.chunks)
        feedback = json.dumps(run.feedback(), indent=2, ensure_ascii=False) if manifest.feedback else "(none)"
        history = "".join(
            f"<tr><td>{h(when(v.saved_at))}</td><td>{h(', '.join(v.tags))}</td><td>{h(v.description or '')}</td>"
            f"<td><code>{h(v.manifest[:12])}</code></td></tr>"
            for v in self.store.run_history(font_id, run_id))
        links = [f'<a href="/download/{u(font_id)}/{u(run_id)}.zip" id="download">download (zip)</a>']
        if previous:
            links.append(f'<a href="/compare/{u(font_id)}?a={u(previous)}&b={u(run_id)}">compare with previous run</a>')
        body = (
            f'<p><a href="/">fonts</a> / <a href="/font/{u(font_id)}">{h(font_id)}</a> / <b>{h(run_id)}</b></p>'
            f"<h2>{h(info.name or run_id)} <span class='status {h(info.status)}'>{h(info.status)}</span>"
            f"{self._alias_badges(font_id, self._aliases(font_id).get(run_id, []))}</h2>"
            f"<p>{h(info.description or '')}</p><p>{' · '.join(links)}</p>"
            f'<div class="sample-box">{thumb(manifest.sample, "sample", css="sample")}</div>'
            f"<h3>Evaluation glyphs ({len(manifest.glyphs)})</h3><div class='glyphs'>{glyphs or 'none'}</div>"
            f"<h3>Params</h3>{table(sorted(manifest.params.items()))}"
            f"<h3>Feedback</h3><pre>{h(feedback)}</pre>"
            f"<h3>Details</h3>{table(self._details(info))}"
            f"<h3>Lineage</h3>{self._lineage(info)}"
            f"<h3>History</h3><table><tr><th>saved</th><th>tags</th><th>description</th><th>manifest</th></tr>"
            f"{history}</table>"
            f"<h3>Weights</h3>{self._weights(font_id, run_id, manifest, previous)}")
        return self._page(200, f"{font_id} {run_id}", body)

    def lineage_page(self, font_id: str, query: Query) -> Response:
        font_id = check_font_id(font_id)
        body = (f'<p><a href="/">fonts</a> / <a href="/font/{u(font_id)}">{h(font_id)}</a> / <b>lineage</b></p>'
                f"{lineage_html(self.store, font_id)}")
        return self._page(200, f"{font_id} lineage", body)

    def alias_page(self, font_id: str, name: str, query: Query) -> Response:
        font_id = check_font_id(font_id)
        body = (f'<p><a href="/">fonts</a> / <a href="/font/{u(font_id)}">{h(font_id)}</a> / <b>@{h(name)}</b></p>'
                f"{alias_history_html(self.store, font_id, check_alias(name))}")
        return self._page(200, f"{font_id}@{name}", body)

    def compare_page(self, font_id: str, query: Query) -> Response:
        """Two or more runs side by side: ``?run=A&run=B...`` (or ``?a=A&b=B``)."""
        font_id = check_font_id(font_id)
        run_ids = [run_id_param(r) for r in [*query.get("run", []), *query.get("a", []), *query.get("b", [])]]
        body = comparison(self.store, font_id, run_ids, self.manifest)
        return self._page(200, f"compare {' '.join(sorted(set(run_ids)))}", body)

    # -- content ------------------------------------------------------------------

    def blob(self, digests: str, kind: str, query: Query) -> tuple[int, dict[str, str], Any]:
        """A blob's content, a verified chunk at a time (a 512 MiB tensor is never held
        whole), with its exact Content-Length. The first chunk is read and verified before
        answering, so a missing or damaged blob is an error page; a later chunk that fails
        its check aborts the response, so the client sees a failure, never wrong bytes."""
        chunks = tuple(parse_digest(d) for d in digests.split(","))
        if "digest" in query:  # a slice of a pack: small, read and verified whole
            blob = _slice_of(chunks, query)
            return 200, _content_headers(kind, blob.identity[0], blob.size), self.store.objects.get_blob(blob)
        first = self.store.objects.get(chunks[0])
        length = len(first) + sum(self.store.objects.content_size(d) for d in chunks[1:])
        data: Any = first if len(chunks) == 1 else itertools.chain(
            [first], (self.store.objects.get(d) for d in chunks[1:]))
        return 200, _content_headers(kind, chunks[0], length), data

    def download(self, font_id: str, run_id: str, query: Query) -> Response:
        font_id, run_id = check_font_id(font_id), run_id_param(run_id)
        run = self.store.open_run(font_id, run_id)
        folder = Path(tempfile.mkdtemp(prefix="aoe-download-"))
        try:
            exported = run.export(folder / run_id)  # verified, in the spec's folder layout
            buffer = io.BytesIO()
            with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
                for path in sorted(exported.rglob("*")):
                    if path.is_file():
                        archive.write(path, f"{font_id}/runs/{run_id}/{path.relative_to(exported).as_posix()}")
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        return 200, {"Content-Type": "application/zip", "Cache-Control": "no-cache",
                     "Content-Disposition": f'attachment; filename="{font_id}-{run_id}.zip"'}, buffer.getvalue()

    # -- pieces -------------------------------------------------------------------

    def _aliases(self, font_id: str) -> dict[str, list[str]]:
        """Run id -> the aliases of the font that point at it."""
        found: dict[str, list[str]] = {}
        for name, run_id in self.store.aliases_of(font_id).items():
            found.setdefault(run_id, []).append(name)
        return found

    def _retention(self, font_id: str) -> str:
        """What the font's stored retention policy keeps (applied after every save)."""
        try:
            policy = self.store.retention(font_id)
        except StoreError as exc:
            return f" · <span class=error id=retention>retention policy: {h(str(exc))}</span>"
        return "" if policy is None else f" · <span id=retention>keeps {h(policy.describe())}</span>"

    @staticmethod
    def _alias_badges(font_id: str, names: list[str]) -> str:
        return "".join(f' <a class=alias href="/alias/{u(font_id)}/{u(name)}">@{h(name)}</a>' for name in names)

    def _lineage(self, info: RunInfo) -> str:
        """The runs this run came from (one no longer in the store said so) and those that
        came from it, each a link; and the font's whole graph."""
        def link(font_id: str, run_id: str) -> str:
            try:
                self.store.refs.read_run(font_id, run_id)
            except StoreError:
                return f"<span class=gone>{h(font_id)} {h(run_id)} (not in the store)</span>"
            return f'<a href="/run/{u(font_id)}/{u(run_id)}">{h(font_id)} {h(run_id)}</a>'

        parents = ", ".join(link(p["font_id"], p["run_id"]) for p in info.parents) or "none (a run from scratch)"
        children = ", ".join(link(c.font_id, c.run_id) for c in self.store.children_of(info.font_id, info.run_id))
        return (f"<p id=parents>came from: {parents}</p><p id=children>went on in: {children or 'none yet'}</p>"
                f'<p><a href="/lineage/{u(info.font_id)}">the lineage of {h(info.font_id)}</a></p>')

    def _run_table(self, runs: list[RunInfo], *, compare: bool, fonts: bool = False) -> str:
        """Runs, one a row; ``fonts``: with a column saying whose (search results span fonts)."""
        rows = []
        aliases = {font: self._aliases(font) for font in {info.font_id for info in runs}}
        for index, info in enumerate(runs):
            sample = thumb(self.manifest(info.manifest).sample, "sample") if info.manifest else ""
            picks = (f'<td><input type=checkbox name=run value="{h(info.run_id)}"{" checked" if index < 2 else ""}>'
                     "</td>" if compare else "")
            font = f'<td><a href="/font/{u(info.font_id)}">{h(info.font_id)}</a></td>' if fonts else ""
            rows.append(
                f"<tr class=run>{picks}{font}<td>{sample}</td>"
                f'<td><a class=run-link href="/run/{u(info.font_id)}/{u(info.run_id)}">{h(info.run_id)}</a>'
                f"{self._alias_badges(info.font_id, aliases[info.font_id].get(info.run_id, []))}"
                f"<br>{h(info.name or '')}</td><td class='status {h(info.status)}'>{h(info.status)}</td>"
                f"<td>{h(', '.join(info.tags))}</td><td>{h(compact(info.params))}</td>"
                f"<td>{h(_feedback_summary(info.metrics))}</td></tr>")
        head = ("<th>compare</th>" if compare else "") + ("<th>font</th>" if fonts else "")
        return (f"<table class=runs><tr>{head}<th>sample</th><th>run</th><th>status</th><th>tags</th>"
                f"<th>params</th><th>feedback</th></tr>{''.join(rows)}</table>")

    def _details(self, info: RunInfo) -> list[tuple[str, Any]]:
        return [("run id", info.run_id), ("started", when(info.started_at)), ("ended", when(info.ended_at)),
                ("saved", when(info.saved_at)), ("tags", ", ".join(info.tags)),
                ("weights version", info.weights_version), ("feedback schema", info.feedback_schema),
                ("manifest", info.manifest), ("amends", info.parent or "")]

    def _weights(self, font_id: str, run_id: str, manifest: Manifest, previous: str | None) -> str:
        """Every tensor, and what it shares: with the previous run, and with the runs
        around this one (up to NEARBY on each side; their manifests are cached)."""
        tensors = tensor_table(manifest.weights)
        before = tensor_table(self.manifest(self.store.get_run_info(font_id, previous).manifest).weights) \
            if previous else {}
        nearby = self.store.list_runs(font_id, where=[("run_id", "<", run_id)], sort="-run_id", limit=NEARBY) + \
            self.store.list_runs(font_id, where=[("run_id", ">", run_id)], sort="run_id", limit=NEARBY)
        blob_sets = [{r.blob.identity for r in tensor_table(self.manifest(info.manifest).weights).values()}
                     for info in nearby if info.manifest]
        rows, shared = [], 0
        for name, record in tensors.items():
            same = name in before and before[name].blob.identity == record.blob.identity
            shared += record.blob.size if same else 0
            also = sum(record.blob.identity in identities for identities in blob_sets)
            raw = f'<a href="{h(blob_url(record.blob, "bin"))}">raw bytes</a>' if record.blob.chunks else ""
            rows.append(f"<tr><td>{h(name)}</td><td>{h(record.dtype)}</td><td>{h(list(record.shape))}</td>"
                        f"<td>{record.blob.size:,}</td><td>{'same' if same else 'changed' if previous else ''}</td>"
                        f"<td class=nearby>{also} of {len(blob_sets)}</td><td>{raw}</td></tr>")
        total = sum(r.blob.size for r in tensors.values())
        note = (f"{shared / 1e6:.2f} of {total / 1e6:.2f} MB the same as in the previous run ({h(previous)})"
                if previous else f"{total / 1e6:.2f} MB")
        return (f"<p>{len(tensors)} tensors, {note}</p><table id=weights><tr><th>tensor</th><th>dtype</th>"
                f"<th>shape</th><th>bytes</th><th>vs previous run</th><th>same bytes in nearby runs</th>"
                f"<th>download</th></tr>{''.join(rows)}</table>")


def _feedback_summary(metrics: dict[str, float]) -> str:
    """A run's top-level metrics; numbers one level down (per-glyph losses) counted by group."""
    groups: dict[str, int] = {}
    for name in metrics:
        if "." in name:
            group = name.split(".", 1)[0]
            groups[group] = groups.get(group, 0) + 1
    top = compact({k: v for k, v in metrics.items() if "." not in k})
    return ", ".join([top] * bool(top) + [f"{group}: {count} values" for group, count in sorted(groups.items())])


def _slice_of(chunks: tuple[Digest, ...], query: Query) -> Blob:
    """The slice a blob URL names, checked as a manifest's would be."""
    try:
        blob = Blob(int(query["size"][0]), chunks, int(query["offset"][0]), parse_digest(query["digest"][0]))
        return check_blob(blob)
    except (KeyError, ValueError) as exc:  # BadManifest is a ValueError
        raise InvalidInputError(f"not a blob slice: {exc}") from None


def _content_headers(kind: str, etag: str, length: int) -> dict[str, str]:
    headers = {"Content-Type": CONTENT_TYPES[kind], "Cache-Control": IMMUTABLE, "ETag": f'"{etag}"',
               "X-Content-Type-Options": "nosniff", "Content-Length": str(length)}
    if kind == "bin":
        headers["Content-Disposition"] = f'attachment; filename="{etag}"'
    return headers
