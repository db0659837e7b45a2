"""The store on real DuckDB files: migrations, compaction, retention, the read/write contexts."""
from __future__ import annotations

from datetime import datetime, timedelta

import pytest

from collectors.store import StoreMissing, migrate, read, write
from collectors.store.histogram import bucket_of, quantile, value_of
from collectors.store.retention import count_expired, purge
from collectors.store.rollups import compact


def test_migrations_are_recorded_and_applied_once(store):
    with write(store) as con:
        assert migrate(con) == ["m001_initial", "m002_samplers", "m003_action_results", "m004_index_advice",
                                "m005_llm_costs", "m006_alerting", "m007_pipeline_health",
                                "m008_alert_peak_severity", "m009_rollup_tiers", "m010_llm_requests",
                                "m011_ingest_rollup", "m012_llm_rollup", "m013_postgres_depth",
                                "m014_advisor_statements", "m015_source_reporter"]
    with write(store) as con:
        assert migrate(con) == []
    with read(store) as con:
        assert con.execute("SELECT name FROM _migrations ORDER BY name").fetchall() == [
            ("m001_initial",), ("m002_samplers",), ("m003_action_results",), ("m004_index_advice",),
            ("m005_llm_costs",), ("m006_alerting",), ("m007_pipeline_health",),
            ("m008_alert_peak_severity",), ("m009_rollup_tiers",), ("m010_llm_requests",),
            ("m011_ingest_rollup",), ("m012_llm_rollup",), ("m013_postgres_depth",),
            ("m014_advisor_statements",), ("m015_source_reporter",)]
        tables = {r[0] for r in con.execute("SELECT table_name FROM information_schema.tables").fetchall()}
    assert {"request_events", "latency_hist", "cache_stats", "llm_calls", "query_stats", "system_metrics",
            "redis_metrics", "ingested_batches", "deploys", "alerts", "action_audit",
            "silences", "alert_notifications", "cache_sizes", "ingest_sources"} <= tables


def test_failed_write_rolls_back(store):
    with write(store) as con:
        migrate(con)
    with pytest.raises(ZeroDivisionError):
        with write(store) as con:
            con.execute("INSERT INTO deploys VALUES (now()::TIMESTAMP, 'api', 'v1', NULL)")
            raise ZeroDivisionError("boom")
    with read(store) as con:
        assert con.execute("SELECT count(*) FROM deploys").fetchone() == (0,)


def test_read_of_a_missing_store_says_what_to_do(store):
    with pytest.raises(StoreMissing, match="perfdeck collect"):
        with read(store):
            pass
    assert not store.exists()  # a reader never creates the file


def test_histogram_relative_error_is_bounded():
    for ms in (0.0007, 0.01, 1, 3.3, 250, 99_999):
        est = value_of(bucket_of(ms))
        assert abs(est - max(ms, 1e-3)) / max(ms, 1e-3) <= 0.0100
    assert quantile({}, 0.5) is None
    assert quantile({bucket_of(10): 1}, 0.99) == value_of(bucket_of(10))


def test_compaction_merges_duplicate_rollup_rows_and_keeps_the_sums(store):
    t0 = datetime(2026, 11, 1, 12, 0)
    with write(store) as con:
        migrate(con)
        for _ in range(5):  # five flushes into the same minutes
            for m in range(3):
                con.execute("INSERT INTO latency_hist VALUES (?, 'api', '/a', 100, 2)", [t0 + timedelta(minutes=m)])
                con.execute("INSERT INTO request_rollup VALUES (?, 'api', '/a', 2, 1, 20.0, 15.0)",
                            [t0 + timedelta(minutes=m)])
                con.execute("INSERT INTO query_stats VALUES (?, 'api', 'db', 'SELECT ?', 'SELECT 1', 3, 6.0, 1.0, 3.0)",
                            [t0 + timedelta(minutes=m)])
        removed = compact(con, t0, t0 + timedelta(minutes=2))  # the third minute stays as it is
    with read(store) as con:
        assert con.execute("SELECT count(*), sum(count) FROM latency_hist").fetchone() == (2 + 5, 30)
        rollup = con.execute("SELECT sum(requests), sum(errors), max(duration_max_ms) FROM request_rollup").fetchone()
        assert rollup == (30, 15, 15.0)
        assert con.execute("SELECT count(*), sum(calls), min(min_ms) FROM query_stats").fetchone() == (7, 45, 1.0)
    assert removed == 3 * (5 - 1) * 2


def test_retention_purges_only_what_is_past_its_window(store):
    now = datetime(2026, 11, 21)
    with write(store) as con:
        migrate(con)
        for days in (1, 6, 8, 300, 401):
            ts = now - timedelta(days=days)
            con.execute("INSERT INTO request_events (ts, service, endpoint, duration_ms) VALUES (?, 'a', '/', 1)", [ts])
            con.execute("INSERT INTO latency_hist VALUES (?, 'a', '/', 1, 1)", [ts])
        preview = count_expired(con, now)
        deleted = purge(con, now)
    assert preview == deleted
    assert deleted["request_events"] == 3 and deleted["latency_hist"] == 1
    with read(store) as con:
        assert con.execute("SELECT count(*) FROM request_events").fetchone() == (2,)
        assert con.execute("SELECT count(*) FROM latency_hist").fetchone() == (4,)
