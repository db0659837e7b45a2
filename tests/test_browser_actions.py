"""The actions, as a newcomer meets them, in Chromium: `perfdeck demo` prints an operator password; they
log in from the sidebar, clear a namespace of the shop's product cache on the Caches page (the live
processes acknowledge it), purge old raw data with its typed confirmation on the Actions page, and find
every step in the audit log's CSV; then create the index the advisor recommends from the Database page."""
from __future__ import annotations

import csv
import io
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_browser import CHROMIUM, CHROMIUM_ARGS, _free_port, _settle

from collectors.store import connection

pytestmark = pytest.mark.browser
sync_api = pytest.importorskip("playwright.sync_api")
ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    data = tmp_path_factory.mktemp("demo-actions")
    port = _free_port()
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STREAMLIT_", "PERFDECK_OPERATOR", "PERFDECK_REDIS", "PERFDECK_DATABASE"))}
    exe = Path(sys.executable).parent / "perfdeck"
    proc = subprocess.Popen([str(exe), "demo", "--data-dir", str(data), "--port", str(port), "--days", "0.05"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    output: list[str] = []
    threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True).start()
    try:
        deadline = time.monotonic() + 120
        while not any("live traffic running" in line for line in output):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("perfdeck demo did not start:\n" + "".join(output))
            time.sleep(0.3)
        [password] = [m.group(1) for line in output
                      if (m := re.search(r"operator password for this run: (\S+)", line))]
        yield {"url": f"http://127.0.0.1:{port}", "password": password, "data": data}
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture(scope="module")
def chromium():
    """One Chromium for the module: Playwright's sync API runs one instance per thread."""
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def page(demo, chromium):
    context = chromium.new_context(viewport={"width": 1500, "height": 1400}, accept_downloads=True)
    yield context.new_page()
    context.close()


def audit_rows(data: Path) -> list[tuple]:
    with connection.read(data / "perfdeck.duckdb", timeout=30) as con:
        return con.execute("SELECT action, outcome, actor, target, figures FROM action_audit ORDER BY id").fetchall()


def choose(page, label: str, option: str) -> None:
    """Pick `option` in the selectbox labelled `label`. A click that lands while the panel is still
    expanding only focuses the box, so click again until the list opens."""
    box = page.locator('[data-testid="stSelectbox"]', has_text=label)
    for _ in range(5):
        box.click()
        try:
            page.get_by_role("option", name=option).click(timeout=3000)
            return
        except sync_api.TimeoutError:
            page.keyboard.press("Escape")
    raise AssertionError(f"could not pick {option!r} in {label!r}")


def no_exception(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0


def test_log_in_then_clear_a_cache_namespace_on_the_caches_page(demo, page):
    page.goto(f"{demo['url']}/caches")
    _settle(page)
    sidebar = page.locator('[data-testid="stSidebar"]')
    sidebar.get_by_text("Viewer").wait_for()
    sidebar.get_by_role("button", name="Operator login").click()
    page.get_by_label("Operator password").fill(demo["password"])
    page.get_by_role("button", name="Log in").click()
    sidebar.get_by_role("button", name="Log out").wait_for(timeout=30_000)

    page.locator('[data-testid="stExpander"] summary', has_text="Clear an in-process cache").click()
    choose(page, "Cache", "product_lru")
    page.get_by_role("textbox", name="Namespace").fill("product")
    page.get_by_role("textbox", name="Namespace").press("Enter")
    page.get_by_role("button", name="Preview").click()
    page.get_by_text("has cache 'product_lru' registered; it will clear namespace 'product'").wait_for(
        timeout=30_000)
    page.get_by_role("button", name="Run").click()
    done = page.locator('[data-testid="stAlertContentSuccess"]')
    done.wait_for(timeout=30_000)
    text = done.inner_text()
    assert re.search(r"1 of 1 process cleared 'product_lru' namespace 'product': [\d,]+ entries", text), text
    no_exception(page)

    [row] = [r for r in audit_rows(demo["data"]) if r[0] == "app_cache.clear"]
    assert row[1:4] == ("done", "operator", "app-cache:product_lru")
    figures = json.loads(row[4])
    assert figures["acknowledged"] == figures["expected"] == 1 and figures["entries_cleared"] > 0


def test_a_destructive_action_needs_the_typed_name_then_shows_in_the_audit_csv(demo, page, tmp_path):
    # Through the navigation, not a reload: the operator login lives in this browser session.
    page.locator('[data-testid="stSidebarNavLink"]', has_text="Actions").click()
    page.get_by_role("heading", name="Actions").wait_for(timeout=30_000)
    page.get_by_role("radio", name="perfdeck store").click()
    page.get_by_text("Purge old raw data ·").wait_for(timeout=30_000)
    _settle(page)                        # the previous area's panel is gone once the run ends
    page.get_by_role("button", name="Preview").click()
    confirm = page.get_by_label(re.compile("to confirm"))
    confirm.wait_for(timeout=30_000)
    run = page.get_by_role("button", name="Run")
    assert run.is_disabled()
    confirm.fill("perfdeck")
    confirm.press("Enter")
    page.wait_for_timeout(1000)
    assert run.is_disabled()
    confirm.fill("perfdeck.duckdb")
    confirm.press("Enter")
    page.wait_for_function("() => [...document.querySelectorAll('button')].some("
                           "b => b.innerText.includes('Run') && !b.disabled)", timeout=30_000)
    run.click()
    page.locator('[data-testid="stAlertContentSuccess"]').wait_for(timeout=60_000)
    assert page.locator('[data-testid="stAlertContentSuccess"]').inner_text().startswith("Deleted")
    no_exception(page)

    _settle(page)
    with page.expect_download(timeout=30_000) as info:
        page.locator('[data-testid="stDownloadButton"] button').last.click()
    target = tmp_path / info.value.suggested_filename
    info.value.save_as(target)
    assert target.name == "perfdeck-action-audit.csv"
    rows = list(csv.DictReader(io.StringIO(target.read_text())))
    assert [(r["action"], r["outcome"]) for r in rows][:3] == [
        ("store.purge_raw", "done"), ("app_cache.clear", "done"), ("operator.login", "done")]
    # The audit log fits the 1500 px window: nothing to scroll sideways for (its other columns are in the CSV).
    widths = page.evaluate("() => [...document.querySelectorAll('[data-testid=\"stDataFrame\"] .dvn-scroller')]"
                           ".map(s => [s.scrollWidth, s.clientWidth])")
    assert widths and all(scroll <= client + 1 for scroll, client in widths), widths


def test_the_advisor_recommends_the_demo_indexes_and_one_is_created_from_the_database_page(demo, page):
    page.locator('[data-testid="stSidebarNavLink"]', has_text="Database").click()
    page.get_by_role("heading", name="Index advisor").wait_for(timeout=30_000)
    # the collector advised once the backfill was in: the two indexes the shop lacks, nothing else
    boxes = page.locator('[data-testid="stExpander"] summary', has_text="Create index on")
    boxes.first.wait_for(timeout=60_000)
    assert sorted(t.split("\n")[-1] for t in boxes.all_inner_texts()) == ["Create index on orders (customer_id)",
                                               "Create index on orders (product_id)"]
    page.locator('[data-testid="stExpander"] summary', has_text="Create index on orders (customer_id)").click()
    page.get_by_text("Touches one new index").wait_for(timeout=30_000)   # the panel draws on the rerun it asks for
    _settle(page)
    page.get_by_role("button", name="Preview").click()
    page.get_by_test_id("stCode").get_by_text('CREATE INDEX "ix_orders_customer_id" ON "orders" ("customer_id")').wait_for(
        timeout=30_000)
    page.get_by_role("button", name="Run").click()
    done = page.locator('[data-testid="stAlertContentSuccess"]')
    done.wait_for(timeout=60_000)
    assert done.inner_text().startswith("Created index 'ix_orders_customer_id'")
    no_exception(page)
    with sqlite3.connect(demo["data"] / "shop.sqlite") as con:
        plan = con.execute("EXPLAIN QUERY PLAN SELECT id FROM orders WHERE customer_id = 7").fetchall()
    assert plan[0][-1].startswith("SEARCH orders USING") and "INDEX ix_orders_customer_id" in plan[0][-1]
    assert [r[:2] for r in audit_rows(demo["data"])][-1] == ("database.create_index", "done")


# -- viewer login --------------------------------------------------------------------------------------

VIEWER_PASSWORD = "viewer password 1"


@pytest.fixture(scope="module")
def gated(tmp_path_factory):
    """A dashboard on a seeded store with a viewer password: every page asks for it."""

    from seed_store import seed_store
    from test_browser import serve_dashboard

    from dashboard.actions.access import hash_password

    tmp = tmp_path_factory.mktemp("gated")
    seed_store(tmp / "perfdeck.duckdb", days=1)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMLIT_", "PERFDECK_"))}
    env.update(PERFDECK_DB=str(tmp / "perfdeck.duckdb"), STREAMLIT_BROWSER_GATHER_USAGE_STATS="false",
               PERFDECK_VIEWER_PASSWORD_HASH=hash_password(VIEWER_PASSWORD))
    with serve_dashboard(tmp, env, cwd=tmp) as url:
        yield {"url": url, "data": tmp}


def test_a_viewer_logs_in_and_sees_the_pages_but_no_preview(gated, chromium):
    # A spoofed header, as any local client can send: it must not become the login's client key.
    context = chromium.new_context(extra_http_headers={"X-Forwarded-For": "203.0.113.9"})
    try:
        page = context.new_page()
        page.goto(f"{gated['url']}/caches")
        page.get_by_text("Log in to view this dashboard.").wait_for(timeout=60_000)
        assert page.locator('[data-testid="stSidebarNavLink"]').count() == 0
        assert page.get_by_role("heading", name="Caches").count() == 0
        page.get_by_role("textbox", name="Password").fill(VIEWER_PASSWORD)
        page.get_by_role("button", name="Log in").click()
        # The login run drew no navigation, so the app opens on its default page.
        page.get_by_role("heading", name="Overview").wait_for(timeout=60_000)
        page.locator('[data-testid="stSidebar"]').get_by_text("Viewer · viewer").wait_for()
        page.locator('[data-testid="stSidebarNavLink"]', has_text="Actions").click()
        page.get_by_role("heading", name="Actions").wait_for(timeout=30_000)
        page.get_by_role("radio", name="perfdeck store").click()
        page.get_by_text("Purge old raw data ·").wait_for(timeout=30_000)
        page.get_by_text("Previewing and running actions needs the operator role").first.wait_for(timeout=30_000)
        assert page.get_by_role("button", name="Preview").count() == 0
        no_exception(page)
    finally:
        context.close()
    with connection.read(gated["data"] / "perfdeck.duckdb", timeout=30) as con:
        rows = con.execute("SELECT action, outcome, params FROM action_audit ORDER BY id").fetchall()
    assert [r[:2] for r in rows] == [("viewer.login", "done")]
    assert json.loads(rows[0][2])["client"].startswith("session:")     # not ip:203.0.113.9
