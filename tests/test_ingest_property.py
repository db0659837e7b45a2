"""Property: whatever a batch holds — wrong types, huge and non-finite numbers, long and hostile strings,
truncated files — decode either quarantines it whole with a reason or hands the write transaction only
what the store accepts; the good batch beside it lands in full, and every row is either stored or
counted as rejected. A real DuckDB file, written through the collector's own write path."""
from __future__ import annotations

import json
import math
import time
import uuid

from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from collectors.sdk.batch import encode
from collectors.store import migrate, write
from collectors.store.ingest import MalformedBatch, decode, write_batches
from collectors.store.schema import KINDS

NOW = time.time()

hostile_text = st.one_of(
    st.text(max_size=40),
    st.sampled_from(["", "\x00", "a\u202eb", "![x](http://example.invalid/p.png)", "<a href=x>y</a>", "é" * 600]),
    st.integers(1, 3).map(lambda k: "x" * (10**k * 200)),
)
hostile_number = st.one_of(
    st.integers(-(2**64), 2**64), st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0, -1, 2**31, 2**63 - 1, 2**63, NOW, NOW + 10**9, 4e9, 1e300]),
)
hostile_value = st.one_of(st.none(), st.booleans(), hostile_number, hostile_text,
                          st.lists(st.integers(), max_size=3), st.dictionaries(st.text(max_size=5), st.integers(), max_size=3))

VALID = {
    "cache": {"minute": NOW // 60 * 60, "cache": "c", "namespace": "n", "hits": 3, "misses": 1, "lookups_timed": 4,
              "lookup_ms_sum": 1.5, "lookup_ms_max": 0.9},
    "queries": {"minute": NOW // 60 * 60, "database": "app", "fingerprint": "SELECT ?", "sample_sql": "SELECT 1",
                "calls": 2, "total_ms": 3.0, "min_ms": 1.0, "max_ms": 2.0, "buckets": {"10": 2}},
    "llm": {"ts": NOW, "provider": "openai", "model": "gpt-4o-mini", "input_tokens": 100, "output_tokens": 20,
            "cached_input_tokens": 0, "request_id": "r", "endpoint": "/ask", "user": "u", "cache_hit": False,
            "latency_ms": 300.0, "cache_write_tokens": 0},
    "deploys": {"ts": NOW, "version": "v1"},
    "cache_sizes": {"ts": NOW, "cache": "c", "entries": 10},
}


@st.composite
def hostile_row(draw, kind: str):
    row = dict(VALID[kind])
    for name in draw(st.sets(st.sampled_from(sorted(row)), max_size=3)):
        row[name] = draw(hostile_value)
    if kind == "queries" and draw(st.booleans()):
        row["buckets"] = {draw(st.one_of(st.text(max_size=12), hostile_number.map(str))): draw(hostile_value)}
    return draw(st.sampled_from([row, row, row, "not a row", None])) if draw(st.booleans()) else row


@st.composite
def hostile_requests(draw):
    n = draw(st.integers(0, 20))
    events = [(draw(st.one_of(st.just(NOW), hostile_number)), draw(hostile_text), draw(hostile_number),
               draw(st.one_of(st.just(200), st.integers(0, 70_000))), draw(hostile_text),
               draw(st.one_of(st.none(), hostile_text)),
               draw(st.one_of(st.none(), st.dictionaries(hostile_text, hostile_value, max_size=2))))
              for _ in range(n)]
    return events


@st.composite
def hostile_payload(draw) -> tuple[bytes, dict | None]:
    """(payload, the document it was built from when it is one)."""
    requests = draw(hostile_requests())
    _, payload, _ = encode(service=draw(st.one_of(st.just("api"), hostile_text.filter(bool))), host="h",
                           pid=draw(st.one_of(st.just(7), st.integers(-(2**40), 2**40))), sent_at=NOW,
                           requests=[(float(e[0]) if isinstance(e[0], float | int) and abs(e[0]) < 1e308 else NOW,
                                      *e[1:]) for e in requests])
    doc = json.loads(payload)
    for kind in KINDS:
        if draw(st.booleans()):
            doc[kind] = draw(st.lists(hostile_row(kind), max_size=4))
    text = json.dumps(doc, allow_nan=True, default=str)    # NaN / Infinity tokens like a careless sender
    if draw(st.integers(0, 9)) == 0:
        return text.encode()[:draw(st.integers(0, len(text)))], None   # a truncated file
    return text.encode(), doc


def good_batch():
    return decode(encode(service="api", host="h", pid=1, sent_at=NOW,
                         requests=[(NOW, "/ok", 5.0, 200, "GET", "r1", None)] * 10,
                         llm=[(NOW, "openai", "gpt-4o-mini", 10, 5, 0, "r1", "/ok", "u", False, 100.0, 0)],
                         deploys=[(NOW, "v1")])[1])


def rows_in(doc: dict, kind: str) -> int:
    if kind == "requests":
        return doc.get("requests", {}).get("n", 0)
    return len(doc.get(kind) or [])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(hostile_payload())
def test_hostile_batches_never_fail_the_write_and_every_row_is_accounted_for(tmp_path_factory, case):
    payload, doc = case
    store = tmp_path_factory.mktemp("store") / "perfdeck.duckdb"
    try:
        batch = decode(payload)
    except MalformedBatch as exc:
        assert str(exc)                                   # quarantined whole, with a reason
        event("quarantined")
        return
    event("decoded, with rejects" if batch.rejects else "decoded, clean")
    good = good_batch()
    with write(store) as con:
        migrate(con)
        written = write_batches(con, [batch, good], "spool:test")
        stored = {t: con.execute(f"SELECT count(*) FROM {t}").fetchone()[0]
                  for t in ("request_events", "llm_calls", "deploys")}
    assert written == batch.events + good.events
    assert stored["request_events"] >= 10 and stored["llm_calls"] >= 1 and stored["deploys"] >= 1
    if doc is None:
        return
    folded = batch.rejects.get(("requests", "endpoint_cardinality_folded"), 0)
    for kind, frame in (("requests", batch.requests), ("cache", batch.cache), ("queries", batch.queries),
                        ("llm", batch.llm), ("deploys", batch.deploys)):
        kept = 0 if frame is None else len(frame)
        rejected = sum(n for (k, reason), n in batch.rejects.items() if k == kind and reason != "endpoint_cardinality_folded")
        assert kept + rejected == rows_in(doc, kind), (kind, kept, dict(batch.rejects))
    assert folded <= rows_in(doc, "requests")
    if batch.requests is not None:
        assert all(math.isfinite(d) and d >= 0 for d in batch.requests["duration_ms"].to_pylist())


def test_a_generated_batch_beside_good_ones_in_the_daemon(tmp_path):
    """The same through the daemon: a hostile batch between two good files; both good ones land."""
    from collectors.daemon import Collector
    from collectors.sdk.transport.spool import SpoolTransport
    from tests.helpers import count

    spool = tmp_path / "spool"
    t = SpoolTransport(spool)
    good = encode(service="api", host="h", pid=1, sent_at=NOW, requests=[(NOW, "/ok", 1.0, 200, "GET", None, None)] * 5)
    t.send(*good[:2])
    doc = {"v": 1, "id": uuid.uuid4().hex, "service": "api", "llm": [dict(VALID["llm"], latency_ms="n/a")],
           "cache": [dict(VALID["cache"], hits=2**63)], "queries": [dict(VALID["queries"], buckets={"99999999999": 1})]}
    t.send(doc["id"], json.dumps(doc).encode())
    good2 = encode(service="api", host="h", pid=1, sent_at=NOW, requests=[(NOW, "/ok", 1.0, 200, "GET", None, None)] * 5)
    t.send(*good2[:2])
    report = Collector(tmp_path / "perfdeck.duckdb", spool_dir=spool).run_once()
    assert (report.batches, report.quarantined) == (3, 0)
    assert count(tmp_path / "perfdeck.duckdb", "request_events") == 10
    assert count(tmp_path / "perfdeck.duckdb", "ingest_rejects") == 3
