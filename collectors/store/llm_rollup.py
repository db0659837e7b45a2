"""LLM spend kept at ingest, so the Cost page adds up a few rows per period instead of every call.

- `llm_rollup`: per minute and (service, endpoint, provider, model, price_version, cache_hit, priced),
  the sums the spend queries need. Its hour and day tiers are kept by the tier job like the request
  rollups' (collectors.store.tiers.TIERED).
- `llm_user_day`: per UTC day, service and user: calls, cost, tokens, savings, last call. Users are
  many: a row per user and minute would be as big as the calls.
- `llm_request_spans`: per (request id, service, user id) its first and last call, so "how many
  requests made a call in this range" is counted without the calls (a request counts once however
  many minutes its calls span, which no per-period count can say).

Money stays DECIMAL, so every sum equals the sum of the calls. Each write transaction adds rows for
its own calls (compaction merges them); repricing rebuilds the periods it touched from llm_calls
(`rebuild`), which the calls outlive by nothing (both are kept for the rollup retention)."""
from __future__ import annotations

from datetime import datetime

import duckdb

KEYS = "service, endpoint, provider, model, price_version, cache_hit, priced"

# llm_rollup's values, in column order, from llm_calls-shaped rows
_FROM_CALLS = """
       count(*) AS calls,
       count(request_id) AS calls_in_requests,
       sum(input_tokens) AS input_tokens,
       sum(output_tokens) AS output_tokens,
       sum(cached_input_tokens) AS cached_input_tokens,
       coalesce(sum(cache_write_tokens), 0) AS cache_write_tokens,
       sum(cost_usd) AS cost_usd,
       sum(cost_usd) FILTER (WHERE request_id IS NOT NULL) AS cost_in_requests_usd,
       sum(saved_usd) AS saved_usd,
       sum(latency_ms) AS latency_sum_ms,
       count(latency_ms) AS latency_count,
       -- what tokens per second divides: generated tokens over the time they took
       sum(output_tokens) FILTER (WHERE NOT cache_hit AND latency_ms > 0) AS timed_output_tokens,
       sum(latency_ms) FILTER (WHERE NOT cache_hit AND latency_ms > 0) AS timed_latency_ms,
       min(ts) AS first_ts,
       max(ts) AS last_ts"""

# The same values merged from rows of the table itself (compaction, tiers).
MERGED = ("sum(calls) AS calls, sum(calls_in_requests) AS calls_in_requests, sum(input_tokens) AS input_tokens, "
          "sum(output_tokens) AS output_tokens, sum(cached_input_tokens) AS cached_input_tokens, "
          "sum(cache_write_tokens) AS cache_write_tokens, sum(cost_usd) AS cost_usd, "
          "sum(cost_in_requests_usd) AS cost_in_requests_usd, sum(saved_usd) AS saved_usd, "
          "sum(latency_sum_ms) AS latency_sum_ms, sum(latency_count) AS latency_count, "
          "sum(timed_output_tokens) AS timed_output_tokens, sum(timed_latency_ms) AS timed_latency_ms, "
          "min(first_ts) AS first_ts, max(last_ts) AS last_ts")

USER_MERGED = ("sum(calls), sum(cost_usd), sum(tokens), sum(saved_usd), max(last_ts)")

# llm_rollup's columns after its time column (the hour and day tiers have the same, keyed by hour / day)
_COLUMNS = """
    service VARCHAR NOT NULL,
    endpoint VARCHAR,
    provider VARCHAR,
    model VARCHAR NOT NULL,
    price_version VARCHAR,
    cache_hit BOOLEAN NOT NULL,
    priced BOOLEAN NOT NULL,                 -- cost_usd IS NOT NULL
    calls BIGINT NOT NULL,
    calls_in_requests BIGINT NOT NULL,       -- calls with a request id
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    cached_input_tokens BIGINT NOT NULL,
    cache_write_tokens BIGINT NOT NULL,
    cost_usd DECIMAL(38, 12),                -- NULL when no call was priced
    cost_in_requests_usd DECIMAL(38, 12),
    saved_usd DECIMAL(38, 12),
    latency_sum_ms DOUBLE,
    latency_count BIGINT NOT NULL,
    timed_output_tokens BIGINT,
    timed_latency_ms DOUBLE,
    first_ts TIMESTAMP NOT NULL,
    last_ts TIMESTAMP NOT NULL
"""

DDL = "".join(f"CREATE TABLE {table} ({time} TIMESTAMP NOT NULL,{_COLUMNS});\n"
              for table, time in (("llm_rollup", "minute"), ("llm_rollup_hour", "hour"), ("llm_rollup_day", "day"))
              ) + """
CREATE TABLE llm_user_day (
    day TIMESTAMP NOT NULL,
    service VARCHAR NOT NULL,
    user_id VARCHAR,
    calls BIGINT NOT NULL,
    cost_usd DECIMAL(38, 12),
    tokens BIGINT NOT NULL,                  -- input + output
    saved_usd DECIMAL(38, 12),
    last_ts TIMESTAMP NOT NULL
);
CREATE TABLE llm_request_spans (
    request_id VARCHAR NOT NULL,
    service VARCHAR NOT NULL,
    user_id VARCHAR,
    first_ts TIMESTAMP NOT NULL,
    last_ts TIMESTAMP NOT NULL,
    sole BOOLEAN NOT NULL                    -- the request's only row: counted without a DISTINCT
);
"""


def _rollup_sql(period: str, source: str, where: str = "true") -> str:
    return f"""
        SELECT date_trunc('{period}', ts), {KEYS.replace('priced', 'cost_usd IS NOT NULL AS priced')},{_FROM_CALLS}
        FROM {source}
        WHERE {where}
        GROUP BY ALL
    """


def _user_sql(source: str, where: str = "true") -> str:
    return f"""
        SELECT date_trunc('day', ts), service, user_id, count(*), sum(cost_usd),
               sum(input_tokens + output_tokens), sum(saved_usd), max(ts)
        FROM {source}
        WHERE {where}
        GROUP BY ALL
    """


def add(con: duckdb.DuckDBPyConnection, source: str) -> None:
    """Within the write transaction: the rows of the calls in `source` (a table or view with
    llm_calls' columns, already stored in llm_calls) added to the rollups."""
    con.execute(f"INSERT INTO llm_rollup {_rollup_sql('minute', source)}")
    con.execute(f"INSERT INTO llm_user_day {_user_sql(source)}")
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _spans AS
        SELECT request_id, service, user_id, min(ts) AS first_ts, max(ts) AS last_ts
        FROM {source}
        WHERE request_id IS NOT NULL
        GROUP BY ALL
    """)
    # One row per (request, service, user): widen the known span, or add it.
    con.execute("""
        UPDATE llm_request_spans AS s
        SET first_ts = least(s.first_ts, n.first_ts), last_ts = greatest(s.last_ts, n.last_ts)
        FROM _spans AS n
        WHERE s.request_id = n.request_id AND s.service = n.service AND s.user_id IS NOT DISTINCT FROM n.user_id
    """)
    con.execute("""
        INSERT INTO llm_request_spans
        SELECT n.*, true
        FROM _spans AS n
        LEFT JOIN (SELECT request_id, service, user_id
                   FROM llm_request_spans
                   WHERE request_id IN (SELECT request_id FROM _spans)) AS s   -- a join, not a scan per row
          ON s.request_id = n.request_id AND s.service = n.service AND s.user_id IS NOT DISTINCT FROM n.user_id
        WHERE s.request_id IS NULL
    """)
    con.execute("""
        UPDATE llm_request_spans SET sole = false
        WHERE sole
          AND request_id IN (SELECT request_id
                             FROM llm_request_spans
                             WHERE request_id IN (SELECT request_id FROM _spans)
                             GROUP BY request_id
                             HAVING count(*) > 1)
    """)
    con.execute("DROP TABLE _spans")


def rebuild(con: duckdb.DuckDBPyConnection, since: datetime | None = None, until: datetime | None = None,
            *, spans: bool = False) -> None:
    """The rollups of the UTC days holding [since, until) (None: all) made again from llm_calls: after
    a reprice changed their costs, and to fill the tables of a store that predates them.

    Each tier is rebuilt where it holds calls: minutes from the "minute_purge" mark on (minute rows
    before it arrived late; their calls are now counted in the rebuilt hours, so they go), hours
    before the "hour" mark, days before the "day" mark (collectors.store.tiers)."""
    from collectors.store.tiers import DAY, ceil, floor, rolled_until  # tiers imports this module
    lo = floor(since, DAY) if since else datetime(1970, 1, 1)
    hi = ceil(until, DAY) if until else datetime(9999, 1, 1)
    marks = rolled_until(con)
    purged = max(lo, marks["minute_purge"] or lo)
    con.execute("DELETE FROM llm_rollup WHERE minute >= ? AND minute < ?", [lo, hi])
    con.execute(f"INSERT INTO llm_rollup {_rollup_sql('minute', 'llm_calls', 'ts >= $lo AND ts < $hi')}",
                {"lo": purged, "hi": hi})
    for tier in ("hour", "day"):
        if marks[tier] is None or marks[tier] <= lo:
            continue
        top = min(hi, marks[tier])
        con.execute(f"DELETE FROM llm_rollup_{tier} WHERE {tier} >= ? AND {tier} < ?", [lo, top])
        con.execute(f"INSERT INTO llm_rollup_{tier} {_rollup_sql(tier, 'llm_calls', 'ts >= $lo AND ts < $hi')}",
                    {"lo": lo, "hi": top})
    con.execute("DELETE FROM llm_user_day WHERE day >= ? AND day < ?", [lo, hi])
    con.execute(f"INSERT INTO llm_user_day {_user_sql('llm_calls', 'ts >= $lo AND ts < $hi')}", {"lo": lo, "hi": hi})
    if spans:
        con.execute("DELETE FROM llm_request_spans")
        con.execute("""
            INSERT INTO llm_request_spans
            SELECT *, count(*) OVER (PARTITION BY request_id) = 1
            FROM (
                SELECT request_id, service, user_id, min(ts), max(ts)
                FROM llm_calls
                WHERE request_id IS NOT NULL
                GROUP BY ALL
            )
        """)
