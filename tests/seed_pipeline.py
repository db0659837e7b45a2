"""A store whose ingest pipeline lost things in known ways, for the pipeline queries, health and page tests.

    seed_pipeline(path, now=now)     # the 5 minutes before `now` are the window the figures below are for

- shop-api sends a batch every 30 s up to 10 s before `now`; worker last sent 20 minutes before (silent);
  legacy 2 days before (retired: no longer judged).
- shop-api's SDKs: process web-1/101 had dropped 5 before the window and 20 in it (+15), send errors
  1 -> 3 (+2), refused 2 -> 5 (+3: queries:bad_duration 2 -> 4, requests:bad_status 0 -> 1); process
  web-2/202 first reports in the window (7 dropped, counted from 0), then restarts under the same pid
  and reports 2 dropped and 1 send error (+2, +1). In all: 24 dropped, 3 send errors, 3 refused.
- the collector rejected 7 of shop-api's rows in the window (requests bad_latency_ms 4 + 2,
  label_too_long 1), 9 of worker's before it; it noted a stale temp file and a recreated consumer group.
- 2 spool batches quarantined in the window, 1 Redis batch before it.
- sources, latest report 10 s before `now`: the spool with 3 batches waiting, the oldest 90 s old; the
  Redis stream with 2,500 entries delivered and not acknowledged; a second spool unreadable.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta

from collectors.store import migrate, write

API, WORKER, LEGACY = "shop-api", "worker", "legacy"
SPOOL, REDIS, SHARED = "spool:data/spool", "redis:perfdeck:batches", "spool:/mnt/shared/spool"
DENIED = "[Errno 13] Permission denied: '/mnt/shared/spool'"

# sdk_losses over the window: service, processes, dropped, send_errors, rejected
SDK_LOSSES = [(API, 2, 24, 3, 3)]
SDK_REASONS = [(API, "queries", "bad_duration", 2), (API, "requests", "bad_status", 1)]
COLLECTOR_REJECTS = [(API, "requests", "bad_latency_ms", 6, 2), (API, "requests", "label_too_long", 1, 1)]


def _insert(con, table: str, columns: str, rows: list[tuple]) -> None:
    marks = ", ".join("?" * len(columns.split(",")))
    con.executemany(f"INSERT INTO {table} ({columns}) VALUES ({marks})", rows)


def seed_pipeline(path, *, now: datetime) -> None:
    """Create (migrate) the store at `path` and write the rows described above around `now` (naive UTC)."""
    ago = lambda **kw: now - timedelta(**kw)   # noqa: E731
    batches = [(f"b-api-{i}", SPOOL, API, "web-1", 101, 10, ago(seconds=10 + 30 * i)) for i in range(20)]
    batches += [(f"b-worker-{i}", SPOOL, WORKER, "job-1", 7, 4, ago(minutes=20, seconds=30 * i)) for i in range(5)]
    batches.append(("b-legacy", SPOOL, LEGACY, "old-1", 9, 1, ago(days=2)))
    reasons = json.dumps
    sdk = [
        (ago(minutes=8), API, "web-1", 101, 5, 1, 2, reasons({"queries:bad_duration": 2})),
        (ago(minutes=4), API, "web-1", 101, 20, 3, 5, reasons({"queries:bad_duration": 4, "requests:bad_status": 1})),
        (ago(minutes=1), API, "web-1", 101, 20, 3, 5, reasons({"queries:bad_duration": 4, "requests:bad_status": 1})),
        (ago(minutes=3), API, "web-2", 202, 7, 0, 0, None),
        (ago(minutes=2), API, "web-2", 202, 2, 1, 0, None),          # restarted: counts from 0 again
        (ago(minutes=20), WORKER, "job-1", 7, 100, 0, 0, None),      # before the window
    ]
    rejects = [
        (ago(minutes=2), "b-api-3", "requests", "bad_latency_ms", 4),
        (ago(minutes=2), "b-api-3", "requests", "label_too_long", 1),
        (ago(minutes=3), "b-api-5", "requests", "bad_latency_ms", 2),
        (ago(minutes=20), "b-worker-0", "queries", "bad_timestamp", 9),   # before the window
        (ago(minutes=1), None, "spool", "stale_tmp_removed", 1),
        (ago(minutes=4), None, "stream", "group_recreated", 1),
        (ago(minutes=10), None, "spool", "directory", 1),                  # before the window
    ]
    quarantine = [
        (ago(minutes=2), SPOOL, "b-bad-1.batch", "not a batch: unpack failed"),
        (ago(minutes=1), SPOOL, "b-bad-2.batch", "batch schema: requests.ts expected a number"),
        (ago(minutes=30), REDIS, "redis-1700000000000-0.batch", "not a batch: unpack failed"),   # before
    ]
    sources = []
    for i in range(30):   # every 10 s, the newest 10 s before now
        at = ago(seconds=10 + 10 * i)
        sources.append((at, SPOOL, 3, 90.0 - 10 * i if i < 9 else None, None, None, None))
        sources.append((at, REDIS, 40, 2.0, 40, 2500, None))
        sources.append((at - timedelta(seconds=10), SHARED, None, None, None, None, DENIED if i < 3 else None))
    with write(path) as con:
        migrate(con)
        _insert(con, "ingested_batches", "batch_id, source, service, host, pid, events, ingested_at", batches)
        _insert(con, "sdk_health", "ts, service, host, pid, dropped, send_errors, rejected, rejected_reasons", sdk)
        _insert(con, "ingest_rejects", "ts, batch_id, kind, reason, count", rejects)
        _insert(con, "quarantine", "ts, source, name, reason", quarantine)
        _insert(con, "ingest_sources", "ts, source, pending, oldest_pending_s, stream_length, stream_pending, error",
                sources)
