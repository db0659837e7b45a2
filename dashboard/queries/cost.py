"""LLM spend: totals, per model / endpoint / request / user, caching savings, compute cost and budgets.

Every call is priced once on ingest (`llm_calls.cost_usd`, DECIMAL): these queries only add up
what was stored, so old figures never move when prices change. `cost_usd` NULL means unpriced (a
model the price list does not know): such calls are counted, never summed as $0 spend silently.
Money is summed as DECIMAL and cast to DOUBLE only in the final SELECT.

Per-request figures join a request's LLM calls to its request event by request_id at query time:
the SDK flushes them in separate batches, so either can be stored first."""
from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import pandas as pd

from dashboard.queries._run import run_query

# How far either side of the range a request's calls and its event are looked for. The event is
# recorded when the request ends, after its calls: a call at 11:59:59.9 belongs to the request
# whose event is at 12:00:00.2, and that request belongs to the range holding 12:00:00.2.
JOIN_MARGIN = timedelta(minutes=15)

RANGE = """ts >= $since
      AND ts < $until
      AND ($service IS NULL OR service = $service)"""

# Output tokens per second of generation: cache hits generate nothing, calls without a latency
# measured nothing.
TOKENS_PER_S = """sum(output_tokens) FILTER (WHERE NOT cache_hit AND latency_ms > 0)
           / nullif(sum(latency_ms) FILTER (WHERE NOT cache_hit AND latency_ms > 0) / 1000, 0)"""


def _params(since: datetime, until: datetime, service: str | None) -> dict:
    return {"since": since, "until": until, "service": service}


# -- 1. totals -------------------------------------------------------------------------------------

COST_TOTALS_SQL = f"""
WITH calls AS (
    SELECT count(*) AS calls,
           count(cost_usd) AS priced_calls,
           count(*) FILTER (WHERE cache_hit) AS cache_hit_calls,
           coalesce(sum(cost_usd), 0) AS spend,
           sum(input_tokens) AS input_tokens,
           sum(output_tokens) AS output_tokens,
           sum(cached_input_tokens) AS cached_input_tokens,
           count(DISTINCT request_id) AS llm_requests,
           count(request_id) AS calls_in_requests,
           coalesce(sum(cost_usd) FILTER (WHERE request_id IS NOT NULL), 0) AS spend_in_requests,
           coalesce(sum(saved_usd) FILTER (WHERE cache_hit), 0) AS saved_result_cache,
           coalesce(sum(saved_usd) FILTER (WHERE NOT cache_hit), 0) AS saved_cache_read,
           {TOKENS_PER_S} AS output_tokens_per_s,
           min(ts) AS first_call
    FROM llm_calls
    WHERE {RANGE}
)
SELECT calls,
       priced_calls,
       calls - priced_calls AS unpriced_calls,
       cache_hit_calls,
       CAST(spend AS DOUBLE) AS spend_usd,
       CAST(coalesce(input_tokens, 0) AS BIGINT) AS input_tokens,
       CAST(coalesce(output_tokens, 0) AS BIGINT) AS output_tokens,
       CAST(coalesce(cached_input_tokens, 0) AS BIGINT) AS cached_input_tokens,
       llm_requests,
       calls_in_requests / nullif(llm_requests, 0) AS calls_per_request,
       CAST(spend_in_requests AS DOUBLE) / nullif(llm_requests, 0) AS spend_per_request_usd,
       CAST(saved_result_cache AS DOUBLE) AS saved_result_cache_usd,
       CAST(saved_cache_read AS DOUBLE) AS saved_cache_read_usd,
       output_tokens_per_s,
       first_call
FROM calls
"""


def cost_totals(
    con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime, service: str | None = None,
) -> pd.DataFrame:
    """One row [calls, priced_calls, unpriced_calls, cache_hit_calls, spend_usd, input_tokens,
    output_tokens, cached_input_tokens, llm_requests, calls_per_request, spend_per_request_usd,
    saved_result_cache_usd, saved_cache_read_usd, output_tokens_per_s, first_call] over the calls
    in [since, until). Sums are 0 when there are no calls; ratios and first_call are then null.
    The per-request ratios count only calls that carry a request_id."""
    df, _ = run_query(COST_TOTALS_SQL, _params(since, until, service), con=con)
    return df


# -- 2. over time ------------------------------------------------------------------------------------

# The only columns cost_over_time may group by (the SQL names them; values never reach the text).
OVER_TIME_KEYS = {"model": "model", "endpoint": "endpoint", "service": "service", "provider": "provider"}

COST_OVER_TIME_SQL = """
SELECT time_bucket(to_seconds(CAST($bucket_s AS BIGINT)), ts) AS time,
       coalesce({key}, '(none)') AS key,
       CAST(coalesce(sum(cost_usd), 0) AS DOUBLE) AS cost_usd,
       count(*) AS calls,
       CAST(coalesce(sum(saved_usd), 0) AS DOUBLE) AS saved_usd
FROM llm_calls
WHERE {range}
GROUP BY ALL
ORDER BY time, key
"""


def cost_over_time(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime,
    until: datetime,
    service: str | None = None,
    by: str = "model",
    bucket_s: int = 3600,
) -> pd.DataFrame:
    """[time, key, cost_usd, calls, saved_usd] per time bucket (start, naive UTC) and value of `by`
    (model, endpoint, service or provider; null shown as "(none)"). Unpriced calls add to calls only."""
    if by not in OVER_TIME_KEYS:
        raise ValueError(f"cannot group cost by {by!r}: one of {', '.join(OVER_TIME_KEYS)}")
    sql = COST_OVER_TIME_SQL.format(key=OVER_TIME_KEYS[by], range=RANGE)
    df, _ = run_query(sql, {**_params(since, until, service), "bucket_s": bucket_s}, con=con)
    df.attrs["bucket_seconds"] = bucket_s
    return df


# -- 3, 4. models ------------------------------------------------------------------------------------

MODEL_USAGE_SQL = f"""
SELECT provider,
       model,
       count(*) AS calls,
       count(*) FILTER (WHERE cache_hit) AS cache_hit_calls,
       CAST(sum(input_tokens) AS BIGINT) AS input_tokens,
       CAST(sum(output_tokens) AS BIGINT) AS output_tokens,
       CAST(sum(cached_input_tokens) AS BIGINT) AS cached_input_tokens,
       CAST(coalesce(sum(cache_write_tokens), 0) AS BIGINT) AS cache_write_tokens,
       -- Unknown (NULL) for a model no call of which was priced: not $0.
       CAST(sum(cost_usd) AS DOUBLE) AS spend_usd,
       CAST(sum(saved_usd) AS DOUBLE) AS saved_usd,
       -- The model's own latency: a result-cache hit never reached it.
       avg(latency_ms) FILTER (WHERE NOT cache_hit) AS avg_latency_ms,
       {TOKENS_PER_S} AS output_tokens_per_s,
       CAST(sum(cost_usd) AS DOUBLE) / nullif(count(cost_usd), 0) AS cost_per_call_usd,
       string_agg(DISTINCT price_version, ', ' ORDER BY price_version) AS price_version,
       count(*) - count(cost_usd) AS unpriced_calls
FROM llm_calls
WHERE {RANGE}
GROUP BY provider, model
ORDER BY spend_usd DESC NULLS LAST, calls DESC, provider, model
"""


def model_usage(
    con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime, service: str | None = None,
) -> pd.DataFrame:
    """[provider, model, calls, cache_hit_calls, input_tokens, output_tokens, cached_input_tokens,
    cache_write_tokens, spend_usd, saved_usd, avg_latency_ms, output_tokens_per_s, cost_per_call_usd,
    price_version, unpriced_calls] per model, highest spend first. avg_latency_ms leaves out cache
    hits; cost_per_call_usd is over priced calls; price_version lists the distinct versions used
    ("a, b"), null when no call was priced."""
    df, _ = run_query(MODEL_USAGE_SQL, _params(since, until, service), con=con)
    return df


UNPRICED_MODELS_SQL = f"""
SELECT provider,
       model,
       count(*) AS calls,
       CAST(sum(input_tokens) AS BIGINT) AS input_tokens,
       CAST(sum(output_tokens) AS BIGINT) AS output_tokens,
       min(ts) AS first_seen,
       max(ts) AS last_seen
FROM llm_calls
WHERE {RANGE}
  AND cost_usd IS NULL
GROUP BY provider, model
ORDER BY calls DESC, provider, model
"""


def unpriced_models(
    con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime, service: str | None = None,
) -> pd.DataFrame:
    """[provider, model, calls, input_tokens, output_tokens, first_seen, last_seen] for the calls
    the price list could not price, most calls first: what to add to the price overrides."""
    df, _ = run_query(UNPRICED_MODELS_SQL, _params(since, until, service), con=con)
    return df


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

# One row per request: its event (if any) full-outer-joined to its calls (if any). Both sides are
# read JOIN_MARGIN beyond the range ($wide_since, $wide_until), then each request is placed at its
# event's time, or its first call's when no event was recorded, so a request falls in exactly one
# range with all its calls, whichever side was stored first. Calls without a request_id are not here.
REQUESTS_CTE = """
events AS (
    -- One event per id: a client-sent id can repeat on a retry, and the first one stands.
    SELECT request_id, ts, service, host, endpoint, duration_ms
    FROM request_events
    WHERE request_id IS NOT NULL
      AND ts >= $wide_since
      AND ts < $wide_until
    QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY ts, endpoint) = 1
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

REQUEST_COSTS_SQL = f"""
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
    sql = REQUEST_COSTS_SQL.format(keys="service, endpoint,", group="GROUP BY service, endpoint\n"
                                   "ORDER BY total_usd DESC, requests DESC, service, endpoint")
    df, _ = run_query(sql, _compute_params(since, until, service, usd_per_core_hour), con=con)
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
    sql = REQUEST_COSTS_SQL.format(keys="", group="")
    df, _ = run_query(sql, _compute_params(since, until, service, usd_per_core_hour), con=con)
    return df


def _compute_params(since: datetime, until: datetime, service: str | None, usd_per_core_hour: float | None) -> dict:
    return {**_request_params(since, until, service), "usd_per_core_hour": usd_per_core_hour,
            "cpu_since": since - JOIN_MARGIN, "cpu_until": until + JOIN_MARGIN}


EXPENSIVE_REQUESTS_SQL = f"""
WITH {REQUESTS_CTE}
SELECT request_id,
       ts,
       service,
       endpoint,
       user_id,
       duration_ms,
       calls,
       models,
       CAST(input_tokens AS BIGINT) AS input_tokens,
       CAST(output_tokens AS BIGINT) AS output_tokens,
       CAST(llm_usd AS DOUBLE) AS cost_usd
FROM requests
WHERE calls > 0
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
    params = {**_request_params(since, until, service), "limit": limit}
    df, _ = run_query(EXPENSIVE_REQUESTS_SQL, params, con=con)
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


# -- 8. users ----------------------------------------------------------------------------------------------

USER_COSTS_SQL = f"""
SELECT coalesce(user_id, '(anonymous)') AS user_id,
       count(*) AS calls,
       count(DISTINCT request_id) AS llm_requests,
       CAST(coalesce(sum(cost_usd), 0) AS DOUBLE) AS spend_usd,
       CAST(sum(input_tokens + output_tokens) AS BIGINT) AS tokens,
       CAST(coalesce(sum(saved_usd), 0) AS DOUBLE) AS saved_usd,
       max(ts) AS last_call
FROM llm_calls
WHERE {RANGE}
  AND ($pattern IS NULL OR user_id ILIKE $pattern ESCAPE '\\')
GROUP BY llm_calls.user_id
ORDER BY spend_usd DESC, calls DESC, user_id
LIMIT $limit
"""


def _contains_pattern(search: str | None) -> str | None:
    """An ILIKE pattern matching `search` literally anywhere: its \\, % and _ are escaped."""
    if not search:
        return None
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def user_costs(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime,
    until: datetime,
    service: str | None = None,
    search: str | None = None,
    limit: int = 20,
) -> pd.DataFrame:
    """[user_id, calls, llm_requests, spend_usd, tokens, saved_usd, last_call] per user (calls
    without one as "(anonymous)"), highest spend first. `search` keeps the users whose id contains
    it, case-insensitively (taken literally: % and _ are not wildcards)."""
    params = {**_params(since, until, service), "pattern": _contains_pattern(search), "limit": limit}
    df, _ = run_query(USER_COSTS_SQL, params, con=con)
    return df


# -- 9. caching ----------------------------------------------------------------------------------------------

CACHE_SAVINGS_SQL = f"""
WITH per_key AS (
    SELECT endpoint,
           model,
           count(*) AS calls,
           count(*) FILTER (WHERE cache_hit) AS cache_hit_calls,
           coalesce(sum(saved_usd) FILTER (WHERE cache_hit), 0) AS saved_result_cache,
           sum(cached_input_tokens) AS cached_input_tokens,
           coalesce(sum(saved_usd) FILTER (WHERE NOT cache_hit), 0) AS saved_cache_read,
           coalesce(sum(cost_usd), 0) AS spend
    FROM llm_calls
    WHERE {RANGE}
    GROUP BY endpoint, model
)
SELECT endpoint,
       model,
       calls,
       cache_hit_calls,
       cache_hit_calls / calls AS hit_rate,
       CAST(saved_result_cache AS DOUBLE) AS saved_result_cache_usd,
       CAST(cached_input_tokens AS BIGINT) AS cached_input_tokens,
       CAST(saved_cache_read AS DOUBLE) AS saved_cache_read_usd,
       CAST(spend AS DOUBLE) AS spend_usd
FROM per_key
ORDER BY saved_result_cache + saved_cache_read DESC, calls DESC, endpoint, model
"""


def cache_savings(
    con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime, service: str | None = None,
) -> pd.DataFrame:
    """[endpoint, model, calls, cache_hit_calls, hit_rate, saved_result_cache_usd, cached_input_tokens,
    saved_cache_read_usd, spend_usd] per (endpoint, model), most saved first. The result cache saves
    whole calls (hit_rate is its hit rate); the provider's prompt cache saves part of the input price."""
    df, _ = run_query(CACHE_SAVINGS_SQL, _params(since, until, service), con=con)
    return df


# -- 10, 11. days and budgets ----------------------------------------------------------------------------------

DAILY_SPEND_SQL = f"""
WITH days AS (
    -- Every UTC day the range touches, spend or not (the last one only if the range reaches into it).
    SELECT CAST(d AS DATE) AS day
    FROM generate_series(date_trunc('day', CAST($since AS TIMESTAMP)),
                         date_trunc('day', CAST($until AS TIMESTAMP) - INTERVAL 1 MICROSECOND),
                         INTERVAL 1 DAY) AS t(d)
),
spend AS (
    SELECT CAST(ts AS DATE) AS day, sum(cost_usd) AS spend, count(*) AS calls
    FROM llm_calls
    WHERE {RANGE}
    GROUP BY day
)
SELECT days.day,
       CAST(coalesce(spend.spend, 0) AS DOUBLE) AS spend_usd,
       coalesce(spend.calls, 0) AS calls
FROM days
LEFT JOIN spend USING (day)
ORDER BY days.day
"""


def daily_spend(
    con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime, service: str | None = None,
) -> pd.DataFrame:
    """[day, spend_usd, calls] for every UTC day in [since, until), zero days included."""
    df, _ = run_query(DAILY_SPEND_SQL, _params(since, until, service), con=con)
    return df


def forecast_period(
    spent: float,
    period_start: datetime,
    period_end: datetime,
    now: datetime,
    recent_spend: float,
    recent_hours: float,
) -> dict:
    """Where spend will end the period if the recent burn rate holds.

    Returns {spent, elapsed_share, burn_rate_per_day, forecast, remaining_days}: burn rate is
    recent_spend over recent_hours, per day (0 when recent_hours is not positive); forecast adds
    it over the time left, so it equals `spent` once the period is over."""
    length = (period_end - period_start).total_seconds()
    elapsed = (now - period_start).total_seconds()
    elapsed_share = min(max(elapsed / length, 0.0), 1.0) if length > 0 else 1.0
    burn_rate = recent_spend / recent_hours * 24 if recent_hours > 0 else 0.0
    remaining_days = max((period_end - now).total_seconds(), 0.0) / 86400
    return {
        "spent": spent,
        "elapsed_share": elapsed_share,
        "burn_rate_per_day": burn_rate,
        "forecast": spent + burn_rate * remaining_days,
        "remaining_days": remaining_days,
    }


FIRST_CALL_SQL = """
SELECT min(ts) AS first_call FROM llm_calls WHERE ($service IS NULL OR service = $service)
"""

BUDGET_SPEND_SQL = """
SELECT CAST(coalesce(sum(cost_usd) FILTER (WHERE ts >= $period_start), 0) AS DOUBLE) AS spent,
       CAST(coalesce(sum(cost_usd) FILTER (WHERE ts >= $recent_start), 0) AS DOUBLE) AS recent
FROM llm_calls
WHERE ts >= least($period_start, $recent_start)
  AND ts < $now
  AND ($service IS NULL OR service = $service)
"""

BUDGET_COLUMNS = ["period", "budget_usd", "spent_usd", "share_used", "elapsed_share", "burn_rate_per_day",
                  "forecast_usd", "forecast_share", "on_track", "period_start", "period_end"]
# Burn rate windows: the last hours for the day (reacts within the day), the last week for the month
# (smooths weekends out).
DAY_WINDOW = timedelta(hours=3)
MONTH_WINDOW = timedelta(days=7)


def _periods(now: datetime) -> dict[str, tuple[datetime, datetime, timedelta]]:
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    next_month = month.replace(year=month.year + 1, month=1) if month.month == 12 else month.replace(month=month.month + 1)
    return {"today": (day, day + timedelta(days=1), DAY_WINDOW), "this month": (month, next_month, MONTH_WINDOW)}


def budget_status(
    con: duckdb.DuckDBPyConnection,
    *,
    now: datetime,
    daily_budget: float | None = None,
    monthly_budget: float | None = None,
    service: str | None = None,
) -> pd.DataFrame:
    """[period, budget_usd, spent_usd, share_used, elapsed_share, burn_rate_per_day, forecast_usd,
    forecast_share, on_track, period_start, period_end], one row per configured budget ("today",
    "this month": UTC calendar day and month holding `now`, naive UTC). Spent counts up to `now`.
    The burn rate is the spend of the last 3 hours (today) or 7 days (this month), shortened to the
    time since the first LLM call recorded (for `service` if given): a 4-day-old store's spend is
    spread over 4 days, not 7."""
    budgets = {"today": daily_budget, "this month": monthly_budget}
    first_df, _ = run_query(FIRST_CALL_SQL, {"service": service}, con=con)
    first_call = first_df["first_call"].iloc[0]
    rows = []
    for period, (start, end, window) in _periods(now).items():
        budget = budgets[period]
        if budget is None:
            continue
        if budget <= 0:
            raise ValueError(f"the {period} budget must be positive, not {budget}")
        recent_start = now - window
        if not pd.isna(first_call):
            recent_start = max(recent_start, pd.Timestamp(first_call).to_pydatetime())
        recent_hours = max((now - recent_start).total_seconds(), 0.0) / 3600
        params = {"period_start": start, "recent_start": recent_start, "now": now, "service": service}
        spend, _ = run_query(BUDGET_SPEND_SQL, params, con=con)
        spent, recent = float(spend["spent"].iloc[0]), float(spend["recent"].iloc[0])
        fc = forecast_period(spent, start, end, now, recent, recent_hours)
        rows.append({
            "period": period,
            "budget_usd": float(budget),
            "spent_usd": spent,
            "share_used": spent / budget,
            "elapsed_share": fc["elapsed_share"],
            "burn_rate_per_day": fc["burn_rate_per_day"],
            "forecast_usd": fc["forecast"],
            "forecast_share": fc["forecast"] / budget,
            "on_track": fc["forecast"] <= budget,
            "period_start": start,
            "period_end": end,
        })
    return pd.DataFrame(rows, columns=BUDGET_COLUMNS)


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


# -- 13. export ---------------------------------------------------------------------------------------------------

# `perfdeck export cost --by ...`: the key columns and their order for each grouping (code constants).
EXPORT_KEYS = {
    "endpoint": ("service, endpoint", "spend_usd DESC, service, endpoint"),
    "model": ("provider, model", "spend_usd DESC, provider, model"),
    "user": ("user_id", "spend_usd DESC, user_id"),
    "day": ("CAST(ts AS DATE) AS day", "day"),
}

COST_EXPORT_SQL = """
SELECT {keys},
       count(*) AS calls,
       count(DISTINCT request_id) AS llm_requests,
       CAST(sum(input_tokens) AS BIGINT) AS input_tokens,
       CAST(sum(output_tokens) AS BIGINT) AS output_tokens,
       CAST(sum(cached_input_tokens) AS BIGINT) AS cached_input_tokens,
       CAST(coalesce(sum(cost_usd), 0) AS DOUBLE) AS spend_usd,
       CAST(coalesce(sum(saved_usd), 0) AS DOUBLE) AS saved_usd,
       count(*) - count(cost_usd) AS unpriced_calls
FROM llm_calls
WHERE {range}
GROUP BY ALL
ORDER BY {order}
"""


def cost_export(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime,
    until: datetime,
    by: str,
    service: str | None = None,
    max_rows: int = 1_000_000,
) -> pd.DataFrame:
    """The key columns of `by` (endpoint: service, endpoint; model: provider, model; user: user_id;
    day: day) then [calls, llm_requests, input_tokens, output_tokens, cached_input_tokens, spend_usd,
    saved_usd, unpriced_calls]. Null keys stay null."""
    if by not in EXPORT_KEYS:
        raise ValueError(f"cannot export cost by {by!r}: one of {', '.join(EXPORT_KEYS)}")
    keys, order = EXPORT_KEYS[by]
    sql = COST_EXPORT_SQL.format(keys=keys, order=order, range=RANGE)
    df, _ = run_query(sql, _params(since, until, service), max_rows=max_rows, con=con)
    return df
