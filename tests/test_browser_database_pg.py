"""The Database page's PostgreSQL tabs in Chromium, on what the collector sampled from a real cluster
(tests/pg.py) with a blocking chain, a sleeping backend and a table of dead rows: each tab opens
without an error and its tables fit a 1500 px window."""
from __future__ import annotations

import os
from datetime import timedelta

import pytest
from test_browser import CHROMIUM, CHROMIUM_ARGS, WIDE_TABLES, _settle, serve_dashboard, sync_api
from test_page_database_pg import Live

from collectors.daemon import Collector
from collectors.samplers.database import DatabaseSampler
from dashboard.widgets import NOW_GRANULARITY_S, TimeRange
from tests.helpers import query, wait_for
from tests.pg import pg_cluster  # noqa: F401  (the session fixture)

DB = "perfdeck_browser_pg"


@pytest.fixture(scope="module")
def sampled_server(pg_cluster, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("pg-browser")
    pg_cluster.create_database(DB)
    for statement in ("CREATE EXTENSION pg_stat_statements", "CREATE TABLE lock_t (id int PRIMARY KEY)",
                      "INSERT INTO lock_t VALUES (1)",
                      "CREATE TABLE dead_t (id int PRIMARY KEY, pad text) WITH (autovacuum_enabled = off)",
                      "INSERT INTO dead_t SELECT g, repeat('z', 100) FROM generate_series(1, 5000) g",
                      "DELETE FROM dead_t WHERE id <= 3000"):
        pg_cluster.execute(statement, dbname=DB)
    sampler = DatabaseSampler(name="pg", url=pg_cluster.url_for(DB), interval=1)
    collector = Collector(tmp / "perfdeck.duckdb", spool_dir=tmp / "spool", samplers=[sampler])
    collector.run_once()
    live = Live(pg_cluster, DB)
    try:
        collector.run_once()
    finally:
        sampler.close()
    [(sampled_at,)] = query(collector.db, "SELECT max(ts) FROM db_metrics")
    wait_for(lambda: TimeRange("1 h", span=timedelta(hours=1)).bounds()[1] > sampled_at, timeout=NOW_GRANULARITY_S + 5)
    env = {**os.environ, "PERFDECK_DB": str(collector.db), "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false",
           "PERFDECK_CONFIG": str(tmp / "no-such.toml"), "PERFDECK_DATABASE_URLS": f"pg={pg_cluster.url_for(DB)}"}
    try:
        with serve_dashboard(tmp, env) as url:
            yield url
    finally:
        live.close()


def test_postgresql_tabs_fit_the_window(sampled_server):
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        page = browser.new_context(viewport={"width": 1500, "height": 1200}).new_page()
        page.goto(f"{sampled_server}/database?range=Last+hour")
        _settle(page)
        assert page.locator('[data-testid="stException"]').count() == 0
        seen = {}
        for tab in ("Activity", "Vacuum & wraparound", "Sizes", "Replication"):
            page.get_by_role("tab", name=tab).click()
            page.wait_for_timeout(1500)
            widths = [w for w in page.evaluate(WIDE_TABLES) if w[1] > 0]     # the tables shown
            seen[tab] = widths
            assert all(scroll <= client + 1 for scroll, client in widths), (tab, widths)
        assert page.get_by_text("pg: primary, no replicas.").count() == 1
        browser.close()
    # above the tabs, the Databases table; then the tab's own: activity; ages and tables; tables and indexes
    assert [len(seen[tab]) for tab in ("Activity", "Vacuum & wraparound", "Sizes", "Replication")] == [2, 3, 3, 1]
