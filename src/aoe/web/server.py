"""The HTTP side of ``aoe store serve``: a threading server that answers GET and HEAD
with the pages of a :class:`~aoe.web.pages.Browser`, only to the host names it was
started for, every answer under a strict Content-Security-Policy."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..errors import StoreError
from ..store import Store
from .pages import Browser

CSP = "default-src 'none'; img-src 'self'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'"


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
