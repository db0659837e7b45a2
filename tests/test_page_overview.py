"""AppTest of the Overview page (and the router) on real seeded / empty / missing store files."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from helpers import run_app
from seed_store import seed_store
from streamlit.testing.v1 import AppTest

from collectors.store import migrate, read, write
from dashboard.queries import totals
from dashboard.widgets import fmt_ms

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "dashboard" / "app_pages" / "overview.py")
APP = str(ROOT / "dashboard" / "app.py")


@pytest.fixture
def seeded(tmp_path, monkeypatch):
    path = tmp_path / "perfdeck.duckdb"
    events = seed_store(path)
    monkeypatch.setenv("PERFDECK_DB", str(path))
    return path, events


def run(script: str) -> AppTest:
    return run_app(script)


def test_overview_shows_metrics_table_and_charts(seeded):
    path, events = seeded
    # A fixed (custom) window, so the expected numbers don't drift with the clock.
    until = datetime.now(UTC).replace(tzinfo=None, second=0, microsecond=0)
    since = until - timedelta(hours=24)
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["range"] = "Custom range"
    at.session_state["range_from"], at.session_state["range_to"] = since, until
    at.run()
    assert not at.exception, at.exception
    metrics = {m.label: m.value for m in at.metric}
    assert list(metrics) == ["Requests / s", "Error rate", "p50", "p95", "p99"]
    with read(path) as con:
        expected = totals(con, since=since, until=until).iloc[0]
    assert expected["requests"] == ((events.ts >= since) & (events.ts < until)).sum()
    assert metrics["Requests / s"] == f"{expected['requests_per_s']:,.2f}"
    assert metrics["p50"] == fmt_ms(expected["p50_ms"])
    assert metrics["Error rate"] == f"{expected['error_rate']:.2%}"
    table = at.dataframe[0].value
    assert len(table) == 7
    assert {"GET /products", "POST /checkout", "task build_report"} <= set(table["endpoint"])
    assert table["requests"].sum() == expected["requests"]
    assert {b.key for b in at.download_button} >= {
        "csv-endpoints", "csv-latency-over-time", "csv-traffic-over-time"}
    assert len(at.get("plotly_chart")) == 2
    assert not at.info and not at.warning


def test_service_filter_and_endpoint_picker(seeded):
    at = run(PAGE)
    at.sidebar.selectbox(key="service").select("worker").run()
    assert not at.exception
    assert set(at.dataframe[0].value["service"]) == {"worker"}
    at.selectbox(key="latency_endpoint").select_index(1).run()
    assert not at.exception
    assert len(at.get("plotly_chart")) == 2


def test_time_ranges(seeded):
    at = run(PAGE)
    for key in ("Last 15 minutes", "Last 7 days", "Last 30 days"):
        at.sidebar.selectbox(key="range").select(key).run()
        assert not at.exception, key
        assert len(at.metric) == 5
    at.sidebar.selectbox(key="range").select("Custom range").run()
    assert not at.exception
    assert at.sidebar.get("date_time_input") or at.sidebar.get("datetime_input")


def test_router_runs_overview(seeded):
    at = run(APP)
    assert at.title[0].value == "Overview"
    assert len(at.metric) == 5


def test_missing_store_says_how_to_get_data(tmp_path, monkeypatch):
    monkeypatch.setenv("PERFDECK_DB", str(tmp_path / "nothing-here.duckdb"))
    at = run(PAGE)
    assert len(at.info) == 1
    assert "perfdeck demo" in at.info[0].value and "perfdeck collect" in at.info[0].value
    assert not at.metric


def test_empty_store_says_how_to_get_data(tmp_path, monkeypatch):
    path = tmp_path / "empty.duckdb"
    with write(path) as con:
        migrate(con)
    monkeypatch.setenv("PERFDECK_DB", str(path))
    at = run(PAGE)
    assert "perfdeck demo" in at.info[0].value
    assert not at.metric


def test_old_data_only_suggests_a_longer_range(tmp_path, monkeypatch):
    path = tmp_path / "old.duckdb"
    seed_store(path, now=datetime.now(UTC).replace(tzinfo=None) - timedelta(days=5), days=1)
    monkeypatch.setenv("PERFDECK_DB", str(path))
    at = run(PAGE)
    assert "longer range" in at.info[0].value
    at.sidebar.selectbox(key="range").select("Last 7 days").run()
    assert not at.exception and len(at.metric) == 5
