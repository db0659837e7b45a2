"""What `GET /metrics` costs with 1,000 endpoints, beside a plain query of the same rows.

    .venv/bin/python bench/metrics.py [ENDPOINTS] [REPEATS]      defaults: 1000 endpoints, 30 repeats

A fresh store (temporary directory) gets five minutes of requests for ENDPOINTS endpoints (lognormal
durations, ~20 requests a minute each, their per-minute histograms and rollups written the way the
collector writes them, tests/seed_store.py's store_events), in two layouts:

    spread     10 services of ENDPOINTS / 10 endpoints: every endpoint named (under the cap)
    one        one service of ENDPOINTS endpoints: MAX_ENDPOINTS named, the rest under "(other)"

Round-robin over the candidates (repeat r of every row before repeat r + 1 of any), each timed on one
open read connection (perf_counter, medians with min-max):

    reference  the plain query of the same rows: SELECT * FROM latency_hist of the window, fetched
    render     collectors.http.metrics.render (its queries and the text), health left out
    GET        GET /metrics from a Listener on loopback: the read connection of its own, the health
               assessment of perfdeck health, render, the HTTP round trip

Nothing is asserted; the numbers are printed."""
from __future__ import annotations

import platform
import statistics
import sys
import tempfile
import time
import urllib.request
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from seed_store import store_events  # noqa: E402

from collectors.cli.health import assessment  # noqa: E402
from collectors.http import HttpSettings, Listener  # noqa: E402
from collectors.http.metrics import MAX_ENDPOINTS, render, window  # noqa: E402
from collectors.store import migrate, read, utcnow, write  # noqa: E402

ENDPOINTS = int(sys.argv[1]) if len(sys.argv) > 1 else 1000
REPEATS = int(sys.argv[2]) if len(sys.argv) > 2 else 30
PER_MINUTE = 20


def seed(path: Path, services: int, now) -> int:
    rng = np.random.default_rng(3)
    minute = now.replace(second=0, microsecond=0)
    per_service = ENDPOINTS // services
    names = [(f"svc-{s}", f"GET /api/v1/resource-{e}/{{id}}") for s in range(services) for e in range(per_service)]
    n = len(names) * 5 * PER_MINUTE
    which = np.repeat(np.arange(len(names)), 5 * PER_MINUTE)
    ages = np.tile(np.repeat(np.arange(5), PER_MINUTE), len(names))
    events = pd.DataFrame({
        "ts": [minute - timedelta(minutes=int(a)) for a in ages],
        "service": [names[i][0] for i in which],
        "endpoint": [names[i][1] for i in which],
        "status": np.where(rng.random(n) < 0.01, 500, 200),
        "duration_ms": rng.lognormal(np.log(40 + which % 200), 0.8),
    })
    with write(path) as con:
        migrate(con)
        store_events(con, events)
    return n


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    now = utcnow()
    since, until = window(now)
    window_s, assess = assessment({})
    rows, listeners = {}, []
    with tempfile.TemporaryDirectory() as tmp:
        stores = {}
        for layout, services in (("spread", 10), ("one", 1)):
            stores[layout] = Path(tmp) / f"{layout}.duckdb"
            events = seed(stores[layout], services, now)
            listener = Listener(HttpSettings("127.0.0.1", 0), stores[layout], health=assess, window_s=window_s).start()
            listeners.append(listener)
            url = f"http://127.0.0.1:{listener.address[1]}/metrics"
            with read(stores[layout]) as con:
                hist_rows = con.execute("SELECT count(*) FROM latency_hist WHERE minute >= ? AND minute < ?",
                                        [since, until]).fetchone()[0]
                size = len(render(con, now=now))
            print(f"{layout}: {ENDPOINTS} endpoints, {events} requests, {hist_rows} latency_hist rows, "
                  f"exposition {size / 1024:.0f} KiB")

            rows[(layout, "reference")] = ("query", stores[layout])
            rows[(layout, "render")] = ("render", stores[layout])
            rows[(layout, "GET /metrics")] = ("get", url)
        times: dict = {key: [] for key in rows}
        for _ in range(REPEATS):
            for key, (kind, target) in rows.items():
                if kind == "get":
                    times[key].append(timed(lambda u=target: urllib.request.urlopen(u, timeout=60).read()))
                    continue
                with read(target) as con:
                    if kind == "query":
                        times[key].append(timed(lambda c=con: c.execute(
                            "SELECT * FROM latency_hist WHERE minute >= ? AND minute < ?", [since, until]).fetchall()))
                    else:
                        times[key].append(timed(lambda c=con: render(c, now=now)))
        for listener in listeners:
            listener.stop()
    print(f"\n{platform.python_implementation()} {platform.python_version()}, {REPEATS} repeats, "
          f"MAX_ENDPOINTS {MAX_ENDPOINTS}; ms, median (min-max)")
    for (layout, what), values in times.items():
        ms = [v * 1000 for v in values]
        print(f"  {layout:7} {what:13} {statistics.median(ms):8.1f}  ({min(ms):.1f}-{max(ms):.1f})")


if __name__ == "__main__":
    main()
