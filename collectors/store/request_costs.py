"""What each request's LLM calls cost, kept at ingest in `llm_requests` (one row per request id that
made a call), so the Cost page never joins raw events to calls over a range.

A request's calls and its event arrive in any order and in any number of batches. Each write
transaction, after the raw rows are in:
1. its LLM calls with a request id are summed per id and added to that id's row (made when new);
2. every row still without an event, first called within EVENT_MARGIN of the transaction's times,
   takes the first event stored for its id in that span (an id repeated on a client's retry: the
   first event stored stands).
A row is placed at its event's time, or its first call's while it has none; service and endpoint
likewise. Its cost is the sum of its calls' `cost_usd` (unpriced calls add nothing); repricing calls
refreshes their rows (`refresh`). The rows outlive the raw events (kept as long as the calls)."""
from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import pandas as pd

# How far from a transaction's times a request's event is looked for: the event is written when the
# request ends, after its calls (the same margin as the cost queries' join had).
EVENT_MARGIN = timedelta(minutes=15)

# A MERGE, not INSERT ... ON CONFLICT: the lake has no keys (collectors.store.lake). Each SET sees the
# row as it was before this statement.
_ADD_CALLS = """
MERGE INTO llm_requests AS r
USING (
    SELECT request_id,
           min(ts) AS ts,
           min(ts) AS first_call_ts,
           arg_min(service, ts) AS service,
           arg_min(endpoint, ts) AS endpoint,
           NULL::VARCHAR AS host,
           min(user_id) AS user_id,
           NULL::DOUBLE AS duration_ms,
           count(*) AS calls,
           list_sort(list_distinct(list(model))) AS models,
           sum(input_tokens) AS input_tokens,
           sum(output_tokens) AS output_tokens,
           coalesce(sum(CAST(cost_usd AS DECIMAL(18, 12))), 0) AS llm_usd,
           false AS has_event
    FROM _incoming_calls
    GROUP BY request_id
) AS x
ON r.request_id = x.request_id
WHEN MATCHED THEN UPDATE SET
    calls = r.calls + x.calls,
    models = list_sort(list_distinct(list_concat(r.models, x.models))),
    input_tokens = r.input_tokens + x.input_tokens,
    output_tokens = r.output_tokens + x.output_tokens,
    llm_usd = r.llm_usd + x.llm_usd,
    user_id = coalesce(least(r.user_id, x.user_id), r.user_id, x.user_id),
    -- while no event places the request, its earliest call does
    ts = CASE WHEN r.has_event OR r.ts <= x.first_call_ts THEN r.ts ELSE x.first_call_ts END,
    service = CASE WHEN r.has_event OR r.first_call_ts <= x.first_call_ts THEN r.service ELSE x.service END,
    -- the first call that names an endpoint, as arg_min does (exact unless a request's calls name
    -- different endpoints and the first of them names none)
    endpoint = CASE WHEN r.has_event OR x.endpoint IS NULL THEN r.endpoint
                    WHEN r.endpoint IS NULL OR r.first_call_ts > x.first_call_ts THEN x.endpoint
                    ELSE r.endpoint END,
    first_call_ts = least(r.first_call_ts, x.first_call_ts)
WHEN NOT MATCHED THEN INSERT BY NAME
"""

_WAITING = """
SELECT request_id
FROM llm_requests
WHERE NOT has_event
  AND first_call_ts >= $since
  AND first_call_ts < $until
"""

_ATTACH_EVENTS = """
UPDATE llm_requests AS r
SET ts = e.ts, service = e.service, endpoint = e.endpoint, host = e.host, duration_ms = e.duration_ms,
    has_event = true
FROM (
    SELECT request_id, ts, service, endpoint, host, duration_ms
    FROM request_events
    WHERE ts >= $since
      AND ts < $until
      AND request_id IN (SELECT request_id FROM _waiting)
    QUALIFY row_number() OVER (PARTITION BY request_id ORDER BY ts, endpoint) = 1
) AS e
WHERE r.request_id = e.request_id
"""

_REFRESH = """
UPDATE llm_requests AS r
SET llm_usd = s.llm_usd
FROM (
    SELECT request_id, coalesce(sum(cost_usd), 0) AS llm_usd
    FROM llm_calls
    WHERE request_id IN (SELECT request_id FROM _repriced_ids)
    GROUP BY request_id
) AS s
WHERE r.request_id = s.request_id
"""


def add(con: duckdb.DuckDBPyConnection, calls: pd.DataFrame | None, earliest, latest) -> None:
    """Within the write transaction, after the raw rows: `calls` are its LLM calls (llm_calls columns
    with service and user_id), `earliest` and `latest` the span of its calls' and events' times."""
    if calls is not None and calls["request_id"].notna().any():
        con.register("_incoming_calls", calls[calls["request_id"].notna()])
        try:
            con.execute(_ADD_CALLS)
        finally:
            con.unregister("_incoming_calls")
    attach_events(con, earliest, latest)


def attach_events(con: duckdb.DuckDBPyConnection, earliest, latest) -> None:
    """Step 2: rows still without an event, first called within EVENT_MARGIN of `earliest`..`latest`, take
    their event. (On a lake a batch with calls is written alone, so it sees every event committed before
    it, and a batch with events written after it sees its row: collectors.store.ingest.MERGED_KINDS.)"""
    span = {"since": earliest - EVENT_MARGIN, "until": latest + EVENT_MARGIN}
    waiting = con.execute(_WAITING, span).df()
    if waiting.empty:
        return
    con.register("_waiting", waiting)
    try:
        con.execute(_ATTACH_EVENTS, span)
    finally:
        con.unregister("_waiting")


def refresh(con: duckdb.DuckDBPyConnection, request_ids) -> None:
    """After calls were repriced: their requests' cost summed again from llm_calls."""
    ids = pd.DataFrame({"request_id": pd.Series(list(request_ids), dtype=object).dropna().unique()})
    if ids.empty:
        return
    con.register("_repriced_ids", ids)
    try:
        con.execute(_REFRESH)
    finally:
        con.unregister("_repriced_ids")


def rebuild(con: duckdb.DuckDBPyConnection) -> None:
    """Every row made again from the calls and events stored (the migration that adds the table;
    stores written by hand, as tests' seeds are)."""
    con.execute("DELETE FROM llm_requests")
    con.execute("""
        CREATE OR REPLACE TEMP VIEW _incoming_calls AS
        SELECT ts, service, endpoint, user_id, request_id, model, input_tokens, output_tokens, cost_usd
        FROM llm_calls
        WHERE request_id IS NOT NULL
    """)
    con.execute(_ADD_CALLS)
    con.execute("CREATE OR REPLACE TEMP VIEW _waiting AS SELECT request_id FROM llm_requests")
    con.execute(_ATTACH_EVENTS, {"since": datetime(1970, 1, 1), "until": datetime(9999, 1, 1)})
    con.execute("DROP VIEW _incoming_calls")
    con.execute("DROP VIEW _waiting")
