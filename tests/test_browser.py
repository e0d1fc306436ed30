"""The web browser of a store, driven as a person would: real headless Chromium
(Debian's ``chromium`` and ``chromium-driver``, which ``.ci/run`` installs) through
Selenium, against ``aoe store serve``'s server on 127.0.0.1.

Without Chromium these tests skip, except where ``AOE_REQUIRE_BROWSER`` is set (CI),
where they fail. ``AOE_SCREENSHOTS=DIR`` keeps a screenshot of each main page there
(``docs/screenshots/`` holds the ones the README shows).
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import zipfile
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

import aoe
from aoe.web import make_server


def glyph_png(seed: int) -> bytes:
    """A small picture that differs per run, so pages show something to look at."""
    import io

    from PIL import Image, ImageDraw

    image = Image.new("L", (48, 48), 255)
    draw = ImageDraw.Draw(image)
    draw.ellipse((8 + seed % 9, 6, 40 - seed % 7, 42), outline=0, width=2 + seed % 4)
    draw.line((14, 40, 34, 8 + seed % 11), fill=0, width=3)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, aoe.Store, str, list[str]]]:
    store = aoe.Store(tmp_path_factory.mktemp("browse") / "networks")
    font = store.create_font("fruity")
    store.create_font("dumb")
    runs = []
    for i in range(6):
        weights = {"body.weight": torch.ones(64, 64), "head.weight": torch.full((8, 64), 0.1 * i)}
        runs.append(store.save_model(
            font, weights, [float(i), 1.0], glyph_png(i), {g: glyph_png(i + n) for n, g in enumerate("AaBbQ")},
            {"final_loss": round(1 / (i + 2), 4), "notes": "crisper serifs" if i % 2 else "rounder bowls",
             "glyph_loss": {g: round((n + 1) / (i + 2), 4) for n, g in enumerate("AaBbQ")}},
            params={"lr": [0.1, 0.01][i % 2], "epochs": 10 * (i + 1)}, name=f"fruity v{i}",
            description="a <b>bold</b> try" if i == 4 else None, tags=["bold"] if i >= 4 else []))
    store.set_retention(font, {"keep_last": 50, "keep_best": [(3, "metrics.final_loss")]})
    store.set_alias(font, "best", runs[2], note="first pick")
    store.set_alias(font, "best", runs[5], note="lowest final_loss")
    httpd = make_server(store, port=0)
    threading.Thread(target=httpd.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", store, font, runs
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):  # type: ignore[no-untyped-def]
    chromium, driver = shutil.which("chromium"), shutil.which("chromedriver")
    if not (chromium and driver):
        message = "needs Debian's chromium and chromium-driver (apt-get install chromium chromium-driver)"
        if os.environ.get("AOE_REQUIRE_BROWSER"):
            pytest.fail(message)
        pytest.skip(message)
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    downloads = tmp_path_factory.mktemp("downloads")
    options = webdriver.ChromeOptions()
    options.binary_location = chromium
    for argument in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                     "--window-size=1280,1000"):
        options.add_argument(argument)
    options.add_experimental_option("prefs", {"download.default_directory": str(downloads),
                                              "download.prompt_for_download": False})
    session = webdriver.Chrome(service=Service(driver), options=options)
    session.downloads = downloads
    yield session
    session.quit()


def loaded_images(browser, css: str) -> list[int]:  # type: ignore[no-untyped-def]
    """The natural width of every image matching ``css``, once each has finished loading."""
    deadline = time.monotonic() + 10
    while True:
        state = browser.execute_script(
            "return [...document.querySelectorAll(arguments[0])].map(i => [i.complete, i.naturalWidth])", css)
        if all(complete for complete, _ in state) or time.monotonic() > deadline:
            return [width for _, width in state]
        time.sleep(0.05)


def wait_for(browser, by: str, value: str, seconds: float = 10):  # type: ignore[no-untyped-def]
    """The element, once the page a click led to shows it."""
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, seconds).until(expected_conditions.presence_of_element_located((by, value)))


def keep(browser, name: str) -> None:  # type: ignore[no-untyped-def]
    folder = os.environ.get("AOE_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(Path(folder) / f"{name}.png"))


def test_from_the_font_list_into_a_run_with_its_glyphs(browser, site) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    url, store, font, runs = site
    browser.get(url + "/")
    cards = browser.find_elements(By.CSS_SELECTOR, "a.card.font")
    assert [c.find_element(By.TAG_NAME, "b").text for c in cards] == ["1-fruity", "2-dumb"]
    assert loaded_images(browser, "a.card img") and all(w > 0 for w in loaded_images(browser, "a.card img"))
    keep(browser, "fonts")
    cards[0].click()
    assert browser.find_element(By.TAG_NAME, "title").get_attribute("textContent").startswith(font)
    rows = browser.find_elements(By.CSS_SELECTOR, "tr.run")
    browser.execute_script("arguments[0].scrollIntoView()", rows[-1])  # below the charts: images load when seen
    assert len(rows) == 6 and all(w > 0 for w in loaded_images(browser, "tr.run img"))
    keep(browser, "font")
    browser.find_element(By.LINK_TEXT, runs[4]).click()
    widths = loaded_images(browser, "img.glyph")
    assert len(widths) == 5 and all(w == 48 for w in widths)
    assert loaded_images(browser, "img.sample") == [48]
    assert "a <b>bold</b> try" in browser.find_element(By.TAG_NAME, "body").text  # shown as text, not markup
    assert "rounder bowls" in browser.find_element(By.TAG_NAME, "pre").text  # its feedback
    keep(browser, "run")


def test_search_and_filter(browser, site) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    url, store, font, runs = site
    browser.get(url + "/")
    box = browser.find_element(By.ID, "search")
    box.send_keys("fruity v3")
    box.submit()
    assert [a.text for a in links_after(browser, "/search?")] == [runs[3]]
    browser.get(f"{url}/font/{font}")
    tag = browser.find_element(By.NAME, "tag")
    tag.send_keys("bold")
    tag.submit()
    assert sorted(a.text for a in links_after(browser, "tag=bold")) == runs[4:]


def links_after(browser, url_part: str, seconds: float = 10):  # type: ignore[no-untyped-def]
    """The run links of the page a form submit leads to, once it has loaded (find_elements
    right after submit() may still see the old page, or none)."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    WebDriverWait(browser, seconds).until(
        lambda b: url_part in b.current_url and b.execute_script("return document.readyState") == "complete")
    return browser.find_elements(By.CSS_SELECTOR, "a.run-link")


def test_compare_two_runs(browser, site) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    url, store, font, runs = site
    browser.get(f"{url}/font/{font}?sort=run_id")
    ticked = browser.find_elements(By.CSS_SELECTOR, "input[name=run]:checked")
    assert [box.get_attribute("value") for box in ticked] == runs[:2]  # the first two rows, ready to compare
    browser.find_element(By.CSS_SELECTOR, f"input[name=run][value='{runs[0]}']").click()  # untick
    browser.find_element(By.CSS_SELECTOR, f"input[name=run][value='{runs[2]}']").click()
    browser.find_element(By.ID, "compare-button").click()
    summary = wait_for(browser, By.ID, "summary")
    assert summary.text.startswith("Of 2 tensors: 1 differ."), browser.current_url
    cells = browser.find_elements(By.CSS_SELECTOR, "#tensors tr.changed td")
    assert cells[0].text == "head.weight" and cells[2].text.startswith("changed (relative ")
    assert all(w > 0 for w in loaded_images(browser, "table.compare img"))
    keep(browser, "compare")


def test_download_a_run(browser, site) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    url, store, font, runs = site
    browser.get(f"{url}/run/{font}/{runs[0]}")
    browser.find_element(By.ID, "download").click()
    target = browser.downloads / f"{font}-{runs[0]}.zip"
    deadline = time.monotonic() + 15
    while not target.exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    names = zipfile.ZipFile(target).namelist()
    assert f"{font}/runs/{runs[0]}/eval-glyphs/Q.png" in names and f"{font}/runs/{runs[0]}/weights.pt" in names
    assert zipfile.ZipFile(target).read(f"{font}/runs/{runs[0]}/sample.png") == store.load_sample(font, runs[0])


def test_a_font_page_charts_its_metric_and_a_point_leads_to_its_run(browser, site) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    server, _, font, runs = site
    browser.get(f"{server}/font/{font}")
    points = browser.find_elements(By.CSS_SELECTOR, "#metric-chart svg circle.point")
    marked = browser.find_elements(By.CSS_SELECTOR, "#metric-chart svg path.nonfinite")
    assert len(points) + len(marked) == len(runs)  # one mark per run with the metric
    target = browser.find_elements(By.CSS_SELECTOR, "#metric-chart svg a")[0].get_dom_attribute("href")
    assert target == f"/run/{font}/{runs[0]}"  # the oldest run's point comes first
    points[0].click()
    assert browser.current_url == server + target and runs[0] in browser.page_source
    browser.get(f"{server}/font/{font}")
    browser.find_element(By.ID, "scale").click()
    assert "log10" in browser.find_element(By.CSS_SELECTOR, "#metric-chart svg").get_attribute("aria-label")


def test_a_font_page_shows_how_the_font_evolves(browser, site) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    server, _, font, runs = site
    browser.get(f"{server}/font/{font}")
    dots = browser.find_elements(By.CSS_SELECTOR, "#personality svg.trajectory circle.dot")
    links = [a.get_dom_attribute("href") for a in browser.find_elements(By.CSS_SELECTOR, "#personality svg.trajectory a")]
    assert len(dots) == len(runs) and links == [f"/run/{font}/{r}" for r in runs]  # one point per run, in run order
    columns = browser.find_elements(By.CSS_SELECTOR, "#glyph-losses svg > a[href^='/run/']")
    assert [a.get_dom_attribute("href") for a in columns] == [f"/run/{font}/{r}" for r in runs]
    rows = browser.find_elements(By.CSS_SELECTOR, "#glyph-losses svg a[href*='glyph='] text")
    assert [row.text for row in rows] == sorted("AaBbQ")  # glyph x run, each glyph's row a link to its strip
    strip = browser.find_element(By.ID, "glyph-strip")
    browser.execute_script("arguments[0].scrollIntoView()", strip)
    assert len(loaded_images(browser, "#glyph-strip img")) == len(runs)
    assert all(w == 48 for w in loaded_images(browser, "#glyph-strip img"))
    browser.execute_script("window.scrollTo(0, 0)")
    keep(browser, "font-charts")
    browser.find_element(By.CSS_SELECTOR, "#glyph-strip a[href*='glyph=Q']").click()
    assert "Glyph Q across runs" in wait_for(browser, By.CSS_SELECTOR, "#glyph-strip h3").text
    dots = browser.find_elements(By.CSS_SELECTOR, "#personality svg.trajectory circle.dot")
    browser.execute_script("arguments[0].scrollIntoView()", dots[-1])
    dots[-1].click()  # the newest run's point leads to it
    assert browser.current_url == f"{server}/run/{font}/{runs[-1]}"


def test_compare_three_runs(browser, site) -> None:  # type: ignore[no-untyped-def]
    from selenium.webdriver.common.by import By

    url, store, font, runs = site
    browser.get(f"{url}/font/{font}?sort=run_id")
    browser.find_element(By.CSS_SELECTOR, f"input[name=run][value='{runs[3]}']").click()  # a third, with the first two
    browser.find_element(By.ID, "compare-button").click()
    summary = wait_for(browser, By.ID, "summary")
    assert summary.text.startswith("Of 2 tensors: 1 from run 1 to run 2; 1 from run 2 to run 3."), browser.current_url
    heads = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "#values tr:first-child th")]
    assert heads == ["", *runs[:2], runs[3]]
    rows = [th.text for th in browser.find_elements(By.CSS_SELECTOR, "table.compare tr th:first-child")]
    assert rows == ["run", *runs[:2], runs[3]]  # a row of images per run
    assert len(browser.find_elements(By.CSS_SELECTOR, "#values tr.differs")) >= 3  # loss, lr, epochs...
    assert len(loaded_images(browser, "table.compare img")) == 3 * 6  # sample and five glyphs of each
    keep(browser, "compare")


def test_the_lineage_of_a_font_and_the_history_of_an_alias(browser, site) -> None:  # type: ignore[no-untyped-def]
    """From a font's page to its lineage (each run a dot, a line to the run it came from,
    a run of another font hollow), into a run, and to the moves of its alias."""
    from selenium.webdriver.common.by import By

    url, store, font, runs = site
    forked, first = store.fork_font(f"{font}@best", "fork")
    tuned = store.save_model(forked, {"w": torch.ones(2)}, parents=[(forked, first)], name="tuned")
    try:
        browser.get(f"{url}/font/{font}")
        assert browser.find_element(By.ID, "retention").text == "keeps --keep-last 50 --keep-best 3 metrics.final_loss"
        browser.get(f"{url}/font/{forked}")
        browser.find_element(By.ID, "lineage-link").click()
        graph = wait_for(browser, By.ID, "lineage")
        assert len(graph.find_elements(By.CSS_SELECTOR, "circle.run")) == 2
        assert len(graph.find_elements(By.CSS_SELECTOR, "circle.other")) == 1  # the run it was forked from
        assert len(graph.find_elements(By.CSS_SELECTOR, "path.edge")) == 2
        assert "@best" not in graph.text and font in graph.text
        keep(browser, "lineage")
        graph.find_elements(By.CSS_SELECTOR, "a.lineage-run")[-1].click()  # the other font's run
        parents = wait_for(browser, By.ID, "children")
        assert f"{forked} {first}" in parents.text and browser.current_url.endswith(f"/run/{font}/{runs[5]}")
        browser.find_element(By.CSS_SELECTOR, "h2 a.alias").click()
        moves = wait_for(browser, By.ID, "alias-history").find_elements(By.CSS_SELECTOR, "tr")[1:]
        assert len(moves) == 2 and runs[5] in moves[0].text and runs[2] in moves[1].text
        browser.get(f"{url}/run/{forked}/{tuned}")
        assert f"came from: {forked} {first}" in browser.find_element(By.ID, "parents").text
    finally:
        store.delete_font(forked)
