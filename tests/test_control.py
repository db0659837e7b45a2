"""Clearing in-process caches by broadcast: real spool directories, real Redis, real child processes.

Waiting loops below wait for a condition (a presence entry, an ack) and then assert exact values; the
deadline is only there so a broken build fails instead of hanging."""
from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from collectors import control, sdk
from collectors.sdk import control as sdk_control
from collectors.sdk.control import Listener
from collectors.sdk.transport.redis import RedisChannel
from collectors.sdk.transport.spool import SpoolChannel
from tests.helpers import NamespacedCache, wait_for

REPO = Path(__file__).resolve().parents[1]
DOWN_REDIS = "redis://127.0.0.1:1/0"       # nothing listens on port 1: connection refused


@pytest.fixture(autouse=True)
def _no_registrations():
    """The registry is process-wide: every test starts and ends without registered caches."""
    with sdk_control._lock:
        sdk_control._handlers.clear()
    yield
    with sdk_control._lock:
        sdk_control._handlers.clear()


def listening(url: str, pid: int, caches: list[str] | None = None):
    """The presence entry of process `pid` (with exactly `caches`, when given), once it is there."""
    def find():
        return next((p for p in control.listeners(url) if p["pid"] == pid
                     and (caches is None or p["caches"] == caches)), None)
    return wait_for(find)


def acked(url: str, command_id: str, n: int = 1) -> list[dict]:
    return wait_for(lambda: (lambda a: a if len(a) >= n else None)(control.acks(url, command_id)))


def strip(ack: dict) -> dict:
    assert isinstance(ack.pop("at"), float)
    return ack


# -- spool channel, same process ---------------------------------------------------------------------
def test_broadcast_clears_the_whole_cache_and_the_process_acks(spool):
    url = f"spool:{spool}"
    cache = NamespacedCache(a=3, b=2)
    sdk.register_cache("things", cache.clear)
    sdk.configure(service="api", transport=url, flush_interval=60)
    presence = listening(url, os.getpid(), ["things"])
    assert (presence["service"], presence["host"]) == ("api", os.uname().nodename)

    command_id = control.broadcast_clear(url, "things")
    [ack] = acked(url, command_id)
    assert strip(ack) == {"host": os.uname().nodename, "pid": os.getpid(), "service": "api",
                          "cleared": {"things": 5}, "errors": []}
    assert cache.data == {} and cache.calls == [None]
    assert sdk.stats()["control_commands"] == 1
    # The command is a file in control/, the ack one under acks/<id>/; the daemon's *.batch glob sees neither.
    [command_file] = (spool / "control").glob("*.json")
    command = json.loads(command_file.read_text())
    assert command_file.name.endswith(f"-{command_id}.json")
    assert {k: command[k] for k in ("id", "command", "cache", "namespace")} == {
        "id": command_id, "command": "clear_cache", "cache": "things", "namespace": None}
    assert command["expires_at"] - command["issued_at"] == 60.0
    assert list(spool.glob("*.batch")) == []


def test_namespace_only_and_several_handlers_per_name(spool):
    url = f"spool:{spool}"
    first, second = NamespacedCache(a=3, b=2), NamespacedCache(a=4, c=1)
    sdk.register_cache("things", first.clear)
    sdk.register_cache("things", second.clear)
    sdk.configure(service="api", transport=url, flush_interval=60)
    listening(url, os.getpid(), ["things"])

    [ack] = acked(url, control.broadcast_clear(url, "things", namespace="a"))
    assert ack["cleared"] == {"things": 7}
    assert sorted(first.data) == [("b", 0), ("b", 1)] and sorted(second.data) == [("c", 0)]


def test_a_handler_that_cannot_count_makes_the_total_unknown(spool):
    url = f"spool:{spool}"
    counted = NamespacedCache(a=3)
    sdk.register_cache("things", counted.clear)
    sdk.register_cache("things", lambda namespace: None)       # e.g. lru_cache.cache_clear()
    sdk.configure(service="api", transport=url, flush_interval=60)
    listening(url, os.getpid(), ["things"])
    [ack] = acked(url, control.broadcast_clear(url, "things"))
    assert (ack["cleared"], counted.data) == ({"things": None}, {})


def test_no_handler_still_acks_with_nothing_cleared(spool):
    url = f"spool:{spool}"
    sdk.register_cache("other", NamespacedCache(a=1).clear)
    sdk.configure(service="api", transport=url, flush_interval=60)
    listening(url, os.getpid(), ["other"])
    [ack] = acked(url, control.broadcast_clear(url, "things"))
    assert (ack["cleared"], ack["errors"]) == ({}, [])


def test_a_raising_handler_is_reported_and_the_app_is_unaffected(spool, caplog):
    url = f"spool:{spool}"
    good = NamespacedCache(a=2)

    def broken(namespace):
        raise RuntimeError("cache backend gone")

    sdk.register_cache("things", broken)
    sdk.register_cache("things", good.clear)
    sdk.configure(service="api", transport=url, flush_interval=60)
    listening(url, os.getpid(), ["things"])
    [ack] = acked(url, control.broadcast_clear(url, "things"))
    assert ack["cleared"] == {"things": 2}                      # the other handler still ran
    assert ack["errors"] == ["things: RuntimeError: cache backend gone"]
    assert "clearing cache 'things' failed" in caplog.text
    # The app goes on recording, and the batch goes out.
    sdk.record_request("/after", 1.0)
    assert sdk.flush(5)
    assert len(list(spool.glob("*.batch"))) == 1


def test_only_the_raising_handler_means_nothing_cleared(spool):
    url = f"spool:{spool}"
    sdk.register_cache("things", lambda namespace: 1 / 0)
    sdk.configure(service="api", transport=url, flush_interval=60)
    listening(url, os.getpid(), ["things"])
    [ack] = acked(url, control.broadcast_clear(url, "things"))
    assert (ack["cleared"], ack["errors"]) == ({}, ["things: ZeroDivisionError: division by zero"])


def test_commands_issued_before_the_listener_started_are_ignored(spool):
    url = f"spool:{spool}"
    cache = NamespacedCache(a=3, b=2)
    sdk.register_cache("things", cache.clear)
    before = control.broadcast_clear(url, "things")          # nobody listens yet
    sdk.configure(service="api", transport=url, flush_interval=60)
    listening(url, os.getpid(), ["things"])
    after = control.broadcast_clear(url, "things", namespace="b")
    [ack] = acked(url, after)
    assert ack["cleared"] == {"things": 2}
    assert control.acks(url, before) == [] and cache.calls == ["b"]
    assert sdk.stats()["control_commands"] == 1


def test_unregister_and_presence_follow_registrations(spool):
    url = f"spool:{spool}"
    sdk.configure(service="api", transport=url, flush_interval=60)
    listening(url, os.getpid(), [])
    undo = sdk.register_cache("late", NamespacedCache(a=1).clear)          # after configure: announced at the next tick
    listening(url, os.getpid(), ["late"])
    undo()
    assert listening(url, os.getpid(), [])["caches"] == []
    sdk.shutdown()
    assert control.listeners(url) == []                          # withdrawn at shutdown


def test_bad_names_are_not_registered_and_do_not_raise(spool):
    for name in ("has space", "x;FLUSHALL", "", "é", "n" * 201, None):
        assert sdk.register_cache(name, lambda ns: 0)() is None
    assert sdk.register_cache("ok", "not callable")() is None
    assert sdk_control.registered()[1] == []


def test_malformed_path_traversing_and_expired_commands_are_ignored(spool):
    url = f"spool:{spool}"
    cache = NamespacedCache(a=3)
    sdk.register_cache("things", cache.clear)
    sdk.configure(service="api", transport=url, flush_interval=60)
    listening(url, os.getpid(), ["things"])
    now = time.time()
    bad = {"../../escape": {"id": "../../escape", "command": "clear_cache", "cache": "things", "namespace": None,
                            "expires_at": now + 60},
           "a" * 32: {"id": "a" * 32, "command": "clear_cache", "cache": "things", "namespace": None,
                      "expires_at": now - 1},                                    # expired
           "b" * 32: {"id": "b" * 32, "command": "clear_cache", "cache": "th ings", "namespace": None,
                      "expires_at": now + 60},
           "c" * 32: {"id": "c" * 32, "command": "drop_database", "cache": "things", "expires_at": now + 60}}
    for i, command in enumerate(bad.values()):
        (spool / "control" / f"{time.time_ns():020d}-bad{i}.json").write_text(json.dumps(command))
    (spool / "control" / f"{time.time_ns():020d}-junk.json").write_text("{not json")
    command_id = control.broadcast_clear(url, "things")
    [ack] = acked(url, command_id)
    assert ack["cleared"] == {"things": 3} and cache.calls == [None]
    assert sorted(p.name for p in (spool / "control" / "acks").iterdir()) == [command_id]   # only the good one's
    assert not (spool.parent / "escape").exists()


def test_control_false_opts_out(spool):
    sdk.register_cache("things", NamespacedCache(a=1).clear)
    sdk.configure(service="api", transport=f"spool:{spool}", flush_interval=60, control=False)
    sdk.record_request("/x", 1.0)
    assert sdk.flush(5)
    assert not (spool / "control").exists() and control.listeners(f"spool:{spool}") == []


def test_broadcast_refuses_names_that_are_not_plain(spool):
    for cache, namespace in [("a b", None), ("x;FLUSHALL", None), ("a\x00b", None), ("", None), ("n" * 201, None),
                             ("ok", "line\nbreak"), ("ok", "*"), ("ok", "")]:
        with pytest.raises(ValueError, match="letters, digits"):
            control.broadcast_clear(f"spool:{spool}", cache, namespace)
    with pytest.raises(ValueError, match="not a command id"):
        control.acks(f"spool:{spool}", "../listeners")
    assert not (spool / "control").exists()


def test_stale_presence_is_ignored_and_old_files_are_cleaned_up(spool):
    url = f"spool:{spool}"
    root = spool / "control"
    (root / "listeners").mkdir(parents=True)
    now = time.time()
    for name, at in (("fresh", now), ("stale", now - 31)):
        (root / "listeners" / f"{name}.json").write_text(json.dumps(
            {"service": name, "host": "h", "pid": 1, "caches": [], "at": at}))
    assert [p["service"] for p in control.listeners(url)] == ["fresh"]

    old_ns = time.time_ns() - 2 * 3600 * 10**9
    recent = f"{time.time_ns():020d}-{'e' * 32}.json"
    (root / f"{old_ns:020d}-{'d' * 32}.json").write_text("{}")
    (root / recent).write_text("{}")
    (root / "acks" / ("d" * 32)).mkdir(parents=True)
    (root / "acks" / ("d" * 32) / "h-1.json").write_text("{}")
    (root / "acks" / ("e" * 32)).mkdir()
    os.utime(root / "acks" / ("d" * 32), (now - 7200, now - 7200))
    os.utime(root / "listeners" / "stale.json", (now - 7200, now - 7200))
    assert control.cleanup(url) == 3
    assert [p.name for p in root.glob("*.json")] == [recent]
    assert [p.name for p in (root / "acks").iterdir()] == ["e" * 32]
    assert [p.name for p in (root / "listeners").iterdir()] == ["fresh.json"]


def test_an_unwritable_channel_is_logged_once_and_retried_later(tmp_path, caplog):
    blocker = tmp_path / "spool"
    blocker.write_text("a file where the spool directory should be")
    listener = Listener(SpoolChannel(blocker), service="api", host="h", pid=1)
    with caplog.at_level(logging.WARNING, logger="perfdeck.sdk"):
        assert listener.poll() == 0
        assert listener.poll() == 0                  # backing off: not even tried
    assert [r.getMessage().split(" (")[0] for r in caplog.records] == [f"perfdeck: control channel spool:{blocker} failed"]
    blocker.unlink()
    listener._retry_at = 0.0                         # the 30 s are over
    with caplog.at_level(logging.INFO, logger="perfdeck.sdk"):
        assert listener.poll() == 0
    assert caplog.records[-1].getMessage() == f"perfdeck: control channel spool:{blocker} works again"
    assert [p["pid"] for p in control.listeners(f"spool:{blocker}")] == [1]


# -- other processes -----------------------------------------------------------------------------------
CHILD = """
import signal, sys, threading, time
from collectors import sdk
from collectors.demo.workload import LRUCache
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))      # exit normally: atexit withdraws the presence
cache = LRUCache("child_lru", 100)
for i in range(7):
    cache.put("p", i, i)
for i in range(4):
    cache.put("q", i, i)
cache.register()
sdk.configure(service="child", transport=sys.argv[1], flush_interval=0.2)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:                           # the app keeps working meanwhile
    sdk.record_request("/loop", 1.0)
    time.sleep(0.02)
"""


def run_child(url: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", CHILD, url], cwd=REPO)


@pytest.mark.parametrize("channel", ["spool", "redis"])
def test_a_child_process_clears_its_demo_lru_on_broadcast(channel, spool, request):
    url = f"spool:{spool}" if channel == "spool" else request.getfixturevalue("redis_url")
    child = run_child(url)
    try:
        assert listening(url, child.pid)["caches"] == ["child_lru"]
        command_id = control.broadcast_clear(url, "child_lru", namespace="p")
        [ack] = acked(url, command_id)
        assert (ack["service"], ack["pid"], ack["cleared"], ack["errors"]) == ("child", child.pid, {"child_lru": 7}, [])
        [ack] = acked(url, control.broadcast_clear(url, "child_lru"))
        assert ack["cleared"] == {"child_lru": 4}                  # only q's entries were left
        assert child.poll() is None                                # still serving
    finally:
        child.send_signal(signal.SIGTERM)
        assert child.wait(30) == 0
    assert control.listeners(url) == []


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_listens_with_its_own_pid(spool):
    url = f"spool:{spool}"
    cache = NamespacedCache(a=5)
    sdk.register_cache("things", cache.clear)
    sdk.configure(service="api", transport=url, flush_interval=60)
    listening(url, os.getpid(), ["things"])
    pid = os.fork()
    if pid == 0:                 # the child: its copy of the cache, its own listener; killed by the parent
        try:
            time.sleep(60)
        finally:
            os._exit(3)
    try:
        listening(url, pid, ["things"])
        acks = acked(url, control.broadcast_clear(url, "things"), n=2)
        assert sorted((a["pid"], a["cleared"]["things"]) for a in acks) == sorted([(os.getpid(), 5), (pid, 5)])
    finally:
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)


# -- Redis channel --------------------------------------------------------------------------------------
def test_redis_channel_same_process(redis_url):
    import redis
    cache = NamespacedCache(a=3, b=2)
    sdk.register_cache("things", cache.clear)
    before = control.broadcast_clear(redis_url, "things")        # before start: ignored
    sdk.configure(service="api", transport=redis_url, flush_interval=60)
    listening(redis_url, os.getpid(), ["things"])
    command_id = control.broadcast_clear(redis_url, "things", namespace="a")
    [ack] = acked(redis_url, command_id)
    assert strip(ack) == {"host": os.uname().nodename, "pid": os.getpid(), "service": "api",
                          "cleared": {"things": 3}, "errors": []}
    assert control.acks(redis_url, before) == [] and cache.calls == ["a"]

    client = redis.Redis.from_url(redis_url)
    assert client.xlen("perfdeck:control") == 2
    assert 3500 < client.ttl(f"perfdeck:control:acks:{command_id}") <= 3600
    assert list(client.hkeys("perfdeck:control:listeners")) == [f"{os.uname().nodename}-{os.getpid()}".encode()]
    sdk.shutdown()
    assert client.hlen("perfdeck:control:listeners") == 0
    client.close()


def test_redis_cleanup_drops_stale_and_junk_presence_and_old_commands(redis_url):
    import redis
    client = redis.Redis.from_url(redis_url)
    client.hset("perfdeck:control:listeners", mapping={
        "old-1": json.dumps({"pid": 1, "at": time.time() - 7200}), "new-2": json.dumps({"pid": 2, "at": time.time()}),
        "junk-3": "{not json", "list-4": "[1, 2]"})
    client.xadd("perfdeck:control", {"c": "{}"}, id=f"{int((time.time() - 7200) * 1000)}-0")
    assert [p["pid"] for p in control.listeners(redis_url)] == [2]   # junk is skipped, not an error
    control.broadcast_clear(redis_url, "things")                # cleans up on the way
    assert sorted(client.hkeys("perfdeck:control:listeners")) == [b"new-2"]
    assert client.xlen("perfdeck:control") == 1
    client.close()


def test_redis_down_costs_the_app_nothing(caplog):
    sdk.register_cache("things", NamespacedCache(a=1).clear)
    with caplog.at_level(logging.WARNING, logger="perfdeck.sdk"):
        sdk.configure(service="api", transport=DOWN_REDIS, flush_interval=60)
        sdk.record_request("/x", 1.0)
        sdk.record_cache("things", True)
        assert sdk.flush(5) is False                  # not sent, nothing raised
        assert sdk.flush(5) is False
    assert sdk.stats()["configured"] is True and sdk.stats()["buffered"] == 0
    control_warnings = [r for r in caplog.records if "control channel" in r.getMessage()]
    assert [r.getMessage().split(" (")[0] for r in control_warnings] == [
        "perfdeck: control channel redis://127.0.0.1:1/0 failed"]
    with pytest.raises(redis_error()):
        control.broadcast_clear(DOWN_REDIS, "things")


def redis_error():
    import redis
    return redis.ConnectionError


def test_redis_channel_never_shows_the_password():
    assert repr(RedisChannel("redis://user:s3cret@cache.internal:6380/2")) == "redis://user:***@cache.internal:6380/2"


# -- the demo's caches ----------------------------------------------------------------------------------
def test_demo_lru_clears_by_namespace():
    from collectors.demo.workload import LRUCache, Trace

    cache = LRUCache("product_lru", 10)
    for i in range(3):
        cache.put("product", i, f"p{i}")
    for i in range(2):
        cache.put("profile", i, f"c{i}")
    assert cache.clear("product") == 3 and len(cache) == 2
    assert cache.get("product", 0, Trace("/x", "GET")) == (None, False)
    assert cache.get("profile", 1, Trace("/x", "GET")) == ("c1", True)
    assert cache.clear("nothing-here") == 0 and cache.clear() == 2 and len(cache) == 0


def test_live_demo_apps_register_their_caches_only_while_serving():
    from collectors.demo.live import run_live
    from collectors.demo.workload import Shop, Worker

    seen = {}
    for app in (Shop(None), Worker(None)):
        stop = threading.Event()

        def rate(_now, app=app, stop=stop):
            seen[type(app).__name__] = sdk_control.registered()[1]
            stop.set()
            return 1.0

        assert run_live(app, stop, rate) == 0
        assert sdk_control.registered()[1] == []
    assert seen == {"Shop": ["customer_lru", "llm_responses", "product_lru"], "Worker": ["llm_responses"]}
