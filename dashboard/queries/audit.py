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


# Actions that empty caches, and how a chart labels them.
CACHE_ACTION_LABELS = {
    "app_cache.clear": "cleared", "redis.delete_keys": "deleted keys in", "redis.flush_db": "flushed",
    "redis.bump_cache_version": "bumped",
}

CACHE_ACTIONS_SQL = """
SELECT ts, action, target, params
FROM action_audit
WHERE ts >= $since
  AND ts < $until
  AND outcome = 'done'
  AND action IN (SELECT unnest($actions))
ORDER BY ts
"""


def cache_actions(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime,
                  service: str | None = None) -> pd.DataFrame:
    """[ts, action, target, label] of the cache-emptying actions done in [since, until), to mark on
    hit-rate charts ("cleared product_lru"); `service` is accepted for the page's shared params."""
    params = {"since": since, "until": until, "actions": list(CACHE_ACTION_LABELS)}
    df, _ = run_query(CACHE_ACTIONS_SQL, params, max_rows=500, con=con)
    names = df["target"].fillna("").str.split(":", n=1).str[-1]
    df["label"] = df["action"].map(CACHE_ACTION_LABELS) + " " + names
    return df.drop(columns="params")
