"""Redis in depth, on real Redis servers and a real store: the keyspace sample's moving SCAN cursor, the
biggest keys, memory by data type, per-command statistics without the sampler's own commands, the
clients' summary, and the query functions that read them back (`dashboard.queries.redis`)."""
from __future__ import annotations

import shutil
import subprocess
import threading
import time
from datetime import UTC, timedelta

import pytest
import redis
from hypothesis import given
from hypothesis import strategies as st
from test_sampler_redis import Server

from collectors.samplers import utcnow
from collectors.samplers.redis import METRICS, RedisSampler
from collectors.samplers.redis_keys import KEY_CHARS, SAMPLER_CLIENT_NAME, as_name, escape, labels, parse_labels
from collectors.store import read, write
from dashboard.queries import (
    redis_biggest_keys,
    redis_clients,
    redis_commands,
    redis_memory_by_type,
    redis_namespaces,
    redis_sample_coverage,
)

BIG_ELEMENTS, BIG_ELEMENT = 35_000, "y" * 100     # a list of ~3.5 MB


@pytest.fixture
def server():
    srv = Server().start()
    yield srv
    srv.kill()


def _range() -> dict:
    now = utcnow()
    return {"since": now - timedelta(hours=1), "until": now + timedelta(minutes=1)}


def collect(sampler, store=None) -> dict[str, dict[str, float]]:
    """One sample as {metric: {labels: value}}; its rows written to `store` as the daemon writes them."""
    metrics, _ = sampler.collect(utcnow())
    if store is not None:
        with write(store) as con:
            con.executemany("INSERT INTO redis_metrics VALUES (?, ?, ?, ?, ?)", metrics.rows)
    out: dict[str, dict[str, float]] = {}
    for _ts, _instance, name, label, value in metrics.rows:
        assert name in METRICS, name
        out.setdefault(name, {})[label] = value
    return out


def scan_order(c: redis.Redis) -> list[bytes]:
    keys, cursor = [], 0
    while True:
        cursor, batch = c.scan(cursor, count=1000)
        keys += batch
        if cursor == 0:
            return keys


def load_big_list_after_first_thousand(c: redis.Redis, strings: int = 3000) -> str:
    """`strings` small strings and one ~3.5 MB list whose name SCAN returns after the first 1,500 keys."""
    with c.pipeline(transaction=False) as p:
        for i in range(strings):
            p.set(f"str:{i}", "x" * 20)
        p.execute()
    for j in range(1000):
        name = f"big:list:{j}"
        c.rpush(name, "a")
        if scan_order(c).index(name.encode()) > 1500:
            break
        c.delete(name)
    c.delete(name)
    with c.pipeline(transaction=False) as p:
        for _ in range(BIG_ELEMENTS // 1000):
            p.rpush(name, *([BIG_ELEMENT] * 1000))
        p.execute()
    assert scan_order(c).index(name.encode()) > 1500, "the list moved in the hash table"
    return name


def _keys(d: dict) -> dict[str, float]:
    return {parse_labels(label)["key"]: v for label, v in d.get("redis.key_bytes", {}).items()}


def test_a_moving_cursor_finds_the_big_list_a_fixed_sample_never_saw(redis_url, migrated_store):
    c = redis.Redis.from_url(redis_url)
    name = load_big_list_after_first_thousand(c)
    size, dbsize = c.memory_usage(name), c.dbsize()
    assert size > 3_500_000 and dbsize == 3001
    # The first 1,000 keys SCAN returns (what every sample used to read) do not hold it.
    cursor, first = 0, []
    while len(first) < 1000:
        cursor, batch = c.scan(cursor, count=1000)
        first += batch
    assert name.encode() not in first[:1000]

    s = RedisSampler(name="cache", url=redis_url, interval=1, sample_keys=1000, top_keys=5, clients=False)
    samples = [collect(s, migrated_store)]
    assert name not in _keys(samples[0]) and "ns=big:list" not in samples[0]["redis.ns_sampled_keys"]
    while "redis.scan_wrapped" not in samples[-1]:
        samples.append(collect(s, migrated_store))
        assert len(samples) <= 4, "one pass over 3,001 keys takes about three samples of 1,000"
    found = next(i for i, d in enumerate(samples) if name in _keys(d))
    assert 1 <= found <= 3
    assert sum(d["redis.sample_keys"][""] for d in samples) >= dbsize
    # Found once, it stays in the top, measured again at every sample, while the cursor is elsewhere.
    for _ in range(3):
        d = collect(s, migrated_store)
        assert max(_keys(d), key=_keys(d).get) == name and _keys(d)[name] == size

    with read(migrated_store) as con:
        keys = redis_biggest_keys(con, **_range())
        coverage = redis_sample_coverage(con, **_range())
        namespaces = redis_namespaces(con, **_range()).set_index("namespace")
        types = redis_memory_by_type(con, **_range()).set_index("type")
    assert keys.iloc[0][["instance", "key", "type", "bytes"]].tolist() == ["cache", name, "list", size]
    assert len(keys) == 5 and keys["bytes"].is_monotonic_decreasing
    assert 0 < keys.iloc[0]["share"] <= 1
    # The tables add up the whole pass: every key counted, the list's namespace and type included.
    [cov] = coverage.itertuples(index=False)
    assert cov.complete and cov.samples == len(samples) and cov.key_share == 1.0 and cov.dbsize == dbsize
    assert 0.5 < cov.memory_share <= 1.0
    assert namespaces.loc["big:list", "sampled_keys"] == 1
    assert namespaces.loc["big:list", "estimated_bytes"] == pytest.approx(size, rel=0.1)
    assert namespaces.loc["str", "sampled_keys"] >= 3000
    assert types.loc["list", "estimated_bytes"] == pytest.approx(size, rel=0.1)
    assert types.loc["list", "sampled_bytes"] == size and types.loc["string", "sampled_keys"] >= 3000
    assert types["share"].sum() == pytest.approx(1.0)


def test_top_keys_forget_deleted_keys_and_move_shrunk_ones_down(redis_url):
    c = redis.Redis.from_url(redis_url)
    c.mset({f"s:{i}": "v" for i in range(300)})
    c.hset("big:hash", mapping={f"f{i}": "x" * 50 for i in range(2000)})
    c.zadd("big:zset", {f"m{i}": i for i in range(3000)})
    s = RedisSampler(name="r", url=redis_url, interval=1, sample_keys=50, top_keys=3, clients=False)
    for _ in range(30):
        top = _keys(collect(s))
        if {"big:hash", "big:zset"} <= set(top):
            break
    assert {"big:hash", "big:zset"} <= set(top)
    zset_before = top["big:zset"]
    c.delete("big:hash")
    c.zremrangebyrank("big:zset", 0, 2899)
    top = _keys(collect(s))
    assert "big:hash" not in top
    assert top["big:zset"] < zset_before / 4
    assert len(top) == 3


def test_memory_by_data_type_of_known_sizes(redis_url):
    c = redis.Redis.from_url(redis_url)
    with c.pipeline(transaction=False) as p:
        for i in range(20):
            p.set(f"str:{i}", "s" * 1000)
        for i in range(5):
            p.rpush(f"list:{i}", *[f"e{j}" for j in range(1000)])
            p.hset(f"hash:{i}", mapping={f"f{j}": "v" * 10 for j in range(500)})
            p.sadd(f"set:{i}", *[f"m{j}" for j in range(500)])
            p.zadd(f"zset:{i}", {f"z{j}": j for j in range(500)})
        for i in range(2):
            for j in range(200):
                p.xadd(f"stream:{i}", {"n": j})
        p.execute()
    expected: dict[str, float] = {}
    for key in c.scan_iter(count=1000):
        kind = c.type(key).decode()
        expected[kind] = expected.get(kind, 0) + c.memory_usage(key)
    d = collect(RedisSampler(name="r", url=redis_url, interval=1, sample_keys=1000, clients=False))
    assert d["redis.type_sampled_keys"] == {labels(type=t): n for t, n in
                                            {"string": 20, "list": 5, "hash": 5, "set": 5, "zset": 5, "stream": 2}.items()}
    got = {parse_labels(label)["type"]: v for label, v in d["redis.type_sampled_bytes"].items()}
    # MEMORY USAGE samples 5 elements of a big hash, set or zset: an estimate, exact for the rest.
    assert got == pytest.approx(expected, rel=0.1)
    assert got["string"] == expected["string"] and got["list"] == expected["list"]
    assert d["redis.type_estimated_bytes"] == d["redis.type_sampled_bytes"]   # everything was sampled
    assert d["redis.sample_key_share"][""] == 1.0


def test_commandstats_count_known_calls_and_never_the_samplers_own(server, migrated_store):
    c = server.client()
    c.mset({f"k:{i}": "v" for i in range(500)})
    c.rpush("q", *range(100))
    s = RedisSampler(name="r", url=server.url(), interval=1, sample_keys=200)
    collect(s, migrated_store)
    for i in range(100):
        c.set(f"k:{i}", "w")
    for i in range(250):
        c.get(f"k:{i}")
    for _ in range(3):
        c.lrange("q", 0, -1)
    d = collect(s, migrated_store)
    assert d["redis.cmd_calls"] == {"cmd=set": 100, "cmd=get": 250, "cmd=lrange": 3}
    assert set(d["redis.cmd_usec"]) == set(d["redis.cmd_calls"])
    assert d["redis.hits_per_sec"][""] > 0
    # An idle Redis: no traffic at all, though the sampler ran INFO, SLOWLOG, SCAN, DBSIZE, MEMORY USAGE,
    # TYPE, PTTL and CLIENT LIST at every sample.
    for _ in range(3):
        idle = collect(s, migrated_store)
        assert "redis.cmd_calls" not in idle and "redis.cmd_usec_per_call" not in idle
        assert set(idle["redis.cmd_calls_per_sec"].values()) == {0.0}
        assert idle["redis.ops_per_sec"][""] == 0 and idle["redis.hits_per_sec"][""] == 0
        assert idle["redis.sample_keys"][""] > 0 and idle["redis.clients"]
    stats = c.info("commandstats")
    assert stats["cmdstat_memory|usage"]["calls"] > 0 and stats["cmdstat_client|list"]["calls"] >= 4

    with read(migrated_store) as con:
        df = redis_commands(con, **_range())
    assert df["command"].tolist()[:1] in (["get"], ["set"], ["lrange"])
    assert df.set_index("command")["calls"].to_dict() == {"set": 100, "get": 250, "lrange": 3}
    assert df["total_ms"].is_monotonic_decreasing and df["time_share"].sum() == pytest.approx(1.0)
    row = df.set_index("command").loc["get"]
    assert row.usec_per_call == pytest.approx(row.total_ms * 1000 / 250)


def test_clients_by_name_host_and_command(server, migrated_store):
    named = []
    for name, cmd in [("worker", "ping")] * 3 + [("web", "get")] * 2 + [("", "echo")]:
        conn = server.client()
        if name:
            conn.client_setname(name)
        conn.ping() if cmd == "ping" else conn.get("x") if cmd == "get" else conn.echo("hi")
        named.append(conn)
    blocked = server.client()
    blocked.client_setname("queue,consumer=1")
    thread = threading.Thread(target=blocked.blpop, args=(["jobs"], 30), daemon=True)
    thread.start()
    while server.client().info("clients")["blocked_clients"] < 1:
        time.sleep(0.01)
    try:
        s = RedisSampler(name="r", url=server.url(), interval=1, sample_keys=0)
        d = collect(s, migrated_store)
    finally:
        server.client().rpush("jobs", 1)
        thread.join(timeout=30)
    groups = {(p["name"], p["host"], p["cmd"]): n for p, n in
              ((parse_labels(label), n) for label, n in d["redis.clients"].items())}
    assert groups == {("worker", "127.0.0.1", "ping"): 3, ("web", "127.0.0.1", "get"): 2,
                      ("(no name)", "127.0.0.1", "echo"): 1, ("queue,consumer=1", "127.0.0.1", "blpop"): 1,
                      (SAMPLER_CLIENT_NAME, "127.0.0.1", "client|list"): 1}
    assert all(v >= 0 for v in d["redis.clients_oldest_sec"].values())

    with read(migrated_store) as con:
        df = redis_clients(con, **_range())
    assert df["connections"].sum() == 8 and df.iloc[0][["name", "connections"]].tolist() == ["worker", 3]
    assert df.set_index("name")["perfdeck"].to_dict() == {
        "worker": False, "web": False, "(no name)": False, "queue,consumer=1": False, SAMPLER_CLIENT_NAME: True}
    assert (df["oldest_ms"] >= df["idle_max_ms"]).all() and (df["idle_max_ms"] >= df["idle_min_ms"]).all()
    for conn in named:
        conn.close()


AWKWARD = ["a=b,c", "line\nbreak", "**bold** [x](http://e.com) <b>", "%2C%3D%25", "=", ",", "k" * 500]


def test_awkward_key_names_come_back_as_text(redis_url, migrated_store):
    c = redis.Redis.from_url(redis_url)
    for i, name in enumerate(AWKWARD):
        c.rpush(name, *["z" * 50] * (200 + i))
    c.rpush(b"\xff\xfebin", "z")
    collect(RedisSampler(name="r", url=redis_url, interval=1, top_keys=20, clients=False), migrated_store)
    with read(migrated_store) as con:
        keys = redis_biggest_keys(con, **_range())
    expected = {as_name(n) for n in AWKWARD} | {"\\xff\\xfebin"}
    assert set(keys["key"]) == expected and set(keys["type"]) == {"list"}
    assert "k" * (KEY_CHARS - 1) + "…" in expected


@given(st.text(), st.text(), st.text())
def test_labels_round_trip(key, kind, name):
    text = labels(key=key, type=kind, name=name)
    assert parse_labels(text) == {"key": key, "type": kind, "name": name}
    assert text.count(",") == 2 and text.count("=") == 3
    assert "," not in escape(key) and "=" not in escape(key)


@given(st.text(min_size=0, max_size=2 * KEY_CHARS) | st.binary(max_size=2 * KEY_CHARS))
def test_recorded_names_are_capped_text(raw):
    name = as_name(raw)
    assert isinstance(name, str) and len(name) <= KEY_CHARS
    text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else raw
    assert name == text or name.endswith("…") and text.startswith(name[:-1])


def test_the_pass_shown_is_the_latest_complete_one(migrated_store):
    """Samples of three passes: a complete one, one cut by the range's start, and one under way."""
    now = utcnow().replace(microsecond=0)
    start = now - timedelta(minutes=30)
    rows = []

    def sample(ts, pass_start, n, wrapped=False, ns="a", size=100.0):
        rows.extend([(ts, "r", "redis.scan_pass", "", _epoch(pass_start)),
                     (ts, "r", "redis.sample_keys", "", n), (ts, "r", "redis.dbsize", "", 20.0),
                     (ts, "r", "redis.sample_bytes", "", size), (ts, "r", "redis.used_memory_dataset", "", 400.0),
                     (ts, "r", "redis.ns_sampled_keys", f"ns={ns}", n),
                     (ts, "r", "redis.ns_estimated_bytes", f"ns={ns}", size * 20 / n),
                     (ts, "r", "redis.ns_sampled_bytes", f"ns={ns}", size),
                     (ts, "r", "redis.type_sampled_bytes", labels(type="hash"), size),
                     (ts, "r", "redis.ns_ttl_share", f"ns={ns}", 0.5),
                     (ts, "r", "redis.type_estimated_bytes", labels(type="hash"), size * 20 / n)])
        if wrapped:
            rows.append((ts, "r", "redis.scan_wrapped", "", 1.0))

    sample(start + timedelta(minutes=1), start - timedelta(minutes=5), 10, True, "old")   # began before the range
    p1 = start + timedelta(minutes=2)
    sample(p1, p1, 10, False, "x", 100.0)
    sample(p1 + timedelta(minutes=1), p1, 10, True, "y", 300.0)
    p2 = p1 + timedelta(minutes=2)
    sample(p2, p2, 10, False, "new")
    with write(migrated_store) as con:
        con.executemany("INSERT INTO redis_metrics VALUES (?, ?, ?, ?, ?)", rows)
    with read(migrated_store) as con:
        cov = redis_sample_coverage(con, since=start, until=now)
        ns = redis_namespaces(con, since=start, until=now)
        types = redis_memory_by_type(con, since=start, until=now)
        # a range with only the pass under way: that one, not complete
        later = redis_sample_coverage(con, since=p2, until=now)
    assert cov[["samples", "complete", "sampled_keys", "key_share", "sampled_bytes", "memory_share"]].iloc[0].tolist() \
        == [2, True, 20, 1.0, 400.0, 1.0]
    assert ns.set_index("namespace")["estimated_bytes"].to_dict() == {"y": 300.0, "x": 100.0}
    assert ns.set_index("namespace")["ttl_share"].to_dict() == {"y": 0.5, "x": 0.5}
    assert types[["type", "estimated_bytes", "share"]].values.tolist() == [["hash", 400.0, 1.0]]
    assert later[["samples", "complete", "key_share"]].iloc[0].tolist() == [1, False, 0.5]


def _epoch(t) -> float:
    """A naive UTC time as epoch seconds (the sampler names a pass by time.time() at its start)."""
    return t.replace(tzinfo=UTC).timestamp()


def test_perfdecks_other_connections_are_named_and_marked(server, migrated_store, tmp_path):
    """The collector's stream reader, the SDK's transport and the actions name their connections too."""
    from collectors.sdk.transport.redis import RedisTransport
    from collectors.sources import RedisSource

    source = RedisSource(server.url(), tmp_path / "quarantine")
    transport = RedisTransport(server.url())
    for client in (source.client, transport.client):
        client.ping()
    collect(RedisSampler(name="r", url=server.url(), interval=1, sample_keys=0), migrated_store)
    with read(migrated_store) as con:
        df = redis_clients(con, **_range())
    assert df.set_index("name")["perfdeck"].to_dict() == {
        "perfdeck-collector": True, "perfdeck-sdk": True, SAMPLER_CLIENT_NAME: True}
    source.client.close()
    transport.client.close()


@pytest.fixture(scope="module")
def bare_store():
    """An in-memory DuckDB with the store's schema, for many examples in one test."""
    import duckdb

    from collectors.store import migrate
    con = duckdb.connect()
    migrate(con)
    yield con
    con.close()


@given(st.lists(st.text(max_size=300), min_size=1, max_size=5, unique_by=as_name))
def test_key_names_come_back_from_the_query_as_written(bare_store, names):
    """Any key name (with "=", ",", "%", newlines, markdown) the sampler records, the query gives back."""
    now = utcnow()
    bare_store.execute("DELETE FROM redis_metrics")
    bare_store.executemany("INSERT INTO redis_metrics VALUES (?, 'r', 'redis.key_bytes', ?, ?)",
                           [(now, labels(key=as_name(n), type="hash"), float(i)) for i, n in enumerate(names)])
    df = redis_biggest_keys(bare_store, since=now - timedelta(minutes=1), until=now + timedelta(minutes=1))
    assert df["key"].tolist() == [as_name(n) for n in reversed(names)]
    assert set(df["type"]) == {"hash"}


def test_commandstats_after_redis_benchmark(server):
    """redis-benchmark's SETs and GETs, counted exactly, with the sampler's keyspace sample between."""
    if not shutil.which("redis-benchmark"):
        pytest.skip("redis-benchmark is not installed")
    s = RedisSampler(name="r", url=server.url(), interval=1, sample_keys=100)
    collect(s)
    subprocess.run(["redis-benchmark", "-p", str(server.port), "-t", "set,get", "-n", "3000", "-c", "4", "-r", "500",
                    "-q"], check=True, capture_output=True, timeout=120)
    d = collect(s)
    assert d["redis.cmd_calls"]["cmd=set"] == 3000 and d["redis.cmd_calls"]["cmd=get"] == 3000
    assert not {"cmd=scan", "cmd=type", "cmd=pttl", "cmd=memory|usage", "cmd=dbsize", "cmd=info",
                "cmd=client|list", "cmd=slowlog|get"} & set(d["redis.cmd_calls"])
    assert 0 < d["redis.type_sampled_keys"][labels(type="string")] <= 500
