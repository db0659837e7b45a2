"""The ingest pipeline: every loss between an app and the store, and the state of each source.

Losses are counted where they happen:
- the SDK (sdk_health, one row per batch that carries its self-report): events it dropped (buffer or
  retry backlog full), sends that failed (retried: a loss only once they turn into drops), events it
  refused at record time, by reason. All CUMULATIVE per process since it started;
- the collector (ingest_rejects): rows dropped from otherwise good batches, by kind and reason. Rows
  without a batch are notes: things in a source that were no batch (a directory in the spool), repairs
  (a stale temp file removed, a consumer group recreated), stream entries deleted unread, samples for
  a table the collector does not write;
- quarantine: whole batches that could not be read or written.
ingest_sources has one row per source about every 10 s from the collector: the backlog, the age of
the oldest waiting batch (the ingest lag) and, by being there at all, that the collector is alive."""
from __future__ import annotations

from datetime import datetime

import duckdb
import pandas as pd

from dashboard.queries._run import run_query

# The SDK's counters are cumulative per process (service, host, pid). What a range adds is, for each
# report in it, the difference from the same process's previous report, found before the range when
# needed. A report smaller than the previous one in any counter is a restarted process (its counters
# start again at 0): it adds all it says, as does a process's first report ever (it counted from 0).
# A tick writes all its batches with one ts; a process's counters only grow, so they order the ties.
_SDK_REPORTS = """
WITH in_range AS (
    SELECT ts, service, host, pid, dropped, send_errors, coalesce(rejected, 0) AS rejected, rejected_reasons
    FROM sdk_health
    WHERE ts >= $since
      AND ts < $until
      AND ($service IS NULL OR service = $service)
),
processes AS (
    SELECT DISTINCT service, host, pid
    FROM in_range
),
baseline AS (
    SELECT h.service,
           h.host,
           h.pid,
           arg_max({'ts': h.ts, 'dropped': h.dropped, 'send_errors': h.send_errors,
                    'rejected': coalesce(h.rejected, 0), 'rejected_reasons': h.rejected_reasons},
                   (h.ts, h.dropped, h.send_errors, coalesce(h.rejected, 0))) AS last
    FROM sdk_health AS h
    JOIN processes AS p
      ON h.service = p.service
     AND h.host IS NOT DISTINCT FROM p.host
     AND h.pid IS NOT DISTINCT FROM p.pid
    WHERE h.ts < $since
    GROUP BY h.service, h.host, h.pid
),
reports AS (
    SELECT false AS counted, service, host, pid, last.ts AS ts, last.dropped AS dropped,
           last.send_errors AS send_errors, last.rejected AS rejected, last.rejected_reasons AS rejected_reasons
    FROM baseline
    UNION ALL
    SELECT true, service, host, pid, ts, dropped, send_errors, rejected, rejected_reasons
    FROM in_range
),
steps AS (
    SELECT *,
           lag(dropped) OVER process AS dropped_before,
           lag(send_errors) OVER process AS send_errors_before,
           lag(rejected) OVER process AS rejected_before,
           lag(rejected_reasons) OVER process AS reasons_before
    FROM reports
    WINDOW process AS (PARTITION BY service, host, pid ORDER BY ts, dropped, send_errors, rejected)
),
increments AS (
    SELECT *,
           dropped_before IS NULL
               OR dropped < dropped_before
               OR send_errors < send_errors_before
               OR rejected < rejected_before AS from_zero
    FROM steps
    WHERE counted
)
"""

SDK_LOSSES_SQL = _SDK_REPORTS + """
SELECT service,
       count(DISTINCT (host, pid)) AS processes,
       sum(CASE WHEN from_zero THEN dropped ELSE dropped - dropped_before END)::BIGINT AS dropped,
       sum(CASE WHEN from_zero THEN send_errors ELSE send_errors - send_errors_before END)::BIGINT AS send_errors,
       sum(CASE WHEN from_zero THEN rejected ELSE rejected - rejected_before END)::BIGINT AS rejected,
       max(ts) AS last_report
FROM increments
GROUP BY service
ORDER BY service
"""

# The same per reason: {"queries:bad_duration": 3} counts from 0 like the totals; "kind:reason".
SDK_REJECT_REASONS_SQL = _SDK_REPORTS + """,
per_reason AS (
    SELECT service,
           from_zero,
           unnest(map_keys(now_map)) AS key,
           unnest(map_values(now_map)) AS events,
           before_map
    FROM (
        SELECT service,
               from_zero,
               TRY_CAST(rejected_reasons AS MAP(VARCHAR, BIGINT)) AS now_map,
               TRY_CAST(reasons_before AS MAP(VARCHAR, BIGINT)) AS before_map
        FROM increments
    )
    WHERE now_map IS NOT NULL
),
added AS (
    SELECT service,
           key,
           CASE
               WHEN from_zero THEN events
               WHEN events < coalesce(before_map[key], 0) THEN events
               ELSE events - coalesce(before_map[key], 0)
           END AS events
    FROM per_reason
)
SELECT service,
       CASE WHEN contains(key, ':') THEN split_part(key, ':', 1) END AS kind,
       CASE WHEN contains(key, ':') THEN substr(key, strpos(key, ':') + 1) ELSE key END AS reason,
       sum(events)::BIGINT AS events
FROM added
GROUP BY ALL
HAVING sum(events) > 0
ORDER BY events DESC, service, kind, reason
"""


def sdk_losses(
    con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime, service: str | None = None,
) -> pd.DataFrame:
    """[service, processes, dropped, send_errors, rejected, last_report]: per service, what its SDKs
    counted in [since, until) (reports received in it): events dropped, failed sends (retried), events
    refused at record time; `processes` that reported, and the time of the last report."""
    params = {"since": since, "until": until, "service": service}
    df, _ = run_query(SDK_LOSSES_SQL, params, con=con)
    return df


def sdk_reject_reasons(
    con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime, service: str | None = None,
) -> pd.DataFrame:
    """[service, kind, reason, events]: events the SDKs refused in [since, until), by kind (requests,
    queries... or None) and reason, most first."""
    params = {"since": since, "until": until, "service": service}
    df, _ = run_query(SDK_REJECT_REASONS_SQL, params, con=con)
    return df


COLLECTOR_REJECTS_SQL = """
SELECT b.service,
       r.kind,
       r.reason,
       sum(r.count)::BIGINT AS rows,
       count(DISTINCT r.batch_id) AS batches,
       max(r.ts) AS last_seen
FROM ingest_rejects AS r
LEFT JOIN ingested_batches AS b USING (batch_id)
WHERE r.batch_id IS NOT NULL
  AND r.ts >= $since
  AND r.ts < $until
  AND ($service IS NULL OR b.service = $service)
GROUP BY ALL
ORDER BY rows DESC, b.service, r.kind, r.reason
"""


def collector_rejects(
    con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime, service: str | None = None,
) -> pd.DataFrame:
    """[service, kind, reason, rows, batches, last_seen]: rows the collector dropped from good batches
    in [since, until), by the sending service, kind (requests, cache, queries, llm...) and reason, most
    first. `service` is None for a batch it cannot be traced to."""
    params = {"since": since, "until": until, "service": service}
    df, _ = run_query(COLLECTOR_REJECTS_SQL, params, con=con)
    return df


SOURCE_NOTES_SQL = """
SELECT kind,
       reason,
       sum(count)::BIGINT AS count,
       min(ts) AS first_seen,
       max(ts) AS last_seen
FROM ingest_rejects
WHERE batch_id IS NULL
  AND ts >= $since
  AND ts < $until
GROUP BY kind, reason
ORDER BY last_seen DESC, kind, reason
"""


def source_notes(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime) -> pd.DataFrame:
    """[kind, reason, count, first_seen, last_seen]: what the collector counted in [since, until) that
    belongs to no batch (kind "spool": a directory, a fifo, a stale temp file removed...; "stream":
    entries deleted before they were read, the consumer group recreated; "samples": rows for a table it
    does not write; "otlp": bodies POSTed to /v1/traces it refused, and the spans it ignored), the latest
    first."""
    df, _ = run_query(SOURCE_NOTES_SQL, {"since": since, "until": until}, con=con)
    return df


QUARANTINED_SQL = """
SELECT ts, source, name, reason
FROM quarantine
WHERE ts >= $since
  AND ts < $until
ORDER BY ts DESC, source, name
"""


def quarantined_batches(
    con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime, max_rows: int = 1_000,
) -> pd.DataFrame:
    """[ts, source, name, reason] of the batches quarantined in [since, until), newest first (the
    files are in the quarantine folder beside the spool, each with a .reason.txt)."""
    df, _ = run_query(QUARANTINED_SQL, {"since": since, "until": until}, max_rows=max_rows, con=con)
    return df


QUARANTINE_COUNTS_SQL = """
SELECT source, count(*) AS batches
FROM quarantine
WHERE ts >= $since
  AND ts < $until
GROUP BY source
ORDER BY source
"""


def quarantine_counts(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime) -> pd.DataFrame:
    """[source, batches]: how many batches each source quarantined in [since, until)."""
    df, _ = run_query(QUARANTINE_COUNTS_SQL, {"since": since, "until": until}, con=con)
    return df


# `since` bounds how old a source's last report may be: a source the collector no longer reads stops
# reporting, and its last row is history, not state.
SOURCES_SQL = """
SELECT source,
       pending,
       oldest_pending_s,
       stream_length,
       stream_pending,
       error,
       ts AS last_report,
       epoch($until - ts) AS report_age_s
FROM ingest_sources
WHERE ts >= $since
  AND ts < $until
QUALIFY row_number() OVER (PARTITION BY source ORDER BY ts DESC) = 1
ORDER BY source
"""


def ingest_sources(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime) -> pd.DataFrame:
    """[source, pending, oldest_pending_s, stream_length, stream_pending, error, last_report,
    report_age_s]: the latest report of each source in [since, until). `oldest_pending_s` is the ingest
    lag (None: nothing waiting), the stream columns are None for a spool, `report_age_s` is how long
    before `until` the collector last reported it."""
    df, _ = run_query(SOURCES_SQL, {"since": since, "until": until}, con=con)
    return df


# Reports written before collectors named themselves (NULL) count as one unnamed collector.
COLLECTORS_SQL = """
SELECT collector,
       max(ts) AS last_report,
       epoch($until - max(ts)) AS report_age_s
FROM ingest_sources
WHERE ts >= $since
  AND ts < $until
GROUP BY collector
ORDER BY collector NULLS FIRST
"""


def collector_reports(con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime) -> pd.DataFrame:
    """[collector, last_report, report_age_s]: each collector's latest report of its sources in [since, until)
    (several on a lake; `collector` is its --consumer name or host, None for reports from before names)."""
    df, _ = run_query(COLLECTORS_SQL, {"since": since, "until": until}, con=con)
    return df


# Batches still known by id (the raw window), and per minute those whose ids were purged: a batch
# is in exactly one of the two (retention moves it in the purging transaction).
LAST_BATCHES_SQL = """
WITH batches AS (
    SELECT service, 1 AS batches, events, ingested_at
    FROM ingested_batches
    WHERE ingested_at >= $since
      AND ingested_at < $until
    UNION ALL
    SELECT service, batches, events, last_ingested_at
    FROM ingest_rollup
    WHERE minute >= $since
      AND minute < $until
)
SELECT service,
       sum(batches)::BIGINT AS batches,
       sum(events)::BIGINT AS events,
       max(ingested_at) AS last_batch,
       epoch($until - max(ingested_at)) AS silent_s
FROM batches
WHERE service IS NOT NULL
  AND ($service IS NULL OR service = $service)
GROUP BY service
ORDER BY service
"""


def last_batches(
    con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime, service: str | None = None,
) -> pd.DataFrame:
    """[service, batches, events, last_batch, silent_s]: per service that sent a batch in [since, until),
    how many and their events, when the last one was stored and how long before `until` that was."""
    params = {"since": since, "until": until, "service": service}
    df, _ = run_query(LAST_BATCHES_SQL, params, con=con)
    return df


SERVICE_COLUMNS = ["service", "batches", "events", "last_batch", "silent_s", "dropped", "send_errors",
                   "sdk_rejected", "collector_rejected"]
_COUNTS = ["batches", "events", "dropped", "send_errors", "sdk_rejected", "collector_rejected"]


def service_losses(
    con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime, service: str | None = None,
    batches: pd.DataFrame | None = None, sdk: pd.DataFrame | None = None, rejects: pd.DataFrame | None = None,
) -> pd.DataFrame:
    """SERVICE_COLUMNS, one row per service with a batch, an SDK report or a reject in [since, until):
    batches and events stored, the last batch, what its SDKs dropped, failed to send and refused, and
    the rows the collector rejected. Counts are whole numbers, 0 when nothing was counted. Pass the
    frames of last_batches, sdk_losses and collector_rejects when already queried."""
    scope = {"since": since, "until": until, "service": service}
    batches = last_batches(con, **scope) if batches is None else batches
    sdk = sdk_losses(con, **scope) if sdk is None else sdk
    rejects = collector_rejects(con, **scope) if rejects is None else rejects
    per_service = rejects.dropna(subset=["service"]).groupby("service", as_index=False)["rows"].sum()
    df = (batches[["service", "batches", "events", "last_batch", "silent_s"]]
          .merge(sdk[["service", "dropped", "send_errors", "rejected"]].rename(columns={"rejected": "sdk_rejected"}),
                 on="service", how="outer")
          .merge(per_service.rename(columns={"rows": "collector_rejected"}), on="service", how="outer"))
    df[_COUNTS] = df[_COUNTS].fillna(0).astype("int64")
    return df[SERVICE_COLUMNS].sort_values("service", kind="stable").reset_index(drop=True)
