"""The web page of ``alexnet serve`` in a real browser: Debian's Chromium, headless, driven by
Selenium through Debian's chromedriver (nothing downloads a browser). A screenshot is kept in
build/test-artifacts/serve-page.png."""

import json
import shutil
import urllib.request
from pathlib import Path

import pytest

from serve_load import start_server, stop_server

ARTIFACTS = Path(__file__).resolve().parents[1] / "build" / "test-artifacts"
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail("Debian's chromium and chromium-driver are needed (make setup installs them)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=900,900"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def test_the_page_classifies_a_photograph(serve_run, photo, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    proc, url = start_server(serve_run)
    try:
        browser.get(url + "/")
        WebDriverWait(browser, 20).until(lambda d: "lenet5" in d.find_element(By.ID, "model").text)
        browser.find_element(By.ID, "file").send_keys(str(photo))
        WebDriverWait(browser, 20).until(lambda d: d.find_element(By.TAG_NAME, "body").get_attribute("data-state")
                                         == "done")
        rows = browser.find_elements(By.CSS_SELECTOR, "#result li")
        shown = [(r.find_element(By.CLASS_NAME, "name").text, r.find_element(By.CLASS_NAME, "prob").text) for r in rows]
        assert browser.find_element(By.ID, "preview").get_attribute("naturalWidth") == "451"  # the photo, shown
        widths = [r.find_element(By.CLASS_NAME, "fill").size["width"] for r in rows]
        heat = browser.find_element(By.ID, "heat")  # Grad-CAM over the photo's crop, beside the bars
        why_shown = browser.find_element(By.ID, "why").is_displayed()
        heat_size = (heat.get_attribute("naturalWidth"), heat.size["width"])
        bars_end = max(r.location["x"] + r.size["width"] for r in rows)
        beside = heat.location["x"] >= bars_end and heat.location["y"] < rows[-1].location["y"]
        # the heat map's pixels: the crop at 55% (red at most 140) with the map's peak drawn red
        # (above 200 where it is strongest): a blank map has no pixel above 140
        red = browser.execute_script(
            "const i = arguments[0], c = document.createElement('canvas'); c.width = i.naturalWidth;"
            "c.height = i.naturalHeight; const g = c.getContext('2d'); g.drawImage(i, 0, 0);"
            "const d = g.getImageData(0, 0, c.width, c.height).data; let hi = 0, lo = 255;"
            "for (let k = 0; k < d.length; k += 4) { hi = Math.max(hi, d[k]); lo = Math.min(lo, d[k]); }"
            "return [lo, hi];", heat)
        caption = browser.find_element(By.ID, "heat-caption").text
        strips = [(f.find_element(By.TAG_NAME, "figcaption").text, f.find_element(By.TAG_NAME, "img")
                   .get_attribute("naturalWidth")) for f in browser.find_elements(By.CSS_SELECTOR, "#stages .stage")]
        origins = browser.execute_script("return performance.getEntriesByType('resource').map(e => e.name)")
        ARTIFACTS.mkdir(parents=True, exist_ok=True)
        browser.save_screenshot(str(ARTIFACTS / "serve-page.png"))
        req = urllib.request.Request(url + "/predict?topk=5", data=photo.read_bytes())
        with urllib.request.urlopen(req) as r:
            api = json.loads(r.read())["top"]
    finally:
        stop_server(proc)
    assert shown == [(t["class"], f"{100 * t['prob']:.2f}%") for t in api]  # the API's answer, as bars
    assert widths == sorted(widths, reverse=True) and widths[0] > widths[-1] > 0
    assert why_shown and heat_size[0] == "32" and heat_size[1] > 100  # the 32-px crop, drawn large
    assert beside  # at 900 px, to the right of the bars and level with them
    assert red[1] > 200 and red[0] < 150, red  # a map with a peak, not blank and not everywhere
    assert f"\u201c{api[0]['class']}\u201d" in caption and "Grad-CAM at conv2" in caption
    assert [name.split()[0] for name, _ in strips] == ["conv1", "conv2"] and all(int(w) > 0 for _, w in strips)
    assert origins and all(o.startswith(url) for o in origins)  # nothing from elsewhere
    png = (ARTIFACTS / "serve-page.png").read_bytes()
    assert png.startswith(b"\x89PNG") and len(png) > 10_000
