"""How fast `aoe store serve` shows a font of 10,000 runs, charts included.

    python benchmarks/bench_web.py [--runs 10000] [--repeats 5] [--dir PATH] [--store PATH]

Builds a font of --runs runs as a personality-font trainer makes them: each with the
params, tags, name and feedback of bench_listing.py's runs, plus a personality vector of
16 numbers drifting run by run, a sample, 26 glyph images and a loss per glyph (a few of
them NaN). ``--store PATH`` keeps the store there and reuses it when it exists. Then it
serves the store in this process and times pages over HTTP on 127.0.0.1: the font page
(metric chart, personality trajectory and heatmap, glyph-loss heatmap, one glyph's strip,
the first 100 runs), its first view after the server starts (every personality vector read
and verified once), other chart choices, a later page, a filtered page, a run page and
comparisons of 2 and 12 runs; each chart section on its own in the server; then, when
Debian's chromium and chromium-driver are installed, the font page in a real headless
browser: navigation start to the load event, images included (cold: a new profile; warm:
reloaded, images from the browser's cache). Each figure is a median.
"""

from __future__ import annotations

import argparse
import io
import math
import shutil
import statistics
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

import torch
from bench_listing import run_fields
from timing import median_time

import aoe
from aoe.web import Browser, make_server
from aoe.web.trends import FontData, glyph_sections, metric_section, personality_section

FONT = "1-evolving"
GLYPHS = [chr(c) for c in range(ord("A"), ord("Z") + 1)]


def glyph_png(glyph: int, variant: int) -> bytes:
    from PIL import Image, ImageDraw

    image = Image.new("L", (24, 24), 0)
    ImageDraw.Draw(image).rectangle((2 + glyph % 7, 3, 20 - variant, 21 - glyph % 5), outline=255, width=1 + variant)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def build(root: Path, runs: int) -> None:
    """A font of ``runs`` runs (kept when ``root`` already holds them)."""
    store = aoe.Store(root)
    if root.exists() and FONT in store.list_fonts() and len(store.list_runs(FONT)) >= runs:
        return
    if not root.exists() or FONT not in store.list_fonts():
        store.create_font("evolving")
    images = [[glyph_png(g, v) for v in range(3)] for g in range(len(GLYPHS))]
    generator = torch.Generator().manual_seed(0)
    vector = torch.zeros(16)
    began = time.perf_counter()
    for i in range(len(store.list_runs(FONT)), runs):
        fields = run_fields(i)
        vector = vector + 0.05 * torch.randn(16, generator=generator) + 0.01
        variant = (i // 500) % 3
        losses = {g: math.nan if (i + n) % 997 == 0 else round(0.5 / (1 + i / 1000) + n / 100, 6)
                  for n, g in enumerate(GLYPHS)}
        store.save_model(
            FONT, {"w": torch.zeros(64)}, vector, images[i % 26][variant],
            {g: images[n][variant] for n, g in enumerate(GLYPHS)}, {**fields["feedback"], "glyph_loss": losses},
            params=fields["params"], started_at=fields["started_at"], tags=fields["tags"], name=fields["name"])
        if i % 1000 == 999:
            print(f"  {i + 1:,} runs saved ({time.perf_counter() - began:.0f} s)", flush=True)


def fetch(url: str) -> bytes:
    with urllib.request.urlopen(url) as response:
        return response.read()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--dir", default=None)
    parser.add_argument("--store", default=None, help="keep (and reuse) the store at this path")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="aoe-bench-web-", dir=args.dir))
    try:
        root = Path(args.store) if args.store else work / "store"
        build(root, args.runs)
        store = aoe.Store(root)
        runs = [r.run_id for r in store.list_runs(FONT)]
        server = make_server(store, port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        began = time.perf_counter()
        first_page = fetch(f"{base}/font/{FONT}")
        first = time.perf_counter() - began
        print(f"a font of {len(runs):,} runs; the server's first font page (its index copied into memory, "
              f"{len(runs):,} personality vectors read and verified): {first * 1000:.0f} ms, "
              f"{len(first_page) / 1000:.0f} KB\n")
        twelve = "&".join(f"run={r}" for r in runs[-12:])
        pages = {
            "font page (charts + 100 runs)": f"/font/{FONT}",
            "  another metric, log scale": f"/font/{FONT}?metric=val_loss&log=1",
            "  another glyph's strip and loss": f"/font/{FONT}?glyph=Q&metric=glyph_loss.Q",
            "  personality change since the first run": f"/font/{FONT}?dims=change",
            "font page 50": f"/font/{FONT}?page=50",
            "filtered, sorted (tag, metric, params)": f"/font/{FONT}?tag=bold&where=metrics.final_loss%3C0.5&sort=params.lr",
            "run page": f"/run/{FONT}/{runs[-1]}",
            "compare two runs": f"/compare/{FONT}?a={runs[-2]}&b={runs[-1]}",
            "compare twelve runs": f"/compare/{FONT}?{twelve}",
        }
        print(f"{'page (HTML over HTTP)':44} {'median':>9} {'size':>8}")
        for name, path in pages.items():
            seconds = median_time(lambda: fetch(base + path), args.repeats)
            print(f"{name:44} {seconds * 1000:7.1f}ms {len(fetch(base + path)) / 1000:6.0f}KB")
        sections(server.RequestHandlerClass.browser, args.repeats)  # type: ignore[attr-defined]
        browser_timing(base + pages["font page (charts + 100 runs)"], args.repeats)
        server.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)


def sections(browser: Browser, repeats: int) -> None:
    """Each chart section of the font page built on its own in the server, from what it
    keeps of the font (as on every view but the first after a change), and from scratch
    (as on the first view after a run was saved: the RunInfos themselves are kept by the
    index and only the new one is added)."""
    charts = browser.charts
    parts = {
        "metric chart": lambda data: metric_section(data, {}),
        "personality trajectory + heatmap": lambda data: personality_section(data, {}),
        "glyph-loss heatmap + glyph strip": lambda data: glyph_sections(data, {}, browser.manifest),
    }
    print(f"\n{'a section of the font page, in the server':44} {'kept':>9} {'afresh':>9}")
    for name, action in parts.items():
        kept = median_time(lambda: action(charts.data(FONT)), repeats)
        afresh = median_time(lambda: action(FontData(browser.store, FONT, browser.store.list_runs(FONT))), repeats)
        print(f"{name:44} {kept * 1000:7.1f}ms {afresh * 1000:7.1f}ms")


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
    print(f"\n{'the font page in headless Chromium':44} {'median':>9}")
    print(f"{'  new profile (every image fetched)':44} {statistics.median(cold) * 1000:7.1f}ms")
    print(f"{'  again (images from the cache)':44} {statistics.median(warm) * 1000:7.1f}ms")


if __name__ == "__main__":
    main()
