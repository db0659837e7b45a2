"""The sidebar's time range and service live in the URL: a link opens the same view, a page change
keeps it, and a value in the URL that means nothing is ignored with a caption, never an exception."""
from __future__ import annotations

import os
import subprocess
import urllib.request
from datetime import datetime
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
from helpers import wait_for
from seed_store import seed_store
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent
OVERVIEW = str(ROOT / "dashboard" / "app_pages" / "overview.py")
CUSTOM = {"range": "Custom range", "range_from": "2026-12-01T10:00", "range_to": "2026-12-01T12:00"}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    path = tmp_path_factory.mktemp("range") / "perfdeck.duckdb"
    seed_store(path)
    return path


@pytest.fixture
def app(seeded, monkeypatch):
    monkeypatch.setenv("PERFDECK_DB", str(seeded))
    return AppTest.from_file(OVERVIEW, default_timeout=60)


def shown_range(at: AppTest) -> tuple:
    inputs = {w.key: w.value for w in at.sidebar.get("date_time_input")}
    return at.sidebar.selectbox(key="range").value, inputs.get("range_from"), inputs.get("range_to")


def test_a_custom_range_in_the_url_is_shown(app):
    app.query_params.update(CUSTOM)
    app.run()
    assert not app.exception, app.exception
    assert shown_range(app) == ("Custom range", datetime(2026, 12, 1, 10), datetime(2026, 12, 1, 12))
    assert not app.sidebar.warning


@pytest.mark.parametrize("params, ignored", [
    ({"range": "forever"}, "range"),
    ({"range": "Custom range", "range_from": "yesterday-ish", "range_to": "2026-12-01T12:00"}, "range_from"),
    ({"range": "Custom range", "range_from": "2026-12-01T10:00", "range_to": "2026-13-45T99:00"}, "range_to"),
    ({"service": "no-such-service"}, "service"),
])
def test_invalid_values_in_the_url_are_ignored_with_a_caption(app, params, ignored):
    app.query_params.update(params)
    app.run()
    assert not app.exception, app.exception
    captions = " ".join(c.value for c in app.sidebar.caption)
    assert "Ignored from the link" in captions and ignored in captions
    assert len(app.metric) == 5


# -- in the browser: a page change twice, then the link reloaded -----------------------------------------

@pytest.fixture(scope="module")
def browser(seeded, tmp_path_factory):
    """`perfdeck dashboard` on the seeded store (started as the browser suite does) and a Chromium page."""
    import test_browser as tb  # skips (its own importorskip) without Playwright; a broken import fails
    port = tb._free_port()
    log_path = tmp_path_factory.mktemp("range-server") / "server.log"
    env = {**os.environ, "PERFDECK_DB": str(seeded), "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
    with log_path.open("w") as log:
        proc = subprocess.Popen(tb._command(port), cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        assert wait_for(lambda: _healthy(url), timeout=60), log_path.read_text()
        with tb.sync_api.sync_playwright() as pw:
            chromium = pw.chromium.launch(executable_path=tb.CHROMIUM, args=tb.CHROMIUM_ARGS)
            page = chromium.new_context(viewport={"width": 1500, "height": 1200}).new_page()
            yield url, page, tb._settle
            chromium.close()
    finally:
        tb._stop_group(proc)


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _shown(page) -> list[str]:
    """The From and To inputs as the viewer reads them: 'yyyy mm dd hh mm' each."""
    sidebar = page.locator('[data-testid="stSidebar"]')
    return [" ".join(sidebar.get_by_role("group", name=label).get_by_role("spinbutton").all_inner_texts())
            for label in ("From (UTC)", "To (UTC)")]


def _type_time(page, label: str, parts: list[str]) -> None:
    """Type a datetime into the input segment by segment (the field moves on by itself), then commit."""
    page.locator('[data-testid="stSidebar"]').get_by_role("group", name=label).get_by_role("spinbutton").first.focus()
    for part in parts:
        page.keyboard.type(part)
    page.keyboard.press("Enter")
    page.keyboard.press("Escape")     # the calendar popover opened by the field


@pytest.mark.browser
def test_custom_range_survives_two_page_changes_and_a_reload(browser):
    url, page, settle = browser
    page.goto(f"{url}/?range=Custom+range")
    settle(page)
    _type_time(page, "From (UTC)", ["2026", "12", "01", "10", "00"])
    settle(page)
    _type_time(page, "To (UTC)", ["2026", "12", "01", "12", "30"])
    settle(page)
    wanted = ["2026 12 01 10 00", "2026 12 01 12 30"]
    assert _shown(page) == wanted
    for title in ("Caches", "Overview"):
        page.locator('[data-testid="stSidebarNavLink"]', has_text=title).click()
        settle(page)
        assert page.get_by_role("heading", name=title).count(), title
        assert _shown(page) == wanted, title
        assert page.locator('[data-testid="stSidebar"] [data-testid="stAlertContentWarning"]').count() == 0, title
    query = parse_qs(urlsplit(page.url).query)
    assert query == {"range": ["Custom range"], "range_from": ["2026-12-01T10:00"], "range_to": ["2026-12-01T12:30"]}
    page.goto(page.url)          # the link, opened afresh
    settle(page)
    assert _shown(page) == wanted
    assert page.locator('[data-testid="stSidebar"] [data-testid="stAlertContentWarning"]').count() == 0
