"""The README's screenshots, taken from the README's own example as a new user would see it.

    python docs/screenshots/take.py [--runs 8]

Runs ``examples/train_fonts.py`` into a new folder, serves that store, and saves what
headless Chromium (Debian's ``chromium`` and ``chromium-driver``) shows of: the fonts,
a font's page (its charts and the start of its runs), its newest run, three runs
compared, and the lineage of the font forked from the best run. Needs the test extra (selenium, pillow).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from PIL import Image

import aoe
from aoe.web import make_server

HERE = Path(__file__).resolve().parent
EXAMPLE = HERE.parents[1] / "examples" / "train_fonts.py"
WIDTH = 1100


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=8, help="runs per font of the example")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="aoe-screens-") as work:
        subprocess.run([sys.executable, str(EXAMPLE), "--runs", str(args.runs)], cwd=work, check=True,
                       stdout=subprocess.DEVNULL)
        store = aoe.Store(Path(work) / "networks")
        font = store.list_fonts()[0]
        runs = [r.run_id for r in store.list_runs(font)]
        server = make_server(store, port=0)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        base = f"http://127.0.0.1:{server.server_address[1]}"
        pages = {
            "fonts": ("/", 700),
            "font": (f"/font/{font}", 2000),
            "run": (f"/run/{font}/{runs[-1]}", 1300),
            "compare": (f"/compare/{font}?run={runs[0]}&run={runs[len(runs) // 2]}&run={runs[-1]}", 1700),
            "lineage": (f"/lineage/{store.list_fonts()[-1]}", 400),
        }
        session = browser()
        try:
            for name, (path, height) in pages.items():
                shoot(session, base + path, height, HERE / f"{name}.png")
                print(f"{name}.png: {base}{path}")
        finally:
            session.quit()
            server.shutdown()


def browser():  # type: ignore[no-untyped-def]
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = "/usr/bin/chromium"
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", f"--window-size={WIDTH},900"):
        options.add_argument(argument)
    return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=options)


def shoot(session, url: str, height: int, target: Path) -> None:  # type: ignore[no-untyped-def]
    """The top ``height`` pixels of the page, every image loaded, as a small palette PNG."""
    session.set_window_size(WIDTH, 900)
    session.get(url)
    page = session.execute_script("return document.documentElement.scrollHeight")
    session.set_window_size(WIDTH, min(height, page))
    session.execute_script("for (const image of document.images) image.loading = 'eager'")
    deadline = time.monotonic() + 10
    while not session.execute_script("return [...document.images].every(i => i.complete)"):
        if time.monotonic() > deadline:
            raise TimeoutError(f"images of {url} did not load")
        time.sleep(0.1)
    session.save_screenshot(str(target))
    Image.open(target).convert("RGB").quantize(256).save(target, optimize=True)


if __name__ == "__main__":
    main()
