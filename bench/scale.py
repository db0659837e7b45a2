"""Every read query the pages run, timed on a store of a given size, beside exact percentiles from the
raw events measured in the same run.

    .venv/bin/python bench/scale.py [--events N] [--days D] [--series S] [--store FILE [--migrate]] [--keep]

defaults: 2,000,000 raw events over the last 7 days, 90 days of per-minute history, 30 endpoints x 4
services. --store reuses a store built before (with --keep) instead of building one; --migrate applies this
code's pending migrations to it first (a store kept by an older checkout, measured before and after).

Building (untimed, through the store's own write path):
- raw: N request events with ids, one LLM call per 5 requests (same id), a cache lookup per 10,
  encoded by collectors.sdk.batch.encode as the SDK's flusher would, priced by the collector's price
  book, and written by collectors.store.ingest.write_batches in transactions of 50 batches of 10,000 events; this writes
  the raw events and their per-minute rollups as the collector does.
- history: the D days before the raw window, per-minute rows of `latency_hist` and `request_rollup`
  (one bucket spread per series and minute, ~12 buckets) and LLM calls (one per series and minute),
  inserted by SQL in the shape ingest gives them, with the LLM spend rollups made from those calls
  (collectors.store.llm_rollup.rebuild, when the store has them); then the store's rollup job
  (collectors.store.rollups.compact over everything, and the tier job when the store has one) runs
  as the collector would run it.

Timed: each query function of dashboard.queries that a page calls with a time range, at 1 h, 24 h,
7 d, 30 d, 90 d and the whole history (and budget_status, which takes no range, at now), on a
read-only connection opened for it (first call = a fresh connection, then the median of REPEATS
warm calls), and `quantile_cont` over the raw events of the same range for reference (only for ranges
inside the raw window). Nothing is asserted; a table is printed."""
from __future__ import annotations

import argparse
import inspect
import random
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb

import dashboard.queries as q
from collectors.pricing import PriceBook
from collectors.sdk.batch import encode
from collectors.store import connection, migrate, rollups
from collectors.store.ingest import decode, write_batches
from collectors.store.schema import Limits

try:
    from collectors.store import llm_rollup
except ImportError:     # a store from before the LLM spend rollups: its calls alone
    llm_rollup = None

REPEATS = 3
BATCH = 10_000
RAW_DAYS = 7
RANGES = {"1 h": timedelta(hours=1), "24 h": timedelta(days=1), "7 d": timedelta(days=7), "30 d": timedelta(days=30),
          "90 d": timedelta(days=90)}
# Query functions that need more than a range, and what to give them here.
EXTRA = {"compute_costs": {"usd_per_core_hour": 0.05}, "cost_export": {"by": "day"}, "forecast_period": None,
         "request_calls": None, "typical_percentiles": None, "run_query": None, "bucket_seconds": None, "deploy_windows": None,
         "compare_windows": None, "budget_status": None}
RAW_REFERENCE = """
SELECT service, endpoint, count(*), quantile_cont(duration_ms, [0.5, 0.95, 0.99])
FROM request_events WHERE ts >= ? AND ts < ? GROUP BY ALL
"""


def utcnow() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


def series(n: int) -> list[tuple[str, str]]:
    services = [f"svc-{i}" for i in range(4)]
    return [(services[i % 4], f"/api/v1/resource-{i}/{{id}}") for i in range(n)]


def build_raw(path: Path, events: int, keys: list[tuple[str, str]], now: float) -> None:
    rng = random.Random(7)
    span = RAW_DAYS * 86_400.0
    limits = Limits()
    book = PriceBook.load(None)
    written, batches = 0, []
    t0 = time.perf_counter()
    for start in range(0, events, BATCH):
        n = min(BATCH, events - start)
        service = keys[(start // BATCH) % len(keys)][0]
        mine = [k for k in keys if k[0] == service]
        ts0 = now - span + span * start / events
        step = span / events
        requests, llm, cache = [], [], []
        for i in range(n):
            ts = ts0 + i * step
            endpoint = mine[i % len(mine)][1]
            rid = f"{start + i:016x}"
            requests.append((ts, endpoint, rng.lognormvariate(3.5 + (i % len(mine)) * 0.05, 0.6), 200, "GET", rid, None))
            if i % 5 == 0:
                llm.append((ts, "openai", "gpt-4o-mini", 800, 200, 300, rid, endpoint, f"u{i % 500}", False, 650.0, 0))
            if i % 10 == 0:
                cache.append((ts, "lru", None, i % 3 > 0, 0.05))
        _, payload, _ = encode(service=service, host=f"{service}-1", pid=1, sent_at=ts0, requests=requests, llm=llm,
                               cache=cache)
        batch = decode(payload, limits, now)
        book.price_frame(batch.llm)           # as the collector prices each batch
        batches.append(batch)
        if len(batches) == 50 or start + n >= events:
            with connection.write(path) as con:
                written += write_batches(con, batches, "bench")
            batches = []
            print(f"  raw: {written:,} events written, {time.perf_counter() - t0:.0f} s", file=sys.stderr)


def build_history(path: Path, days: int, keys: list[tuple[str, str]], now: datetime) -> None:
    """Per-minute rows for the `days` before the raw window, as ingest writes them (one row per key)."""
    end = now.replace(second=0, microsecond=0) - timedelta(days=RAW_DAYS)
    start = end - timedelta(days=days)
    with connection.write(path) as con:
        con.execute("CREATE TEMP TABLE keys (k INTEGER, service VARCHAR, endpoint VARCHAR)")
        con.executemany("INSERT INTO keys VALUES (?, ?, ?)", [(i, s, e) for i, (s, e) in enumerate(keys)])
        minutes = f"SELECT unnest(range(TIMESTAMP '{start}', TIMESTAMP '{end}', INTERVAL 1 MINUTE)) AS minute"
        con.execute(f"""
            INSERT INTO latency_hist
            SELECT m.minute, k.service, k.endpoint, 175 + k.k % 10 + b.i, 1 + (b.i * 7 + k.k) % 5
            FROM ({minutes}) AS m, keys AS k, range(12) AS b(i)
        """)
        con.execute(f"""
            INSERT INTO request_rollup
            SELECT m.minute, k.service, k.endpoint, 36, 0, 36 * 40.0, 120.0
            FROM ({minutes}) AS m, keys AS k
        """)
        con.execute(f"""
            INSERT INTO llm_calls BY NAME
            SELECT m.minute AS ts, k.service, k.service || '-1' AS host, 'openai' AS provider,
                   'gpt-4o-mini' AS model, 800 AS input_tokens, 200 AS output_tokens, 300 AS cached_input_tokens,
                   NULL AS request_id, k.endpoint, 'u' || (k.k % 50) AS user_id, false AS cache_hit,
                   650.0 AS latency_ms, 0 AS cache_write_tokens, 0.0000855 AS input_cost_usd,
                   0.00012 AS output_cost_usd, 0.0002055 AS cost_usd, 0.0000225 AS saved_usd,
                   'bench' AS price_version, m.minute AS priced_at
            FROM ({minutes}) AS m, keys AS k
        """)
        if llm_rollup is not None:      # what ingest keeps beside the calls (stores that have it)
            llm_rollup.rebuild(con, start, end)
        rollups.compact(con, datetime(1970, 1, 1), datetime(9999, 1, 1))
        tiers = getattr(rollups, "roll_tiers", None)
        if tiers is not None:
            tiers(con, utcnow())


def query_functions() -> dict:
    """name -> (function, kwargs) of every dashboard query taking since/until (and what else it needs)."""
    found = {}
    for name in q.__all__:
        fn = getattr(q, name)
        if EXTRA.get(name, {}) is None or not callable(fn):
            continue
        params = inspect.signature(fn).parameters
        if "since" in params and "until" in params:
            found[name] = (fn, EXTRA.get(name, {}))
    return found


def timed(fn, *args, **kwargs) -> float:
    t0 = time.perf_counter()
    fn(*args, **kwargs)
    return (time.perf_counter() - t0) * 1000


def fetch(con: duckdb.DuckDBPyConnection, sql: str, params: list) -> list:
    return con.execute(sql, params).fetchall()


def measure(path: Path, history_days: int) -> None:
    now = utcnow()
    ranges = dict(sorted({**RANGES, f"{RAW_DAYS + history_days} d": timedelta(days=RAW_DAYS + history_days)}.items(),
                         key=lambda item: item[1]))
    functions = query_functions()
    print(f"\nms per call: first on a fresh read connection / median of {REPEATS} warm")
    print(f"{'query':<26}" + "".join(f"{label:>18}" for label in ranges))
    for name, (fn, extra) in sorted(functions.items()):
        cells = []
        for span in ranges.values():
            kwargs = {"since": now - span, "until": now, **extra}
            with duckdb.connect(str(path), read_only=True) as con:      # fresh: nothing of the file loaded yet
                try:
                    first = timed(fn, con, **kwargs)
                    warm = statistics.median(timed(fn, con, **kwargs) for _ in range(REPEATS))
                    cells.append(f"{first:>8.0f} /{warm:>7.0f}")
                except Exception as exc:    # a query over its time limit says so, and the others go on
                    cells.append(f"{type(exc).__name__[:16]:>18}")
        print(f"{name:<26}" + "".join(f"{c:>18}" for c in cells))
    cells = []
    for span in ranges.values():
        if span > timedelta(days=RAW_DAYS):
            cells.append(f"{'(no raw)':>18}")
            continue
        with duckdb.connect(str(path), read_only=True) as con:
            fetch(con, RAW_REFERENCE, [now - span, now])
            warm = statistics.median(timed(fetch, con, RAW_REFERENCE, [now - span, now]) for _ in range(REPEATS))
        cells.append(f"{'':>8} /{warm:>7.0f}")
    print(f"{'ref: quantile_cont on raw':<26}" + "".join(f"{c:>18}" for c in cells))
    # budget_status takes no range: "today" and "this month" at now (its figures span up to a month).
    with duckdb.connect(str(path), read_only=True) as con:
        kwargs = {"now": now, "daily_budget": 100.0, "monthly_budget": 3000.0}
        first = timed(q.budget_status, con, **kwargs)
        warm = statistics.median(timed(q.budget_status, con, **kwargs) for _ in range(REPEATS))
    print(f"{'budget_status (now)':<26}{first:>8.0f} /{warm:>7.0f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--days", type=int, default=90, help="days of per-minute history before the raw window")
    ap.add_argument("--series", type=int, default=30, help="endpoints, spread over 4 services")
    ap.add_argument("--store", type=Path, help="a store built before: measure only")
    ap.add_argument("--keep", action="store_true", help="keep the built store and print its path")
    ap.add_argument("--migrate", action="store_true",
                    help="with --store: first bring it to this code's schema, as the collector does at start")
    args = ap.parse_args()
    if args.store:
        if args.migrate:
            t0 = time.perf_counter()
            with connection.write(args.store) as con:
                applied = migrate(con)
            print(f"migrated: {', '.join(applied) or 'nothing to do'} in {time.perf_counter() - t0:.0f} s")
        measure(args.store, args.days)
        return
    folder = Path(tempfile.mkdtemp(prefix="perfdeck-scale-"))
    path = folder / "perfdeck.duckdb"
    keys = series(args.series)
    t0 = time.perf_counter()
    with connection.write(path) as con:
        migrate(con)
    build_raw(path, args.events, keys, time.time())
    build_history(path, args.days, keys, utcnow())
    with duckdb.connect(str(path), read_only=True) as con:
        hist = con.execute("SELECT count(*) FROM latency_hist").fetchone()[0]
    size = path.stat().st_size / 2**30
    print(f"store: {args.events:,} raw events, {args.days} days of history, {len(keys)} series; "
          f"{hist:,} minute histogram rows; {size:.2f} GiB; built in {time.perf_counter() - t0:.0f} s")
    measure(path, args.days)
    if args.keep:
        print(f"kept: {path}")
    else:
        path.unlink()
        folder.rmdir()


if __name__ == "__main__":
    main()
