"""AppTest of the Database page on a seeded store and an empty one."""
from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import run_app
from seed_samples import seed_samples
from seed_store import seed_store
from streamlit.testing.v1 import AppTest

from collectors.samplers.database import pg_stat_statements_hint
from collectors.store import migrate, utcnow, write
from collectors.store.histogram import bucket_of

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "dashboard" / "app_pages" / "database.py")


@pytest.fixture
def seeded(tmp_path, monkeypatch):
    path = tmp_path / "perfdeck.duckdb"
    seed_store(path, days=1)
    seed_samples(path)
    monkeypatch.setenv("PERFDECK_DB", str(path))
    return path


def run() -> AppTest:
    return run_app(PAGE)


def table(at: AppTest, column: str):
    return next(d.value for d in at.dataframe if column in d.value)


def test_database_page(seeded):
    at = run()
    assert at.title[0].value == "Database"
    assert [h.value for h in at.subheader] == ["Top queries", "Index advisor", "Databases",
                                               "Tables with many sequential scans", "PostgreSQL"]
    queries = table(at, "fingerprint")
    assert queries["fingerprint"].iloc[0] == "SELECT * FROM orders WHERE customer_id = ?"
    assert queries["total_ms"].is_monotonic_decreasing and queries["p95_ms"].notna().all()
    # Seen in the tour: a total of 661,927 ms, and the table cut at the right. Total time in words (the
    # number stays, for sorting and the CSV); the example statement only in the CSV.
    shown = next(d for d in at.dataframe if "fingerprint" in d.value)
    config = json.loads(shown.proto.columns)
    assert config["total_ms"]["label"] == "Total time" and not config["total_ms"]["type_config"].get("format")
    assert "sample_sql" in queries and "sample_sql" not in shown.proto.column_order
    assert "Above the p95 when fewer than 5 % of the calls" in config["mean_ms"]["help"]
    assert "same calls" in config["p95_ms"]["help"]
    # legacy-pg has pg_stat_statements off: the sampler's hint says how to turn it on.
    assert len(at.info) == 1
    assert "legacy-pg" in at.info[0].value and "shared_preload_libraries" in at.info[0].value
    assert pg_stat_statements_hint()[1:] in at.info[0].value
    seq = table(at, "seq_scans")
    assert seq["table"].iloc[0] in {"public.orders", "public.audit_log"} and seq["flagged"].iloc[0]
    assert set(table(at, "pgss_enabled")["target"]) == {"shop-pg", "legacy-pg"}
    assert {b.key for b in at.download_button} >= {
        "csv-top-queries-sdk", "csv-databases", "csv-seq-scan-tables", "csv-db-cache-hit-ratio", "csv-db-connections"}
    assert len(at.get("plotly_chart")) == 2
    assert not at.error and not at.warning


def test_pg_stat_statements_source_and_order(seeded):
    at = run()
    at.get("button_group")[0].set_value("pg").run()
    assert not at.exception
    statements = table(at, "queryid")
    assert statements["queryid"].tolist() == [101, 102, 103]
    at.selectbox(key="query_order").select("calls").run()
    assert table(at, "queryid")["queryid"].iloc[0] == 102
    assert "csv-top-queries-pg" in {b.key for b in at.download_button}


def test_order_by_calls_and_service_filter(seeded):
    at = run()
    at.selectbox(key="query_order").select("calls").run()
    assert table(at, "fingerprint")["fingerprint"].iloc[0] == "SELECT * FROM products WHERE id = ?"
    at.sidebar.selectbox(key="service").select("worker").run()
    assert not at.exception
    assert any("No statements" in i.value for i in at.info)


def test_connections_chart_follows_the_picked_database(seeded):
    at = run()
    at.selectbox(key="db_target").select("shop-pg").run()
    assert not at.exception and len(at.get("plotly_chart")) == 2


def test_empty_store_says_how_to_get_data(tmp_path, monkeypatch):
    path = tmp_path / "empty.duckdb"
    with write(path) as con:
        migrate(con)
    monkeypatch.setenv("PERFDECK_DB", str(path))
    at = run()
    assert len(at.info) == 1
    assert "perfdeck demo" in at.info[0].value and "PERFDECK_DATABASE_URLS" in at.info[0].value
    assert not at.dataframe


def test_a_mean_above_the_p95_and_a_p95_at_the_max_are_explained(tmp_path, monkeypatch):
    """Seen in the tour: "mean 0.53, p95 0.07" in one row, p95 equal to Max in another. Both are true of
    the same calls; the page says why."""
    minute = utcnow().replace(second=0, microsecond=0) - timedelta(hours=1)
    calls = {"UPDATE stock SET n = n - ? WHERE id = ?": [0.05] * 970 + [20.0] * 30,    # a few lock waits
             "SELECT * FROM report WHERE day = ?": [5.0] * 100}                       # every call alike
    path = tmp_path / "perfdeck.duckdb"
    with write(path) as con:
        migrate(con)
        for fingerprint, durations in calls.items():
            con.execute("INSERT INTO query_stats VALUES (?, 'api', 'shop', ?, ?, ?, ?, ?, ?)",
                        [minute, fingerprint, fingerprint, len(durations), sum(durations), min(durations),
                         max(durations)])
            for bucket in {bucket_of(d) for d in durations}:
                con.execute("INSERT INTO query_hist VALUES (?, 'api', ?, ?, ?)",
                            [minute, fingerprint, bucket, sum(bucket_of(d) == bucket for d in durations)])
    monkeypatch.setenv("PERFDECK_DB", str(path))
    at = run()
    assert not at.exception, at.exception
    rows = table(at, "fingerprint").set_index("fingerprint")
    update, report = rows.loc["UPDATE stock SET n = n - ? WHERE id = ?"], rows.loc["SELECT * FROM report WHERE day = ?"]
    assert update["mean_ms"] > update["p95_ms"] and report["p95_ms"] == report["max_ms"]
    [note] = [c.value for c in at.caption if "p95" in c.value]
    assert "mean is above the p95, fewer than 5 % of the statement's calls took most of its time" in note
    assert "p95 is the max, at least 5 % of the calls took about as long as the slowest" in note
