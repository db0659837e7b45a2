"""Compaction of the per-minute rollups, and the hour and day tiers of the request and LLM rollups.

Every ingest transaction appends its own rollup rows, so a minute fed by many small batches holds many
rows per key. Sums stay right either way; compaction merges them into one row per key so queries over
months scan what they need, not every flush the daemon ever made.

`roll_tiers` merges complete hours of the request minutes into the hour tier and complete days of
hours into the day tier (collectors.store.tiers), incrementally past a watermark, and merges again
any period that received late minutes, so every tier counts each request exactly once."""
from __future__ import annotations

from datetime import datetime, timedelta

import duckdb

from collectors.store import llm_rollup
from collectors.store.tiers import DAY, HOUR, TIERED, TIERS, ceil, floor, rolled_until, set_mark
from collectors.store.tiers import table as tier_table

# table -> (key columns, merged value expressions)
ROLLUPS: dict[str, tuple[str, str]] = {
    "latency_hist": ("minute, service, endpoint, bucket", "sum(count)"),
    "request_rollup": ("minute, service, endpoint",
                       "sum(requests), sum(errors), sum(duration_sum_ms), max(duration_max_ms)"),
    "cache_stats": ("minute, service, host, cache, namespace",
                    "sum(hits), sum(misses), sum(lookups_timed), sum(lookup_ms_sum), max(lookup_ms_max)"),
    "query_hist": ("minute, service, fingerprint, bucket", "sum(count)"),
    "llm_rollup": (f"minute, {llm_rollup.KEYS}", llm_rollup.MERGED),
}
# query_stats keeps its column order: key columns are not contiguous.
_QUERY_STATS = """
    SELECT minute, service, database, fingerprint, any_value(sample_sql), sum(calls), sum(total_ms),
           min(min_ms), max(max_ms)
    FROM query_stats
    WHERE minute >= ? AND minute < ?
    GROUP BY minute, service, database, fingerprint
"""


def mergeable(con: duckdb.DuckDBPyConnection) -> dict[str, int]:
    """Rows compact() would remove from each rollup table over all time: the preview of a full compaction."""
    keys = {table: k for table, (k, _) in ROLLUPS.items()} | {"query_stats": "minute, service, database, fingerprint",
                                                                "llm_user_day": "day, service, user_id"}
    return {table: con.execute(f"SELECT (SELECT count(*) FROM {table}) - "
                               f"(SELECT count(*) FROM (SELECT DISTINCT {k} FROM {table}))").fetchone()[0]
            for table, k in keys.items()}


def compact(con: duckdb.DuckDBPyConnection, since: datetime, until: datetime) -> int:
    """Merge duplicate rollup rows with minute in [since, until); returns rows removed."""
    removed = 0
    for table, (keys, values) in ROLLUPS.items():
        removed += _rewrite(con, table, f"SELECT {keys}, {values} FROM {table} "
                                        "WHERE minute >= ? AND minute < ? GROUP BY ALL", since, until)
    removed += _rewrite(con, "query_stats", _QUERY_STATS, since, until)
    # Users' spend is kept per day: the days the range touches.
    days = (floor(since, DAY), ceil(until, DAY))
    removed += _rewrite(con, "llm_user_day", f"SELECT day, service, user_id, {llm_rollup.USER_MERGED} "
                                             "FROM llm_user_day WHERE day >= ? AND day < ? GROUP BY ALL", *days, "day")
    return removed


def _rewrite(con: duckdb.DuckDBPyConnection, table: str, merged_sql: str, since, until, time: str = "minute") -> int:
    before = con.execute(f"SELECT count(*) FROM {table} WHERE {time} >= ? AND {time} < ?",
                         [since, until]).fetchone()[0]
    if before == 0:
        return 0
    con.execute(f"CREATE OR REPLACE TEMP TABLE _merged AS {merged_sql}", [since, until])
    after = con.execute("SELECT count(*) FROM _merged").fetchone()[0]
    if after < before:
        con.execute(f"DELETE FROM {table} WHERE {time} >= ? AND {time} < ?", [since, until])
        con.execute(f"INSERT INTO {table} SELECT * FROM _merged")
    con.execute("DROP TABLE _merged")
    return before - after


# --- Hour and day tiers (collectors.store.tiers) ---------------------------------------------------
LATE_GRACE = timedelta(minutes=2)   # an hour is merged once it ended this long ago: its stragglers are in
_EPOCH = datetime(1970, 1, 1)


def roll_tiers(con: duckdb.DuckDBPyConnection, now: datetime,
               touched: tuple[datetime, datetime] | None = None) -> dict[str, int]:
    """Bring the hour and day tiers up to date with the minutes. `touched` is the [since, until) of
    the minutes written since the last run (None: check every hour still held in minutes).

    1. Minute rows older than the "minute_purge" mark arrived after retention had purged their hour:
       they are added into their hour rows (and day rows, when their day is rolled), then deleted
       like the rest of their hour's minutes.
    2. Rolled hours (within `touched`) whose minute totals differ from their hour rows got late
       minutes: they are merged again from their minutes, and their rolled days from their hours.
    3. Complete hours (ended LATE_GRACE before `now`) after the "hour" mark are merged from their
       minutes, and the mark moves past them.
    4. Complete days of rolled hours after the "day" mark are merged from their hours; the mark moves.

    Every step rebuilds whole periods from their source, so a second run changes nothing."""
    marks = rolled_until(con)
    done = settle_late(con, touched, marks)

    target = floor(now - LATE_GRACE, HOUR)
    done["hours_rolled"] = _advance(con, "hour", marks["hour"] or _first(con, "minute", HOUR), target)
    hour_mark = target if done["hours_rolled"] else marks["hour"]
    day_target = floor(hour_mark, DAY) if hour_mark else None
    done["days_rolled"] = _advance(con, "day", marks["day"] or _first(con, "hour", DAY), day_target)
    return done


def settle_late(con: duckdb.DuckDBPyConnection, touched: tuple[datetime, datetime] | None,
                marks: dict | None = None) -> dict[str, int]:
    """Steps 1 and 2 of roll_tiers: minutes written into periods already rolled (or purged) counted in
    their hours and days. Ingest runs it itself for LLM calls of rolled hours, which the collector's
    tier job is not told about (it hears of the minutes of requests, caches and queries)."""
    marks = marks or rolled_until(con)
    done = {"late_rows": _merge_late(con, marks)}
    stale = _stale_hours(con, marks, touched)
    for lo, hi in _runs(stale, HOUR):
        _rebuild(con, "hour", lo, hi)
    stale_days = sorted({floor(h, DAY) for h in stale if marks["day"] and h < marks["day"]})
    for lo, hi in _runs(stale_days, DAY):
        _rebuild(con, "day", lo, hi)
    return done | {"hours_rebuilt": len(stale), "days_rebuilt": len(stale_days)}


def _advance(con, tier: str, start: datetime | None, target: datetime | None) -> int:
    """Merge the periods [start, target) into `tier` and move its mark; returns how many."""
    if start is None or target is None or start >= target:
        return 0
    _rebuild(con, tier, start, target)
    set_mark(con, tier, target)
    return (target - start) // TIERS[tier]


def _rebuild(con, tier: str, lo: datetime, hi: datetime) -> None:
    """Replace `tier`'s rows in [lo, hi) by the merge of the next finer tier's rows."""
    finer = "minute" if tier == "hour" else "hour"
    for minutes, (keys, values, _) in TIERED.items():
        con.execute(f"DELETE FROM {tier_table(minutes, tier)} WHERE {tier} >= ? AND {tier} < ?", [lo, hi])
        con.execute(f"""
            INSERT INTO {tier_table(minutes, tier)}
            SELECT date_trunc('{tier}', {finer}), {keys}, {values}
            FROM {tier_table(minutes, finer)}
            WHERE {finer} >= ? AND {finer} < ?
            GROUP BY ALL
        """, [lo, hi])


def _first(con, tier: str, width) -> datetime | None:
    """The start of the first period (of `width`) holding a row of `tier`."""
    first = con.execute(" UNION ALL ".join(f"SELECT min({tier}) FROM {tier_table(t, tier)}" for t in TIERED)
                        ).fetchall()
    starts = [row[0] for row in first if row[0] is not None]
    return floor(min(starts), width) if starts else None


def _stale_hours(con, marks: dict, touched) -> list[datetime]:
    """Rolled hours whose minutes add up to other totals than their hour rows (late minutes)."""
    if marks["hour"] is None:
        return []
    lo = max(marks["minute_purge"] or _EPOCH, floor(touched[0], HOUR) if touched else _EPOCH)
    hi = min(marks["hour"], ceil(touched[1], HOUR) if touched else marks["hour"])
    if lo >= hi:
        return []
    stale: set[datetime] = set()
    for minutes, (_, _, total) in TIERED.items():
        stale.update(h for (h,) in con.execute(f"""
            WITH m AS (
                SELECT date_trunc('hour', minute) AS hour, sum({total}) AS n
                FROM {minutes}
                WHERE minute >= $lo AND minute < $hi
                GROUP BY 1
            ),
            h AS (
                SELECT hour, sum({total}) AS n
                FROM {tier_table(minutes, "hour")}
                WHERE hour >= $lo AND hour < $hi
                GROUP BY 1
            )
            SELECT coalesce(m.hour, h.hour)
            FROM m
            FULL JOIN h ON m.hour = h.hour
            WHERE m.n IS DISTINCT FROM h.n
        """, {"lo": lo, "hi": hi}).fetchall())
    return sorted(stale)


def _merge_late(con, marks: dict) -> int:
    """Step 1 of roll_tiers: minute rows before the purge mark, added into their rolled hours and
    days, then deleted. Returns the minute rows merged."""
    purged, rolled_days = marks["minute_purge"], marks["day"]
    if purged is None or marks["hour"] is None:
        return 0
    merged = 0
    for minutes, (keys, values, _) in TIERED.items():
        late = con.execute(f"SELECT count(*) FROM {minutes} WHERE minute < ?", [purged]).fetchone()[0]
        if not late:
            continue
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE _late AS
            SELECT date_trunc('hour', minute) AS hour, {keys}, {values}
            FROM {minutes}
            WHERE minute < ?
            GROUP BY ALL
        """, [purged])
        _add_rows(con, minutes, "hour", "SELECT * FROM _late")
        if rolled_days is not None:
            _add_rows(con, minutes, "day", f"""
                SELECT date_trunc('day', hour) AS day, {keys}, {values}
                FROM _late
                WHERE hour < ?
                GROUP BY ALL
            """, [rolled_days])
        con.execute("DROP TABLE _late")
        con.execute(f"DELETE FROM {minutes} WHERE minute < ?", [purged])
        merged += late
    return merged


def _add_rows(con, minutes: str, tier: str, delta_sql: str, params=()) -> None:
    """Add the rows of `delta_sql` (the tier's columns) into the tier table, one row per key."""
    keys, values, _ = TIERED[minutes]
    dst = tier_table(minutes, tier)
    con.execute(f"CREATE OR REPLACE TEMP TABLE _delta AS {delta_sql}", list(params))
    con.execute(f"""
        CREATE OR REPLACE TEMP TABLE _merged AS
        SELECT {tier}, {keys}, {values}
        FROM (
            SELECT * FROM {dst} WHERE {tier} IN (SELECT {tier} FROM _delta)
            UNION ALL BY NAME
            SELECT * FROM _delta
        )
        GROUP BY ALL
    """)
    con.execute(f"DELETE FROM {dst} WHERE {tier} IN (SELECT {tier} FROM _delta)")
    con.execute(f"INSERT INTO {dst} SELECT * FROM _merged")
    con.execute("DROP TABLE _delta")
    con.execute("DROP TABLE _merged")


def _runs(starts: list[datetime], width) -> list[tuple[datetime, datetime]]:
    """Sorted period starts as [lo, hi) runs of consecutive periods."""
    runs: list[list[datetime]] = []
    for start in starts:
        if runs and runs[-1][1] == start:
            runs[-1][1] = start + width
        else:
            runs.append([start, start + width])
    return [(lo, hi) for lo, hi in runs]
