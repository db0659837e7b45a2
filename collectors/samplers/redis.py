"""The Redis sampler: one per instance (by URL). INFO, SLOWLOG and memory by key namespace.

Rows go to `redis_metrics(ts, instance, name, labels, value)` (instance = the sampler's name) and to
`redis_slowlog(instance, entry_id, ts, duration_us, command, client)`, which the daemon inserts with
INSERT OR IGNORE; the sampler also remembers the last entry id it sent and sends only newer ones.

Rates and the hit rate come from the deltas of INFO counters between two samples of this sampler:
- no lookups in the interval -> no hit-rate row at all (never a made-up 100 %);
- a restart (run_id changes, uptime goes down) or CONFIG RESETSTAT (a counter goes down) makes the
  sample a new baseline: no rates from it, never negative ones.
The sampler's own commands must not count as traffic: TTL (used by the namespace sample) counts as a
keyspace hit in Redis, so after sampling the namespaces the sampler reads INFO again and the deltas of
the next sample start from there.

Memory by namespace: a bounded SCAN (never KEYS) of at most `sample_keys` keys of the URL's database,
MEMORY USAGE and PTTL pipelined; the prefix is the text before the last `namespace_separator` ("(none)"
for keys without one). The estimated total scales the sampled bytes by DBSIZE / sampled keys. At most
MAX_NAMESPACES namespaces are written (largest first), the rest are summed as "(other)".

`redact` (collectors.redact) is re-exported here for the modules that used to import it from this one.

Labels: "db=0", "cmd=get", "ns=<prefix>" (the prefix is written as is, so split on the first "=").
"""
from __future__ import annotations

import time
from datetime import datetime, timezone

import redis

from collectors.redact import redact
from collectors.samplers import Rows, Sampler

SOCKET_TIMEOUT = 2.0
SLOWLOG_ENTRIES = 128
MAX_NAMESPACES = 50

# The metric names this sampler writes. Name: (unit, labels, meaning)
METRICS: dict[str, tuple[str, str, str]] = {
    "redis.hit_rate": ("0-1", "", "keyspace hits / (hits + misses) over the interval; absent when no lookups"),
    "redis.hits_per_sec": ("1/s", "", "keyspace hits per second over the interval"),
    "redis.misses_per_sec": ("1/s", "", "keyspace misses per second over the interval"),
    "redis.keyspace_hits": ("", "", "keyspace hits since start (counter)"),
    "redis.keyspace_misses": ("", "", "keyspace misses since start (counter)"),
    "redis.ops_per_sec": ("1/s", "", "commands processed per second over the interval (delta of total_commands_processed)"),
    "redis.instantaneous_ops_per_sec": ("1/s", "", "Redis's own ops/s estimate (last few seconds)"),
    "redis.used_memory": ("B", "", "used_memory"),
    "redis.used_memory_rss": ("B", "", "used_memory_rss"),
    "redis.used_memory_peak": ("B", "", "used_memory_peak"),
    "redis.maxmemory": ("B", "", "maxmemory (0 = no limit)"),
    "redis.mem_fragmentation_ratio": ("", "", "mem_fragmentation_ratio"),
    "redis.evicted_keys": ("", "", "keys evicted since start (counter)"),
    "redis.evicted_per_sec": ("1/s", "", "keys evicted per second over the interval"),
    "redis.expired_keys": ("", "", "keys expired since start (counter)"),
    "redis.expired_per_sec": ("1/s", "", "keys expired per second over the interval"),
    "redis.connected_clients": ("", "", "connected clients"),
    "redis.blocked_clients": ("", "", "clients blocked on BLPOP and the like"),
    "redis.uptime_seconds": ("s", "", "uptime_in_seconds"),
    "redis.db_keys": ("", "db=N", "keys in a database"),
    "redis.db_expires": ("", "db=N", "keys with a TTL in a database"),
    "redis.cmd_calls_per_sec": ("1/s", "cmd=name", "calls of a command per second over the interval"),
    "redis.cmd_usec_per_call": ("us", "cmd=name", "mean time of a command over the interval (only when called)"),
    "redis.ns_sampled_keys": ("", "ns=prefix", "keys of the namespace in this sample"),
    "redis.ns_sampled_bytes": ("B", "ns=prefix", "MEMORY USAGE of those keys"),
    "redis.ns_estimated_bytes": ("B", "ns=prefix", "sampled bytes scaled by DBSIZE / sampled keys"),
    "redis.ns_ttl_share": ("0-1", "ns=prefix", "share of the sampled keys that have a TTL"),
    "redis.ns_mean_ttl_sec": ("s", "ns=prefix", "mean remaining TTL of those that have one"),
    "redis.sample_keys": ("", "", "keys sampled for the namespaces this interval (all namespaces)"),
    "redis.sample_ms": ("ms", "", "time the namespace sample took"),
    "redis.dbsize": ("", "", "DBSIZE of the sampled database"),
}

_GAUGES = {
    "used_memory": "redis.used_memory", "used_memory_rss": "redis.used_memory_rss",
    "used_memory_peak": "redis.used_memory_peak", "maxmemory": "redis.maxmemory",
    "mem_fragmentation_ratio": "redis.mem_fragmentation_ratio", "connected_clients": "redis.connected_clients",
    "blocked_clients": "redis.blocked_clients", "uptime_in_seconds": "redis.uptime_seconds",
    "instantaneous_ops_per_sec": "redis.instantaneous_ops_per_sec", "keyspace_hits": "redis.keyspace_hits",
    "keyspace_misses": "redis.keyspace_misses", "evicted_keys": "redis.evicted_keys",
    "expired_keys": "redis.expired_keys",
}
__all__ = ["METRICS", "RedisSampler", "redact"]

_COUNTERS = ("keyspace_hits", "keyspace_misses", "total_commands_processed", "evicted_keys", "expired_keys")


class _Baseline:
    """The INFO counters the next sample's deltas start from."""

    def __init__(self, info: dict, at: float):
        self.at = at
        self.run_id = info.get("run_id")
        self.uptime = int(info.get("uptime_in_seconds", 0))
        self.counters = {k: int(info.get(k, 0)) for k in _COUNTERS}
        self.commands = {k[len("cmdstat_"):]: (int(v.get("calls", 0)), int(v.get("usec", 0)))
                         for k, v in info.items() if k.startswith("cmdstat_") and isinstance(v, dict)}


class RedisSampler(Sampler):
    kind = "redis"

    def __init__(self, name: str, url: str, interval: float = 10, namespace_separator: str = ":",
                 sample_keys: int = 1000):
        self.name, self.url, self.interval = name, url, float(interval)
        self.target = redact(url)   # the components table and the pages show this one
        self.separator, self.sample_keys = namespace_separator, int(sample_keys)
        self.client = redis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT,
                                           socket_connect_timeout=SOCKET_TIMEOUT, retry_on_timeout=False)
        self._base: _Baseline | None = None
        self._own_commands = 0  # commands this sampler sent since the baseline INFO
        self.last_slowlog_id = -1
        self._run_id: str | None = None

    def close(self) -> None:
        self.client.close()

    # -- INFO ------------------------------------------------------------------------------------
    def _info_rows(self, info: dict, at: float, row) -> None:
        for key, metric in _GAUGES.items():
            if key in info:
                row(metric, info[key])
        for key, value in info.items():
            if key.startswith("db") and key[2:].isdigit() and isinstance(value, dict):
                row("redis.db_keys", value.get("keys", 0), f"db={key[2:]}")
                row("redis.db_expires", value.get("expires", 0), f"db={key[2:]}")
        base, new = self._base, _Baseline(info, at)
        if base is None or base.run_id != new.run_id or new.uptime < base.uptime:
            return  # first sample, or Redis restarted: a new baseline, no rates
        elapsed = at - base.at
        if elapsed <= 0:
            return
        d = {k: new.counters[k] - base.counters[k] for k in _COUNTERS}
        if all(v >= 0 for v in d.values()):  # else CONFIG RESETSTAT: new baseline
            lookups = d["keyspace_hits"] + d["keyspace_misses"]
            if lookups:
                row("redis.hit_rate", d["keyspace_hits"] / lookups)
            row("redis.hits_per_sec", d["keyspace_hits"] / elapsed)
            row("redis.misses_per_sec", d["keyspace_misses"] / elapsed)
            # Less our own commands since the baseline (the INFO that took it counts itself after its reply).
            ops = max(0, d["total_commands_processed"] - self._own_commands)
            row("redis.ops_per_sec", ops / elapsed)
            row("redis.evicted_per_sec", d["evicted_keys"] / elapsed)
            row("redis.expired_per_sec", d["expired_keys"] / elapsed)
        for cmd, (calls, usec) in new.commands.items():
            before = base.commands.get(cmd, (0, 0))
            dc, du = calls - before[0], usec - before[1]
            if dc < 0 or du < 0:
                continue
            row("redis.cmd_calls_per_sec", dc / elapsed, f"cmd={cmd}")
            if dc:
                row("redis.cmd_usec_per_call", du / dc, f"cmd={cmd}")

    # -- SLOWLOG ---------------------------------------------------------------------------------
    def _slowlog_rows(self) -> list[tuple]:
        out = []
        newest = self.last_slowlog_id
        for e in self.client.slowlog_get(SLOWLOG_ENTRIES):
            entry_id = int(e["id"])
            if entry_id <= self.last_slowlog_id:
                continue
            newest = max(newest, entry_id)
            command = e.get("command", b"")
            if isinstance(command, bytes):
                command = command.decode("utf-8", "backslashreplace")
            client = e.get("client_address", b"") or b""
            if isinstance(client, bytes):
                client = client.decode("utf-8", "backslashreplace")
            name = e.get("client_name") or b""
            if isinstance(name, bytes):
                name = name.decode("utf-8", "backslashreplace")
            if name:
                client = f"{client} ({name})"
            ts = datetime.fromtimestamp(int(e["start_time"]), tz=timezone.utc).replace(tzinfo=None)
            out.append((self.name, entry_id, ts, int(e["duration"]), command[:1000], client[:200] or None))
        self.last_slowlog_id = newest
        return out

    # -- memory by namespace ---------------------------------------------------------------------
    def _prefix(self, key: bytes) -> str:
        text = key.decode("utf-8", "backslashreplace")
        head, sep, _ = text.rpartition(self.separator) if self.separator else ("", "", text)
        return head if sep else "(none)"

    def _namespace_rows(self, row) -> bool:
        """Sample at most sample_keys keys; True when any command that touches key stats was sent."""
        if self.sample_keys <= 0:
            return False
        started = time.perf_counter()
        keys: list[bytes] = []
        cursor = 0
        while len(keys) < self.sample_keys:  # SCAN, never KEYS; stops after sample_keys keys
            cursor, batch = self.client.scan(cursor, count=min(self.sample_keys, 1000))
            self._own_commands += 1
            keys.extend(batch[:self.sample_keys - len(keys)])
            if cursor == 0:
                break
        dbsize = self.client.dbsize()
        self._own_commands += 1
        row("redis.dbsize", dbsize)
        stats: dict[str, list] = {}   # prefix -> [keys, bytes, with ttl, ttl seconds sum]
        if keys:
            pipe = self.client.pipeline(transaction=False)
            for key in keys:
                pipe.memory_usage(key)
                pipe.pttl(key)
            replies = pipe.execute(raise_on_error=False)
            for i, key in enumerate(keys):
                size, pttl = replies[2 * i], replies[2 * i + 1]
                if not isinstance(size, int) or not isinstance(pttl, int) or pttl == -2:
                    continue  # gone since the SCAN
                s = stats.setdefault(self._prefix(key), [0, 0, 0, 0.0])
                s[0] += 1
                s[1] += size
                if pttl >= 0:
                    s[2] += 1
                    s[3] += pttl / 1000.0
        sampled = sum(s[0] for s in stats.values())
        if len(stats) > MAX_NAMESPACES:
            ranked = sorted(stats.items(), key=lambda kv: kv[1][1], reverse=True)
            stats = dict(ranked[:MAX_NAMESPACES - 1])
            other = [0, 0, 0, 0.0]
            for _, s in ranked[MAX_NAMESPACES - 1:]:
                other = [a + b for a, b in zip(other, s)]
            stats["(other)"] = other
        scale = dbsize / sampled if sampled else 0.0
        for prefix, (n, size, with_ttl, ttl_sum) in sorted(stats.items()):
            label = f"ns={prefix}"
            row("redis.ns_sampled_keys", n, label)
            row("redis.ns_sampled_bytes", size, label)
            row("redis.ns_estimated_bytes", size * scale, label)
            row("redis.ns_ttl_share", with_ttl / n, label)
            if with_ttl:
                row("redis.ns_mean_ttl_sec", ttl_sum / with_ttl, label)
        row("redis.sample_keys", sampled)
        row("redis.sample_ms", (time.perf_counter() - started) * 1000.0)
        return bool(keys)

    # -- the sampler -----------------------------------------------------------------------------
    def collect(self, now: datetime) -> list[Rows]:
        metrics: list[tuple] = []

        def row(name: str, value, labels: str = "") -> None:
            metrics.append((now, self.name, name, labels, float(value)))

        info = self.client.info("all")
        at = time.monotonic()
        if self._run_id is not None and info.get("run_id") != self._run_id:
            self.last_slowlog_id = -1  # entry ids start again at 0 after a restart
        self._run_id = info.get("run_id")
        self._info_rows(info, at, row)
        self._base, self._own_commands = _Baseline(info, at), 1
        slowlog = self._slowlog_rows()
        self._own_commands += 1
        if self._namespace_rows(row):
            # TTL counts as a keyspace hit: the next deltas start after our own lookups.
            after = self.client.info("all")
            if after.get("run_id") == self._run_id:
                self._base, self._own_commands = _Baseline(after, time.monotonic()), 1
        return [Rows("redis_metrics", metrics), Rows("redis_slowlog", slowlog, once=True)]
