"""A realistic synthetic perfdeck store for dashboard tests and for looking at the dashboard.

    from seed_store import seed_store
    events = seed_store("/tmp/perfdeck.duckdb")
    events.groupby(["service", "endpoint"]).duration_ms   # raw durations to compare against numpy

Or from a shell:  .venv/bin/python tests/seed_store.py /tmp/perfdeck.duckdb
"""
from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from collectors.store import migrate, utcnow, write
from collectors.store.histogram import BUCKET_SQL

# service, endpoint, median ms, lognormal sigma, requests per minute at the daily peak, error share
ENDPOINTS = [
    ("api", "GET /products", 18.0, 0.45, 36.0, 0.004),
    ("api", "GET /products/{id}", 11.0, 0.40, 24.0, 0.003),
    ("api", "GET /search", 42.0, 0.60, 16.0, 0.010),
    ("api", "POST /checkout", 120.0, 0.50, 6.0, 0.020),
    ("api", "POST /chat", 850.0, 0.55, 4.0, 0.030),
    ("worker", "task send_email", 65.0, 0.35, 8.0, 0.005),
    ("worker", "task build_report", 2400.0, 0.40, 1.2, 0.015),
]

# (age, service, version, host); api 1.5.0 makes POST /checkout slower, 1.5.1 fixes it.
DEPLOYS = [
    (timedelta(days=2, hours=4), "api", "v1.4.0", "web-1"),
    (timedelta(hours=30), "worker", "v0.9.0", "worker-1"),
    (timedelta(hours=20), "api", "v1.5.0", "web-1"),
    (timedelta(hours=3), "api", "v1.5.1", "web-1"),
]
REGRESSION = ("api", "POST /checkout", 1.6)  # latency factor between v1.5.0 and v1.5.1


def make_events(*, now: datetime, days: float = 3, seed: int = 7) -> pd.DataFrame:
    """Raw request events [ts, service, endpoint, status, duration_ms] for `days` full minutes
    before `now` (naive UTC): lognormal durations, a daily traffic cycle, a deploy regression."""
    rng = np.random.default_rng(seed)
    end = now.replace(second=0, microsecond=0)
    minutes = pd.date_range(end=end - timedelta(minutes=1), periods=int(days * 1440), freq="min")
    deploy_at = {(s, v): end - age for age, s, v, _ in DEPLOYS}
    slow_from, slow_to = deploy_at[("api", "v1.5.0")], deploy_at[("api", "v1.5.1")]
    # A daily cycle busiest at the v1.5.0 deploy whatever the clock says, so the hours around it hold
    # enough requests for a stable p95 (at 4 a.m. POST /checkout would see ~40 requests an hour).
    hours = (minutes - slow_from) / pd.Timedelta(hours=1)
    daily = 0.55 + 0.45 * np.cos(hours.to_numpy() / 24 * 2 * np.pi)
    frames = []
    for service, endpoint, median, sigma, peak_rate, error_share in ENDPOINTS:
        counts = rng.poisson(peak_rate * daily)
        ts = np.repeat(minutes.to_numpy(), counts)
        n = len(ts)
        ts = ts + (rng.uniform(0, 60, n) * 1e6).astype("timedelta64[us]")
        duration = rng.lognormal(np.log(median), sigma, n)
        if (service, endpoint) == REGRESSION[:2]:
            ts_index = pd.DatetimeIndex(ts)
            duration[(ts_index >= slow_from) & (ts_index < slow_to)] *= REGRESSION[2]
        status = np.where(rng.uniform(size=n) < error_share, 500, 200)
        frames.append(pd.DataFrame({
            "ts": ts.astype("datetime64[us]"),
            "service": service,
            "endpoint": endpoint,
            "status": status.astype("int16"),
            "duration_ms": duration,
        }))
    return pd.concat(frames, ignore_index=True).sort_values("ts", ignore_index=True)


def seed_store(path: str | os.PathLike, *, now: datetime | None = None, days: float = 3) -> pd.DataFrame:
    """Create (migrate) the store at `path` and fill request_events, latency_hist, request_rollup
    and deploys the way the daemon would. Returns the raw events (see `make_events`)."""
    now = now or utcnow()
    events = make_events(now=now, days=days)
    end = now.replace(second=0, microsecond=0)
    deploys = pd.DataFrame(
        [(end - age, service, version, host) for age, service, version, host in DEPLOYS],
        columns=["ts", "service", "version", "host"],
    )
    with write(path) as con:
        migrate(con)
        store_events(con, events)
        con.register("seed_deploys", deploys)
        con.execute("INSERT INTO deploys SELECT ts, service, version, host FROM seed_deploys")
        con.unregister("seed_deploys")
    return events


def store_events(con, events: pd.DataFrame) -> None:
    """Raw request events [ts, service, endpoint, status, duration_ms] into request_events,
    latency_hist and request_rollup, the way the daemon writes them."""
    bucket = BUCKET_SQL.format(col="duration_ms")
    con.register("seed_events", events)
    con.execute("""
        INSERT INTO request_events (ts, service, host, endpoint, method, status, duration_ms)
        SELECT ts, service, 'web-1', endpoint, split_part(endpoint, ' ', 1), status, duration_ms
        FROM seed_events
    """)
    con.execute(f"""
        INSERT INTO latency_hist
        SELECT date_trunc('minute', ts), service, endpoint, {bucket}, count(*)
        FROM seed_events
        GROUP BY ALL
    """)
    con.execute("""
        INSERT INTO request_rollup
        SELECT date_trunc('minute', ts), service, endpoint, count(*),
               count(*) FILTER (WHERE status >= 500), sum(duration_ms), max(duration_ms)
        FROM seed_events
        GROUP BY ALL
    """)
    con.unregister("seed_events")


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "data/perfdeck.duckdb"
    seeded = seed_store(target)
    print(f"seeded {target}: {len(seeded)} requests over {seeded.endpoint.nunique()} endpoints")
