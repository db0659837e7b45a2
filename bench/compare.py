"""What a comparison costs: compare_windows on raw events against the histogram-only path.

    .venv/bin/python bench/compare.py [EVENTS_PER_SIDE] [ENDPOINTS]     defaults: 200,000 events, 4 endpoints

A fresh store (temporary directory) gets two adjacent one-hour windows of EVENTS_PER_SIDE request
events each, spread evenly over ENDPOINTS endpoints (lognormal durations; the first endpoint ×1.3
slower in the after window), written as the collector writes them: request_events and the per-minute
latency_hist buckets. Then, on one read-only connection, it times
dashboard.queries.compare_windows(con, before=..., after=...) with

    histogram   now = 30 days later, so the raw events are past retention: histograms only (reference)
    raw         now = the end of the after window: raw events, at most 20,000 per endpoint and side
    raw, all    the same with max_sample = EVENTS_PER_SIDE: every duration goes into the test

and checks that each finds the regression on the first endpoint and nothing else. Every timing is
the best of REPEATS runs (candidates round-robin, gc.collect() before each); wall time from
perf_counter, CPU from process_time (all threads: DuckDB uses every core). Nothing is asserted beyond
the verdicts; the numbers are printed, with each candidate's time as a multiple of the reference's."""
from __future__ import annotations

import gc
import os
import platform
import sys
import tempfile
import time
from datetime import datetime, timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb
import numpy as np
import pandas as pd

from collectors.store import migrate, read, write
from collectors.store.histogram import BUCKET_SQL
from dashboard.queries import compare_windows

EVENTS = int(sys.argv[1]) if len(sys.argv) > 1 else 200_000
ENDPOINTS = int(sys.argv[2]) if len(sys.argv) > 2 else 4
REPEATS = 5
START = datetime(2026, 1, 5, 10, 0)
BEFORE = (START, START + timedelta(hours=1))
AFTER = (START + timedelta(hours=1), START + timedelta(hours=2))


def seed(path: Path) -> None:
    rng = np.random.default_rng(0)
    frames = []
    for side, (since, _) in (("before", BEFORE), ("after", AFTER)):
        for i in range(ENDPOINTS):
            n = EVENTS // ENDPOINTS
            durations = rng.lognormal(np.log(20 + 30 * i), 0.5, n) * (1.3 if side == "after" and i == 0 else 1.0)
            frames.append(pd.DataFrame({
                "ts": pd.Timestamp(since) + pd.to_timedelta(np.sort(rng.uniform(0, 3600, n)), unit="s"),
                "endpoint": f"/endpoint-{i}", "duration_ms": durations}))
    events = pd.concat(frames, ignore_index=True)
    with write(path) as con:
        migrate(con)
        con.register("events", events)
        con.execute("INSERT INTO request_events (ts, service, host, endpoint, method, status, duration_ms) "
                    "SELECT ts, 'bench', 'h', endpoint, 'GET', 200, duration_ms FROM events")
        con.execute(f"INSERT INTO latency_hist SELECT date_trunc('minute', ts), 'bench', endpoint, "
                    f"{BUCKET_SQL.format(col='duration_ms')}, count(*) FROM events GROUP BY ALL")


def run(con: duckdb.DuckDBPyConnection, now: datetime, max_sample: int) -> pd.DataFrame:
    return compare_windows(con, before=BEFORE, after=AFTER, now=now, max_sample=max_sample)


def main() -> None:
    candidates = {  # name: (now, max_sample)
        "histogram": (AFTER[1] + timedelta(days=30), 20_000),
        "raw": (AFTER[1], 20_000),
        "raw, all": (AFTER[1], EVENTS),
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "bench.duckdb"
        seed(path)
        best = {name: (float("inf"), float("inf")) for name in candidates}
        with read(path) as con:
            for _ in range(REPEATS):
                for name, (now, cap) in candidates.items():
                    gc.collect()
                    wall, cpu = time.perf_counter(), time.process_time()
                    df = run(con, now, cap)
                    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
                    best[name] = (min(best[name][0], wall), min(best[name][1], cpu))
                    flagged = df.loc[df["verdict"] == "regression", "endpoint"].tolist()
                    assert flagged == ["/endpoint-0"], (name, flagged)
                    assert set(df["method"]) == {"histogram" if name == "histogram" else "raw"}, name
    print(f"compare_windows, {EVENTS:,} events per window over {ENDPOINTS} endpoints; best of {REPEATS}; "
          f"{platform.python_implementation()} {platform.python_version()}, duckdb {duckdb.__version__}, "
          f"{os.cpu_count()} cpus")
    print("| path | s | cpu s | × histogram time |")
    print("|---|---:|---:|---:|")
    ref = best["histogram"][0]
    for name, (wall, cpu) in best.items():
        print(f"| {name} | {wall:.3f} | {cpu:.3f} | {wall / ref:.2f} |")


if __name__ == "__main__":
    main()
