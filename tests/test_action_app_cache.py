"""The "Clear an in-process cache" action end to end: real SDK listeners (this process and a child
process) on a real spool directory or Redis, run through run_action with the audit row checked."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from collectors import control, sdk
from collectors.sdk import control as sdk_control
from dashboard.actions import (
    VIEWER,
    ActionError,
    InvalidInput,
    NotAuthorized,
    Progress,
    TargetUnavailable,
    app_cache,
    make_preview,
    run_action,
)
from dashboard.actions.app_cache import ClearAppCache, channels
from tests.helpers import OPERATOR, NamespacedCache, query, wait_for

REPO = Path(__file__).resolve().parents[1]
HOST = os.uname().nodename
DOWN_REDIS = "redis://127.0.0.1:1/0"

CHILD = """
import signal, sys, time
from collectors import sdk
from collectors.demo.workload import LRUCache
signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
cache = LRUCache("product", 100)
for i in range(7):
    cache.put("detail", i, i)
for i in range(2):
    cache.put("list", i, i)
cache.register()
sdk.configure(service="worker", transport=sys.argv[1], flush_interval=0.2)
deadline = time.monotonic() + 60
while time.monotonic() < deadline:
    sdk.record_request("/job", 1.0)
    time.sleep(0.02)
"""


@pytest.fixture(autouse=True)
def _env(spool, monkeypatch):
    """The dashboard's channel: the test's spool, unless a test sets $PERFDECK_TRANSPORT too."""
    monkeypatch.setenv("PERFDECK_SPOOL", str(spool))
    monkeypatch.delenv("PERFDECK_TRANSPORT", raising=False)
    with sdk_control._lock:
        sdk_control._handlers.clear()
    yield
    with sdk_control._lock:
        sdk_control._handlers.clear()


def wait_listening(url: str, *pids: int) -> None:
    assert wait_for(lambda: {p["pid"] for p in control.listeners(url) if p["caches"]} >= set(pids))


def audit_rows(db) -> list[tuple]:
    return query(db, "SELECT actor, action, target, outcome, params, result, figures, error FROM action_audit ORDER BY id")


def command_files(spool: Path) -> list[Path]:
    return sorted((spool / "control").glob("*.json"))


def test_clear_a_namespace_in_two_processes_end_to_end(spool, migrated_store, operator):
    url = f"spool:{spool}"
    local = NamespacedCache(detail=5, list=3)
    sdk.register_cache("product", local.clear)
    sdk.configure(service="shop", transport=url, flush_interval=60)
    child = subprocess.Popen([sys.executable, "-c", CHILD, url], cwd=REPO)
    try:
        wait_listening(url, os.getpid(), child.pid)
        action = ClearAppCache()
        assert action.available() is None
        [target, namespace] = action.fields()
        assert (target.kind, target.options({}), namespace.kind, namespace.default) == ("choice", ["product"], "text", "")

        params, preview = make_preview(action, {"target": " product ", "namespace": "detail"}, actor=OPERATOR)
        assert params == {"target": "product", "namespace": "detail"}
        assert preview.summary == ("2 processes (services shop, worker) have cache 'product' registered; "
                                   "they will clear namespace 'detail'")
        assert preview.statements == [f"broadcast clear_cache cache='product' namespace='detail' on {url}"]
        assert sorted((r["service"], r["host"], r["pid"], r["caches"], r["channel"]) for r in preview.rows) == [
            ("shop", HOST, os.getpid(), "product", url), ("worker", HOST, child.pid, "product", url)]
        assert (preview.count, preview.confirm, preview.warnings) == (2, None, [])
        assert command_files(spool) == []                     # the preview changed nothing

        steps = []
        result = run_action(action, params, preview, actor=operator, db=migrated_store,
                            progress=Progress(lambda p: steps.append((p.done, p.total))))
        assert result.summary == "2 of 2 processes cleared 'product' namespace 'detail': 12 entries"
        assert result.figures == {"acknowledged": 2, "expected": 2, "entries_cleared": 12, "errors": 0}
        assert steps[-1] == (2, 2)
        assert sorted(local.data) == [("list", 0), ("list", 1), ("list", 2)]
        assert child.poll() is None
    finally:
        child.send_signal(signal.SIGTERM)
        assert child.wait(30) == 0
    assert audit_rows(migrated_store) == [(
        "test-operator", "app_cache.clear", "app-cache:product", "done",
        json.dumps({"namespace": "detail", "target": "product"}), result.summary,
        json.dumps({"acknowledged": 2, "entries_cleared": 12, "errors": 0, "expected": 2}), None)]


def test_a_viewer_is_refused_and_nothing_is_broadcast(spool, migrated_store):
    url = f"spool:{spool}"
    local = NamespacedCache(detail=5)
    sdk.register_cache("product", local.clear)
    sdk.configure(service="shop", transport=url, flush_interval=60)
    wait_listening(url, os.getpid())
    action = ClearAppCache()
    params, preview = make_preview(action, {"target": "product", "namespace": ""}, actor=OPERATOR)
    assert params == {"target": "product", "namespace": None}
    assert preview.summary == "1 process (service shop) has cache 'product' registered; it will clear the whole cache"
    with pytest.raises(NotAuthorized, match="operator role"):
        run_action(action, params, preview, actor=VIEWER, db=migrated_store)
    assert command_files(spool) == [] and len(local.data) == 5
    assert [(r[0], r[3], r[7]) for r in audit_rows(migrated_store)] == [
        ("anonymous", "refused", "the operator role is needed")]


@pytest.mark.parametrize("target, namespace, message", [
    ("product; FLUSHALL", None, "cache name 'product; FLUSHALL' refused: use letters, digits and _ - . : / "
                                "(at most 200 characters)"),
    ("product\nrm -rf", None, "cache name 'product\\nrm -rf' refused"),
    ("*", None, "cache name '*' refused"),
    ("", None, "cache name '' refused"),
    ("p" * 201, None, "cache name 'pppp"),
    ("ürün", None, "cache name 'ürün' refused"),
    (None, None, "cache name 'None' refused"),
    (7, None, "cache name '7' refused"),
    ("product", "detail' OR '1'='1", "namespace \"detail' OR '1'='1\" refused: use letters, digits and _ - . : / "
                                     "(at most 200 characters), or leave it empty for the whole cache"),
    ("product", "a\rb", "namespace 'a\\rb' refused"),
    ("product", ["detail"], "namespace \"['detail']\" refused"),
])
def test_names_that_are_not_plain_are_refused(spool, migrated_store, operator, target, namespace, message):
    action = ClearAppCache()
    with pytest.raises(InvalidInput) as refused:
        make_preview(action, {"target": target, "namespace": namespace}, actor=OPERATOR)
    assert str(refused.value).startswith(message) and "\n" not in str(refused.value)
    fine, preview = make_preview(action, {"target": "product", "namespace": None}, actor=OPERATOR)   # nobody has it: harmless
    with pytest.raises(InvalidInput):
        run_action(action, {"target": target, "namespace": namespace}, preview, actor=operator, db=migrated_store)
    [row] = audit_rows(migrated_store)
    assert (row[3], row[7]) == ("invalid", str(refused.value))
    assert command_files(spool) == []


def test_no_process_has_the_cache(spool, migrated_store, operator):
    url = f"spool:{spool}"
    sdk.register_cache("product", NamespacedCache(detail=1).clear)
    sdk.configure(service="shop", transport=url, flush_interval=60)
    wait_listening(url, os.getpid())
    action = ClearAppCache()
    params, preview = make_preview(action, {"target": "ghost", "namespace": None}, actor=OPERATOR)
    assert preview.summary == "No running process has cache 'ghost' registered; nothing will be cleared"
    assert (preview.warnings, preview.statements, preview.rows, preview.count) == (
        ["none of the 1 listening processes registered 'ghost'"], [], [], 0)
    result = run_action(action, params, preview, actor=operator, db=migrated_store)
    assert result.summary == "No running process has cache 'ghost' registered; nothing was cleared"
    assert result.figures == {"acknowledged": 0, "expected": 0, "entries_cleared": 0, "errors": 0}
    assert command_files(spool) == []
    assert [r[3] for r in audit_rows(migrated_store)] == ["done"]


def announce_silent_process(spool: Path, pid: int = 999_999) -> None:
    """A presence entry of a process that never answers (it hangs, say)."""
    folder = spool / "control" / "listeners"
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"elsewhere-{pid}.json").write_text(json.dumps(
        {"service": "stuck", "host": "elsewhere", "pid": pid, "caches": ["product"], "at": time.time()}))


def test_a_failing_handler_and_a_silent_process_are_reported(spool, migrated_store, operator, monkeypatch):
    monkeypatch.setattr(app_cache, "WAIT_S", 2.0)
    url = f"spool:{spool}"

    def broken(namespace):
        raise RuntimeError("backend gone")

    sdk.register_cache("product", broken)
    sdk.configure(service="shop", transport=url, flush_interval=60)
    wait_listening(url, os.getpid())
    announce_silent_process(spool)
    action = ClearAppCache()
    params, preview = make_preview(action, {"target": "product", "namespace": None}, actor=OPERATOR)
    assert preview.count == 2
    result = run_action(action, params, preview, actor=operator, db=migrated_store)
    assert result.summary == (f"0 of 2 processes cleared 'product' (whole cache): 0 entries; 1 did not answer "
                              f"within 2 s; 1 error: shop pid {os.getpid()}: product: RuntimeError: backend gone")
    assert result.figures == {"acknowledged": 1, "expected": 2, "entries_cleared": 0, "errors": 1}
    sdk.record_request("/still-fine", 1.0)
    assert sdk.flush(5)


def test_nobody_answering_fails_with_one_line(spool, migrated_store, operator, monkeypatch):
    monkeypatch.setattr(app_cache, "WAIT_S", 0.5)
    announce_silent_process(spool)
    action = ClearAppCache()
    params, preview = make_preview(action, {"target": "product", "namespace": "detail"}, actor=OPERATOR)
    with pytest.raises(ActionError) as failed:
        run_action(action, params, preview, actor=operator, db=migrated_store)
    assert str(failed.value) == ("none of the 1 process with cache 'product' answered within 0.5 s (busy or "
                                 "stopped?); the broadcast stays valid for a minute")
    [row] = audit_rows(migrated_store)
    assert (row[3], row[7]) == ("failed", str(failed.value))
    assert len(command_files(spool)) == 1


def test_redis_channel_end_to_end(redis_url, spool, migrated_store, operator, monkeypatch):
    monkeypatch.setenv("PERFDECK_TRANSPORT", redis_url)
    local = NamespacedCache(detail=5, list=3)
    sdk.register_cache("product", local.clear)
    sdk.configure(service="shop", transport=redis_url, flush_interval=60)
    wait_listening(redis_url, os.getpid())
    action = ClearAppCache()
    assert action.available() is None
    params, preview = make_preview(action, {"target": "product", "namespace": None}, actor=OPERATOR)
    assert preview.statements == [f"broadcast clear_cache cache='product' namespace=None on {redis_url}"]
    result = run_action(action, params, preview, actor=operator, db=migrated_store)
    assert result.summary == "1 of 1 process cleared 'product' (whole cache): 8 entries"
    assert result.figures == {"acknowledged": 1, "expected": 1, "entries_cleared": 8, "errors": 0}
    assert local.data == {}


def test_handlers_that_cannot_count(spool, migrated_store, operator):
    url = f"spool:{spool}"
    local = NamespacedCache(detail=4)
    sdk.register_cache("product", local.clear)
    sdk.register_cache("prices", lambda namespace: None)            # like functools.lru_cache's cache_clear
    sdk.configure(service="shop", transport=url, flush_interval=60)
    wait_listening(url, os.getpid())
    action = ClearAppCache()
    params, preview = make_preview(action, {"target": "prices", "namespace": None}, actor=OPERATOR)
    result = run_action(action, params, preview, actor=operator, db=migrated_store)
    assert result.summary == "1 of 1 process cleared 'prices' (whole cache); 1 without an entry count"
    assert result.figures == {"acknowledged": 1, "expected": 1, "entries_cleared": 0, "errors": 0}
    sdk.register_cache("product", lambda namespace: None)
    params, preview = make_preview(action, {"target": "product", "namespace": None}, actor=OPERATOR)
    result = run_action(action, params, preview, actor=operator, db=migrated_store)
    # One process, two handlers: one count unknown makes the process's count unknown.
    assert result.summary == "1 of 1 process cleared 'product' (whole cache); 1 without an entry count"
    assert local.data == {}


def test_redis_down_is_target_unavailable(monkeypatch):
    monkeypatch.setenv("PERFDECK_TRANSPORT", DOWN_REDIS)
    action = ClearAppCache()
    with pytest.raises(TargetUnavailable) as down:
        action.fields()[0].options({})
    assert str(down.value).startswith("control channel redis://127.0.0.1:1/0 is unreachable: ConnectionError: ")
    assert "\n" not in str(down.value)
    with pytest.raises(TargetUnavailable):
        make_preview(action, {"target": "product", "namespace": None}, actor=OPERATOR)


def test_channels_come_from_the_environment(spool, tmp_path, monkeypatch):
    assert channels() == [f"spool:{spool.resolve()}"]
    monkeypatch.setenv("PERFDECK_TRANSPORT", "redis://:pw@cache:6379/2")
    assert channels() == ["redis://:pw@cache:6379/2", f"spool:{spool.resolve()}"]
    assert app_cache.shown(channels()[0]) == "redis://:***@cache:6379/2"
    monkeypatch.setenv("PERFDECK_TRANSPORT", f"spool:{spool}")        # the same directory: listed once
    assert channels() == [f"spool:{spool.resolve()}"]
    monkeypatch.delenv("PERFDECK_TRANSPORT")
    monkeypatch.delenv("PERFDECK_SPOOL")
    monkeypatch.setenv("PERFDECK_DB", str(tmp_path / "elsewhere" / "perfdeck.duckdb"))
    monkeypatch.chdir(tmp_path)     # the SDK's default, wherever the store is: where a default collector reads
    assert channels() == [f"spool:{(tmp_path / 'data' / 'spool').resolve()}"]


def test_available_says_what_to_configure(spool):
    assert ClearAppCache().available() == (
        f"no instrumented process has announced itself ({spool.resolve()}/control does not exist): set "
        "$PERFDECK_SPOOL or $PERFDECK_TRANSPORT to the transport your services' perfdeck SDK uses")
    sdk.configure(service="shop", transport=f"spool:{spool}", flush_interval=60)
    assert wait_for(lambda: ClearAppCache().available() is None)
