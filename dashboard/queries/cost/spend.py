"""What was spent: totals, over time, per model and per user, and what caching saved.

They add up the LLM spend rollups kept at ingest (collectors.store.llm_rollup), never the calls of
the whole range: CALL_ROWS gives the calls of a range as rollup rows (the tiers' whole periods, the
ragged ends from the calls), users' spend comes from their day rows, and how many requests made a
call from each request's span of calls. Every figure equals the sum over the calls themselves."""
from __future__ import annotations

from datetime import datetime

import duckdb
import pandas as pd

from collectors.store.tiers import DAY, ceil, floor
from dashboard.queries._run import run_query
from dashboard.queries.cost._common import CALL_ROWS, _params, llm_params

# -- 1. totals -------------------------------------------------------------------------------------

# How many requests made a call in [$since, $until): each (request, service, user)'s span of calls
# says so, unless it starts before the range and ends after it; then the calls of the range tell
# (UNSURE_CALLS, added only when such spans exist).
SERVICE = "($service IS NULL OR service = $service)"
USER_PATTERN = "($pattern IS NULL OR user_id ILIKE $pattern ESCAPE '\\')"
SPANS_FILTER = f"""first_ts < $until AND last_ts >= $since AND {SERVICE} AND {USER_PATTERN}"""
REQUEST_SPANS = f"""
    SELECT request_id, user_id, sole
    FROM llm_request_spans
    WHERE {SPANS_FILTER}
      AND (first_ts >= $since OR last_ts < $until)"""
UNSURE_SQL = f"""
SELECT count(*) AS n FROM llm_request_spans WHERE {SPANS_FILTER} AND first_ts < $since AND last_ts >= $until
"""
UNSURE_CALLS = f"""
    UNION ALL
    SELECT request_id, user_id, false AS sole
    FROM llm_calls
    WHERE ts >= $since AND ts < $until AND {SERVICE} AND {USER_PATTERN}
      AND request_id IN (SELECT request_id FROM llm_request_spans
                         WHERE {SPANS_FILTER} AND first_ts < $since AND last_ts >= $until)"""


# Distinct requests: a request's only span row is one; the few others are told apart by id (apart: a
# DISTINCT aggregate costs its hash table over every row, filtered or not).
REQUESTS_COUNT = """(SELECT count(*) FROM ({requests}) WHERE sole)
               + (SELECT count(DISTINCT request_id) FROM ({requests}) WHERE NOT sole)"""


def _requests_sql(con, params: dict) -> str:
    """The (request_id, user_id, sole) rows of the requests with a call in the range (see REQUEST_SPANS)."""
    unsure, _ = run_query(UNSURE_SQL, {k: params[k] for k in ("since", "until", "service", "pattern")}, con=con)
    return REQUEST_SPANS + (UNSURE_CALLS if unsure["n"].iloc[0] else "")


COST_TOTALS_SQL = f"""
WITH calls AS (
    SELECT CAST(coalesce(sum(calls), 0) AS BIGINT) AS calls,
           CAST(coalesce(sum(calls) FILTER (WHERE priced), 0) AS BIGINT) AS priced_calls,
           CAST(coalesce(sum(calls) FILTER (WHERE cache_hit), 0) AS BIGINT) AS cache_hit_calls,
           coalesce(sum(cost_usd), 0) AS spend,
           sum(input_tokens) AS input_tokens,
           sum(output_tokens) AS output_tokens,
           sum(cached_input_tokens) AS cached_input_tokens,
           {REQUESTS_COUNT} AS llm_requests,
           CAST(coalesce(sum(calls_in_requests), 0) AS BIGINT) AS calls_in_requests,
           coalesce(sum(cost_in_requests_usd), 0) AS spend_in_requests,
           coalesce(sum(saved_usd) FILTER (WHERE cache_hit), 0) AS saved_result_cache,
           coalesce(sum(saved_usd) FILTER (WHERE NOT cache_hit), 0) AS saved_cache_read,
           sum(timed_output_tokens) / nullif(sum(timed_latency_ms) / 1000, 0) AS output_tokens_per_s,
           min(first_ts) AS first_call
    FROM ({CALL_ROWS})
    WHERE {SERVICE}
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
    params = {**llm_params(con, since, until, service), "pattern": None}
    df, _ = run_query(COST_TOTALS_SQL.format(requests=_requests_sql(con, params)), params, con=con)
    return df


# -- 2. over time ------------------------------------------------------------------------------------

# The only columns cost_over_time may group by (the SQL names them; values never reach the text).
OVER_TIME_KEYS = {"model": "model", "endpoint": "endpoint", "service": "service", "provider": "provider"}

COST_OVER_TIME_SQL = f"""
SELECT time_bucket(to_seconds(CAST($bucket_s AS BIGINT)), time) AS time,
       coalesce({{key}}, '(none)') AS key,
       CAST(coalesce(sum(cost_usd), 0) AS DOUBLE) AS cost_usd,
       CAST(sum(calls) AS BIGINT) AS calls,
       CAST(coalesce(sum(saved_usd), 0) AS DOUBLE) AS saved_usd
FROM ({CALL_ROWS})
WHERE {SERVICE}
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
    sql = COST_OVER_TIME_SQL.format(key=OVER_TIME_KEYS[by])
    df, _ = run_query(sql, {**llm_params(con, since, until, service, step=bucket_s), "bucket_s": bucket_s}, con=con)
    df.attrs["bucket_seconds"] = bucket_s
    return df


# -- 3, 4. models ------------------------------------------------------------------------------------

MODEL_USAGE_SQL = f"""
SELECT provider,
       model,
       CAST(sum(calls) AS BIGINT) AS calls,
       CAST(coalesce(sum(calls) FILTER (WHERE cache_hit), 0) AS BIGINT) AS cache_hit_calls,
       CAST(sum(input_tokens) AS BIGINT) AS input_tokens,
       CAST(sum(output_tokens) AS BIGINT) AS output_tokens,
       CAST(sum(cached_input_tokens) AS BIGINT) AS cached_input_tokens,
       CAST(coalesce(sum(cache_write_tokens), 0) AS BIGINT) AS cache_write_tokens,
       -- Unknown (NULL) for a model no call of which was priced: not $0.
       CAST(sum(cost_usd) AS DOUBLE) AS spend_usd,
       CAST(sum(saved_usd) AS DOUBLE) AS saved_usd,
       -- The model's own latency: a result-cache hit never reached it.
       sum(latency_sum_ms) FILTER (WHERE NOT cache_hit)
           / nullif(sum(latency_count) FILTER (WHERE NOT cache_hit), 0) AS avg_latency_ms,
       sum(timed_output_tokens) / nullif(sum(timed_latency_ms) / 1000, 0) AS output_tokens_per_s,
       CAST(sum(cost_usd) AS DOUBLE) / nullif(sum(calls) FILTER (WHERE priced), 0) AS cost_per_call_usd,
       string_agg(DISTINCT price_version, ', ' ORDER BY price_version) AS price_version,
       CAST(coalesce(sum(calls) FILTER (WHERE NOT priced), 0) AS BIGINT) AS unpriced_calls
FROM ({CALL_ROWS})
WHERE {SERVICE}
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
    df, _ = run_query(MODEL_USAGE_SQL, llm_params(con, since, until, service), con=con)
    return df


UNPRICED_MODELS_SQL = f"""
SELECT provider,
       model,
       CAST(sum(calls) AS BIGINT) AS calls,
       CAST(sum(input_tokens) AS BIGINT) AS input_tokens,
       CAST(sum(output_tokens) AS BIGINT) AS output_tokens,
       min(first_ts) AS first_seen,
       max(last_ts) AS last_seen
FROM ({CALL_ROWS})
WHERE {SERVICE}
  AND NOT priced
GROUP BY provider, model
ORDER BY calls DESC, provider, model
"""


def unpriced_models(
    con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime, service: str | None = None,
) -> pd.DataFrame:
    """[provider, model, calls, input_tokens, output_tokens, first_seen, last_seen] for the calls
    the price list could not price, most calls first: what to add to the price overrides."""
    df, _ = run_query(UNPRICED_MODELS_SQL, llm_params(con, since, until, service), con=con)
    return df


# -- 8. users ----------------------------------------------------------------------------------------------

# Whole days [$day_since, $day_until) from the users' day rows, the ragged ends from the calls.
_USER_CALLS = """
    SELECT service, user_id, 1 AS calls, cost_usd, input_tokens + output_tokens AS tokens, saved_usd, ts AS last_ts
    FROM llm_calls"""
USER_COSTS_SQL = f"""
WITH per_user AS (
    SELECT user_id,
           sum(calls) AS calls,
           sum(cost_usd) AS cost_usd,
           sum(tokens) AS tokens,
           sum(saved_usd) AS saved_usd,
           max(last_ts) AS last_call
    FROM (
        SELECT user_id, calls, cost_usd, tokens, saved_usd, last_ts, service
        FROM llm_user_day
        WHERE day >= $day_since AND day < $day_until
        UNION ALL BY NAME
        {_USER_CALLS} WHERE ts >= $since AND ts < $day_since
        UNION ALL BY NAME
        {_USER_CALLS} WHERE ts >= $day_until AND ts < $until
    )
    WHERE {SERVICE}
      AND {USER_PATTERN}
    GROUP BY user_id
),
requests AS (
    SELECT user_id, CAST(sum(n) AS BIGINT) AS llm_requests
    FROM (
        SELECT user_id, count(*) AS n FROM ({{requests}}) WHERE sole GROUP BY user_id
        UNION ALL
        SELECT user_id, count(DISTINCT request_id) AS n FROM ({{requests}}) WHERE NOT sole GROUP BY user_id
    )
    GROUP BY user_id
)
SELECT coalesce(p.user_id, '(anonymous)') AS user_id,
       CAST(p.calls AS BIGINT) AS calls,
       coalesce(r.llm_requests, 0) AS llm_requests,
       CAST(coalesce(p.cost_usd, 0) AS DOUBLE) AS spend_usd,
       CAST(p.tokens AS BIGINT) AS tokens,
       CAST(coalesce(p.saved_usd, 0) AS DOUBLE) AS saved_usd,
       p.last_call
FROM per_user AS p
LEFT JOIN requests AS r ON p.user_id IS NOT DISTINCT FROM r.user_id
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
    params = {**_params(since, until, service), "pattern": _contains_pattern(search)}
    day_since, day_until = ceil(since, DAY), floor(until, DAY)
    if day_since >= day_until:      # no whole day: all from the calls
        day_since = day_until = until
    requests = _requests_sql(con, params)
    params |= {"limit": limit, "day_since": day_since, "day_until": day_until}
    df, _ = run_query(USER_COSTS_SQL.format(requests=requests), params, con=con)
    return df


# -- 9. caching ----------------------------------------------------------------------------------------------

CACHE_SAVINGS_SQL = f"""
WITH per_key AS (
    SELECT endpoint,
           model,
           CAST(sum(calls) AS BIGINT) AS calls,
           CAST(coalesce(sum(calls) FILTER (WHERE cache_hit), 0) AS BIGINT) AS cache_hit_calls,
           coalesce(sum(saved_usd) FILTER (WHERE cache_hit), 0) AS saved_result_cache,
           sum(cached_input_tokens) AS cached_input_tokens,
           coalesce(sum(saved_usd) FILTER (WHERE NOT cache_hit), 0) AS saved_cache_read,
           coalesce(sum(cost_usd), 0) AS spend
    FROM ({CALL_ROWS})
    WHERE {SERVICE}
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
    df, _ = run_query(CACHE_SAVINGS_SQL, llm_params(con, since, until, service), con=con)
    return df
