"""Open every page of the built book in headless Chromium: charts must render, no page may show an error.

Skipped (with the reason) where Chromium/chromedriver are absent or the book has not been built
(`bash scripts/build-book.sh smoke` builds it).
"""
import os
import shutil
import tempfile
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
HTML = ROOT / "_build" / "html"
CHROMIUM, DRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver") or "/usr/bin/chromedriver"

pytestmark = [pytest.mark.browser, pytest.mark.slow]
# console messages of the book theme itself, present on every Jupyter Book v1 page, unrelated to content
THEME_NOISE = ("THEBE_JS_URL", "invalid theme mode", "favicon")


def _pages() -> list[Path]:
    return sorted(p for p in (HTML / "book").rglob("*.html"))


@pytest.fixture(scope="module")
def driver():
    if not (os.path.exists(CHROMIUM) and os.path.exists(DRIVER)):
        pytest.skip("Chromium and chromedriver are not installed (apt-get install chromium chromium-driver)")
    if not _pages():
        pytest.skip("the book has not been built (run: bash scripts/build-book.sh smoke)")
    os.environ["SE_AVOID_STATS"] = "true"
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    opts = webdriver.ChromeOptions()
    opts.binary_location = CHROMIUM
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--window-size=1280,2000", f"--user-data-dir={tempfile.mkdtemp(prefix='geed-chromium-')}"):
        opts.add_argument(flag)
    opts.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service(DRIVER), options=opts)
    yield d
    d.quit()


def test_every_page_renders_its_charts_without_errors(driver):
    from selenium.webdriver.common.by import By

    pages = _pages()
    assert any("section3" in p.name for p in pages)
    n_charts = 0
    for page in pages:
        driver.get_log("browser")  # clear
        driver.get(page.as_uri())
        charts = driver.find_elements(By.CSS_SELECTOR, "div[id^='altair-viz-']")
        deadline = time.time() + 20
        pending = charts
        while pending and time.time() < deadline:
            pending = [c for c in charts if not c.find_elements(By.CSS_SELECTOR, "svg.marks, canvas.marks")]
            time.sleep(0.2)
        errors = driver.find_elements(By.CSS_SELECTOR, "div.error, .output.traceback, .output.error")
        assert not errors, f"{page.name}: {errors[0].text[:300]}"
        assert not pending, f"{page.name}: {len(pending)} of {len(charts)} charts did not render"
        severe = [e["message"] for e in driver.get_log("browser") if e["level"] == "SEVERE" and not any(t in e["message"] for t in THEME_NOISE)]
        assert not severe, f"{page.name}: {severe[:3]}"
        math = driver.execute_script("return document.querySelectorAll('mjx-container').length")
        if "section3" in page.name:
            assert math > 0, "MathJax did not typeset the formulas"
        n_charts += len(charts)
    assert n_charts > 0


OVERFLOW_JS = """
const main = document.querySelector('article.bd-article') || document.querySelector('main');
const box = main.getBoundingClientRect();
const out = [];
for (const el of main.querySelectorAll('svg.marks, canvas.marks, table, img')) {
  const r = el.getBoundingClientRect();
  if (r.width > 0 && (r.right > box.right + 1 || r.left < box.left - 1)) {
    const owner = el.closest('[id]');
    out.push(el.tagName + (owner ? ' in #' + owner.id : '') + ': ' + Math.round(r.left) + '-' + Math.round(r.right)
             + ' px, content ' + Math.round(box.left) + '-' + Math.round(box.right) + ' px');
  }
}
return out;
"""


def test_nothing_overflows_the_content_column_at_1280_pixels(driver):
    """Charts, tables and images fit the page: nothing is cut off or hidden behind a scroll bar."""
    from selenium.webdriver.common.by import By

    problems = {}
    for page in _pages():
        driver.get(page.as_uri())
        charts = driver.find_elements(By.CSS_SELECTOR, "div[id^='altair-viz-']")
        deadline = time.time() + 20
        while time.time() < deadline and any(not c.find_elements(By.CSS_SELECTOR, "svg.marks, canvas.marks") for c in charts):
            time.sleep(0.2)
        over = driver.execute_script(OVERFLOW_JS)
        if over:
            problems[page.name] = over
    assert not problems, problems


def test_the_front_page_shows_the_results_at_a_glance(driver):
    from selenium.webdriver.common.by import By

    intro = HTML / "book" / "intro.html"
    driver.get(intro.as_uri())
    heading = [h.text for h in driver.find_elements(By.CSS_SELECTOR, "h2")]
    assert any("Results at a glance" in h for h in heading), heading
    table_text = driver.find_element(By.CSS_SELECTOR, "article table").text
    assert "holds" in table_text and "Section 4.1" in table_text or "4.1" in table_text
