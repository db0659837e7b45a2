"""Compaction of the per-minute rollups.

Every ingest transaction appends its own rollup rows, so a minute fed by many small batches holds many
rows per key. Sums stay right either way; compaction merges them into one row per key so queries over
months scan what they need, not every flush the daemon ever made."""
from __future__ import annotations

from datetime import datetime

import duckdb

# table -> (key columns, merged value expressions)
ROLLUPS: dict[str, tuple[str, str]] = {
    "latency_hist": ("minute, service, endpoint, bucket", "sum(count)"),
    "request_rollup": ("minute, service, endpoint",
                       "sum(requests), sum(errors), sum(duration_sum_ms), max(duration_max_ms)"),
    "cache_stats": ("minute, service, host, cache, namespace",
                    "sum(hits), sum(misses), sum(lookups_timed), sum(lookup_ms_sum), max(lookup_ms_max)"),
    "query_hist": ("minute, service, fingerprint, bucket", "sum(count)"),
}
# query_stats keeps its column order: key columns are not contiguous.
_QUERY_STATS = """
    SELECT minute, service, database, fingerprint, any_value(sample_sql), sum(calls), sum(total_ms),
           min(min_ms), max(max_ms)
    FROM query_stats
    WHERE minute >= ? AND minute < ?
    GROUP BY minute, service, database, fingerprint
"""


def mergeable(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Rows compact() would remove from each rollup table over all time: the preview of a full compaction."""
    keys = {table: k for table, (k, _) in ROLLUPS.items()} | {"query_stats": "minute, service, database, fingerprint"}
    return {table: con.execute(f"SELECT (SELECT count(*) FROM {table}) - "
                               f"(SELECT count(*) FROM (SELECT DISTINCT {k} FROM {table}))").fetchone()[0]
            for table, k in keys.items()}


def compact(con: duckdb.DuckDBPyConnection, since: datetime, until: datetime) -> int:
    """Merge duplicate rollup rows with minute in [since, until); returns rows removed."""
    removed = 0
    for table, (keys, values) in ROLLUPS.items():
        removed += _rewrite(con, table, f"SELECT {keys}, {values} FROM {table} "
                                        "WHERE minute >= ? AND minute < ? GROUP BY ALL", since, until)
    removed += _rewrite(con, "query_stats", _QUERY_STATS, since, until)
    return removed


def _rewrite(con: duckdb.DuckDBPyConnection, table: str, merged_sql: str, since, until) -> int:
    before = con.execute(f"SELECT count(*) FROM {table} WHERE minute >= ? AND minute < ?",
                         [since, until]).fetchone()[0]
    if before == 0:
        return 0
    con.execute(f"CREATE OR REPLACE TEMP TABLE _merged AS {merged_sql}", [since, until])
    after = con.execute("SELECT count(*) FROM _merged").fetchone()[0]
    if after < before:
        con.execute(f"DELETE FROM {table} WHERE minute >= ? AND minute < ?", [since, until])
        con.execute(f"INSERT INTO {table} SELECT * FROM _merged")
    con.execute("DROP TABLE _merged")
    return before - after
