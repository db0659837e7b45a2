"""What every cost query shares: the range filter, tokens per second, the request join margin, and
the calls of a range as rows of the LLM spend rollup."""
from __future__ import annotations

from datetime import datetime, timedelta

from dashboard.queries.tiers import LLM_ROWS, exact_params

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


# Every call of [$since, $until), as rows of the LLM spend rollup (collectors.store.llm_rollup): the
# whole periods of [$roll_since, $roll_until) from its tiers, the ragged ends from the calls
# themselves, so every sum equals the calls' own (`llm_params` gives the parameters).
_CALL_AS_ROW = """
    SELECT ts AS time, service, endpoint, provider, model, price_version, cache_hit, cost_usd IS NOT NULL AS priced,
           1 AS calls, CAST(request_id IS NOT NULL AS INTEGER) AS calls_in_requests, input_tokens, output_tokens,
           cached_input_tokens, coalesce(cache_write_tokens, 0) AS cache_write_tokens, cost_usd,
           CASE WHEN request_id IS NOT NULL THEN cost_usd END AS cost_in_requests_usd, saved_usd,
           latency_ms AS latency_sum_ms, CAST(latency_ms IS NOT NULL AS INTEGER) AS latency_count,
           CASE WHEN NOT cache_hit AND latency_ms > 0 THEN output_tokens END AS timed_output_tokens,
           CASE WHEN NOT cache_hit AND latency_ms > 0 THEN latency_ms END AS timed_latency_ms,
           ts AS first_ts, ts AS last_ts
    FROM llm_calls"""
CALL_ROWS = f"""
    {LLM_ROWS}
    UNION ALL BY NAME
    {_CALL_AS_ROW}
    WHERE ts >= $since AND ts < $roll_since
    UNION ALL BY NAME
    {_CALL_AS_ROW}
    WHERE ts >= $roll_until AND ts < $until"""


def llm_params(con, since: datetime, until: datetime, service: str | None, *, step: int | None = None) -> dict:
    """The parameters of CALL_ROWS (and RANGE) for [since, until) at chart step `step` seconds."""
    return {**_params(since, until, service), **exact_params(con, since, until, step=step)}
