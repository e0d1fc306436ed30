"""How fast `aoe store serve` shows a font of 10,000 runs.

    python benchmarks/bench_web.py [--runs 10000] [--repeats 5] [--dir PATH]

Builds the runs of bench_listing.py (a font of --runs runs, each with a sample, a glyph,
params and feedback), serves the store in this process, and times pages over HTTP on
127.0.0.1: the HTML of the first page of the font (100 runs with their thumbnails'
addresses), a later page, a filtered and sorted page, a run page and a comparison; then,
when Debian's chromium and chromium-driver are installed, the whole first page in a
real headless browser: navigation start to the load event, the 100 thumbnails included
(cold: a new browser profile; warm: reloaded, images from the browser's cache, since
they are served as immutable). Each figure is a median.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

from bench_listing import build
from timing import median_time

import aoe
from aoe.web import make_server


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url) as response:
        return response.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default=None)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aoe-bench-web-", dir=args.dir))
    try:
        root, plain = work / "store", work / "plain"
        build(root, plain, args.runs)
        store = aoe.Store(root)
        font = "1-fruity"
        runs = [r.run_id for r in store.list_runs(font, limit=2)]
        server = make_server(store, port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        began = time.perf_counter()
        fetch(f"{base}/font/{font}")
        first = time.perf_counter() - began
        print(f"a font of {args.runs:,} runs; the server's first page, its index built in memory: {first * 1000:.0f} ms\n")
        pages = {
            "font page 1 (100 runs, newest first)": f"/font/{font}",
            "font page 50": f"/font/{font}?page=50",
            "filtered, sorted (tag, metric, params)": f"/font/{font}?tag=bold&where=metrics.final_loss%3C0.5&sort=params.lr",
            "search in the font": f"/font/{font}?q=serif",
            "run page": f"/run/{font}/{runs[0]}",
            "compare two runs": f"/compare/{font}?a={runs[0]}&b={runs[1]}",
        }
        print(f"{'page (HTML over HTTP)':42} {'median':>9}")
        for name, path in pages.items():
            seconds = median_time(lambda: fetch(base + path), args.repeats)
            print(f"{name:42} {seconds * 1000:7.1f}ms")
        browser_timing(base + pages["font page 1 (100 runs, newest first)"], args.repeats)
        server.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def browser_timing(url: str, repeats: int) -> None:
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        print("\n(no chromium/chromium-driver: browser timings skipped)")
        return
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    def load_time(session) -> float:  # type: ignore[no-untyped-def]
        return session.execute_script(
            "const t = performance.getEntriesByType('navigation')[0]; return t.loadEventEnd - t.startTime") / 1000

    cold, warm = [], []
    for _ in range(repeats):
        options = webdriver.ChromeOptions()
        options.binary_location = chromium
        for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"):
            options.add_argument(argument)
        session = webdriver.Chrome(service=Service(driver), options=options)
        try:
            session.get(url)
            cold.append(load_time(session))
            session.get(url)
            warm.append(load_time(session))
        finally:
            session.quit()
    print(f"\n{'font page 1 in headless Chromium':42} {'median':>9}")
    print(f"{'  new profile (100 thumbnails fetched)':42} {statistics.median(cold) * 1000:7.1f}ms")
    print(f"{'  again (thumbnails from the cache)':42} {statistics.median(warm) * 1000:7.1f}ms")


if __name__ == "__main__":
    main()
