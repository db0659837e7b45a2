"""Latency percentiles: exact from raw events for short recent ranges, else from the log-bucket
histograms in tiers (`latency_hist` minutes, hours, days; dashboard.queries.tiers).

The percentile rule, the same as DuckDB's quantile_cont and numpy's default: with n requests, the
q-percentile sits at rank r = q * (n - 1) between the order statistics floor(r) and ceil(r), and is
interpolated between them.

- **Raw** when the range lies inside the raw retention and spans at most RAW_SPAN (3 h):
  quantile_cont over `request_events`, exact at any n. Three hours of raw events cost about what the
  same range's minute histograms do, and short ranges are where endpoints are sparse. An endpoint
  whose raw events were purged early (fewer than its rollups count) falls back to the histograms.
- **Histograms** otherwise: sum counts per (group, bucket), take the running total in bucket order,
  find the buckets holding order statistics floor(r) and ceil(r) (the first whose running total
  exceeds each), and interpolate between their representative values. Each representative value is
  within 0.99 % of every value in its bucket, so the result is within 0.99 % of quantile_cont at any
  n, sparse or dense (taking the floor(r) bucket alone was biased low: -28 % at n = 30). This is
  `collectors.store.histogram.quantile` written in SQL, so the dashboard, the CLI and the tests
  agree to the last bit."""
from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import pandas as pd

from collectors.store import utcnow
from collectors.store.histogram import VALUE_SQL
from collectors.store.retention import retention_days
from dashboard.queries._run import run_query
from dashboard.queries.tiers import LATENCY_ROWS, chart_step, tier_params

QUANTILES = ((0.50, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms"))
RAW_SPAN = timedelta(hours=3)   # ranges up to this long, inside the raw retention, read raw events


def _percentile_sql(q: float) -> str:
    rank = f"{q} * (CAST(max(total) AS DOUBLE) - 1)"
    lower = VALUE_SQL.format(col=f"min(bucket) FILTER (WHERE cum > floor({q} * (CAST(total AS DOUBLE) - 1)))")
    upper = VALUE_SQL.format(col=f"min(bucket) FILTER (WHERE cum > ceil({q} * (CAST(total AS DOUBLE) - 1)))")
    return f"{lower} + ({rank} - floor({rank})) * ({upper} - {lower})"


# Built from code constants only (never from values): the three percentile columns over a
# relation with columns (bucket, cum, total), grouped by the series.
PERCENTILE_COLUMNS = ",\n       ".join(f"{_percentile_sql(q)} AS {name}" for q, name in QUANTILES)
_RAW_QUANTILES = "[" + ", ".join(str(q) for q, _ in QUANTILES) + "]"
_RAW_COLUMNS = ",\n       ".join(f"p[{i}] AS {name}" for i, (_, name) in enumerate(QUANTILES, start=1))

ENDPOINT_PERCENTILES_SQL = f"""
WITH counts AS (
    SELECT service, endpoint, bucket, sum(count) AS n
    FROM ({LATENCY_ROWS})
    WHERE ($service IS NULL OR service = $service)
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

# Exact percentiles from raw events, beside what the histograms count in the range's whole minutes:
# raw events hold at least that much unless they were purged early (then the histograms answer).
RAW_SUMMARY_SQL = f"""
WITH raw AS (
    SELECT service, endpoint, count(*) AS n, quantile_cont(duration_ms, {_RAW_QUANTILES}) AS p
    FROM request_events
    WHERE ts >= $since
      AND ts < $until
      AND ($service IS NULL OR service = $service)
    GROUP BY service, endpoint
),
hist AS (
    SELECT service, endpoint, sum(count) AS n
    FROM latency_hist
    WHERE minute >= $whole_since
      AND minute < $whole_until
      AND ($service IS NULL OR service = $service)
    GROUP BY service, endpoint
)
SELECT service,
       endpoint,
       CAST(coalesce(raw.n, 0) AS BIGINT) AS raw_n,
       CAST(coalesce(hist.n, 0) AS BIGINT) AS whole_minutes_n,
       {_RAW_COLUMNS}
FROM raw
FULL OUTER JOIN hist USING (service, endpoint)
"""


def raw_summary(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime,
                service: str | None = None) -> pd.DataFrame:
    """[service, endpoint, raw_n, whole_minutes_n, p50_ms, p95_ms, p99_ms]: exact percentiles of the raw
    events in [since, until) and how many requests the histograms hold in its whole minutes."""
    whole_since, whole_until = _whole_minutes(since, until)
    df, _ = run_query(RAW_SUMMARY_SQL, {"since": since, "until": until, "service": service,
                                        "whole_since": whole_since, "whole_until": whole_until},
                      max_rows=1_000_000, con=con)
    return df


def _busiest_first(df: pd.DataFrame) -> pd.DataFrame:
    return df.sort_values(["requests", "service", "endpoint"], ascending=[False, True, True], ignore_index=True)


def _whole_minutes(since: datetime, until: datetime) -> tuple[datetime, datetime]:
    """The minutes that lie wholly inside [since, until)."""
    start = since.replace(second=0, microsecond=0)
    return (start if start == since else start + timedelta(minutes=1)), until.replace(second=0, microsecond=0)


def reads_raw(since: datetime, until: datetime, now: datetime | None = None) -> bool:
    """Whether percentiles over [since, until) come from raw events (see the module doc)."""
    now = now or utcnow()
    return until - since <= RAW_SPAN and since >= now - timedelta(days=retention_days()["raw"])


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
    if not reads_raw(since, until):
        df, _ = run_query(ENDPOINT_PERCENTILES_SQL, params | tier_params(con, since, until), max_rows=max_rows, con=con)
        return df
    summary = raw_summary(con, since=since, until=until, service=service)
    complete = summary["raw_n"] >= summary["whole_minutes_n"]
    raw = summary.drop(columns="whole_minutes_n").rename(columns={"raw_n": "requests"})
    if complete.all():
        return _busiest_first(raw).iloc[:max_rows]
    hist, _ = run_query(ENDPOINT_PERCENTILES_SQL, params | tier_params(con, since, until), max_rows=max_rows, con=con)
    exact = raw[complete]
    rest = hist[~hist.set_index(["service", "endpoint"]).index.isin(exact.set_index(["service", "endpoint"]).index)]
    return _busiest_first(pd.concat([exact, rest], ignore_index=True)).iloc[:max_rows]


LATENCY_OVER_TIME_SQL = f"""
WITH counts AS (
    SELECT time_bucket(to_seconds(CAST($bucket_s AS BIGINT)), time) AS time, bucket, sum(count) AS n
    FROM ({LATENCY_ROWS})
    WHERE ($service IS NULL OR service = $service)
      AND ($endpoint IS NULL OR endpoint = $endpoint)
    GROUP BY ALL
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

# Empty unless the raw events hold at least what the rollups count in the whole minutes.
RAW_LATENCY_OVER_TIME_SQL = f"""
WITH raw AS (
    SELECT time_bucket(to_seconds(CAST($bucket_s AS BIGINT)), ts) AS time,
           count(*) AS requests,
           quantile_cont(duration_ms, {_RAW_QUANTILES}) AS p
    FROM request_events
    WHERE ts >= $since
      AND ts < $until
      AND ($service IS NULL OR service = $service)
      AND ($endpoint IS NULL OR endpoint = $endpoint)
    GROUP BY ALL
),
rolled AS (
    SELECT coalesce(sum(requests), 0) AS requests
    FROM request_rollup
    WHERE minute >= $whole_since
      AND minute < $whole_until
      AND ($service IS NULL OR service = $service)
      AND ($endpoint IS NULL OR endpoint = $endpoint)
)
SELECT time,
       CAST(requests AS BIGINT) AS requests,
       {_RAW_COLUMNS}
FROM raw
WHERE (SELECT sum(requests) FROM raw) >= (SELECT requests FROM rolled)
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
    """[time, requests, p50_ms, p95_ms, p99_ms] per time bucket (width from `tiers.chart_step`),
    merged over all matching endpoints. `time` is the bucket start, naive UTC."""
    step = chart_step(since, until)
    params = {"since": since, "until": until, "service": service, "endpoint": endpoint, "bucket_s": step}
    df = None
    if reads_raw(since, until):
        whole_since, whole_until = _whole_minutes(since, until)
        df, _ = run_query(RAW_LATENCY_OVER_TIME_SQL, params | {"whole_since": whole_since, "whole_until": whole_until},
                          con=con)
    if df is None or df.empty:
        df, _ = run_query(LATENCY_OVER_TIME_SQL, params | tier_params(con, since, until, step=step), con=con)
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
