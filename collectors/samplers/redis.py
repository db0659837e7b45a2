"""The Redis sampler: one per instance (by URL). INFO, SLOWLOG, the keyspace sample and the clients.

Rows go to `redis_metrics(ts, instance, name, labels, value)` (instance = the sampler's name) and to
`redis_slowlog(instance, entry_id, ts, duration_us, command, client)`, which the daemon inserts with
INSERT OR IGNORE; the sampler also remembers the last entry id it sent and sends only newer ones.

Rates and the hit rate come from the deltas of INFO counters between two samples of this sampler:
- no lookups in the interval -> no hit-rate row at all (never a made-up 100 %);
- a restart (run_id changes, uptime goes down) or CONFIG RESETSTAT (a counter goes down) makes the
  sample a new baseline: no rates from it, never negative ones.
The sampler's own commands are not traffic: after its SLOWLOG, SCAN, DBSIZE, MEMORY USAGE, TYPE, PTTL
and CLIENT LIST (TYPE and PTTL count as keyspace hits in Redis) it reads INFO again, and the next
deltas start from there. The only command of its own they then hold is that INFO, which is taken off
total_commands_processed and off INFO's own commandstats (its time too, pro rata).

The keyspace sample (memory by namespace and by data type, the biggest keys) and the clients' summary
are in `collectors.samplers.redis_keys`. The connection is named "perfdeck-sampler" (CLIENT SETNAME).

`redact` (collectors.redact) is re-exported here for the modules that used to import it from this one.

Labels: "db=0", "cmd=get", "ns=<prefix>" (the prefix is written as is, so split on the first "="),
and, escaped by `redis_keys.labels()`: "type=<type>", "key=<name>,type=<type>",
"name=<client name>,host=<host>,cmd=<command>".
"""
from __future__ import annotations

import time
from collections import Counter
from datetime import datetime, timezone

import redis

from collectors.redact import redact
from collectors.samplers import Rows, Sampler
from collectors.samplers.redis_keys import MAX_NAMESPACES, SAMPLER_CLIENT_NAME, TOP_KEYS, KeyspaceSample, client_rows

SOCKET_TIMEOUT = 2.0
SLOWLOG_ENTRIES = 128

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
    "redis.cmd_calls": ("", "cmd=name", "calls of a command in the interval (only when called)"),
    "redis.cmd_usec": ("us", "cmd=name", "time spent in a command in the interval (only when called)"),
    "redis.ns_sampled_keys": ("", "ns=prefix", "keys of the namespace in this sample"),
    "redis.ns_sampled_bytes": ("B", "ns=prefix", "MEMORY USAGE of those keys"),
    "redis.ns_estimated_bytes": ("B", "ns=prefix", "sampled bytes scaled by DBSIZE / sampled keys"),
    "redis.ns_ttl_share": ("0-1", "ns=prefix", "share of the sampled keys that have a TTL"),
    "redis.ns_mean_ttl_sec": ("s", "ns=prefix", "mean remaining TTL of those that have one"),
    "redis.type_sampled_keys": ("", "type=name", "keys of a data type in this sample"),
    "redis.type_sampled_bytes": ("B", "type=name", "MEMORY USAGE of those keys"),
    "redis.type_estimated_bytes": ("B", "type=name", "sampled bytes scaled by DBSIZE / sampled keys"),
    "redis.key_bytes": ("B", "key=name,type=name", "MEMORY USAGE of a key of the running top-N biggest"),
    "redis.sample_keys": ("", "", "keys sampled this interval (all namespaces)"),
    "redis.sample_bytes": ("B", "", "MEMORY USAGE of those keys"),
    "redis.sample_key_share": ("0-1", "", "sampled keys / DBSIZE"),
    "redis.sample_memory_share": ("0-1", "", "sampled bytes / INFO used_memory_dataset (at most 1)"),
    "redis.scan_pass": ("s", "", "start time (epoch) of the pass of the SCAN cursor this sample belongs to"),
    "redis.scan_wrapped": ("", "", "1 on the sample whose SCAN cursor came back to 0 (the pass is complete)"),
    "redis.used_memory_dataset": ("B", "", "used_memory_dataset (memory of the keys and values)"),
    "redis.sample_ms": ("ms", "", "time the keyspace sample took"),
    "redis.dbsize": ("", "", "DBSIZE of the sampled database"),
    "redis.clients": ("", "name=,host=,cmd=", "connections of a client name and host now in a command"),
    "redis.clients_oldest_sec": ("s", "name=,host=,cmd=", "age of the oldest of those connections"),
    "redis.clients_idle_min_sec": ("s", "name=,host=,cmd=", "idle time of the least idle of them"),
    "redis.clients_idle_max_sec": ("s", "name=,host=,cmd=", "idle time of the most idle of them"),
}

_GAUGES = {
    "used_memory": "redis.used_memory", "used_memory_rss": "redis.used_memory_rss",
    "used_memory_peak": "redis.used_memory_peak", "maxmemory": "redis.maxmemory",
    "used_memory_dataset": "redis.used_memory_dataset",
    "mem_fragmentation_ratio": "redis.mem_fragmentation_ratio", "connected_clients": "redis.connected_clients",
    "blocked_clients": "redis.blocked_clients", "uptime_in_seconds": "redis.uptime_seconds",
    "instantaneous_ops_per_sec": "redis.instantaneous_ops_per_sec", "keyspace_hits": "redis.keyspace_hits",
    "keyspace_misses": "redis.keyspace_misses", "evicted_keys": "redis.evicted_keys",
    "expired_keys": "redis.expired_keys",
}
__all__ = ["MAX_NAMESPACES", "METRICS", "RedisSampler", "redact"]

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
                 sample_keys: int = 1000, top_keys: int = TOP_KEYS, clients: bool = True):
        self.name, self.url, self.interval = name, url, float(interval)
        self.target = redact(url)   # the components table and the pages show this one
        self.keyspace = KeyspaceSample(sample_keys, namespace_separator, top_keys)
        self.clients = bool(clients)
        self.client = redis.Redis.from_url(url, socket_timeout=SOCKET_TIMEOUT, client_name=SAMPLER_CLIENT_NAME,
                                           socket_connect_timeout=SOCKET_TIMEOUT, retry_on_timeout=False)
        self._base: _Baseline | None = None
        self._own: Counter = Counter()  # commands this sampler sent since the baseline INFO, by name
        self.last_slowlog_id = -1
        self._run_id: str | None = None

    @property
    def separator(self) -> str:
        return self.keyspace.separator

    @property
    def sample_keys(self) -> int:
        return self.keyspace.sample_keys

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
            ops = max(0, d["total_commands_processed"] - sum(self._own.values()))
            row("redis.ops_per_sec", ops / elapsed)
            row("redis.evicted_per_sec", d["evicted_keys"] / elapsed)
            row("redis.expired_per_sec", d["expired_keys"] / elapsed)
        for cmd, (calls, usec) in new.commands.items():
            before = base.commands.get(cmd, (0, 0))
            dc, du = calls - before[0], usec - before[1]
            if dc < 0 or du < 0:
                continue
            ours = min(dc, self._own.get(cmd, 0))
            if ours:   # our calls' own time is not known apart: theirs is taken pro rata
                dc, du = dc - ours, du * (dc - ours) / dc
            row("redis.cmd_calls_per_sec", dc / elapsed, f"cmd={cmd}")
            if dc:
                row("redis.cmd_usec_per_call", du / dc, f"cmd={cmd}")
                row("redis.cmd_calls", dc, f"cmd={cmd}")
                row("redis.cmd_usec", du, f"cmd={cmd}")

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
        self._base, self._own = _Baseline(info, at), Counter(info=1)
        slowlog = self._slowlog_rows()
        self._own["slowlog|get"] += 1
        started = time.perf_counter()
        dataset = info.get("used_memory_dataset")
        if self.keyspace.collect(self.client, self._own, row, float(dataset) if dataset else None):
            row("redis.sample_ms", (time.perf_counter() - started) * 1000.0)
        if self.clients:
            client_rows(self.client, self._own, row)
        # TYPE and PTTL count as keyspace hits: the next deltas start after our own commands.
        after = self.client.info("all")
        if after.get("run_id") == self._run_id:
            self._base, self._own = _Baseline(after, time.monotonic()), Counter(info=1)
        return [Rows("redis_metrics", metrics), Rows("redis_slowlog", slowlog, once=True)]
