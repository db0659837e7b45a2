"""Request and error counts from the request rollups (minutes, hours and days: the coarsest tier that
resolves the range, dashboard.queries.tiers), plus the headline totals."""
from __future__ import annotations

from datetime import datetime

import duckdb
import pandas as pd

from dashboard.queries._run import run_query
from dashboard.queries.latency import PERCENTILE_COLUMNS
from dashboard.queries.tiers import LATENCY_ROWS, ROLLUP_ROWS, chart_step, tier_params

ENDPOINT_TRAFFIC_SQL = f"""
SELECT service,
       endpoint,
       CAST(sum(requests) AS BIGINT) AS requests,
       CAST(sum(errors) AS BIGINT) AS errors,
       sum(errors) / nullif(sum(requests), 0) AS error_rate
FROM ({ROLLUP_ROWS})
WHERE ($service IS NULL OR service = $service)
GROUP BY service, endpoint
ORDER BY requests DESC, service, endpoint
"""


def endpoint_traffic(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime,
    until: datetime,
    service: str | None = None,
    max_rows: int = 1_000,
) -> pd.DataFrame:
    """[service, endpoint, requests, errors, error_rate] per endpoint; error_rate is a fraction."""
    params = {"since": since, "until": until, "service": service} | tier_params(con, since, until)
    df, _ = run_query(ENDPOINT_TRAFFIC_SQL, params, max_rows=max_rows, con=con)
    return df


TRAFFIC_OVER_TIME_SQL = f"""
WITH buckets AS (
    SELECT time_bucket(to_seconds(CAST($bucket_s AS BIGINT)), time) AS time,
           sum(requests) AS requests,
           sum(errors) AS errors
    FROM ({ROLLUP_ROWS})
    WHERE ($service IS NULL OR service = $service)
    GROUP BY ALL
)
SELECT time,
       CAST(requests AS BIGINT) AS requests,
       CAST(errors AS BIGINT) AS errors,
       -- A bucket cut by the range edges (the current one, mostly) is divided by the part covered.
       requests / greatest(
           epoch(least(time + to_seconds(CAST($bucket_s AS BIGINT)), $until)) - epoch(greatest(time, $since)),
           1
       ) AS requests_per_s,
       errors / nullif(requests, 0) AS error_rate
FROM buckets
ORDER BY time
"""


def traffic_over_time(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime,
    until: datetime,
    service: str | None = None,
) -> pd.DataFrame:
    """[time, requests, errors, requests_per_s, error_rate] per time bucket (naive UTC)."""
    step = chart_step(since, until)
    params = {"since": since, "until": until, "service": service, "bucket_s": step}
    df, _ = run_query(TRAFFIC_OVER_TIME_SQL, params | tier_params(con, since, until, step=step), con=con)
    df.attrs["bucket_seconds"] = step
    return df


TOTALS_SQL = f"""
WITH traffic AS (
    SELECT sum(requests) AS requests, sum(errors) AS errors, min(time) AS first_minute
    FROM ({ROLLUP_ROWS})
    WHERE ($service IS NULL OR service = $service)
),
counts AS (
    SELECT bucket, sum(count) AS n
    FROM ({LATENCY_ROWS})
    WHERE ($service IS NULL OR service = $service)
    GROUP BY bucket
),
cumulative AS (
    SELECT bucket,
           sum(n) OVER (ORDER BY bucket) AS cum,
           sum(n) OVER () AS total
    FROM counts
),
latency AS (
    SELECT {PERCENTILE_COLUMNS}
    FROM cumulative
)
SELECT CAST(traffic.requests AS BIGINT) AS requests,
       CAST(traffic.errors AS BIGINT) AS errors,
       traffic.errors / traffic.requests AS error_rate,
       -- Per second of the range that has data: a 30-day view of a 3-day-old store is not idle.
       traffic.requests / greatest(epoch($until) - epoch(greatest($since, traffic.first_minute)), 60)
           AS requests_per_s,
       latency.p50_ms,
       latency.p95_ms,
       latency.p99_ms
FROM traffic, latency
WHERE traffic.requests > 0
"""


def totals(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime,
    until: datetime,
    service: str | None = None,
) -> pd.DataFrame:
    """One row [requests, errors, error_rate, requests_per_s, p50_ms, p95_ms, p99_ms] for the
    whole range, or no rows when nothing was recorded in it. requests_per_s averages over the part
    of the range since the first recorded minute (the start of its hour or day where the range's
    start is read from those tiers). The percentiles pool every request (histograms, interpolated)."""
    params = {"since": since, "until": until, "service": service} | tier_params(con, since, until)
    df, _ = run_query(TOTALS_SQL, params, con=con)
    return df
