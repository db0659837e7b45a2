"""Redis in depth (`redis_metrics`, written by `collectors.samplers.redis`): memory by namespace and by
data type, the biggest keys, per-command statistics and the connected clients.

The keyspace sample reads the next part of the keyspace at each interval (a SCAN cursor kept between
samples). Memory by namespace and by type therefore come from one *pass* of the cursor over the
keyspace, not one sample: the latest complete pass in the range (its samples summed and scaled by
DBSIZE / the keys the pass sampled, so every key counts once), or, when the range holds none, the
pass under way. `redis_sample_coverage` says which pass and what share of the keys and memory it saw.
Samples written before passes were recorded count as passes of one sample each.

Key and client names are label values escaped by `collectors.samplers.redis_keys.labels()`; they are
parsed back here (`parse_labels`), in Python, never by splitting in SQL."""
from __future__ import annotations

from datetime import datetime

import duckdb
import pandas as pd

from collectors.samplers.redis_keys import SAMPLER_CLIENT_NAME, parse_labels
from dashboard.queries._run import run_query
from dashboard.queries.samplers import label_sql

# One row per keyspace sample, its pass, and the pass chosen per instance (see the module's doc).
_PASS_CTES = """
samples AS (
    SELECT instance,
           ts,
           coalesce(max(value) FILTER (WHERE name = 'redis.scan_pass'), epoch(ts)) AS pass,
           coalesce(max(value) FILTER (WHERE name = 'redis.scan_wrapped'), 0) > 0 AS wrapped,
           max(value) FILTER (WHERE name = 'redis.sample_keys') AS sample_keys,
           max(value) FILTER (WHERE name = 'redis.sample_bytes') AS sample_bytes,
           max(value) FILTER (WHERE name = 'redis.dbsize') AS dbsize,
           max(value) FILTER (WHERE name = 'redis.used_memory_dataset') AS dataset
    FROM redis_metrics
    WHERE ts >= $since
      AND ts < $until
      AND name IN ('redis.scan_pass', 'redis.scan_wrapped', 'redis.sample_keys', 'redis.sample_bytes',
                   'redis.dbsize', 'redis.used_memory_dataset', 'redis.ns_sampled_keys')
    GROUP BY instance, ts
    HAVING count(*) FILTER (WHERE name IN ('redis.scan_pass', 'redis.ns_sampled_keys')) > 0
),
passes AS (
    SELECT instance,
           pass,
           min(ts) AS first_sample,
           max(ts) AS last_sample,
           count(*) AS samples,
           -- complete: the cursor came back to 0, and the pass began inside the range
           bool_or(wrapped) AND pass >= epoch($since) AS complete,
           sum(sample_keys) AS sampled_keys,
           sum(sample_bytes) AS sampled_bytes,
           arg_max(dbsize, ts) AS dbsize,
           avg(dataset) AS dataset
    FROM samples
    GROUP BY instance, pass
),
chosen AS (
    SELECT *
    FROM passes
    QUALIFY row_number() OVER (PARTITION BY instance ORDER BY complete DESC, last_sample DESC) = 1
),
pass_samples AS (
    SELECT s.instance, s.ts, c.samples, c.sampled_keys AS pass_keys, c.dbsize AS pass_dbsize
    FROM samples AS s
    JOIN chosen AS c ON s.instance = c.instance AND s.pass = c.pass
)
"""

# A pass's estimate: its sampled bytes scaled by DBSIZE / the keys the whole pass sampled (samples of a
# pass need not be of one size: the last one is what is left before the cursor wraps). Rows from before
# the sample's totals were recorded: the mean of the samples' own estimates.
_ESTIMATE = """CASE WHEN any_value(pass_keys) > 0 AND count(sampled_bytes) > 0
            THEN sum(sampled_bytes) * any_value(pass_dbsize) / any_value(pass_keys)
            ELSE sum(estimated_bytes) / any_value(samples) END"""

COVERAGE_SQL = f"""
WITH {_PASS_CTES}
SELECT instance,
       first_sample,
       last_sample,
       samples,
       complete,
       CAST(sampled_keys AS BIGINT) AS sampled_keys,
       CAST(dbsize AS BIGINT) AS dbsize,
       least(sampled_keys / nullif(dbsize, 0), 1.0) AS key_share,
       sampled_bytes,
       least(sampled_bytes / nullif(dataset, 0), 1.0) AS memory_share
FROM chosen
ORDER BY instance
"""


def redis_sample_coverage(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime) -> pd.DataFrame:
    """Which pass of the keyspace sample the namespace and type tables show, per instance: [instance,
    first_sample, last_sample, samples, complete, sampled_keys, dbsize, key_share (sampled / DBSIZE),
    sampled_bytes, memory_share (sampled bytes / used_memory_dataset)]. Shares are at most 1 and NULL
    when not known (samples from before they were recorded)."""
    df, _ = run_query(COVERAGE_SQL, {"since": since, "until": until}, max_rows=500, con=con)
    return df


REDIS_NAMESPACES_SQL = f"""
WITH {_PASS_CTES},
per_sample AS (
    SELECT m.instance,
           m.ts,
           {label_sql("ns", rest=True)} AS namespace,
           max(m.value) FILTER (WHERE m.name = 'redis.ns_estimated_bytes') AS estimated_bytes,
           max(m.value) FILTER (WHERE m.name = 'redis.ns_sampled_bytes') AS sampled_bytes,
           max(m.value) FILTER (WHERE m.name = 'redis.ns_sampled_keys') AS sampled_keys,
           max(m.value) FILTER (WHERE m.name = 'redis.ns_ttl_share') AS ttl_share,
           max(m.value) FILTER (WHERE m.name = 'redis.ns_mean_ttl_sec') AS mean_ttl_sec,
           any_value(p.samples) AS samples,
           any_value(p.pass_keys) AS pass_keys,
           any_value(p.pass_dbsize) AS pass_dbsize
    FROM redis_metrics AS m
    JOIN pass_samples AS p USING (instance, ts)
    WHERE m.name IN ('redis.ns_estimated_bytes', 'redis.ns_sampled_bytes', 'redis.ns_sampled_keys',
                     'redis.ns_ttl_share', 'redis.ns_mean_ttl_sec')
    GROUP BY m.instance, m.ts, namespace
)
SELECT instance,
       namespace,
       {_ESTIMATE} AS estimated_bytes,
       CAST(sum(sampled_keys) AS BIGINT) AS sampled_keys,
       sum(ttl_share * sampled_keys) / nullif(sum(sampled_keys), 0) AS ttl_share,
       sum(mean_ttl_sec * ttl_share * sampled_keys)
           / nullif(sum(ttl_share * sampled_keys) FILTER (WHERE mean_ttl_sec IS NOT NULL), 0) AS mean_ttl_sec,
       max(ts) AS sampled_at
FROM per_sample
GROUP BY instance, namespace
ORDER BY instance, estimated_bytes DESC NULLS LAST, namespace
"""


def redis_namespaces(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime) -> pd.DataFrame:
    """Memory by key namespace over each instance's chosen pass of the keyspace sample (see the
    module's doc): [instance, namespace, estimated_bytes, sampled_keys, ttl_share, mean_ttl_sec,
    sampled_at], largest first within an instance."""
    df, _ = run_query(REDIS_NAMESPACES_SQL, {"since": since, "until": until}, max_rows=2_000, con=con)
    return df


TYPES_SQL = f"""
WITH {_PASS_CTES},
per_sample AS (
    SELECT m.instance, m.ts, m.labels,
           max(m.value) FILTER (WHERE m.name = 'redis.type_estimated_bytes') AS estimated_bytes,
           max(m.value) FILTER (WHERE m.name = 'redis.type_sampled_keys') AS sampled_keys,
           max(m.value) FILTER (WHERE m.name = 'redis.type_sampled_bytes') AS sampled_bytes,
           any_value(p.samples) AS samples,
           any_value(p.pass_keys) AS pass_keys,
           any_value(p.pass_dbsize) AS pass_dbsize
    FROM redis_metrics AS m
    JOIN pass_samples AS p USING (instance, ts)
    WHERE m.name IN ('redis.type_estimated_bytes', 'redis.type_sampled_keys', 'redis.type_sampled_bytes')
    GROUP BY m.instance, m.ts, m.labels
),
types AS (
    SELECT instance,
           labels,
           {_ESTIMATE} AS estimated_bytes,
           CAST(sum(sampled_keys) AS BIGINT) AS sampled_keys,
           sum(sampled_bytes) AS sampled_bytes,
           max(ts) AS sampled_at
    FROM per_sample
    GROUP BY instance, labels
)
SELECT instance, labels, estimated_bytes, sampled_keys, sampled_bytes,
       estimated_bytes / nullif(sum(estimated_bytes) OVER (PARTITION BY instance), 0) AS share,
       sampled_at
FROM types
ORDER BY instance, estimated_bytes DESC, labels
"""


def redis_memory_by_type(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime) -> pd.DataFrame:
    """Memory by data type (string, list, hash, set, zset, stream, ...) over each instance's chosen pass:
    [instance, type, estimated_bytes (to the whole keyspace), sampled_keys, sampled_bytes, share (of
    the estimated key memory), sampled_at], largest first within an instance."""
    df, _ = run_query(TYPES_SQL, {"since": since, "until": until}, max_rows=500, con=con)
    df.insert(1, "type", [parse_labels(text).get("type", "") for text in df["labels"]])
    return df.drop(columns="labels")


BIGGEST_KEYS_SQL = """
WITH latest AS (
    SELECT instance, max(ts) AS ts
    FROM redis_metrics
    WHERE ts >= $since
      AND ts < $until
      AND name = 'redis.key_bytes'
    GROUP BY instance
),
dataset AS (
    SELECT m.instance, max(m.value) AS dataset
    FROM redis_metrics AS m
    JOIN latest USING (instance, ts)
    WHERE m.name = 'redis.used_memory_dataset'
    GROUP BY m.instance
)
SELECT m.instance, m.labels, m.value AS bytes, m.value / nullif(d.dataset, 0) AS share, m.ts AS sampled_at
FROM redis_metrics AS m
JOIN latest USING (instance, ts)
LEFT JOIN dataset AS d USING (instance)
WHERE m.name = 'redis.key_bytes'
ORDER BY m.instance, bytes DESC, m.labels
"""


def redis_biggest_keys(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime) -> pd.DataFrame:
    """The running top keys by MEMORY USAGE at each instance's latest sample in the range: [instance,
    key, type, bytes, share (of used_memory_dataset), sampled_at], biggest first. Key names are text
    as recorded (cut at 200 characters), unescaped."""
    df, _ = run_query(BIGGEST_KEYS_SQL, {"since": since, "until": until}, max_rows=2_000, con=con)
    parsed = [parse_labels(text) for text in df["labels"]]
    df.insert(1, "key", [p.get("key", "") for p in parsed])
    df.insert(2, "type", [p.get("type", "") for p in parsed])
    return df.drop(columns="labels")


COMMANDS_SQL = f"""
SELECT instance,
       {label_sql("cmd")} AS command,
       CAST(sum(value) FILTER (WHERE name = 'redis.cmd_calls') AS BIGINT) AS calls,
       avg(value) FILTER (WHERE name = 'redis.cmd_calls_per_sec') AS calls_per_sec,
       sum(value) FILTER (WHERE name = 'redis.cmd_usec')
           / nullif(sum(value) FILTER (WHERE name = 'redis.cmd_calls'), 0) AS usec_per_call,
       sum(value) FILTER (WHERE name = 'redis.cmd_usec') / 1000.0 AS total_ms
FROM redis_metrics
WHERE ts >= $since
  AND ts < $until
  AND name IN ('redis.cmd_calls', 'redis.cmd_usec', 'redis.cmd_calls_per_sec')
GROUP BY instance, command
HAVING sum(value) FILTER (WHERE name = 'redis.cmd_calls') > 0
"""
COMMANDS_ORDERED_SQL = f"""
WITH c AS ({COMMANDS_SQL})
SELECT *, total_ms / nullif(sum(total_ms) OVER (PARTITION BY instance), 0) AS time_share
FROM c
ORDER BY instance, total_ms DESC, command
"""


def redis_commands(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime) -> pd.DataFrame:
    """INFO commandstats per command over the range, the sampler's own commands left out: [instance,
    command, calls, calls_per_sec (mean over the samples), usec_per_call, total_ms, time_share (of the
    instance's command time)], most total time first. Commands not called in the range are left out."""
    df, _ = run_query(COMMANDS_ORDERED_SQL, {"since": since, "until": until}, max_rows=2_000, con=con)
    return df


CLIENTS_SQL = """
WITH latest AS (
    SELECT instance, max(ts) AS ts
    FROM redis_metrics
    WHERE ts >= $since
      AND ts < $until
      AND name = 'redis.clients'
    GROUP BY instance
)
SELECT m.instance,
       m.labels,
       CAST(max(m.value) FILTER (WHERE m.name = 'redis.clients') AS BIGINT) AS connections,
       1000 * max(m.value) FILTER (WHERE m.name = 'redis.clients_oldest_sec') AS oldest_ms,
       1000 * max(m.value) FILTER (WHERE m.name = 'redis.clients_idle_min_sec') AS idle_min_ms,
       1000 * max(m.value) FILTER (WHERE m.name = 'redis.clients_idle_max_sec') AS idle_max_ms,
       m.ts AS sampled_at
FROM redis_metrics AS m
JOIN latest USING (instance, ts)
WHERE m.name IN ('redis.clients', 'redis.clients_oldest_sec', 'redis.clients_idle_min_sec',
                 'redis.clients_idle_max_sec')
GROUP BY m.instance, m.labels, m.ts
ORDER BY m.instance, connections DESC, m.labels
"""


def redis_clients(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime) -> pd.DataFrame:
    """CLIENT LIST at each instance's latest sample, summed up by client name, host and current command:
    [instance, name, host, command, perfdeck (True for perfdeck's own connections), connections,
    oldest_ms (age of the oldest), idle_min_ms, idle_max_ms (least and most idle), sampled_at], most
    connections first. Ages are whole seconds, as CLIENT LIST gives them."""
    df, _ = run_query(CLIENTS_SQL, {"since": since, "until": until}, max_rows=2_000, con=con)
    parsed = [parse_labels(text) for text in df["labels"]]
    df.insert(1, "name", [p.get("name", "") for p in parsed])
    df.insert(2, "host", [p.get("host", "") for p in parsed])
    df.insert(3, "command", [p.get("cmd", "") for p in parsed])
    df.insert(4, "perfdeck", [name == SAMPLER_CLIENT_NAME or name.startswith("perfdeck-") for name in df["name"]])
    return df.drop(columns="labels")
