"""Latency percentiles from the rollup tiers, against the minute table alone and exact quantile_cont on raw.

    .venv/bin/python bench/tiers.py [SERIES] [DAYS] [RAW_DAYS] [RATE]
                                    defaults: 120 series, 90 days, 7 raw days, rate x3 (~70 M events,
                                    built in about a minute on 2 cores)

Untimed set-up, in a temporary directory: a store (schema migrated) gets DAYS days, ending now, of
synthetic request events for SERIES endpoints over 4 services. Each endpoint has its own rate (RATE x 0.05
to 3 requests a minute, so sparse and busy series both) and lognormal durations (median 10 ms to 1 s).
The events are generated in DuckDB a few days at a time and written the way ingest writes them
(collectors/store/ingest.py `_write_requests`): grouped by (minute, service, endpoint, bucket) with
the store's own BUCKET_SQL into `latency_hist`, and by (minute, service, endpoint) into
`request_rollup`; the events of the last RAW_DAYS days also go into `request_events`. The minute
tier is kept whole (no retention runs), so the minute table alone can be timed over every range.
Then the tier job (collectors.store.rollups.roll_tiers) runs once, timed: the backfill of DAYS days.

Timed, on one read-only connection, for ranges of 1 h, 24 h, 7 d, 30 d and 90 d ending now, each the
best of REPEATS runs (candidates round-robin, gc before each):

    endpoint_percentiles and latency_over_time (dashboard.queries.latency):
      shipped     the function as the pages call it (raw events for ranges up to 3 h, else tiers)
      tiers       its histogram SQL over the tiers (hours and days where they resolve the range)
      minutes     the same SQL with every tier parameter at `until`: the minute table alone
      raw         exact quantile_cont over request_events (only where the range lies in RAW_DAYS)

Printed: milliseconds, the ratios minutes / tiers and raw / tiers, the histogram rows each path
reads, and the largest relative difference of p50/p95/p99 between the tiers and raw (per endpoint)."""
from __future__ import annotations

import gc
import os
import platform
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb
import numpy as np

from collectors.store import migrate, read, utcnow, write
from collectors.store.histogram import BUCKET_SQL
from collectors.store.rollups import roll_tiers
from dashboard.queries import latency
from dashboard.queries._run import run_query
from dashboard.queries.tiers import LATENCY_ROWS, chart_step, tier_params

SERIES = int(sys.argv[1]) if len(sys.argv) > 1 else 120
DAYS = int(sys.argv[2]) if len(sys.argv) > 2 else 90
RAW_DAYS = int(sys.argv[3]) if len(sys.argv) > 3 else 7
RATE = float(sys.argv[4]) if len(sys.argv) > 4 else 3.0
CHUNK_DAYS = 5
REPEATS = 3
RANGES = [("1 h", timedelta(hours=1)), ("24 h", timedelta(hours=24)), ("7 d", timedelta(days=7)),
          ("30 d", timedelta(days=30)), ("90 d", timedelta(days=90))]

# One row per event: minute m (from the chunk start), series s, slot k of SLOTS per minute kept with
# the series' rate / SLOTS; durations lognormal (Box-Muller), statuses 1 % 500.
SLOTS = max(6, int(6 * RATE))
EVENTS_SQL = f"""
CREATE OR REPLACE TEMP TABLE _events AS
SELECT $start + to_microseconds(CAST(m * 60e6 + random() * 60e6 AS BIGINT)) AS ts,
       'svc-' || (s % 4) AS service,
       'endpoint-' || s AS endpoint,
       CAST(CASE WHEN random() < 0.01 THEN 500 ELSE 200 END AS SMALLINT) AS status,
       exp(ln(10 * pow(100, s / {SERIES})) + 0.7 * sqrt(-2 * ln(1 - random())) * cos(2 * pi() * random()))
           AS duration_ms
FROM range(CAST($minutes AS BIGINT)) t(m), range({SERIES}) u(s), range({SLOTS}) v(k)
WHERE random() < {RATE} * (0.05 + 2.95 * ((s * 37) % {SERIES}) / {SERIES}) / {SLOTS}
"""
GROUPS_SQL = f"""
CREATE OR REPLACE TEMP TABLE _groups AS
SELECT date_trunc('minute', ts) AS minute, service, endpoint,
       {BUCKET_SQL.format(col='duration_ms')} AS bucket, count(*) AS requests,
       count(*) FILTER (WHERE status >= 500) AS errors, sum(duration_ms) AS duration_sum_ms,
       max(duration_ms) AS duration_max_ms
FROM _events
GROUP BY ALL
"""


def build(path: Path, now) -> int:
    start = (now - timedelta(days=DAYS)).replace(second=0, microsecond=0)
    raw_from = now - timedelta(days=RAW_DAYS)
    events = 0
    with write(path) as con:
        migrate(con)
    for day in range(0, DAYS, CHUNK_DAYS):
        chunk_start = start + timedelta(days=day)
        minutes = min(CHUNK_DAYS, DAYS - day) * 1440
        with write(path) as con:
            con.execute(EVENTS_SQL, {"start": chunk_start, "minutes": minutes})
            con.execute("DELETE FROM _events WHERE ts >= ?", [now])
            events += con.execute("SELECT count(*) FROM _events").fetchone()[0]
            con.execute("""
                INSERT INTO request_events (ts, service, host, endpoint, method, status, duration_ms)
                SELECT ts, service, 'host-1', endpoint, 'GET', status, duration_ms FROM _events WHERE ts >= ?
            """, [raw_from])
            con.execute(GROUPS_SQL)
            con.execute("INSERT INTO latency_hist SELECT minute, service, endpoint, bucket, requests FROM _groups")
            con.execute("""
                INSERT INTO request_rollup
                SELECT minute, service, endpoint, sum(requests), sum(errors), sum(duration_sum_ms),
                       max(duration_max_ms)
                FROM _groups
                GROUP BY ALL
            """)
        print(f"  built {min(day + CHUNK_DAYS, DAYS):>3}/{DAYS} days, {events:,} events", end="\r", flush=True)
    print()
    return events


RAW_PERCENTILES_SQL = """
SELECT service, endpoint, count(*) AS requests,
       quantile_cont(duration_ms, [0.5, 0.95, 0.99]) AS p
FROM request_events
WHERE ts >= $since AND ts < $until
GROUP BY ALL
"""
RAW_OVER_TIME_SQL = """
SELECT time_bucket(to_seconds(CAST($bucket_s AS BIGINT)), ts) AS time, count(*) AS requests,
       quantile_cont(duration_ms, [0.5, 0.95, 0.99]) AS p
FROM request_events
WHERE ts >= $since AND ts < $until
GROUP BY ALL
"""
ROWS_SQL = f"SELECT count(*) FROM ({LATENCY_ROWS})"


def round_robin(fns: dict) -> tuple[dict[str, float], dict]:
    """name -> best milliseconds of REPEATS runs, candidates taking turns; and each one's result."""
    ms, results = dict.fromkeys(fns, float("inf")), {}
    for _ in range(REPEATS):
        for name, fn in fns.items():
            gc.collect()
            t0 = time.perf_counter()
            results[name] = fn()
            ms[name] = min(ms[name], (time.perf_counter() - t0) * 1000)
    return ms, results


def candidates(con, since, until, now) -> dict[str, dict]:
    """name -> {query -> callable} for one range."""
    tiers = tier_params(con, since, until, now=now)
    minutes_only = dict.fromkeys(tiers, until)
    step = chart_step(since, until, now=now)
    step_tiers = tier_params(con, since, until, step=step, now=now)
    scope = {"since": since, "until": until}
    ranked = scope | {"service": None}
    charted = scope | {"service": None, "endpoint": None, "bucket_s": step}

    def query(sql, params):
        return lambda: run_query(sql, params, max_rows=100_000, con=con)[0]

    out = {
        "shipped": {"percentiles": lambda: latency.endpoint_percentiles(con, since=since, until=until),
                    "over time": lambda: latency.latency_over_time(con, since=since, until=until)},
        "tiers": {"percentiles": query(latency.ENDPOINT_PERCENTILES_SQL, ranked | tiers),
                  "over time": query(latency.LATENCY_OVER_TIME_SQL, charted | step_tiers)},
        "minutes": {"percentiles": query(latency.ENDPOINT_PERCENTILES_SQL, ranked | minutes_only),
                    "over time": query(latency.LATENCY_OVER_TIME_SQL, charted | minutes_only)},
    }
    if since >= now - timedelta(days=RAW_DAYS):
        out["raw"] = {"percentiles": query(RAW_PERCENTILES_SQL, scope),
                      "over time": query(RAW_OVER_TIME_SQL, scope | {"bucket_s": step})}
    return out


def worst_error(tiered, raw) -> float:
    merged = tiered.merge(raw, on=["service", "endpoint"], suffixes=("", "_raw"))
    exact = np.array(merged["p"].tolist())
    got = merged[["p50_ms", "p95_ms", "p99_ms"]].to_numpy()
    return float(np.max(np.abs(got / exact - 1))) if len(merged) else float("nan")


def main() -> None:
    print(f"perfdeck bench/tiers.py: {SERIES} series x {DAYS} days of minute histograms (rate x{RATE:g}), raw "
          f"events for the last {RAW_DAYS} days; {platform.machine()}, {os.cpu_count()} cores, duckdb {duckdb.__version__}")
    now = utcnow().replace(second=0, microsecond=0)     # whole minutes: raw and histograms hold the same requests
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "perfdeck.duckdb"
        t0 = time.perf_counter()
        events = build(path, now)
        print(f"build: {time.perf_counter() - t0:.0f} s, {events:,} events")
        t0 = time.perf_counter()
        with write(path) as con:
            done = roll_tiers(con, now)
        print(f"roll_tiers (backfill): {time.perf_counter() - t0:.1f} s, {done}")
        with read(path) as con:
            sizes = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                     for t in ("request_events", "latency_hist", "latency_hist_hour", "latency_hist_day")}
            print("rows: " + ", ".join(f"{t} {n:,}" for t, n in sizes.items()))
            print()
            header = (f"{'range':>5} {'query':<12} {'shipped':>9} {'tiers':>9} {'minutes':>9} {'raw':>9} "
                      f"{'min/tier':>9} {'raw/tier':>9} {'rows tier':>11} {'rows min':>11} {'max err':>8}")
            print(header)
            print("-" * len(header))
            for label, span in [(label, span) for label, span in RANGES if span <= timedelta(days=DAYS)]:
                until = now
                since = until - span
                cands = candidates(con, since, until, now)
                tiers = tier_params(con, since, until, now=now)
                rows_tier = con.execute(ROWS_SQL, {"since": since, "until": until} | tiers).fetchone()[0]
                rows_min = con.execute(ROWS_SQL, {"since": since, "until": until}
                                       | dict.fromkeys(tiers, until)).fetchone()[0]
                for query in ("percentiles", "over time"):
                    ms, results = round_robin({name: fns[query] for name, fns in cands.items()})
                    err = ""
                    if query == "percentiles" and "raw" in results:
                        err = f"{worst_error(results['tiers'], results['raw']) * 100:.2f} %"
                    raw = ms.get("raw")
                    raw_ms = f"{raw:.1f}" if raw else "n/a"
                    raw_ratio = f"{raw / ms['tiers']:.1f}x" if raw else "n/a"
                    print(f"{label:>5} {query:<12} {ms['shipped']:>9.1f} {ms['tiers']:>9.1f} {ms['minutes']:>9.1f} "
                          f"{raw_ms:>9} {ms['minutes'] / ms['tiers']:>8.1f}x {raw_ratio:>9} {rows_tier:>11,} "
                          f"{rows_min:>11,} {err:>8}")


if __name__ == "__main__":
    main()
