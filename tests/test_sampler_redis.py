"""The Redis sampler against real redis-server processes of the tests' own (so that they can be
stopped, restarted and have their global counters to themselves), and through the real daemon."""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis

from collectors.config import build_samplers
from collectors.daemon import Collector
from collectors.samplers import utcnow
from collectors.samplers.redis import METRICS, SOCKET_TIMEOUT, RedisSampler
from collectors.samplers.system import HostSampler

RATES = {"redis.hit_rate", "redis.hits_per_sec", "redis.misses_per_sec", "redis.ops_per_sec",
         "redis.evicted_per_sec", "redis.expired_per_sec", "redis.cmd_calls_per_sec", "redis.cmd_usec_per_call"}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """A redis-server subprocess on a port of its own."""

    def __init__(self, port: int | None = None):
        self.port = port or _free_port()
        self.proc: subprocess.Popen | None = None

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> Server:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--daemonize", "no"],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                if redis.Redis(port=self.port, socket_connect_timeout=0.2).ping():
                    return self
            except redis.ConnectionError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                raise RuntimeError(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def client(self, db: int = 0) -> redis.Redis:
        return redis.Redis(port=self.port, db=db)


@pytest.fixture
def server():
    srv = Server().start()
    yield srv
    srv.kill()


def _sample(sampler) -> tuple[dict[str, dict[str, float]], list[tuple]]:
    metrics, slowlog = sampler.collect(utcnow())
    assert (metrics.table, slowlog.table) == ("redis_metrics", "redis_slowlog")
    d: dict[str, dict[str, float]] = {}
    for _ts, instance, name, labels, value in metrics.rows:
        assert instance == sampler.name
        d.setdefault(name, {})[labels] = value
    return d, slowlog.rows


def test_hit_rate_from_deltas_is_exact_and_agrees_with_info(server):
    c = server.client(db=3)
    c.mset({f"item:{i}": "v" for i in range(100)})
    s = RedisSampler(name="cache", url=server.url(3), interval=1)
    first, _ = _sample(s)
    assert not RATES & set(first), "the first sample is a baseline"
    before = c.info("stats")
    for i in range(300):
        c.get(f"item:{i % 100}")
    for i in range(100):
        c.get(f"missing:{i}")
    after = c.info("stats")
    second, _ = _sample(s)
    hits = after["keyspace_hits"] - before["keyspace_hits"]
    misses = after["keyspace_misses"] - before["keyspace_misses"]
    assert (hits, misses) == (300, 100)
    assert second["redis.hit_rate"][""] == 0.75 == hits / (hits + misses)
    assert second["redis.hits_per_sec"][""] == pytest.approx(3 * second["redis.misses_per_sec"][""])
    assert second["redis.cmd_calls_per_sec"]["cmd=get"] > 0 and second["redis.cmd_usec_per_call"]["cmd=get"] > 0
    assert second["redis.db_keys"]["db=3"] == 100
    # An interval without lookups has no hit-rate row (the sampler's own TTLs do not count)...
    third, _ = _sample(s)
    assert "redis.hit_rate" not in third
    assert third["redis.hits_per_sec"][""] == 0 and third["redis.misses_per_sec"][""] == 0
    assert "cmd=get" not in third.get("redis.cmd_usec_per_call", {})
    # ...and the sampler's own commands are not counted as traffic.
    assert third["redis.ops_per_sec"][""] == 0
    assert set(first) | set(second) | set(third) <= set(METRICS)
    for name in ("redis.used_memory", "redis.used_memory_peak", "redis.maxmemory", "redis.mem_fragmentation_ratio",
                 "redis.evicted_keys", "redis.expired_keys", "redis.connected_clients", "redis.evicted_per_sec",
                 "redis.expired_per_sec", "redis.instantaneous_ops_per_sec"):
        assert name in second, name


def test_expired_keys_rate(server):
    c = server.client()
    s = RedisSampler(name="r", url=server.url(), interval=1)
    _sample(s)
    started = time.monotonic()
    c.mset({f"t:{i}": 1 for i in range(50)})
    for i in range(50):
        c.pexpire(f"t:{i}", 1)
    time.sleep(0.05)
    assert c.mget([f"t:{i}" for i in range(50)]) == [None] * 50  # lazily expired on access
    second, _ = _sample(s)
    assert second["redis.expired_keys"][""] == 50
    assert second["redis.expired_per_sec"][""] * (time.monotonic() - started) >= 50 * 0.9


def test_restart_and_resetstat_start_a_new_baseline(server):
    c = server.client()
    c.set("k", 1)
    s = RedisSampler(name="r", url=server.url(), interval=1, sample_keys=0)
    _sample(s)
    for _ in range(50):
        c.get("k")
    second, _ = _sample(s)
    assert second["redis.hit_rate"][""] == 1.0
    # CONFIG RESETSTAT: counters go down -> no rates, never negative ones
    c.config_resetstat()
    reset, _ = _sample(s)
    assert "redis.hit_rate" not in reset and "redis.ops_per_sec" not in reset
    assert all(v >= 0 for name in RATES for v in reset.get(name, {}).values())
    # a restart on the same port: a new run_id and uptime -> a new baseline again
    for _ in range(1000):
        c.get("k")  # counters before the restart are higher than after it
    _sample(s)
    server.kill()
    server.start()
    c = server.client()
    c.set("k", 1)
    c.get("k")
    restarted, _ = _sample(s)
    assert not RATES & set(restarted)
    c.get("k")
    c.get("nope")
    again, _ = _sample(s)
    assert again["redis.hit_rate"][""] == 0.5
    assert all(v >= 0 for name in RATES for v in again.get(name, {}).values())


def test_slowlog_entries_once_across_samples(server):
    c = server.client()
    old = c.config_get("slowlog-log-slower-than")["slowlog-log-slower-than"]
    c.config_set("slowlog-log-slower-than", 0)
    try:
        s = RedisSampler(name="r", url=server.url(), interval=1)
        c.set("before", 1)
        _, first = _sample(s)
        assert any(row[4].startswith("SET before") for row in first)
        c.set("between", 1)
        c.get("between")
        _, second = _sample(s)
        _, third = _sample(s)
        ids = [row[1] for row in first + second + third]
        assert len(ids) == len(set(ids)), "an entry was sent twice"
        assert min(r[1] for r in second) > max(r[1] for r in first)
        assert min(r[1] for r in third) > max(r[1] for r in second)
        commands = [r[4] for r in second]
        assert "SET between 1" in commands and "GET between" in commands
        for instance, entry_id, ts, duration_us, command, client in second:
            assert instance == "r" and duration_us >= 0 and client.startswith("127.0.0.1:")
            assert abs((utcnow() - ts).total_seconds()) < 60
        assert s.last_slowlog_id == max(ids)
    finally:
        c.config_set("slowlog-log-slower-than", old)


def test_memory_by_namespace(server):
    c = server.client(db=2)
    c.config_resetstat()
    with c.pipeline() as p:
        for i in range(200):
            p.set(f"user:{i}", "x" * 100, ex=1000 + i)
        for i in range(100):
            p.set(f"session:{i}", "y" * 10)
        p.set("app:v2:config", "z")
        p.set("lonely", "1")
        p.execute()
    s = RedisSampler(name="r", url=server.url(2), interval=1)
    d, _ = _sample(s)
    assert d["redis.ns_sampled_keys"] == {"ns=user": 200, "ns=session": 100, "ns=app:v2": 1, "ns=(none)": 1}
    assert d["redis.sample_keys"][""] == 302 == d["redis.dbsize"][""]
    assert d["redis.ns_ttl_share"]["ns=user"] == 1.0 and d["redis.ns_ttl_share"]["ns=session"] == 0.0
    assert 1000 <= d["redis.ns_mean_ttl_sec"]["ns=user"] <= 1200
    assert "ns=session" not in d["redis.ns_mean_ttl_sec"]
    assert d["redis.ns_sampled_bytes"]["ns=user"] > d["redis.ns_sampled_bytes"]["ns=session"] > 0
    assert d["redis.ns_estimated_bytes"] == d["redis.ns_sampled_bytes"]  # everything was sampled
    # bounded: about 50 keys sampled (whole SCAN batches: a bucket may hold two), totals scaled up by
    # dbsize / sampled
    small = RedisSampler(name="r", url=server.url(2), interval=1, sample_keys=50)
    d, _ = _sample(small)
    n = d["redis.sample_keys"][""]
    assert 50 <= n < 60 and n == sum(d["redis.ns_sampled_keys"].values())
    for label, size in d["redis.ns_sampled_bytes"].items():
        assert d["redis.ns_estimated_bytes"][label] == pytest.approx(size * 302 / n)
    # another separator
    dash = RedisSampler(name="r", url=server.url(2), interval=1, namespace_separator="v2")
    d, _ = _sample(dash)
    assert d["redis.ns_sampled_keys"]["ns=app:"] == 1 and d["redis.ns_sampled_keys"]["ns=(none)"] == 301
    # never KEYS
    stats = c.info("commandstats")
    assert "cmdstat_keys" not in stats and "cmdstat_scan" in stats


def test_namespace_cardinality_is_capped(server):
    c = server.client()
    c.mset({f"tenant{i}:k": 1 for i in range(80)})
    d, _ = _sample(RedisSampler(name="r", url=server.url(), interval=1))
    assert len(d["redis.ns_sampled_keys"]) == 50 and d["redis.ns_sampled_keys"]["ns=(other)"] == 31


def test_a_dead_or_hung_redis_fails_fast(server):
    s = RedisSampler(name="r", url=server.url(), interval=1)
    _sample(s)
    os.kill(server.proc.pid, signal.SIGSTOP)  # hung: accepts nothing, answers nothing
    try:
        # Bounded by the sampler's own timeouts (no retry on a timeout), not left to hang the collector.
        kwargs = s.client.connection_pool.connection_kwargs
        assert kwargs["socket_timeout"] == kwargs["socket_connect_timeout"] == SOCKET_TIMEOUT < s.interval * 5
        with pytest.raises(redis.TimeoutError):
            s.collect(utcnow())
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)
    _sample(s)
    server.kill()
    with pytest.raises(redis.ConnectionError):
        s.collect(utcnow())


def test_built_from_config_with_the_documented_keys():
    [host, r] = build_samplers({"redis": [{"name": "cache", "url": "redis://:secret@127.0.0.1:1/0", "interval": 5,
                                           "namespace_separator": "|", "sample_keys": 10, "top_keys": 3,
                                           "clients": False}]})
    assert isinstance(host, HostSampler) and isinstance(r, RedisSampler)
    assert (r.name, r.kind, r.interval, r.separator, r.sample_keys) == ("cache", "redis", 5.0, "|", 10)
    assert (r.keyspace.top_keys, r.clients) == (3, False)
    assert "secret" not in r.target
    assert r.client.connection_pool.connection_kwargs["socket_timeout"] == 2


def test_shared_redis_fixture_db(redis_url):
    """Against the project's Redis too (global counters are shared there: only shapes are checked)."""
    c = redis.Redis.from_url(redis_url)
    c.set("x:1", 1, ex=60)
    s = RedisSampler(name="main", url=redis_url, interval=1)
    _sample(s)
    d, _ = _sample(s)
    assert d["redis.ns_sampled_keys"] == {"ns=x": 1} and d["redis.ns_ttl_share"] == {"ns=x": 1.0}
    assert d["redis.db_keys"][f"db={redis_url.rsplit('/', 1)[1]}"] == 1


# -- through the daemon ----------------------------------------------------------------------------
_QUERY = """
import json, sys
from collectors.store import connection
with connection.read(sys.argv[1], timeout=30) as con:
    print(json.dumps([[str(v) if v is not None else None for v in r] for r in con.execute(sys.argv[2]).fetchall()]))
"""


def _query(db: Path, sql: str) -> list[list]:
    """Read the store from another process, as the dashboard does (retrying while the daemon writes)."""
    out = subprocess.run([sys.executable, "-c", _QUERY, str(db), sql], capture_output=True, text=True, timeout=60,
                         cwd=Path(__file__).resolve().parents[1])
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


def _wait_for(db: Path, sql: str, check, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while True:
        rows = _query(db, sql) if db.exists() else None
        if rows is not None and check(rows):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting on {sql}: {rows}")
        time.sleep(0.2)


def test_down_and_up_again_with_the_daemon(tmp_path, server):
    db = tmp_path / "s.duckdb"
    collector = Collector(db, spool_dir=tmp_path / "spool", interval=0.2,
                          samplers=[RedisSampler(name="r2", url=server.url(), interval=0.2), HostSampler(interval=0.2)])
    thread = threading.Thread(target=collector.run_forever, daemon=True)
    thread.start()
    try:
        status = "SELECT status, error, kind, target FROM components WHERE name = 'r2'"
        _wait_for(db, "SELECT count(*) FROM redis_metrics WHERE instance = 'r2' AND name = 'redis.ops_per_sec'",
                  lambda r: int(r[0][0]) > 0)
        assert _query(db, status)[0][:1] == ["up"]
        server.kill()
        down = _wait_for(db, status, lambda r: r and r[0][0] == "down")
        assert down[0][1] and "Error" in down[0][1] and down[0][2:] == ["redis", server.url()]
        host_count = "SELECT count(*), max(ts) FROM system_metrics WHERE name = 'mem.used_bytes'"
        n_down = int(_query(db, host_count)[0][0])
        _wait_for(db, host_count, lambda r: int(r[0][0]) >= n_down + 3)  # the host sampler carries on
        assert _query(db, status)[0][0] == "down"
        server.start()  # same port
        up = _wait_for(db, status, lambda r: r[0][0] == "up", timeout=30)
        assert up[0][1] is None
        since = _query(db, "SELECT since, last_ok FROM components WHERE name = 'r2'")[0]
        assert since[0] <= since[1]
        # No negative rates were ever written, across the restart
        assert _query(db, "SELECT count(*) FROM redis_metrics WHERE value < 0")[0][0] == "0"
    finally:
        collector.stop()
        thread.join(timeout=30)
    assert not thread.is_alive()
