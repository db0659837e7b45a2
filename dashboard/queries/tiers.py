"""Which tier of the request rollups a range reads: the coarsest that resolves it.

`LATENCY_ROWS` and `ROLLUP_ROWS` are SQL relations over the minute, hour and day tables
(collectors.store.tiers) with a `time` column (the row's minute, hour or day start), and
`tier_params` picks, per range and chart step, which part of [since, until) each tier covers:

    [since, hour_from)           minutes   the ragged start
    [hour_from, day_from)        hours
    [day_from, day_until)        days      whole days, up to the day watermark
    [day_until, hour_until)      hours     whole hours, up to the hour watermark
    [hour_until, until)          minutes   the ragged end, and what the tier job has not rolled yet

Hours are used only when the chart step is a whole number of hours, days only when it is a whole
number of days (None: a single figure over the range, any tier). Where a range's edge is older than
the minute retention, the edge hour is read whole (no minutes are left to cut it), and likewise a day
beyond the hour retention; `chart_step` raises a chart's step to what such a range can still show,
and to a day for ranges over a month.
So a 400-day range reads ~400 day rows per series, never 576,000 minutes."""
from __future__ import annotations

from datetime import datetime, timedelta

import duckdb

from collectors.store import utcnow
from collectors.store.retention import retention_days
from collectors.store.tiers import DAY, HOUR, ceil, floor, rolled_until
from dashboard.queries._run import bucket_seconds

_PARTS = (("minute", "", "$since", "$tier_hour_from"),
          ("hour", "_hour", "$tier_hour_from", "$tier_day_from"),
          ("day", "_day", "$tier_day_from", "$tier_day_until"),
          ("hour", "_hour", "$tier_day_until", "$tier_hour_until"),
          ("minute", "", "$tier_hour_until", "$until"))


DAY_STEPS_FROM = timedelta(days=31)    # charts over longer ranges take a point a day


def _rows(minute_table: str, columns: str) -> str:
    # Five plain range scans rather than one OR'ed filter: each prunes by its table's time column.
    return "\n    UNION ALL\n    ".join(
        f"SELECT {time} AS time, {columns} FROM {minute_table}{suffix} WHERE {time} >= {lo} AND {time} < {hi}"
        for time, suffix, lo, hi in _PARTS)


LATENCY_ROWS = _rows("latency_hist", "service, endpoint, bucket, count")
ROLLUP_ROWS = _rows("request_rollup", "service, endpoint, requests, errors, duration_sum_ms, duration_max_ms")


def _held_from(now: datetime) -> tuple[datetime, datetime]:
    """Since when minutes, and since when hours, are still held (retention purges whole periods)."""
    days = retention_days()
    return floor(now - days["minute"] * DAY, HOUR), floor(now - days["hour"] * DAY, DAY)


def tier_params(
    con: duckdb.DuckDBPyConnection,
    since: datetime,
    until: datetime,
    *,
    step: int | None = None,
    now: datetime | None = None,
) -> dict[str, datetime]:
    """The $tier_* parameters of LATENCY_ROWS / ROLLUP_ROWS for [since, until) at chart step `step`
    seconds (None: one figure over the whole range)."""
    marks = rolled_until(con)
    minutes_from, hours_from = _held_from(now or utcnow())
    hour_from = floor(since, HOUR) if since < minutes_from else ceil(since, HOUR)
    hour_until = ceil(until, HOUR) if until < minutes_from else floor(until, HOUR)
    hour_until = min(hour_until, marks["hour"]) if marks["hour"] else hour_from
    if (step is not None and step % 3600) or hour_until <= hour_from:
        return dict.fromkeys(("tier_hour_from", "tier_day_from", "tier_day_until", "tier_hour_until"), until)
    day_from = floor(since, DAY) if since < hours_from else ceil(since, DAY)
    day_until = ceil(until, DAY) if until < hours_from else floor(until, DAY)
    day_until = min(day_until, marks["day"]) if marks["day"] else day_from
    if (step is not None and step % 86400) or day_until <= day_from:
        day_from = day_until = hour_from
    else:
        hour_from, hour_until = min(hour_from, day_from), max(hour_until, day_until)
    return {"tier_hour_from": hour_from, "tier_day_from": day_from, "tier_day_until": day_until,
            "tier_hour_until": hour_until}


def chart_step(since: datetime, until: datetime, now: datetime | None = None) -> int:
    """`bucket_seconds` for the range, raised to a day beyond DAY_STEPS_FROM (a point a day reads
    day rows: ~400 per series at 400 days, where 6-hour points would read every hour), and to what
    the tiers still hold at the range's start: an hour where it is older than the minutes kept, a
    day where it is older than the hours kept."""
    step = bucket_seconds(since, until)
    minutes_from, hours_from = _held_from(now or utcnow())
    if since < hours_from or until - since > DAY_STEPS_FROM:
        return max(step, 86400)
    if since < minutes_from:
        return max(step, 3600)
    return step
