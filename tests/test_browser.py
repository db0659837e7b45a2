"""End to end: `perfdeck dashboard` on a seeded store, driven by Debian's Chromium."""
from __future__ import annotations

import contextlib
import csv
import io
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from seed_cost import call, event, seed_cost
from seed_pipeline import seed_pipeline
from seed_samples import seed_samples
from seed_store import seed_store

pytestmark = pytest.mark.browser

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]

if not Path(CHROMIUM).exists():
    pytest.skip("needs Debian's chromium at /usr/bin/chromium", allow_module_level=True)
sync_api = pytest.importorskip("playwright.sync_api")


def seed_llm_calls(store) -> None:
    """Two days of POST /chat requests calling gpt-4o (every fourth answered from cache) and a few
    calls of a model no price list knows."""
    now = datetime.now(UTC).replace(tzinfo=None)
    calls = [call(now - timedelta(minutes=20 * i), "gpt-4o", cost="0" if i % 4 == 0 else f"0.00{3 + i % 5}",
                  saved="0.004" if i % 4 == 0 else "0", cache_hit=i % 4 == 0, request_id=f"chat-{i}",
                  endpoint="POST /chat", user_id=f"user-{i % 7}") for i in range(144)]
    calls += [call(now - timedelta(hours=i), "acme-local-7b", cost=None, provider=None, endpoint="task build_report",
                   request_id=f"report-{i}") for i in range(3)]
    seed_cost(store, calls=calls, events=[event(c["ts"], c["endpoint"], c["request_id"]) for c in calls])


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _command(port: int) -> list[str]:
    # The perfdeck command of the interpreter running the tests: another venv's may hold another DuckDB,
    # which cannot open a store this one wrote (make test-newest-duckdb).
    cli = Path(sys.executable).parent / "perfdeck"
    if cli.exists() and subprocess.run([str(cli), "dashboard", "--help"], capture_output=True, check=False).returncode == 0:
        return [str(cli), "dashboard", "--port", str(port), "--server.headless", "true"]
    return [sys.executable, "-m", "streamlit", "run", str(ROOT / "dashboard" / "app.py"),
            "--server.port", str(port), "--server.headless", "true"]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("browser")
    store = tmp / "perfdeck.duckdb"
    seed_store(store)
    seed_samples(store)  # caches, Redis (one down), databases and hosts for the other pages
    seed_llm_calls(store)
    seed_pipeline(store, now=datetime.now(UTC).replace(tzinfo=None))   # losses for the Ingest page
    env = {**os.environ, "PERFDECK_DB": str(store), "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
           "PERFDECK_DAILY_BUDGET": "2", "PERFDECK_MONTHLY_BUDGET": "40"}
    with serve_dashboard(tmp, env) as url:
        yield url


@contextlib.contextmanager
def serve_dashboard(tmp: Path, env: dict, cwd: Path = ROOT):
    """`perfdeck dashboard` on a free port with `env`, logging to tmp/server.log; yields its URL once it
    answers, and stops its whole process group at the end."""
    port = _free_port()
    log = (tmp / "server.log").open("w")  # closed once the server is stopped
    # Own process group: `perfdeck dashboard` starts streamlit as a child, and both must go at the end.
    proc = subprocess.Popen(_command(port), cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"dashboard did not start:\n{(tmp / 'server.log').read_text()}")
            time.sleep(0.3)
        yield url
    finally:
        _stop_group(proc)
        log.close()


def _stop_group(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group, wait for every member (streamlit outlives the CLI
    by a moment), SIGKILL what is left after 15 s."""
    os.killpg(proc.pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        proc.poll()
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()


@pytest.fixture(scope="module")
def page(server):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1500, "height": 1200}, accept_downloads=True)
        page = context.new_page()
        page.goto(server)
        page.wait_for_selector('[data-testid="stMetric"]', timeout=60_000)
        yield page
        browser.close()


def test_overview_renders_without_exception(page):
    page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
    assert page.locator('[data-testid="stException"]').count() == 0
    assert page.locator(".js-plotly-plot").count() == 2
    # Lines were drawn, not just empty axes.
    assert page.locator(".js-plotly-plot .scatterlayer path.js-line").count() >= 3
    assert page.locator('[data-testid="stMetricValue"]').count() == 5


def test_csv_download_of_endpoint_table(page, tmp_path):
    button = page.locator('.st-key-csv-endpoints button')     # the health banner's CSV is in a closed expander
    with page.expect_download(timeout=30_000) as info:
        button.click()
    download = info.value
    assert download.suggested_filename == "perfdeck-endpoints.csv"
    target = tmp_path / download.suggested_filename
    download.save_as(target)
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert list(rows[0]) == ["service", "endpoint", "requests", "error_rate", "p50_ms", "p95_ms", "p99_ms", "tail"]
    # seed_store's 7 endpoints, and the LLM seed's reports: task build_report of api, beside the worker's
    assert len(rows) == 8
    assert {(r["service"], r["endpoint"]) for r in rows} >= {("api", "task build_report"), ("worker", "task build_report")}
    assert {r["endpoint"] for r in rows} >= {"GET /products", "POST /checkout", "task build_report"}
    assert all(float(r["p50_ms"]) <= float(r["p95_ms"]) <= float(r["p99_ms"]) for r in rows)
    assert page.locator('[data-testid="stException"]').count() == 0


def test_service_filter_in_browser(page):
    page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"]').nth(1).click()
    page.get_by_role("option", name="worker").click()
    page.wait_for_function(
        "() => new URL(location.href).searchParams.get('service') === 'worker'", timeout=30_000)
    _settle(page)
    # A rerun keeps the old charts on screen for a moment: wait for the worker's two, not a fixed time.
    page.wait_for_function("() => document.querySelectorAll('.js-plotly-plot').length === 2", timeout=30_000)
    assert page.locator('[data-testid="stException"]').count() == 0


def test_time_range_comes_from_the_url(server, page):
    page.goto(f"{server}/?range=Last+7+days&service=api")
    page.wait_for_selector('[data-testid="stMetric"]', timeout=60_000)
    page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
    caption = page.locator('[data-testid="stMain"] [data-testid="stCaptionContainer"]').first.inner_text()
    since, until = (datetime.strptime(part.strip()[:16], "%Y-%m-%d %H:%M") for part in caption.split("→"))
    assert until - since == timedelta(days=7)
    assert page.locator('[data-testid="stException"]').count() == 0


# The only error box a page may show: a watched component that is down (seed_samples' Redis "queue").
# The seeded Redis "queue" is down: the Caches page says so, and the health banner is critical for it.
EXPECTED_ERRORS = {"Caches": ["Redis queue"], "Overview": ["redis queue"]}
WITHOUT_CHARTS = {"Actions", "Alerts", "Ingest"}


def _settle(page) -> None:
    page.wait_for_load_state("networkidle")
    page.wait_for_selector('[data-testid="stHeading"]', timeout=60_000)
    for _ in range(120):  # Streamlit shows its status widget while a script runs
        if page.locator('[data-testid="stStatusWidget"]').count() == 0:
            break
        page.wait_for_timeout(250)
    page.wait_for_timeout(1000)


def test_every_nav_page_renders_without_errors(server, page):
    page.goto(server)
    _settle(page)
    links = page.locator('[data-testid="stSidebarNavLink"]')
    titles = [links.nth(i).inner_text().split("\n")[-1] for i in range(links.count())]
    # The navigation is the page list: every page file is in it, and each is visited below.
    assert sorted(t.lower() for t in titles) == sorted(p.stem for p in (ROOT / "dashboard" / "app_pages").glob("*.py"))
    for title in titles:
        page.locator('[data-testid="stSidebarNavLink"]', has_text=title).click()
        page.wait_for_function(
            "t => [...document.querySelectorAll('h1')].some(h => h.innerText.trim() === t)", arg=title,
            timeout=60_000)
        _settle(page)
        assert page.locator('[data-testid="stException"]').count() == 0, title
        errors = page.locator('[data-testid="stAlertContentError"]').all_inner_texts()
        expected = EXPECTED_ERRORS.get(title, [])
        assert len(errors) == len(expected), (title, errors)
        for text, start in zip(errors, expected):
            assert start in text and "is down" in text, (title, text)
        assert page.locator(".js-plotly-plot").count() >= (title not in WITHOUT_CHARTS), title


# The tour found wide tables cut at the right edge: a user had to scroll sideways to see their last columns.
WIDE_TABLES = "() => [...document.querySelectorAll('[data-testid=\"stDataFrame\"] .dvn-scroller')]" \
              ".map(s => [s.scrollWidth, s.clientWidth])"


def test_every_table_fits_a_1500_px_window(server, page):
    assert page.viewport_size["width"] == 1500
    for path in ("", "database", "host", "cost", "compare", "alerts", "ingest", "caches", "actions"):
        page.goto(f"{server}/{path}?range=Last+7+days")
        _settle(page)
        checks = page.locator('[data-testid="stExpander"] summary', has_text="All checks")
        if checks.count():           # the Overview's table of every check, in its expander
            checks.first.click()
            page.wait_for_timeout(1500)
        widths = page.evaluate(WIDE_TABLES)
        assert all(scroll <= client + 1 for scroll, client in widths), (path or "overview", widths)


def test_down_redis_callout_on_caches_page(server, page):
    page.goto(f"{server}/caches")
    _settle(page)
    box = page.locator('[data-testid="stAlertContentError"]')
    assert box.count() == 1
    text = box.inner_text()
    assert "queue" in text and "Connection refused" in text and "***" in text


def test_cost_page_in_browser(server, page, tmp_path):
    page.goto(f"{server}/cost?range=Last+7+days")
    _settle(page)
    page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
    assert page.locator('[data-testid="stException"]').count() == 0
    warning = page.locator('[data-testid="stAlertContentWarning"]').inner_text()
    assert "3 calls" in warning and "acme-local-7b" in warning and "perfdeck reprice" in warning
    assert page.locator(".js-plotly-plot .barlayer .point").count() >= 3      # bars were drawn
    labels = page.locator('[data-testid="stMetricLabel"]').all_inner_texts()
    assert "Month forecast" in "\n".join(labels)
    with page.expect_download(timeout=30_000) as info:
        page.locator('[data-testid="stDownloadButton"] button').nth(1).click()   # under the models table
    target = tmp_path / info.value.suggested_filename
    info.value.save_as(target)
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert info.value.suggested_filename == "perfdeck-cost-models.csv"
    assert {r["model"] for r in rows} == {"gpt-4o", "acme-local-7b"}


def test_overview_health_banner_in_browser(server, page):
    page.goto(server)
    _settle(page)
    banner = page.locator('[data-testid="stAlertContentError"]').first.inner_text()
    assert "critical" in banner.lower() and "redis queue is down" in banner
    assert "Components: critical" in page.locator('[data-testid="stMain"]').inner_text()   # its badge


def test_compare_page_finds_the_deploy_in_browser(server, page):
    page.goto(f"{server}/compare")
    _settle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    page.wait_for_selector(".js-plotly-plot .main-svg", timeout=30_000)
    text = page.locator('[data-testid="stMain"]').inner_text()
    assert "v1.5.1" in text                       # the newest seeded deploy is picked
    assert page.locator(".js-plotly-plot").count() >= 1


def _pick(page, label: str, option: str) -> None:
    """Pick `option` in the page's selectbox `label` (opened again if a rerun closed it)."""
    choice = page.locator('[role="option"]', has_text=option).first
    for _ in range(5):
        page.locator('[data-testid="stMain"] [data-testid="stSelectbox"]', has_text=label).click()
        try:
            choice.wait_for(timeout=3_000)
            break
        except sync_api.TimeoutError:
            page.keyboard.press("Escape")
            _settle(page)
    choice.click()
    _settle(page)


def test_compare_endpoint_picker_follows_another_deploy_in_browser(server, page):
    """Found when tried as a new user would: after another deploy was picked, the browser kept showing the
    previous comparison's endpoint ("All endpoints") while the chart drew the new worst one."""
    page.goto(f"{server}/compare")
    _settle(page)
    _pick(page, "Endpoint", "All endpoints")
    _pick(page, "Deploy", "v1.5.0")
    picker = page.locator('[data-testid="stMain"] [data-testid="stSelectbox"]', has_text="Endpoint").locator("input")
    titles = page.locator(".js-plotly-plot .gtitle").evaluate_all("els => els.map(e => e.textContent)")
    assert picker.input_value() == "POST /checkout  ·  api"
    assert "Latency percentiles: POST /checkout" in titles


def test_alerts_page_in_browser(server, page):
    page.goto(f"{server}/alerts")
    _settle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    text = page.locator('[data-testid="stMain"]').inner_text()
    assert "No alerts firing" in text and "log lines" in text


def test_ingest_page_in_browser(server, page, tmp_path):
    page.goto(f"{server}/ingest")
    _settle(page)
    assert page.locator('[data-testid="stException"]').count() == 0
    text = page.locator('[data-testid="stMain"]').inner_text()
    assert "Sources" in text and "Quarantined batches" in text

    def download(name: str) -> dict:     # tables are drawn on a canvas: read them through their CSV
        with page.expect_download(timeout=30_000) as info:
            page.locator(f'.st-key-csv-{name} button').click()
        assert info.value.suggested_filename == f"perfdeck-{name}.csv"
        target = tmp_path / info.value.suggested_filename
        info.value.save_as(target)
        return list(csv.DictReader(io.StringIO(target.read_text())))

    assert any(r["message"].startswith("no data from worker for") for r in download("ingest-checks"))
    assert any("Permission denied" in r["error"] for r in download("ingest-sources"))
    services = {r["service"]: r for r in download("ingest-services")}
    assert (services["shop-api"]["dropped"], services["shop-api"]["collector_rejected"]) == ("29", "7")
