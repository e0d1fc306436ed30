"""The web browser of a store (``aoe store serve``): read-only pages over the public API.

Standard library only (``http.server``): no framework, no build step, no script on any
page (charts are SVG drawn on the server). Safe by default:

- it binds to 127.0.0.1 unless told otherwise, and answers GET and HEAD only;
- every path is matched against fixed routes whose parts are validated as font ids, run
  ids and addresses before use: nothing outside the store can be named;
- every user string (names, descriptions, tags, params, feedback) is HTML-escaped;
- it never writes to the store: it opens it read-only (``Store(read_only=True)``), which
  refuses every change and keeps the catalog index in memory, seeded from the store's;
- images and objects are served by content address, verified on read, with their
  content type and ``Cache-Control: immutable``, so a browser fetches each once.

``markup`` builds strings, ``trends`` the font page's charts, ``compare`` the comparison
of runs, ``pages`` routes a request to its page, ``server`` speaks HTTP.
"""

from .pages import PAGE_SIZE, Browser
from .server import make_server

__all__ = ["PAGE_SIZE", "Browser", "make_server"]
