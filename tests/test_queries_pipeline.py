"""The ingest pipeline's read queries on a real DuckDB file: SDK counters (cumulative per process, with
restarts and processes first seen in the range), collector rejects and source notes, quarantined
batches, each source's latest report, and each service's last batch."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

import pandas as pd
import pytest
from seed_pipeline import API, COLLECTOR_REJECTS, DENIED, REDIS, SDK_LOSSES, SDK_REASONS, SHARED, SPOOL, WORKER, seed_pipeline

from collectors.store import migrate, read, write
from dashboard.queries import (
    collector_rejects,
    collector_reports,
    ingest_sources,
    last_batches,
    quarantine_counts,
    quarantined_batches,
    sdk_losses,
    sdk_reject_reasons,
    service_losses,
    source_notes,
)
from dashboard.queries.pipeline import SERVICE_COLUMNS

NOW = datetime(2025, 3, 14, 12, 0, 30)
WINDOW = {"since": NOW - timedelta(minutes=5), "until": NOW}


@pytest.fixture
def seeded(store):
    seed_pipeline(store, now=NOW)
    return store


def rows(df: pd.DataFrame, columns: list[str]) -> list[tuple]:
    return [tuple(None if pd.isna(v) else v for v in r) for r in df[columns].itertuples(index=False)]


def test_sdk_losses_add_what_each_process_counted_in_the_window(seeded):
    with read(seeded) as con:
        df = sdk_losses(con, **WINDOW)
    assert list(df.columns) == ["service", "processes", "dropped", "send_errors", "rejected", "last_report"]
    assert rows(df, ["service", "processes", "dropped", "send_errors", "rejected"]) == SDK_LOSSES
    assert df["last_report"].tolist() == [NOW - timedelta(minutes=1)]
    assert df["dropped"].dtype == "int64"


def test_sdk_losses_over_a_day_count_first_reports_from_zero(seeded):
    with read(seeded) as con:
        df = sdk_losses(con, since=NOW - timedelta(days=1), until=NOW)
    # web-1's report before the window is now its first: 5 + 15; web-2 9; worker's single report 100.
    assert rows(df, ["service", "processes", "dropped", "send_errors", "rejected"]) == [
        (API, 2, 29, 4, 5), (WORKER, 1, 100, 0, 0)]
    with read(seeded) as con:
        assert sdk_losses(con, **WINDOW, service=WORKER).empty


def write_reports(store, reports: list[tuple]) -> None:
    with write(store) as con:
        migrate(con)
        con.executemany("INSERT INTO sdk_health (ts, service, host, pid, dropped, send_errors, rejected, "
                        "rejected_reasons) VALUES (?, 'api', ?, ?, ?, ?, ?, ?)", reports)


@pytest.mark.parametrize(("reports", "expected"), [
    # A restart under the same pid: counters start from 0 again (+10, then 3 and 2 from zero, then +1).
    ([(-10, "h", 1, 50, 5, 0), (1, "h", 1, 60, 5, 0), (2, "h", 1, 3, 2, 0), (3, "h", 1, 4, 2, 0)], (14, 2)),
    # Any counter going down is a restart, for all of them: dropped 61 since the new process started.
    ([(-10, "h", 1, 50, 5, 0), (1, "h", 1, 61, 0, 0)], (61, 0)),
    # Two reports of one process in one tick share a ts: their counters order them.
    ([(-10, "h", 1, 50, 5, 0), (1, "h", 1, 58, 6, 0), (1, "h", 1, 55, 6, 0)], (8, 1)),
    # Same pid on two hosts: two processes, neither a baseline for the other.
    ([(-10, "a", 1, 50, 0, 0), (1, "b", 1, 3, 0, 0), (2, "a", 1, 51, 0, 0)], (4, 0)),
    # A host the SDK could not name (NULL) still has its own baseline.
    ([(-10, None, None, 50, 1, 0), (1, None, None, 52, 1, 0)], (2, 0)),
    # Nothing reported in the range: nothing counted, however much before.
    ([(-10, "h", 1, 50, 5, 0)], None),
])
def test_counter_increases(store, reports, expected):
    at = lambda minute: NOW + timedelta(minutes=minute)   # noqa: E731
    write_reports(store, [(at(m), host, pid, d, e, r, None) for m, host, pid, d, e, r in reports])
    with read(store) as con:
        df = sdk_losses(con, since=NOW, until=NOW + timedelta(minutes=5))
    got = None if df.empty else (int(df["dropped"].iloc[0]), int(df["send_errors"].iloc[0]))
    assert got == expected


def test_sdk_reject_reasons_per_kind_and_reason(seeded, store):
    with read(seeded) as con:
        df = sdk_reject_reasons(con, **WINDOW)
    assert list(df.columns) == ["service", "kind", "reason", "events"]
    assert rows(df, ["service", "kind", "reason", "events"]) == SDK_REASONS


def test_sdk_reject_reasons_restart_and_odd_keys(tmp_path):
    path = tmp_path / "r.duckdb"
    reasons = [(-10, {"requests:bad_duration": 5}), (1, {"requests:bad_duration": 7, "odd": 1}),
               (2, {"requests:bad_duration": 1}), (3, ["not", "a", "map"])]
    write_reports(path, [(NOW + timedelta(minutes=m), "h", 1, 0, 0, sum(r.values()) if isinstance(r, dict) else 1,
                          json.dumps(r)) for m, r in reasons])
    with read(path) as con:
        df = sdk_reject_reasons(con, since=NOW, until=NOW + timedelta(minutes=5))
    # +2 then, after the restart (total 8 -> 1), +1 from zero; "odd" has no kind; a list is not read.
    assert rows(df, ["kind", "reason", "events"]) == [("requests", "bad_duration", 3), (None, "odd", 1)]


def test_collector_rejects_by_service_kind_and_reason(seeded):
    with read(seeded) as con:
        df = collector_rejects(con, **WINDOW)
        day = collector_rejects(con, since=NOW - timedelta(days=1), until=NOW, service=WORKER)
    assert rows(df, ["service", "kind", "reason", "rows", "batches"]) == COLLECTOR_REJECTS
    assert df["last_seen"].tolist() == [NOW - timedelta(minutes=2)] * 2
    assert rows(day, ["service", "kind", "reason", "rows", "batches"]) == [(WORKER, "queries", "bad_timestamp", 9, 1)]


def test_source_notes_are_the_rows_without_a_batch(seeded):
    with read(seeded) as con:
        df = source_notes(con, **WINDOW)
    assert rows(df, ["kind", "reason", "count", "first_seen", "last_seen"]) == [
        ("spool", "stale_tmp_removed", 1, NOW - timedelta(minutes=1), NOW - timedelta(minutes=1)),
        ("stream", "group_recreated", 1, NOW - timedelta(minutes=4), NOW - timedelta(minutes=4))]


def test_quarantined_batches_newest_first(seeded):
    with read(seeded) as con:
        df = quarantined_batches(con, since=NOW - timedelta(hours=1), until=NOW)
        counts = quarantine_counts(con, **WINDOW)
        cut = quarantined_batches(con, since=NOW - timedelta(hours=1), until=NOW, max_rows=2)
    assert list(df.columns) == ["ts", "source", "name", "reason"]
    assert df["name"].tolist() == ["b-bad-2.batch", "b-bad-1.batch", "redis-1700000000000-0.batch"]
    assert df["reason"].iloc[0] == "batch schema: requests.ts expected a number"
    assert rows(counts, ["source", "batches"]) == [(SPOOL, 2)]
    assert len(cut) == 2 and cut.attrs["truncated"]


def report_as(store, collector: str, seconds_ago: float) -> None:
    """A report of the Redis stream by a named collector (several share one on a lake)."""
    with write(store) as con:
        con.execute("INSERT INTO ingest_sources (ts, source, pending, collector) VALUES (?, ?, 0, ?)",
                    [NOW - timedelta(seconds=seconds_ago), REDIS, collector])


def test_collector_reports_each_collectors_latest(seeded):
    with read(seeded) as con:                # the seed's reports name no collector (written before names)
        assert rows(collector_reports(con, **WINDOW), ["collector", "report_age_s"]) == [(None, 10.0)]
    report_as(seeded, "collector-a", 5)
    report_as(seeded, "collector-b", 200)
    with read(seeded) as con:
        df = collector_reports(con, **WINDOW)
    assert rows(df, ["collector", "report_age_s"]) == [(None, 10.0), ("collector-a", 5.0), ("collector-b", 200.0)]


def test_ingest_sources_latest_report_of_each(seeded):
    with read(seeded) as con:
        df = ingest_sources(con, **WINDOW)
    assert rows(df, ["source", "pending", "oldest_pending_s", "stream_length", "stream_pending", "error",
                     "report_age_s"]) == [
        (REDIS, 40, 2.0, 40, 2500, None, 10.0),
        (SHARED, None, None, None, None, DENIED, 20.0),
        (SPOOL, 3, 90.0, None, None, None, 10.0)]
    assert df["last_report"].tolist() == [NOW - timedelta(seconds=s) for s in (10, 20, 10)]
    with read(seeded) as con:   # ten minutes later: the same reports, older
        later = ingest_sources(con, since=NOW - timedelta(days=1), until=NOW + timedelta(minutes=10))
    assert later["report_age_s"].tolist() == [610.0, 620.0, 610.0]


def test_last_batches_per_service(seeded):
    with read(seeded) as con:
        day = last_batches(con, since=NOW - timedelta(days=1), until=NOW)
        window = last_batches(con, **WINDOW)
    assert rows(day, ["service", "batches", "events", "silent_s"]) == [(API, 20, 200, 10.0), (WORKER, 5, 20, 1200.0)]
    assert day["last_batch"].tolist() == [NOW - timedelta(seconds=10), NOW - timedelta(minutes=20)]
    assert rows(window, ["service", "batches"]) == [(API, 10)]      # 10 s, 40 s ... 280 s before now


def test_service_losses_one_row_per_service(seeded):
    with read(seeded) as con:
        df = service_losses(con, since=NOW - timedelta(days=1), until=NOW)
        window = service_losses(con, **WINDOW)
    assert list(df.columns) == SERVICE_COLUMNS
    assert rows(df, ["service", "batches", "events", "dropped", "send_errors", "sdk_rejected",
                     "collector_rejected"]) == [(API, 20, 200, 29, 4, 5, 7), (WORKER, 5, 20, 100, 0, 0, 9)]
    assert rows(window, ["service", "batches", "dropped", "collector_rejected"]) == [(API, 10, 24, 7)]
    assert all(df[c].dtype == "int64" for c in ("batches", "dropped", "collector_rejected"))


def test_an_empty_store_has_empty_answers(migrated_store):
    with read(migrated_store) as con:
        for fn in (sdk_losses, sdk_reject_reasons, collector_rejects, last_batches, service_losses):
            assert fn(con, **WINDOW).empty, fn.__name__
        for fn in (source_notes, quarantined_batches, quarantine_counts, ingest_sources):
            assert fn(con, **WINDOW).empty, fn.__name__


def test_batch_ids_go_with_the_raw_window_and_their_counts_stay(store):
    """ingested_batches keeps ids for replays only as long as raw rows; what the Ingest page counts of
    older batches is kept per minute when they go, so the figures over a long range do not change."""
    from collectors.store.ingest import already_ingested
    from collectors.store.retention import purge

    now = NOW
    rows_ = [(f"b{i}", SPOOL, API if i % 3 else WORKER, "h", 1, 10 + i, now - timedelta(hours=6 * i, seconds=7 * i))
             for i in range(60)]      # 15 days, every 6 hours
    with write(store) as con:
        migrate(con)
        con.executemany("INSERT INTO ingested_batches VALUES (?, ?, ?, ?, ?, ?, ?)", rows_)
    scopes = [{"since": now - timedelta(days=20), "until": now + timedelta(seconds=1)},
              {"since": now - timedelta(days=9), "until": now - timedelta(days=2)}]
    with read(store) as con:
        before = [last_batches(con, **scope) for scope in scopes]
    with write(store) as con:
        deleted = purge(con, now)
        kept = con.execute("SELECT count(*) FROM ingested_batches").fetchone()[0]
        replayed = already_ingested(con, ["b0", "b27", "b59"])
    with read(store) as con:
        after = [last_batches(con, **scope) for scope in scopes]
    assert deleted["ingested_batches"] == 60 - kept and 0 < kept < 60
    assert replayed == {"b0", "b27"}                  # a replay within the raw window is still refused
    for b, a in zip(before, after):
        assert len(b) == 2
        pd.testing.assert_frame_equal(b, a)
