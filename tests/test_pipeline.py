"""SDK → transport → collector daemon → DuckDB, end to end with real files, a real Redis and real
processes: percentiles from the rollups match numpy's, and crashes, locks and bad input lose nothing."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from collectors import sdk
from collectors.daemon import Collector
from collectors.sdk.batch import encode
from collectors.sdk.transport.spool import SpoolTransport
from collectors.store import StoreLocked, read, write
from collectors.store.histogram import quantile
from tests.helpers import count, query

PERFDECK = [sys.executable, "-m", "collectors.cli"]
ENDPOINTS = {"/search": (3.0, 0.6), "/items/{id}": (1.5, 0.4), "/checkout": (4.5, 0.9), "/health": (0.0, 0.3)}


def record_lognormal_traffic(n_per_endpoint: int, seed: int = 7) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    raw = {ep: rng.lognormal(mu, sigma, n_per_endpoint) for ep, (mu, sigma) in ENDPOINTS.items()}
    for i in range(n_per_endpoint):
        for ep, durations in raw.items():
            sdk.record_request(ep, float(durations[i]), status=503 if i % 100 == 0 else 200)
    return raw


def percentiles_from_rollups(db) -> dict[str, dict]:
    rows = query(db, "SELECT endpoint, bucket, sum(count) FROM latency_hist GROUP BY ALL")
    hist: dict[str, dict[int, int]] = {}
    for ep, bucket, n in rows:
        hist.setdefault(ep, {})[bucket] = n
    return {ep: {"count": sum(h.values()), **{q: quantile(h, q / 100) for q in (50, 95, 99)}}
            for ep, h in hist.items()}


def assert_matches_numpy(db, raw: dict[str, np.ndarray]) -> None:
    got = percentiles_from_rollups(db)
    assert set(got) == set(raw)
    for ep, durations in raw.items():
        assert got[ep]["count"] == len(durations)
        for q in (50, 95, 99):
            expected = np.percentile(durations, q)
            assert abs(got[ep][q] - expected) / expected < 0.01, (ep, q, got[ep][q], expected)


def test_spool_to_duckdb_percentiles_match_numpy(store, spool):
    sdk.configure(service="api", transport=f"spool:{spool}", flush_interval=0.5, max_buffer=200_000)
    raw = record_lognormal_traffic(30_000)   # 120k events over four endpoints
    assert sdk.flush(30)

    out = subprocess.run([*PERFDECK, "collect", "--once", "--db", str(store), "--spool", str(spool)],
                         capture_output=True, text=True, check=True)
    assert "quarantined 0" in out.stdout
    assert count(store, "request_events") == 120_000
    assert_matches_numpy(store, raw)
    errors = dict(query(store, "SELECT endpoint, sum(errors) FROM request_rollup GROUP BY ALL"))
    assert errors == {ep: 300 for ep in ENDPOINTS}
    assert list(spool.glob("*.batch")) == []

    report = subprocess.run([*PERFDECK, "export", "latency", "--db", str(store), "--format", "json"],
                            capture_output=True, text=True, check=True)
    rows = {r["endpoint"]: r for r in json.loads(report.stdout)}
    for ep, durations in raw.items():
        assert rows[ep]["requests"] == len(durations)
        for q in (50, 95, 99):
            assert abs(rows[ep][f"p{q}_ms"] / np.percentile(durations, q) - 1) < 0.01


def test_redis_stream_to_duckdb_percentiles_match_numpy(store, tmp_path, redis_url):
    import redis

    sdk.configure(service="api", transport=redis_url, flush_interval=0.5, max_buffer=200_000)
    raw = record_lognormal_traffic(25_000, seed=11)
    assert sdk.flush(30)

    Collector(store, spool_dir=tmp_path / "spool", redis_url=redis_url).run_once()
    assert count(store, "request_events") == 100_000
    assert_matches_numpy(store, raw)
    client = redis.Redis.from_url(redis_url)
    assert client.xlen("perfdeck:batches") == 0          # acknowledged and deleted after commit
    assert client.xpending("perfdeck:batches", "perfdeck-collector")["pending"] == 0


def write_spool_batches(spool: Path, n_batches: int, events_per_batch: int) -> int:
    transport = SpoolTransport(spool)
    now = time.time()
    for b in range(n_batches):
        events = [(now - i * 0.001, f"/ep{i % 5}", 1.0 + (i % 97), 200, "GET", None, None) for i in range(events_per_batch)]
        transport.send(*encode(service="api", host="h", pid=1, sent_at=now, requests=events)[:2])
    return n_batches * events_per_batch


DAEMON = """
import sys
from collectors.daemon import Collector
Collector(sys.argv[1], spool_dir=sys.argv[2], interval=0.01, max_batches_per_tx=3).run_forever()
"""


@pytest.mark.parametrize("kills", [3])
def test_kill_9_mid_ingest_loses_nothing_and_counts_nothing_twice(store, spool, kills):
    expected = write_spool_batches(spool, 120, 2_000)
    for k in range(kills):
        daemon = subprocess.Popen([sys.executable, "-c", DAEMON, str(store), str(spool)])
        # Let it get into the middle of its work, then kill it without warning.
        deadline = time.monotonic() + 30
        while len(list(spool.glob("*.batch"))) > 120 - 20 * (k + 1) and time.monotonic() < deadline:
            time.sleep(0.01)
        daemon.send_signal(signal.SIGKILL)
        daemon.wait()
    remaining = len(list(spool.glob("*.batch")))
    assert 0 < remaining < 120, "the kills should land mid-ingest"
    Collector(store, spool_dir=spool).run_once()
    assert count(store, "request_events") == expected
    assert count(store, "ingested_batches") == 120
    assert query(store, "SELECT sum(count) FROM latency_hist")[0][0] == expected
    assert query(store, "SELECT sum(requests) FROM request_rollup")[0][0] == expected


def test_redis_kill_9_mid_ingest_loses_nothing(store, tmp_path, redis_url):
    from collectors.sdk.transport.redis import RedisTransport

    transport, now = RedisTransport(redis_url), time.time()
    for b in range(60):
        events = [(now, "/r", 1.0 + i % 50, 200, "GET", None, None) for i in range(2_000)]
        transport.send(*encode(service="api", host="h", pid=1, sent_at=now, requests=events)[:2])
    script = DAEMON.replace("spool_dir=sys.argv[2]", f"spool_dir=sys.argv[2], redis_url={redis_url!r}")
    daemon = subprocess.Popen([sys.executable, "-c", script, str(store), str(tmp_path / "spool")])
    deadline = time.monotonic() + 30
    while transport.client.xlen("perfdeck:batches") > 40 and time.monotonic() < deadline:
        time.sleep(0.01)
    daemon.send_signal(signal.SIGKILL)
    daemon.wait()
    assert transport.client.xlen("perfdeck:batches") > 0
    # A restarted daemon with the same consumer name first re-reads what it had not acknowledged.
    Collector(store, spool_dir=tmp_path / "spool", redis_url=redis_url).run_once()
    assert count(store, "request_events") == 120_000
    assert count(store, "ingested_batches") == 60


READER = """
import sys, time, duckdb
con = duckdb.connect(sys.argv[1], read_only=True)
con.execute("SELECT count(*) FROM request_events").fetchall()
print("holding", flush=True)
time.sleep(float(sys.argv[2]))
con.close()
"""


def test_daemon_waits_for_a_reader_and_loses_nothing(store, spool):
    collector = Collector(store, spool_dir=spool)   # creates the store
    expected = write_spool_batches(spool, 10, 1_000)
    reader = subprocess.Popen([sys.executable, "-c", READER, str(store), "1.5"], stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "holding"
    report = collector.run_once()                  # blocks on the lock, then ingests
    reader.wait()
    assert report.events == expected
    assert count(store, "request_events") == expected


def test_lock_held_past_the_bound_names_the_file(store):
    with write(store) as con:
        con.execute("CREATE TABLE t (x INT)")
    reader = subprocess.Popen([sys.executable, "-c", READER.replace("request_events", "t"), str(store), "3"],
                              stdout=subprocess.PIPE, text=True)
    assert reader.stdout.readline().strip() == "holding"
    with pytest.raises(StoreLocked, match=str(store)):
        with write(store, timeout=0.3):
            pass
    reader.wait()
    with read(store) as con:                       # free again
        assert con.execute("SELECT count(*) FROM t").fetchone() == (0,)


MALFORMED = {
    "not-json.batch": b"\x00\x01 definitely not json",
    "array.batch": b"[1, 2, 3]",
    "version.batch": json.dumps({"v": 99, "id": "abc", "service": "api"}).encode(),
    "no-id.batch": json.dumps({"v": 1, "service": "api"}).encode(),
    "evil-id.batch": json.dumps({"v": 1, "id": "../../etc/passwd", "service": "api"}).encode(),
    "no-service.batch": json.dumps({"v": 1, "id": "abc"}).encode(),
    "short-column.batch": json.dumps({"v": 1, "id": "abc", "service": "api", "requests": {
        "n": 3, "ts": "AAAAAAAAAAA=", "duration_ms": "", "status": "", "endpoint": [], "method": []}}).encode(),
    "bad-base64.batch": json.dumps({"v": 1, "id": "abd", "service": "api", "requests": {
        "n": 1, "ts": "***", "duration_ms": "***", "status": "**", "endpoint": ["/"], "method": ["GET"]}}).encode(),
    "code-out-of-range.batch": json.dumps({"v": 1, "id": "abe", "service": "api", "requests": {
        "n": 1, "ts": "AAAAAAAAAAA=", "duration_ms": "AAAAAAAA8D8=", "status": "yAA=",
        "endpoint": {"values": ["/"], "codes": "BwAAAA=="}, "method": {"values": ["GET"], "codes": "AAAAAA=="}}}).encode(),
    "bad-offsets.batch": json.dumps({"v": 1, "id": "abf", "service": "api", "requests": {
        "n": 1, "ts": "AAAAAAAAAAA=", "duration_ms": "AAAAAAAA8D8=", "status": "yAA=",
        "endpoint": {"values": ["/"], "codes": "AAAAAA=="}, "method": {"values": ["GET"], "codes": "AAAAAA=="},
        "request_id": {"offsets": "AAAAAGQAAAA=", "data": "cjE="}}}).encode(),
}


def test_malformed_batches_are_quarantined_and_counted_while_good_ones_land(store, spool, tmp_path):
    expected = write_spool_batches(spool, 3, 500)
    for name, payload in MALFORMED.items():
        (spool / name).write_bytes(payload)
    out = subprocess.run([*PERFDECK, "collect", "--once", "--db", str(store), "--spool", str(spool)],
                         capture_output=True, text=True, check=True)
    assert f"quarantined {len(MALFORMED)}" in out.stdout
    assert count(store, "request_events") == expected
    reasons = dict(query(store, "SELECT name, reason FROM quarantine"))
    assert set(reasons) == set(MALFORMED)
    assert reasons["not-json.batch"].startswith("not JSON")
    assert reasons["version.batch"] == "unsupported batch version 99"
    assert reasons["evil-id.batch"] == "missing or invalid batch id"
    assert reasons["code-out-of-range.batch"] == "requests.endpoint: code out of range"
    assert reasons["bad-offsets.batch"].startswith("requests.request_id: invalid packed strings")
    assert "3 values" not in reasons["short-column.batch"] and "n=3" in reasons["short-column.batch"]
    quarantine = tmp_path / "quarantine"
    for name, payload in MALFORMED.items():
        assert (quarantine / name).read_bytes() == payload
        assert (quarantine / f"{name}.reason.txt").read_text().strip() == reasons[name]
    assert list(spool.glob("*.batch")) == []


def test_bad_rows_are_dropped_and_counted_while_the_rest_of_the_batch_lands(store, spool):
    now = time.time()
    events = [(now, "/ok", 5.0, 200, "GET", None, None), (now, "/nan", float("nan"), 200, "GET", None, None),
              (now, "/neg", -3.0, 200, "GET", None, None), (now, "/x" * 400, 1.0, 200, "GET", None, None),
              (float("inf"), "/ts", 1.0, 200, "GET", None, None), (now, "/ok", 7.0, 200, "GET", None, None)]
    events += [(now, f"/user/{i}", 1.0, 200, "GET", None, None) for i in range(1_200)]  # ids in the path
    SpoolTransport(spool).send(*encode(
        service="api", host="h", pid=1, sent_at=now, requests=events,
        llm=[(now, None, "m", 10, 5, 0, None, None, None, False, None), (now, None, None, "x", 5, 0, None, None,
                                                                        None, False, None)],
    )[:2])
    Collector(store, spool_dir=spool).run_once()
    rejects = dict(((k, r), n) for k, r, n in query(store, "SELECT kind, reason, sum(count) FROM ingest_rejects GROUP BY ALL"))
    assert rejects[("requests", "bad_duration")] == 2
    assert rejects[("requests", "label_too_long")] == 1
    assert rejects[("requests", "bad_timestamp")] == 1
    assert rejects[("llm", "bad_model")] == 1
    folded = rejects[("requests", "endpoint_cardinality_folded")]
    assert folded == 1_201 - 1_000               # one row each for all but the 1000 most frequent endpoints
    assert count(store, "request_events") == 1_202
    assert count(store, "request_events", "endpoint = '(other)'") == folded
    assert count(store, "llm_calls") == 1


def test_missing_optional_labels_are_stored_as_null(store, spool):
    sdk.configure(service="api", transport=f"spool:{spool}", flush_interval=60)
    sdk.record_llm_call("m", 10, 5, request_id="r-1", user="u-1")
    sdk.record_llm_call("m", 10, 5)
    assert sdk.flush(5)
    Collector(store, spool_dir=spool).run_once()
    assert query(store, "SELECT request_id, user_id, provider FROM llm_calls ORDER BY request_id NULLS LAST") == [
        ("r-1", "u-1", None), (None, None, None)]


def test_request_ids_round_trip_including_non_ascii_and_missing(store, spool):
    sdk.configure(service="api", transport=f"spool:{spool}", flush_interval=60)
    for rid in ("r-1", None, "zürich-ü", "", "r-5"):
        sdk.record_request("/a", 1.0, request_id=rid)
    assert sdk.flush(5)
    Collector(store, spool_dir=spool).run_once()
    assert [r[0] for r in query(store, "SELECT request_id FROM request_events ORDER BY ts")] == [
        "r-1", None, "zürich-ü", None, "r-5"]


def test_replayed_batch_is_a_no_op(store, spool):
    batch_id, payload, _ = encode(service="api", host="h", pid=1, sent_at=time.time(),
                                  requests=[(time.time(), "/a", 1.0, 200, "GET", None, None)] * 10)
    transport = SpoolTransport(spool)
    transport.send(batch_id, payload)
    collector = Collector(store, spool_dir=spool)
    collector.run_once()
    transport.send(batch_id, payload)        # the same batch again, e.g. re-delivered
    assert collector.run_once().events == 0
    assert count(store, "request_events") == 10


def test_collect_runs_until_sigterm_and_flushes_cleanly(store, spool):
    daemon = subprocess.Popen([*PERFDECK, "collect", "--db", str(store), "--spool", str(spool),
                               "--interval", "0.1"], stderr=subprocess.PIPE, text=True)
    expected = write_spool_batches(spool, 5, 100)
    deadline = time.monotonic() + 20
    while list(spool.glob("*.batch")) and time.monotonic() < deadline:
        time.sleep(0.05)
    expected += write_spool_batches(spool, 1, 100)   # arrives just before the stop
    daemon.send_signal(signal.SIGTERM)
    assert daemon.wait(20) == 0, daemon.stderr.read()
    assert count(store, "request_events") == expected
    assert os.path.exists(store)


def test_redis_entries_past_the_size_cap_come_back_in_the_next_fetch(tmp_path, redis_url):
    from collectors.sdk.transport.redis import RedisTransport
    from collectors.sources import RedisSource

    transport, now = RedisTransport(redis_url), time.time()
    sent = [transport.send(*encode(service="api", host="h", pid=1, sent_at=now,
                                   requests=[(now, "/a", 1.0, 200, "GET", None, None)])[:2]) for _ in range(5)]
    source = RedisSource(redis_url, tmp_path / "q")
    seen = []
    for _ in range(6):
        items = source.fetch(500, max_bytes=1)       # the cap stops after the first entry each time
        seen += [i.name for i in items]
        source.ack(items)
    assert len(sent) == len(seen) == len(set(seen)) == 5
    assert transport.client.xlen("perfdeck:batches") == 0


@pytest.mark.parametrize("consumer", [None, "collector-a"])
def test_a_collector_signs_its_sources_reports_with_its_consumer_name(store, spool, monkeypatch, consumer):
    """Named when given a name (several collectors on a lake are, and health then judges each); unnamed
    otherwise, as a host name can change with every restart of a container."""
    if consumer:
        monkeypatch.setenv("PERFDECK_CONSUMER", consumer)
    else:
        monkeypatch.delenv("PERFDECK_CONSUMER", raising=False)
    Collector(store, spool_dir=spool).record_source_status()
    assert query(store, "SELECT source, collector FROM ingest_sources") == [(f"spool:{spool}", consumer)]
