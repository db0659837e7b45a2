"""The index advisor's findings (`advisor_runs`, `index_advice`, written by the collector hourly per
configured database) and what became of them: the `database.create_index` / `database.drop_index`
actions in `action_audit`, and the latency of the statements an index was meant to help, before and
after it was created (`query_stats` for the SDK's statements, `pg_statements` for PostgreSQL's).

Which run's findings are shown: the latest run of each target that did not fail. A failed run (its
`error` set) writes no advice, so one unreachable hour does not blank the page; `advisor_runs()` says
when the latest run failed and which run the findings come from.

Audit rows are matched on their checked params, which name the target by its configured name (the
same name the advisor's `target` uses): create_index {target, schema, table, columns, unique, name},
drop_index {target, schema, index}. A schema missing on either side (SQLite; advice on PostgreSQL
that names no schema) matches any."""
from __future__ import annotations

import duckdb
import pandas as pd

from dashboard.queries._run import run_query

# How the advisor checked its candidates (advisor_runs.method, index_advice.method) -> how a page says it.
METHODS = {
    "hypopg": "hypothetical indexes (hypopg)",
    "heuristic": "statistics heuristic",
    "sqlite-plan": "SQLite query plans",
}

ADVISOR_RUNS_SQL = """
SELECT ts, target, method, statements, analysed, seconds, error, notes,
       -- the run whose findings index_recommendations() and index_findings() return
       max(ts) FILTER (WHERE error IS NULL) OVER (PARTITION BY target) AS findings_ts
FROM advisor_runs
QUALIFY row_number() OVER (PARTITION BY target ORDER BY ts DESC) = 1
ORDER BY target
"""


def advisor_runs(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """The latest advisor run of each target: [ts, target, method, statements, analysed, seconds,
    error, notes, findings_ts (the latest run without an error: the one whose findings are shown;
    NULL when every run failed)]."""
    df, _ = run_query(ADVISOR_RUNS_SQL, max_rows=1_000, con=con)
    return df


# Each target's latest run that did not fail, and its advice.
_SHOWN_RUNS = """
shown AS (
    SELECT target, max(ts) AS ts
    FROM advisor_runs
    WHERE error IS NULL
    GROUP BY target
)"""
_LATEST_ADVICE = _SHOWN_RUNS + """,
advice AS (
    SELECT a.*
    FROM index_advice AS a
    JOIN shown USING (target, ts)
)"""

_SAME_SCHEMA = "({a}.table_schema IS NULL OR {b}.table_schema IS NULL OR {a}.table_schema = {b}.table_schema)"

# Done create_index actions, their params unpacked. The audit ts is when the run started; the index
# exists from ts + duration_ms (the build time) on.
_CREATIONS = """
creations AS (
    SELECT id,
           ts AS created_at,
           ts + to_seconds(coalesce(duration_ms, 0) / 1000.0) AS built_at,
           params->>'target' AS target,
           params->>'schema' AS table_schema,
           params->>'table' AS table_name,
           from_json(params->'columns', '["VARCHAR"]') AS columns,
           params->>'name' AS index_name
    FROM action_audit
    WHERE action = 'database.create_index'
      AND outcome = 'done'
)"""

RECOMMENDATIONS_SQL = f"""
WITH {_LATEST_ADVICE},
{_CREATIONS}
SELECT a.ts, a.target, a.table_schema, a.table_name, a.columns, a.statement, a.method,
       a.est_improvement_pct, a.time_saved_ms_day, a.calls_day, a.mean_ms, a.queries, a.detail,
       (SELECT min(c.created_at)
        FROM creations AS c
        WHERE c.target = a.target
          AND c.table_name = a.table_name
          AND c.columns = a.columns
          AND {_SAME_SCHEMA.format(a="c", b="a")}
          AND c.created_at >= a.ts) AS created_at
FROM advice AS a
WHERE a.kind = 'create'
ORDER BY a.time_saved_ms_day DESC NULLS LAST, a.target, a.table_name
"""


def index_recommendations(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Indexes to create, from each target's latest run that did not fail, most time saved per day
    first: [ts (the run), target, table_schema, table_name, columns, statement (CREATE INDEX ...),
    method, est_improvement_pct, time_saved_ms_day, calls_day, mean_ms, queries, detail, created_at].
    created_at: when a done `database.create_index` action made that index (same target, table and
    columns in order) after the run; NULL while the recommendation is open."""
    df, _ = run_query(RECOMMENDATIONS_SQL, max_rows=1_000, con=con)
    return df


STATEMENTS_SQL = f"""
WITH {_SHOWN_RUNS}
SELECT s.target, s.query, s.verdict, s.detail, s.calls_day, s.ms_day, s.ts
FROM advisor_statements AS s
JOIN shown USING (target, ts)
WHERE $target IS NULL OR s.target = $target
ORDER BY s.target, CASE s.verdict WHEN 'create' THEN 0 WHEN 'failed' THEN 1 ELSE 2 END, s.ms_day DESC NULLS LAST
"""


def advisor_statements(con: duckdb.DuckDBPyConnection, target: str | None = None) -> pd.DataFrame:
    """What each target's latest run that did not fail made of each statement, those wanting an index
    first, then those it could not analyse, then the rest, most time per day first: [target, query,
    verdict (create | failed | none), detail (the index wanted, or why none), calls_day, ms_day, ts]."""
    df, _ = run_query(STATEMENTS_SQL, {"target": target}, max_rows=5_000, con=con)
    return df


FINDINGS_SQL = f"""
WITH {_LATEST_ADVICE},
drops AS (
    SELECT ts, params->>'target' AS target, params->>'schema' AS table_schema, params->>'index' AS index_name
    FROM action_audit
    WHERE action = 'database.drop_index'
      AND outcome = 'done'
)
SELECT a.ts, a.target, a.kind, a.table_schema, a.table_name, a.index_name, a.columns, a.statement,
       a.size_bytes, a.detail,
       (SELECT min(d.ts)
        FROM drops AS d
        WHERE d.target = a.target
          AND d.index_name = a.index_name
          AND {_SAME_SCHEMA.format(a="d", b="a")}
          AND d.ts >= a.ts) AS dropped_at
FROM advice AS a
WHERE a.kind IN ('unused', 'duplicate')
ORDER BY a.target, a.size_bytes DESC NULLS LAST, a.table_name, a.index_name
"""


def index_findings(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """Existing indexes that cost without paying, from each target's latest run that did not fail,
    largest first: [ts (the run), target, kind ('unused' | 'duplicate'), table_schema, table_name,
    index_name, columns, statement (DROP INDEX ...), size_bytes, detail, dropped_at]. dropped_at:
    when a done `database.drop_index` action dropped that index after the run; NULL while it stands."""
    df, _ = run_query(FINDINGS_SQL, max_rows=1_000, con=con)
    return df


VERIFICATION_SQL = f"""
WITH {_CREATIONS},
-- Each creation with the latest 'create' advice for that index made before it.
estimated AS (
    SELECT c.*, a.ts AS advised_at, a.est_improvement_pct, a.queries
    FROM creations AS c
    JOIN index_advice AS a
      ON a.kind = 'create'
     AND a.target = c.target
     AND a.table_name = c.table_name
     AND a.columns = c.columns
     AND {_SAME_SCHEMA.format(a="a", b="c")}
     AND a.ts <= c.created_at
    QUALIFY row_number() OVER (PARTITION BY c.id ORDER BY a.ts DESC) = 1
),
-- The statements' figures as [start, end) spans: an SDK minute, or a pg_stat_statements delta,
-- known only by the sample time that ends it (so the first sample after the build may hold calls
-- made before it: one sampling interval at most).
samples AS (
    SELECT e.id, s.minute AS span_start, s.minute + INTERVAL 1 MINUTE AS span_end, s.calls, s.total_ms
    FROM estimated AS e
    JOIN query_stats AS s ON list_contains(e.queries, s.fingerprint)
    UNION ALL
    SELECT e.id, p.ts, p.ts, p.calls, p.total_ms
    FROM estimated AS e
    JOIN pg_statements AS p ON p.target = e.target AND list_contains(e.queries, p.query)
),
windows AS (
    SELECT e.id,
           sum(s.calls) FILTER (WHERE s.span_end <= e.created_at
                                  AND s.span_start >= e.created_at - to_seconds($window_s)) AS calls_before,
           sum(s.total_ms) FILTER (WHERE s.span_end <= e.created_at
                                     AND s.span_start >= e.created_at - to_seconds($window_s)) AS total_ms_before,
           sum(s.calls) FILTER (WHERE s.span_start >= e.built_at) AS calls_after,
           sum(s.total_ms) FILTER (WHERE s.span_start >= e.built_at) AS total_ms_after
    FROM estimated AS e
    LEFT JOIN samples AS s USING (id)
    GROUP BY e.id, e.created_at, e.built_at
),
means AS (
    SELECT id,
           CAST(coalesce(calls_before, 0) AS BIGINT) AS calls_before,
           total_ms_before / nullif(calls_before, 0) AS mean_ms_before,
           CAST(coalesce(calls_after, 0) AS BIGINT) AS calls_after,
           total_ms_after / nullif(calls_after, 0) AS mean_ms_after
    FROM windows
)
SELECT e.created_at, e.target, e.table_schema, e.table_name, e.columns, e.index_name, e.advised_at,
       e.est_improvement_pct, e.queries, m.calls_before, m.mean_ms_before, m.calls_after, m.mean_ms_after,
       100 * (1 - m.mean_ms_after / nullif(m.mean_ms_before, 0)) AS measured_improvement_pct
FROM estimated AS e
JOIN means AS m USING (id)
ORDER BY e.created_at DESC, e.id DESC
"""


def index_verification(con: duckdb.DuckDBPyConnection, *, window_hours: float = 24) -> pd.DataFrame:
    """Each index created by a done `database.create_index` action next to what the advisor promised:
    [created_at, target, table_schema, table_name, columns, index_name, advised_at,
    est_improvement_pct, queries (of the latest 'create' advice for that target, table and columns
    before the creation), calls_before, mean_ms_before (the `window_hours` before the action started),
    calls_after, mean_ms_after (since the build finished: created_at + the action's duration),
    measured_improvement_pct = 100 × (1 − after / before)], newest first.

    Means are calls-weighted (sum of total_ms / sum of calls) over the advice's statements: SDK
    fingerprints in `query_stats`, PostgreSQL texts in `pg_statements` of the same target. The means
    and the measured improvement are NULL until there are calls in that window. An index created with
    no advice before it (by hand on the Actions page) has no statements to measure and no estimate:
    it has no row here."""
    params = {"window_s": float(window_hours) * 3600}
    df, _ = run_query(VERIFICATION_SQL, params, max_rows=1_000, con=con)
    return df
