"""Synthetic sampler data for the Caches, Database and Host pages, written the way the daemon would.

    from seed_samples import seed_samples
    frames = seed_samples("/tmp/perfdeck.duckdb")   # {table name: the rows written, as a DataFrame}

Or from a shell (after tests/seed_store.py, for requests and deploys too):
    .venv/bin/python tests/seed_samples.py /tmp/perfdeck.duckdb

What is in it, per minute over `hours` hours before `now`:
- app caches (cache_stats): api's product_lru (~95 % hits), customer_lru (~85 %), llm_responses
  (~45 %, idle from 2 to 1 hours ago: no lookups, so no hit-rate points), worker's report_cache;
- Redis (redis_metrics, redis_slowlog): "cache" (healthy), "sessions" (maxmemory, evictions),
  "queue" (stopped answering 3 hours ago: down in components), with memory by namespace every
  5 minutes and a minute without lookups on "cache";
- databases (db_metrics, pg_statements): "shop-pg" with pg_stat_statements, "legacy-pg" without;
  public.orders is sequentially scanned (500k rows), public.settings too but is tiny,
  public.products goes through its index; legacy-pg's public.audit_log seq_scan counter is reset;
- SDK queries (query_stats, query_hist) for three statements, from raw lognormal durations;
- two hosts (system_metrics) with CPU, memory, disks, network and watched processes.
"""
from __future__ import annotations

import os
import sys
from datetime import datetime, timedelta

import numpy as np
import pandas as pd

from collectors.store import migrate, utcnow, write
from collectors.store.histogram import bucket_of

# (service, cache, namespaces, lookups per minute, hit probability)
APP_CACHES = [
    ("api", "product_lru", ("product",), 60, 0.95),
    ("api", "customer_lru", ("orders", "profile"), 30, 0.85),
    ("api", "llm_responses", ("claude-3-5-haiku",), 8, 0.45),
    ("worker", "report_cache", (None,), 4, 0.70),
]
IDLE = ("llm_responses", timedelta(hours=2), timedelta(hours=1))  # no lookups in [now-2h, now-1h)

# instance: (ops/s, hit probability, used memory MB, maxmemory MB (0 = none), evictions/s)
REDIS = {
    "cache": (1200.0, 0.96, 180, 0, 0.0),
    "sessions": (300.0, 0.72, 90, 100, 2.5),
    "queue": (50.0, 0.50, 20, 0, 0.0),
}
REDIS_DOWN = ("queue", timedelta(hours=3))  # no samples since, down in components
REDIS_IDLE_MINUTE = ("cache", timedelta(minutes=90))  # hits/s = misses/s = 0 in that minute
NAMESPACES = {  # instance: [(prefix, estimated MB, sampled keys, TTL share, mean TTL s)]
    "cache": [("product", 120, 600, 1.0, 3600), ("user:profile", 40, 250, 0.5, 600),
              ("(none)", 5, 20, 0.0, None), ("cfg,v2", 1, 5, 0.0, None)],
    "sessions": [("sess", 85, 900, 1.0, 1800), ("(other)", 3, 40, 0.2, 60)],
}
SLOWLOG = [  # (instance, entry id, age, duration us, command, client)
    ("cache", 1, timedelta(hours=5), 15_000, "KEYS product:*", "10.0.0.5:51234"),
    ("cache", 2, timedelta(hours=1), 42_000, "SMEMBERS big-set", "10.0.0.5:51240 (api)"),
    ("sessions", 7, timedelta(minutes=30), 12_500, "HGETALL sess:abc", None),
]

# SDK statements: fingerprint, sample, calls per minute, median ms, sigma
SDK_QUERIES = [
    ("SELECT * FROM products WHERE id = ?", "SELECT * FROM products WHERE id = 42", 40, 0.8, 0.3),
    ("SELECT * FROM orders WHERE customer_id = ?", "SELECT * FROM orders WHERE customer_id = 7", 6, 45.0, 0.5),
    ("INSERT INTO orders (customer_id, total) VALUES (?, ?)",
     "INSERT INTO orders (customer_id, total) VALUES (7, 19.99)", 2, 3.0, 0.4),
]
# pg_stat_statements deltas every 5 minutes on shop-pg: queryid, query, calls, mean ms, blocks hit share
PG_STATEMENTS = [
    (101, "SELECT * FROM orders WHERE customer_id = $1", 30, 45.0, 0.60),
    (102, "SELECT * FROM products WHERE id = $1", 200, 0.8, 0.99),
    (103, "UPDATE products SET stock = stock - $1 WHERE id = $2", 10, 2.5, 0.97),
]
# Tables of shop-pg: (table, seq scans / min, idx scans / min, live rows, rows read per seq scan)
PG_TABLES = [
    ("public.orders", 3, 1, 500_000, 500_000),
    ("public.products", 0.1, 50, 20_000, 20_000),
    ("public.settings", 5, 0, 10, 10),
]
CONNECTIONS = {"active": 4, "idle": 10, "idle in transaction": 1}

HOSTS = {  # host: (cpu %, memory total GB, processes [(name, pid, rss MB, cpu %)])
    "web-1": (35.0, 16, [("gunicorn", 101, 180, 20.0), ("gunicorn", 102, 170, 18.0), ("perfdeck", 50, 90, 2.0)]),
    "web-2": (12.0, 8, [("gunicorn", 301, 150, 8.0)]),
}


def _long(rows: list[tuple], key: str) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["ts", key, "name", "labels", "value"])


def make_samples(*, now: datetime, hours: float = 24, seed: int = 11) -> dict[str, pd.DataFrame]:
    """The rows of every sampler table (and cache_stats, query_stats, query_hist), per table."""
    rng = np.random.default_rng(seed)
    end = now.replace(second=0, microsecond=0)
    minutes = list(pd.date_range(end=end - timedelta(minutes=1), periods=int(hours * 60), freq="min").to_pydatetime())
    out: dict[str, pd.DataFrame] = {}

    rows = []
    for service, cache, namespaces, per_min, p_hit in APP_CACHES:
        for m in minutes:
            if cache == IDLE[0] and end - IDLE[1] <= m < end - IDLE[2]:
                continue
            for ns in namespaces:
                lookups = int(rng.poisson(per_min / len(namespaces)))
                if lookups == 0:
                    continue
                hits = int(rng.binomial(lookups, p_hit))
                timed = lookups - int(lookups > 3)  # not every lookup is timed
                lookup_ms = rng.lognormal(np.log(0.05 if cache != "llm_responses" else 2.0), 0.5, max(timed, 1))
                rows.append((m, service, "web-1", cache, ns, hits, lookups - hits, timed,
                             float(lookup_ms[:timed].sum()), float(lookup_ms[:timed].max()) if timed else None))
    out["cache_stats"] = pd.DataFrame(rows, columns=["minute", "service", "host", "cache", "namespace", "hits",
                                                     "misses", "lookups_timed", "lookup_ms_sum", "lookup_ms_max"])

    rows = []
    for instance, (ops, p_hit, used_mb, max_mb, evict) in REDIS.items():
        peak = 0.0
        for i, m in enumerate(minutes):
            if instance == REDIS_DOWN[0] and m >= end - REDIS_DOWN[1]:
                break
            ts = m + timedelta(seconds=5)
            used = (used_mb + 5 * np.sin(i / 60)) * 2**20
            peak = max(peak, used)
            lookups = 0.0 if (instance, end - REDIS_IDLE_MINUTE[1]) == (REDIS_IDLE_MINUTE[0], m) \
                else ops * 0.6 * rng.uniform(0.8, 1.2)
            hits = lookups * p_hit * rng.uniform(0.97, 1.03) if lookups else 0.0
            hits = min(hits, lookups)
            metrics = [("redis.hits_per_sec", hits), ("redis.misses_per_sec", lookups - hits),
                       ("redis.ops_per_sec", ops * rng.uniform(0.8, 1.2)), ("redis.used_memory", used),
                       ("redis.used_memory_peak", peak), ("redis.maxmemory", max_mb * 2**20),
                       ("redis.mem_fragmentation_ratio", 1.1), ("redis.evicted_per_sec", evict * rng.uniform(0, 2)),
                       ("redis.expired_per_sec", 1.5), ("redis.connected_clients", 12.0),
                       ("redis.dbsize", 5000.0)]
            if lookups:
                metrics.append(("redis.hit_rate", hits / lookups))
            rows += [(ts, instance, name, "", float(v)) for name, v in metrics]
            rows.append((ts, instance, "redis.db_keys", "db=0", 5000.0))
            rows.append((ts, instance, "redis.cmd_calls_per_sec", "cmd=get", lookups))
            if i % 5 == 0:
                for prefix, mb, keys, ttl_share, ttl in NAMESPACES.get(instance, []):
                    labels = f"ns={prefix}"
                    rows += [(ts, instance, "redis.ns_estimated_bytes", labels, float(mb * 2**20 + i)),
                             (ts, instance, "redis.ns_sampled_keys", labels, float(keys)),
                             (ts, instance, "redis.ns_ttl_share", labels, ttl_share)]
                    if ttl is not None:
                        rows.append((ts, instance, "redis.ns_mean_ttl_sec", labels, float(ttl)))
    out["redis_metrics"] = _long(rows, "instance")
    out["redis_slowlog"] = pd.DataFrame(
        [(inst, eid, (end - age).replace(second=0), us, cmd, client) for inst, eid, age, us, cmd, client in SLOWLOG],
        columns=["instance", "entry_id", "ts", "duration_us", "command", "client"])

    rows = []
    counters = {t: [0.0, 0.0] for t, *_ in PG_TABLES}
    audit = 0.0
    for i, m in enumerate(minutes):
        ts = m + timedelta(seconds=20)
        for target, enabled in (("shop-pg", 1.0), ("legacy-pg", 0.0)):
            rows += [(ts, target, "pg_stat_statements.enabled", "", enabled),
                     (ts, target, "database.size_bytes", f"database={target.split('-')[0]}", 2e9),
                     (ts, target, "cache.hit_ratio", f"database={target.split('-')[0]}", 0.99 if enabled else 0.90),
                     (ts, target, "connections.max", "", 100.0)]
            if i:
                rows.append((ts, target, "cache.hit_ratio.interval", f"database={target.split('-')[0]}",
                             (0.995 if enabled else 0.90) - 0.01 * (i % 3)))
            for state, n in CONNECTIONS.items():
                rows.append((ts, target, "connections", f"state={state}", float(n if enabled else 1)))
        for table, seq, idx, live, per_scan in PG_TABLES:
            counters[table][0] += seq
            counters[table][1] += idx
            labels = f"table={table}"
            rows += [(ts, "shop-pg", "table.seq_scan", labels, float(int(counters[table][0]))),
                     (ts, "shop-pg", "table.idx_scan", labels, float(int(counters[table][1]))),
                     (ts, "shop-pg", "table.seq_tup_read", labels, float(int(counters[table][0]) * per_scan)),
                     (ts, "shop-pg", "table.idx_tup_fetch", labels, float(int(counters[table][1]))),  # a row a lookup
                     (ts, "shop-pg", "table.n_live_tup", labels, float(live + i)),
                     (ts, "shop-pg", "table.n_dead_tup", labels, float(i % 100)),
                     (ts, "shop-pg", "table.size_bytes", labels, float(live * 200))]
        audit = 2.0 if i == len(minutes) // 2 else audit + 2  # stats reset halfway: the counter drops
        rows += [(ts, "legacy-pg", "table.seq_scan", "table=public.audit_log", audit),
                 (ts, "legacy-pg", "table.seq_tup_read", "table=public.audit_log", audit * 80_000),
                 (ts, "legacy-pg", "table.n_live_tup", "table=public.audit_log", 80_000.0)]
    out["db_metrics"] = _long(rows, "target")

    rows = []
    for i, m in enumerate(minutes[4::5]):
        for queryid, query, calls, mean, hit_share in PG_STATEMENTS:
            blocks = calls * 10
            rows.append((m + timedelta(seconds=20), "shop-pg", queryid, query, calls + i % 3,
                         (calls + i % 3) * mean, calls * 2, int(blocks * hit_share), blocks - int(blocks * hit_share)))
    out["pg_statements"] = pd.DataFrame(rows, columns=["ts", "target", "queryid", "query", "calls", "total_ms", "rows",
                                                       "shared_blks_hit", "shared_blks_read"])

    raw = []
    for fingerprint, sample, per_min, median, sigma in SDK_QUERIES:
        counts = rng.poisson(per_min, len(minutes))
        for m, n in zip(minutes, counts):
            for d in rng.lognormal(np.log(median), sigma, n):
                raw.append((m, fingerprint, sample, float(d)))
    raw = pd.DataFrame(raw, columns=["minute", "fingerprint", "sample_sql", "duration_ms"])
    raw["service"] = "api"
    out["query_raw"] = raw
    out["query_stats"] = (raw.groupby(["minute", "service", "fingerprint"], as_index=False)
                          .agg(sample_sql=("sample_sql", "first"), calls=("duration_ms", "size"),
                               total_ms=("duration_ms", "sum"), min_ms=("duration_ms", "min"),
                               max_ms=("duration_ms", "max")))
    out["query_stats"].insert(2, "database", "shop")
    raw["bucket"] = raw["duration_ms"].map(bucket_of)
    out["query_hist"] = raw.groupby(["minute", "service", "fingerprint", "bucket"], as_index=False).size() \
        .rename(columns={"size": "count"})

    rows = []
    for host, (cpu, mem_gb, procs) in HOSTS.items():
        for i, m in enumerate(minutes):
            ts = m + timedelta(seconds=30)
            total = mem_gb * 2**30
            used = total * ((0.4 if host == "web-1" else 0.6) + 0.1 * np.sin(i / 120))
            metrics = [("cpu.percent", "", cpu + 10 * np.sin(i / 30)), ("load.1m", "", cpu / 25),
                       ("mem.total_bytes", "", total), ("mem.used_bytes", "", used),
                       ("mem.available_bytes", "", total - used), ("mem.percent", "", 100 * used / total),
                       ("swap.percent", "", 1.0), ("disk.read_bps", "", 2e5), ("disk.write_bps", "", 1e6),
                       ("net.sent_bps", "", 3e5), ("net.recv_bps", "", 5e5),
                       ("disk.used_percent", "mount=/", 61.5), ("disk.used_bytes", "mount=/", 61.5e9),
                       ("disk.total_bytes", "mount=/", 100e9)]
            if host == "web-1":
                metrics += [("disk.used_percent", "mount=/data", 87.0), ("disk.used_bytes", "mount=/data", 870e9),
                            ("disk.total_bytes", "mount=/data", 1000e9)]
            for name, pid, rss_mb, pcpu in procs:
                labels = f"proc={name},pid={pid}"
                metrics += [("proc.cpu_percent", labels, pcpu), ("proc.rss_bytes", labels, rss_mb * 2**20 + i * 1024),
                            ("proc.threads", labels, 4.0), ("proc.open_files", labels, 20.0 + pid % 7)]
            rows += [(ts, host, name, labels, float(v)) for name, labels, v in metrics]
    out["system_metrics"] = _long(rows, "host")

    last = minutes[-1] + timedelta(seconds=30)
    down_since = end - REDIS_DOWN[1]
    out["components"] = pd.DataFrame([
        ("cache", "redis", "redis://127.0.0.1:6379/0", "up", end - timedelta(hours=hours), last, last, None),
        ("sessions", "redis", "redis://:***@10.0.0.8:6379/1", "up", end - timedelta(hours=hours), last, last, None),
        ("queue", "redis", "redis://:***@10.0.0.7:6379/0", "down", down_since, down_since - timedelta(minutes=1), last,
         "ConnectionError: Error 111 connecting to 10.0.0.7:6379. Connection refused."),
        ("shop-pg", "database", "postgresql+psycopg://shop:***@db-1/shop", "up", end - timedelta(hours=hours), last, last,
         None),
        ("legacy-pg", "database", "postgresql+psycopg://legacy:***@db-2/legacy", "up", end - timedelta(hours=hours), last,
         last, None),
        ("web-1", "host", None, "up", end - timedelta(hours=hours), last, last, None),
        ("web-2", "host", None, "up", end - timedelta(hours=hours), last, last, None),
    ], columns=["name", "kind", "target", "status", "since", "last_ok", "checked_at", "error"])
    return out


TABLES = ("cache_stats", "redis_metrics", "redis_slowlog", "db_metrics", "pg_statements", "query_stats",
          "query_hist", "system_metrics", "components")


def seed_samples(path: str | os.PathLike, *, now: datetime | None = None, hours: float = 24) -> dict[str, pd.DataFrame]:
    """Create (migrate) the store at `path` if needed and add the sampler, cache and query rows of
    `make_samples`. Returns them per table (plus "query_raw": the raw SDK statement durations)."""
    frames = make_samples(now=now or utcnow(), hours=hours)
    with write(path) as con:
        migrate(con)
        for table in TABLES:
            con.register("seed_frame", frames[table])
            cols = ", ".join(f'"{c}"' for c in frames[table].columns)
            con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM seed_frame")
            con.unregister("seed_frame")
    return frames


if __name__ == "__main__":
    target = sys.argv[1] if len(sys.argv) > 1 else "data/perfdeck.duckdb"
    seeded = seed_samples(target)
    print(f"seeded {target}: " + ", ".join(f"{len(seeded[t]):,} {t}" for t in TABLES))
