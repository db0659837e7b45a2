"""The demo, for real: the workload runs its SQLite queries, the backfill fast-forwards through the real
SDK into a spool, the real collector ingests it, and the assertions read the DuckDB store. The last
test runs `perfdeck demo` itself with its dashboard and stops it with SIGINT."""
from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import duckdb
import psutil
import pytest

from collectors import sdk
from collectors.daemon import Collector
from collectors.demo.backfill import DAY, backfill
from collectors.demo.live import run_live
from collectors.demo.runner import last_event_ts, resolve_port
from collectors.demo.workload import SHOP_ENDPOINTS, VERSION_AFTER, WORKER_ENDPOINTS, Shop, open_database

ROOT = Path(__file__).resolve().parent.parent
ORDERS_BY_CUSTOMER = ("SELECT id, product_id, quantity, amount, status, created_at FROM orders"
                      " WHERE customer_id = ? ORDER BY created_at DESC")
PRODUCT_BY_PK = "SELECT id, name, category, price, stock FROM products WHERE id = ?"


@pytest.fixture(scope="module")
def demo_store(tmp_path_factory):
    """0.2 simulated days of backfill plus ~2 s of live traffic, ingested by the collector."""
    data = tmp_path_factory.mktemp("demo")
    engine = open_database(data / "shop.sqlite")
    lines: list[str] = []
    t0 = time.time()
    report = backfill(data, days=0.2, end=t0, engine=engine, progress=lines.append)
    sdk.configure(service="shop-api", transport=f"spool:{data / 'spool'}")
    stop = threading.Event()
    threading.Timer(2.0, stop.set).start()
    live = run_live(Shop(engine, version=VERSION_AFTER), stop, lambda _ts: 25.0)
    sdk.shutdown()
    engine.dispose()
    collector = Collector(data / "perfdeck.duckdb", spool_dir=data / "spool")
    ingested = collector.run_once()
    con = duckdb.connect(str(data / "perfdeck.duckdb"), read_only=True)
    yield {"con": con, "report": report, "start": t0 - 0.2 * DAY, "end": t0, "live": live,
           "ingested": ingested, "progress": lines, "data": data}
    con.close()


def test_backfill_report_and_progress(demo_store):
    report = demo_store["report"]
    assert not report.interrupted and report.dropped == 0
    assert {s.service for s in report.services} == {"shop-api", "worker"}
    assert report.requests > 3000                          # ~0.2 days at the diurnal rates
    assert all(s.real > 0 and s.real < s.requests for s in report.services)
    assert report.events > report.requests
    assert any("backfill shop-api" in line for line in demo_store["progress"])
    assert demo_store["live"] > 10
    assert demo_store["ingested"].quarantined == 0


def test_requests_cover_the_span_for_every_endpoint(demo_store):
    con, start, end = demo_store["con"], demo_store["start"], demo_store["end"]
    rows = con.execute("""SELECT service, endpoint, count(*), epoch(min(ts)), epoch(max(ts)) FROM request_events
                          GROUP BY ALL""").fetchall()
    seen = {(s, e): (n, lo, hi) for s, e, n, lo, hi in rows}
    expected = [("shop-api", p) for p, _, _ in SHOP_ENDPOINTS.values()] + \
               [("worker", p) for p, _, _ in WORKER_ENDPOINTS.values()]
    for key in expected:
        assert key in seen, key
    for key in [("shop-api", "/products/{id}"), ("shop-api", "/search"), ("worker", "job:send_receipt")]:
        _, lo, hi = seen[key]
        assert lo < start + 0.1 * (end - start) and hi > end - 0.1 * (end - start), key
    # live traffic continues after the backfill, on the real clock
    live = con.execute("SELECT count(*) FROM request_events WHERE service = 'shop-api' AND epoch(ts) > ?", [end]).fetchone()[0]
    assert live >= demo_store["live"] * 0.9
    hist = {r[0] for r in con.execute("SELECT DISTINCT endpoint FROM latency_hist").fetchall()}
    assert {p for _, p in expected} <= hist
    minutes = con.execute("SELECT count(DISTINCT minute) FROM latency_hist WHERE endpoint = '/products/{id}'").fetchone()[0]
    assert minutes > 0.5 * 0.2 * 24 * 60 * 0.5            # most minutes of the span have traffic
    statuses = {r[0] for r in con.execute("SELECT DISTINCT status FROM request_events").fetchall()}
    assert 200 in statuses and any(s >= 500 for s in statuses)


def test_cache_hit_rate_is_plausible(demo_store):
    hits, misses = demo_store["con"].execute("SELECT sum(hits), sum(misses) FROM cache_stats").fetchone()
    assert 0.2 <= hits / (hits + misses) <= 0.99
    caches = {r[0] for r in demo_store["con"].execute("SELECT DISTINCT cache FROM cache_stats").fetchall()}
    assert {"product_lru", "customer_lru", "llm_responses"} <= caches


def test_llm_calls_have_several_models_and_cache_hits(demo_store):
    con = demo_store["con"]
    models = {r[0] for r in con.execute("SELECT DISTINCT model FROM llm_calls").fetchall()}
    assert len(models) >= 4 and "gpt-4o-mini" in models
    hits, total, linked = con.execute("""SELECT count(*) FILTER (WHERE cache_hit), count(*),
                                         count(*) FILTER (WHERE request_id IS NOT NULL AND user_id LIKE 'u-%')
                                         FROM llm_calls""").fetchone()
    assert 0 < hits < total and linked == total
    lo, hi = con.execute("SELECT min(input_tokens), max(input_tokens) FROM llm_calls WHERE NOT cache_hit").fetchone()
    assert 300 <= lo and hi <= 3000


def test_slow_full_scan_query_is_visible(demo_store):
    con = demo_store["con"]
    means = dict(con.execute("SELECT fingerprint, sum(total_ms) / sum(calls) FROM query_stats GROUP BY 1").fetchall())
    assert ORDERS_BY_CUSTOMER in means and PRODUCT_BY_PK in means
    assert means[ORDERS_BY_CUSTOMER] > 10 * means[PRODUCT_BY_PK]
    assert means[ORDERS_BY_CUSTOMER] > 1.0                  # a real scan of 250k rows, not a lookup


def test_deploy_marks_a_regression(demo_store):
    con = demo_store["con"]
    deploys = con.execute("SELECT service, version, epoch(ts) FROM deploys ORDER BY ts").fetchall()
    assert ("shop-api", VERSION_AFTER) in {(s, v) for s, v, _ in deploys}
    at = next(t for s, v, t in deploys if v == VERSION_AFTER)
    before, after = con.execute("""SELECT median(duration_ms) FILTER (WHERE epoch(ts) < ?),
                                          median(duration_ms) FILTER (WHERE epoch(ts) >= ?)
                                   FROM request_events WHERE endpoint = '/search'""", [at, at]).fetchone()
    assert after > 3 * before


def test_rerun_sees_existing_history(demo_store, tmp_path):
    # What the runner checks before deciding between a full backfill, a gap fill and none.
    assert last_event_ts(demo_store["data"] / "perfdeck.duckdb") >= demo_store["end"]
    assert last_event_ts(tmp_path / "missing.duckdb") is None


def test_port_resolution(monkeypatch):
    monkeypatch.delenv("STREAMLIT_SERVER_PORT", raising=False)
    assert resolve_port(None) == 8501
    monkeypatch.setenv("STREAMLIT_SERVER_PORT", "9123")
    assert resolve_port(None) == 9123
    assert resolve_port(9000) == 9000


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _http_ok(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as r:
            return r.status == 200
    except OSError:
        return False


def _store_rows(db: Path) -> int:
    from collectors.store import connection
    try:
        with connection.read(db, timeout=2) as con:
            return con.execute("SELECT count(*) FROM request_events").fetchone()[0]
    except Exception:
        return 0


def test_perfdeck_demo_command_end_to_end(tmp_path):
    port = _free_port()
    data = tmp_path / "demo"
    exe = Path(sys.executable).parent / "perfdeck"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STREAMLIT_", "PERFDECK_OPERATOR"))}
    started = time.monotonic()
    proc = subprocess.Popen([str(exe), "demo", "--data-dir", str(data), "--port", str(port), "--days", "0.2"],
                            cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output: list[str] = []
    reader = threading.Thread(target=lambda: output.extend(proc.stdout), daemon=True)
    reader.start()
    try:
        first_paint = rows = None
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline and proc.poll() is None:
            if first_paint is None and _http_ok(port):
                first_paint = time.monotonic() - started
            if first_paint is not None and (rows := _store_rows(data / "perfdeck.duckdb")) > 0 \
                    and any("live traffic running" in line for line in output):
                break
            time.sleep(0.3)
        assert proc.poll() is None, "".join(output)
        assert first_paint is not None and first_paint < 60, "".join(output)
        assert rows and rows > 0
        print(f"dashboard answered HTTP 200 after {first_paint:.1f} s")
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "expected the dashboard and the live worker as child processes"
        proc.send_signal(signal.SIGINT)
        rc = proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            for child in psutil.Process(proc.pid).children(recursive=True):
                child.kill()
            proc.kill()
            proc.wait()
    reader.join(5)
    text = "".join(output)
    assert rc == 0, text
    assert f"dashboard at http://localhost:{port}" in text
    assert re.search(r"operator password for this run: \S{16,}", text)     # served on loopback
    assert "perfdeck demo: stopped" in text
    alive = [c for c in children if c.is_running() and c.status() != psutil.STATUS_ZOMBIE]
    assert not alive, alive
    assert not list((data / "spool").glob("*.batch"))      # everything flushed was ingested
    assert _store_rows(data / "perfdeck.duckdb") > 3000
