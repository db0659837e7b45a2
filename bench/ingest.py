"""Collector daemon ingest throughput, spool (and Redis stream) -> DuckDB file, rollups included,
next to DuckDB loading the same rows by itself.

    .venv/bin/python bench/ingest.py [EVENTS] [BATCH]      defaults: 1,000,000 events, 10,000 per batch

Untimed set-up: EVENTS request events (8 endpoints x 4 services, spread over 30 minutes, a distinct
request_id each) are encoded with collectors.sdk.batch.encode into batches of BATCH events, exactly
as the SDK flusher would, and written with SpoolTransport.send into a master spool directory.

Each repeat (median of REPEATS, candidates run round-robin) starts from a fresh DuckDB file (schema
migrated, untimed) and a fresh copy of the spool files (untimed), then times:

    run_once      Collector(db, spool_dir=...).run_once(): ingest + compaction + retention
    ingest only   Collector.ingest_pending(): read files, decode, one transaction per <=500 batches
                  / 64 MiB inserting raw events + log-bucket histogram + per-minute counters
    compaction    Collector.compact() after that ingest, and retention()

References, same rows, fresh DuckDB file, same request_events schema:

    arrow         INSERT INTO request_events SELECT * FROM <pyarrow table>  (raw rows only)
    arrow+rollups the same plus the daemon's two rollup INSERTs, one transaction (the floor for
                  what the daemon does, without decode / file handling)
    csv, json     INSERT ... SELECT * FROM read_csv(...) / read_json(... newline_delimited) of
                  files written beforehand (untimed)

Columns: median wall seconds, the min-max of the runs (this machine is shared, so the spread is
printed), median CPU seconds of the whole process (all threads: DuckDB uses every core, so CPU can
exceed wall), events/s from the median wall time, and speed relative to the Arrow reference.

Redis: if a server answers at 127.0.0.1:6379, the same batches are XADDed (untimed) to a fresh
stream in db 15, read by a Collector through a RedisSource on that stream, and the key is deleted.

Nothing is asserted; the targets are printed as PASS/MISS for information."""
from __future__ import annotations

import gc
import os
import platform
import random
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb
import pyarrow as pa
import pyarrow.csv

from collectors import daemon as daemon_mod
from collectors.daemon import Collector
from collectors.sdk.batch import encode
from collectors.sdk.transport.spool import SpoolTransport
from collectors.sources import RedisSource
from collectors.store import connection, migrate
from collectors.store.histogram import BUCKET_SQL
from collectors.store.ingest import decode

EVENTS = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
BATCH = int(sys.argv[2]) if len(sys.argv) > 2 else 10_000
REPEATS = 5
TARGET = 1_000_000  # events/s
REDIS_URL = "redis://127.0.0.1:6379/15"

ENDPOINTS = ["/api/search", "/api/users/{id}", "/api/orders", "/api/orders/{id}", "/health",
             "/api/report", "/login", "/api/items/{id}"]
SERVICES = ["api", "worker", "billing", "search"]


def make_spool(root: Path) -> tuple[Path, list[bytes]]:
    spool = root / "master-spool"
    transport = SpoolTransport(spool)
    rnd = random.Random(7)
    start = time.time() - 1800
    payloads = []
    made = 0
    i = 0
    while made < EVENTS:
        n = min(BATCH, EVENTS - made)
        service = SERVICES[i % len(SERVICES)]
        t0 = start + 1800 * made / EVENTS
        events = [(t0 + k * 1e-4, rnd.choice(ENDPOINTS), rnd.lognormvariate(3.0, 1.0),
                   rnd.choices((200, 201, 404, 500), (88, 5, 5, 2))[0], "POST" if rnd.random() < 0.25 else "GET",
                   f"{rnd.getrandbits(64):016x}", None) for k in range(n)]
        batch_id, payload, _ = encode(service=service, host=f"{service}-1", pid=1000 + i, sent_at=t0,
                                      requests=events)
        transport.send(batch_id, payload)
        payloads.append(payload)
        made += n
        i += 1
    return spool, payloads


def fresh_db(path: Path) -> None:
    if path.exists():
        path.unlink()
    with connection.write(path) as con:
        migrate(con)
    os.sync()  # no write-back of the set-up's dirty pages inside a timed region


def fresh_copy(master: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(master, dest)
    os.sync()


CPU: dict[str, list[float]] = {}  # CPU seconds (all threads of this process), per timed step


def timed(fn, key=None):
    gc.collect()
    c, t = time.process_time(), time.perf_counter()
    out = fn()
    wall = time.perf_counter() - t
    if key:
        CPU.setdefault(key, []).append(time.process_time() - c)
    return wall, out


def run_daemon(root: Path, master: Path) -> dict:
    db, spool = root / "daemon.duckdb", root / "spool"
    out = {}
    # run_once: everything
    fresh_copy(master, spool)
    fresh_db(db)
    c = Collector(db, spool_dir=spool, quarantine_dir=root / "quarantine")
    out["run_once"], report = timed(c.run_once, "run_once")
    out["events"] = report.events
    # the same split into ingest / compaction / retention
    fresh_copy(master, spool)
    fresh_db(db)
    c = Collector(db, spool_dir=spool, quarantine_dir=root / "quarantine")
    out["ingest"], report2 = timed(c.ingest_pending, "ingest")
    out["compact"], _ = timed(c.compact, "compact")
    out["retention"], _ = timed(c.retention, "retention")
    assert report2.events == report.events
    with connection.read(db) as con:
        out["rows"] = con.execute("SELECT count(*) FROM request_events").fetchone()[0]
    return out


def decoded_table(payloads: list[bytes]) -> pa.Table:
    """The rows the daemon inserts, as one Arrow table in request_events column order."""
    tables = []
    for p in payloads:
        b = decode(p)
        n = len(b.requests)
        t = b.requests
        tables.append(pa.table({
            "ts": t["ts"], "service": pa.array([b.service] * n), "host": pa.array([b.host] * n),
            "endpoint": t["endpoint"], "method": t["method"], "status": t["status"],
            "duration_ms": t["duration_ms"], "request_id": t["request_id"], "tags": t["tags"]}))
    return pa.concat_tables(tables).combine_chunks()


ROLLUP_SQL = [
    f"""INSERT INTO latency_hist
        SELECT date_trunc('minute', ts), service, endpoint, {BUCKET_SQL.format(col='duration_ms')}, count(*)
        FROM src GROUP BY ALL""",
    """INSERT INTO request_rollup
        SELECT date_trunc('minute', ts), service, endpoint, count(*), count(*) FILTER (WHERE status >= 500),
               sum(duration_ms), max(duration_ms)
        FROM src GROUP BY ALL""",
]


def run_reference(root: Path, kind: str, table: pa.Table) -> float:
    db = root / f"ref-{kind}.duckdb"
    fresh_db(db)
    con = duckdb.connect(str(db))
    try:
        gc.collect()
        c, t = time.process_time(), time.perf_counter()
        con.begin()
        if kind in ("arrow", "arrow+rollups"):
            con.register("src", table)
            con.execute("INSERT INTO request_events SELECT * FROM src")
            if kind == "arrow+rollups":
                for sql in ROLLUP_SQL:
                    con.execute(sql)
        elif kind == "csv":
            con.execute(f"INSERT INTO request_events SELECT * FROM read_csv('{root / 'events.csv'}', header=true)")
        elif kind == "json":
            con.execute("INSERT INTO request_events SELECT * FROM "
                        f"read_json('{root / 'events.jsonl'}', format='newline_delimited')")
        con.commit()
        elapsed = time.perf_counter() - t
        CPU.setdefault(kind, []).append(time.process_time() - c)
        n = con.execute("SELECT count(*) FROM request_events").fetchone()[0]
        assert n == len(table), (kind, n, len(table))
    finally:
        con.close()
    return elapsed


def write_reference_files(root: Path, table: pa.Table) -> None:
    pa.csv.write_csv(table, root / "events.csv")
    con = duckdb.connect()
    con.register("src", table)
    con.execute(f"COPY (SELECT * FROM src) TO '{root / 'events.jsonl'}' (FORMAT json)")
    con.close()


def run_redis(root: Path, payloads: list[bytes]) -> dict | None:
    try:
        import redis
        client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1)
        client.ping()
    except Exception as exc:  # noqa: BLE001 - no server (or no redis-py): skip, and say so
        print(f"redis: no server at {REDIS_URL} ({exc.__class__.__name__}); skipped")
        return None
    stream = f"perfdeck:bench:{uuid.uuid4().hex}"
    db = root / "redis.duckdb"
    try:
        pipe = client.pipeline(transaction=False)
        for i, p in enumerate(payloads):
            pipe.xadd(stream, {"id": f"b{i}", "b": p})
            if i % 20 == 19:
                pipe.execute()
        pipe.execute()
        fresh_db(db)
        empty = root / "empty-spool"
        empty.mkdir(exist_ok=True)
        c = Collector(db, spool_dir=empty, quarantine_dir=root / "quarantine")
        c.sources = [RedisSource(REDIS_URL, root / "quarantine", stream=stream)]
        elapsed, report = timed(c.ingest_pending, "redis")
        left = client.xlen(stream)
        pending = client.xpending(stream, RedisSource.GROUP)["pending"]
        c.sources[0].close()
        return {"ingest": elapsed, "cpu": CPU["redis"][-1], "events": report.events, "left_in_stream": left, "pending": pending}
    finally:
        client.delete(stream)
        client.close()


def rate(events: int, seconds: float) -> str:
    return f"{events / seconds / 1e6:6.2f} M/s"


def main() -> None:
    print(f"perfdeck ingest  {time.strftime('%Y-%m-%d %H:%M')}  Python {platform.python_version()}  "
          f"duckdb {duckdb.__version__}  pyarrow {pa.__version__}  {os.cpu_count()} CPUs")
    root = Path(tempfile.mkdtemp(prefix="perfdeck-bench-ingest-"))
    try:
        t = time.perf_counter()
        master, payloads = make_spool(root)
        size = sum(len(p) for p in payloads)
        print(f"set-up (untimed): {EVENTS:,} events in {len(payloads)} spool batches of {BATCH:,}, "
              f"{size / 2**20:.1f} MiB ({size / EVENTS:.0f} B/event), {time.perf_counter() - t:.1f} s; "
              f"daemon tx cap: {daemon_mod.MAX_BATCHES_PER_TX} batches / {daemon_mod.MAX_BYTES_PER_TX >> 20} MiB")
        table = decoded_table(payloads)
        write_reference_files(root, table)
        print(f"median of {REPEATS} runs, candidates round-robin; DB files in {root}\n")

        daemon_runs, refs = [], {k: [] for k in ("arrow", "arrow+rollups", "csv", "json")}
        for _ in range(REPEATS):
            daemon_runs.append(run_daemon(root, master))
            for kind, times in refs.items():
                times.append(run_reference(root, kind, table))
        keys = ("run_once", "ingest", "compact", "retention")
        d = {k: statistics.median(r[k] for r in daemon_runs) for k in keys}
        spread = {k: (min(r[k] for r in daemon_runs), max(r[k] for r in daemon_runs)) for k in keys}
        spread.update({k: (min(v), max(v)) for k, v in refs.items()})
        events = daemon_runs[0]["events"]
        assert events == EVENTS == daemon_runs[0]["rows"], (events, EVENTS, daemon_runs[0]["rows"])
        ref = {k: statistics.median(v) for k, v in refs.items()}

        print(f"{'what':44s} {'seconds':>8s} {'min-max':>11s} {'cpu s':>6s} {'events/s':>10s} {'arrow=1':>8s}  "
              "target >= 1 M events/s")
        rows = [
            ("daemon run_once (ingest+compact+retention)", "run_once", True),
            ("daemon ingest only", "ingest", True),
            ("then compaction (separate call)", "compact", None),
            ("then retention (separate call)", "retention", None),
            ("ref: DuckDB INSERT from Arrow table", "arrow", False),
            ("ref: DuckDB Arrow + same 2 rollup INSERTs", "arrow+rollups", False),
            ("ref: DuckDB read_csv", "csv", False),
            ("ref: DuckDB read_json (ndjson)", "json", False),
        ]
        for name, key, target in rows:
            sec = d.get(key) or ref[key]
            lo, hi = spread[key]
            verdict = "" if target is None or target is False else ("PASS" if EVENTS / sec >= TARGET else "MISS")
            speed = rate(EVENTS, sec) if target is not None else ""
            rel = f"{ref['arrow'] / sec:8.2f}" if target is not None else ""
            cpu = statistics.median(CPU[key])
            print(f"{name:44s} {sec:8.3f} {lo:5.2f}-{hi:5.2f} {cpu:6.2f} {speed:>10s} {rel:>8s}  {verdict}")

        red = run_redis(root, payloads)
        if red:
            ok = "PASS" if red["events"] / red["ingest"] >= TARGET else "MISS"
            print(f"{'redis stream ingest (db 15, fresh stream)':44s} {red['ingest']:8.3f} {'':11s} {red['cpu']:6.2f} "
                  f"{rate(red['events'], red['ingest']):>10s} {ref['arrow'] / red['ingest'] * red['events'] / EVENTS:8.2f}  "
                  f"{ok} (1 run)")
            if red["events"] != EVENTS:
                print(f"  WARNING: redis ingest wrote {red['events']:,} of {EVENTS:,} events; "
                      f"{red['left_in_stream']} entries left in the stream, {red['pending']} read but not acked")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
