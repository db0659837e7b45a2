"""AppTest of the Ingest page on real stores: one that lost things in every way, a healthy one, an empty
one, a missing one, and names that look like markdown."""
from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import clear_health_env, run_app
from seed_pipeline import DENIED, REDIS, SHARED, SPOOL, seed_pipeline
from streamlit.testing.v1 import AppTest

from collectors.store import migrate, utcnow, write

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "dashboard" / "app_pages" / "ingest.py")
APP = str(ROOT / "dashboard" / "app.py")
CSVS = {"csv-ingest-checks", "csv-ingest-sources", "csv-ingest-services", "csv-ingest-sdk-rejects",
        "csv-ingest-collector-rejects", "csv-ingest-quarantine", "csv-ingest-source-notes"}


@pytest.fixture(autouse=True)
def _health_config(tmp_path, monkeypatch):
    clear_health_env(monkeypatch, tmp_path)


def table(at: AppTest, column: str):
    return next(d.value for d in at.dataframe if column in d.value.columns)


def texts(at: AppTest) -> list[str]:
    """Everything the page wrote as markdown: titles, captions, callouts, markdown."""
    return [e.value for e in (*at.title, *at.subheader, *at.caption, *at.markdown, *at.success, *at.info,
                              *at.warning, *at.error)]


def with_services(path, *names: str) -> None:
    """Request rollups, so the sidebar's service picker lists these services."""
    with write(path) as con:
        con.executemany("INSERT INTO request_rollup VALUES (?, ?, '/x', 1, 0, 1.0, 1.0)",
                        [(utcnow().replace(second=0, microsecond=0), name) for name in names])


@pytest.fixture
def losses(tmp_path, monkeypatch):
    path = tmp_path / "perfdeck.duckdb"
    seed_pipeline(path, now=utcnow())
    with_services(path, "shop-api", "worker")
    monkeypatch.setenv("PERFDECK_DB", str(path))
    return path


def test_every_loss_is_on_the_page(losses):
    at = run_app(PAGE)
    assert at.title[0].value == "Ingest"
    assert "every event an SDK dropped or refused" in at.caption[0].value
    assert [h.value for h in at.subheader] == [
        "Checks not healthy over the last 5 min", "Sources", "Services", "Refused by the SDKs",
        "Rejected by the collector", "Quarantined batches", "Source notes"]
    checks = table(at, "message")
    assert checks["severity"].tolist()[:2] == ["critical", "critical"]
    assert checks["message"].iloc[0].startswith("no data from worker for 20 min (last batch ")
    assert "ingest lag of spool:data/spool 90 s > 60 s warning" in checks["message"].tolist()

    sources = table(at, "unacked")
    assert sources["source"].tolist() == [REDIS, SHARED, SPOOL]
    assert sources[["waiting", "lag", "length", "unacked"]].values.tolist() == [
        ["40", "2 s", "40", "2,500"], ["—", "—", "—", "—"], ["3", "90 s", "—", "—"]]
    assert sources["error"].tolist() == ["—", DENIED, "—"]
    assert all(r.endswith(" s ago") for r in sources["reported"])

    services = table(at, "collector_rejected").set_index("service")      # the default range: 24 hours
    assert services.loc["shop-api", ["batches", "events", "dropped", "send_errors", "sdk_rejected",
                                     "collector_rejected"]].tolist() == [20, 200, 29, 4, 5, 7]
    assert services.loc["worker", "last"] == "20 min ago"
    assert table(at, "events").shape[0] == 2                            # refused by the SDKs: two reasons
    assert table(at, "rows")[["service", "reason", "rows"]].values.tolist() == [
        ["worker", "bad_timestamp", 9], ["shop-api", "bad_latency_ms", 6], ["shop-api", "label_too_long", 1]]
    assert table(at, "name")["name"].tolist() == ["b-bad-2.batch", "b-bad-1.batch", "redis-1700000000000-0.batch"]
    assert table(at, "first_seen")["reason"].tolist() == ["stale_tmp_removed", "group_recreated", "directory"]
    assert {b.key for b in at.download_button} == CSVS
    assert not at.warning and not at.error                               # the collector reported 10 s ago


def test_the_service_filter_and_a_short_range(losses):
    at = run_app(PAGE)
    at.sidebar.selectbox(key="service").select("worker").run()
    assert not at.exception
    assert table(at, "collector_rejected")["service"].tolist() == ["worker"]
    assert table(at, "rows")["service"].tolist() == ["worker"]
    at.sidebar.selectbox(key="range").select("Last 15 minutes").run()
    assert not at.exception
    # worker sent nothing in the last 15 minutes, and nothing of it was refused or rejected.
    assert {c.value for c in at.caption} >= {"No batch arrived in this range.",
                                             "No event refused by an SDK in this range.",
                                             "No row rejected by the collector in this range."}


def test_a_collector_that_stopped_reporting(tmp_path, monkeypatch):
    path = tmp_path / "stale.duckdb"
    seed_pipeline(path, now=utcnow() - timedelta(minutes=10))
    monkeypatch.setenv("PERFDECK_DB", str(path))
    at = run_app(PAGE)
    assert len(at.warning) == 1
    assert at.warning[0].value.startswith("The collector last reported 10 min before the end of the range")
    assert "no report from the collector for 10 min" in " ".join(table(at, "message")["message"])


def test_all_well(tmp_path, monkeypatch):
    path = tmp_path / "well.duckdb"
    now = utcnow() - timedelta(seconds=15)     # before the page's "now", rounded down to 10 s
    with write(path) as con:
        migrate(con)
        con.execute("INSERT INTO ingested_batches VALUES ('b1', ?, 'api', 'h', 1, 5, ?)", [SPOOL, now])
        con.execute("INSERT INTO ingest_sources (ts, source, pending) VALUES (?, ?, 0)", [now, SPOOL])
    monkeypatch.setenv("PERFDECK_DB", str(path))
    at = run_app(PAGE)
    assert [s.value for s in at.success] == ["All 6 ingest checks within their targets over the last 5 min."]
    assert table(at, "unacked")[["waiting", "lag"]].values.tolist() == [[0, "—"]]
    # Seen in the tour: "0" left-aligned as text. A number column, right-aligned.
    sources = next(d for d in at.dataframe if "unacked" in d.value.columns)
    assert json.loads(sources.proto.columns)["waiting"]["type_config"]["type"] == "number"
    assert {c.value for c in at.caption} >= {"No batch quarantined in this range.",
                                             "No note about a source in this range."}


def test_names_stay_text(tmp_path, monkeypatch):
    path = tmp_path / "names.duckdb"
    name = "*bold* :red[x] $y$ [a](http://e.com)"
    with write(path) as con:
        migrate(con)
        con.execute("INSERT INTO ingested_batches VALUES ('b1', 'spool:x', ?, 'h', 1, 5, ?)",
                    [name, utcnow() - timedelta(minutes=20)])
    monkeypatch.setenv("PERFDECK_DB", str(path))
    at = run_app(PAGE)
    assert table(at, "collector_rejected")["service"].tolist() == [name]      # in a table, as recorded
    assert not any(name in text for text in texts(at))                       # never as markdown


def test_an_empty_store(migrated_store, monkeypatch):
    monkeypatch.setenv("PERFDECK_DB", str(migrated_store))
    at = run_app(PAGE)
    assert not at.dataframe and not at.warning and not at.error
    captions = [c.value for c in at.caption]
    assert "No ingest check had data in the last 5 min." in captions
    assert any(c.startswith("No source reported in the day before the end of the range") for c in captions)


def test_a_missing_store_says_how_to_get_data(tmp_path, monkeypatch):
    monkeypatch.setenv("PERFDECK_DB", str(tmp_path / "nothing-here.duckdb"))
    at = run_app(PAGE)
    assert len(at.info) == 1 and "perfdeck collect" in at.info[0].value
    assert not at.dataframe


def test_the_router_lists_ingest_under_operate(losses):
    at = run_app(APP)
    at.switch_page("app_pages/ingest.py").run()
    assert not at.exception
    assert at.title[0].value == "Ingest"
