"""Alerts, silences and notifications, for the Alerts page and its CSVs.

An alert is one row from firing to resolved (collectors.health.alerts): `severity`, `value`,
`threshold` and `message` are its latest evaluation (once resolved, the one that resolved it);
`peak_severity` and `peak_value` the worst it reached; `notifications` how many messages carried it."""
from __future__ import annotations

from datetime import datetime

import duckdb
import pandas as pd

from collectors.health import SEVERITIES
from dashboard.queries._run import run_query

ACTIVE_ALERTS_SQL = """
SELECT id, severity, rule, target, started_at, date_diff('second', started_at, $now) AS firing_s, value,
       peak_value, coalesce(peak_severity, severity) AS peak_severity, threshold, message, silenced, notifications,
       notified_at, updated_at, service, subject
FROM alerts
WHERE state = 'firing'
ORDER BY list_position($severities, severity) DESC, started_at, rule, target
"""


def active_alerts(con: duckdb.DuckDBPyConnection, *, now: datetime) -> pd.DataFrame:
    """The alerts firing now, worst first, then the oldest; `firing_s` = seconds since they fired."""
    df, _ = run_query(ACTIVE_ALERTS_SQL, {"now": now, "severities": list(SEVERITIES)}, max_rows=1_000, con=con)
    return df


ALERT_HISTORY_SQL = """
SELECT id, started_at, resolved_at, state, severity, rule, target, value, peak_value,
       coalesce(peak_severity, severity) AS peak_severity, threshold, message,
       date_diff('second', started_at, coalesce(resolved_at, updated_at, started_at)) AS duration_s,
       silenced, notifications, notified_at, service, subject
FROM alerts
WHERE started_at < $until
  AND coalesce(resolved_at, $until) >= $since
  AND ($rule IS NULL OR rule = $rule)
  AND ($severity IS NULL OR coalesce(peak_severity, severity) = $severity)
  AND ($state IS NULL OR state = $state)
  AND ($target IS NULL OR target = $target)
ORDER BY started_at DESC, id DESC
"""


def alert_history(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime, rule: str | None = None,
                  severity: str | None = None, state: str | None = None, target: str | None = None,
                  max_rows: int = 5_000) -> pd.DataFrame:
    """Alerts that were firing at some point in [since, until), newest first, optionally for one rule,
    severity (the worst reached: peak_severity), state (firing | resolved) or target."""
    params = {"since": since, "until": until, "rule": rule, "severity": severity, "state": state, "target": target}
    df, _ = run_query(ALERT_HISTORY_SQL, params, max_rows=max_rows, con=con)
    return df


ALERT_FACETS_SQL = """
SELECT 'rule' AS facet, rule AS value FROM alerts GROUP BY rule
UNION ALL
SELECT 'target', target FROM alerts GROUP BY target
UNION ALL
SELECT 'severity', coalesce(peak_severity, severity) FROM alerts GROUP BY ALL
UNION ALL
SELECT 'state', state FROM alerts GROUP BY state
ORDER BY facet, value
"""


def alert_facets(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """[facet, value]: every rule, target, worst severity (peak_severity) and state in the history, for the page's filters."""
    df, _ = run_query(ALERT_FACETS_SQL, con=con)
    return df


ACTIVE_SILENCES_SQL = """
SELECT s.id, s.rule, s.target, s.starts_at, s.ends_at, s.reason, s.created_by, s.created_at,
       count(a.id) AS firing
FROM silences AS s
LEFT JOIN alerts AS a
  ON a.state = 'firing'
 AND (s.rule = '*' OR a.rule = s.rule)
 AND (s.target IS NULL OR a.target = s.target)
WHERE s.cancelled_at IS NULL
  AND s.ends_at > $now
GROUP BY ALL
ORDER BY s.ends_at, s.id
"""


def active_silences(con: duckdb.DuckDBPyConnection, *, now: datetime) -> pd.DataFrame:
    """Silences not ended nor cancelled (including those that start later), with the number of
    firing alerts each covers. `target` NULL: every target of the rule; rule '*': every rule."""
    df, _ = run_query(ACTIVE_SILENCES_SQL, {"now": now}, max_rows=1_000, con=con)
    return df


NOTIFICATION_STATS_SQL = """
SELECT channel, outcome, count(*) AS messages, sum(alerts) AS alerts, sum(attempts) AS attempts,
       max(ts) AS last_ts, arg_max(error, ts) AS last_error
FROM alert_notifications
WHERE ts >= $since
  AND ts < $until
GROUP BY channel, outcome
ORDER BY channel, outcome
"""


def notification_stats(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime) -> pd.DataFrame:
    """Messages per channel (webhook | log) and outcome (delivered | dead_letter | logged) in
    [since, until), with the alerts they carried and the last error."""
    df, _ = run_query(NOTIFICATION_STATS_SQL, {"since": since, "until": until}, con=con)
    return df


NOTIFICATION_LOG_SQL = """
SELECT ts, kind, channel, outcome, alerts, attempts, error, alert_ids
FROM alert_notifications
WHERE ts >= $since
  AND ts < $until
ORDER BY ts DESC
"""


def notification_log(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime,
                     max_rows: int = 1_000) -> pd.DataFrame:
    """Every message sent or given up on in [since, until), newest first."""
    df, _ = run_query(NOTIFICATION_LOG_SQL, {"since": since, "until": until}, max_rows=max_rows, con=con)
    return df


ALERT_TARGETS_SQL = """
SELECT DISTINCT target
FROM alerts
WHERE $rule = '*' OR rule = $rule
ORDER BY target
"""


def alert_targets(con: duckdb.DuckDBPyConnection, *, rule: str) -> list[str]:
    """The targets a rule ('*': any rule) has alerted on, for the silence form."""
    df, _ = run_query(ALERT_TARGETS_SQL, {"rule": rule}, max_rows=1_000, con=con)
    return df["target"].tolist()
