"""App caches (`cache_stats`, from the SDK) and Redis instances (`redis_metrics`, `redis_slowlog`);
Redis in depth (namespaces, types, biggest keys, commands, clients) is in `dashboard.queries.redis`.

Hit rates are always sum(hits) / sum(hits + misses) over the bucket or range, never an average of
ratios; a bucket without lookups has no hit rate at all (no row), never a made-up 100 %."""
from __future__ import annotations

from datetime import datetime

import duckdb
import pandas as pd

from dashboard.queries._run import bucket_seconds, run_query

APP_CACHE_SUMMARY_SQL = """
SELECT service,
       cache,
       CAST(sum(hits) AS BIGINT) AS hits,
       CAST(sum(misses) AS BIGINT) AS misses,
       CAST(sum(hits + misses) AS BIGINT) AS lookups,
       sum(hits) / nullif(sum(hits + misses), 0) AS hit_rate,
       sum(lookup_ms_sum) / nullif(sum(lookups_timed), 0) AS mean_lookup_ms,
       max(lookup_ms_max) AS max_lookup_ms
FROM cache_stats
WHERE minute >= $since
  AND minute < $until
  AND ($service IS NULL OR service = $service)
GROUP BY service, cache
ORDER BY lookups DESC, service, cache
"""


def app_cache_summary(
    con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime, service: str | None = None,
) -> pd.DataFrame:
    """[service, cache, hits, misses, lookups, hit_rate, mean_lookup_ms, max_lookup_ms] per app cache
    over the range, busiest first. hit_rate is a fraction, NULL without lookups."""
    params = {"since": since, "until": until, "service": service}
    df, _ = run_query(APP_CACHE_SUMMARY_SQL, params, max_rows=1_000, con=con)
    return df


APP_CACHE_NAMESPACES_SQL = """
SELECT service,
       cache,
       coalesce(namespace, '(none)') AS namespace,
       CAST(sum(hits) AS BIGINT) AS hits,
       CAST(sum(misses) AS BIGINT) AS misses,
       sum(hits) / nullif(sum(hits + misses), 0) AS hit_rate,
       sum(lookup_ms_sum) / nullif(sum(lookups_timed), 0) AS mean_lookup_ms
FROM cache_stats
WHERE minute >= $since
  AND minute < $until
  AND ($service IS NULL OR service = $service)
GROUP BY service, cache, namespace
ORDER BY sum(hits + misses) DESC, service, cache, namespace
"""


def app_cache_namespaces(
    con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime, service: str | None = None,
) -> pd.DataFrame:
    """[service, cache, namespace, hits, misses, hit_rate, mean_lookup_ms] per cache namespace."""
    params = {"since": since, "until": until, "service": service}
    df, _ = run_query(APP_CACHE_NAMESPACES_SQL, params, max_rows=1_000, con=con)
    return df


APP_CACHE_OVER_TIME_SQL = """
WITH buckets AS (
    SELECT time_bucket(to_seconds(CAST($bucket_s AS BIGINT)), minute) AS time,
           service,
           cache,
           sum(hits) AS hits,
           sum(hits + misses) AS lookups,
           sum(lookup_ms_sum) AS lookup_ms_sum,
           sum(lookups_timed) AS lookups_timed,
           max(lookup_ms_max) AS max_lookup_ms
    FROM cache_stats
    WHERE minute >= $since
      AND minute < $until
      AND ($service IS NULL OR service = $service)
    GROUP BY time, service, cache
    HAVING sum(hits + misses) > 0
)
SELECT time,
       service,
       cache,
       CAST(lookups AS BIGINT) AS lookups,
       hits / lookups AS hit_rate,
       -- A bucket cut by the range edges is divided by the part covered (as traffic_over_time does).
       lookups / greatest(
           epoch(least(time + to_seconds(CAST($bucket_s AS BIGINT)), $until)) - epoch(greatest(time, $since)),
           1
       ) AS lookups_per_s,
       lookup_ms_sum / nullif(lookups_timed, 0) AS mean_lookup_ms,
       max_lookup_ms
FROM buckets
ORDER BY service, cache, time
"""


def app_cache_over_time(
    con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime, service: str | None = None,
) -> pd.DataFrame:
    """[time, service, cache, lookups, hit_rate, lookups_per_s, mean_lookup_ms, max_lookup_ms] per
    time bucket (width from `bucket_seconds`) and cache; buckets without lookups are left out."""
    step = bucket_seconds(since, until)
    params = {"since": since, "until": until, "service": service, "bucket_s": step}
    df, _ = run_query(APP_CACHE_OVER_TIME_SQL, params, con=con)
    df.attrs["bucket_seconds"] = step
    return df


# Rates are per second over equal sampler intervals, so summing them over a bucket weighs every
# interval alike: sum(hits/s) / sum((hits+misses)/s) is sum(hits) / sum(lookups).
REDIS_OVER_TIME_SQL = """
SELECT time_bucket(to_seconds(CAST($bucket_s AS BIGINT)), ts) AS time,
       instance,
       sum(value) FILTER (WHERE name = 'redis.hits_per_sec')
           / nullif(sum(value) FILTER (WHERE name IN ('redis.hits_per_sec', 'redis.misses_per_sec')), 0)
           AS hit_rate,
       avg(value) FILTER (WHERE name = 'redis.ops_per_sec') AS ops_per_sec,
       avg(value) FILTER (WHERE name = 'redis.used_memory') AS used_memory,
       max(value) FILTER (WHERE name = 'redis.used_memory_peak') AS used_memory_peak,
       nullif(max(value) FILTER (WHERE name = 'redis.maxmemory'), 0) AS maxmemory,
       avg(value) FILTER (WHERE name = 'redis.evicted_per_sec') AS evicted_per_sec,
       avg(value) FILTER (WHERE name = 'redis.expired_per_sec') AS expired_per_sec,
       avg(value) FILTER (WHERE name = 'redis.connected_clients') AS connected_clients
FROM redis_metrics
WHERE ts >= $since
  AND ts < $until
  AND ($instance IS NULL OR instance = $instance)
  AND name IN ('redis.hits_per_sec', 'redis.misses_per_sec', 'redis.ops_per_sec', 'redis.used_memory',
               'redis.used_memory_peak', 'redis.maxmemory', 'redis.evicted_per_sec',
               'redis.expired_per_sec', 'redis.connected_clients')
GROUP BY time, instance
ORDER BY instance, time
"""


def redis_over_time(
    con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime, instance: str | None = None,
) -> pd.DataFrame:
    """[time, instance, hit_rate, ops_per_sec, used_memory, used_memory_peak, maxmemory,
    evicted_per_sec, expired_per_sec, connected_clients] per time bucket and Redis instance.
    hit_rate is NULL in buckets without lookups; maxmemory is NULL when there is no limit."""
    step = bucket_seconds(since, until)
    params = {"since": since, "until": until, "instance": instance, "bucket_s": step}
    df, _ = run_query(REDIS_OVER_TIME_SQL, params, con=con)
    df.attrs["bucket_seconds"] = step
    return df


REDIS_SUMMARY_SQL = """
WITH latest AS (
    SELECT instance, name, arg_max(value, ts) AS value, max(ts) AS ts
    FROM redis_metrics
    WHERE ts >= $since
      AND ts < $until
      AND labels = ''
      AND name IN ('redis.used_memory', 'redis.used_memory_peak', 'redis.maxmemory',
                   'redis.mem_fragmentation_ratio', 'redis.connected_clients', 'redis.dbsize')
    GROUP BY instance, name
),
rates AS (
    SELECT instance,
           sum(value) FILTER (WHERE name = 'redis.hits_per_sec')
               / nullif(sum(value) FILTER (WHERE name IN ('redis.hits_per_sec', 'redis.misses_per_sec')), 0)
               AS hit_rate,
           avg(value) FILTER (WHERE name = 'redis.ops_per_sec') AS ops_per_sec,
           avg(value) FILTER (WHERE name = 'redis.evicted_per_sec') AS evicted_per_sec
    FROM redis_metrics
    WHERE ts >= $since
      AND ts < $until
      AND name IN ('redis.hits_per_sec', 'redis.misses_per_sec', 'redis.ops_per_sec', 'redis.evicted_per_sec')
    GROUP BY instance
)
SELECT l.instance,
       r.hit_rate,
       r.ops_per_sec,
       r.evicted_per_sec,
       max(l.value) FILTER (WHERE l.name = 'redis.used_memory') AS used_memory,
       max(l.value) FILTER (WHERE l.name = 'redis.used_memory_peak') AS used_memory_peak,
       nullif(max(l.value) FILTER (WHERE l.name = 'redis.maxmemory'), 0) AS maxmemory,
       max(l.value) FILTER (WHERE l.name = 'redis.mem_fragmentation_ratio') AS mem_fragmentation_ratio,
       CAST(max(l.value) FILTER (WHERE l.name = 'redis.connected_clients') AS BIGINT) AS connected_clients,
       CAST(max(l.value) FILTER (WHERE l.name = 'redis.dbsize') AS BIGINT) AS keys,
       max(l.ts) AS last_sample
FROM latest AS l
LEFT JOIN rates AS r USING (instance)
GROUP BY l.instance, r.hit_rate, r.ops_per_sec, r.evicted_per_sec
ORDER BY l.instance
"""


def redis_summary(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime) -> pd.DataFrame:
    """One row per Redis instance sampled in the range: [instance, hit_rate (sum/sum over the
    range), ops_per_sec, evicted_per_sec (means), used_memory, used_memory_peak, maxmemory,
    mem_fragmentation_ratio, connected_clients, keys (latest values), last_sample]."""
    df, _ = run_query(REDIS_SUMMARY_SQL, {"since": since, "until": until}, max_rows=500, con=con)
    return df


SLOWLOG_SQL = """
SELECT ts, instance, duration_us / 1000.0 AS duration_ms, command, client
FROM redis_slowlog
WHERE ts >= $since
  AND ts < $until
ORDER BY duration_us DESC, ts DESC
"""


def redis_slowlog(
    con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime, max_rows: int = 500,
) -> pd.DataFrame:
    """[ts, instance, duration_ms, command, client] of SLOWLOG entries in the range, slowest first."""
    df, _ = run_query(SLOWLOG_SQL, {"since": since, "until": until}, max_rows=max_rows, con=con)
    return df
