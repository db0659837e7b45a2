"""The time tiers of the request rollups and the LLM spend rollup.

Ingest writes per-minute rows (`latency_hist`, `request_rollup`, `llm_rollup`). The rollup job
(`collectors.store.rollups.roll_tiers`) merges complete hours of minutes into `<table>_hour` (column
`hour`) and complete days of hours into `<table>_day` (column `day`); buckets and counters merge by
addition, so every tier holds exactly what its minutes hold. `rollup_watermarks` says how far each
tier is complete: every minute before the "hour" mark is counted in the hour tables, every hour
before the "day" mark in the day tables, and minute rows before "minute_purge" were purged by
retention (so any found there later arrived late). Readers use a tier only before its watermark
(`dashboard.queries.tiers`)."""
from __future__ import annotations

from datetime import datetime, timedelta

import duckdb

from collectors.store import llm_rollup

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)

# minute table -> (key columns besides the time, merged values in column order, the column whose
# total per hour tells whether an hour misses minutes: every minute row adds at least 1 to it)
TIERED: dict[str, tuple[str, str, str]] = {
    "latency_hist": ("service, endpoint, bucket", "sum(count) AS count", "count"),
    "request_rollup": ("service, endpoint",
                       "sum(requests) AS requests, sum(errors) AS errors, sum(duration_sum_ms) AS duration_sum_ms, "
                       "max(duration_max_ms) AS duration_max_ms", "requests"),
    "llm_rollup": (llm_rollup.KEYS, llm_rollup.MERGED, "calls"),
}
# tier (its time column and table suffix) -> its width
TIERS: dict[str, timedelta] = {"hour": HOUR, "day": DAY}

MARKS = ("hour", "day", "minute_purge")
WATERMARKS_SQL = """
SELECT name, ts
FROM rollup_watermarks
"""


def table(minute_table: str, tier: str) -> str:
    """'latency_hist', 'hour' -> 'latency_hist_hour'; the minute tier is the table itself."""
    return minute_table if tier == "minute" else f"{minute_table}_{tier}"


def rolled_until(con: duckdb.DuckDBPyConnection) -> dict[str, datetime | None]:
    """{"hour": ..., "day": ..., "minute_purge": ...}; None where nothing was rolled or purged yet
    (or the store predates the tiers: readers then use the minutes alone)."""
    try:
        rows = dict(con.execute(WATERMARKS_SQL).fetchall())
    except duckdb.CatalogException:
        rows = {}
    return {name: rows.get(name) for name in MARKS}


def set_mark(con: duckdb.DuckDBPyConnection, name: str, ts: datetime) -> None:
    """Move a watermark forward (never back)."""
    con.execute("""
        MERGE INTO rollup_watermarks AS w
        USING (SELECT ?::VARCHAR AS name, ?::TIMESTAMP AS ts) AS x
        ON w.name = x.name
        WHEN MATCHED THEN UPDATE SET ts = greatest(w.ts, x.ts)
        WHEN NOT MATCHED THEN INSERT BY NAME
    """, [name, ts])


def floor(ts: datetime, width: timedelta) -> datetime:
    """The start of the hour or (UTC) day holding `ts`."""
    if width == DAY:
        return ts.replace(hour=0, minute=0, second=0, microsecond=0)
    return ts.replace(minute=0, second=0, microsecond=0)


def ceil(ts: datetime, width: timedelta) -> datetime:
    start = floor(ts, width)
    return start if start == ts else start + width
