"""Every priced LLM call, for `perfdeck export cost`."""
from __future__ import annotations

from datetime import datetime

import duckdb
import pandas as pd

from dashboard.queries._run import run_query
from dashboard.queries.cost._common import RANGE, _params

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
