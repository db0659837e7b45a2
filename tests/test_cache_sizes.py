"""Cache sizes: sdk.register_cache(..., size=) → the flusher's once-a-minute samples → a real spool →
the collector → cache_sizes in a real DuckDB file. The SDK runs on a hand-turned clock, so which minute
a flush falls in is decided by the test, not by when it runs."""
from __future__ import annotations

import json
import logging
import socket
import threading
import time
from datetime import datetime, timezone

import numpy as np
import pytest

from collectors import sdk
from collectors.daemon import Collector
from collectors.sdk import control as sdk_control
from collectors.sdk.batch import encode
from collectors.sdk.transport.spool import SpoolTransport
from tests.helpers import NamespacedCache, count, query

T0 = int(time.time()) // 60 * 60 - 3600      # a minute start an hour ago: well inside retention
HOST = socket.gethostname()


def minute(k: int) -> datetime:
    """The UTC minute k minutes after T0, as DuckDB returns a TIMESTAMP."""
    return datetime.fromtimestamp(T0 + 60 * k, timezone.utc).replace(tzinfo=None)


class Clock:
    """A time.time replacement the test moves by hand."""

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture(autouse=True)
def _no_registrations():
    """The registry is process-wide: every test starts and ends without registered caches."""
    def forget():
        with sdk_control._lock:
            sdk_control._handlers.clear()
            sdk_control._sizes.clear()
    forget()
    yield
    forget()


def sizes(db) -> list[tuple]:
    return query(db, "SELECT * FROM cache_sizes ORDER BY minute, host NULLS FIRST, cache")


def send(spool, *, host="web-1", pid=1, **kinds) -> None:
    SpoolTransport(spool).send(*encode(service="api", host=host, pid=pid, sent_at=T0, **kinds)[:2])


def test_sizes_are_measured_once_a_minute_off_the_request_path_and_land_in_cache_sizes(store, spool):
    clock = Clock(T0 + 15)
    users = NamespacedCache(a=3, b=2)
    prices = {"p1": 1.0, "p2": 2.0}
    measured_on = []

    def prices_size():
        measured_on.append(threading.current_thread().name)
        return len(prices)

    sdk.register_cache("users", users.clear, size=lambda: len(users.data))
    sdk.register_cache("prices", size=prices_size)                  # measured, not clearable
    sdk.configure(service="api", transport=f"spool:{spool}", flush_interval=60, clock=clock)
    assert sdk_control.registered()[1] == ["users"]                 # what the dashboard may clear

    assert sdk.flush(5)                          # minute 0: both measured
    [first] = spool.glob("*.batch")
    assert json.loads(first.read_bytes())["cache_sizes"] == [
        {"ts": T0 + 15, "cache": "users", "entries": 5}, {"ts": T0 + 15, "cache": "prices", "entries": 2}]
    prices["p3"] = 3.0
    clock.now = T0 + 59
    assert sdk.flush(5)                          # same minute: not measured again, so no batch at all
    clock.now = T0 + 61
    users.clear("a")
    assert sdk.flush(5)                          # minute 1
    assert len(list(spool.glob("*.batch"))) == 2

    report = Collector(store, spool_dir=spool).run_once()
    assert (report.batches, report.events, report.quarantined) == (2, 4, 0)
    assert sizes(store) == [(minute(0), "api", HOST, "prices", 2), (minute(0), "api", HOST, "users", 5),
                            (minute(1), "api", HOST, "prices", 3), (minute(1), "api", HOST, "users", 2)]
    assert measured_on == ["perfdeck-flusher", "perfdeck-flusher"]
    assert count(store, "ingest_rejects") == 0


def test_register_cache_takes_a_clear_a_size_or_both():
    for args, kwargs in [((), {}), ((None,), {"size": None}), ((), {"size": 5}),
                         ((lambda ns: 0,), {"size": "len"}), (("not callable",), {"size": len})]:
        assert sdk.register_cache("c", *args, **kwargs)() is None  # ignored, with a warning
    assert sdk_control.registered()[1] == [] and sdk_control.size_functions() == []

    def size():
        return 1

    undo_both = sdk.register_cache("both", lambda ns: 0, size=size)
    undo_size = sdk.register_cache("sized", size=size)
    assert sdk_control.registered()[1] == ["both"]
    assert sdk_control.size_functions() == [("both", [size]), ("sized", [size])]
    undo_both()
    undo_both()                                                    # twice: nothing more to remove
    assert sdk_control.registered()[1] == []
    assert sdk_control.size_functions() == [("sized", [size])]
    undo_size()
    assert sdk_control.size_functions() == []


def test_a_failing_size_is_skipped_and_logged_once_and_nothing_else_is_lost(store, spool, caplog):
    clock = Clock(T0 + 1)
    junk = iter(["12", -1, 3.5, True, None, 2**63, 0.0])

    def broken():
        raise RuntimeError("backend gone")

    sdk.register_cache("broken", size=broken)
    sdk.register_cache("junk", size=lambda: next(junk))
    sdk.register_cache("split", size=lambda: 4)
    sdk.register_cache("split", size=lambda: 1 / 0)               # one part unknown: the total is unknown
    sdk.register_cache("good", size=lambda: 7)
    sdk.register_cache("numpy", size=lambda: np.int64(9))         # numpy integers are counts too
    sdk.configure(service="api", transport=f"spool:{spool}", flush_interval=60, clock=clock)
    with caplog.at_level(logging.WARNING, logger="perfdeck.sdk"):
        for _ in range(6):
            sdk.record_request("/x", 1.0)
            sdk.record_cache("good", True, lookup_ms=0.1)
            assert sdk.flush(5)
            clock.now += 60
    warnings = [r.getMessage() for r in caplog.records if "size()" in r.getMessage()]
    assert warnings == [
        "perfdeck: size() of cache 'broken' raised RuntimeError: backend gone; skipped (logged once)",
        "perfdeck: size() of cache 'junk' returned a str, not a count of entries; skipped (logged once)",
        "perfdeck: size() of cache 'split' raised ZeroDivisionError: division by zero; skipped (logged once)",
    ]

    Collector(store, spool_dir=spool).run_once()
    assert sizes(store) == [row for k in range(6) for row in
                            [(minute(k), "api", HOST, "good", 7), (minute(k), "api", HOST, "numpy", 9)]]
    assert count(store, "request_events") == 6
    assert query(store, "SELECT sum(hits) FROM cache_stats WHERE cache = 'good'") == [(6,)]


def test_unregister_stops_the_sampling(store, spool):
    clock = Clock(T0 + 30)
    undo = sdk.register_cache("users", size=lambda: 3)
    sdk.configure(service="api", transport=f"spool:{spool}", flush_interval=60, clock=clock)
    assert sdk.flush(5)
    undo()
    clock.now += 60
    assert sdk.flush(5)
    assert len(list(spool.glob("*.batch"))) == 1                   # nothing recorded, nothing measured
    sdk.register_cache("users", size=lambda: 5)                    # back in the same minute: measured at once
    assert sdk.flush(5)

    Collector(store, spool_dir=spool).run_once()
    assert sizes(store) == [(minute(0), "api", HOST, "users", 3), (minute(1), "api", HOST, "users", 5)]


def test_malformed_sizes_are_rejected_and_counted_while_the_rest_of_the_batch_lands(store, spool):
    ts = T0 + 5
    batch_id, payload, _ = encode(
        service="api", host="web-1", pid=1, sent_at=ts,
        requests=[(ts, "/x", 2.0, 200, "GET", None, None)],
        deploys=[(ts, "v1"), (1e20, "v-from-a-broken-clock")],
        cache_sizes=[(ts, "good", 5), (ts, "zero", 0), (ts, "negative", -1), (ts, "fraction", 3.5),
                     (ts, "text", "12"), (ts, "flag", True), (ts, "missing", None), (ts, "huge", 2**63),
                     (1e20, "future", 1), (-60, "past", 1), ("soon", "ts_text", 1), (ts, 7, 1),
                     (ts, "n" * 600, 1)])
    doc = json.loads(payload)
    doc["cache_sizes"].append("not a row")
    SpoolTransport(spool).send(batch_id, json.dumps(doc).encode())

    report = Collector(store, spool_dir=spool).run_once()
    assert (report.batches, report.quarantined) == (1, 0)
    assert sizes(store) == [(minute(0), "api", "web-1", "good", 5), (minute(0), "api", "web-1", "zero", 0)]
    assert dict(query(store, "SELECT kind || '/' || reason, count FROM ingest_rejects WHERE batch_id = ?",
                      [batch_id])) == {
        "cache_sizes/entries_out_of_range": 2, "cache_sizes/bad_entries": 4,
        "cache_sizes/bad_timestamp": 2, "cache_sizes/bad_ts": 1, "cache_sizes/bad_cache": 1,
        "cache_sizes/label_too_long": 1, "cache_sizes/not_an_object": 1, "deploys/bad_timestamp": 1}
    assert count(store, "request_events") == 1
    assert query(store, "SELECT version FROM deploys") == [("v1",)]


def test_one_row_per_cache_and_minute_whatever_the_batches(store, spool):
    # One process: the last sample of the minute, by time, not by place in the batch.
    send(spool, pid=1, cache_sizes=[(T0 + 50, "c", 12), (T0 + 5, "c", 30), (T0 + 10, "d", 1)])
    Collector(store, spool_dir=spool).run_once()
    assert sizes(store) == [(minute(0), "api", "web-1", "c", 12), (minute(0), "api", "web-1", "d", 1)]

    # Other processes on the same host: the largest; another host or another minute: rows of their own.
    send(spool, pid=2, cache_sizes=[(T0 + 30, "c", 8)])
    send(spool, pid=3, cache_sizes=[(T0 + 40, "c", 20), (T0 + 61, "c", 4)])
    send(spool, pid=4, host="web-2", cache_sizes=[(T0 + 20, "c", 1)])
    send(spool, pid=5, host=None, cache_sizes=[(T0 + 1, "c", 2)])
    send(spool, pid=6, host=None, cache_sizes=[(T0 + 2, "c", 3)])
    report = Collector(store, spool_dir=spool).run_once()          # all in one transaction
    assert report.batches == 5
    assert sizes(store) == [(minute(0), "api", None, "c", 3), (minute(0), "api", "web-1", "c", 20),
                            (minute(0), "api", "web-1", "d", 1), (minute(0), "api", "web-2", "c", 1),
                            (minute(1), "api", "web-1", "c", 4)]


def test_a_batch_without_sizes_has_no_cache_sizes_key(spool):
    send(spool, requests=[(T0, "/x", 1.0, 200, "GET", None, None)])
    [path] = spool.glob("*.batch")
    assert "cache_sizes" not in json.loads(path.read_bytes())
