"""Faults that used to stop ingest or lose data without a word, replayed against this checkout: what
lands, what is counted, what is lost. Each case runs in a child process with a time limit (a FIFO in
the spool used to hang the collector), so the script also runs against older checkouts:

    .venv/bin/python bench/faults.py                 # this checkout
    PYTHONPATH=<other checkout> .venv/bin/python bench/faults.py   # the same cases on another one

It needs `redis-server` for the Redis cases (started on a free port, stopped at the end). Nothing is
asserted; every row says what happened. Cases use only the public SDK, the Collector and the store."""
from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

TIMEOUT_S = 30

PRELUDE = """
import json, os, sys, time, uuid, logging
from pathlib import Path
logging.disable(logging.CRITICAL)
import duckdb
from collectors import sdk
from collectors.daemon import Collector
from collectors.sdk.batch import encode
from collectors.sdk.transport.spool import SpoolTransport
D = Path(sys.argv[1]); SPOOL = D / "spool"; DB = D / "perfdeck.duckdb"; NOW = time.time()
def good(n=100):
    return encode(service="api", host="h", pid=1, sent_at=NOW, requests=[(NOW, "/ok", 5.0, 200, "GET", None, None)] * n)[:2]
def ticks(c, n=3):
    errors = 0
    for _ in range(n):
        try:
            c.run_once()
        except Exception:
            errors += 1
    return errors
def q(sql):
    con = duckdb.connect(str(DB), read_only=True)
    try:
        return con.execute(sql).fetchone()[0]
    finally:
        con.close()
def counted():
    rejected = q("SELECT coalesce(sum(count), 0) FROM ingest_rejects")
    try:
        rejected += q("SELECT coalesce(sum(rejected), 0) FROM sdk_health")
    except Exception:
        pass
    return rejected, q("SELECT count(*) FROM quarantine")
def report(**kw):
    print(json.dumps(kw))
"""

BAD_VALUE = """
doc = {"v": 1, "id": uuid.uuid4().hex, "service": "api", "host": "h", "pid": 1, %s}
t = SpoolTransport(SPOOL); t.send(*good()); t.send(doc["id"], json.dumps(doc).encode()); t.send(*good())
errors = ticks(Collector(DB, spool_dir=SPOOL))
rejected, quarantined = counted()
report(landed=q("SELECT count(*) FROM request_events"), sent=200, stuck=len(list(SPOOL.glob("*.batch"))),
       counted=rejected + quarantined, errors=errors)
"""
CASES: dict[str, str] = {
    "llm latency_ms = 'n/a'": BAD_VALUE % '"llm": [{"ts": NOW, "model": "m", "input_tokens": 1, "output_tokens": 1, '
                                          '"latency_ms": "n/a"}]',
    "llm input_tokens = 2^63": BAD_VALUE % '"llm": [{"ts": NOW, "model": "m", "input_tokens": 2**63, "output_tokens": 1}]',
    "cache hits = 2^63": BAD_VALUE % ('"cache": [{"minute": NOW // 60 * 60, "cache": "c", "namespace": None, '
                                      '"hits": 2**63, "misses": 0, "lookups_timed": 0, "lookup_ms_sum": 0.0}]'),
    "query bucket key = 2^31": BAD_VALUE % ('"queries": [{"minute": NOW // 60 * 60, "database": None, "fingerprint": "f", '
                                            '"sample_sql": "s", "calls": 1, "total_ms": 1.0, "min_ms": 1.0, '
                                            '"max_ms": 1.0, "buckets": {str(2**31): 1}}]'),
    "pid = 2^31": BAD_VALUE % '"pid": 2**31, "requests": None',
}
for kind in ("directory", "fifo", "symlink"):
    CASES[f"spool: a {kind} named *.batch"] = f"""
t = SpoolTransport(SPOOL); t.send(*good()); secret = D / "secret.txt"; secret.write_text("password")
odd = SPOOL / "00000000000000000001-odd.batch"
{{"directory": lambda: odd.mkdir(), "fifo": lambda: os.mkfifo(odd), "symlink": lambda: odd.symlink_to(secret)}}["{kind}"]()
t.send(*good())
errors = ticks(Collector(DB, spool_dir=SPOOL))
copied = [p for p in (D / "quarantine").glob("*") if p.is_file() and not p.is_symlink() and p.read_bytes() == b"password"]
rejected, quarantined = counted()
report(landed=q("SELECT count(*) FROM request_events"), sent=200, stuck=len(list(SPOOL.glob("*.batch"))),
       counted=rejected + quarantined, errors=errors,
       note=(f"target copied, mode {{oct(copied[0].stat().st_mode & 0o777)}}" if copied else ""))
"""
CASES["SDK: one NaN beside 1,000 events"] = """
sdk.configure(service="api", transport=f"spool:{SPOOL}", flush_interval=60, control=False)
for i in range(1000):
    sdk.record_request("/ok", 5.0)
sdk.record_llm_call("m", 1, 1, latency_ms=float("nan"))
sdk.flush(10)
errors = ticks(Collector(DB, spool_dir=SPOOL), 1)
rejected, quarantined = counted()
report(landed=q("SELECT count(*) FROM request_events") + q("SELECT count(*) FROM llm_calls"), sent=1001,
       stuck=len(list(SPOOL.glob("*.batch"))), counted=rejected + quarantined, errors=errors)
"""
CASES["SDK: record_query(sql, inf)"] = """
sdk.configure(service="api", transport=f"spool:{SPOOL}", flush_interval=60, control=False)
for i in range(1000):
    sdk.record_request("/ok", 5.0)
sdk.record_query("SELECT 1", float("inf"))
sdk.flush(10)
errors = ticks(Collector(DB, spool_dir=SPOOL), 1)
rejected, quarantined = counted()
report(landed=q("SELECT count(*) FROM request_events"), sent=1001, stuck=len(list(SPOOL.glob("*.batch"))),
       counted=rejected + quarantined + sdk.stats()["dropped"], errors=errors)
"""
CASES["advisor with nothing to report (empty SQLite)"] = """
import sqlite3
from collectors import config
sqlite3.connect(D / "app.db").close()
cfg = {"host": {"enabled": False}, "database": [{"name": "app", "url": f"sqlite:///{D / 'app.db'}"}]}
c = Collector(DB, spool_dir=SPOOL, samplers=config.build_samplers(cfg), advise=config.advisor_targets(cfg))
errors = ticks(c, 1)
report(landed=q("SELECT count(*) FROM db_metrics") + q("SELECT count(*) FROM advisor_runs"), sent=None, stuck=0,
       counted=0, errors=errors, note="rows of db_metrics + advisor_runs")
"""
CASES["fork child ending with os._exit (multiprocessing)"] = """
import multiprocessing
sdk.configure(service="api", transport=f"spool:{SPOOL}", flush_interval=60, control=False)
def child():
    for i in range(500):
        sdk.record_request("/child", 5.0)
p = multiprocessing.get_context("fork").Process(target=child); p.start(); p.join()
sdk.shutdown()
errors = ticks(Collector(DB, spool_dir=SPOOL), 1)
report(landed=q("SELECT count(*) FROM request_events"), sent=500, stuck=0, counted=0, errors=errors)
"""
REDIS_FLUSH = """
import redis
url = os.environ["FAULTS_REDIS"]; r = redis.Redis.from_url(url)
c = Collector(DB, spool_dir=SPOOL, redis_url=url)
sdk.configure(service="api", transport=url, flush_interval=60, control=False)
sdk.record_request("/before", 1.0); sdk.flush(5); ticks(c, 1)
r.flushdb()
for i in range(20):
    sdk.record_request("/after", 1.0); sdk.flush(5)
errors = ticks(c, 3)
report(landed=q("SELECT count(*) FROM request_events WHERE endpoint = '/after'"), sent=20, stuck=int(r.xlen("perfdeck:batches")),
       counted=0, errors=errors, note="batches sent after FLUSHDB, same collector")
"""
REDIS_TRIM = """
import redis
url = os.environ["FAULTS_REDIS"]
sdk.configure(service="api", transport=url, flush_interval=60, control=False)
for i in range(12_000):          # the collector is down: every batch waits in the stream
    sdk.record_request("/x", 1.0); sdk.flush(1)
c = Collector(DB, spool_dir=SPOOL, redis_url=url)
errors = ticks(c, 40)            # the collector is back and drains the stream
sdk.record_request("/y", 1.0); sdk.flush(5)      # the app's next batch says what it lost
errors += ticks(c, 2)
landed = q("SELECT count(*) FROM request_events WHERE endpoint = '/x'")
dropped = q("SELECT coalesce(max(dropped), 0) FROM sdk_health")
report(landed=landed, sent=12_000, stuck=0, counted=dropped, errors=errors, note=f"lost uncounted: {12_000 - landed - dropped}")
"""
CASES["Redis: FLUSHDB while the collector runs"] = REDIS_FLUSH
CASES["Redis: 12,000 batches while no collector reads"] = REDIS_TRIM


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(name: str, body: str, env: dict) -> dict:
    d = Path(tempfile.mkdtemp(prefix="perfdeck-faults-"))
    try:
        out = subprocess.run([sys.executable, "-c", PRELUDE + textwrap.dedent(body), str(d)], env=env,
                             capture_output=True, text=True, timeout=TIMEOUT_S)
        lines = [ln for ln in out.stdout.splitlines() if ln.startswith("{")]
        if not lines:
            return {"note": f"failed: {(out.stderr.strip().splitlines() or ['?'])[-1][:90]}"}
        return json.loads(lines[-1])
    except subprocess.TimeoutExpired:
        return {"note": f"hung: killed after {TIMEOUT_S} s"}
    finally:
        shutil.rmtree(d, ignore_errors=True)


def main() -> None:
    env = dict(os.environ)
    server = None
    if shutil.which("redis-server"):
        port = free_port()
        server = subprocess.Popen(["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"],
                                  stdout=subprocess.DEVNULL)
        env["FAULTS_REDIS"] = f"redis://127.0.0.1:{port}/0"
        time.sleep(0.5)
    try:
        print(f"{'case':50s} {'landed':>13s} {'left':>5s} {'counted':>8s} {'errors':>7s}  note")
        for name, body in CASES.items():
            if "FAULTS_REDIS" in body and server is None:
                continue
            r = run(name, body, env)
            landed = "" if "landed" not in r else f"{r['landed']:,}" + (f"/{r['sent']:,}" if r.get("sent") else "")
            print(f"{name:50s} {landed:>13s} {r.get('stuck', ''):>5} {r.get('counted', ''):>8} {r.get('errors', ''):>7}  "
                  f"{r.get('note', '')}")
    finally:
        if server:
            server.terminate()
            server.wait()


if __name__ == "__main__":
    main()
