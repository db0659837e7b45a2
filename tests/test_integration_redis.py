"""cached() and instrument_redis() against the real Redis of the conftest (database 15, flushed around
each test); the SDK spools to tmp_path and the test reads the batch files the daemon would ingest."""
from __future__ import annotations

import asyncio
import json
import socket
import time

import pytest

redis = pytest.importorskip("redis")

from helpers import spooled
from redis.backoff import NoBackoff
from redis.retry import Retry

from collectors.integrations.redis import (
    bump_cache_version,
    cached,
    instrument_redis,
    stable_hash,
    uninstrument_redis,
    version_key,
)


@pytest.fixture
def r(redis_url):
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def dead_client():
    """A client for a port nothing listens on, failing fast (no retries)."""
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    class CountedConnection(redis.Connection):
        def connect(self):
            client.connection_attempts += 1
            return super().connect()

    client = redis.Redis(connection_pool=redis.ConnectionPool(
        connection_class=CountedConnection, host="127.0.0.1", port=port, socket_connect_timeout=0.5,
        retry=Retry(NoBackoff(), 0)))
    client.connection_attempts = 0
    yield client
    client.close()


def lookups(sdk_spool) -> dict[tuple, tuple]:
    """(cache, namespace) -> (hits, misses, lookups_timed) summed over every spooled batch."""
    out: dict[tuple, tuple] = {}
    for row in spooled(sdk_spool, "cache"):
        h, m, t = out.get((row["cache"], row["namespace"]), (0, 0, 0))
        out[(row["cache"], row["namespace"])] = (h + row["hits"], m + row["misses"], t + row["lookups_timed"])
    return out


def test_miss_then_hit_then_bump_invalidates(sdk_spool, r):
    calls = []

    @cached("products", ttl=60, client=r, version_ttl=0.2)
    def product(pid, lang="en"):
        calls.append((pid, lang))
        return {"id": pid, "lang": lang, "tags": {"a", "b"}}

    assert product(1) == {"id": 1, "lang": "en", "tags": {"a", "b"}}
    assert product(1) == {"id": 1, "lang": "en", "tags": {"a", "b"}}
    assert product(1, lang="fr")["lang"] == "fr"
    assert calls == [(1, "en"), (1, "fr")]

    key = product.cache_key(1)
    assert key == f"products:v0:{product.__qualname__}:{stable_hash((1,), {})}"
    assert r.ttl(key) in (59, 60)

    assert bump_cache_version(r, "products") == 1
    assert r.get(version_key("products")) == b"1"
    assert product(1)["id"] == 1                      # same process: the bump is seen at once
    assert calls[-1] == (1, "en") and len(calls) == 3
    assert product.cache_key(1).startswith("products:v1:")

    ns = product.__qualname__
    assert lookups(sdk_spool) == {("products", ns): (1, 3, 4)}


def test_bump_from_another_process_is_seen_within_the_version_ttl(sdk_spool, r, redis_url):
    calls = []

    @cached("pages", client=r, namespace="page", version_ttl=0.3)
    def page(n):
        calls.append(n)
        return f"page {n}"

    assert page(7) == "page 7" and page(7) == "page 7" and calls == [7]
    other = redis.Redis.from_url(redis_url)          # another process's client: no local invalidation
    other.incr(version_key("pages"))
    other.close()
    from collectors.integrations import redis as integration
    integration._versions.clear()                    # as if the bump came from elsewhere...
    assert page(7) == "page 7" and calls == [7, 7]   # ...it is read on the next call
    assert page(7) == "page 7" and calls == [7, 7]

    r.incr(version_key("pages"))                     # not via bump_cache_version: only the ttl helps
    assert page(7) == "page 7" and calls == [7, 7]   # still v1 within the version ttl
    time.sleep(0.35)
    assert page(7) == "page 7" and calls == [7, 7, 7]
    assert lookups(sdk_spool) == {("pages", "page"): (3, 3, 6)}


def test_none_is_cached_and_errors_are_not(sdk_spool, r):
    calls = []

    @cached("c", client=r, namespace="n")
    def maybe(x):
        calls.append(x)
        if x < 0:
            raise ValueError("negative")

    assert maybe(1) is None and maybe(1) is None and calls == [1]
    for _ in range(2):
        with pytest.raises(ValueError, match="negative"):
            maybe(-1)
    assert calls == [1, -1, -1]


def test_custom_key_and_serializer(sdk_spool, r):
    @cached("users", ttl=5, client=r, key=lambda user: f"u{user['id']}", serializer=json)
    def profile(user):
        return {"name": user["name"].upper()}

    assert profile({"id": 3, "name": "ann"}) == {"name": "ANN"}
    assert r.get(profile.cache_key({"id": 3, "name": "x"})) == b'{"name": "ANN"}'
    assert profile.cache_key({"id": 3}).endswith(":u3")
    assert profile({"id": 3, "name": "other"}) == {"name": "ANN"}        # same key, a hit


def test_redis_down_calls_the_function_and_counts_misses(sdk_spool, dead_client):
    calls = []

    @cached("prices", client=dead_client, namespace="price", retry_after=30)
    def price(sku):
        calls.append(sku)
        return 9.5

    assert [price("a"), price("a"), price("b")] == [9.5, 9.5, 9.5]
    assert calls == ["a", "a", "b"]
    assert dead_client.connection_attempts == 1           # one failed connection, then left alone
    assert lookups(sdk_spool) == {("prices", "price"): (0, 3, 0)}


def test_redis_down_never_raises_from_a_fresh_client_each_time(sdk_spool, dead_client):
    @cached("p2", client=dead_client, retry_after=0)   # no backoff: every call tries and fails
    def f(x):
        return x * 2

    assert [f(1), f(2)] == [2, 4]
    with pytest.raises(redis.ConnectionError):          # an explicit bump does raise
        bump_cache_version(dead_client, "p2")


def test_async_function_with_an_asyncio_client(sdk_spool, redis_url):
    import redis.asyncio as aredis
    calls = []

    async def main():
        client = aredis.Redis.from_url(redis_url)

        @cached("async", client=client, namespace="a")
        async def fetch(x):
            calls.append(x)
            await asyncio.sleep(0)
            return [x, x]

        assert await fetch(2) == [2, 2]
        assert await fetch(2) == [2, 2]
        assert (await fetch.cache_key(2)).startswith("async:v0:a:")
        await client.aclose()

    asyncio.run(main())
    assert calls == [2]
    assert lookups(sdk_spool) == {("async", "a"): (1, 1, 2)}


def test_stable_hash_is_canonical():
    assert stable_hash(({"b": 1, "a": {2, 1}},), {}) == stable_hash(({"a": {1, 2}, "b": 1},), {})
    assert len({stable_hash((v,), {}) for v in (1, 1.0, True, "1", b"1", (1,), [1])}) == 7
    assert stable_hash((), {"x": 1, "y": 2}) == stable_hash((), {"y": 2, "x": 1})


def test_instrumented_client_counts_get_and_mget(sdk_spool, r):
    r.set("user:1", "a")
    r.set("user:2", "b")
    assert instrument_redis(r, cache="sessions", namespace=lambda k: k.split(":")[0]) is True
    assert instrument_redis(r, cache="sessions") is False

    assert r.get("user:1") == b"a"
    assert r.get("user:9") is None
    assert r.mget("user:1", "user:2", "user:3") == [b"a", b"b", None]
    assert r.mget(["user:3", "other:1"]) == [None, None]
    assert r.set("user:4", "d") is True and r.exists("user:4") == 1      # not lookups
    with pytest.raises(redis.ResponseError):                           # errors are the client's own
        r.execute_command("GET")

    assert lookups(sdk_spool) == {("sessions", "user"): (3, 3, 6), ("sessions", "other"): (0, 1, 1)}

    assert uninstrument_redis(r) is True and uninstrument_redis(r) is False
    r.get("user:1")
    assert lookups(sdk_spool) == {("sessions", "user"): (3, 3, 6), ("sessions", "other"): (0, 1, 1)}


def test_cached_through_an_instrumented_client_counts_once(sdk_spool, r):
    instrument_redis(r, cache="raw")

    @cached("fn", client=r, namespace="f")
    def f():
        return 1

    assert f() == 1 and f() == 1
    r.get("something")
    assert lookups(sdk_spool) == {("fn", "f"): (1, 1, 2), ("raw", None): (0, 1, 1)}


def test_instrumented_asyncio_client(sdk_spool, redis_url):
    import redis.asyncio as aredis

    async def main():
        client = aredis.Redis.from_url(redis_url)
        assert instrument_redis(client, cache="acache", namespace="ns")
        await client.set("k", "v")
        assert await client.get("k") == b"v"
        assert await client.get("nope") is None
        await client.aclose()

    asyncio.run(main())
    assert lookups(sdk_spool) == {("acache", "ns"): (1, 1, 2)}


def test_a_value_that_does_not_load_is_a_miss_and_is_replaced(sdk_spool, r):
    @cached("c", client=r, namespace="n")
    def f(x):
        return x + 1

    r.set(f.cache_key(1), b"not a pickle")
    assert f(1) == 2 and f(1) == 2
    assert lookups(sdk_spool) == {("c", "n"): (1, 1, 2)}
