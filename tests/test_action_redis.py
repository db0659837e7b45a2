"""Redis maintenance actions against real Redis: the shared test server (database $PERFDECK_TEST_REDIS_DB)
and, for "the target goes away" and flush, redis-server processes of the tests' own.
Every run goes through run_action() into a real store, and the audit rows are checked."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
import redis

from collectors import formatting as fmt
from collectors.integrations.redis import cached
from dashboard.actions import (
    VIEWER,
    Aborted,
    ActionError,
    InvalidInput,
    NotAuthorized,
    Progress,
    TargetUnavailable,
    make_preview,
    run_action,
)
from dashboard.actions.redis_actions import BumpCacheVersion, DeleteKeys, FlushDatabase, check_pattern, literal_prefix
from tests.helpers import OPERATOR, query

REPO = Path(__file__).resolve().parent.parent
STREAM_WARNING = ("this database holds perfdeck's transport stream perfdeck:batches: 1 batch waits in it unread "
                  "by the collector; flushing loses it")


@pytest.fixture(autouse=True)
def _config(monkeypatch, tmp_path):
    """No perfdeck.toml from the working directory: targets come from the environment only."""
    monkeypatch.setenv("PERFDECK_CONFIG", str(tmp_path / "absent.toml"))
    monkeypatch.delenv("PERFDECK_REDIS_URLS", raising=False)


@pytest.fixture
def cache(redis_url, monkeypatch):
    """The shared test database configured as the Redis named "cache"; a client of it."""
    monkeypatch.setenv("PERFDECK_REDIS_URLS", f"cache={redis_url}")
    client = redis.Redis.from_url(redis_url)
    yield client
    client.close()


@pytest.fixture
def own_server(tmp_path):
    """A redis-server of this test's own on a free port, in a temp dir, killed at the end: (port, process)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while True:
        try:
            if redis.Redis(port=port, socket_connect_timeout=0.2).ping():
                break
        except redis.ConnectionError:
            pass
        if time.monotonic() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.fail(f"redis-server on port {port} did not start")
        time.sleep(0.05)
    yield port, proc
    proc.kill()        # a no-op when the test killed it already
    proc.wait()


def _fill(client: redis.Redis) -> None:
    """5,000 keys in 3 namespaces (strings of several sizes, some with a TTL, some hashes), and perfdeck's stream."""
    pipe = client.pipeline(transaction=False)
    for i in range(2000):
        pipe.set(f"sessions:{i}", "s" * (i % 50), ex=3600 if i % 2 else None)
    for i in range(1800):
        if i % 10 == 0:
            pipe.hset(f"products:h:{i}", mapping={"name": f"product {i}", "price": i})
        else:
            pipe.set(f"products:{i}", "p" * (20 + i % 200))
    for i in range(1200):
        pipe.set(f"carts:{i}", str(i), ex=600)
    pipe.execute()
    client.xadd("perfdeck:batches", {"id": "b1"})


def _count(client: redis.Redis, pattern: str) -> int:
    return sum(1 for _ in client.scan_iter(match=pattern, count=1000))


def _audit(db) -> list[dict]:
    """The action_audit rows, params and figures parsed."""
    rows = query(db, "SELECT actor, action, target, params, outcome, result, figures, error FROM action_audit ORDER BY id")
    return [{"actor": a, "action": act, "target": t, "params": json.loads(p) if p else None, "outcome": o,
             "result": r, "figures": json.loads(f) if f else None, "error": e} for a, act, t, p, o, r, f, e in rows]


# ------------------------------------------------------------------ delete keys

def test_delete_removes_exactly_the_previewed_namespace(cache, migrated_store, operator):
    _fill(cache)
    expected_bytes = sum(cache.memory_usage(k) for k in cache.scan_iter(match="products:*", count=1000))
    action = DeleteKeys()

    params, preview = make_preview(action, {"target": "cache", "pattern": "products:*"}, actor=OPERATOR)
    assert params == {"target": "cache", "pattern": "products:*"}
    assert preview.count == 1800
    assert preview.confirm == "products:*"
    assert len(preview.rows) == 20
    assert all(r["key"].startswith("products:") and r["type"] in ("string", "hash") and r["ttl_s"] is None
               and r["bytes"] > 0 for r in preview.rows)
    assert preview.data["estimated_bytes"] == round(sum(r["bytes"] for r in preview.rows) / 20 * 1800)
    assert preview.summary.startswith("Delete 1,800 keys matching 'products:*' from cache (db ")
    assert preview.warnings == []

    steps = []
    progress = Progress(on_update=lambda p: steps.append((p.done, p.total)))
    result = run_action(action, params, preview, actor=operator, confirmation="products:*", progress=progress,
                        db=migrated_store)

    assert result.figures == {"keys_removed": 1800, "bytes_freed": expected_bytes}
    assert expected_bytes > 1800 * 50
    assert result.summary == (f"Removed 1,800 keys matching 'products:*' from cache "
                              f"(~{fmt.size(expected_bytes)} freed)")
    assert steps == [(0, 1800), (500, 1800), (1000, 1800), (1500, 1800)]   # before each batch of <= 500
    assert (_count(cache, "products:*"), _count(cache, "sessions:*"), _count(cache, "carts:*")) == (0, 2000, 1200)
    assert cache.xlen("perfdeck:batches") == 1
    assert cache.dbsize() == 3201

    [row] = _audit(migrated_store)
    assert row == {"actor": "test-operator", "action": "redis.delete_keys", "target": "redis:cache",
                   "params": {"target": "cache", "pattern": "products:*"}, "outcome": "done",
                   "result": result.summary, "figures": {"keys_removed": 1800, "bytes_freed": expected_bytes},
                   "error": None}


def test_delete_with_nothing_matching_removes_nothing(cache, migrated_store, operator):
    _fill(cache)
    params, preview = make_preview(DeleteKeys(), {"target": "cache", "pattern": "orders:*"}, actor=OPERATOR)
    assert (preview.count, preview.rows, preview.data["estimated_bytes"]) == (0, [], 0)
    assert preview.summary.startswith("No keys match 'orders:*' in cache (db ")
    result = run_action(DeleteKeys(), params, preview, actor=operator, confirmation="orders:*", db=migrated_store)
    assert result.figures == {"keys_removed": 0, "bytes_freed": 0}
    assert cache.dbsize() == 5001


def test_abort_lands_between_whole_batches(cache, migrated_store, operator):
    _fill(cache)
    params, preview = make_preview(DeleteKeys(), {"target": "cache", "pattern": "products:*"}, actor=OPERATOR)
    # Abort asked for while the first batch runs: it lands at the next step, after that whole batch.
    progress = Progress(on_update=lambda p: p.abort())

    with pytest.raises(Aborted, match=r"^aborted after 500 of 1,800$"):
        run_action(DeleteKeys(), params, preview, actor=operator, confirmation="products:*", progress=progress,
                   db=migrated_store)

    assert (_count(cache, "products:*"), _count(cache, "sessions:*"), _count(cache, "carts:*")) == (1300, 2000, 1200)
    [row] = _audit(migrated_store)
    assert (row["outcome"], row["figures"], row["error"], row["result"]) == (
        "aborted", {"done": 500, "total": 1800}, "aborted after 500 of 1,800", None)


def test_redis_killed_mid_delete_is_target_unavailable(own_server, monkeypatch, migrated_store, operator):
    port, proc = own_server
    monkeypatch.setenv("PERFDECK_REDIS_URLS", f"gone=redis://:s3cret@127.0.0.1:{port}/0")
    client = redis.Redis(port=port)
    client.config_set("requirepass", "s3cret")
    client = redis.Redis(port=port, password="s3cret")
    client.mset({f"jobs:{i}": i for i in range(1800)})
    params, preview = make_preview(DeleteKeys(), {"target": "gone", "pattern": "jobs:*"}, actor=OPERATOR)
    assert preview.count == 1800

    def kill_before_second_batch(p: Progress) -> None:
        if p.done == 500:
            proc.kill()
            proc.wait()

    with pytest.raises(TargetUnavailable) as err:
        run_action(DeleteKeys(), params, preview, actor=operator, confirmation="jobs:*",
                   progress=Progress(on_update=kill_before_second_batch), db=migrated_store)

    message = str(err.value)
    assert message.startswith(f"Redis 'gone' (redis://:***@127.0.0.1:{port}/0) is unavailable: ")
    assert "s3cret" not in message and "\n" not in message
    [row] = _audit(migrated_store)
    assert (row["outcome"], row["figures"], row["error"]) == ("failed", {"done": 500, "total": 1800}, message)


def test_unreachable_redis_refuses_preview_in_one_line(own_server, monkeypatch):
    port, proc = own_server
    proc.kill()
    proc.wait()
    monkeypatch.setenv("PERFDECK_REDIS_URLS", f"gone=redis://127.0.0.1:{port}/2")
    for action, params in ((DeleteKeys(), {"target": "gone", "pattern": "a:*"}), (FlushDatabase(), {"target": "gone"}),
                           (BumpCacheVersion(), {"target": "gone", "cache": "products"})):
        with pytest.raises(TargetUnavailable, match=rf"^Redis 'gone' \(redis://127.0.0.1:{port}/2\) is unavailable: "
                                                    rf"Error \d+ connecting to 127.0.0.1:{port}\. Connection refused\.$"):
            make_preview(action, params, actor=OPERATOR)
    # The cache field's help says so instead of failing the page.
    assert BumpCacheVersion().fields()[1].help == ("the name passed to cached('<name>', ...). "
                                                   "Caches bumped before: gone: not reachable")


def test_viewer_is_refused_and_audited(cache, migrated_store):
    _fill(cache)
    params, preview = make_preview(DeleteKeys(), {"target": "cache", "pattern": "carts:*"}, actor=OPERATOR)
    with pytest.raises(NotAuthorized, match="operator role"):
        run_action(DeleteKeys(), params, preview, actor=VIEWER, confirmation="carts:*", db=migrated_store)
    assert _count(cache, "carts:*") == 1200
    [row] = _audit(migrated_store)
    assert (row["actor"], row["outcome"], row["error"], row["target"]) == (
        "anonymous", "refused", "the operator role is needed", "redis:cache")


NO_PREFIX = "{!r} has no literal prefix before its first wildcard; use Flush database to remove every key"
OWN_KEYS = "{!r} could match perfdeck's own keys (perfdeck:*); give a longer prefix that is not perfdeck's"
SPACES = "the pattern may not contain spaces or control characters"


@pytest.mark.parametrize("pattern, message", [
    ("*", NO_PREFIX.format("*")), ("?*", NO_PREFIX.format("?*")), ("[a-z]*", NO_PREFIX.format("[a-z]*")),
    ("a b", SPACES), ("x\r\nFLUSHALL", SPACES), ("a:\x00*", SPACES),
    ("perfdeck:*", OWN_KEYS.format("perfdeck:*")), ("perf*", OWN_KEYS.format("perf*")),
    ("perfdeck:batches", OWN_KEYS.format("perfdeck:batches")),
    ("a" * 300, "the pattern is 300 characters long; at most 200 are allowed"),
    ("", "give a key pattern, e.g. sessions:*"), (None, "give a key pattern, e.g. sessions:*"),
])
def test_bad_patterns_are_refused_and_audited(cache, migrated_store, operator, pattern, message):
    _fill(cache)
    params = {"target": "cache", "pattern": pattern}
    with pytest.raises(InvalidInput) as err:
        make_preview(DeleteKeys(), params, actor=OPERATOR)
    assert str(err.value) == message
    # A hand-made preview does not get past run_action's own check either.
    _, preview = make_preview(DeleteKeys(), {"target": "cache", "pattern": "carts:*"}, actor=OPERATOR)
    with pytest.raises(InvalidInput):
        run_action(DeleteKeys(), params, preview, actor=operator, confirmation="carts:*", db=migrated_store)
    [row] = _audit(migrated_store)
    assert (row["outcome"], row["error"]) == ("invalid", message)
    assert cache.dbsize() == 5001


def test_patterns_that_are_allowed():
    assert literal_prefix("sessions:*") == ("sessions:", True)
    assert literal_prefix(r"a\*b") == ("a*b", False)
    assert literal_prefix(r"a\[x]:?") == ("a[x]:", True)
    assert literal_prefix("user:42") == ("user:42", False)
    for pattern in ("sessions:*", r"\*star:*", "perfdeckx:*", "p", "user:4?", "a" * 200):
        assert check_pattern(pattern) == pattern


def test_unknown_target_is_refused(cache):
    for action, params in ((DeleteKeys(), {"target": "nope", "pattern": "a:*"}), (FlushDatabase(), {"target": "nope"}),
                           (BumpCacheVersion(), {"target": "redis://127.0.0.1:6379/0", "cache": "products"})):
        with pytest.raises(InvalidInput, match=r"^no Redis named '.+' is configured; configured: cache$"):
            make_preview(action, params, actor=OPERATOR)


# ------------------------------------------------------------------ flush

def test_flush_needs_the_target_name_typed(own_server, monkeypatch, migrated_store, operator):
    port, _ = own_server
    monkeypatch.setenv("PERFDECK_REDIS_URLS", f"queue=redis://127.0.0.1:{port}/3,other=redis://127.0.0.1:{port}/4")
    db3, db4 = redis.Redis(port=port, db=3), redis.Redis(port=port, db=4)
    db3.mset({f"job:{i}": "x" * 100 for i in range(700)})
    db3.xadd("perfdeck:batches", {"id": "b1"})
    db4.mset({f"other:{i}": i for i in range(30)})
    action = FlushDatabase()
    assert make_preview(action, {"target": "other"}, actor=OPERATOR)[1].warnings == []      # the stream is in db 3, not 4

    params, preview = make_preview(action, {"target": "queue"}, actor=OPERATOR)
    assert (preview.count, preview.confirm, preview.statements) == (701, "queue", ["FLUSHDB ASYNC"])
    assert preview.warnings == [STREAM_WARNING]
    assert preview.rows[0]["db"] == 3 and preview.rows[0]["keys"] == 701 and preview.rows[0]["used_memory"] > 0
    assert preview.summary.startswith("Remove all 701 keys of database 3 of queue (the server uses ")

    for typed in (None, "", "Queue", "queue2"):
        with pytest.raises(NotAuthorized, match=r"^type 'queue' to confirm$"):
            run_action(action, params, preview, actor=operator, confirmation=typed, db=migrated_store)
    assert db3.dbsize() == 701

    result = run_action(action, params, preview, actor=operator, confirmation="queue", db=migrated_store)
    assert result.figures["keys_removed"] == 701 and result.figures["used_memory_before"] > 0
    assert result.summary.startswith("Flushed database 3 of queue: 701 keys removed (used memory ")
    assert (db3.dbsize(), db4.dbsize()) == (0, 30)

    rows = _audit(migrated_store)
    assert [(r["outcome"], r["error"]) for r in rows] == [("refused", "confirmation text did not match")] * 4 + [
        ("done", None)]
    assert {r["target"] for r in rows} == {"redis:queue"}
    assert rows[-1]["figures"] == result.figures


# ------------------------------------------------------------------ cache version

def test_bump_makes_cached_miss_in_another_client(cache, redis_url, migrated_store, operator):
    other = redis.Redis.from_url(redis_url)        # an app's own client; version re-read on every call
    calls = []

    @cached("products", ttl=300, client=other, version_ttl=0)
    def product_page(product_id):
        calls.append(product_id)
        return f"page {product_id} #{len(calls)}"

    assert [product_page(7), product_page(7)] == ["page 7 #1", "page 7 #1"]
    old_key = product_page.cache_key(7)
    assert old_key.startswith("products:v0:")
    action = BumpCacheVersion()

    params, preview = make_preview(action, {"target": "cache", "cache": "products"}, actor=OPERATOR)
    assert preview.summary == ("products: version 0 -> 1. Every process using cached('products') misses within "
                               "~2 s; old entries expire by their ttl")
    assert (preview.statements, preview.count, preview.confirm, preview.warnings) == (
        ["INCR perfdeck:cache_version:products"], 1, None, [])
    assert preview.rows == [{"cache": "products", "current_version": 0, "new_version": 1,
                             "entries_made_unreachable": 1}]

    result = run_action(action, params, preview, actor=operator, db=migrated_store)
    assert (result.summary, result.figures) == ("products: version 0 -> 1", {"old_version": 0, "new_version": 1})
    assert product_page(7) == "page 7 #2"                   # a miss: the function ran again
    assert product_page.cache_key(7).startswith("products:v1:")
    assert 0 < cache.ttl(old_key) <= 300                    # the old entry is left to expire

    _, preview = make_preview(action, params, actor=OPERATOR)
    result = run_action(action, params, preview, actor=operator, db=migrated_store)
    assert result.summary == "products: version 1 -> 2"
    assert [r["figures"] for r in _audit(migrated_store)] == [{"old_version": 0, "new_version": 1},
                                                              {"old_version": 1, "new_version": 2}]
    assert action.fields()[1].help == ("the name passed to cached('<name>', ...). "
                                       "Caches bumped before: cache: products")
    other.close()


def test_bump_reaches_another_process(cache, redis_url, migrated_store, operator):
    """A separate Python process with the default version_ttl starts missing after the bump."""
    script = textwrap.dedent(f"""
        import sys, time, redis
        from collectors.integrations.redis import cached
        calls = []
        @cached("pages", ttl=300, client=redis.Redis.from_url({redis_url!r}))
        def page(n):
            calls.append(n)
            return n
        page(1); page(1)
        print("ready", len(calls), flush=True)
        sys.stdin.readline()
        deadline = time.monotonic() + 30      # only guards against a hang; nothing asserts on time
        while len(calls) == 1 and time.monotonic() < deadline:
            page(1)
            time.sleep(0.05)
        print("calls", len(calls), page.cache_key(1).split(":")[1], flush=True)
    """)
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().split() == ["ready", "1"]
        params, preview = make_preview(BumpCacheVersion(), {"target": "cache", "cache": "pages"}, actor=OPERATOR)
        run_action(BumpCacheVersion(), params, preview, actor=operator, db=migrated_store)
        proc.stdin.write("go\n")
        proc.stdin.flush()
        assert proc.stdout.readline().split() == ["calls", "2", "v1"]
    finally:
        proc.kill()
        proc.wait()


def test_bump_of_a_cache_never_seen_warns_and_bad_names_are_refused(cache, migrated_store, operator):
    _, preview = make_preview(BumpCacheVersion(), {"target": "cache", "cache": "prodcuts"}, actor=OPERATOR)
    assert preview.warnings == ["no version key and no entries for 'prodcuts': is it the name passed to cached()?"]
    for name in ("products:*", "a b", "x\r\nFLUSHALL", "", "p" * 201, None):
        with pytest.raises(InvalidInput, match=r"^give the cache's name as passed to cached\(\): up to 200 letters, "
                                               r"digits, and _ - \. :$"):
            make_preview(BumpCacheVersion(), {"target": "cache", "cache": name}, actor=OPERATOR)
    cache.set("perfdeck:cache_version:broken", "abc")
    with pytest.raises(ActionError, match=r"^perfdeck:cache_version:broken holds b'abc', not a version number$"):
        make_preview(BumpCacheVersion(), {"target": "cache", "cache": "broken"}, actor=OPERATOR)


# ------------------------------------------------------------------ fields and availability

def test_available_and_fields(monkeypatch, redis_url):
    for action in (DeleteKeys(), FlushDatabase(), BumpCacheVersion()):
        assert action.available() == ("No Redis configured: add a [[redis]] entry to perfdeck.toml or set "
                                      "PERFDECK_REDIS_URLS")
    monkeypatch.setenv("PERFDECK_REDIS_URLS", f"cache={redis_url},sessions={redis_url}")
    for action in (DeleteKeys(), FlushDatabase(), BumpCacheVersion()):
        assert action.available() is None
        target = action.fields()[0]
        assert (target.name, target.kind, target.options({})) == ("target", "choice", ["cache", "sessions"])
    assert [f.name for f in DeleteKeys().fields()] == ["target", "pattern"]
    assert [f.name for f in FlushDatabase().fields()] == ["target"]
    assert [(f.name, f.kind) for f in BumpCacheVersion().fields()] == [("target", "choice"), ("cache", "text")]
    assert (DeleteKeys.destructive, DeleteKeys.batched, FlushDatabase.destructive, BumpCacheVersion.destructive) == (
        True, True, True, False)
