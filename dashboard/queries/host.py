"""Host metrics from the host sampler (`system_metrics`): CPU, memory, disks, network and the
watched processes."""
from __future__ import annotations

from datetime import datetime

import duckdb
import pandas as pd

from dashboard.queries._run import bucket_seconds, run_query
from dashboard.queries.samplers import label_sql

HOSTS_SQL = """
SELECT host, max(ts) AS last_sample
FROM system_metrics
WHERE ts >= $since
  AND ts < $until
GROUP BY host
ORDER BY host
"""


def hosts(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime) -> pd.DataFrame:
    """[host, last_sample] of every host sampled in the range."""
    df, _ = run_query(HOSTS_SQL, {"since": since, "until": until}, max_rows=500, con=con)
    return df


HOST_OVER_TIME_SQL = """
SELECT time_bucket(to_seconds(CAST($bucket_s AS BIGINT)), ts) AS time,
       host,
       avg(value) FILTER (WHERE name = 'cpu.percent') AS cpu_percent,
       max(value) FILTER (WHERE name = 'cpu.percent') AS cpu_percent_max,
       avg(value) FILTER (WHERE name = 'load.1m') AS load_1m,
       avg(value) FILTER (WHERE name = 'mem.percent') AS mem_percent,
       avg(value) FILTER (WHERE name = 'mem.used_bytes') AS mem_used_bytes,
       avg(value) FILTER (WHERE name = 'mem.available_bytes') AS mem_available_bytes,
       max(value) FILTER (WHERE name = 'mem.total_bytes') AS mem_total_bytes,
       avg(value) FILTER (WHERE name = 'swap.percent') AS swap_percent,
       avg(value) FILTER (WHERE name = 'disk.read_bps') AS disk_read_bps,
       avg(value) FILTER (WHERE name = 'disk.write_bps') AS disk_write_bps,
       avg(value) FILTER (WHERE name = 'net.sent_bps') AS net_sent_bps,
       avg(value) FILTER (WHERE name = 'net.recv_bps') AS net_recv_bps
FROM system_metrics
WHERE ts >= $since
  AND ts < $until
  AND ($host IS NULL OR host = $host)
  AND name IN ('cpu.percent', 'load.1m', 'mem.percent', 'mem.used_bytes', 'mem.available_bytes',
               'mem.total_bytes', 'swap.percent', 'disk.read_bps', 'disk.write_bps', 'net.sent_bps',
               'net.recv_bps')
GROUP BY time, host
ORDER BY host, time
"""


def host_over_time(
    con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime, host: str | None = None,
) -> pd.DataFrame:
    """[time, host, cpu_percent, cpu_percent_max, load_1m, mem_percent, mem_used_bytes,
    mem_available_bytes, mem_total_bytes, swap_percent, disk_read_bps, disk_write_bps, net_sent_bps,
    net_recv_bps] per time bucket and host: means over the bucket (cpu_percent_max its busiest sample)."""
    step = bucket_seconds(since, until)
    params = {"since": since, "until": until, "host": host, "bucket_s": step}
    df, _ = run_query(HOST_OVER_TIME_SQL, params, con=con)
    df.attrs["bucket_seconds"] = step
    return df


DISKS_SQL = f"""
SELECT host,
       {label_sql("mount")} AS mount,
       arg_max(value, ts) FILTER (WHERE name = 'disk.used_percent') AS used_percent,
       arg_max(value, ts) FILTER (WHERE name = 'disk.used_bytes') AS used_bytes,
       arg_max(value, ts) FILTER (WHERE name = 'disk.total_bytes') AS total_bytes
FROM system_metrics
WHERE ts >= $since
  AND ts < $until
  AND ($host IS NULL OR host = $host)
  AND name IN ('disk.used_percent', 'disk.used_bytes', 'disk.total_bytes')
GROUP BY host, mount
ORDER BY host, used_percent DESC, mount
"""


def host_disks(
    con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime, host: str | None = None,
) -> pd.DataFrame:
    """[host, mount, used_percent, used_bytes, total_bytes], latest per mounted filesystem, fullest first."""
    params = {"since": since, "until": until, "host": host}
    df, _ = run_query(DISKS_SQL, params, max_rows=500, con=con)
    return df


PROCESSES_SQL = f"""
WITH p AS (
    SELECT host, {label_sql("proc")} AS process, CAST({label_sql("pid")} AS BIGINT) AS pid, name, ts, value
    FROM system_metrics
    WHERE ts >= $since
      AND ts < $until
      AND ($host IS NULL OR host = $host)
      AND name IN ('proc.cpu_percent', 'proc.rss_bytes', 'proc.threads', 'proc.open_files')
)
SELECT host,
       process,
       pid,
       arg_max(value, ts) FILTER (WHERE name = 'proc.cpu_percent') AS cpu_percent,
       arg_max(value, ts) FILTER (WHERE name = 'proc.rss_bytes') AS rss_bytes,
       CAST(arg_max(value, ts) FILTER (WHERE name = 'proc.threads') AS BIGINT) AS threads,
       CAST(arg_max(value, ts) FILTER (WHERE name = 'proc.open_files') AS BIGINT) AS open_files,
       max(ts) AS last_seen
FROM p
GROUP BY host, process, pid
ORDER BY last_seen DESC, rss_bytes DESC NULLS LAST, host, process, pid
"""


def processes_latest(
    con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime, host: str | None = None,
) -> pd.DataFrame:
    """[host, process, pid, cpu_percent, rss_bytes, threads, open_files, last_seen]: each watched
    process's latest sample in the range (cpu_percent: 100 = one core), still-running ones first."""
    params = {"since": since, "until": until, "host": host}
    df, _ = run_query(PROCESSES_SQL, params, max_rows=1_000, con=con)
    return df


PROCESSES_OVER_TIME_SQL = f"""
WITH per_sample AS (
    -- All processes of one name summed per sample (e.g. the workers of one server).
    SELECT ts,
           host,
           {label_sql("proc")} AS process,
           sum(value) FILTER (WHERE name = 'proc.cpu_percent') AS cpu_percent,
           sum(value) FILTER (WHERE name = 'proc.rss_bytes') AS rss_bytes
    FROM system_metrics
    WHERE ts >= $since
      AND ts < $until
      AND ($host IS NULL OR host = $host)
      AND name IN ('proc.cpu_percent', 'proc.rss_bytes')
    GROUP BY ts, host, process
)
SELECT time_bucket(to_seconds(CAST($bucket_s AS BIGINT)), ts) AS time,
       host,
       process,
       avg(cpu_percent) AS cpu_percent,
       avg(rss_bytes) AS rss_bytes
FROM per_sample
GROUP BY time, host, process
ORDER BY host, process, time
"""


def processes_over_time(
    con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime, host: str | None = None,
) -> pd.DataFrame:
    """[time, host, process, cpu_percent, rss_bytes] per time bucket and process name: the
    processes of one name summed per sample, then averaged over the bucket."""
    step = bucket_seconds(since, until)
    params = {"since": since, "until": until, "host": host, "bucket_s": step}
    df, _ = run_query(PROCESSES_OVER_TIME_SQL, params, con=con)
    df.attrs["bucket_seconds"] = step
    return df
