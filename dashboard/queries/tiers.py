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


def _rows(minute_table: str, columns: str, since: str = "$since", until: str = "$until") -> str:
    # Five plain range scans rather than one OR'ed filter: each prunes by its table's time column.
    return "\n    UNION ALL\n    ".join(
        f"SELECT {time} AS time, {columns} FROM {minute_table}{suffix} WHERE {time} >= {lo} AND {time} < {hi}"
        for time, suffix, lo, hi in ((t, s, since if lo == "$since" else lo, until if hi == "$until" else hi)
                                     for t, s, lo, hi in _PARTS))


LATENCY_ROWS = _rows("latency_hist", "service, endpoint, bucket, count")
ROLLUP_ROWS = _rows("request_rollup", "service, endpoint, requests, errors, duration_sum_ms, duration_max_ms")
# The LLM spend rollup over [$roll_since, $roll_until): whole periods only (`exact_params`).
LLM_ROWS = _rows("llm_rollup", "service, endpoint, provider, model, price_version, cache_hit, priced, calls, "
                 "calls_in_requests, input_tokens, output_tokens, cached_input_tokens, cache_write_tokens, cost_usd, "
                 "cost_in_requests_usd, saved_usd, latency_sum_ms, latency_count, timed_output_tokens, "
                 "timed_latency_ms, first_ts, last_ts", "$roll_since", "$roll_until")


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
    held: tuple[datetime, datetime] | None = None,
) -> dict[str, datetime]:
    """The $tier_* parameters of LATENCY_ROWS / ROLLUP_ROWS for [since, until) at chart step `step`
    seconds (None: one figure over the whole range). `held`: since when minutes and hours are kept,
    when not the request rollups' retention."""
    marks = rolled_until(con)
    minutes_from, hours_from = held or _held_from(now or utcnow())
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


def exact_params(
    con: duckdb.DuckDBPyConnection,
    since: datetime,
    until: datetime,
    *,
    step: int | None = None,
    now: datetime | None = None,
) -> dict[str, datetime]:
    """The parameters of LLM_ROWS for sums that must equal those of the raw rows of [since, until):
    $roll_since and $roll_until bound the whole periods the tiers hold (minutes; hours where minutes
    are no longer kept, days where hours are not), the caller reads the raw rows of [since,
    $roll_since) and [$roll_until, until), and the $tier_* parameters say which tier covers what.
    `step` as for tier_params; a step the kept tier cannot draw is read from raw rows there (a step
    of seconds, everywhere). LLM spend keeps its hours as long as its days."""
    now = now or utcnow()
    minutes_from, _ = _held_from(now)
    hours_from = floor(now - retention_days()["rollup"] * DAY, DAY)
    lo, hi = _minute(since, up=True), _minute(until, up=False)
    hours_ok = step is None or step % 3600 == 0
    days_ok = step is None or step % 86400 == 0
    if lo < minutes_from:
        lo = ceil(lo, HOUR) if hours_ok else minutes_from
    if lo < hours_from:
        lo = ceil(lo, DAY) if days_ok else hours_from
    if hi < minutes_from:
        hi = floor(hi, HOUR) if hours_ok else lo
    if hi < hours_from:
        hi = floor(hi, DAY) if days_ok else lo
    if (step is not None and step % 60) or lo >= hi:
        lo = hi = until     # all raw
    return {"roll_since": lo, "roll_until": hi,
            **tier_params(con, lo, hi, step=step, now=now, held=(minutes_from, hours_from))}


def _minute(ts: datetime, *, up: bool) -> datetime:
    start = ts.replace(second=0, microsecond=0)
    return start + timedelta(minutes=1) if up and start != ts else start


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
