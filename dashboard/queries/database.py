"""Database performance: statements from the SDK's SQLAlchemy hook (`query_stats`, `query_hist`)
and from pg_stat_statements (`pg_statements`), plus the database sampler's `db_metrics`."""
from __future__ import annotations

from datetime import datetime

import duckdb
import pandas as pd

from dashboard.queries._run import bucket_seconds, run_query
from dashboard.queries.latency import PERCENTILE_COLUMNS
from dashboard.queries.samplers import label_sql

# How the top-query tables can be ordered: choice -> ORDER BY clause (code constants only).
QUERY_ORDER = {
    "total": "total_ms DESC",
    "mean": "mean_ms DESC",
    "calls": "calls DESC",
}
# A table is flagged by the rows its sequential scans read in the range, not by how many scans there
# were (one scan of a big table reads more than thousands of index lookups): when they read at least
# SEQ_ROWS_READ_MIN rows, more than its index scans fetched, on a table of at least SEQ_SCAN_MIN_ROWS
# live rows (small tables are cheaper to scan than to index).
SEQ_SCAN_MIN_ROWS = 10_000
SEQ_ROWS_READ_MIN = 1_000_000


def _order(order_by: str) -> str:
    if order_by not in QUERY_ORDER:
        raise ValueError(f"order_by must be one of {sorted(QUERY_ORDER)}, not {order_by!r}")
    return QUERY_ORDER[order_by]


SDK_QUERIES_SQL = """
WITH stats AS (
    SELECT service,
           fingerprint,
           string_agg(DISTINCT database, ', ' ORDER BY database) AS database,
           arg_max(sample_sql, minute) AS sample_sql,
           CAST(sum(calls) AS BIGINT) AS calls,
           sum(total_ms) AS total_ms,
           sum(total_ms) / nullif(sum(calls), 0) AS mean_ms,
           max(max_ms) AS max_ms
    FROM query_stats
    WHERE minute >= $since
      AND minute < $until
      AND ($service IS NULL OR service = $service)
    GROUP BY service, fingerprint
),
counts AS (
    SELECT service, fingerprint, bucket, sum(count) AS n
    FROM query_hist
    WHERE minute >= $since
      AND minute < $until
      AND ($service IS NULL OR service = $service)
    GROUP BY service, fingerprint, bucket
),
cumulative AS (
    SELECT service, fingerprint, bucket,
           sum(n) OVER (PARTITION BY service, fingerprint ORDER BY bucket) AS cum,
           sum(n) OVER (PARTITION BY service, fingerprint) AS total
    FROM counts
),
percentiles AS (
    SELECT service,
           fingerprint,
           {percentiles}
    FROM cumulative
    GROUP BY service, fingerprint
)
SELECT s.service, s.database, s.fingerprint, s.sample_sql, s.calls, s.total_ms, s.mean_ms,
       least(p.p95_ms, s.max_ms) AS p95_ms, s.max_ms  -- a bucket estimate may exceed the exact max by <1 %
FROM stats AS s
LEFT JOIN percentiles AS p USING (service, fingerprint)
ORDER BY {order}, s.service, s.fingerprint
"""


def sdk_top_queries(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime,
    until: datetime,
    service: str | None = None,
    order_by: str = "total",
    max_rows: int = 50,
) -> pd.DataFrame:
    """[service, database, fingerprint, sample_sql, calls, total_ms, mean_ms, p95_ms, max_ms] per
    statement fingerprint seen by the SDK, top `max_rows` by `order_by` (see QUERY_ORDER). p95_ms
    comes from `query_hist` with the same percentile SQL as endpoint latency (NULL without it)."""
    sql = SDK_QUERIES_SQL.format(percentiles=PERCENTILE_COLUMNS, order=_order(order_by))
    params = {"since": since, "until": until, "service": service}
    df, _ = run_query(sql, params, max_rows=max_rows, con=con)
    return df


PG_STATEMENTS_SQL = """
WITH covered AS (
    -- The seconds the sampled deltas cover, per target: from each sample to the one before, or to the
    -- pg_stat_statements reset in between (the sampler's pg_stat_statements.covered_s).
    SELECT target, sum(value) AS covered_s
    FROM db_metrics
    WHERE ts >= $since
      AND ts < $until
      AND name = 'pg_stat_statements.covered_s'
      AND ($target IS NULL OR target = $target)
    GROUP BY target
),
s AS (
SELECT target,
       queryid,
       arg_max(query, ts) AS query,
       CAST(sum(calls) AS BIGINT) AS calls,
       sum(total_ms) AS total_ms,
       sum(total_ms) / nullif(sum(calls), 0) AS mean_ms,
       CAST(sum(rows) AS BIGINT) AS rows,
       sum(shared_blks_hit) / nullif(sum(shared_blks_hit + shared_blks_read), 0) AS cache_hit_ratio
FROM pg_statements
WHERE ts >= $since
  AND ts < $until
  AND ($target IS NULL OR target = $target)
GROUP BY target, queryid
)
SELECT s.*, s.calls * 86400.0 / nullif(c.covered_s, 0) AS calls_per_day
FROM s
LEFT JOIN covered c USING (target)
ORDER BY {order}, target, queryid
"""


def pg_top_statements(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime,
    until: datetime,
    target: str | None = None,
    order_by: str = "total",
    max_rows: int = 50,
) -> pd.DataFrame:
    """[target, queryid, query, calls, total_ms, mean_ms, rows, cache_hit_ratio, calls_per_day] per
    pg_stat_statements entry, summed over the sampled deltas in the range, top `max_rows` by
    `order_by`. cache_hit_ratio = shared blocks hit / (hit + read) of those statements. calls_per_day
    is the calls over the time the samples in the range actually cover (not the whole range: the
    collector may have started later, been stopped, or pg_stat_statements reset since), NULL for
    samples from before the sampler recorded it."""
    sql = PG_STATEMENTS_SQL.format(order=_order(order_by))
    params = {"since": since, "until": until, "target": target}
    df, _ = run_query(sql, params, max_rows=max_rows, con=con)
    return df


DB_TARGETS_SQL = """
SELECT target,
       max(ts) AS last_sample,
       arg_max(value, ts) FILTER (WHERE name = 'pg_stat_statements.enabled') = 1 AS pgss_enabled,
       arg_max(value, ts) FILTER (WHERE name = 'cache.hit_ratio') AS cache_hit_ratio,
       CAST(sum(value) FILTER (WHERE name = 'connections' AND ts = last_ts) AS BIGINT) AS connections,
       CAST(arg_max(value, ts) FILTER (WHERE name = 'connections.max') AS BIGINT) AS max_connections,
       arg_max(value, ts) FILTER (WHERE name = 'database.size_bytes') AS size_bytes,
       arg_max(value, ts) FILTER (WHERE name = 'sqlite.file_size_bytes') AS file_size_bytes
FROM (
    SELECT *, max(ts) FILTER (WHERE name = 'connections') OVER (PARTITION BY target) AS last_ts
    FROM db_metrics
    WHERE ts >= $since
      AND ts < $until
)
GROUP BY target
ORDER BY target
"""


def db_targets(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime) -> pd.DataFrame:
    """One row per sampled database in the range, latest values: [target, last_sample,
    pgss_enabled (NULL for SQLite), cache_hit_ratio (since the stats reset), connections,
    max_connections, size_bytes, file_size_bytes (SQLite)]."""
    df, _ = run_query(DB_TARGETS_SQL, {"since": since, "until": until}, max_rows=500, con=con)
    return df


CACHE_HIT_RATIO_SQL = """
SELECT time_bucket(to_seconds(CAST($bucket_s AS BIGINT)), ts) AS time,
       target,
       avg(value) AS hit_ratio
FROM db_metrics
WHERE ts >= $since
  AND ts < $until
  AND name = 'cache.hit_ratio.interval'
  AND value IS NOT NULL
GROUP BY time, target
ORDER BY target, time
"""


def db_cache_hit_ratio(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime) -> pd.DataFrame:
    """[time, target, hit_ratio] of the buffer cache per time bucket: the mean of the sampler's
    per-interval ratios (equal intervals; the sampler does not store the block counts)."""
    step = bucket_seconds(since, until)
    params = {"since": since, "until": until, "bucket_s": step}
    df, _ = run_query(CACHE_HIT_RATIO_SQL, params, con=con)
    df.attrs["bucket_seconds"] = step
    return df


CONNECTIONS_SQL = f"""
WITH per_sample AS (
    SELECT ts, target, {label_sql("state")} AS state, sum(value) AS connections
    FROM db_metrics
    WHERE ts >= $since
      AND ts < $until
      AND name = 'connections'
    GROUP BY ALL
)
SELECT time_bucket(to_seconds(CAST($bucket_s AS BIGINT)), ts) AS time,
       target,
       coalesce(state, '(unknown)') AS state,
       avg(connections) AS connections
FROM per_sample
GROUP BY ALL
ORDER BY target, state, time
"""


def db_connections(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime) -> pd.DataFrame:
    """[time, target, state, connections] mean client connections per state and time bucket."""
    step = bucket_seconds(since, until)
    params = {"since": since, "until": until, "bucket_s": step}
    df, _ = run_query(CONNECTIONS_SQL, params, con=con)
    df.attrs["bucket_seconds"] = step
    return df


SEQ_SCANS_SQL = f"""
WITH samples AS (
    SELECT ts, target, labels, name, value
    FROM db_metrics
    WHERE ts >= $since
      AND ts < $until
      AND name IN ('table.seq_scan', 'table.idx_scan', 'table.seq_tup_read', 'table.idx_tup_fetch',
                   'table.n_live_tup', 'table.n_dead_tup', 'table.size_bytes')
      AND value IS NOT NULL
),
-- Counter growth over the range: the sum of the rises between samples; a counter that went down
-- was reset (pg_stat_reset), so it grew by its new value in that interval. Each counter's samples
-- are taken in time order as one list (a window over every sample sorted them all, 30x slower).
counters AS (
    SELECT target, labels, name, NULL AS last_ts, NULL AS last,
           coalesce(list_sum(list_transform(range(2, len(v) + 1),
                                            lambda i: CASE WHEN v[i] >= v[i - 1] THEN v[i] - v[i - 1] ELSE v[i] END)),
                    0) AS growth
    FROM (SELECT target, labels, name, list(value ORDER BY ts) AS v
          FROM samples
          WHERE name IN ('table.seq_scan', 'table.idx_scan', 'table.seq_tup_read', 'table.idx_tup_fetch')
          GROUP BY target, labels, name)
),
gauges AS (
    SELECT target, labels, name, max(ts) AS last_ts, arg_max(value, ts) AS last, NULL AS growth
    FROM samples
    WHERE name NOT IN ('table.seq_scan', 'table.idx_scan', 'table.seq_tup_read', 'table.idx_tup_fetch')
    GROUP BY target, labels, name
),
g AS (
    SELECT target, {label_sql("table")} AS "table", name, arg_max(last, last_ts) AS last, sum(growth) AS growth
    FROM (SELECT * FROM counters UNION ALL SELECT * FROM gauges)
    GROUP BY target, "table", name
),
w AS (
    SELECT target,
           "table",
           CAST(max(growth) FILTER (WHERE name = 'table.seq_scan') AS BIGINT) AS seq_scans,
           CAST(coalesce(max(growth) FILTER (WHERE name = 'table.idx_scan'), 0) AS BIGINT) AS idx_scans,
           CAST(max(growth) FILTER (WHERE name = 'table.seq_tup_read') AS BIGINT) AS seq_rows_read,
           CAST(max(growth) FILTER (WHERE name = 'table.idx_tup_fetch') AS BIGINT) AS idx_rows_fetched,
           CAST(max(last) FILTER (WHERE name = 'table.n_live_tup') AS BIGINT) AS live_rows,
           CAST(max(last) FILTER (WHERE name = 'table.n_dead_tup') AS BIGINT) AS dead_rows,
           max(last) FILTER (WHERE name = 'table.size_bytes') AS size_bytes
    FROM g
    GROUP BY target, "table"
)
SELECT target,
       "table",
       seq_scans,
       idx_scans,
       seq_scans / nullif(seq_scans + idx_scans, 0) AS seq_share,
       seq_rows_read,
       idx_rows_fetched,
       seq_rows_read / nullif(seq_rows_read + coalesce(idx_rows_fetched, 0), 0) AS seq_rows_share,
       live_rows,
       dead_rows,
       size_bytes,
       coalesce(seq_rows_read >= $min_read AND seq_rows_read > coalesce(idx_rows_fetched, 0)
                AND live_rows >= $min_rows, FALSE) AS flagged
FROM w
WHERE seq_scans > 0
ORDER BY flagged DESC, seq_rows_read DESC NULLS LAST, seq_scans DESC, target, "table"
"""


def seq_scan_tables(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime,
    until: datetime,
    min_rows: int = SEQ_SCAN_MIN_ROWS,
    min_read: int = SEQ_ROWS_READ_MIN,
    max_rows: int = 200,
) -> pd.DataFrame:
    """Tables with sequential scans in the range (PostgreSQL): [target, table, seq_scans, idx_scans,
    seq_share (of the scans), seq_rows_read and idx_rows_fetched (growth over the range),
    seq_rows_share (of the rows read), live_rows, dead_rows, size_bytes (latest), flagged].
    flagged = sequential scans read at least `min_read` rows in the range, more than index scans
    fetched, on a table of at least `min_rows` live rows; flagged tables first, then by rows read
    sequentially."""
    params = {"since": since, "until": until, "min_rows": min_rows, "min_read": min_read}
    df, _ = run_query(SEQ_SCANS_SQL, params, max_rows=max_rows, con=con)
    return df
