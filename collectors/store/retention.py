"""How long each table keeps its rows. The defaults live here and nowhere else."""
from __future__ import annotations

import os
from datetime import datetime, timedelta

import duckdb

RAW_DAYS = 7        # raw request events and raw samples, for drill-down ($PERFDECK_RAW_DAYS)
ROLLUP_DAYS = 400   # rollups, cost records and history ($PERFDECK_ROLLUP_DAYS)

# table -> (time column, "raw" or "rollup")
TABLES: dict[str, tuple[str, str]] = {
    "request_events": ("ts", "raw"),
    "system_metrics": ("ts", "raw"),
    "redis_metrics": ("ts", "raw"),
    "ingest_rejects": ("ts", "raw"),
    "db_metrics": ("ts", "raw"),
    "redis_slowlog": ("ts", "rollup"),
    "pg_statements": ("ts", "rollup"),
    "sdk_health": ("ts", "raw"),
    "ingest_sources": ("ts", "raw"),
    "latency_hist": ("minute", "rollup"),
    "request_rollup": ("minute", "rollup"),
    "cache_stats": ("minute", "rollup"),
    "query_stats": ("minute", "rollup"),
    "query_hist": ("minute", "rollup"),
    "llm_calls": ("ts", "rollup"),
    "deploys": ("ts", "rollup"),
    "ingested_batches": ("ingested_at", "rollup"),
    "quarantine": ("ts", "rollup"),
    "advisor_runs": ("ts", "rollup"),
    "index_advice": ("ts", "rollup"),
    "cache_sizes": ("minute", "rollup"),
    "alerts": ("started_at", "rollup"),
    "alert_notifications": ("ts", "rollup"),
    "silences": ("ends_at", "rollup"),   # the estimate stays beside the measured effect of an index created long ago
}


def retention_days() -> dict[str, int]:
    return {"raw": int(os.environ.get("PERFDECK_RAW_DAYS", RAW_DAYS)),
            "rollup": int(os.environ.get("PERFDECK_ROLLUP_DAYS", ROLLUP_DAYS))}


def cutoffs(now: datetime, days: dict[str, int] | None = None) -> dict[str, datetime]:
    """table -> the time before which its rows go; `days` may name only some kinds ({"raw": 3})."""
    days = days or retention_days()
    return {table: now - timedelta(days=days[kind]) for table, (_, kind) in TABLES.items() if kind in days}


def count_expired(con: duckdb.DuckDBPyConnection, now: datetime, days: dict[str, int] | None = None) -> dict[str, int]:
    """Rows each table would lose: the preview of purge()."""
    return {table: con.execute(f"SELECT count(*) FROM {table} WHERE {TABLES[table][0]} < ?", [cut]).fetchone()[0]
            for table, cut in cutoffs(now, days).items()}


def purge_table(con: duckdb.DuckDBPyConnection, table: str, cutoff: datetime) -> int:
    """Delete `table`'s rows older than `cutoff` (table names come from TABLES only)."""
    return con.execute(f"DELETE FROM {table} WHERE {TABLES[table][0]} < ?", [cutoff]).fetchone()[0]


def purge(con: duckdb.DuckDBPyConnection, now: datetime, days: dict[str, int] | None = None) -> dict[str, int]:
    """Delete rows past their retention; returns rows deleted per table."""
    return {table: purge_table(con, table, cut) for table, cut in cutoffs(now, days).items()}
