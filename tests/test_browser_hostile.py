"""End to end in Chromium: a store full of hostile names (markdown images and links, raw HTML, javascript:
URLs, bidi characters, icon shortcodes) in endpoints, services, caches, deploy versions, models and
users. Every page is opened: the browser asks nothing of any other origin, and no link or image in the
DOM points where the data said."""
from __future__ import annotations

import os

import pytest
from test_browser import CHROMIUM, CHROMIUM_ARGS, _settle, serve_dashboard, sync_api
from test_names_as_text import EVIL, seed_hostile

pytestmark = pytest.mark.browser

PAGES = ["Overview", "Caches", "Database", "Host", "Cost", "Compare", "Alerts", "Ingest"]
# Links and images of the page, with where they point (SVG links too: Plotly draws <a> in its SVG).
LINKS_JS = """() => [...document.querySelectorAll('a, img, image, iframe, [src], [href]')].map(e =>
    [e.tagName, e.getAttribute('href') || e.getAttribute('xlink:href') || e.getAttribute('src') || ''])"""


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser-hostile")
    store = tmp / "perfdeck.duckdb"
    seed_hostile(store, tmp / "spool")
    env = {**os.environ, "PERFDECK_DB": str(store), "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
           "PERFDECK_CONFIG": str(tmp / "none.toml")}
    with serve_dashboard(tmp, env) as url:
        yield url


def _open_everything(page) -> None:
    """Open every expander, so their labels and contents are rendered too."""
    summaries = page.locator('[data-testid="stExpander"] summary')
    for i in range(summaries.count()):
        summaries.nth(i).click()
    page.wait_for_timeout(500)


def _options(page, label: str) -> list[str]:
    """The options a selectbox of the page lists, as text (opened again if a rerun closed it)."""
    box = page.locator('[data-testid="stMain"] [data-testid="stSelectbox"]', has_text=label)
    for _ in range(5):
        box.click()
        if page.locator('[role="option"]').count() == 0:
            page.wait_for_timeout(1000)
        if page.locator('[role="option"]').count():
            break
        page.keyboard.press("Escape")
        _settle(page)
    texts = page.locator('[role="option"]').all_inner_texts()
    page.keyboard.press("Escape")
    return texts


def test_hostile_names_reach_no_other_origin_and_make_no_links(server, tmp_path):
    requested: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1500, "height": 1200})
        page = context.new_page()
        page.on("request", lambda r: requested.append(r.url))
        page.goto(server)
        _settle(page)
        found = {}
        for title in PAGES:
            page.locator('[data-testid="stSidebarNavLink"]', has_text=title).click()
            page.wait_for_function(
                "t => [...document.querySelectorAll('h1')].some(h => h.innerText.trim() === t)", arg=title,
                timeout=60_000)
            _settle(page)
            _open_everything(page)
            _settle(page)
            assert page.locator('[data-testid="stException"]').count() == 0, title
            found[title] = [(tag, ref) for tag, ref in page.evaluate(LINKS_JS)
                            if EVIL in ref or ref.strip().lower().startswith("javascript:")]
            if title == "Overview":
                # Deploy labels are in the charts' hover now: the endpoint picker lists the names as text.
                overview = page.locator('[data-testid="stMain"]').inner_text() + "\n".join(_options(page, "Endpoint"))
        browser.close()
    outside = sorted({u for u in requested if not u.startswith((server, "data:", "blob:"))})
    assert not [u for u in outside if EVIL in u or "javascript:" in u], outside
    # Nothing from anywhere else: not even the favicon (perfdeck ships its own; a :material/...: page icon
    # would be fetched from Google's font CDN by every viewer).
    assert outside == [], outside
    assert {t: f for t, f in found.items() if f} == {}
    assert f"<a href=http://{EVIL}/link>click</a>" in overview      # the names are there, as text
