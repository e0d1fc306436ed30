"""The web browser of a store (``aoe store serve``): read-only pages over the public API.

Standard library only (``http.server``): no framework, no build step, no script on the
pages but a few lines for the compare form. Safe by default:

- it binds to 127.0.0.1 unless told otherwise, and answers GET and HEAD only;
- every path is matched against fixed routes whose parts are validated as font ids, run
  ids and addresses before use: nothing outside the store can be named;
- every user string (names, descriptions, tags, params, feedback) is HTML-escaped;
- it never writes to the store: it opens it read-only (``Store(read_only=True)``), which
  refuses every change and keeps the catalog index in memory, seeded from the store's;
- images and objects are served by content address, verified on read, with their
  content type and ``Cache-Control: immutable``, so a browser fetches each once.
"""

from __future__ import annotations

import functools
import html
import io
import itertools
import json
import re
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterable, Iterator
from datetime import datetime
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, quote, urlencode, urlsplit

from .charts import metric_chart
from .errors import InvalidInputError, InvalidNameError, NotFoundError, StoreError
from .manifests import Manifest, check_blob, unpack
from .names import RUN_ID_RE, Digest, check_font_id, parse_digest
from .objects import Blob
from .runinfo import RunInfo
from .store import Store

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

    # -- routing ------------------------------------------------------------------

    def respond(self, target: str) -> tuple[int, dict[str, str], bytes | Iterator[bytes]]:
        """Status, headers and body for a GET of ``target`` (path and query)."""
        parts = urlsplit(target)
        query = {k: v for k, v in parse_qs(parts.query, keep_blank_values=False).items()}
        routes: list[tuple[str, Callable[..., tuple[int, dict[str, str], bytes]]]] = [
            (r"/", self.fonts_page),
            (r"/search", self.search_page),
            (r"/font/([^/]+)", self.font_page),
            (r"/run/([^/]+)/([^/]+)", self.run_page),
            (r"/compare/([^/]+)", self.compare_page),
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

    def error(self, status: HTTPStatus, message: str) -> tuple[int, dict[str, str], bytes]:
        """An error page (never cached)."""
        return self._page(status.value, f"{status.value} {status.phrase}", f"<p class=error>{h(message)}</p>")

    def _page(self, status: int, title: str, body: str) -> tuple[int, dict[str, str], bytes]:
        document = PAGE.format(title=h(title), root=h(str(self.store.root)), body=body)
        caching = "no-cache" if status == 200 else "no-store"  # a failure is never kept
        return status, {"Content-Type": "text/html; charset=utf-8", "Cache-Control": caching}, document.encode()

    def _read_manifest(self, digest: str) -> Manifest:
        return unpack(self.store.objects.get(parse_digest(digest)))

    # -- pages --------------------------------------------------------------------

    def fonts_page(self, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        cards = []
        for summary in self.store.font_summaries():
            image = '<div class="thumb empty">no runs</div>'
            if summary.newest_run:
                try:
                    info = self.store.get_run_info(summary.font_id, summary.newest_run)
                    image = self._thumb(self.manifest(info.manifest).sample, "newest sample")
                except StoreError:  # one unreadable run does not take the front page down
                    image = '<div class="thumb empty">unreadable</div>'
            cards.append(
                f'<a class="card font" href="/font/{u(summary.font_id)}">{image}'
                f"<b>{h(summary.font_id)}</b><span>{summary.runs} runs</span></a>")
        body = SEARCH_FORM.format(q="") + f'<div class="grid">{"".join(cards) or "<p>No fonts yet.</p>"}</div>'
        return self._page(200, "Fonts", body)

    def search_page(self, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        text = one(query, "q")
        runs = self.store.search(text, limit=PAGE_SIZE, sort="-time") if text else []
        body = SEARCH_FORM.format(q=h(text)) + f"<h2>{len(runs)} runs match {h(repr(text))}</h2>"
        return self._page(200, f"Search {text}", body + self._run_table(runs, compare=False))

    def font_page(self, font_id: str, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        font_id = check_font_id(font_id)
        page = int(one(query, "page") or 1)
        if not 1 <= page <= MAX_PAGES:
            raise InvalidInputError(f"page {page}: pages are numbered from 1 to {MAX_PAGES:,}")
        filters: dict[str, Any] = {
            "status": one(query, "status") or None, "tags": [t for t in query.get("tag", []) if t],
            "where": [w for w in query.get("where", []) if w],
        }
        text, sort = one(query, "q"), one(query, "sort") or "-time"
        runs = self.store.search(text, font=font_id, sort=sort, limit=PAGE_SIZE,
                                 offset=(page - 1) * PAGE_SIZE, **filters)  # no text: every run
        total = self.store.count_runs(font_id, text=text or None, **filters)
        pages = max(1, -(-total // PAGE_SIZE))
        form = FILTER_FORM.format(
            font=u(font_id), q=h(text), status=h(filters["status"] or ""), tag=h(",".join(filters["tags"])),
            where=h(" ".join(filters["where"])), sort=h(sort))
        kept = {k: v for k, v in query.items() if k != "page"}
        nav = " ".join(
            f'<a href="/font/{u(font_id)}?{urlencode({**kept, "page": [n]}, doseq=True)}"'
            f'{" class=current" if n == page else ""}>{n}</a>'
            for n in _page_numbers(page, pages))
        body = (f'<p><a href="/">fonts</a> / <b>{h(font_id)}</b></p>{self._metric_chart(font_id, query)}{form}'
                f"<p>{total} runs; page {page} of {pages} <span class=pages>{nav}</span></p>"
                f'<form action="/compare/{u(font_id)}" method="get" id="compare">'
                f'{self._run_table(runs, compare=True)}'
                f'<button type="submit" id="compare-button">Compare A with B</button></form>')
        return self._page(200, font_id, body)

    def _metric_chart(self, font_id: str, query: dict[str, list[str]]) -> str:
        """A metric of every run of the font against time (``?metric=``, ``?log=1``),
        with links to choose another metric or scale; nothing when no run has metrics."""
        names, metric, series = self.store.metric_series(font_id, one(query, "metric") or None)
        if metric is None:
            return ""
        log = one(query, "log") == "1"
        points = [(datetime.fromisoformat(time), value, f"/run/{u(font_id)}/{u(run_id)}", run_id)
                  for run_id, time, value in series]
        chooser = " ".join(
            f'<a href="/font/{u(font_id)}?{urlencode({"metric": name, "log": int(log)})}"'
            f'{" class=current" if name == metric else ""}>{h(name)}</a>' for name, _ in names[:CHART_METRICS])
        scale = (f'<a href="/font/{u(font_id)}?{urlencode({"metric": metric, "log": int(not log)})}" id="scale">'
                 f'{"linear scale" if log else "log scale"}</a>')
        return (f'<section id="metric-chart"><h3>{h(metric)} against time ({len(series)} runs)</h3>'
                f"<p>{chooser} · {scale}</p>{metric_chart(points, log=log, title=metric)}</section>")

    def run_page(self, font_id: str, run_id: str, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        font_id, run_id = check_font_id(font_id), _run_id(run_id)
        run = self.store.open_run(font_id, run_id)
        info, manifest = run.info, run.manifest
        neighbours = self.store.list_runs(font_id, where=[("run_id", "<", run_id)], sort="-run_id", limit=1)
        previous = neighbours[0].run_id if neighbours else None
        glyphs = "".join(
            f'<figure><a href="{h(_blob_url(blob, "png"))}">{self._thumb(blob, f"glyph {name}", css="glyph")}</a>'
            f"<figcaption>{h(name)}</figcaption></figure>"
            for name, blob in sorted(manifest.glyphs.items()) if blob.chunks)
        feedback = json.dumps(run.feedback(), indent=2, ensure_ascii=False) if manifest.feedback else "(none)"
        history = "".join(
            f"<tr><td>{h(_when(v.saved_at))}</td><td>{h(', '.join(v.tags))}</td><td>{h(v.description or '')}</td>"
            f"<td><code>{h(v.manifest[:12])}</code></td></tr>"
            for v in self.store.run_history(font_id, run_id))
        links = [f'<a href="/download/{u(font_id)}/{u(run_id)}.zip" id="download">download (zip)</a>']
        if previous:
            links.append(f'<a href="/compare/{u(font_id)}?a={u(previous)}&b={u(run_id)}">compare with previous run</a>')
        body = (
            f'<p><a href="/">fonts</a> / <a href="/font/{u(font_id)}">{h(font_id)}</a> / <b>{h(run_id)}</b></p>'
            f"<h2>{h(info.name or run_id)} <span class='status {h(info.status)}'>{h(info.status)}</span></h2>"
            f"<p>{h(info.description or '')}</p><p>{' · '.join(links)}</p>"
            f'<div class="sample-box">{self._thumb(manifest.sample, "sample", css="sample")}</div>'
            f"<h3>Evaluation glyphs ({len(manifest.glyphs)})</h3><div class='glyphs'>{glyphs or 'none'}</div>"
            f"<h3>Params</h3>{_table(sorted(manifest.params.items()))}"
            f"<h3>Feedback</h3><pre>{h(feedback)}</pre>"
            f"<h3>Details</h3>{_table(self._details(info))}"
            f"<h3>History</h3><table><tr><th>saved</th><th>tags</th><th>description</th><th>manifest</th></tr>"
            f"{history}</table>"
            f"<h3>Weights</h3>{self._weights(font_id, run_id, manifest, previous)}")
        return self._page(200, f"{font_id} {run_id}", body)

    def compare_page(self, font_id: str, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        from .diff import diff_runs

        font_id = check_font_id(font_id)
        run_a, run_b = _run_id(one(query, "a")), _run_id(one(query, "b"))
        result = diff_runs(self.store, font_id, run_a, run_b)
        first, second = self.manifest(result.a.manifest), self.manifest(result.b.manifest)
        images = [("sample", first.sample, second.sample)] + [
            (f"glyph {g}", first.glyphs.get(g), second.glyphs.get(g))
            for g in sorted(set(first.glyphs) | set(second.glyphs))]
        rows = "".join(
            f"<tr class='{'same' if a == b else 'differs'}'><th>{h(name)}</th>"
            f"<td>{self._thumb(a, name + ' A', css='glyph')}</td><td>{self._thumb(b, name + ' B', css='glyph')}</td></tr>"
            for name, a, b in images)

        def change_rows(items: Iterable[Any]) -> str:
            return "".join(f"<tr><th>{h(c.key)}</th><td>{h(_short(c.a))}</td><td>{h(_short(c.b))}</td></tr>"
                           for c in items) or "<tr><td colspan=3>no differences</td></tr>"

        tensors = "".join(
            f"<tr class='{h(t.status)}'><td>{h(t.name)}</td><td>{h(t.status)}</td><td>{h(t.a or '')}</td>"
            f"<td>{h(t.b or '')}</td><td>{'' if t.relative_change is None else f'{t.relative_change:.3g}'}</td>"
            f"<td>{'' if t.max_abs_diff is None else f'{t.max_abs_diff:.3g}'}</td></tr>"
            for t in result.tensors)
        def link(run_id: str) -> str:
            return f'<a href="/run/{u(font_id)}/{u(run_id)}">{h(run_id)}</a>'

        body = (
            f'<p><a href="/">fonts</a> / <a href="/font/{u(font_id)}">{h(font_id)}</a> / compare</p>'
            f"<h2>A: {link(run_a)} &nbsp; B: {link(run_b)}</h2>"
            f"<p id=summary>{len(result.changed_tensors)} of {len(result.tensors)} tensors differ; "
            f"{len(result.params)} params and {len(result.feedback)} feedback values differ</p>"
            f"<table class=compare><tr><th></th><th>A</th><th>B</th></tr>{rows}</table>"
            f"<h3>Params</h3><table><tr><th></th><th>A</th><th>B</th></tr>{change_rows(result.params)}</table>"
            f"<h3>Feedback</h3><table><tr><th></th><th>A</th><th>B</th></tr>{change_rows(result.feedback)}</table>"
            f"<h3>Run</h3><table><tr><th></th><th>A</th><th>B</th></tr>{change_rows(result.metadata)}</table>"
            f"<h3>Tensors</h3><table id=tensors><tr><th>name</th><th>status</th><th>A</th><th>B</th>"
            f"<th>relative change</th><th>max |diff|</th></tr>{tensors}</table>")
        return self._page(200, f"compare {run_a} {run_b}", body)

    # -- content ------------------------------------------------------------------

    def blob(self, digests: str, kind: str, query: dict[str, list[str]]) -> tuple[int, dict[str, str], Any]:
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

    def download(self, font_id: str, run_id: str, query: dict[str, list[str]]) -> tuple[int, dict[str, str], bytes]:
        font_id, run_id = check_font_id(font_id), _run_id(run_id)
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

    def _thumb(self, blob: Blob | None, alt: str, css: str = "thumb") -> str:
        if blob is None or not blob.chunks:
            return f'<div class="{css} empty">none</div>'
        return f'<img class="{css}" src="{h(_blob_url(blob, "png"))}" alt="{h(alt)}" loading="lazy">'

    def _run_table(self, runs: list[RunInfo], *, compare: bool) -> str:
        rows = []
        for index, info in enumerate(runs):
            sample = self._thumb(self.manifest(info.manifest).sample, "sample") if info.manifest else ""
            picks = (f'<td><input type=radio name=a value="{h(info.run_id)}"{" checked" if index == 1 else ""}></td>'
                     f'<td><input type=radio name=b value="{h(info.run_id)}"{" checked" if index == 0 else ""}></td>'
                     if compare else "")
            rows.append(
                f"<tr class=run>{picks}<td>{sample}</td>"
                f'<td><a class=run-link href="/run/{u(info.font_id)}/{u(info.run_id)}">{h(info.run_id)}</a>'
                f"<br>{h(info.name or '')}</td><td class='status {h(info.status)}'>{h(info.status)}</td>"
                f"<td>{h(', '.join(info.tags))}</td><td>{h(_compact(info.params))}</td>"
                f"<td>{h(_compact(info.metrics))}</td></tr>")
        head = "<th>A</th><th>B</th>" if compare else ""
        return (f"<table class=runs><tr>{head}<th>sample</th><th>run</th><th>status</th><th>tags</th>"
                f"<th>params</th><th>feedback</th></tr>{''.join(rows)}</table>")

    def _details(self, info: RunInfo) -> list[tuple[str, Any]]:
        return [("run id", info.run_id), ("started", _when(info.started_at)), ("ended", _when(info.ended_at)),
                ("saved", _when(info.saved_at)), ("tags", ", ".join(info.tags)),
                ("weights version", info.weights_version), ("feedback schema", info.feedback_schema),
                ("manifest", info.manifest), ("amends", info.parent or "")]

    def _weights(self, font_id: str, run_id: str, manifest: Manifest, previous: str | None) -> str:
        """Every tensor, and what it shares: with the previous run, and with the runs
        around this one (up to NEARBY on each side; their manifests are cached)."""
        from .diff import tensor_table

        table = tensor_table(manifest.weights)
        before = tensor_table(self.manifest(self.store.get_run_info(font_id, previous).manifest).weights) \
            if previous else {}
        nearby = self.store.list_runs(font_id, where=[("run_id", "<", run_id)], sort="-run_id", limit=NEARBY) + \
            self.store.list_runs(font_id, where=[("run_id", ">", run_id)], sort="run_id", limit=NEARBY)
        blob_sets = [{r.blob.identity for r in tensor_table(self.manifest(info.manifest).weights).values()}
                     for info in nearby if info.manifest]
        rows, shared = [], 0
        for name, record in table.items():
            same = name in before and before[name].blob.identity == record.blob.identity
            shared += record.blob.size if same else 0
            also = sum(record.blob.identity in identities for identities in blob_sets)
            raw = f'<a href="{h(_blob_url(record.blob, "bin"))}">raw bytes</a>' if record.blob.chunks else ""
            rows.append(f"<tr><td>{h(name)}</td><td>{h(record.dtype)}</td><td>{h(list(record.shape))}</td>"
                        f"<td>{record.blob.size:,}</td><td>{'same' if same else 'changed' if previous else ''}</td>"
                        f"<td class=nearby>{also} of {len(blob_sets)}</td><td>{raw}</td></tr>")
        total = sum(r.blob.size for r in table.values())
        note = (f"{shared / 1e6:.2f} of {total / 1e6:.2f} MB the same as in the previous run ({h(previous)})"
                if previous else f"{total / 1e6:.2f} MB")
        return (f"<p>{len(table)} tensors, {note}</p><table id=weights><tr><th>tensor</th><th>dtype</th>"
                f"<th>shape</th><th>bytes</th><th>vs previous run</th><th>same bytes in nearby runs</th>"
                f"<th>download</th></tr>{''.join(rows)}</table>")


def _blob_url(blob: Blob, kind: str) -> str:
    """Where a blob is served: by the addresses of its chunks (and, for a slice of a pack,
    where in it and its own address), so the URL never goes stale."""
    where = "" if blob.offset is None else "?" + urlencode(
        {"offset": blob.offset, "size": blob.size, "digest": blob.digest})
    return f"/blob/{','.join(blob.chunks)}.{kind}{where}"


def _slice_of(chunks: tuple[Digest, ...], query: dict[str, list[str]]) -> Blob:
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


def h(value: Any) -> str:
    """HTML-escape anything shown on a page."""
    return html.escape(str(value), quote=True)


def u(value: str) -> str:
    """Quote a path segment."""
    return quote(value, safe="")


def one(query: dict[str, list[str]], name: str) -> str:
    values = query.get(name) or [""]
    return values[0].strip()


def _run_id(text: str) -> str:
    if not RUN_ID_RE.fullmatch(text or ""):
        raise InvalidNameError(f"invalid run id {text!r}")
    return text


def _when(value: Any) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S UTC") if value else ""


def _compact(values: dict[str, Any]) -> str:
    return ", ".join(f"{k}={_short(v)}" for k, v in sorted(values.items()))


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    text = json.dumps(value, ensure_ascii=False, default=str) if not isinstance(value, str) else value
    return text if len(text) <= 80 else text[:77] + "..."


def _table(items: Iterable[tuple[str, Any]]) -> str:
    rows = "".join(f"<tr><th>{h(k)}</th><td>{h(_short(v))}</td></tr>" for k, v in items)
    return f"<table>{rows or '<tr><td>none</td></tr>'}</table>"


def _page_numbers(page: int, pages: int) -> list[int]:
    shown = {1, pages, *range(max(1, page - 3), min(pages, page + 3) + 1)}
    return sorted(shown)


class _Handler(BaseHTTPRequestHandler):
    browser: Browser
    allowed_hosts: frozenset[str]
    server_version = "aoe"

    def do_GET(self) -> None:
        self._answer(send_body=True)

    def do_HEAD(self) -> None:
        self._answer(send_body=False)

    def _refuse(self) -> None:
        self.send_response(HTTPStatus.METHOD_NOT_ALLOWED)
        self.send_header("Allow", "GET, HEAD")
        self.send_header("Content-Length", "0")
        self.end_headers()

    do_POST = do_PUT = do_DELETE = do_PATCH = _refuse

    def _answer(self, send_body: bool) -> None:
        body: bytes | Iterator[bytes]
        if not self._host_allowed():
            status, headers, body = self.browser.error(
                HTTPStatus.MISDIRECTED_REQUEST, "this server answers only to the names it was started for "
                "(see `aoe store serve --allow-host`)")
        else:
            status, headers, body = self.browser.respond(self.path)
        etag = headers.get("ETag")
        if etag and self.headers.get("If-None-Match") == etag:
            status, body = 304, b""
        self.send_response(status)
        length = {"Content-Length": str(len(body))} if isinstance(body, bytes) else {}
        for name, value in {**headers, **length, "Content-Security-Policy": CSP,
                            "Referrer-Policy": "no-referrer"}.items():
            self.send_header(name, value)
        self.end_headers()
        if send_body and status != 304:
            try:
                for piece in [body] if isinstance(body, bytes) else body:
                    self.wfile.write(piece)
            except StoreError:  # a later chunk failed its check: cut the response short
                self.close_connection = True

    def _host_allowed(self) -> bool:
        """Only the names this server was started for: a page elsewhere that rebinds its own
        DNS name to 127.0.0.1 gets nothing (its requests carry its own Host)."""
        host = (self.headers.get("Host") or "").strip().lower()
        name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
        return host in self.allowed_hosts or name in self.allowed_hosts

    def log_message(self, format: str, *args: Any) -> None:
        pass  # quiet; errors reach the page


def make_server(store: Store, host: str = "127.0.0.1", port: int = 8765,
                allow_hosts: Iterable[str] = ()) -> ThreadingHTTPServer:
    """A server for ``store`` (not started: call ``serve_forever``). It answers requests
    whose Host is the address it is bound to, a loopback name, or one of ``allow_hosts``
    (names, or ``name:port``)."""
    handler: type[_Handler] = type("Handler", (_Handler,), {"browser": Browser(store), "allowed_hosts": frozenset()})
    server = ThreadingHTTPServer((host, port), handler)
    bound = server.server_address[1]
    names = {host, "localhost", "127.0.0.1", "[::1]", *(a.lower() for a in allow_hosts)}
    handler.allowed_hosts = frozenset(
        {f"{n}:{bound}" for n in names} | {n for n in allow_hosts if ":" in n} | {n.lower() for n in allow_hosts})
    server.daemon_threads = True
    return server


CHART_METRICS = 12
"""Metrics a font page offers to chart (the commonest)."""

CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'"

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
.thumb,.sample,.glyph{{image-rendering:pixelated;background:#f4f4f4}} .thumb{{width:64px;height:64px;object-fit:contain}}
.card .thumb{{width:150px;height:150px}} img.sample{{width:256px;height:256px;object-fit:contain}}
.glyphs{{display:flex;flex-wrap:wrap;gap:8px}} .glyph{{width:64px;height:64px;object-fit:contain}}
figure{{margin:0;text-align:center}} table{{border-collapse:collapse;margin:.5em 0}}
td,th{{border-bottom:1px solid #eee;padding:3px 8px;text-align:left;vertical-align:top}}
.chart{{max-width:100%;height:auto;font-size:11px}} .chart .plot{{fill:#fafafa;stroke:#ddd}}
.chart .line{{fill:none;stroke:#9bb7e0;stroke-width:1}} .chart .point{{fill:#1558b0}}
.chart .nonfinite{{stroke:#c0392b;stroke-width:2}} .chart text{{fill:#555}} a.current{{font-weight:bold}}
.status.completed{{color:#17803d}} .status.failed{{color:#b3261e}} .status.interrupted{{color:#a15c00}}
tr.changed td,tr.differs td{{background:#fff6e0}} tr.added td{{background:#e6f6ea}} tr.removed td{{background:#fde8e8}}
.pages a{{margin:0 2px}} .pages a.current{{font-weight:bold}} .error{{color:#b3261e}} pre{{background:#f7f7f7;padding:8px}}
.empty{{display:flex;align-items:center;justify-content:center;color:#999;font-size:11px}}
</style></head><body><header><h1><a href="/">aoe</a></h1><span>{root}</span></header>
{body}</body></html>"""
