"""The web browser over HTTP: pages, content types and caching, safety, read-only."""

from __future__ import annotations

import html
import io
import re
import sys
import threading
import urllib.error
import urllib.request
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from conftest import make_png

import aoe
from aoe.layout import object_key, run_id_at
from aoe.web import PAGE_SIZE, make_server

EVIL = '<script>alert("x")</script>'


@pytest.fixture
def runs(store: aoe.Store, font: str) -> list[str]:
    ids = []
    for i in range(3):
        weights = {"frozen": torch.ones(100), "head": torch.full((10,), float(i))}
        ids.append(store.save_model(
            font, weights, [float(i)], make_png(40 * i), {"A": make_png(i), "B": make_png(99)},
            {"final_loss": 1 / (i + 1), "notes": EVIL}, params={"lr": 0.1 * (i + 1), "style": EVIL},
            name=f"run {i} {EVIL}", description=EVIL, tags=["bold"] if i == 2 else []))
    return ids


@pytest.fixture
def server(store: aoe.Store, runs: list[str]) -> Iterator[str]:
    httpd = make_server(store, port=0)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def get(url: str, method: str = "GET", headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    request = urllib.request.Request(url, method=method, headers=headers or {})
    try:
        with urllib.request.urlopen(request) as response:
            return response.status, dict(response.headers), response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, dict(exc.headers), exc.read()


def test_every_page_renders_and_escapes_user_strings(server: str, font: str, runs: list[str]) -> None:
    pages = ["/", f"/font/{font}", f"/run/{font}/{runs[0]}", f"/compare/{font}?a={runs[0]}&b={runs[2]}",
             "/search?q=run", f"/font/{font}?tag=bold", f"/font/{font}?where=params.lr%3E0.15&sort=-params.lr"]
    for page in pages:
        status, headers, body = get(server + page)
        assert status == 200, (page, body[:300])
        assert headers["Content-Type"] == "text/html; charset=utf-8"
        assert (b"<script>" not in body and b"&lt;script&gt;" in body) or page == "/", page
        assert "script-src" not in headers["Content-Security-Policy"]  # no script may run at all
    _, _, body = get(f"{server}/font/{font}?tag=bold")
    assert body.count(b'class=run-link') == 1 and runs[2].encode() in body
    _, _, body = get(f"{server}/search?q=run")  # results span fonts: each says whose
    assert b"<th>font</th>" in body and f'<td><a href="/font/{font}">{font}</a></td>'.encode() in body
    _, _, body = get(f"{server}/font/{font}?where=params.lr%3E0.15&sort=-params.lr")
    listed = body[body.index(b'id="compare"'):]  # the run table (the chart above links every run)
    assert listed.index(runs[2].encode()) < listed.index(runs[1].encode()) and runs[0].encode() not in listed


def test_a_run_page_says_which_tensors_other_runs_share(server: str, font: str, runs: list[str]) -> None:
    _, _, page = get(f"{server}/run/{font}/{runs[1]}")
    weights = page[page.index(b"<table id=weights>"):].decode()
    frozen, head = weights.split("<td>frozen</td>")[1], weights.split("<td>head</td>")[1]
    assert "<td>same</td><td class=nearby>2 of 2</td>" in frozen  # every run has the same frozen layer
    assert "<td>changed</td><td class=nearby>0 of 2</td>" in head  # each run its own head


def test_images_are_served_by_address_with_their_type_and_cached_forever(server: str, store: aoe.Store,
                                                                         font: str, runs: list[str]) -> None:
    _, _, page = get(f"{server}/run/{font}/{runs[1]}")
    sample = store.open_run(font, runs[1]).manifest.sample.chunks[0]
    assert f"/blob/{sample}.png".encode() in page
    status, headers, body = get(f"{server}/blob/{sample}.png")
    assert status == 200 and body == make_png(40)
    assert headers["Content-Type"] == "image/png" and "immutable" in headers["Cache-Control"]
    assert headers["X-Content-Type-Options"] == "nosniff"
    status, _, body = get(f"{server}/blob/{sample}.png", headers={"If-None-Match": headers["ETag"]})
    assert status == 304 and body == b""
    status, headers, _ = get(f"{server}/blob/{sample}.bin")
    assert status == 200 and headers["Content-Disposition"].startswith("attachment")


def test_a_run_downloads_as_the_spec_folder_layout(server: str, store: aoe.Store, font: str, runs: list[str]) -> None:
    status, headers, body = get(f"{server}/download/{font}/{runs[0]}.zip")
    assert status == 200 and headers["Content-Type"] == "application/zip"
    names = set(zipfile.ZipFile(io.BytesIO(body)).namelist())
    prefix = f"{font}/runs/{runs[0]}/"
    assert {prefix + n for n in ("weights.pt", "sample.png", "eval-glyphs/A.png", "feedback.json")} <= names
    weights = torch.load(io.BytesIO(zipfile.ZipFile(io.BytesIO(body)).read(prefix + "weights.pt")), weights_only=True)
    assert torch.equal(weights["head"], torch.zeros(10))


@pytest.mark.parametrize("path, status", [
    ("/font/..%2F..%2Fetc", 400), ("/font/../../etc/passwd", 404), ("/run/1-fruity/../../x", 404),
    ("/blob/../../etc/passwd.png", 404), ("/blob/abc.png", 400), ("/blob/" + "0" * 64 + ".png", 404),
    ("/blob/" + "0" * 64 + ".exe", 404), ("/run/1-fruity/not-a-run", 400), ("/font/9-nothing", 404),
    ("/compare/1-fruity?a=x&b=y", 400), ("/font/1-fruity?page=0", 400), ("/.objects/", 404), ("/etc/passwd", 404),
])
def test_path_tricks_and_bad_input_are_refused(server: str, path: str, status: int) -> None:
    code, headers, body = get(server + path)
    assert code == status, body[:300]
    assert headers["Content-Type"].startswith("text/html")


def test_it_is_read_only(server: str, store: aoe.Store, font: str) -> None:
    def catalog() -> dict[str, int]:
        assert store.catalog.path is not None
        return {str(p): p.stat().st_mtime_ns for p in store.catalog.path.parent.rglob("*")}

    before = catalog()
    for method in ("POST", "PUT", "DELETE", "PATCH"):
        status, headers, _ = get(f"{server}/font/{font}", method=method)
        assert status == 405 and headers["Allow"] == "GET, HEAD"
    status, _, body = get(f"{server}/", method="HEAD")
    assert status == 200 and body == b""
    assert get(f"{server}/font/{font}")[0] == 200  # its charts keep the vectors they read: in its own index
    assert catalog() == before  # its index lives in memory: the one on disk is never written


def test_a_big_font_pages(store: aoe.Store, font: str) -> None:
    for i in range(PAGE_SIZE + 5):
        store.save_model(font, {"w": torch.zeros(2)}, params={"i": i})
    httpd = make_server(store, port=0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        _, _, first = get(f"{base}/font/{font}")
        _, _, second = get(f"{base}/font/{font}?page=2")
        assert first.count(b"class=run-link") == PAGE_SIZE and second.count(b"class=run-link") == 5
        assert b"page 2 of 2" in second
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_serve_command_refuses_a_missing_store(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from conftest import run_cli

    code, _, err = run_cli(capsys, "store", "--root", str(tmp_path / "nothing"), "serve", "--port", "0")
    assert code == 3 and "no store at" in err


def test_it_serves_a_store_on_s3_too(s3_store: aoe.Store) -> None:
    font = s3_store.create_font("fruity")
    run = s3_store.save_model(font, {"w": torch.ones(4)}, [1.0], make_png(7), {"A": make_png(8)})
    httpd = make_server(aoe.Store(s3_store.root), port=0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        status, _, page = get(f"{base}/run/{font}/{run}")
        assert status == 200 and run.encode() in page
        glyph = s3_store.open_run(font, run).manifest.glyphs["A"].chunks[0]
        assert get(f"{base}/blob/{glyph}.png")[2] == make_png(8)
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_big_tensor_streams_chunk_by_chunk(store: aoe.Store, font: str, monkeypatch: pytest.MonkeyPatch) -> None:
    import aoe.objects

    monkeypatch.setattr(aoe.objects, "CHUNK_SIZE", 4096)
    tensor = torch.arange(5000, dtype=torch.float32)  # 20,000 bytes: 5 chunks
    run = store.save_model(font, {"big": tensor})
    blob = store.open_run(font, run).manifest.weights["big"].blob
    assert len(blob.chunks) == 5
    httpd = make_server(store, port=0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        base = f"http://127.0.0.1:{httpd.server_address[1]}"
        status, headers, body = get(f"{base}/blob/{','.join(blob.chunks)}.bin")
        assert status == 200 and headers["Content-Length"] == "20000" and body == tensor.numpy().tobytes()
        _, _, page = get(f"{base}/run/{font}/{run}")
        assert f"/blob/{','.join(blob.chunks)}.bin".encode() in page
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_serve_command_serves_until_stopped(store: aoe.Store, runs: list[str]) -> None:
    import signal
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-X", "faulthandler", "-m", "aoe", "store", "--root", str(store.root),
                                "serve", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               # as from a terminal: a shell running this suite in the background
                               # ignores Ctrl-C for its children, and Python then keeps ignoring it
                               preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    try:
        line = process.stdout.readline()
        assert line.startswith(f"serving {store.root} at http://127.0.0.1:"), process.stderr.read()
        url = line.split(" at ")[1].split()[0]
        status, _, page = get(url + "font/1-fruity")
        assert status == 200 and runs[0].encode() in page
    finally:
        process.send_signal(signal.SIGINT)
        try:
            _, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:  # say where it hangs: faulthandler prints every thread's stack
            process.send_signal(signal.SIGABRT)
            _, err = process.communicate(timeout=20)
            raise AssertionError(f"the server did not stop on Ctrl-C:\n{err[-5000:]}") from None
    assert process.returncode == 130 and "Traceback" not in err


def test_the_server_starts_from_the_store_index_without_writing_it(store: aoe.Store, font: str,
                                                                  runs: list[str], monkeypatch) -> None:
    store.list_runs(font)  # the store's own index, on disk, knows every run
    store.catalog.close()  # as when the process that wrote it ends: its WAL is checkpointed
    assert store.catalog.path is not None
    catalog = store.catalog.path.parent
    before = {p.name: p.stat().st_mtime_ns for p in catalog.iterdir()}
    server_store = aoe.Store(store.root, read_only=True)  # as `aoe store serve` opens it
    reads: list[str] = []
    real_read = server_store.backend.read
    monkeypatch.setattr(server_store.backend, "read", lambda key, **kw: reads.append(key) or real_read(key, **kw))
    httpd = make_server(server_store, port=0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        status, _, page = get(f"http://127.0.0.1:{httpd.server_address[1]}/font/{font}")
        assert status == 200 and all(r.encode() in page for r in runs)
        assert not [k for k in reads if run_id_at(k)]  # no ref read again: the seed knew them
        assert reads  # the server read through this backend (so the check above means something)
        extra = aoe.Store(store.root).save_model(font, {"w": torch.ones(1)})  # a save while serving shows up
        assert extra.encode() in get(f"http://127.0.0.1:{httpd.server_address[1]}/font/{font}")[2]
    finally:
        httpd.shutdown()
        httpd.server_close()
    after = {p.name: p.stat().st_mtime_ns for p in catalog.iterdir()}
    assert set(after) == set(before) and all(after[n] == before[n] for n in before if not n.endswith(("-wal", "-shm")))


def test_a_damaged_store_index_is_no_seed(store: aoe.Store, font: str, runs: list[str]) -> None:
    store.list_runs(font)
    store.catalog.close()
    index = store.catalog.path
    assert index is not None
    index.write_bytes(b"not a database" * 100)
    httpd = make_server(aoe.Store(store.root), port=0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        status, _, page = get(f"http://127.0.0.1:{httpd.server_address[1]}/font/{font}")
        assert status == 200 and all(r.encode() in page for r in runs)
    finally:
        httpd.shutdown()
        httpd.server_close()
    assert index.read_bytes() == b"not a database" * 100  # left as it was: serve writes nothing


# -- hostile requests and damaged stores ------------------------------------------------


def test_requests_for_another_host_name_are_refused(server: str, font: str) -> None:
    """DNS rebinding: a page at evil.example whose name now resolves to 127.0.0.1 sends
    Host: evil.example; it must get nothing of the store."""
    status, headers, body = get(server + f"/font/{font}", headers={"Host": "evil.example"})
    assert status == 421 and font.encode() not in body
    assert headers["Cache-Control"] == "no-store"
    port = server.rsplit(":", 1)[1]
    for host in (f"localhost:{port}", f"127.0.0.1:{port}"):
        assert get(server + "/", headers={"Host": host})[0] == 200


def test_allowed_host_names_are_answered(store: aoe.Store, runs: list[str]) -> None:
    httpd = make_server(store, port=0, allow_hosts=["fonts.lab"])
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/"
        assert get(url, headers={"Host": "fonts.lab"})[0] == 200
        assert get(url, headers={"Host": "fonts.lab:8080"})[0] == 200
        assert get(url, headers={"Host": "other.lab"})[0] == 421
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_a_page_number_beyond_reason_is_a_clear_400(server: str, font: str) -> None:
    status, headers, body = get(server + f"/font/{font}?page={10**25}")
    assert status == 400 and b"pages are numbered" in body
    assert headers["Cache-Control"] == "no-store"


def test_a_damaged_later_chunk_aborts_the_download(store: aoe.Store, font: str, tmp_path: Path) -> None:
    import http.client


    run_id = store.save_model(font, {"big": torch.arange(3 * 1024 * 1024, dtype=torch.float32)})
    blob = store.open_run(font, run_id).manifest.weights["big"].blob
    assert len(blob.chunks) == 2
    path = store.backend.path(object_key(blob.chunks[1]))
    data = bytearray(path.read_bytes())
    data[-1] ^= 1
    path.write_bytes(bytes(data))
    httpd = make_server(store, port=0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{httpd.server_address[1]}/blob/{','.join(blob.chunks)}.bin"
        with urllib.request.urlopen(url) as response:
            assert int(response.headers["Content-Length"]) == blob.size
            with pytest.raises(http.client.IncompleteRead):
                response.read()
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_an_unreadable_newest_run_does_not_take_the_front_page_down(server: str, store: aoe.Store, font: str) -> None:
    import msgpack

    from aoe.manifests import FORMAT

    bad = msgpack.packb({"format": FORMAT, "version": 1, "font_id": font, "run_id": "29990101T000000.000000Z-0000",
                         "status": "completed", "saved_at": "yesterday"})
    store.refs.create_run(font, "29990101T000000.000000Z-0000", store.objects.put(bad))
    status, _, body = get(server + "/")
    assert status == 200 and b"unreadable" in body
    status, _, body = get(server + f"/font/{font}")
    assert status == 200 and b"unreadable" in body


def test_the_readme_flow_with_a_relative_root_answers_every_linked_page(tmp_path: Path) -> None:
    """As a new user runs it: the example in a fresh folder (it saves into ./networks),
    then `aoe store serve` with its defaults; every page linked from / answers 200. A font
    page's chart choices combine (metric x scale x glyph...): each choice is followed at
    least once, not every combination."""
    import re
    import socket
    import subprocess
    import sys
    import time
    from urllib.parse import parse_qsl, urlsplit

    work = tmp_path / "fresh"
    work.mkdir()
    env = {k: v for k, v in __import__("os").environ.items() if k != "AOE_STORE"}
    example = Path(__file__).parent.parent / "examples" / "train_fonts.py"
    subprocess.run([sys.executable, str(example)], cwd=work, env=env, check=True, capture_output=True, timeout=120)
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([sys.executable, "-m", "aoe", "store", "serve", "--port", str(port)], cwd=work, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert "serving networks" in server.stdout.readline()
        seen: set[str] = set()
        choices: set[tuple[str, str, str]] = set()
        todo = ["/"]
        while todo and len(seen) < 3000:
            path = todo.pop(0)
            parts = urlsplit(path)
            made = {(parts.path, key, value) for key, value in parse_qsl(parts.query)}
            if path in seen or (parts.path.startswith("/font/") and made and made <= choices):
                continue
            seen.add(path)
            choices |= made
            status, headers, body = get(f"http://127.0.0.1:{port}{path}")
            assert status == 200, (path, body[:300])
            if headers["Content-Type"].startswith("text/html"):
                todo += [html.unescape(link) for link in re.findall(r'(?:href|src)="(/[^"]*)"', body.decode())]
        assert not todo and any(p.startswith("/download/") for p in seen)
        kinds = {urlsplit(p).path.split("/")[1] for p in seen} | {k for p in seen for k, _ in parse_qsl(urlsplit(p).query)}
        assert {"font", "run", "compare", "blob", "download", "metric", "log", "glyph"} <= kinds, kinds
    finally:
        server.terminate()
        server.wait(timeout=10)
        time.sleep(0)


def test_glyph_images_packed_together_are_served_one_by_one(server: str, store: aoe.Store, font: str,
                                                             runs: list[str]) -> None:
    _, _, page = get(f"{server}/run/{font}/{runs[1]}")
    glyph_a = store.open_run(font, runs[1]).manifest.glyphs["A"]
    assert glyph_a.offset is not None  # A and B share one pack
    url = html.unescape(re.search(rb'href="(/blob/[^"]+)"><img class="glyph" [^>]*alt="glyph A"', page)[1].decode())
    status, headers, body = get(f"{server}{url}")
    assert status == 200 and body == make_png(1) and headers["ETag"] == f'"{glyph_a.digest}"'
    assert int(headers["Content-Length"]) == len(body)
    for bad in (url.replace("offset=", "offset=1"), url.replace("size=", "size=9"), url + "x",
                url.replace("offset=", "offset=-1")):
        status, _, body = get(f"{server}{bad}")
        assert status in (400, 500) and b"Traceback" not in body, bad


def test_a_font_page_charts_a_metric_of_every_run_with_links_and_choices(store: aoe.Store, font: str) -> None:
    from aoe.web import Browser

    losses = [0.5, float("nan"), 0.25, 0.125]
    runs = [store.save_model(font, {"w": torch.ones(1)}, feedback={"final_loss": loss, "bleu": i, "glyph_loss": {"A": 1}})
            for i, loss in enumerate(losses)]
    store.save_model(font, {"w": torch.ones(1)})  # no metrics: not on the chart
    browser = Browser(store)
    status, _, page = browser.respond(f"/font/{font}")
    html = page.decode()
    assert status == 200 and "final_loss against time (4 runs)" in html  # the commonest top-level metric
    assert html.count('class="point"') == 3 and html.count('class="nonfinite"') == 1
    for run_id in runs:
        assert f'href="/run/{font}/{run_id}"' in html
    assert f'<title>{runs[1]}: NaN</title>' in html
    assert "metric=bleu" in html and "metric=glyph_loss.A" in html and 'id="scale"' in html
    html = browser.respond(f"/font/{font}?metric=bleu&log=1")[2].decode()
    assert "bleu against time (4 runs)" in html and html.count('class="nonfinite"') == 1  # bleu 0 on a log scale
    assert "linear scale" in html
    menu = html[html.index('<form class="inline"'):html.index("</form>")]  # every metric, nested ones too
    assert "<option>glyph_loss.A</option>" in menu and "<option selected>bleu</option>" in menu
    assert '<input type="hidden" name="log" value="1">' in menu and 'name="metric"' in menu
    html = browser.respond(f"/font/{font}?metric=glyph_loss.A&log=1")[2].decode()
    assert "glyph_loss.A against time (4 runs)" in html
    html = browser.respond(f"/font/{font}?metric=nothing")[2].decode()
    assert "No run has this metric." in html


@pytest.fixture
def evolving(store: aoe.Store, font: str) -> list[str]:
    """Six runs whose personality drifts along one direction, each with per-glyph losses
    (one NaN) and glyph images; a seventh with a vector of another length."""
    runs = []
    for i in range(6):
        losses = {"A": 0.5 / (i + 1), "B": float("nan") if i == 2 else 0.1 * i}
        runs.append(store.save_model(
            font, {"w": torch.full((4,), float(i))}, [float(i), 2.0 * i, 0.0, 1.0],
            make_png(10 * i), {"A": make_png(20 + i), "B": make_png(90)},
            {"final_loss": 1 / (i + 1), "glyph_loss": losses}))
    runs.append(store.save_model(font, {"w": torch.ones(1)}, [1.0, 2.0], feedback={"final_loss": 0.01}))
    return runs


def test_a_font_page_shows_the_personality_trajectory_and_dimensions(store: aoe.Store, font: str,
                                                                     evolving: list[str]) -> None:
    from aoe.web import Browser

    html = Browser(store).respond(f"/font/{font}")[2].decode()
    section = html[html.index('<section id="personality">'):html.index("</section>", html.index('id="personality"'))]
    assert "6 runs with a vector of 4 numbers; 1 runs without one (or of another length) left out" in section
    dots = re.findall(r'<a href="/run/[^/]+/([^"]+)"><circle class="dot" cx="([\d.]+)"', section)
    assert [run_id for run_id, _ in dots] == evolving[:6]  # one point per run, each linking to it, in run order
    xs = [float(x) for _, x in dots]
    assert xs == sorted(xs) or xs == sorted(xs, reverse=True)  # the drift is a straight line on PC1
    assert "PC1 (100.0% of the variance)" in section
    heat = section[section.index('class="chart heatmap"'):]
    assert heat.count('class="column"') == 6 and ">dim 3<" in heat and ">dim 4<" not in heat  # dims x runs
    change = Browser(store).respond(f"/font/{font}?dims=change")[2].decode()
    assert "change since the first run" in change and 'id="dims"' in change


def test_a_font_page_maps_per_glyph_losses_and_strips_a_glyph_across_runs(store: aoe.Store, font: str,
                                                                         evolving: list[str]) -> None:
    from aoe.web import Browser

    browser = Browser(store)
    html = browser.respond(f"/font/{font}")[2].decode()
    heat = html[html.index('<section id="glyph-losses">'):html.index('<section id="glyph-strip">')]
    assert "glyph_loss by glyph over runs (6 runs)" in heat
    assert re.search(r'class="nonfinite-cell" [^>]*d="M2,1h1v1h-1z"', heat)  # B's NaN in run 2
    assert re.findall(r'<a href="/run/[^/]+/([^"]+)"><rect class="column"', heat) == evolving[:6]
    assert f"<title>{evolving[2]}: A 0.1667, B no finite value (1 NaN or infinite)</title>" in heat
    assert "metric=glyph_loss.B&amp;glyph=B" in heat  # a glyph's row leads to its loss over time and its strip
    strip = html[html.index('<section id="glyph-strip">'):]
    strip = strip[:strip.index("</section>")]
    assert "Glyph A across runs (6 shown)" in strip
    assert re.findall(r'<a href="/run/[^/]+/([^"]+)"><img class="glyph"', strip) == evolving[:6]
    assert "· 0.5<" in strip and "· 0.0833<" in strip  # each image with its loss
    html = browser.respond(f"/font/{font}?glyph=B&metric=glyph_loss.B")[2].decode()
    assert "Glyph B across runs (6 shown)" in html and "glyph_loss.B against time (6 runs)" in html
    html = browser.respond(f"/font/{font}?glyph=Z")[2].decode()
    assert "Glyph Z across runs (0 shown)" in html and "no run has it" in html


def test_charts_stay_out_of_a_font_without_vectors_or_glyphs(store: aoe.Store, font: str) -> None:
    from aoe.web import Browser

    store.save_model(font, {"w": torch.ones(1)})
    html = Browser(store).respond(f"/font/{font}")[2].decode()
    assert 'id="personality"' not in html and 'id="glyph-losses"' not in html and 'id="glyph-strip"' not in html


def test_compare_several_runs_side_by_side(store: aoe.Store, font: str, evolving: list[str]) -> None:
    from aoe.web import Browser

    browser = Browser(store)
    picked = [evolving[3], evolving[0], evolving[1]]  # shown oldest first, whatever the order asked
    status, _, page = browser.respond(f"/compare/{font}?" + "&".join(f"run={r}" for r in picked))
    html = page.decode()
    assert status == 200 and "3 runs of" in html
    header = re.findall(r'<th><a href="/run/[^/]+/([^"]+)">', html[html.index("<table id=values>"):])[:3]
    assert header == sorted(picked)
    assert "Of 1 tensor: 1 from run 1 to run 2; 1 from run 2 to run 3." in html
    assert "measured when two runs are compared" in html
    values = html[html.index("<table id=values>"):html.index("</table>", html.index("<table id=values>"))]
    assert "<tr class='differs'><th>feedback.final_loss</th>" in values
    assert "<tr class='same'><th>run.status</th>" in values
    assert values.count("<td class=change>") >= 2  # each value that moved from the run before
    tensors = html[html.index("<table id=tensors>"):]
    assert tensors.count("<td class='changed'>changed</td>") == 2 and "relative" not in tensors  # by address only
    images = html[html.index("<table class=compare>"):html.index("</table>", html.index("<table class=compare>"))]
    assert "<th class='differs'>A</th><th class='same'>B</th>" in images  # A changes run to run, B never
    rows = re.findall(r'<tr><th><a href="/run/[^/]+/([^"]+)">', images)
    assert rows == sorted(picked) and images.count("<img") == 3 * 3  # sample, A and B of each run
    two = browser.respond(f"/compare/{font}?a={evolving[0]}&b={evolving[1]}")[2].decode()
    assert "relative" in two  # two runs: how much each changed tensor moved


@pytest.mark.parametrize("query", ["run={0}", "run={0}&run={0}", "run=not-a-run&run={0}", "many"])
def test_compare_refuses_too_few_too_many_or_bad_runs(store: aoe.Store, font: str, evolving: list[str],
                                                       query: str) -> None:
    from aoe.web import Browser

    for _ in range(7 if query == "many" else 0):
        evolving.append(store.save_model(font, {"w": torch.ones(1)}))
    query = "&".join(f"run={r}" for r in evolving) if query == "many" else query.format(evolving[0])
    status, _, page = Browser(store).respond(f"/compare/{font}?{query}")
    assert status == 400 and (b"compare 2 to 12 runs" in page or b"invalid run id" in page)


def test_a_filter_that_cannot_be_read_is_said_beside_the_form(store: aoe.Store, font: str, runs: list[str]) -> None:
    """Never "every run" or "no run": the font page answers 400, keeps its form (with what
    was typed) and says which part could not be read."""
    from urllib.parse import quote

    from aoe.web import Browser

    browser = Browser(store)
    for where, said in [("metrics.final_loss<abc", "metrics.final_loss is a number, and &#x27;abc&#x27; is not one"),
                        ("metrics.final_loss <<0.1", "&#x27;&lt;0.1&#x27; is not one"),
                        ("metrics.final_loss=0.5 status=completed", "is not one")]:
        status, _, page = browser.respond(f"/font/{font}?where={quote(where)}")
        html = page.decode()
        assert status == 400 and said in html, html[-2000:]
        assert 'id=filters' in html and 'class=run-link' not in html
    status, _, page = browser.respond(f"/font/{font}?where={quote('metrics.final_loss==0.5')}")
    assert status == 200 and page.decode().count("class=run-link") == 1  # what the table prints, matched


@pytest.mark.parametrize("big", [1e300, sys.float_info.max])
def test_huge_finite_values_chart_in_finite_arithmetic(store: aoe.Store, font: str, big: float) -> None:
    """A normal save accepts a personality vector of 1e308 and glyph losses of +-1.7e308:
    the font page draws them (every run linked, no NaN in the SVG), never a 500."""
    from aoe.web import Browser

    runs = [store.save_model(font, {"w": torch.ones(1)}, [big, -big, 0.0, float(i)],
                             feedback={"final_loss": [big, -big, 0.5][i], "glyph_loss": {"A": big, "B": -big, "C": i}})
            for i in range(3)]
    browser = Browser(store)
    for query in ("", "?log=1", "?metric=glyph_loss.A", "?dims=change", "?glyph=A&metric=glyph_loss.B"):
        status, _, page = browser.respond(f"/font/{font}{query}")
        html_text = page.decode()
        assert status == 200, html_text[-1500:]
        svg = "".join(re.findall(r"<svg.*?</svg>", html_text, re.S))
        assert svg and not re.search(r"\bnan\b|\binf\b", svg, re.I), query
        assert all(run in html_text for run in runs)
