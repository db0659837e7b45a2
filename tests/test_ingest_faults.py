"""Ingest that nothing stops: a bad value rejects its row (counted, with its reason), never the batch's
transaction; a write the store still refuses is retried alone and quarantined; sampler rows survive
each other's faults. Real DuckDB files, real spool directories, a real SQLite target."""
from __future__ import annotations

import json
import sqlite3
import time
import uuid

import duckdb
import pytest

from collectors import config
from collectors.daemon import MAX_WRITE_TRIES, Collector
from collectors.samplers import Rows, Status
from collectors.sdk.batch import encode
from collectors.sdk.transport.spool import SpoolTransport
from collectors.store import utcnow, write
from collectors.store.ingest import decode
from collectors.store.schema import Limits
from tests.helpers import count, query

NOW = time.time()
MINUTE = int(NOW // 60 * 60)


def good_batch(n: int = 100) -> tuple[str, bytes]:
    return encode(service="api", host="web-1", pid=1, sent_at=NOW,
                  requests=[(NOW, "/ok", 5.0, 200, "GET", None, None)] * n)[:2]


def raw_batch(**kinds) -> tuple[str, bytes]:
    doc = {"v": 1, "id": uuid.uuid4().hex, "service": "api", "host": "web-1", "pid": 1, **kinds}
    return doc["id"], json.dumps(doc).encode()


def llm(**bad) -> dict:
    return {"ts": NOW, "model": "gpt-4o-mini", "input_tokens": 10, "output_tokens": 5, **bad}


def cache(**bad) -> dict:
    return {"minute": MINUTE, "cache": "c", "namespace": None, "hits": 1, "misses": 0, "lookups_timed": 1,
            "lookup_ms_sum": 0.5, "lookup_ms_max": 0.5, **bad}


def query_row(**bad) -> dict:
    return {"minute": MINUTE, "database": "app", "fingerprint": "SELECT ?", "sample_sql": "SELECT 1", "calls": 1,
            "total_ms": 1.0, "min_ms": 1.0, "max_ms": 1.0, "buckets": {"0": 1}, **bad}


# Each of these passed decode() and then failed the write transaction on every tick, for good.
HALTING = {
    "llm latency_ms text": ({"llm": [llm(latency_ms="n/a")]}, ("llm", "bad_latency_ms")),
    "llm input_tokens 2^63": ({"llm": [llm(input_tokens=2**63)]}, ("llm", "input_tokens_out_of_range")),
    "cache hits 2^63": ({"cache": [cache(hits=2**63)]}, ("cache", "hits_out_of_range")),
    "cache lookup_ms_max text": ({"cache": [cache(lookup_ms_max="slow")]}, ("cache", "bad_lookup_ms_max")),
    "query min_ms text": ({"queries": [query_row(min_ms="x")]}, ("queries", "bad_min_ms")),
    "query bucket 2^31": ({"queries": [query_row(buckets={str(2**31): 1})]}, ("queries", "buckets_out_of_range")),
}


def rejects(db) -> dict[tuple[str, str], int]:
    return {(k, r): n for k, r, n in query(db, "SELECT kind, reason, sum(count) FROM ingest_rejects GROUP BY ALL")}


@pytest.mark.parametrize("case", HALTING)
def test_a_bad_value_rejects_its_row_and_the_good_batches_land(store, spool, case):
    kinds, reason = HALTING[case]
    transport = SpoolTransport(spool)
    transport.send(*good_batch())
    transport.send(*raw_batch(**{k: rows + rows[:0] for k, rows in kinds.items()},
                              deploys=[{"ts": NOW, "version": "v2"}]))
    transport.send(*good_batch())

    report = Collector(store, spool_dir=spool).run_once()

    assert (report.batches, report.quarantined) == (3, 0)
    assert count(store, "request_events") == 200
    assert query(store, "SELECT version FROM deploys") == [("v2",)]     # the rest of its own batch too
    assert rejects(store) == {reason: 1}
    assert list(spool.iterdir()) == []


def test_a_pid_past_32_bits_is_dropped_not_the_batch(store, spool):
    SpoolTransport(spool).send(*encode(service="api", host="h", pid=2**31, sent_at=NOW,
                                       requests=[(NOW, "/x", 1.0, 200, "GET", None, None)])[:2])
    Collector(store, spool_dir=spool).run_once()
    assert query(store, "SELECT pid, events FROM ingested_batches") == [(None, 1)]


def test_times_outside_the_window_are_rejected_and_backfills_accepted(store, spool):
    day = 86400
    events = [(NOW, "/now", 1.0, 200, "GET", None, None), (NOW - 3 * day, "/backfill", 1.0, 200, "GET", None, None),
              (NOW + 3600, "/future", 1.0, 200, "GET", None, None), (4.0e9 - 1, "/2096", 1.0, 200, "GET", None, None),
              (NOW - 30 * day, "/old", 1.0, 200, "GET", None, None)]
    SpoolTransport(spool).send(*encode(service="api", host="h", pid=1, sent_at=NOW, requests=events,
                                       deploys=[(NOW + 10 * day, "v-from-the-future")])[:2])
    Collector(store, spool_dir=spool, limits=Limits(max_future_s=300, max_age_s=7 * day)).run_once()
    assert sorted(r[0] for r in query(store, "SELECT endpoint FROM request_events")) == ["/backfill", "/now"]
    assert rejects(store) == {("requests", "bad_timestamp"): 3, ("deploys", "bad_timestamp"): 1}


def test_ingest_limits_come_from_the_config_and_the_environment(monkeypatch):
    assert config.ingest_limits({"ingest": {"max_future": "2m", "max_age": "30d"}}) == Limits(120, 30 * 86400)
    monkeypatch.setenv("PERFDECK_INGEST_MAX_AGE", "2d")
    assert config.ingest_limits({}).max_age_s == 2 * 86400
    assert config.ingest_limits({}).max_future_s == 300
    with pytest.raises(ValueError, match=r"\[ingest\] max_future must be a span"):
        config.ingest_limits({"ingest": {"max_future": "soon"}})
    with pytest.raises(ValueError, match=r"unknown keys \['maxage'\]"):
        config.ingest_limits({"ingest": {"maxage": "1d"}})


def test_names_are_stored_as_inert_text_and_oversized_values_are_refused(store, spool):
    hostile = "/a\x00b\u202ecod.exe"
    events = [(NOW, hostile, 1.0, 200, "GET", "req-\x1b[31m", {"k": "v\u2066"}),
              (NOW, "/method", 1.0, 200, "G" * 1_000_000, None, None),
              (NOW, "/tags", 1.0, 200, "GET", None, {"blob": "x" * 1_000_000}),
              (NOW, "/id", 1.0, 200, "GET", "r" * 600, None),
              (NOW, "/status", 1.0, 40_000, "GET", None, None)]
    transport = SpoolTransport(spool)
    transport.send(*encode(service="api\u202e", host="h", pid=1, sent_at=NOW, requests=events)[:2])
    big_host_id, big_host = encode(service="api", host="h" * 1_000_000, pid=1, sent_at=NOW, requests=events[:1])[:2]
    transport.send(big_host_id, big_host)

    report = Collector(store, spool_dir=spool).run_once()

    assert (report.batches, report.quarantined) == (1, 1)
    assert query(store, "SELECT service, endpoint, request_id, tags FROM request_events") == [
        ("api\\u202e", "/a\\u0000b\\u202ecod.exe", "req-\\u001b[31m", '{"k":"v\\\\u2066"}')]
    assert rejects(store) == {("requests", "label_too_long"): 2, ("requests", "tags_too_long"): 1,
                              ("requests", "bad_status"): 1}
    [(reason,)] = query(store, "SELECT reason FROM quarantine")
    assert reason.startswith("invalid host name")


def test_a_write_the_store_refuses_is_retried_alone_then_quarantined(store, spool):
    """Validation cannot foresee everything (here a store whose deploys table lost a column): the batch
    the store refuses is found by writing one batch per transaction, tried MAX_WRITE_TRIES times, then
    quarantined with the store's error, and every other batch lands."""
    Collector(store, spool_dir=spool)                       # migrate
    with write(store) as con:
        con.execute("ALTER TABLE deploys DROP COLUMN host")
    transport = SpoolTransport(spool)
    for i in range(5):
        transport.send(*encode(service="api", host="h", pid=1, sent_at=NOW,
                               requests=[(NOW, f"/b{i}", 1.0, 200, "GET", None, None)],
                               deploys=[(NOW, "v2")] if i == 2 else ())[:2])
    collector = Collector(store, spool_dir=spool)

    for _ in range(MAX_WRITE_TRIES + 2):
        try:
            collector.run_once()
        except RuntimeError:
            pass

    assert sorted(r[0] for r in query(store, "SELECT endpoint FROM request_events")) == ["/b0", "/b1", "/b3", "/b4"]
    [(name, reason)] = query(store, "SELECT name, reason FROM quarantine")
    assert reason.startswith(f"write failed {MAX_WRITE_TRIES} times") and "deploys" in reason
    assert (spool.parent / "quarantine" / name).exists()
    assert list(spool.glob("*.batch")) == []
    for i in range(3):                                       # later batches go in one transaction together again
        transport.send(*encode(service="api", host="h", pid=1, sent_at=NOW,
                               requests=[(NOW, f"/later{i}", 1.0, 200, "GET", None, None)])[:2])
    assert collector.ingest_source(collector.sources[0]).batches == 3


def test_an_advisor_run_with_nothing_to_report_loses_no_samples(store, tmp_path):
    """`perfdeck collect --once` against an empty SQLite database: the advisor finds nothing, and the
    database sample, its status and the advisor run are all written."""
    target = tmp_path / "app.db"
    sqlite3.connect(target).close()
    cfg = {"host": {"enabled": False}, "database": [{"name": "app", "url": f"sqlite:///{target}"}]}
    collector = Collector(store, spool_dir=tmp_path / "spool", samplers=config.build_samplers(cfg),
                          advise=config.advisor_targets(cfg))
    collector.run_once()
    assert count(store, "db_metrics") > 0
    assert count(store, "advisor_runs") == 1
    assert query(store, "SELECT name, status FROM components") == [("app", "up")]


def test_one_samplers_bad_rows_do_not_lose_anothers(store, tmp_path):
    collector = Collector(store, spool_dir=tmp_path / "spool")
    now = utcnow()
    collector.samples.put(Rows("db_metrics", [(now, "app", "connections", None, 3.0)]))
    collector.samples.put(Rows("index_advice", []))                                   # nothing to report
    collector.samples.put(Rows("redis_metrics", [(now, "cache", "ops", None, "not a number")]))   # refused
    collector.samples.put(Rows("not_a_table", [(now, 1)]))
    collector.samples.put(Status("app", "database", "sqlite:///app.db", True, now))

    assert collector.write_samples() == 1

    assert query(store, "SELECT target, value FROM db_metrics") == [("app", 3.0)]
    assert count(store, "redis_metrics") == 0
    assert query(store, "SELECT name, status FROM components") == [("app", "up")]
    assert rejects(store) == {("samples", "redis_metrics_write_failed"): 1, ("samples", "unknown_table:not_a_table"): 1}
    assert collector.write_samples() == 0                   # nothing left over to write twice


def test_sample_rows_wait_for_a_store_that_cannot_be_written(store, tmp_path):
    """A failed write keeps the rows (the sampler's baseline has moved on: they exist only here)."""
    collector = Collector(store, spool_dir=tmp_path / "spool")
    collector.samples.put(Rows("db_metrics", [(utcnow(), "app", "connections", None, 3.0)]))
    moved = store.rename(store.with_suffix(".away"))
    store.mkdir()                            # the store cannot be opened (the tests run as root: no chmod)
    try:
        with pytest.raises(duckdb.IOException):
            collector.write_samples()
    finally:
        store.rmdir()
        moved.rename(store)
    assert collector.write_samples() == 1
    assert count(store, "db_metrics") == 1


def test_decode_keeps_the_sdk_self_report_and_refuses_a_broken_one():
    _, payload = raw_batch(sdk={"dropped": 3, "send_errors": 1, "rejected": {"queries:bad_duration": 2}})
    assert decode(payload).sdk.rejected == {"queries:bad_duration": 2}
    _, payload = raw_batch(sdk={"dropped": "many", "send_errors": 0})
    batch = decode(payload)
    assert batch.sdk is None and batch.rejects == {("sdk", "bad_self_report"): 1}


def test_a_collector_started_while_its_redis_is_down_still_ingests_the_spool(store, spool):
    import socket

    with socket.socket() as s:                       # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        dead = s.getsockname()[1]
    SpoolTransport(spool).send(*good_batch(5))
    collector = Collector(store, spool_dir=spool, redis_url=f"redis://127.0.0.1:{dead}/0")
    with pytest.raises(RuntimeError, match="ingest from redis"):
        collector.run_once()                         # says the stream failed...
    assert count(store, "request_events") == 5       # ...and the spool landed all the same
    [(source, error)] = query(store, "SELECT source, error FROM ingest_sources WHERE source LIKE 'redis:%'")
    assert "Connection" in error


def test_optional_token_counts_may_be_missing_beside_given_ones(store, spool):
    """Found by the property test: a null cached_input_tokens beside an int failed decode outright."""
    SpoolTransport(spool).send(*raw_batch(llm=[llm(cached_input_tokens=None, cache_write_tokens=7),
                                               llm(cached_input_tokens=3, cache_write_tokens=None)]))
    Collector(store, spool_dir=spool).run_once()
    assert sorted(query(store, "SELECT cached_input_tokens, cache_write_tokens FROM llm_calls")) == [(0, 7), (3, 0)]


def test_sdk_health_counts_left_out_events_not_cleared_values(store, spool):
    SpoolTransport(spool).send(*raw_batch(sdk={"dropped": 0, "send_errors": 0, "rejected": {
        "queries:bad_duration": 2, "llm:bad_latency_ms": 5}}))
    Collector(store, spool_dir=spool).run_once()
    assert query(store, "SELECT rejected FROM sdk_health") == [(2,)]


def test_sampler_rows_say_their_table_and_how_they_are_written(store, tmp_path):
    """No allow-list in the daemon: rows for any store table land (cache_sizes was never a sampler's), and rows
    marked `once` skip what the table holds already (a slowlog entry seen at two samples is stored once)."""
    collector = Collector(store, spool_dir=tmp_path / "spool")
    now = utcnow()
    entry = ("cache", 7, now, 1500, "KEYS *", "10.0.0.1:5000")
    collector.samples.put(Rows("cache_sizes", [(now, "api", "web-1", "products", 120)]))
    collector.samples.put(Rows("redis_slowlog", [entry], once=True))
    assert collector.write_samples() == 2
    collector.samples.put(Rows("redis_slowlog", [entry, ("cache", 8, now, 900, "GET x", None)], once=True))
    assert collector.write_samples() == 2
    assert query(store, "SELECT entry_id FROM redis_slowlog ORDER BY entry_id") == [(7,), (8,)]
    assert query(store, "SELECT cache, entries FROM cache_sizes") == [("products", 120)]
    assert rejects(store) == {}
