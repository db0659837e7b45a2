"""Latency percentiles from the per-minute log-bucket histograms (`latency_hist`).

A percentile over any range or set of endpoints is: sum counts per (group, bucket), take the
running total in bucket order, pick the first bucket whose running total exceeds q * (total - 1),
and report that bucket's representative value. This is `collectors.store.histogram.quantile`
written in SQL, so the dashboard, the CLI and the tests agree to the last bucket."""
from __future__ import annotations

from datetime import datetime

import duckdb
import pandas as pd

from collectors.store.histogram import VALUE_SQL
from dashboard.queries._run import bucket_seconds, run_query

QUANTILES = ((0.50, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms"))

# Built from code constants only (never from values): the three percentile columns over a
# relation with columns (bucket, cum, total).
PERCENTILE_COLUMNS = ",\n       ".join(
    VALUE_SQL.format(col=f"min(bucket) FILTER (WHERE cum > {q} * (total - 1))") + f" AS {name}"
    for q, name in QUANTILES
)

ENDPOINT_PERCENTILES_SQL = f"""
WITH counts AS (
    SELECT service, endpoint, bucket, sum(count) AS n
    FROM latency_hist
    WHERE minute >= $since
      AND minute < $until
      AND ($service IS NULL OR service = $service)
    GROUP BY service, endpoint, bucket
),
cumulative AS (
    SELECT service, endpoint, bucket,
           sum(n) OVER (PARTITION BY service, endpoint ORDER BY bucket) AS cum,
           sum(n) OVER (PARTITION BY service, endpoint) AS total
    FROM counts
)
SELECT service,
       endpoint,
       CAST(max(total) AS BIGINT) AS requests,
       {PERCENTILE_COLUMNS}
FROM cumulative
GROUP BY service, endpoint
ORDER BY requests DESC, service, endpoint
"""


def endpoint_percentiles(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime,
    until: datetime,
    service: str | None = None,
    max_rows: int = 1_000,
) -> pd.DataFrame:
    """[service, endpoint, requests, p50_ms, p95_ms, p99_ms] per endpoint in [since, until),
    busiest first. Also used by `perfdeck export latency`: keep the name and columns."""
    params = {"since": since, "until": until, "service": service}
    df, _ = run_query(ENDPOINT_PERCENTILES_SQL, params, max_rows=max_rows, con=con)
    return df


LATENCY_OVER_TIME_SQL = f"""
WITH counts AS (
    SELECT time_bucket(to_seconds(CAST($bucket_s AS BIGINT)), minute) AS time, bucket, sum(count) AS n
    FROM latency_hist
    WHERE minute >= $since
      AND minute < $until
      AND ($service IS NULL OR service = $service)
      AND ($endpoint IS NULL OR endpoint = $endpoint)
    GROUP BY time, bucket
),
cumulative AS (
    SELECT time, bucket,
           sum(n) OVER (PARTITION BY time ORDER BY bucket) AS cum,
           sum(n) OVER (PARTITION BY time) AS total
    FROM counts
)
SELECT time,
       CAST(max(total) AS BIGINT) AS requests,
       {PERCENTILE_COLUMNS}
FROM cumulative
GROUP BY time
ORDER BY time
"""


def latency_over_time(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime,
    until: datetime,
    service: str | None = None,
    endpoint: str | None = None,
) -> pd.DataFrame:
    """[time, requests, p50_ms, p95_ms, p99_ms] per time bucket (width from `bucket_seconds`),
    merged over all matching endpoints. `time` is the bucket start, naive UTC."""
    step = bucket_seconds(since, until)
    params = {"since": since, "until": until, "service": service, "endpoint": endpoint, "bucket_s": step}
    df, _ = run_query(LATENCY_OVER_TIME_SQL, params, con=con)
    df.attrs["bucket_seconds"] = step
    return df


def typical_percentiles(endpoints: pd.DataFrame, mix: pd.DataFrame | None = None) -> pd.Series:
    """p50/p95/p99 of a typical request, from `endpoint_percentiles` rows: each endpoint's percentile
    weighted by its share of the requests. A pooled p50 flips between a fast and a slow endpoint as
    the traffic mix moves; this moves only when endpoints get faster or slower, or busier.

    With `mix` (another period's `endpoint_percentiles`), its requests are the weights: the previous
    period judged with this period's traffic mix, so the change between the two is latency alone.
    Endpoints in only one of the two are left out."""
    columns = [name for _, name in QUANTILES]
    weights = endpoints if mix is None else endpoints.drop(columns="requests").merge(
        mix[["service", "endpoint", "requests"]], on=["service", "endpoint"])
    weights = weights.dropna(subset=columns)
    if weights.empty or not weights["requests"].sum():
        return pd.Series(float("nan"), index=columns)
    share = weights["requests"] / weights["requests"].sum()
    return weights[columns].mul(share, axis=0).sum()
