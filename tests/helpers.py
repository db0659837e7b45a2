"""Small helpers shared by tests."""
from __future__ import annotations

import json
import os
import re
import threading
import time
from contextlib import contextmanager

import duckdb

from dashboard.actions.framework import Actor

OPERATOR = Actor("test-operator", role="operator", via="test")   # who tests preview and run actions as


def count(db, table: str, where: str = "TRUE") -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0]
    finally:
        con.close()


def query(db, sql: str, params=(), *, timeout: float = 30.0) -> list[tuple]:
    """Rows of one read of the store at `db`; while a running collector holds its write lock, the read
    waits and tries again, as the dashboard's reads do."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            con = duckdb.connect(str(db), read_only=True)
            break
        except duckdb.IOException as exc:
            if "lock" not in str(exc).lower() or time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def shown_text(markdown: str) -> str:
    """Markdown as the viewer reads it: escapes and zero-width spaces out (names are escaped as text)."""
    return re.sub(r"\\(.)", r"\1", markdown).replace("\u200b", "")


def run_app(script: str):
    """Run a dashboard script in Streamlit's AppTest and fail on any exception it shows."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(script, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def wait_for(fn, timeout: float = 15.0, interval: float = 0.05):
    """Poll `fn` until it returns something truthy; that value, or fn()'s last answer at the timeout."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = fn()
        if value:
            return value
        time.sleep(interval)
    return fn()


class NamespacedCache:
    """A namespaced dict behind a lock, like an app's own cache; `clear` is what it registers with
    sdk.register_cache, and `calls` records the namespaces it was asked to clear."""

    def __init__(self, **sizes: int):
        self.data = {(ns, i): i for ns, n in sizes.items() for i in range(n)}
        self.lock = threading.Lock()
        self.calls: list = []

    def clear(self, namespace):
        with self.lock:
            self.calls.append(namespace)
            doomed = [k for k in self.data if namespace is None or k[0] == namespace]
            for k in doomed:
                del self.data[k]
            return len(doomed)


def clear_health_env(monkeypatch, tmp_path) -> None:
    """No thresholds, budgets, [alerts] settings or perfdeck.toml of whoever runs the tests."""
    for var in list(os.environ):
        if var in ("PERFDECK_THRESHOLDS", "PERFDECK_DAILY_BUDGET", "PERFDECK_MONTHLY_BUDGET") \
                or var.startswith("PERFDECK_ALERT_") \
                or re.match(r"PERFDECK_.*_(TARGET|WARNING|CRITICAL|MIN_SAMPLES|FOR)$", var):
            monkeypatch.delenv(var)
    monkeypatch.setenv("PERFDECK_CONFIG", str(tmp_path / "no-config.toml"))


def clear_listener_env(monkeypatch, tmp_path) -> None:
    """clear_health_env, and no listener address or token of whoever runs the tests."""
    clear_health_env(monkeypatch, tmp_path)
    for var in ("PERFDECK_HTTP_LISTEN", "PERFDECK_HTTP_TOKEN"):
        monkeypatch.delenv(var, raising=False)


def free_port() -> int:
    """A TCP port of 127.0.0.1 nobody listens on right now."""
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextmanager
def running_collector(store, tmp_path, *args: str, drop_env: tuple[str, ...] = ("PERFDECK_",)):
    """`perfdeck collect --http 127.0.0.1:<port>` on `store` (spool tmp_path/spool, no host sampler, none of
    this shell's variables starting with `drop_env`), once its listener answers; yields the port."""
    import signal
    import subprocess
    import sys
    import urllib.error
    import urllib.request
    from pathlib import Path

    config = tmp_path / "perfdeck.toml"
    config.write_text("[host]\nenabled = false\n")
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(drop_env)}
    proc = subprocess.Popen([sys.executable, "-m", "collectors.cli", "collect", "--db", str(store),
                             "--spool", str(tmp_path / "spool"), "--config", str(config), *args,
                             "--http", f"127.0.0.1:{port}"], cwd=Path(__file__).resolve().parent.parent, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        def up():
            try:
                urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=5)
                return True
            except urllib.error.HTTPError:       # 503: it answers
                return True
            except OSError:
                return proc.poll() is not None   # died: stop waiting
        assert wait_for(up, timeout=60), "the listener never answered"
        assert proc.poll() is None, proc.stdout.read()
        yield port
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def spooled(spool, kind: str) -> list[dict]:
    """Every row of one kind ("requests", "cache", "llm", "queries") in the batches the SDK spooled (flushed
    first), each batch decoded as the collector would decode it; requests as their store columns, the
    other kinds as sent (JSON: a None stays None)."""
    from collectors import sdk
    from collectors.store.ingest import decode

    assert sdk.flush(10)
    rows = []
    for path in sorted(spool.glob("*.batch")):
        payload = path.read_bytes()
        batch = decode(payload)                       # still a batch the daemon accepts
        if kind == "requests":
            rows += batch.requests.to_pylist() if batch.requests is not None else []
        else:
            rows += json.loads(payload).get(kind, [])
    return rows


def ingest_payloads(con, payloads: list[bytes], per_transaction: int, now: float, book=None) -> None:
    """SDK batches through the collector's path: decoded at `now`, priced (by `book`, else the packaged
    price list), written `per_transaction` batches to a transaction."""
    from collectors.pricing import PriceBook
    from collectors.store.ingest import decode, write_batches

    book = book or PriceBook.load(None)
    decoded = [decode(p, now=now) for p in payloads]
    for b in decoded:
        book.price_frame(b.llm)
    for i in range(0, len(decoded), per_transaction):
        con.begin()
        write_batches(con, decoded[i:i + per_transaction], "test")
        con.commit()
