"""A store whose health over the 5 minutes before `now` is known exactly, for the health tests.

    from seed_health import seed_health, EXPECTED
    seed_health(path, now=now)     # EXPECTED: (check, service, subject, value, samples) measured

Every figure is chosen so it can be checked by hand: /search's p95 is 740 ms (36 requests of 100 ms and
4 of 740 ms: quantile_cont's 95th percentile of 40 values lies between the 38th and 39th), the Redis
instance "cache" made 2,340 hits in 3,000 lookups (its first rate covers 2 minutes since the sample
before the window), and so on. Rows outside the window are there to prove they are left out.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta
from decimal import Decimal

from seed_cost import CALL_COLUMNS, EVENT_COLUMNS, call, event, store_rollups

from collectors.store import llm_rollup, migrate, request_costs, write

WINDOW = timedelta(minutes=5)
API, WORKER = "shop-api", "worker"
COST_PER_CALL = "0.12"

# What health_measurements gives for the seeded window (value exact up to float rounding).
EXPECTED = [
    ("request_p95_ms", API, "/checkout", 5000.0, 10),
    ("request_p95_ms", API, "/products/{id}", 80.0, 50),
    ("request_p95_ms", API, "/recommendations", 300.0, 10),
    ("request_p95_ms", API, "/search", 740.0, 40),
    ("error_rate", API, "/checkout", 0.0, 10),
    ("error_rate", API, "/products/{id}", 0.02, 50),
    ("error_rate", API, "/recommendations", 0.0, 10),
    ("error_rate", API, "/search", 0.0, 40),
    ("job_wait_s", WORKER, "job:send_receipt", 45.0, 20),
    ("job_failure_rate", WORKER, "job:daily_report", 0.2, 10),
    ("job_failure_rate", WORKER, "job:send_receipt", 0.0, 20),
    ("cache_hit_rate", API, "customer_lru", 0.95, 100),
    ("cache_hit_rate", API, "product_lru", 0.62, 100),
    ("cache_hit_rate", API, "tiny_lru", 0.5, 10),
    ("cache_hit_rate", None, "cache", 0.78, 3000),
    ("cache_lookup_ms", API, "product_lru", 2.5, 100),
    ("cache_lookup_ms", API, "tiny_lru", 100.0, 10),
    ("cache_entries", API, "product_lru", 12000.0, 2),
    ("host_cpu_percent", None, "web-1", 91.0, 2),
    ("host_disk_percent", None, "web-1:/", 96.0, 2),
    ("host_memory_percent", None, "web-1", 50.0, 1),
    ("cost_per_query_usd", API, "/recommendations", 0.12, 10),
    ("component_up", None, "redis cache", 1.0, 1),
    ("component_up", None, "redis queue", 0.0, 1),
]


def _insert(con, table: str, columns: tuple[str, ...], rows: list) -> None:
    rows = [[r[c] for c in columns] if isinstance(r, dict) else list(r) for r in rows]
    con.executemany(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})", rows)


def requests(now: datetime) -> list[dict]:
    """Request events: web endpoints and jobs (method TASK), in the window and one before it."""
    at = [now - timedelta(seconds=200 - i) for i in range(60)]     # 200 s .. 141 s before now
    rows = [event(at[i], "/search", service=API, duration_ms=740.0 if i < 4 else 100.0) for i in range(40)]
    rows += [event(at[i], "/products/{id}", service=API, duration_ms=80.0, status=500 if i == 7 else 200)
             for i in range(50)]
    rows += [event(at[i], "/checkout", service=API, duration_ms=5000.0, method="POST") for i in range(10)]
    rows += [event(at[i], "/recommendations", f"rec-{i}", service=API, duration_ms=300.0) for i in range(10)]
    rows.append(event(now - timedelta(minutes=10), "/search", service=API, duration_ms=99_999.0))   # before
    rows.append(event(now, "/search", service=API, duration_ms=99_999.0))     # at `now`: after the window
    for i in range(20):
        job = event(at[i], "job:send_receipt", service=WORKER, duration_ms=30.0, method="TASK")
        job["tags"] = json.dumps({"wait_ms": 45_000 if i in (3, 11) else 2000, "user": "u1"})
        rows.append(job)
    rows += [event(at[i], "job:daily_report", service=WORKER, duration_ms=900.0, method="TASK",
                   status=500 if i in (2, 5) else 200) for i in range(10)]
    return rows



def seed_healthy(path, *, now: datetime) -> None:
    """A store where all is well: 30 fast /search requests 150 to 121 s before `now`, its Redis up."""
    with write(path) as con:
        migrate(con)
        _insert(con, "request_events", EVENT_COLUMNS,
                [event(now - timedelta(seconds=150 - i), "/search", service=API, duration_ms=100.0) for i in range(30)])
        store_rollups(con)
        _insert(con, "components", ("name", "kind", "status", "since", "checked_at"),
                [("cache", "redis", "up", now - timedelta(hours=1), now - timedelta(seconds=20))])


def seed_health(path, *, now: datetime, redis_down: bool = True) -> None:
    """Create (migrate) the store at `path` and write the rows of EXPECTED around `now` (naive UTC)."""
    minute = now.replace(second=0, microsecond=0)
    with write(path) as con:
        migrate(con)
        _insert(con, "request_events", EVENT_COLUMNS, requests(now))
        store_rollups(con)
        _insert(con, "llm_calls", CALL_COLUMNS,
                [call(now - timedelta(seconds=200 - i), "gpt-4o", cost=COST_PER_CALL, service=API,
                      request_id=f"rec-{i}", endpoint="/recommendations") for i in range(10)])
        request_costs.rebuild(con)          # what ingest keeps beside the calls
        llm_rollup.rebuild(con, spans=True)
        # service, host, cache, namespace, hits, misses, lookups_timed, lookup_ms_sum, lookup_ms_max
        cache = ("minute", "service", "host", "cache", "namespace", "hits", "misses", "lookups_timed",
                 "lookup_ms_sum", "lookup_ms_max")
        _insert(con, "cache_stats", cache, [
            (minute - timedelta(minutes=2), API, "web-1", "product_lru", "p", 31, 19, 50, 125.0, 9.0),
            (minute - timedelta(minutes=1), API, "web-1", "product_lru", "p", 31, 19, 50, 125.0, 9.0),
            (minute - timedelta(minutes=9), API, "web-1", "product_lru", "p", 0, 900, 900, 0.0, 0.0),   # before
            (minute - timedelta(minutes=1), API, "web-1", "customer_lru", None, 95, 5, 0, 0.0, None),
            (minute - timedelta(minutes=1), API, "web-1", "tiny_lru", None, 5, 5, 10, 1000.0, 500.0),
        ])
        _insert(con, "cache_sizes", ("minute", "service", "host", "cache", "entries"), [
            (minute - timedelta(minutes=2), API, "web-1", "product_lru", 60_000),
            (minute - timedelta(minutes=1), API, "web-1", "product_lru", 12_000),
            (minute - timedelta(minutes=1), API, "web-2", "product_lru", 3_000),
            (minute - timedelta(minutes=30), API, "web-1", "old_lru", 90_000),                      # before
        ])
        # Redis "cache": samples every minute, none 5 minutes before now (so the first rate covers 2
        # minutes); the raw counters jump with the sampler's own lookups and must not be used.
        redis = []
        for ago, hits_s, misses_s in ((6, None, None), (4, 9, 1), (3, 9, 1), (2, 9, 1), (1, 3, 7)):
            ts = now - timedelta(minutes=ago)
            redis.append((ts, "cache", "redis.keyspace_hits", "", 1_000_000.0 * (7 - ago)))
            if hits_s is not None:
                redis += [(ts, "cache", "redis.hits_per_sec", "", float(hits_s)),
                          (ts, "cache", "redis.misses_per_sec", "", float(misses_s))]
        _insert(con, "redis_metrics", ("ts", "instance", "name", "labels", "value"), redis)
        _insert(con, "system_metrics", ("ts", "host", "name", "labels", "value"), [
            (now - timedelta(minutes=3), "web-1", "cpu.percent", "", 90.0),
            (now - timedelta(minutes=1), "web-1", "cpu.percent", "", 92.0),
            (now - timedelta(minutes=20), "web-1", "cpu.percent", "", 10.0),                        # before
            (now - timedelta(minutes=2), "web-1", "mem.percent", "", 50.0),
            (now - timedelta(minutes=3), "web-1", "disk.used_percent", "mount=/", 70.0),
            (now - timedelta(minutes=1), "web-1", "disk.used_percent", "mount=/", 96.0),
        ])
        components = [("cache", "redis", "up", now - timedelta(seconds=20)),
                      ("queue", "redis", "down" if redis_down else "up", now - timedelta(seconds=20)),
                      ("legacy", "database", "down", now - timedelta(hours=3))]                     # stale
        _insert(con, "components", ("name", "kind", "target", "status", "since", "last_ok", "checked_at", "error"),
                [(n, k, f"redis://{n}", s, at - timedelta(hours=1), None, at, None) for n, k, s, at in components])


def spend(now: datetime) -> Decimal:
    """LLM spend of the seeded calls (all in the window)."""
    return Decimal(COST_PER_CALL) * 10
