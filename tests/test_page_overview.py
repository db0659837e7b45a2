"""AppTest of the Overview page (and the router) on real seeded / empty / missing store files."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pandas as pd
import pytest
import streamlit as st
from helpers import clear_health_env, run_app, shown_text
from seed_health import seed_health, seed_healthy
from seed_pipeline import seed_pipeline
from seed_store import seed_store, store_events
from streamlit.testing.v1 import AppTest

from collectors import formatting as fmt
from collectors.health import ASSESSED_COLUMNS
from collectors.store import migrate, read, utcnow, write
from dashboard.queries import endpoint_percentiles, totals

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "dashboard" / "app_pages" / "overview.py")
APP = str(ROOT / "dashboard" / "app.py")



@pytest.fixture(autouse=True)
def _health_config(tmp_path, monkeypatch):
    """The health banner reads perfdeck.toml, [alerts] and thresholds from the environment: none of the runner's."""
    clear_health_env(monkeypatch, tmp_path)


def endpoints_table(at: AppTest):
    return next(d.value for d in at.dataframe if "p95_ms" in d.value.columns)


def notices(at: AppTest) -> list[str]:
    """Info and warning callouts other than the health banner."""
    return [e.value for e in (*at.info, *at.warning) if not e.value.startswith("**Health")]


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
    assert list(metrics) == ["Requests / s", "Error rate", "Typical p50", "Typical p95", "Typical p99"]
    with read(path) as con:
        expected = totals(con, since=since, until=until).iloc[0]
        endpoints = endpoint_percentiles(con, since=since, until=until)
    assert expected["requests"] == ((events.ts >= since) & (events.ts < until)).sum()
    assert metrics["Requests / s"] == f"{expected['requests_per_s']:,.2f}"
    # The typical request's p50: each endpoint's p50 weighted by its requests, not all requests pooled.
    typical = (endpoints["p50_ms"] * endpoints["requests"]).sum() / endpoints["requests"].sum()
    assert metrics["Typical p50"] == fmt.ms(typical) != fmt.ms(expected["p50_ms"])
    assert metrics["Error rate"] == fmt.percent(expected["error_rate"])
    table = endpoints_table(at)
    assert len(table) == 7
    assert {"GET /products", "POST /checkout", "task build_report"} <= set(table["endpoint"])
    assert table["requests"].sum() == expected["requests"]
    assert {b.key for b in at.download_button} >= {
        "csv-endpoints", "csv-latency-over-time", "csv-traffic-over-time"}
    assert len(at.get("plotly_chart")) == 2
    assert not notices(at)
    # Enough requests everywhere: no "Tail" column, empty on every row (the CSV keeps it).
    shown = next(d for d in at.dataframe if "p95_ms" in d.value.columns)
    assert "tail" not in shown.proto.column_order and (table["tail"] == "").all()
    caption = next(c.value for c in at.caption if c.value.startswith("Changes are against"))
    assert "can sit higher or lower" in caption and "so its lines sit higher" not in caption


def test_a_shift_in_traffic_mix_alone_does_not_move_the_headline_latency(tmp_path, monkeypatch):
    """The previous hour: 900 fast requests (10 ms) and 100 slow (500 ms); this hour the other way round.
    Pooled, the p50 jumps from 10 to 500 ms; each endpoint is as fast as before, so the headline says so."""
    until = datetime.now(UTC).replace(tzinfo=None, second=0, microsecond=0)
    def hour(start, fast, slow):
        ts = [start + timedelta(seconds=3.6 * i) for i in range(fast + slow)]
        return pd.DataFrame({"ts": ts, "service": "api", "endpoint": ["/fast"] * fast + ["/slow"] * slow,
                             "status": 200, "duration_ms": [10.0] * fast + [500.0] * slow})
    path = tmp_path / "perfdeck.duckdb"
    with write(path) as con:
        migrate(con)
        store_events(con, pd.concat([hour(until - timedelta(hours=2), 900, 100), hour(until - timedelta(hours=1), 100, 900)]))
    monkeypatch.setenv("PERFDECK_DB", str(path))
    with read(path) as con:
        pooled = [totals(con, since=until - timedelta(hours=h), until=until - timedelta(hours=h - 1)).iloc[0]["p50_ms"]
                  for h in (2, 1)]
    assert pooled[1] / pooled[0] > 40                          # what the headline used to show: +4,900 %
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["range"] = "Custom range"
    at.session_state["range_from"], at.session_state["range_to"] = until - timedelta(hours=1), until
    at.run()
    assert not at.exception, at.exception
    p50 = next(m for m in at.metric if m.label == "Typical p50")
    typical = 0.1 * 10.0 + 0.9 * 500.0    # the endpoints' p50s (exact: an hour reads raw events) weighted by this hour's mix
    assert (p50.value, p50.delta) == (fmt.ms(typical), "no change")
    assert "weighted by its requests" in p50.help


def test_endpoints_with_few_requests_say_their_tail_is_their_slowest(tmp_path, monkeypatch):
    """p95 from fewer than 21 requests and p99 from fewer than 101 lie between the two slowest."""
    until = datetime.now(UTC).replace(tzinfo=None, second=0, microsecond=0)
    sizes = {"/one": 1, "/ten": 10, "/fifty": 50, "/many": 500}
    rows = [(until - timedelta(minutes=30, seconds=i), endpoint, 10.0 + i)
            for endpoint, n in sizes.items() for i in range(n)]
    path = tmp_path / "perfdeck.duckdb"
    with write(path) as con:
        migrate(con)
        store_events(con, pd.DataFrame({"ts": [r[0] for r in rows], "service": "api", "endpoint": [r[1] for r in rows],
                                        "status": 200, "duration_ms": [r[2] for r in rows]}))
    monkeypatch.setenv("PERFDECK_DB", str(path))
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["range"] = "Custom range"
    at.session_state["range_from"], at.session_state["range_to"] = until - timedelta(hours=1), until
    at.run()
    assert not at.exception, at.exception
    table = endpoints_table(at)
    assert dict(zip(table["endpoint"], table["tail"])) == {
        "/one": "p95 and p99: its only request", "/ten": "p95 and p99 from the 2 slowest",
        "/fifty": "p99 from the 2 slowest", "/many": ""}
    assert "tail" in next(d for d in at.dataframe if "p95_ms" in d.value.columns).proto.column_order


def test_service_filter_and_endpoint_picker(seeded):
    at = run(PAGE)
    at.sidebar.selectbox(key="service").select("worker").run()
    assert not at.exception
    assert set(endpoints_table(at)["service"]) == {"worker"}
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


# -- the health banner: current health, whatever the range ------------------------------------------------

def test_health_banner_critical(tmp_path, monkeypatch):
    path = tmp_path / "health.duckdb"
    seed_health(path, now=utcnow())
    monkeypatch.setenv("PERFDECK_DB", str(path))
    at = run(PAGE)
    # Names in the messages stay text in the markdown callout: "_" escaped, ":" followed by a zero-width
    # space (Streamlit reads :icons: and :red[colours] after unescaping).
    assert [e.value for e in at.error] == [
        "**Health: critical** · failure rate of job:\u200bdaily\\_report 20 % > 10 % critical; "
        "disk use of web-1:\u200b/ 96 % > 95 % critical; redis queue is down"]
    assert [m.value for m in at.markdown if "-badge[" in m.value] == [
        ":orange-badge[:material/warning: Latency: warning]", ":orange-badge[:material/warning: Errors: warning]",
        ":red-badge[:material/error: Jobs: critical]", ":orange-badge[:material/warning: Caches: warning]",
        ":red-badge[:material/error: Host: critical]", ":blue-badge[:material/info: Cost: degraded]",
        ":red-badge[:material/error: Components: critical]"]
    assert at.expander[0].label.startswith("All checks (18) over the last 5 min to ")
    assert at.expander[0].label.endswith("UTC, not the range picked in the sidebar")
    checks = next(d.value for d in at.dataframe if "severity" in d.value.columns)
    assert list(checks.columns) == ASSESSED_COLUMNS and len(checks) == 18
    assert checks["message"].iloc[3] == "p95 of /search 740 ms > 500 ms warning"
    assert "csv-health-checks" in {b.key for b in at.download_button}
    assert len(at.metric) == 5                       # the rest of the page is there


def test_health_banner_healthy(tmp_path, monkeypatch):
    path = tmp_path / "health.duckdb"
    seed_healthy(path, now=utcnow())
    monkeypatch.setenv("PERFDECK_DB", str(path))
    at = run(PAGE)
    assert [e.value for e in at.success] == ["**Health: healthy** · all 3 checks within their targets"]
    assert not at.error and not at.warning and not at.info
    assert [m.value for m in at.markdown if "-badge[" in m.value] == [
        ":green-badge[:material/check_circle: Latency: healthy]",
        ":green-badge[:material/check_circle: Errors: healthy]",
        ":green-badge[:material/check_circle: Components: healthy]"]
    # The banner does not follow the sidebar's range: a week shows the same current health.
    at.sidebar.selectbox(key="range").select("Last 7 days").run()
    assert [e.value for e in at.success] == ["**Health: healthy** · all 3 checks within their targets"]


def test_health_banner_follows_the_thresholds_file(tmp_path, monkeypatch):
    path = tmp_path / "health.duckdb"
    seed_healthy(path, now=utcnow())
    monkeypatch.setenv("PERFDECK_DB", str(path))
    thresholds = tmp_path / "thresholds.toml"
    thresholds.write_text("[[request_p95_ms.overrides]]\nendpoint = '/search'\ntarget = 50\nwarning = 80\n")
    monkeypatch.setenv("PERFDECK_THRESHOLDS", str(thresholds))
    at = run(PAGE)
    assert [e.value for e in at.warning] == ["**Health: warning** · p95 of /search 100 ms > 80 ms warning"]
    thresholds.write_text("[request_p95_ms]\nwarning = 5000\n")
    st.cache_data.clear()                            # results are cached 10 s, thresholds with them
    at.run()
    assert not at.exception
    assert shown_text(at.error[0].value).startswith(
        f"**Health: not assessed.** {thresholds}: [request_p95_ms]: warning 5000")
    assert len(at.metric) == 5


def test_no_health_banner_without_recent_data(tmp_path, monkeypatch):
    path = tmp_path / "old.duckdb"
    seed_store(path, now=datetime.now(UTC).replace(tzinfo=None) - timedelta(days=5), days=1)
    monkeypatch.setenv("PERFDECK_DB", str(path))
    at = run(PAGE)
    assert at.caption[0].value == "Health: nothing had enough data in the last 5 min to be judged."
    assert not at.success and not at.error and not at.warning


def test_health_banner_names_silent_services_and_keeps_names_text(tmp_path, monkeypatch):
    path = tmp_path / "pipeline.duckdb"
    seed_pipeline(path, now=utcnow())
    name = "*shop* :red[api] $x$"
    with write(path) as con:       # a second silent service, named like markdown
        con.execute("INSERT INTO ingested_batches VALUES ('b-odd', 'spool:x', ?, 'h', 1, 1, ?)",
                    [name, utcnow() - timedelta(minutes=30)])
    monkeypatch.setenv("PERFDECK_DB", str(path))
    at = run(PAGE)
    [banner] = [e.value for e in at.error]
    assert banner.startswith("**Health: critical** · no data from ")
    assert "no data from worker for 20 min (last batch " in banner
    assert name not in banner
    assert "no data from \\*shop\\* :\u200bred\\[api\\] \\$x\\$ for 30 min" in banner
    assert ":red-badge[:material/error: Ingest: critical]" in [m.value for m in at.markdown if "-badge[" in m.value]
