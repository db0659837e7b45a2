"""The SDK against a real spool directory: what is recorded arrives, and nothing ever raises."""
from __future__ import annotations

import asyncio
import os

import pytest

from collectors import sdk
from collectors.sdk import api
from collectors.sdk.fingerprint import fingerprint
from collectors.store.ingest import decode


def batches(spool):
    return [decode(p.read_bytes()) for p in sorted(spool.glob("*.batch"))]


def all_requests(spool):
    import pyarrow as pa
    tables = [b.requests for b in batches(spool) if b.requests is not None]
    return pa.concat_tables(tables).to_pandas() if tables else None


def test_record_before_configure_is_a_silent_noop(spool):
    sdk.record_request("/x", 1.0)
    sdk.record_cache("c", True)
    assert api.requests == [] and api.cache_lookups == []
    assert sdk.stats()["configured"] is False
    assert sdk.flush(0.1) is False


def test_recorded_events_arrive_in_one_batch(spool):
    sdk.configure(service="api", transport=f"spool:{spool}", flush_interval=60)
    sdk.record_request("/search", 12.5, status=201, method="POST", request_id="r-1", tenant="acme")
    sdk.record_request("/search", 7.0)
    sdk.record_cache("users", True, lookup_ms=0.5, namespace="u")
    sdk.record_cache("users", False, lookup_ms=1.5, namespace="u")
    sdk.record_cache("users", False, namespace="u")
    sdk.record_llm_call("gpt-4o-mini", 800, 90, provider="openai", cached_input_tokens=200,
                        request_id="r-1", endpoint="/search", user="u-1", latency_ms=640)
    sdk.record_query("SELECT * FROM t WHERE id = 1", 2.0, database="app")
    sdk.record_query("SELECT * FROM t WHERE id = 2", 4.0, database="app")
    sdk.mark_deploy("v2")
    assert sdk.flush(5)

    [b] = batches(spool)
    assert b.service == "api" and b.pid == os.getpid()
    req = b.requests.to_pandas()
    assert list(req["endpoint"]) == ["/search", "/search"]
    assert list(req["status"]) == [201, 200] and list(req["method"]) == ["POST", "GET"]
    assert list(req["duration_ms"]) == [12.5, 7.0]
    assert b.requests.column("request_id").to_pylist() == ["r-1", ""]  # stored as NULL
    assert req["tags"][0] == '{"tenant":"acme"}'
    cache = b.cache.iloc[0]
    assert (cache.hits, cache.misses, cache.lookups_timed, cache.lookup_ms_sum, cache.lookup_ms_max) == (1, 2, 2, 2.0, 1.5)
    q = b.queries.iloc[0]
    assert (q.fingerprint, q.calls, q.total_ms, q.min_ms, q.max_ms) == ("SELECT * FROM t WHERE id = ?", 2, 6.0, 2.0, 4.0)
    llm = b.llm.iloc[0]
    assert (llm.model, llm.input_tokens, llm.cached_input_tokens, llm.request_id) == ("gpt-4o-mini", 800, 200, "r-1")
    assert list(b.deploys["version"]) == ["v2"]


def test_env_vars_configure_service_and_transport(spool, monkeypatch):
    monkeypatch.setenv("PERFDECK_SERVICE", "from-env")
    monkeypatch.setenv("PERFDECK_TRANSPORT", f"spool:{spool}")
    sdk.configure(flush_interval=60)
    sdk.record_request("/x", 1.0)
    assert sdk.flush(5)
    assert batches(spool)[0].service == "from-env"


@pytest.mark.parametrize("args", [
    (None, None), ("/x", "fast"), ("/x", float("nan")), (object(), -5), ("/x", 1.0, "teapot"), ("/x", 1.0, 10**9),
])
def test_record_request_never_raises_and_bad_rows_are_rejected_not_fatal(spool, args):
    sdk.configure(service="api", transport=f"spool:{spool}", flush_interval=60)
    sdk.record_request(*args)
    sdk.record_request("/good", 3.0)
    assert sdk.flush(5)
    [b] = batches(spool)
    assert "/good" in set(b.requests.to_pandas()["endpoint"])


def test_full_buffer_drops_and_counts(spool):
    sdk.configure(service="api", transport=f"spool:{spool}", flush_interval=60, max_buffer=10)
    for _ in range(25):
        sdk.record_request("/x", 1.0)
    assert sdk.stats()["dropped"] == 15
    assert sdk.flush(5)
    [b] = batches(spool)
    assert len(b.requests) == 10 and b.sdk.dropped == 15


def test_timed_context_manager_and_decorators(spool):
    sdk.configure(service="api", transport=f"spool:{spool}", flush_interval=60)
    with sdk.timed("/block"):
        pass

    @sdk.timed("/fn", method="POST")
    def fn(x):
        return x * 2

    @sdk.timed("/boom")
    def boom():
        raise KeyError("host error")

    @sdk.timed("/async")
    async def coro():
        return "done"

    assert fn(21) == 42
    with pytest.raises(KeyError, match="host error"):
        boom()
    assert asyncio.run(coro()) == "done"
    assert fn.__name__ == "fn"
    assert sdk.flush(5)
    req = all_requests(spool).set_index("endpoint")
    assert req.loc["/fn", "method"] == "POST"
    assert req.loc["/boom", "status"] == 500 and req.loc["/block", "status"] == 200
    assert set(req.index) == {"/block", "/fn", "/boom", "/async"}
    assert (req["duration_ms"] >= 0).all()


def test_failing_transport_never_reaches_the_app_and_recovers(tmp_path):
    blocker = tmp_path / "spool"
    blocker.write_text("a file where the spool directory should be")
    sdk.configure(service="api", transport=f"spool:{blocker}", flush_interval=60)
    sdk.record_request("/x", 1.0)
    assert sdk.flush(5) is False          # could not send, but nothing raised
    assert sdk.stats()["send_errors"] >= 1
    blocker.unlink()                      # the spool becomes writable: the backlog goes out
    sdk.record_request("/y", 2.0)
    assert sdk.flush(5)
    assert sorted(all_requests(blocker)["endpoint"]) == ["/x", "/y"]


def test_records_from_many_threads_all_arrive(spool):
    from concurrent.futures import ThreadPoolExecutor
    sdk.configure(service="api", transport=f"spool:{spool}", flush_interval=0.01)

    def work(i):
        for j in range(5000):
            sdk.record_request(f"/t{i}", float(j))

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(work, range(8)))
    assert sdk.flush(10)
    req = all_requests(spool)
    assert len(req) == 40_000
    assert req.groupby("endpoint").size().to_dict() == {f"/t{i}": 5000 for i in range(8)}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_fork_gives_the_child_its_own_flusher(spool):
    sdk.configure(service="api", transport=f"spool:{spool}", flush_interval=60)
    sdk.record_request("/parent-before-fork", 1.0)
    pid = os.fork()
    if pid == 0:  # child: its events are its own, the parent's are not re-sent
        try:
            sdk.record_request("/child", 2.0)
            os._exit(0 if sdk.flush(5) else 1)
        except BaseException:
            os._exit(2)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert sdk.flush(5)
    by_pid = {b.pid: sorted(b.requests.to_pandas()["endpoint"]) for b in batches(spool)}
    assert by_pid == {os.getpid(): ["/parent-before-fork"], pid: ["/child"]}


@pytest.mark.parametrize("sql, expected", [
    ("SELECT * FROM t WHERE id = 42", "SELECT * FROM t WHERE id = ?"),
    ("select a from t where name = 'O''Brien' and x > 3.5", "select a from t where name = ? and x > ?"),
    ("SELECT * FROM t WHERE id IN (1, 2, 3)", "SELECT * FROM t WHERE id IN (?)"),
    ("SELECT * FROM t WHERE id IN (%s, %s)", "SELECT * FROM t WHERE id IN (?)"),
    ("SELECT * FROM t WHERE a = $1 AND b = :name", "SELECT * FROM t WHERE a = ? AND b = ?"),
    ("SELECT col1, t2.x FROM t2 -- comment\n WHERE  flag = TRUE;", "SELECT col1, t2.x FROM t2 WHERE flag = ?"),
    ('SELECT "col9" FROM "Tab1" LIMIT 10', 'SELECT "col9" FROM "Tab1" LIMIT ?'),
])
def test_fingerprint(sql, expected):
    assert fingerprint(sql) == expected
