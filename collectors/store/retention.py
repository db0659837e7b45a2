"""How long each table keeps its rows. The defaults live here and nowhere else.

The request rollups are kept in tiers (collectors.store.tiers): minutes for MINUTE_DAYS (by default
as long as raw events: charts finer than an hour are only drawn from minutes, and short ranges inside
the raw window take exact percentiles from raw events anyway), hours for HOUR_DAYS (week- and
month-long charts at hour steps), days for the full ROLLUP_DAYS. A tier's rows are never purged past
what the next tier holds (its watermark), so a rollup job that fell behind loses nothing."""
from __future__ import annotations

import os
from datetime import datetime, timedelta

import duckdb

from collectors.store.tiers import TIERS, floor, rolled_until, set_mark

RAW_DAYS = 7        # raw request events and raw samples, for drill-down ($PERFDECK_RAW_DAYS)
ROLLUP_DAYS = 400   # rollups, cost records and history ($PERFDECK_ROLLUP_DAYS)
MINUTE_DAYS = None  # per-minute request rollups ($PERFDECK_MINUTE_DAYS; None: the raw window)
HOUR_DAYS = 90      # hourly request rollups ($PERFDECK_HOUR_DAYS)

# table -> (time column, "raw" or "rollup")
TABLES: dict[str, tuple[str, str]] = {
    "request_events": ("ts", "raw"),
    "system_metrics": ("ts", "raw"),
    "redis_metrics": ("ts", "raw"),
    "ingest_rejects": ("ts", "raw"),
    "db_metrics": ("ts", "raw"),
    "redis_slowlog": ("ts", "rollup"),
    "pg_statements": ("ts", "rollup"),
    "pg_activity": ("ts", "raw"),        # snapshots of live backends, kept as long as the other samples
    "sdk_health": ("ts", "raw"),
    "ingest_sources": ("ts", "raw"),
    "latency_hist": ("minute", "minute"),
    "request_rollup": ("minute", "minute"),
    "latency_hist_hour": ("hour", "hour"),
    "request_rollup_hour": ("hour", "hour"),
    "latency_hist_day": ("day", "rollup"),
    "request_rollup_day": ("day", "rollup"),
    "llm_rollup": ("minute", "minute"),
    "llm_rollup_hour": ("hour", "rollup"),        # few rows a day: kept as long as the calls
    "llm_rollup_day": ("day", "rollup"),
    "llm_user_day": ("day", "rollup"),
    "llm_request_spans": ("last_ts", "rollup"),   # a request goes with its last call
    "cache_stats": ("minute", "rollup"),
    "query_stats": ("minute", "rollup"),
    "query_hist": ("minute", "rollup"),
    "llm_calls": ("ts", "rollup"),
    "llm_requests": ("ts", "rollup"),
    "deploys": ("ts", "rollup"),
    "ingested_batches": ("ingested_at", "raw"),   # the batch ids replays are checked against
    "ingest_rollup": ("minute", "rollup"),          # ... and, once they go, their counts per minute
    "quarantine": ("ts", "rollup"),
    "advisor_runs": ("ts", "rollup"),
    "index_advice": ("ts", "rollup"),
    "advisor_statements": ("ts", "rollup"),
    "cache_sizes": ("minute", "rollup"),
    "alerts": ("started_at", "rollup"),
    "alert_notifications": ("ts", "rollup"),
    "silences": ("ends_at", "rollup"),   # the estimate stays beside the measured effect of an index created long ago
}


# A tier's rows stay until the next tier holds them: kind -> the watermark that bounds its purge.
_HELD_BY = {"minute": "hour", "hour": "day"}
# LLM calls and the spend kept of them go by whole UTC days, together: a range reaching past the
# retention then finds in the rollups exactly the calls that are left.
WHOLE_DAYS = {"llm_calls", "llm_rollup_hour", "llm_rollup_day", "llm_user_day", "llm_request_spans"}


def retention_days() -> dict[str, int]:
    raw = int(os.environ.get("PERFDECK_RAW_DAYS", RAW_DAYS))
    minute = int(os.environ.get("PERFDECK_MINUTE_DAYS", MINUTE_DAYS or raw))
    # Hours outlive minutes by a day at least: a day that gets late minutes is merged again from
    # all of its hours.
    return {"raw": raw, "minute": minute,
            "hour": max(int(os.environ.get("PERFDECK_HOUR_DAYS", HOUR_DAYS)), minute + 1),
            "rollup": int(os.environ.get("PERFDECK_ROLLUP_DAYS", ROLLUP_DAYS))}


def cutoffs(now: datetime, days: dict[str, int] | None = None,
            rolled: dict[str, datetime | None] | None = None) -> dict[str, datetime]:
    """table -> the time before which its rows go; `days` may name only some kinds ({"raw": 3}).
    With `rolled` (tiers.rolled_until), a tier's cutoff stops at the watermark of the tier that
    holds its rows next, and at the full rollup retention while that tier holds nothing yet."""
    days = days or retention_days()
    out = {}
    for table, (_, kind) in TABLES.items():
        if kind not in days:
            continue
        cut = now - timedelta(days=days[kind])
        if rolled is not None and kind in _HELD_BY:
            held = rolled.get(_HELD_BY[kind])
            cut = min(cut, held) if held else now - timedelta(days=retention_days()["rollup"])
            # Whole hours (days) go, so the rollup job knows which periods still have all their rows.
            cut = floor(cut, TIERS[_HELD_BY[kind]])
        if table in WHOLE_DAYS:
            cut = floor(cut, TIERS["day"])
        out[table] = cut
    return out


def count_expired(con: duckdb.DuckDBPyConnection, now: datetime, days: dict[str, int] | None = None) -> dict[str, int]:
    """Rows each table would lose: the preview of purge()."""
    return {table: con.execute(f"SELECT count(*) FROM {table} WHERE {TABLES[table][0]} < ?", [cut]).fetchone()[0]
            for table, cut in cutoffs(now, days, rolled_until(con)).items()}


# What a table's rows leave behind when they go: each batch id is kept only while a replay of its
# batch may come (the raw window), so the store's bookkeeping does not grow with its age; the Ingest
# page's batch counts per service read these minutes beyond it.
KEPT_ON_PURGE = {
    "ingested_batches": """
        INSERT INTO ingest_rollup
        SELECT date_trunc('minute', ingested_at), source, service, count(*), sum(events), max(ingested_at)
        FROM ingested_batches
        WHERE ingested_at < ?
        GROUP BY ALL
    """,
}


def purge_table(con: duckdb.DuckDBPyConnection, table: str, cutoff: datetime) -> int:
    """Delete `table`'s rows older than `cutoff` (table names come from TABLES only), leaving behind
    what KEPT_ON_PURGE keeps of them."""
    if table in KEPT_ON_PURGE:
        con.execute(KEPT_ON_PURGE[table], [cutoff])
    return con.execute(f"DELETE FROM {table} WHERE {TABLES[table][0]} < ?", [cutoff]).fetchone()[0]


def purge(con: duckdb.DuckDBPyConnection, now: datetime, days: dict[str, int] | None = None) -> dict[str, int]:
    """Delete rows past their retention; returns rows deleted per table."""
    deleted = {}
    for table, cut in cutoffs(now, days, rolled_until(con)).items():
        deleted[table] = purge_table(con, table, cut)
        if TABLES[table][1] == "minute":
            set_mark(con, "minute_purge", cut)   # minute rows found before this later arrived late
    return deleted
