"""The audit log of maintenance actions (and operator logins), for the Actions page and its CSV."""
from __future__ import annotations

from datetime import datetime

import duckdb
import pandas as pd

from dashboard.queries._run import run_query

AUDIT_LOG_SQL = """
SELECT id, ts, actor, action, target, outcome, result, error, duration_ms, params, preview, figures
FROM action_audit
WHERE ts >= $since
  AND ts < $until
  AND ($actor IS NULL OR actor = $actor)
  AND ($action IS NULL OR action = $action)
  AND ($outcome IS NULL OR outcome = $outcome)
ORDER BY ts DESC, id DESC
"""


def audit_log(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime,
    until: datetime,
    actor: str | None = None,
    action: str | None = None,
    outcome: str | None = None,
    max_rows: int = 5_000,
) -> pd.DataFrame:
    """Audit rows in [since, until), newest first, optionally for one actor / action / outcome."""
    params = {"since": since, "until": until, "actor": actor, "action": action, "outcome": outcome}
    df, _ = run_query(AUDIT_LOG_SQL, params, max_rows=max_rows, con=con)
    return df


AUDIT_FACETS_SQL = """
SELECT 'actor' AS facet, actor AS value FROM action_audit GROUP BY actor
UNION ALL
SELECT 'action', action FROM action_audit GROUP BY action
UNION ALL
SELECT 'outcome', outcome FROM action_audit GROUP BY outcome
ORDER BY facet, value
"""


def audit_facets(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """[facet, value]: every actor, action and outcome in the log, for the page's filters."""
    df, _ = run_query(AUDIT_FACETS_SQL, con=con)
    return df
