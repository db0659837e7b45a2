"""What one request costs: the LLM spend of its calls, kept per request at ingest (`llm_requests`,
collectors.store.request_costs: calls and event joined by request id, whichever came first), plus its
share of the service's CPU when a $/core-hour is configured.

Every request of an endpoint counts, with or without an id: its recorded requests (the request
rollups, at the coarsest tier the range allows, so counted by whole minutes like every request count
on the pages) plus requests known only from their calls. Without a
$/core-hour nothing here reads raw events; with one, each request's compute share comes from the raw
events of its host and minute (kept RAW_DAYS)."""
from __future__ import annotations

from datetime import datetime

import duckdb
import pandas as pd

from dashboard.queries._run import run_query
from dashboard.queries.cost._common import JOIN_MARGIN, _params
from dashboard.queries.tiers import ROLLUP_ROWS, tier_params

# -- 5, 6, 7. requests ---------------------------------------------------------------------------------

# CPU seconds spent per (host, minute) by the watched processes: each process's average
# proc.cpu_percent over the minute (100 = one core) is that many cores for 60 s.
CORE_SECONDS_CTE = """
process_minutes AS (
    SELECT host, date_trunc('minute', ts) AS minute, labels, avg(value) / 100 AS cores
    FROM system_metrics
    WHERE name = 'proc.cpu_percent'
      AND ts >= $cpu_since
      AND ts < $cpu_until
    GROUP BY host, minute, labels
),
core_seconds AS (
    SELECT host, minute, sum(cores) * 60 AS core_seconds
    FROM process_minutes
    GROUP BY host, minute
)"""

# With compute priced: one row per request, its event (if any) full-outer-joined to its calls (if any).
# Both sides are read JOIN_MARGIN beyond the range ($wide_since, $wide_until), then each request is
# placed at its event's time, or its first call's when no event was recorded, so a request falls in
# exactly one range with all its calls, whichever side was stored first. Calls without a request_id
# are not here.
REQUESTS_CTE = """
events AS (
    -- One event per id: a client-sent id can repeat on a retry, and the first one stands. An event
    -- without an id is a request of its own.
    SELECT request_id, ts, service, host, endpoint, duration_ms
    FROM request_events
    WHERE ts >= $wide_since
      AND ts < $wide_until
    QUALIFY request_id IS NULL OR row_number() OVER (PARTITION BY request_id ORDER BY ts, endpoint) = 1
),
calls AS (
    SELECT request_id,
           min(ts) AS first_ts,
           arg_min(service, ts) AS service,
           arg_min(endpoint, ts) AS endpoint,
           min(user_id) AS user_id,
           count(*) AS calls,
           string_agg(DISTINCT model, ', ' ORDER BY model) AS models,
           sum(input_tokens) AS input_tokens,
           sum(output_tokens) AS output_tokens,
           coalesce(sum(cost_usd), 0) AS llm_usd
    FROM llm_calls
    WHERE request_id IS NOT NULL
      AND ts >= $wide_since
      AND ts < $wide_until
    GROUP BY request_id
),
requests AS (
    SELECT coalesce(e.request_id, c.request_id) AS request_id,
           coalesce(e.ts, c.first_ts) AS ts,
           coalesce(e.service, c.service) AS service,
           coalesce(e.endpoint, c.endpoint) AS endpoint,
           e.host,
           e.duration_ms,
           c.user_id,
           coalesce(c.calls, 0) AS calls,
           c.models,
           coalesce(c.input_tokens, 0) AS input_tokens,
           coalesce(c.output_tokens, 0) AS output_tokens,
           coalesce(c.llm_usd, 0) AS llm_usd
    FROM events AS e
    FULL OUTER JOIN calls AS c ON c.request_id = e.request_id
    WHERE coalesce(e.ts, c.first_ts) >= $since
      AND coalesce(e.ts, c.first_ts) < $until
      AND ($service IS NULL OR coalesce(e.service, c.service) = $service)
)"""

REQUEST_COSTS_WITH_COMPUTE_SQL = f"""
WITH {REQUESTS_CTE},
{CORE_SECONDS_CTE},
host_load AS (
    -- Every request served on the host in that minute shares its CPU, with or without an id.
    SELECT host, date_trunc('minute', ts) AS minute, count(*) AS events
    FROM request_events
    WHERE ts >= $wide_since
      AND ts < $wide_until
    GROUP BY host, minute
),
priced AS (
    SELECT r.service,
           r.endpoint,
           r.calls,
           r.llm_usd,
           -- Only a request with an event has a host; no rate given, no compute.
           coalesce(cs.core_seconds / l.events * CAST($usd_per_core_hour AS DOUBLE) / 3600, 0) AS compute_usd
    FROM requests AS r
    LEFT JOIN host_load AS l ON l.host = r.host AND l.minute = date_trunc('minute', r.ts)
    LEFT JOIN core_seconds AS cs ON cs.host = r.host AND cs.minute = date_trunc('minute', r.ts)
),
per_request AS (
    SELECT *, CAST(llm_usd AS DOUBLE) + compute_usd AS cost_usd
    FROM priced
),
-- Endpoints that never call an LLM are noise on a cost page.
llm_endpoints AS (
    SELECT service, endpoint
    FROM per_request
    GROUP BY service, endpoint
    HAVING sum(calls) > 0
)
SELECT {{keys}}
       count(*) AS requests,
       count(*) FILTER (WHERE calls > 0) AS llm_requests,
       sum(calls) / count(*) AS calls_per_request,
       avg(cost_usd) AS mean_usd,
       quantile_cont(cost_usd, 0.5) AS p50_usd,
       quantile_cont(cost_usd, 0.95) AS p95_usd,
       max(cost_usd) AS max_usd,
       CAST(sum(llm_usd) AS DOUBLE) + sum(compute_usd) AS total_usd,
       sum(compute_usd) AS compute_usd
FROM per_request
SEMI JOIN llm_endpoints USING (service, endpoint)
{{group}}
"""


def _request_params(since: datetime, until: datetime, service: str | None) -> dict:
    return {**_params(since, until, service), "wide_since": since - JOIN_MARGIN, "wide_until": until + JOIN_MARGIN}


# The percentiles are exact without sorting every request: costs are counted per ~0.5 % wide log
# bucket (a hash aggregate), the bucket holding each rank needed is found from the counts, and only
# the requests in those few buckets are sorted.
QUANTILE_COSTS = (0.5, 0.95)
COST_BUCKET = ("CASE WHEN llm_usd > 0 THEN CAST(floor(ln(CAST(llm_usd AS DOUBLE)) * 200) AS INTEGER) "
               "ELSE -2147483648 END")


# A range's percentile of a cost over `requests` requests of which the `priced` ones have a cost (the
# rest cost nothing): quantile_cont's interpolation between the values at ranks floor(r) and ceil(r),
# r = q * (requests - 1), the first `requests - priced` ranks being zeros. `cost_at` maps a rank among the
# priced requests (0 = the cheapest) to its cost. Built from code constants only.
def _percentile(q: float) -> str:
    rank = f"{q} * (p.requests - 1)"
    at = "CASE WHEN {0} < p.requests - p.priced THEN 0 ELSE cost_at[CAST({0} - (p.requests - p.priced) AS BIGINT)] END"
    return (f"CASE WHEN p.requests > 0 THEN {at.format(f'floor({rank})')} * (1 - ({rank} - floor({rank})))"
            f" + {at.format(f'ceil({rank})')} * ({rank} - floor({rank})) END")


_RANKS = ", ".join(f"floor({q} * (requests - 1)), ceil({q} * (requests - 1))" for q in QUANTILE_COSTS)

# Without compute: every figure from the per-request rows and the rollups' request counts, per group:
# (gs, ge) = the endpoint ({gs} = service, {ge} = endpoint), or '' and '' for every endpoint that made a call.
REQUEST_COSTS_SQL = f"""
WITH recorded AS (
    SELECT service, endpoint, sum(requests) AS requests
    FROM ({ROLLUP_ROWS})
    WHERE ($service IS NULL OR service = $service)
    GROUP BY service, endpoint
),
llm AS (
    -- a request whose calls name no endpoint and which has no event is in no endpoint: left out, as
    -- the query-time join leaves it
    SELECT {{gs}} AS gs, {{ge}} AS ge, service, endpoint, calls, has_event, CAST(llm_usd AS DOUBLE) AS usd,
           {COST_BUCKET} AS b
    FROM llm_requests
    WHERE ts >= $since
      AND ts < $until
      AND ($service IS NULL OR service = $service)
      AND endpoint IS NOT NULL
),
fine AS (
    -- one pass over the requests: per endpoint and cost bucket (the group follows from the endpoint)
    SELECT any_value(gs) AS gs, any_value(ge) AS ge, service, endpoint, b,
           count(*) AS n, count(*) FILTER (WHERE NOT has_event) AS unrecorded, sum(calls) AS calls,
           sum(usd) AS total, min(usd) AS lo, max(usd) AS hi
    FROM llm
    GROUP BY service, endpoint, b
),
per_endpoint AS (
    SELECT gs, ge, service, endpoint,
           sum(n) AS priced, sum(unrecorded) AS unrecorded, sum(calls) AS calls, sum(total) AS total,
           max(hi) AS max_usd
    FROM fine
    GROUP BY gs, ge, service, endpoint
),
p AS (
    SELECT gs, ge,
           CAST(sum(coalesce(r.requests, 0) + e.unrecorded) AS BIGINT) AS requests,
           CAST(sum(e.priced) AS BIGINT) AS priced,
           sum(e.calls) AS calls, sum(e.total) AS total, max(e.max_usd) AS max_usd
    FROM per_endpoint AS e
    LEFT JOIN recorded AS r USING (service, endpoint)
    GROUP BY gs, ge
),
buckets AS (
    SELECT gs, ge, b, n, lo, hi, sum(n) OVER (PARTITION BY gs, ge ORDER BY b) - n AS before
    FROM (SELECT gs, ge, b, sum(n) AS n, min(lo) AS lo, max(hi) AS hi FROM fine GROUP BY gs, ge, b)
),
ranks AS (
    -- the ranks among the priced requests the percentiles read, each with the bucket holding it
    SELECT DISTINCT r.gs, r.ge, r.k, b.b, b.lo, b.hi, CAST(r.k - b.before AS BIGINT) AS i
    FROM (SELECT gs, ge, CAST(unnest([{_RANKS}]) - (requests - priced) AS BIGINT) AS k FROM p) AS r
    JOIN buckets AS b ON b.gs = r.gs AND b.ge = r.ge AND r.k >= b.before AND r.k < b.before + b.n
),
picked AS (
    SELECT gs, ge, map(list(k), list(v)) AS cost_at
    FROM (
        -- a bucket of equal costs needs no sort
        SELECT gs, ge, k, lo AS v FROM ranks WHERE lo = hi
        UNION ALL
        SELECT r.gs, r.ge, r.k, list_sort(list(l.usd))[r.i + 1] AS v
        FROM ranks AS r
        JOIN llm AS l ON l.gs = r.gs AND l.ge = r.ge AND l.b = r.b
        WHERE r.lo < r.hi
        GROUP BY r.gs, r.ge, r.k, r.i
    )
    GROUP BY gs, ge
)
SELECT {{keys}}
       p.requests,
       p.priced AS llm_requests,
       p.calls / p.requests AS calls_per_request,
       p.total / p.requests AS mean_usd,
       {_percentile(0.5)} AS p50_usd,
       {_percentile(0.95)} AS p95_usd,
       p.max_usd,
       p.total AS total_usd,
       0.0 AS compute_usd
FROM p
LEFT JOIN picked USING (gs, ge)
{{order}}
"""
BY_ENDPOINT = {"gs": "service", "ge": "endpoint", "keys": "p.gs AS service, p.ge AS endpoint,",
               "order": "ORDER BY total_usd DESC, requests DESC, service, endpoint"}


def request_costs(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime,
    until: datetime,
    service: str | None = None,
    usd_per_core_hour: float | None = None,
) -> pd.DataFrame:
    """[service, endpoint, requests, llm_requests, calls_per_request, mean_usd, p50_usd, p95_usd,
    max_usd, total_usd, compute_usd] per endpoint that made at least one LLM call, costliest first.

    A request's cost is its LLM spend plus, when `usd_per_core_hour` is given, its share of the
    CPU its host's watched processes burnt in the minute of its event (split evenly over the
    requests served there in that minute). Requests with no LLM call count as $0 (plus compute);
    percentiles are exact (linear interpolation) over the requests of the endpoint."""
    if usd_per_core_hour is not None:
        sql = REQUEST_COSTS_WITH_COMPUTE_SQL.format(keys="service, endpoint,", group=(
            "GROUP BY service, endpoint\nORDER BY total_usd DESC, requests DESC, service, endpoint"))
        df, _ = run_query(sql, _compute_params(since, until, service, usd_per_core_hour), con=con)
        return df
    df, _ = run_query(REQUEST_COSTS_SQL.format(**BY_ENDPOINT), _ranged(con, since, until, service), con=con)
    return df


def request_cost_overall(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime,
    until: datetime,
    service: str | None = None,
    usd_per_core_hour: float | None = None,
) -> pd.DataFrame:
    """request_costs' figures over the requests of every endpoint that calls an LLM, as one row
    (requests is 0 and the figures NaN when there are none)."""
    if usd_per_core_hour is not None:
        sql = REQUEST_COSTS_WITH_COMPUTE_SQL.format(keys="", group="")
        df, _ = run_query(sql, _compute_params(since, until, service, usd_per_core_hour), con=con)
        return df
    df, _ = run_query(REQUEST_COSTS_SQL.format(gs="''", ge="''", keys="", order="WHERE p.priced > 0"),
                      _ranged(con, since, until, service), con=con)
    if df.empty:     # no endpoint called an LLM: one row saying so, as with compute
        df = pd.DataFrame([{**dict.fromkeys(df.columns, float("nan")), "requests": 0, "llm_requests": 0}],
                          columns=df.columns)
    return df


def _ranged(con: duckdb.DuckDBPyConnection, since: datetime, until: datetime, service: str | None) -> dict:
    return {**_params(since, until, service), **tier_params(con, since, until)}


def _compute_params(since: datetime, until: datetime, service: str | None, usd_per_core_hour: float | None) -> dict:
    return {**_request_params(since, until, service), "usd_per_core_hour": usd_per_core_hour,
            "cpu_since": since - JOIN_MARGIN, "cpu_until": until + JOIN_MARGIN}


EXPENSIVE_REQUESTS_SQL = """
SELECT request_id,
       ts,
       service,
       endpoint,
       user_id,
       duration_ms,
       calls,
       array_to_string(models, ', ') AS models,
       input_tokens,
       output_tokens,
       CAST(llm_usd AS DOUBLE) AS cost_usd
FROM llm_requests
WHERE ts >= $since
  AND ts < $until
  AND ($service IS NULL OR service = $service)
ORDER BY llm_usd DESC, ts DESC, request_id
LIMIT $limit
"""


def expensive_requests(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime,
    until: datetime,
    service: str | None = None,
    limit: int = 20,
) -> pd.DataFrame:
    """[request_id, ts, service, endpoint, user_id, duration_ms, calls, models, input_tokens,
    output_tokens, cost_usd] for the `limit` requests with the highest LLM spend. ts is the request
    event's (its first call's when it has no event, and then duration_ms is null); models is the
    distinct models, sorted and comma-joined."""
    df, _ = run_query(EXPENSIVE_REQUESTS_SQL, {**_params(since, until, service), "limit": limit}, con=con)
    return df


REQUEST_CALLS_SQL = """
SELECT ts,
       provider,
       model,
       input_tokens,
       cached_input_tokens,
       output_tokens,
       cache_hit,
       latency_ms,
       CAST(cost_usd AS DOUBLE) AS cost_usd,
       CAST(saved_usd AS DOUBLE) AS saved_usd,
       price_version
FROM llm_calls
WHERE request_id = $request_id
ORDER BY ts, model
"""


def request_calls(con: duckdb.DuckDBPyConnection, *, request_id: str) -> pd.DataFrame:
    """[ts, provider, model, input_tokens, cached_input_tokens, output_tokens, cache_hit, latency_ms,
    cost_usd, saved_usd, price_version] for every LLM call of one request, in order."""
    df, _ = run_query(REQUEST_CALLS_SQL, {"request_id": request_id}, con=con)
    return df


# -- 12. compute ------------------------------------------------------------------------------------------------

COMPUTE_COSTS_SQL = f"""
WITH {CORE_SECONDS_CTE}
SELECT time_bucket(to_seconds(CAST($bucket_s AS BIGINT)), minute) AS time,
       host,
       sum(core_seconds) AS core_seconds,
       sum(core_seconds) * CAST($usd_per_core_hour AS DOUBLE) / 3600 AS compute_usd
FROM core_seconds
GROUP BY ALL
ORDER BY time, host
"""


def compute_costs(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime,
    until: datetime,
    usd_per_core_hour: float,
    bucket_s: int = 3600,
) -> pd.DataFrame:
    """[time, host, core_seconds, compute_usd] per time bucket and host: the CPU the watched
    processes used (from proc.cpu_percent samples in [since, until)), priced per core-hour."""
    params = {"cpu_since": since, "cpu_until": until, "usd_per_core_hour": usd_per_core_hour, "bucket_s": bucket_s}
    df, _ = run_query(COMPUTE_COSTS_SQL, params, con=con)
    df.attrs["bucket_seconds"] = bucket_s
    return df
