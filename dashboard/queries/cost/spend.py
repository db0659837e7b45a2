"""What was spent: totals, over time, per model and per user, and what caching saved."""
from __future__ import annotations

from datetime import datetime

import duckdb
import pandas as pd

from dashboard.queries._run import run_query
from dashboard.queries.cost._common import RANGE, TOKENS_PER_S, _params

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
