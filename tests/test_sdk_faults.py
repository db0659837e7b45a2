"""The SDK under faults: values the collector would refuse, events that cannot be encoded, a spool
that cannot be written, a Redis stream nobody reads, multiprocessing children that end with os._exit.
Everything is real: a spool directory, a redis-server of this module's own, forked processes."""
from __future__ import annotations

import errno
import json
import multiprocessing
import shutil
import subprocess
import time

import orjson
import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors import sdk
from collectors.sdk import checks
from collectors.sdk.batch import CLEARED
from collectors.sdk.transport.redis import STREAM, RedisTransport, StreamFull
from collectors.sdk.transport.spool import SpoolTransport
from collectors.store.ingest import decode

REDIS_PORT = 6393


def payloads(spool) -> list[bytes]:
    return [p.read_bytes() for p in sorted(spool.glob("*.batch"))]


def strict_json(payload: bytes) -> dict:
    """The batch as JSON that holds no NaN or Infinity (json calls parse_constant for those only)."""
    def refuse(name):
        raise AssertionError(f"the payload holds {name}")
    return json.loads(payload, parse_constant=refuse)


def refused(batch) -> dict:
    """What the collector refused in a batch, by (kind, reason)."""
    return {key: n for key, n in batch.rejects.items() if n}


def only_batch(spool):
    [payload] = payloads(spool)
    strict_json(payload)
    batch = decode(payload)
    assert refused(batch) == {}
    return batch


def events_in(batch) -> int:
    return sum([
        0 if batch.requests is None else len(batch.requests),
        0 if batch.cache is None else int(batch.cache["hits"].sum() + batch.cache["misses"].sum()),
        0 if batch.queries is None else int(batch.queries["calls"].sum()),
        0 if batch.llm is None else len(batch.llm),
        0 if batch.deploys is None else len(batch.deploys),
    ])


class Unprintable:
    """An app object whose conversions all raise."""

    def __str__(self):
        raise RuntimeError("no str")

    def __float__(self):
        raise RuntimeError("no float")

    def __index__(self):
        raise RuntimeError("no index")


# -- values the collector would refuse ------------------------------------------------------------------

def test_nan_and_infinity_cost_only_their_own_events(spool):
    sdk.configure(service="api", transport=f"spool:{spool}", flush_interval=60, control=False)
    for i in range(1000):
        sdk.record_request("/good", float(i % 50))
    sdk.record_request("/nan", float("nan"))
    sdk.record_request("/inf", float("inf"))
    sdk.record_query("SELECT * FROM t WHERE id = 1", float("inf"))
    sdk.record_query("SELECT * FROM t WHERE id = 2", 3.0)
    sdk.record_llm_call("gpt-4o-mini", 10, 5, latency_ms=float("nan"))
    sdk.record_cache("users", True, lookup_ms=float("inf"))
    assert sdk.flush(5)

    b = only_batch(spool)
    assert list(b.requests.column("endpoint").to_pylist()) == ["/good"] * 1000
    assert list(b.queries["calls"]) == [1] and list(b.queries["total_ms"]) == [3.0]
    llm = b.llm.iloc[0]
    assert (llm.model, llm.input_tokens, llm.output_tokens, llm.latency_ms) == ("gpt-4o-mini", 10, 5, None)
    cache = b.cache.iloc[0]
    assert (cache.hits, cache.misses, cache.lookups_timed, cache.lookup_ms_max) == (1, 0, 0, None)
    expected = {"requests:bad_duration": 2, "queries:bad_duration": 1, "llm:bad_latency_ms": 1,
                "cache:bad_lookup_ms": 1}
    assert sdk.stats()["rejected"] == expected
    assert b.sdk.rejected == expected
    assert (b.sdk.dropped, b.sdk.send_errors) == (0, 0)


def test_a_latency_that_is_not_a_number_is_dropped_and_the_call_lands_in_the_store(spool, store):
    from collectors.daemon import Collector
    from collectors.store import read

    sdk.configure(service="api", transport=f"spool:{spool}", flush_interval=60, control=False)
    sdk.record_llm_call("gpt-4o-mini", 10, 5, latency_ms="n/a")
    assert sdk.flush(5)
    report = Collector(store, spool_dir=spool).run_once()
    assert report.events == 1
    with read(store) as con:
        assert con.execute("SELECT model, input_tokens, output_tokens, latency_ms FROM llm_calls").fetchall() == [
            ("gpt-4o-mini", 10, 5, None)]
    assert sdk.stats()["rejected"] == {"llm:bad_latency_ms": 1}


@pytest.mark.parametrize("record, reason", [
    (lambda: sdk.record_request("/x", -0.5), "requests:bad_duration"),
    (lambda: sdk.record_request("/x", 86_400_000.5), "requests:bad_duration"),
    (lambda: sdk.record_request("/x", "12"), "requests:bad_duration"),
    (lambda: sdk.record_request("/x", 1.0, status=1000), "requests:bad_status"),
    (lambda: sdk.record_request("/x", 1.0, status="teapot"), "requests:bad_status"),
    (lambda: sdk.record_request("/x" * 300, 1.0), "requests:label_too_long"),
    (lambda: sdk.record_request("/x", 1.0, request_id="r" * 513), "requests:label_too_long"),
    (lambda: sdk.record_request("/x", 1.0, ratio=float("nan")), "requests:bad_tags"),
    (lambda: sdk.record_request("/x", 1.0, big=10**400), "requests:bad_tags"),
    (lambda: sdk.record_request("/x", 1.0, note="x" * 5000), "requests:tags_too_long"),
    (lambda: sdk.record_query("SELECT 1", float("-inf")), "queries:bad_duration"),
    (lambda: sdk.record_query("SELECT 1", None), "queries:bad_duration"),
    (lambda: sdk.record_query("", 1.0), "queries:bad_sql"),
    (lambda: sdk.record_query("SELECT 1", 1.0, database="d" * 513), "queries:label_too_long"),
    (lambda: sdk.record_llm_call("m", 2**63, 5), "llm:bad_input_tokens"),
    (lambda: sdk.record_llm_call("m", 10**9 + 1, 5), "llm:bad_input_tokens"),
    (lambda: sdk.record_llm_call("m", 10.0, 5), "llm:bad_input_tokens"),
    (lambda: sdk.record_llm_call("m", True, 5), "llm:bad_input_tokens"),
    (lambda: sdk.record_llm_call("m", 10, -1), "llm:bad_output_tokens"),
    (lambda: sdk.record_llm_call("m", 10, 5, cached_input_tokens=float("nan")), "llm:bad_cached_input_tokens"),
    (lambda: sdk.record_llm_call("m", 10, 5, cache_write_tokens="3"), "llm:bad_cache_write_tokens"),
    (lambda: sdk.record_llm_call("m", 10, 5, cache_hit="yes"), "llm:bad_cache_hit"),
    (lambda: sdk.record_llm_call(None, 10, 5), "llm:bad_model"),
    (lambda: sdk.record_llm_call("m", 10, 5, user="u" * 513), "llm:label_too_long"),
    (lambda: sdk.record_cache("c", "yes"), "cache:bad_hit"),
    (lambda: sdk.record_cache("", True), "cache:bad_cache"),
    (lambda: sdk.record_cache("c", True, namespace="n" * 513), "cache:label_too_long"),
    (lambda: sdk.mark_deploy(""), "deploys:bad_version"),
    (lambda: sdk.mark_deploy("v" * 513), "deploys:label_too_long"),
])
def test_a_value_the_collector_would_refuse_is_counted_by_reason_and_the_rest_is_sent(spool, record, reason):
    sdk.configure(service="api", transport=f"spool:{spool}", flush_interval=60, control=False)
    record()
    sdk.record_request("/good", 1.0)
    sdk.record_query("SELECT 1", 1.0)
    sdk.record_llm_call("m", 10, 5)
    sdk.record_cache("c", True, lookup_ms=0.5)
    sdk.mark_deploy("v1")
    assert sdk.flush(5)
    b = only_batch(spool)
    assert events_in(b) == 5
    assert sdk.stats()["rejected"] == b.sdk.rejected == {reason: 1}


def test_tags_are_measured_as_the_collector_measures_them(spool):
    sdk.configure(service="api", transport=f"spool:{spool}", flush_interval=60, control=False)
    sdk.record_request("/x", 1.0, note="é" * 4000)          # 4,011 characters of JSON: within the limit
    sdk.record_request("/x", 1.0, note="\u202e" * 700)       # 711, but stored escaped: 4,211
    assert sdk.flush(5)
    b = only_batch(spool)
    assert len(b.requests) == 1
    assert sdk.stats()["rejected"] == {"requests:tags_too_long": 1}


def test_the_sdk_checks_the_limits_the_collector_declares():
    from collectors.store import schema
    assert (checks.MAX_LABEL, checks.MAX_SQL, checks.MAX_TAGS_CHARS, checks.MAX_DURATION_MS, checks.MAX_EPOCH_S,
            checks.MAX_TOKENS, checks.MAX_COUNT) == (schema.MAX_LABEL, schema.MAX_SQL, schema.MAX_TAGS_BYTES,
                                                     schema.MAX_DURATION_MS, schema.MAX_EPOCH_S, schema.MAX_TOKENS,
                                                     schema.INT64)
    # The characters the collector stores escaped, which make a request's tags longer there.
    assert {c for c in map(chr, range(0x20, 0x3000)) if checks.ESCAPED.match(c)} == {
        c for c in map(chr, range(0x20, 0x3000)) if schema.clean(c) != c}


def test_a_service_name_the_collector_would_refuse_leaves_recording_off(spool):
    sdk.configure(service="s" * 513, transport=f"spool:{spool}", flush_interval=60, control=False)
    sdk.record_request("/x", 1.0)
    assert sdk.stats()["configured"] is False
    assert payloads(spool) == []


# -- an exception on the flusher thread ------------------------------------------------------------------

def test_an_event_that_cannot_be_encoded_costs_only_itself(spool):
    sdk.configure(service="api", transport=f"spool:{spool}", flush_interval=60, control=False)
    for i in range(100):
        sdk.record_request("/good", float(i))
    sdk.record_request(Unprintable(), 1.0)
    sdk.record_request("/x", Unprintable())
    for _ in range(5):
        sdk.record_query("SELECT * FROM t WHERE id = 1", 2.0)
    sdk.record_query(Unprintable(), 2.0)
    sdk.record_llm_call("m", 10, 5)
    sdk.record_llm_call("m", 10, 5, user=Unprintable())
    sdk.record_cache(Unprintable(), True)
    sdk.mark_deploy(Unprintable())
    sdk.mark_deploy("v2")
    assert sdk.flush(5)

    b = only_batch(spool)
    assert len(b.requests) == 100 and list(b.queries["calls"]) == [5]
    assert len(b.llm) == 1 and list(b.deploys["version"]) == ["v2"] and b.cache is None
    assert sdk.stats()["rejected"] == {"requests:encode_error": 2, "queries:encode_error": 1,
                                       "llm:encode_error": 1, "cache:encode_error": 1, "deploys:encode_error": 1}


# -- the spool ---------------------------------------------------------------------------------------------

def test_a_failed_spool_write_removes_its_temp_file_and_raises(spool):
    # The temporary name is where the transport will write: make it the full device, a real ENOSPC.
    batch_id = "f" * 32
    (spool / f".tmp-{batch_id}").symlink_to("/dev/full")
    transport = SpoolTransport(spool)
    with pytest.raises(OSError) as failed:
        transport.send(batch_id, b"{}" * 50_000)
    assert failed.value.errno == errno.ENOSPC
    assert list(spool.iterdir()) == []
    transport.send(batch_id, b"{}")           # the next try writes the batch as usual
    assert [p.name.endswith(f"-{batch_id}.batch") for p in spool.iterdir()] == [True]


# -- the Redis stream --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def own_redis():
    """A redis-server of this module's own, nothing persisted, stopped at the end."""
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed")
    server = subprocess.Popen(["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{REDIS_PORT}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server on port {REDIS_PORT} did not start")
                time.sleep(0.05)
        yield url
    finally:
        client.close()
        server.terminate()
        server.wait(10)


@pytest.fixture
def stream(own_redis):
    client = redis.Redis.from_url(own_redis)
    client.flushdb()
    yield own_redis, client
    client.flushdb()
    client.close()


def test_a_full_stream_refuses_the_batch_instead_of_trimming_unread_ones(stream):
    url, client = stream
    transport = RedisTransport(url, maxlen=5)
    for i in range(5):
        transport.send(f"b{i}", b"{}")
    with pytest.raises(StreamFull):
        transport.send("b5", b"{}")
    assert [fields[b"id"] for _, fields in client.xrange(STREAM)] == [b"b0", b"b1", b"b2", b"b3", b"b4"]
    client.xdel(STREAM, client.xrange(STREAM, count=1)[0][0])   # a collector acknowledged and deleted one
    transport.send("b5", b"{}")
    assert client.xlen(STREAM) == 5
    transport.close()


def test_batches_a_full_stream_refuses_wait_in_the_backlog_then_are_dropped_and_counted(stream):
    from collectors.sdk.flusher import BACKLOG
    from collectors.sdk.transport.redis import MAXLEN

    url, client = stream
    with client.pipeline(transaction=False) as pipe:       # batches no collector has read
        for i in range(MAXLEN):
            pipe.xadd(STREAM, {"id": f"old{i}", "b": b"{}"})
        pipe.execute()
    sdk.configure(service="api", transport=url, flush_interval=60, control=False)
    waiting = BACKLOG + 2
    for i in range(waiting):
        sdk.record_request(f"/r{i}", 1.0)
        assert sdk.flush(5) is False                      # refused: nothing trimmed, the batch waits
    assert client.xlen(STREAM) == MAXLEN
    assert client.xrange(STREAM, count=1)[0][1][b"id"] == b"old0"
    stats = sdk.stats()
    assert stats["send_errors"] == waiting and stats["dropped"] == waiting - BACKLOG

    client.xtrim(STREAM, maxlen=0)                        # the collector caught up and deleted them
    assert sdk.flush(5)
    sent = [decode(fields[b"b"]) for _, fields in client.xrange(STREAM)]
    endpoints = [e for b in sent for e in b.requests.column("endpoint").to_pylist()]
    assert endpoints == [f"/r{i}" for i in range(waiting - BACKLOG, waiting)]
    assert sent[-1].sdk.dropped == waiting - BACKLOG      # the loss reaches the store


# -- forked children ---------------------------------------------------------------------------------------

def _record_in_child(how: str) -> None:
    for i in range(50):
        sdk.record_request("/child", float(i))
    if how == "raises":
        raise RuntimeError("the child's work failed")


@pytest.mark.parametrize("how, exitcode", [("returns", 0), ("raises", 1)])
def test_a_multiprocessing_fork_child_sends_its_events_when_it_ends(spool, how, exitcode):
    sdk.configure(service="api", transport=f"spool:{spool}", flush_interval=60, control=False)
    child = multiprocessing.get_context("fork").Process(target=_record_in_child, args=(how,))
    child.start()
    child.join(30)
    assert child.exitcode == exitcode
    [b] = [decode(p) for p in payloads(spool)]
    assert b.pid == child.pid and b.requests.column("endpoint").to_pylist() == ["/child"] * 50


# -- a property: whatever the app records ---------------------------------------------------------------

_HOSTILE_CHARS = ["a", "/", " ", "é", "\x00", "\n", "\x7f", "\x85", "\u202e", "\u2066", "\ud800", "\U0001f600",
                  '"', "\\"]
texts = st.one_of(st.text(max_size=20), st.text(st.sampled_from(_HOSTILE_CHARS), max_size=30),
                  st.integers(500, 9000).map("x".__mul__))
anything = st.one_of(
    st.none(), st.booleans(), st.floats(), st.integers(-2**70, 2**70), st.just(10**400), st.decimals(),
    texts, st.binary(max_size=8), st.builds(Unprintable), st.lists(st.integers(), max_size=3),
    st.dictionaries(st.text(max_size=4), st.floats(), max_size=2),
)


def usually(good):
    return st.one_of(good, good, anything)


labels = st.text(min_size=1, max_size=20)
durations = st.floats(0, 10_000)
tokens = st.integers(0, 100_000)
tags = st.dictionaries(st.text(max_size=6).map("t_".__add__), anything, max_size=3)

record_calls = st.one_of(
    st.tuples(st.just(sdk.record_request), st.fixed_dictionaries({
        "endpoint": usually(labels), "duration_ms": usually(durations), "status": usually(st.integers(100, 599)),
        "method": usually(st.sampled_from(["GET", "POST"])), "request_id": usually(st.none() | labels)}), tags),
    st.tuples(st.just(sdk.record_cache), st.fixed_dictionaries({
        "cache": usually(labels), "hit": usually(st.booleans()), "lookup_ms": usually(st.none() | durations),
        "namespace": usually(st.none() | labels)}), st.just({})),
    st.tuples(st.just(sdk.record_llm_call), st.fixed_dictionaries({
        "model": usually(labels), "input_tokens": usually(tokens), "output_tokens": usually(tokens),
        "provider": usually(st.none() | labels), "cached_input_tokens": usually(tokens),
        "request_id": usually(st.none() | labels), "endpoint": usually(st.none() | labels),
        "user": usually(st.none() | labels), "cache_hit": usually(st.booleans()),
        "latency_ms": usually(st.none() | durations), "cache_write_tokens": usually(tokens)}), st.just({})),
    st.tuples(st.just(sdk.record_query), st.fixed_dictionaries({
        "sql": usually(st.sampled_from(["SELECT 1", "SELECT * FROM t WHERE id = 7"]) | texts),
        "duration_ms": usually(durations), "database": usually(st.none() | labels)}), st.just({})),
    st.tuples(st.just(sdk.mark_deploy), st.fixed_dictionaries({"version": usually(labels)}), st.just({})),
)


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(calls=st.lists(record_calls, min_size=1, max_size=25))
def test_whatever_is_recorded_every_event_is_sent_or_counted_and_the_collector_accepts_the_batch(spool, calls):
    for p in spool.glob("*.batch"):
        p.unlink()
    sdk.configure(service="prop", transport=f"spool:{spool}", flush_interval=3600, control=False)
    for record, kwargs, extra in calls:
        record(**kwargs, **extra)
    assert sdk.flush(5)

    [payload] = payloads(spool)
    strict_json(payload)
    orjson.loads(payload)
    b = decode(payload)
    assert refused(b) == {}
    stats = sdk.stats()
    assert (b.sdk.rejected or {}) == stats["rejected"]
    lost = sum(n for reason, n in stats["rejected"].items() if reason not in CLEARED)
    assert events_in(b) + lost + stats["dropped"] == len(calls)
