"""Health measurements: one value per thing a threshold judges (collectors/health/thresholds.toml),
measured over one window. `collectors.health.assess` turns them into severities and messages.

Each row is [check, service, subject, value, samples]: `check` is a threshold's name, `samples` how
many observations the value rests on (requests, lookups, host samples...), so that a p95 of three
requests is not judged. Values are in the threshold's unit: ratios 0-1, host figures 0-100."""
from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd

from dashboard.queries._run import run_query
from dashboard.queries.cost import budget_status, request_costs
from dashboard.queries.pipeline import (
    collector_rejects,
    collector_reports,
    ingest_sources,
    last_batches,
    quarantine_counts,
    sdk_losses,
)
from dashboard.queries.samplers import label_sql

MEASUREMENT_COLUMNS = ["check", "service", "subject", "value", "samples"]

# How far before the window the previous Redis sample is looked for (the first rate of the window
# spans the time since it); far more than any sampler interval.
REDIS_LOOKBACK = timedelta(hours=1)
# A watched component not checked for this long before the window is no longer watched (its sampler
# left the config): its last status is not news.
COMPONENT_STALE = timedelta(hours=1)
# A service (or the collector) that reported within this long before the end of the window and not
# since is silent; one quiet for longer is taken as retired and no longer judged.
REPORTING_LOOKBACK = timedelta(days=1)

# Jobs are requests recorded with method TASK (sdk.record_request(..., method="TASK", wait_ms=...)).
REQUESTS_SQL = """
SELECT service,
       endpoint,
       upper(coalesce(method, '')) = 'TASK' AS is_job,
       count(*) AS requests,
       count(*) FILTER (WHERE status >= 500) AS errors,
       quantile_cont(duration_ms, 0.95) AS p95_ms,
       quantile_cont(TRY_CAST(json_extract_string(tags, '$.wait_ms') AS DOUBLE), 0.95) / 1000 AS wait_p95_s,
       count(TRY_CAST(json_extract_string(tags, '$.wait_ms') AS DOUBLE)) AS waits
FROM request_events
WHERE ts >= $since
  AND ts < $until
GROUP BY ALL
ORDER BY service, endpoint
"""

APP_CACHES_SQL = """
SELECT service,
       cache,
       sum(hits) AS hits,
       sum(hits) + sum(misses) AS lookups,
       sum(lookup_ms_sum) / nullif(sum(lookups_timed), 0) AS lookup_ms,
       sum(lookups_timed) AS lookups_timed
FROM cache_stats
WHERE minute >= $since
  AND minute < $until
GROUP BY service, cache
ORDER BY service, cache
"""

# The latest minute of each cache, and in it its largest process (each holds its own entries).
CACHE_SIZES_SQL = """
SELECT service, cache, max(entries) AS entries, count(*) AS samples
FROM cache_sizes
WHERE minute >= $since
  AND minute < $until
GROUP BY service, cache, minute
QUALIFY minute = max(minute) OVER (PARTITION BY service, cache)
ORDER BY service, cache
"""

# The sampler's hits/misses per second cover the time since its previous sample (its own lookups
# left out, which the raw keyspace counters include); rate x that time gives the lookups. A sample is
# the rows of one instance at one ts (the sampler writes all of a sample's rows with the same ts).
REDIS_SQL = """
WITH sample_times AS (
    SELECT DISTINCT instance, ts
    FROM redis_metrics
    WHERE ts >= $lookback
      AND ts < $until
),
samples AS (
    SELECT instance, ts, epoch(ts - lag(ts) OVER (PARTITION BY instance ORDER BY ts)) AS elapsed_s
    FROM sample_times
),
rates AS (
    SELECT instance,
           ts,
           sum(value) FILTER (WHERE name = 'redis.hits_per_sec') AS hits_per_s,
           sum(value) FILTER (WHERE name = 'redis.misses_per_sec') AS misses_per_s
    FROM redis_metrics
    WHERE name IN ('redis.hits_per_sec', 'redis.misses_per_sec')
      AND ts >= $since
      AND ts < $until
    GROUP BY instance, ts
)
SELECT instance,
       sum(hits_per_s * elapsed_s) AS hits,
       sum((hits_per_s + misses_per_s) * elapsed_s) AS lookups
FROM rates
JOIN samples USING (instance, ts)
GROUP BY instance
ORDER BY instance
"""

HOST_SQL = f"""
SELECT 'host_cpu_percent' AS "check", host AS subject, avg(value) AS value, count(*) AS samples
FROM system_metrics
WHERE name = 'cpu.percent' AND ts >= $since AND ts < $until
GROUP BY host
UNION ALL
SELECT 'host_memory_percent', host, avg(value), count(*)
FROM system_metrics
WHERE name = 'mem.percent' AND ts >= $since AND ts < $until
GROUP BY host
UNION ALL
SELECT 'host_disk_percent', host || ':' || coalesce({label_sql("mount")}, '?'), arg_max(value, ts), count(*)
FROM system_metrics
WHERE name = 'disk.used_percent' AND ts >= $since AND ts < $until
GROUP BY ALL
ORDER BY 1, 2
"""

COMPONENTS_SQL = """
SELECT kind || ' ' || name AS subject, CASE WHEN status = 'up' THEN 1.0 ELSE 0.0 END AS value
FROM components
WHERE checked_at >= $fresh_since
ORDER BY kind, name
"""


def health_measurements(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime,
    until: datetime,
    daily_budget: float | None = None,
    monthly_budget: float | None = None,
) -> pd.DataFrame:
    """[check, service, subject, value, samples] for every thing measured in [since, until) (naive
    UTC), grouped by check in the order of the thresholds file. Things without data in the window
    have no row (a cache without lookups has no hit rate). Budgets are measured at `until` when given."""
    window = {"since": since, "until": until}
    rows: list[tuple] = []

    requests, _ = run_query(REQUESTS_SQL, window, con=con)
    web, jobs = requests[~requests["is_job"]], requests[requests["is_job"]]
    rows += [("request_p95_ms", r.service, r.endpoint, r.p95_ms, r.requests) for r in web.itertuples()]
    rows += [("error_rate", r.service, r.endpoint, r.errors / r.requests, r.requests) for r in web.itertuples()]
    rows += [("job_wait_s", r.service, r.endpoint, r.wait_p95_s, r.waits) for r in jobs.itertuples() if r.waits]
    rows += [("job_failure_rate", r.service, r.endpoint, r.errors / r.requests, r.requests) for r in jobs.itertuples()]

    caches, _ = run_query(APP_CACHES_SQL, window, con=con)
    redis, _ = run_query(REDIS_SQL, window | {"lookback": since - REDIS_LOOKBACK}, con=con)
    rows += [("cache_hit_rate", r.service, r.cache, r.hits / r.lookups, r.lookups) for r in caches.itertuples()
             if r.lookups]
    rows += [("cache_hit_rate", None, r.instance, r.hits / r.lookups, round(r.lookups)) for r in redis.itertuples()
             if r.lookups > 0]
    rows += [("cache_lookup_ms", r.service, r.cache, r.lookup_ms, r.lookups_timed) for r in caches.itertuples()
             if r.lookups_timed]
    sizes, _ = run_query(CACHE_SIZES_SQL, window, con=con)
    rows += [("cache_entries", r.service, r.cache, r.entries, r.samples) for r in sizes.itertuples()]

    host, _ = run_query(HOST_SQL, window, con=con)
    rows += [(r.check, None, r.subject, r.value, r.samples) for r in host.itertuples() if pd.notna(r.value)]

    costs = request_costs(con, since=since, until=until)
    rows += [("cost_per_query_usd", r.service, r.endpoint, r.mean_usd, r.requests) for r in costs.itertuples()]
    if daily_budget is not None or monthly_budget is not None:
        budgets = budget_status(con, now=until, daily_budget=daily_budget, monthly_budget=monthly_budget)
        for r in budgets.itertuples():
            month = r.period == "this month"   # the month is judged on its forecast, the day on its spend
            rows.append(("budget_burn", None, "month" if month else "today",
                         r.forecast_share if month else r.share_used, 1))

    components, _ = run_query(COMPONENTS_SQL, {"fresh_since": since - COMPONENT_STALE}, con=con)
    rows += [("component_up", None, r.subject, r.value, 1) for r in components.itertuples()]
    rows += _ingest(con, since=since, until=until)

    df = pd.DataFrame(rows, columns=MEASUREMENT_COLUMNS)
    df["value"] = df["value"].astype(float)
    df["samples"] = df["samples"].astype("int64")
    return df


def _ingest(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime) -> list[tuple]:
    """The pipeline's checks: silence per service and of the collector, losses per service and source,
    each source's lag, unacknowledged stream entries and readability. A per-service check's subject is
    the service itself, so that an override may name it either way."""
    window = {"since": since, "until": until}
    rows: list[tuple] = []
    reporting = last_batches(con, since=until - REPORTING_LOOKBACK, until=until)
    rows += [("no_data_s", r.service, r.service, r.silent_s, r.batches) for r in reporting.itertuples()]

    sdk = sdk_losses(con, **window)
    rows += [("sdk_dropped_events", r.service, r.service, r.dropped, 1) for r in sdk.itertuples()]
    # Rejected rows: what the SDK refused plus what the collector dropped, for every service that sent
    # something in the window (0 when clean: a firing alert then resolves on its value, not on silence).
    rejected = dict(zip(sdk["service"], sdk["rejected"]))
    for r in collector_rejects(con, **window).dropna(subset=["service"]).itertuples():
        rejected[r.service] = rejected.get(r.service, 0) + r.rows
    senders = set(last_batches(con, **window)["service"]) | set(rejected)
    rows += [("rejected_rows", s, s, rejected.get(s, 0), 1) for s in sorted(senders)]

    sources = ingest_sources(con, **window)
    counts = quarantine_counts(con, **window)
    quarantined = dict(zip(counts["source"], counts["batches"]))
    rows += [("quarantined_batches", None, source, quarantined.get(source, 0), 1)
             for source in sorted(set(sources["source"]) | set(quarantined))]
    readable = sources["error"].isna() | (sources["error"] == "")
    lag = sources["oldest_pending_s"]
    # Nothing waiting is no lag; a source that cannot be read has no lag to tell (its own check says so).
    rows += [("ingest_lag_s", None, s, 0.0 if pd.isna(v) else v, 1)
             for s, v, ok in zip(sources["source"], lag, readable) if ok or pd.notna(v)]
    rows += [("stream_pending", None, s, v, 1) for s, v in zip(sources["source"], sources["stream_pending"])
             if pd.notna(v)]
    rows += [("ingest_source_up", None, s, 1.0 if ok else 0.0, 1) for s, ok in zip(sources["source"], readable)]
    # A collector reports its sources every ~10 s: its newest report, whatever the source, says it lives.
    # With several (a lake), each is judged on its own, so one gone silent shows while another reports.
    reports = collector_reports(con, since=until - REPORTING_LOOKBACK, until=until)
    named = reports["collector"].notna()
    if named.sum() > 1:
        rows += [("collector_silent_s", None, f"collector {r.collector}", r.report_age_s, 1)
                 for r in reports[named].itertuples()]
    elif not reports.empty:
        rows.append(("collector_silent_s", None, "collector", reports["report_age_s"].min(), 1))
    return rows


def current_health(
    con: duckdb.DuckDBPyConnection,
    *,
    now: datetime | None = None,
    window_s: float = 300,
    thresholds=None,
    cost=None,
) -> pd.DataFrame:
    """The assessed checks of the window [now - window_s, now) (naive UTC; default: utcnow()).
    `thresholds` default to load_thresholds() (the packaged ones, $PERFDECK_THRESHOLDS and the
    environment); `cost` (collectors.config.CostSettings) brings the budgets, none when None."""
    from collectors.health.assess import assess
    from collectors.health.thresholds import load_thresholds
    from collectors.store import utcnow

    now = now or utcnow()
    measured = health_measurements(
        con, since=now - timedelta(seconds=window_s), until=now,
        daily_budget=getattr(cost, "daily_budget", None), monthly_budget=getattr(cost, "monthly_budget", None))
    return assess(measured, thresholds if thresholds is not None else load_thresholds(), now=now)


def health_checks(
    con: duckdb.DuckDBPyConnection, *, until: datetime, window_s: float, config_path: str | None = None,
) -> pd.DataFrame:
    """The assessed checks (collectors.health.ASSESSED_COLUMNS, worst first) of [until - window_s, until),
    with the thresholds and budgets of the config at `config_path` (default $PERFDECK_CONFIG or
    perfdeck.toml). A broken thresholds file raises its ThresholdsError (a ValueError)."""
    from collectors import config
    from collectors.health.settings import configured_thresholds

    return current_health(con, now=until, window_s=window_s, thresholds=configured_thresholds(config_path),
                          cost=config.cost_settings(config.load(config_path)))


def alert_evaluation(config: dict) -> Callable[[duckdb.DuckDBPyConnection, datetime], pd.DataFrame]:
    """What the collector's alert engine judges each tick, from a loaded perfdeck.toml: the current health
    over the [alerts] window (its thresholds file, the [cost] budgets) and, unless turned off, the deploy
    regressions. Wired by the command line and the demo (`collectors.health.alerts.AlertEngine.tick`)."""
    from collectors.config import cost_settings
    from collectors.health.settings import alert_settings
    from collectors.health.thresholds import load_thresholds
    from dashboard.queries.compare import regression_checks

    settings = alert_settings(config)
    thresholds = load_thresholds(Path(settings.thresholds_file))
    cost = cost_settings(config)

    def evaluate(con: duckdb.DuckDBPyConnection, now: datetime) -> pd.DataFrame:
        assessed = current_health(con, now=now, window_s=settings.window_s, thresholds=thresholds, cost=cost)
        if not settings.deploy_regressions:
            return assessed
        regressions = regression_checks(con, now=now, span=settings.regression_span_s)
        return pd.concat([assessed, regressions], ignore_index=True) if len(regressions) else assessed

    return evaluate
