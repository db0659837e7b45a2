"""PostgreSQL in depth, from the database sampler (collectors.samplers.pg_depth): the latest snapshot of
live backends (long-running, idle in transaction, waiting, blocking), vacuum and bloat per table,
transaction-ID ages and wraparound levels, table and index sizes, replication, and one statement's
history from pg_statements. Each reads the latest sample of each target in the range."""
from __future__ import annotations

from datetime import datetime

import duckdb
import pandas as pd

from dashboard.queries._run import bucket_seconds, run_query
from dashboard.queries.samplers import label_sql

# A statement running this long, or a transaction open this long, is listed as long-running
# (pghero's long_running_query_sec default).
LONG_RUNNING_S = 60
# Wraparound: PostgreSQL stops assigning transaction IDs 1,000,000 before 2^31, at an age of 2,146,483,648.
# Warning from autovacuum_freeze_max_age (the server's setting, 200 million by default), where
# PostgreSQL itself starts anti-wraparound vacuums. Critical once fewer than 1.5 billion transactions are
# left, pghero's dashboard threshold (transaction_id_danger(threshold: 1500000000)): an age of 646,483,648.
XID_STOP_AGE = 2_146_483_648
XID_CRITICAL_LEFT = 1_500_000_000
XID_CRITICAL_AGE = XID_STOP_AGE - XID_CRITICAL_LEFT
DEFAULT_FREEZE_MAX_AGE = 200_000_000
# A table has too many dead rows when they are this share of its rows (autovacuum's default scale
# factor, 0.2, is when it would have started) and at least this many.
DEAD_SHARE = 0.2
DEAD_MIN_ROWS = 1_000

# The latest PostgreSQL sample of each target in the range: pg_stat_statements.enabled is written by
# every PostgreSQL sample and by nothing else.
_LATEST = """
latest AS (
    SELECT target, max(ts) AS ts
    FROM db_metrics
    WHERE ts >= $since AND ts < $until AND name = 'pg_stat_statements.enabled'
    GROUP BY target
)"""

ACTIVITY_SQL = f"""
WITH {_LATEST},
snap AS (
    SELECT a.*
    FROM pg_activity a
    JOIN latest l ON l.target = a.target AND l.ts = a.ts
),
blocks AS (
    SELECT target, blocker AS pid, count(*) AS blocks
    FROM (SELECT target, unnest(blocked_by) AS blocker FROM snap)
    GROUP BY ALL
)
SELECT s.target, s.ts, s.pid, s.backend_start,
       CASE WHEN len(s.blocked_by) > 0 THEN 'waiting'
            WHEN s.state = 'active' THEN 'running'
            ELSE coalesce(s.state, 'unknown') END AS activity,
       s.state, s.wait_event_type, s.wait_event,
       nullif(concat_ws(': ', s.wait_event_type, s.wait_event), '') AS wait,
       s.query_s, s.xact_s, s.query_s * 1000 AS query_ms, s.xact_s * 1000 AS xact_ms,
       s.blocked_by, coalesce(b.blocks, 0) AS blocks, s.locks,
       s.usename, s.application_name, s.client_addr, s.query
FROM snap s
LEFT JOIN blocks b ON b.target = s.target AND b.pid = s.pid
WHERE $min_s IS NULL
   OR (s.state = 'active' AND s.query_s >= $min_s)
   OR (s.state LIKE 'idle in transaction%' AND s.xact_s >= $min_s)
ORDER BY s.target, coalesce(b.blocks, 0) DESC, greatest(coalesce(s.xact_s, 0), coalesce(s.query_s, 0)) DESC, s.pid
"""


def pg_activity_now(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime,
                    min_seconds: float | None = None) -> pd.DataFrame:
    """The latest snapshot of each PostgreSQL target's backends in the range: [target, ts, pid,
    backend_start, activity (running | waiting | idle in transaction | ...), state, wait_event_type,
    wait_event, wait, query_s, xact_s (and both in ms), blocked_by (pids), blocks (how many it blocks), locks,
    usename, application_name, client_addr, query]; blockers first, then the oldest. With
    `min_seconds`, only statements running and transactions open at least that long."""
    params = {"since": since, "until": until, "min_s": min_seconds}
    df, _ = run_query(ACTIVITY_SQL, params, max_rows=500, con=con)
    return df


def pg_long_running(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime,
                    min_seconds: float = LONG_RUNNING_S) -> pd.DataFrame:
    """pg_activity_now's rows running a statement, or idle in a transaction, for `min_seconds` or more."""
    return pg_activity_now(con, since=since, until=until, min_seconds=min_seconds)


# The latest value of each (target, name, labels) of the latest PostgreSQL sample.
_LAST_VALUES = f"""
WITH {_LATEST},
last AS (
    SELECT m.target, m.name, m.labels, m.value, m.ts
    FROM db_metrics m
    JOIN latest l ON l.target = m.target AND l.ts = m.ts
)"""

TABLES_SQL = f"""
{_LAST_VALUES},
t AS (
    SELECT target, {label_sql("table")} AS "table",
           max(value) FILTER (WHERE name = 'table.n_live_tup') AS live_rows,
           max(value) FILTER (WHERE name = 'table.n_dead_tup') AS dead_rows,
           max(value) FILTER (WHERE name = 'table.n_mod_since_analyze') AS changed_since_analyze,
           max(value) FILTER (WHERE name = 'table.last_vacuum') AS last_vacuum,
           max(value) FILTER (WHERE name = 'table.last_autovacuum') AS last_autovacuum,
           max(value) FILTER (WHERE name = 'table.last_analyze') AS last_analyze,
           max(value) FILTER (WHERE name = 'table.last_autoanalyze') AS last_autoanalyze,
           max(value) FILTER (WHERE name = 'table.size_bytes') AS size_bytes,
           max(value) FILTER (WHERE name = 'table.heap_bytes') AS heap_bytes,
           max(value) FILTER (WHERE name = 'table.bloat_bytes') AS bloat_bytes,
           max(value) FILTER (WHERE name = 'table.xid_age') AS xid_age,
           max(ts) AS ts
    FROM last
    WHERE name LIKE 'table.%'
    GROUP BY ALL
),
i AS (
    SELECT target, {label_sql("table")} AS "table", sum(value) AS index_bytes, count(*) AS indexes
    FROM last
    WHERE name = 'index.size_bytes'
    GROUP BY ALL
),
s AS (
    SELECT target, coalesce(max(value) FILTER (WHERE name = 'setting.autovacuum_freeze_max_age'),
                            $freeze_default) AS freeze_max_age
    FROM last
    GROUP BY target
)
SELECT t.target, t."table",
       CAST(t.live_rows AS BIGINT) AS live_rows, CAST(t.dead_rows AS BIGINT) AS dead_rows,
       t.dead_rows / nullif(t.live_rows + t.dead_rows, 0) AS dead_share,
       CAST(t.changed_since_analyze AS BIGINT) AS changed_since_analyze,
       to_timestamp(greatest(t.last_vacuum, t.last_autovacuum))::TIMESTAMP AS last_vacuum,
       to_timestamp(greatest(t.last_analyze, t.last_autoanalyze))::TIMESTAMP AS last_analyze,
       t.ts - to_timestamp(greatest(t.last_vacuum, t.last_autovacuum))::TIMESTAMP AS since_vacuum,
       t.size_bytes, t.heap_bytes, i.index_bytes, CAST(coalesce(i.indexes, 0) AS BIGINT) AS indexes,
       t.bloat_bytes, t.bloat_bytes / nullif(t.heap_bytes, 0) AS bloat_share,
       CAST(t.xid_age AS BIGINT) AS xid_age,
       CASE WHEN t.xid_age >= $critical_age THEN 'critical'
            WHEN t.xid_age >= s.freeze_max_age THEN 'warning'
            ELSE 'ok' END AS wraparound,
       coalesce(t.dead_rows >= $dead_min AND t.dead_rows / nullif(t.live_rows + t.dead_rows, 0) >= $dead_share,
                FALSE) AS needs_vacuum
FROM t
LEFT JOIN i USING (target, "table")
LEFT JOIN s USING (target)
ORDER BY t.target, t.size_bytes DESC NULLS LAST, t."table"
"""


def pg_table_health(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime,
                    max_rows: int = 1000) -> pd.DataFrame:
    """Per table of each PostgreSQL target, from its latest sample: [target, table, live_rows, dead_rows,
    dead_share, changed_since_analyze, last_vacuum, last_analyze (manual or auto, the later; UTC),
    since_vacuum, size_bytes (all), heap_bytes, index_bytes, indexes, bloat_bytes (estimate),
    bloat_share, xid_age, wraparound (ok | warning | critical, see the module's levels), needs_vacuum
    (dead rows at least DEAD_SHARE of the rows and DEAD_MIN_ROWS)]; largest tables first."""
    params = {"since": since, "until": until, "freeze_default": DEFAULT_FREEZE_MAX_AGE,
              "critical_age": XID_CRITICAL_AGE, "dead_min": DEAD_MIN_ROWS, "dead_share": DEAD_SHARE}
    df, _ = run_query(TABLES_SQL, params, max_rows=max_rows, con=con)
    return df


XID_SQL = f"""
{_LAST_VALUES}
SELECT target, {label_sql("database")} AS database, CAST(value AS BIGINT) AS xid_age,
       CAST(coalesce((SELECT max(s.value) FROM last s WHERE s.target = last.target
                      AND s.name = 'setting.autovacuum_freeze_max_age'), $freeze_default) AS BIGINT) AS freeze_max_age,
       $stop_age - CAST(value AS BIGINT) AS left_before_stop,
       value / $stop_age AS used_share,
       CASE WHEN value >= $critical_age THEN 'critical'
            WHEN value >= coalesce((SELECT max(s.value) FROM last s WHERE s.target = last.target
                                    AND s.name = 'setting.autovacuum_freeze_max_age'), $freeze_default) THEN 'warning'
            ELSE 'ok' END AS wraparound
FROM last
WHERE name = 'database.xid_age'
ORDER BY target, value DESC, database
"""


def pg_xid_ages(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime) -> pd.DataFrame:
    """Transaction-ID age of every database of each PostgreSQL target's server: [target, database,
    xid_age, freeze_max_age, left_before_stop (transactions before PostgreSQL stops at 2^31 - 1M),
    used_share, wraparound (ok | warning | critical)]; oldest first."""
    params = {"since": since, "until": until, "freeze_default": DEFAULT_FREEZE_MAX_AGE,
              "critical_age": XID_CRITICAL_AGE, "stop_age": XID_STOP_AGE}
    df, _ = run_query(XID_SQL, params, con=con)
    return df


INDEXES_SQL = f"""
{_LAST_VALUES}
SELECT target, {label_sql("table")} AS "table", {label_sql("index")} AS "index",
       {label_sql("unique")} = '1' AS is_unique, {label_sql("primary")} = '1' AS is_primary,
       max(value) FILTER (WHERE name = 'index.size_bytes') AS size_bytes,
       CAST(max(value) FILTER (WHERE name = 'index.idx_scan') AS BIGINT) AS scans
FROM last
WHERE name IN ('index.size_bytes', 'index.idx_scan')
GROUP BY ALL
ORDER BY target, size_bytes DESC NULLS LAST, "table", "index"
"""


def pg_index_sizes(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime,
                   max_rows: int = 1000) -> pd.DataFrame:
    """Indexes of each PostgreSQL target from its latest sample: [target, table, index, is_unique,
    is_primary, size_bytes, scans (since the statistics reset)]; largest first."""
    df, _ = run_query(INDEXES_SQL, {"since": since, "until": until}, max_rows=max_rows, con=con)
    return df


REPLICATION_SQL = f"""
{_LAST_VALUES},
roles AS (
    SELECT target,
           max(value) FILTER (WHERE name = 'replication.standby') AS standby,
           max(value) FILTER (WHERE name = 'replication.replicas') AS replicas,
           max(value) FILTER (WHERE name = 'replication.replay_delay_s') AS replay_delay_s,
           max(ts) AS ts
    FROM last
    GROUP BY target
),
per_replica AS (
    SELECT target, {label_sql("replica")} AS replica,
           max(value) FILTER (WHERE name = 'replication.lag_bytes') AS lag_bytes,
           max(value) FILTER (WHERE name = 'replication.replay_lag_s') AS replay_lag_s
    FROM last
    WHERE name IN ('replication.lag_bytes', 'replication.replay_lag_s')
    GROUP BY ALL
)
SELECT r.target, r.ts,
       CASE WHEN r.standby = 1 THEN 'standby' WHEN r.standby = 0 THEN 'primary' END AS role,
       CAST(r.replicas AS BIGINT) AS replicas, p.replica, p.lag_bytes,
       coalesce(p.replay_lag_s, r.replay_delay_s) AS lag_s
FROM roles r
LEFT JOIN per_replica p USING (target)
WHERE r.standby IS NOT NULL
ORDER BY r.target, p.replica
"""


def pg_replication(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime) -> pd.DataFrame:
    """Replication of each PostgreSQL target from its latest sample: [target, ts, role (primary |
    standby), replicas (a primary's, 0 when none), replica, lag_bytes, lag_s]. A primary has one row per
    replica (one row with replica NULL when it has none); a standby one row, lag_s = seconds since its
    last replayed transaction (0 when it has replayed all it received)."""
    df, _ = run_query(REPLICATION_SQL, {"since": since, "until": until}, con=con)
    return df


HISTORY_SQL = """
SELECT time_bucket(to_seconds(CAST($bucket_s AS BIGINT)), ts) AS time,
       CAST(sum(calls) AS BIGINT) AS calls,
       sum(total_ms) AS total_ms,
       sum(total_ms) / nullif(sum(calls), 0) AS mean_ms,
       CAST(sum(rows) AS BIGINT) AS rows
FROM pg_statements
WHERE ts >= $since
  AND ts < $until
  AND target = $target
  AND queryid = $queryid
GROUP BY time
ORDER BY time
"""


def pg_statement_history(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime, target: str,
                         queryid: int) -> pd.DataFrame:
    """One pg_stat_statements entry over the range: [time, calls, total_ms, mean_ms, rows] per time bucket
    (the sampled deltas summed; mean = total / calls of the bucket)."""
    step = bucket_seconds(since, until)
    params = {"since": since, "until": until, "bucket_s": step, "target": target, "queryid": int(queryid)}
    df, _ = run_query(HISTORY_SQL, params, con=con)
    df.attrs["bucket_seconds"] = step
    return df
