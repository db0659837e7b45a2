"""The database sampler's PostgreSQL depth against a real cluster (tests/pg.py): live activity with a
real blocking chain, dead rows and bloat, transaction-ID ages, replication on a primary, perfdeck's own
statements left out of pg_statements, and the time a sample's deltas cover across a reset."""
from __future__ import annotations

import threading
from datetime import timezone

import psycopg
import pytest

from collectors.samplers import utcnow
from collectors.samplers.database import DRIVER_STATEMENTS, DatabaseSampler, perfdecks_own
from collectors.samplers.pg_depth import MAX_QUERY
from tests import pg
from tests.helpers import wait_for

pg_cluster = pg.pg_cluster   # the session fixture

DB = "perfdeck_pg_depth"


@pytest.fixture(scope="module")
def cluster(pg_cluster):
    pg_cluster.database_with_statements(DB)
    return pg_cluster


@pytest.fixture
def sampler(cluster):
    s = DatabaseSampler(name="pg", url=cluster.url_for(DB), interval=1)
    yield s
    s.close()


def connect(cluster, app: str, *, autocommit: bool = False) -> psycopg.Connection:
    return psycopg.connect(f"host=127.0.0.1 port={cluster.port} user=postgres dbname={DB} application_name={app}",
                           autocommit=autocommit)


def metrics(rows) -> dict:
    return {(name, labels): value for r in rows if r.table == "db_metrics" for _, _, name, labels, value in r.rows}


def activity(rows) -> dict[int, tuple]:
    return {row[2]: row for r in rows if r.table == "pg_activity" for row in r.rows}


def test_a_blocking_chain_with_its_locks(cluster, sampler):
    cluster.execute("CREATE TABLE chain_t (id int PRIMARY KEY, v int)", dbname=DB)
    cluster.execute("INSERT INTO chain_t VALUES (1, 0)", dbname=DB)
    holder, waiter = connect(cluster, "app-holder"), connect(cluster, "app-waiter")
    ours = connect(cluster, "perfdeck-dashboard")          # perfdeck's own: never in the snapshot
    secret = "postgresql://app:hunter2@db/app"
    try:
        ours.execute("BEGIN")
        ours.execute("SELECT 1")
        holder.execute(f"UPDATE chain_t SET v = 1 WHERE id = 1 /* {secret} */")   # idle in transaction
        holder_pid, waiter_pid = holder.info.backend_pid, waiter.info.backend_pid
        done = threading.Event()

        def wait():
            waiter.execute("UPDATE chain_t SET v = 2 WHERE id = 1 /* " + "x" * 3000 + " */")
            waiter.rollback()
            done.set()

        thread = threading.Thread(target=wait)
        thread.start()
        assert wait_for(lambda: cluster.execute(
            "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (waiter_pid,), dbname=DB) == [("Lock",)])
        now = utcnow()
        rows = activity(sampler.collect(now))
        holder.rollback()
        thread.join(10)
        assert done.is_set()
    finally:
        for con in (holder, waiter, ours):
            con.close()

    assert set(rows) == {holder_pid, waiter_pid}            # not the sampler, not perfdeck-dashboard
    h, w = rows[holder_pid], rows[waiter_pid]
    assert h[1] == "pg" and h[0] == now
    assert (h[5], h[7], h[14]) == ("app-holder", "idle in transaction", [])
    assert (w[5], w[7], w[8], w[9], w[14]) == ("app-waiter", "active", "Lock", "transactionid", [holder_pid])
    assert "holds RowExclusiveLock on public.chain_t" in h[15]
    [waits] = [lock for lock in w[15] if lock.startswith("waits for")]
    assert waits.startswith("waits for ShareLock on transaction ")
    assert "holds RowExclusiveLock on public.chain_t" in w[15]
    # texts redacted and cut; ages of the statement and the transaction, the holder's the older
    assert "hunter2" not in h[16] and "postgresql://app:***@db/app" in h[16]
    assert len(w[16]) == 1023 <= MAX_QUERY          # the server keeps track_activity_query_size - 1 bytes
    assert w[12] >= 0 and h[13] >= w[13] >= 0 and h[13] >= h[12]
    assert h[3] is not None and h[3].tzinfo is None and h[3] <= now     # backend_start, naive UTC


def test_dead_rows_bloat_and_transaction_ages(cluster, sampler):
    cluster.execute("CREATE TABLE bloat_t (id int, pad text) WITH (autovacuum_enabled = off)", dbname=DB)
    cluster.execute("INSERT INTO bloat_t SELECT g, repeat('x', 100) FROM generate_series(1, 20000) g", dbname=DB)
    cluster.execute("DELETE FROM bloat_t WHERE id % 2 = 0", dbname=DB)
    cluster.execute("ANALYZE bloat_t", dbname=DB)
    dead = "SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'bloat_t'"
    assert wait_for(lambda: cluster.execute(dead, dbname=DB) == [(10000,)])
    m = metrics(sampler.collect(utcnow()))
    t = "table=public.bloat_t"
    assert m[("table.n_dead_tup", t)] == 10000 and m[("table.n_live_tup", t)] == 10000
    heap = cluster.execute("SELECT pg_relation_size('bloat_t')", dbname=DB)[0][0]
    assert m[("table.heap_bytes", t)] == heap
    # half the rows are gone and their space is not given back: about half the heap is bloat
    assert 0.35 * heap < m[("table.bloat_bytes", t)] < 0.65 * heap
    assert m[("table.last_analyze", t)] > 1.6e9 and m[("table.last_vacuum", t)] is None
    assert m[("table.n_mod_since_analyze", t)] == 0
    [(age,)] = cluster.execute("SELECT age(relfrozenxid) FROM pg_class WHERE relname = 'bloat_t'", dbname=DB)
    assert m[("table.xid_age", t)] == age > 0
    ages = dict(cluster.execute("SELECT datname, age(datfrozenxid) FROM pg_database WHERE datallowconn"))
    assert {k[1] for k in m if k[0] == "database.xid_age"} == {f"database={d}" for d in ages} >= {
        f"database={DB}", "database=postgres"}
    assert m[("setting.autovacuum_freeze_max_age", None)] == 200_000_000
    # a primary without standbys
    assert m[("replication.standby", None)] == 0 and m[("replication.replicas", None)] == 0
    assert not [k for k in m if k[0] == "replication.lag_bytes"]


def test_perfdecks_own_statements_are_left_out(cluster, sampler):
    """Measured on a real server: after a reset, what perfdeck's sampler, a dashboard action's connection
    (SQLAlchemy checks on a new engine) and a marked dashboard statement leave in pg_stat_statements."""
    from sqlalchemy import create_engine, text
    cluster.execute("SELECT pg_stat_statements_reset()", dbname=DB)
    sampler.collect(utcnow())
    engine = create_engine(cluster.url_for(DB), connect_args={"application_name": "perfdeck-actions"})
    with engine.connect() as con:
        con.execute(text("/* perfdeck dashboard */ SELECT count(*) FROM pg_class")).scalar()
    engine.dispose()
    cluster.execute("CREATE TABLE IF NOT EXISTS app_t (id int)", dbname=DB)
    for _ in range(3):
        cluster.execute("SELECT count(*) FROM app_t", dbname=DB)
    texts = [r[0] for r in cluster.execute("SELECT query FROM pg_stat_statements WHERE dbid = "
                                            "(SELECT oid FROM pg_database WHERE datname = current_database())",
                                            dbname=DB)]
    assert DRIVER_STATEMENTS <= set(texts)                   # what SQLAlchemy sends on its own, unmarked
    assert "SELECT count(*) FROM app_t" in texts
    rows = [row for r in sampler.collect(utcnow()) if r.table == "pg_statements" for row in r.rows]
    shown = {row[3] for row in rows}
    assert "SELECT count(*) FROM app_t" in shown
    assert not [q for q in shown if perfdecks_own(q)]
    assert not [q for q in shown if q and (q.startswith("/* perfdeck") or q in DRIVER_STATEMENTS)]
    # The sampler's savepoint is marked; psycopg's own type lookup on a new engine sends SAVEPOINT "_pg3_1",
    # the same text (so the same entry) as any psycopg app's nested transaction: that one stays.
    assert {q for q in shown if "SAVEPOINT" in q or q.startswith("RELEASE")} <= {'SAVEPOINT "_pg3_1"',
                                                                                 'RELEASE "_pg3_1"'}
    assert perfdecks_own("  /* perfdeck advisor */ EXPLAIN SELECT 1") and not perfdecks_own("SELECT 1")


def test_covered_time_counts_from_a_reset(cluster, sampler):
    first = utcnow()
    m = metrics(sampler.collect(first))
    assert ("pg_stat_statements.covered_s", None) not in m          # the baseline covers nothing
    second = utcnow()
    m = metrics(sampler.collect(second))
    assert m[("pg_stat_statements.covered_s", None)] == (second - first).total_seconds()
    cluster.execute("SELECT pg_stat_statements_reset()", dbname=DB)
    [(reset,)] = cluster.execute("SELECT stats_reset FROM pg_stat_statements_info", dbname=DB)
    third = utcnow()
    m = metrics(sampler.collect(third))
    reset = reset.astimezone(timezone.utc).replace(tzinfo=None)
    assert m[("pg_stat_statements.covered_s", None)] == pytest.approx((third - max(reset, second)).total_seconds(),
                                                                        abs=1e-6)
    assert m[("pg_stat_statements.covered_s", None)] <= (third - second).total_seconds()


def test_replication_on_a_primary_and_its_standby(cluster):
    """A real streaming standby (pg_basebackup -R): the primary lists it with its lag, the standby says
    it is one and how far behind its replay is."""
    standby = pg.PgCluster(bindir=cluster.bindir)
    try:
        standby._run("pg_basebackup", "-D", str(standby.datadir), "-R", "-X", "stream", "-h", "127.0.0.1",
                     "-p", str(cluster.port), "-U", "postgres", "-c", "fast")
        with open(standby.datadir / "postgresql.conf", "a") as f:
            f.write(f"\nport = {standby.port}\nunix_socket_directories = '{standby.base}'\n")
        standby.start()
        assert wait_for(lambda: cluster.execute("SELECT count(*) FROM pg_stat_replication WHERE state = 'streaming'")
                        == [(1,)])
        cluster.execute("CREATE TABLE replicated_t AS SELECT 1 AS id", dbname=DB)
        assert wait_for(lambda: standby.execute("SELECT to_regclass('replicated_t') IS NOT NULL", dbname=DB) == [(True,)])
        on_primary = DatabaseSampler(name="primary", url=cluster.url_for(DB))
        on_standby = DatabaseSampler(name="standby", url=standby.url_for(DB))
        try:
            primary = metrics(on_primary.collect(utcnow()))
            # 0 once it has replayed all it received (WAL the primary writes meanwhile may make a sample wait)
            replica = wait_for(lambda: (m := metrics(on_standby.collect(utcnow())))[("replication.replay_delay_s", None)]
                               == 0 and m)
        finally:
            on_primary.close()
            on_standby.close()
        [(name,)] = cluster.execute("SELECT application_name FROM pg_stat_replication")
        assert primary[("replication.standby", None)] == 0 and primary[("replication.replicas", None)] == 1
        assert primary[("replication.lag_bytes", f"replica={name}")] >= 0
        assert ("replication.replay_lag_s", f"replica={name}") in primary
        assert replica[("replication.standby", None)] == 1 and ("replication.replicas", None) not in replica
        assert replica[("replication.replay_delay_s", None)] == 0
        assert ("table.xid_age", "table=public.replicated_t") in replica
    finally:
        standby.destroy()


def test_a_part_the_sampler_may_not_read_leaves_the_rest(cluster):
    """A hardened server revokes pg_blocking_pids from PUBLIC: for a monitoring role without it the live
    activity is missing, and capabilities() says why; the rest of the sample is there."""
    cluster.execute("CREATE ROLE monitor LOGIN IN ROLE pg_monitor")
    cluster.execute("REVOKE EXECUTE ON FUNCTION pg_blocking_pids(integer) FROM PUBLIC", dbname=DB)
    s = DatabaseSampler(name="pg", url=f"postgresql+psycopg://monitor@127.0.0.1:{cluster.port}/{DB}")
    busy = connect(cluster, "app-busy")
    try:
        busy.execute("SELECT 1")                     # idle in transaction: would be in the snapshot
        rows = s.collect(utcnow())
        assert activity(rows) == {}
        assert s.capabilities()["activity"].startswith("not sampled: ProgrammingError: (psycopg.errors."
                                                       "InsufficientPrivilege) permission denied for function "
                                                       "pg_blocking_pids")
        m = metrics(rows)
        assert m[("replication.standby", None)] == 0 and ("database.xid_age", f"database={DB}") in m
        assert m[("pg_stat_statements.enabled", None)] == 1
    finally:
        busy.close()
        s.close()
        cluster.execute("GRANT EXECUTE ON FUNCTION pg_blocking_pids(integer) TO PUBLIC", dbname=DB)
        cluster.execute("DROP ROLE monitor")
