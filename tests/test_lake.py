"""The DuckLake store (collectors.store.lake): catalog in a real PostgreSQL (tests.pg's throwaway cluster),
Parquet data in a temp folder, real Redis, real `perfdeck collect` subprocesses.

- the migrations apply on a lake, and the same SDK batches land there as in the DuckDB file;
- two collectors on one Redis stream, one of them SIGKILLed mid-ingest and restarted: every event is
  counted once, in the raw rows and in the rollups;
- the once-per-period jobs run once per period across two collectors, and go on when the holder dies;
- a reader never waits for a writer; a misconfigured lake says so in one line."""
from __future__ import annotations

import os
import random
import re
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
from helpers import wait_for
from test_request_costs import batches as cost_batches
from test_request_costs import workload as cost_workload

from collectors.daemon import Collector
from collectors.sdk.batch import encode
from collectors.sdk.transport.redis import STREAM, RedisTransport
from collectors.sdk.transport.spool import SpoolTransport
from collectors.sources import RedisSource
from collectors.store import StoreLocked, connection, lake
from collectors.store.migrations import MIGRATIONS
from tests.pg import lake_store, pg_cluster  # noqa: F401  (the fixtures)

ROOT = Path(__file__).resolve().parent.parent
CLAIM_IDLE_S = 3          # a dead consumer's pending entries are claimed by the other after this
LEASE_TTL_S = 3           # a dead holder's duties pass to the other after this


# -- reading the lake and its catalog ------------------------------------------------------------------
def lake_rows(store, sql: str, params=()) -> list[tuple]:
    with connection.read(store) as con:
        return con.execute(sql, list(params)).fetchall()


def lake_value(store, sql: str, params=()):
    return lake_rows(store, sql, params)[0][0]


def catalog_rows(store: lake.Lake, sql: str, params=()) -> list[tuple]:
    """Rows of the lake's catalog database (schema `perfdeck`: leases, jobs, duty_runs)."""
    import psycopg
    with psycopg.connect(store.conninfo, autocommit=True) as con:
        return con.execute(sql, params).fetchall()


def child_env(store: lake.Lake, **extra: str) -> dict[str, str]:
    """This shell's environment without perfdeck's variables, plus the lake's data path and `extra`."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PERFDECK_")}
    env.update({lake.DATA_PATH_ENV: os.environ[lake.DATA_PATH_ENV],
                "PERFDECK_CONFIG": "/nonexistent/perfdeck.toml", **extra})
    return env


def stop(proc: subprocess.Popen, timeout: float = 60) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# -- 1. one store, two backends --------------------------------------------------------------------------
FIGURES = {
    "request_events": "count(*), round(sum(duration_ms), 6), count(DISTINCT request_id)",
    "latency_hist": "count(*), sum(count), count(DISTINCT (minute, service, endpoint, bucket))",
    "request_rollup": "count(*), sum(requests), sum(errors), round(sum(duration_sum_ms), 6), max(duration_max_ms)",
    "llm_calls": "count(*), sum(input_tokens), sum(output_tokens), round(sum(cost_usd), 9)",
    "llm_requests": "count(*), count(DISTINCT request_id), sum(calls), round(sum(llm_usd), 9), "
                    "count(*) FILTER (has_event), sum(input_tokens)",
    "ingested_batches": "count(*), count(DISTINCT batch_id), sum(events)",
}


def figures(store) -> dict[str, tuple]:
    with connection.read(store) as con:
        return {table: con.execute(f"SELECT {sql} FROM {table}").fetchone() for table, sql in FIGURES.items()}


def llm_request_rows(store) -> list[tuple]:
    with connection.read(store) as con:
        return con.execute("SELECT request_id, ts, service, endpoint, calls, models, input_tokens, output_tokens, "
                           "round(llm_usd, 9), has_event FROM llm_requests ORDER BY request_id").fetchall()


def test_migrations_apply_and_sdk_batches_land_as_in_the_duckdb_file(lake_store, tmp_path):  # noqa: F811
    events, calls = cost_workload(7, 300)
    payloads = cost_batches(events, calls, random.Random(8), 30)
    stores = {"file": tmp_path / "perfdeck.duckdb", "lake": lake_store}
    for name, store in stores.items():
        spool = tmp_path / f"spool-{name}"
        transport = SpoolTransport(spool)
        for i, payload in enumerate(payloads):
            transport.send(f"b{i}", payload)
        report = Collector(store, spool_dir=spool).run_once()
        assert report.batches == len(payloads)

    migrations = [m.__name__ for m in MIGRATIONS]
    assert [r[0] for r in lake_rows(lake_store, "SELECT name FROM _migrations ORDER BY name")] == sorted(migrations)
    on_file, on_lake = figures(stores["file"]), figures(lake_store)
    assert on_lake["request_events"][0] == len(events)
    assert on_lake["llm_calls"][0] == len(calls)
    assert on_lake == on_file
    assert llm_request_rows(lake_store) == llm_request_rows(stores["file"])

    # A second collector on the same lake migrates nothing, and a replay writes nothing.
    spool = tmp_path / "spool-replay"
    SpoolTransport(spool).send("b0", payloads[0])
    assert Collector(lake_store, spool_dir=spool).run_once().events == 0
    assert figures(lake_store) == on_lake


# -- 2. two collectors on one stream, one killed mid-ingest --------------------------------------------
EVENTS_PER_BATCH = 25


def stream_batch(i: int, now: float) -> tuple[str, bytes, set[str]]:
    """Batch i: EVENTS_PER_BATCH requests of the last few minutes with ids of their own, and LLM calls of
    the previous batch's requests (a request's event and its calls in two batches, maybe two collectors).
    (batch id, payload, the request ids it calls for)."""
    rng = random.Random(i)
    requests = [(now - rng.uniform(0, 240), rng.choice(("/a", "/b", "/c")), rng.uniform(1, 500),
                 rng.choice((200, 200, 200, 500)), "GET", f"r{i}-{j}", None) for j in range(EVENTS_PER_BATCH)]
    called = {f"r{i - 1}-{j}" for j in range(0, EVENTS_PER_BATCH, 5)} if i else set()
    llm = [(now - 250, "openai", "gpt-4o-mini", 100, 20, 0, rid, None, "u1", False, 300.0, 0) for rid in sorted(called)]
    batch_id, payload, _ = encode(service="api", host="web-1", pid=1, sent_at=now, requests=requests, llm=llm,
                                  batch_id=f"batch-{i:04d}")
    return batch_id, payload, called


class CollectorProcess:
    """`perfdeck collect --redis URL --db <lake> --consumer NAME`, its output in a log file."""

    def __init__(self, store: lake.Lake, redis_url: str, consumer: str, tmp_path: Path):
        self.args = [sys.executable, "-m", "collectors.cli", "collect", "--db", store.spec, "--redis", redis_url,
                     "--consumer", consumer, "--spool", str(tmp_path / f"spool-{consumer}"), "--interval", "0.2"]
        self.env = child_env(store, PERFDECK_CLAIM_IDLE_S=str(CLAIM_IDLE_S), PERFDECK_LEASE_TTL_S=str(LEASE_TTL_S))
        self.log = tmp_path / f"collector-{consumer}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "a") as out:
            self.proc = subprocess.Popen(self.args, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


def consumers(client: redis.Redis) -> set[str]:
    try:
        return {c["name"].decode() for c in client.xinfo_consumers(STREAM, RedisSource.GROUP)}
    except redis.ResponseError:          # no stream or no group yet
        return set()


def acked_by_group(client: redis.Redis) -> bool:
    """Nothing left in the stream's consumer group: every entry read and acknowledged (acknowledged
    entries are deleted from the stream)."""
    try:
        pending = client.xpending(STREAM, RedisSource.GROUP)["pending"]
    except redis.ResponseError:
        return False
    return pending == 0 and client.xlen(STREAM) == 0


def pending_of(client: redis.Redis, consumer: str) -> list[str]:
    """Ids of the stream entries delivered to `consumer` and not acknowledged yet."""
    try:
        rows = client.xpending_range(STREAM, RedisSource.GROUP, min="-", max="+", count=10_000, consumername=consumer)
    except redis.ResponseError:
        return []
    return [r["message_id"].decode() for r in rows]


class Sender(threading.Thread):
    """An app sending batches to the stream through the SDK's transport, a few milliseconds apart: at
    least `n`, and on until `done` is set (so the collectors are ingesting whenever the test kills one)."""

    def __init__(self, redis_url: str, n: int):
        super().__init__(daemon=True)
        self.redis_url, self.n = redis_url, n
        self.done = threading.Event()
        self.sent: list[str] = []
        self.called: set[str] = set()      # request ids with an LLM call

    def run(self) -> None:
        transport, now = RedisTransport(self.redis_url), time.time()
        try:
            for i in range(5000):
                if i >= self.n and self.done.is_set():
                    break
                batch_id, payload, called = stream_batch(i, now)
                transport.send(batch_id, payload)
                self.sent.append(batch_id)
                self.called |= called
                time.sleep(0.03)
        finally:
            transport.close()


def test_a_slow_write_keeps_its_entries_unless_another_collector_claimed_them(redis_url, tmp_path, monkeypatch):
    """The fence before an ingest commits (RedisSource.still_ours): entries held longer than the claim time
    are still ours while nobody claimed them (a slow write commits), and not once another collector did."""
    monkeypatch.setenv("PERFDECK_CLAIM_IDLE_S", "0.5")
    slow, other = (RedisSource(redis_url, tmp_path, consumer=name) for name in ("slow", "other"))
    RedisTransport(redis_url).send(*encode(service="api", host="h", pid=1, sent_at=time.time(),
                                           requests=[(time.time(), "/a", 1.0, 200, "GET", None, None)])[:2])
    items = slow.fetch(10, 1 << 20)
    assert len(items) == 1
    time.sleep(1.0)                                  # twice the claim time, and nobody claimed them
    assert slow.still_ours(items)                    # ... which held them afresh
    assert other.fetch(10, 1 << 20) == []            # so they are not claimable yet
    time.sleep(1.0)
    assert [i.name for i in other.fetch(10, 1 << 20)] == [items[0].name]     # claimed: the other's now
    assert not slow.still_ours(items)
    assert other.still_ours(items)


@pytest.mark.timeout(240)
def test_two_collectors_one_killed_mid_ingest_count_every_event_once(lake_store, redis_url, tmp_path):  # noqa: F811
    collectors = {name: CollectorProcess(lake_store, redis_url, name, tmp_path) for name in ("A", "B")}
    client = redis.Redis.from_url(redis_url)
    sender = Sender(redis_url, 150)
    try:
        for c in collectors.values():
            c.start()
        # Both up: the lake migrated and each reading the stream in the consumer group.
        assert wait_for(lambda: consumers(client) == {"A", "B"}, timeout=60), \
            collectors["A"].output() + collectors["B"].output()
        sender.start()
        # Kill A while it holds entries it read and has not acknowledged (between read and commit).
        assert wait_for(lambda: lake_value(lake_store, "SELECT count(*) FROM ingested_batches") > 0, timeout=60)
        assert wait_for(lambda: pending_of(client, "A"), timeout=30, interval=0.005)
        collectors["A"].kill()
        held_by_the_dead = pending_of(client, "A")
        time.sleep(1.0)
        collectors["A"].start()                          # the same consumer name, as a restarted service
        sender.done.set()
        sender.join(60)
        assert wait_for(lambda: acked_by_group(client), timeout=120, interval=0.5), \
            f"stream not drained: {client.xpending(STREAM, RedisSource.GROUP)}"
        for c in collectors.values():
            stop(c.proc)
        assert [c.proc.returncode for c in collectors.values()] == [0, 0], \
            collectors["A"].output()[-3000:] + collectors["B"].output()[-3000:]
    finally:
        sender.done.set()
        for c in collectors.values():
            if c.proc is not None:
                stop(c.proc)
        client.close()

    assert held_by_the_dead, "A died holding nothing: the kill was not mid-ingest"
    events = len(sender.sent) * EVENTS_PER_BATCH
    batch_ids = Counter(r[0] for r in lake_rows(lake_store, "SELECT batch_id FROM ingested_batches"))
    assert set(batch_ids) == set(sender.sent)
    assert [b for b, n in batch_ids.items() if n > 1] == []
    assert lake_rows(lake_store, "SELECT count(*), count(DISTINCT request_id) FROM request_events") == \
        [(events, events)]
    assert lake_value(lake_store, "SELECT sum(requests) FROM request_rollup") == events
    assert lake_value(lake_store, "SELECT sum(count) FROM latency_hist") == events
    # Compacted at the end by the holder of the duties: one row per key, whichever collector wrote the parts.
    assert lake_rows(lake_store, "SELECT count(*), count(DISTINCT (minute, service, endpoint)) FROM request_rollup") \
        == lake_rows(lake_store, "SELECT count(DISTINCT (minute, service, endpoint)), "
                                 "count(DISTINCT (minute, service, endpoint)) FROM request_rollup")
    assert lake_value(lake_store, "SELECT count(*) - count(DISTINCT (minute, service, endpoint, bucket)) "
                                  "FROM latency_hist") == 0
    calls = len(sender.called)
    assert lake_value(lake_store, "SELECT count(*) FROM llm_calls") == calls
    # One row per request that called, with its one call and its event (from another batch).
    assert lake_rows(lake_store, "SELECT count(*), count(DISTINCT request_id), sum(calls), "
                                 "count(*) FILTER (has_event) FROM llm_requests") == [(calls, calls, calls, calls)]
    assert lake_value(lake_store, "SELECT count(*) FROM quarantine") == 0


# -- 3. once-per-period jobs among two collectors ----------------------------------------------------------
PERIOD_S = 1.0
JOBS = ("compaction", "retention")           # both every PERIOD_S in DUTIES_SCRIPT
DUTIES_SCRIPT = f"""
import sys
from collectors.daemon import Collector
c = Collector(sys.argv[1], spool_dir=sys.argv[2], interval=0.2, compact_every={PERIOD_S}, retention_every={PERIOD_S})
c.install_signal_handlers()
c.run_forever()
"""


def duty_runs(store) -> list[tuple[str, str, float]]:
    """(job, holder, started_at as epoch seconds) of every run, oldest first (none before a collector
    made the table)."""
    import psycopg
    try:
        return catalog_rows(store, "SELECT job, holder, extract(epoch FROM started_at)::float8 "
                                   "FROM perfdeck.duty_runs ORDER BY started_at")
    except psycopg.errors.UndefinedTable:
        return []


def lease_holder(store) -> str | None:
    rows = catalog_rows(store, "SELECT holder FROM perfdeck.leases WHERE name = 'duties' AND expires_at > now()")
    return rows[0][0] if rows else None


def runs_of(store, job: str, holder: str | None = None, after: float = 0.0) -> list[float]:
    return [t for j, h, t in duty_runs(store) if j == job and (holder is None or h == holder) and t > after]


@pytest.mark.timeout(180)
def test_leased_jobs_run_once_per_period_and_pass_on_when_the_holder_dies(lake_store, tmp_path):  # noqa: F811
    env = child_env(lake_store, PERFDECK_LEASE_TTL_S=str(LEASE_TTL_S))
    procs: dict[str, subprocess.Popen] = {}
    try:
        for name in ("one", "two"):
            with open(tmp_path / f"{name}.log", "w") as log:
                procs[name] = subprocess.Popen([sys.executable, "-c", DUTIES_SCRIPT, lake_store.spec,
                                                str(tmp_path / f"spool-{name}")], cwd=ROOT, env=env,
                                               stdout=log, stderr=subprocess.STDOUT)
        assert wait_for(lambda: len(runs_of(lake_store, "compaction")) >= 3, timeout=60)
        holder = lease_holder(lake_store)
        assert holder is not None
        host, _, pid = holder.rpartition(":")
        dead = next(name for name, p in procs.items() if p.pid == int(pid))
        heir = next(name for name in procs if name != dead)
        heir_holder = f"{host}:{procs[heir].pid}"
        procs[dead].send_signal(signal.SIGKILL)
        procs[dead].wait()
        killed_at = time.time()
        def heir_ran_each_job_thrice() -> bool:
            return all(len(runs_of(lake_store, job, heir_holder, after=killed_at)) >= 3 for job in JOBS)
        assert wait_for(heir_ran_each_job_thrice, timeout=60), (tmp_path / f"{heir}.log").read_text()[-3000:]
        assert lease_holder(lake_store) == heir_holder
    finally:
        for p in procs.values():
            stop(p)
    for job in JOBS:
        starts = runs_of(lake_store, job)
        gaps = [b - a for a, b in zip(starts, starts[1:])]
        assert min(gaps) >= PERIOD_S, (job, gaps)          # never twice in one period, whoever held the lease
        last_before = max(t for t in starts if t < killed_at)
        first_after = min(runs_of(lake_store, job, heir_holder, after=killed_at))
        # The heir took over within the lease's time to live (a period and a few slow ticks more).
        assert first_after - last_before <= LEASE_TTL_S + PERIOD_S + 3, (job, last_before, first_after)
        assert runs_of(lake_store, job, holder, after=killed_at) == []
    # A job of a long period ran once, not once per holder.
    assert [j for j, _, _ in duty_runs(lake_store)].count("lake maintenance") == 1


# -- 4. readers never wait ------------------------------------------------------------------------------
def test_a_read_does_not_wait_for_a_write_and_sees_the_last_commit(lake_store):  # noqa: F811
    Collector(lake_store, spool_dir="/nonexistent/spool")          # migrated
    with connection.write(lake_store) as con:
        con.execute("INSERT INTO deploys VALUES (now()::TIMESTAMP, 'api', 'v1', NULL)")
    writing, done = threading.Event(), threading.Event()

    def hold_a_write() -> None:
        with connection.write(lake_store) as con:                 # exclusive: the lock maintenance takes
            con.execute("INSERT INTO deploys VALUES (now()::TIMESTAMP, 'api', 'v2', NULL)")
            writing.set()
            done.wait(30)

    writer = threading.Thread(target=hold_a_write)
    writer.start()
    try:
        assert writing.wait(30)
        started = time.monotonic()
        seen = lake_rows(lake_store, "SELECT version FROM deploys")
        assert time.monotonic() - started < 2.0
        assert seen == [("v1",)]
        with pytest.raises(StoreLocked):                               # while writers do wait
            with connection.write(lake_store, exclusive=False, timeout=0.5):
                pass
    finally:
        done.set()
        writer.join(30)
    assert sorted(lake_rows(lake_store, "SELECT version FROM deploys")) == [("v1",), ("v2",)]


# -- 5. a lake that cannot be opened says why, in one line ------------------------------------------------
def test_a_lake_without_a_data_path_names_the_variable(monkeypatch):
    monkeypatch.delenv(lake.DATA_PATH_ENV, raising=False)
    with pytest.raises(lake.LakeUnavailable, match=lake.DATA_PATH_ENV):
        connection.db_path("ducklake:postgres:dbname=perfdeck host=127.0.0.1")


def test_a_lake_catalog_other_than_postgres_is_refused(tmp_path, monkeypatch):
    monkeypatch.setenv(lake.DATA_PATH_ENV, str(tmp_path))
    with pytest.raises(lake.LakeUnavailable, match="ducklake:postgres:<libpq conninfo>"):
        connection.db_path(f"ducklake:sqlite:{tmp_path / 'catalog.sqlite'}")


def run_collect_once(db: str, env: dict[str, str], tmp_path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "collectors.cli", "collect", "--db", db, "--once",
                           "--spool", str(tmp_path / "spool")], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("case", ["no data path", "sqlite catalog", "catalog down"])
def test_collect_on_a_lake_it_cannot_open_prints_one_line(lake_store, tmp_path, case):  # noqa: F811
    env = child_env(lake_store)
    db = lake_store.spec
    if case == "no data path":
        del env[lake.DATA_PATH_ENV]
        expected = lake.DATA_PATH_ENV
    elif case == "sqlite catalog":
        db = f"ducklake:sqlite:{tmp_path / 'catalog.sqlite'}"
        expected = "ducklake:postgres:"
    else:
        db = lake.Lake(re.sub(r"port=\d+", "port=1", lake_store.conninfo), lake_store.data_path).spec
        expected = "not answering"
    result = run_collect_once(db, env, tmp_path)
    assert result.returncode != 0
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: ") and expected in lines[0], result.stderr


# -- one request's rows in two ingests at once ------------------------------------------------------------
def ingest_side_by_side(collectors: list[Collector], monkeypatch) -> list[int]:
    """Each collector's ingest_pending() on a thread of its own, each write waiting (up to 2 s) inside its
    transaction for the other's to be written too: side by side wherever the lake lets them be. The events
    each wrote."""
    from collectors import daemon

    write_batches, written = daemon.write_batches, [threading.Event() for _ in collectors]

    def write_then_wait_for_the_other(con, batches, source):
        n = write_batches(con, batches, source)
        mine = next(i for i, c in enumerate(collectors) if source in {s.name for s in c.sources})
        written[mine].set()
        written[1 - mine].wait(2.0)              # neither has committed yet, unless the lake keeps them apart
        return n

    monkeypatch.setattr(daemon, "write_batches", write_then_wait_for_the_other)
    reports: list = []
    threads = [threading.Thread(target=lambda c=c: reports.append(c.ingest_pending())) for c in collectors]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    return sorted(r.events for r in reports)


CALL = ("openai", "gpt-4o-mini", 10, 5, 0, "r1", "/a", "u", False, 100.0, 0)   # an LLM call of request r1, untimed


@pytest.mark.parametrize("kinds", [("event", "call"), ("call", "call")])
def test_one_requests_rows_ingested_at_once_by_two_collectors_meet(lake_store, tmp_path, monkeypatch, kinds):  # noqa: F811
    """Two collectors ingest at once, one a request's event and the other its LLM call (or each a call of
    it): the request has one cost row, with its event and every call, as on the DuckDB file."""
    now = time.time()
    sends = {"event": dict(requests=[(now - 10, "/a", 5.0, 200, "GET", "r1", None)]),
             "call": dict(llm=[(now - 11, *CALL)])}
    collectors = []
    for i, kind in enumerate(kinds):
        spool = tmp_path / f"spool-{i}"
        SpoolTransport(spool).send(*encode(service="api", host="h", pid=1, sent_at=now, **sends[kind])[:2])
        collectors.append(Collector(lake_store, spool_dir=spool))
    assert ingest_side_by_side(collectors, monkeypatch) == [1, 1]
    calls = kinds.count("call")
    assert lake_rows(lake_store, "SELECT request_id, calls, has_event, endpoint FROM llm_requests") == \
        [("r1", calls, "event" in kinds, "/a")]
