"""PostgreSQL depth end to end: a real cluster (tests/pg.py) sampled by the collector into a real DuckDB
file, read back by the dashboard's query functions. Wraparound levels, which no test cluster can reach,
are checked on sample rows written the way the sampler writes them."""
from __future__ import annotations

import threading
from datetime import timedelta, timezone

import duckdb
import pandas as pd
import psycopg
import pytest

import dashboard.queries as q
from collectors.daemon import Collector
from collectors.samplers import utcnow
from collectors.samplers.database import DatabaseSampler
from collectors.store import migrate, write
from dashboard.queries.pg_depth import XID_CRITICAL_AGE
from tests import pg
from tests.helpers import wait_for

pg_cluster = pg.pg_cluster   # the session fixture

DB = "perfdeck_pg_queries"


@pytest.fixture(scope="module")
def cluster(pg_cluster):
    pg_cluster.database_with_statements(DB)
    return pg_cluster


@pytest.fixture
def collector(cluster, tmp_path):
    sampler = DatabaseSampler(name="pg", url=cluster.url_for(DB), interval=1)
    c = Collector(tmp_path / "s.duckdb", spool_dir=tmp_path / "spool", samplers=[sampler])
    yield c
    sampler.close()


def read(collector, fn, **kw):
    since, until = utcnow() - timedelta(hours=1), utcnow() + timedelta(minutes=1)
    with duckdb.connect(str(collector.db), read_only=True) as con:
        return fn(con, since=since, until=until, **kw)


def sql(cluster, statement: str, params=None):
    return cluster.execute(statement, params, dbname=DB)


def stat(cluster, table: str, column: str) -> int:
    return sql(cluster, f"SELECT {column} FROM pg_stat_user_tables WHERE relname = %s", (table,))[0][0]


def test_seq_scan_flag_goes_by_rows_read_not_scan_counts(cluster, collector):
    """Issue 19: a table read by a few sequential scans of many rows was missed, as it had more index
    scans than sequential ones. 4 scans of 300,000 rows against 50 index lookups: now flagged."""
    sql(cluster, "CREATE TABLE big_t (id int PRIMARY KEY, v int)")
    sql(cluster, "INSERT INTO big_t SELECT g, g % 7 FROM generate_series(1, 300000) g")
    sql(cluster, "CREATE TABLE small_t (id int PRIMARY KEY, v int)")
    sql(cluster, "INSERT INTO small_t SELECT g, g FROM generate_series(1, 20000) g")
    sql(cluster, "ANALYZE big_t")
    sql(cluster, "ANALYZE small_t")
    assert wait_for(lambda: stat(cluster, "big_t", "n_live_tup") == 300000)
    collector.run_once()                                 # the baseline
    base = stat(cluster, "big_t", "seq_tup_read")
    with cluster.connect(DB) as con:
        con.execute("SET max_parallel_workers_per_gather = 0")
        for _ in range(4):
            con.execute("SELECT count(*) FROM big_t WHERE v = 3").fetchall()
        for i in range(1, 51):
            con.execute("SELECT v FROM big_t WHERE id = %s", (i,)).fetchall()
            con.execute("SELECT v FROM small_t WHERE id = %s", (i,)).fetchall()
        con.execute("SELECT count(*) FROM small_t").fetchall()      # 20,000 rows read: under the threshold
    assert wait_for(lambda: stat(cluster, "big_t", "seq_tup_read") == base + 1_200_000)
    assert wait_for(lambda: stat(cluster, "small_t", "idx_scan") >= 50)
    collector.run_once()
    seq = read(collector, q.seq_scan_tables).set_index("table")
    big, small = seq.loc["public.big_t"], seq.loc["public.small_t"]
    assert (big["seq_scans"], big["idx_scans"], big["seq_rows_read"], big["idx_rows_fetched"]) == (4, 50, 1_200_000, 50)
    assert big["seq_scans"] < big["idx_scans"]            # what the old rule compared: not flagged then
    assert big["flagged"] and big["seq_rows_share"] == pytest.approx(1_200_000 / 1_200_050)
    assert (small["seq_rows_read"], bool(small["flagged"])) == (20_000, False)
    assert seq.index[0] == "public.big_t"


def test_calls_per_day_counts_the_time_covered_since_a_reset(cluster, collector):
    sql(cluster, "CREATE TABLE IF NOT EXISTS calls_t (id int)")
    collector.run_once()
    first = utcnow()
    for _ in range(40):
        sql(cluster, "SELECT count(*) FROM calls_t")
    sql(cluster, "SELECT pg_stat_statements_reset()")
    [(reset,)] = sql(cluster, "SELECT stats_reset FROM pg_stat_statements_info")
    for _ in range(30):
        sql(cluster, "SELECT count(*) FROM calls_t")
    collector.run_once()
    with duckdb.connect(str(collector.db), read_only=True) as con:
        [(covered, sampled_at)] = con.execute(
            "SELECT value, ts FROM db_metrics WHERE name = 'pg_stat_statements.covered_s'").fetchall()
    reset = reset.astimezone(timezone.utc).replace(tzinfo=None)
    assert covered == pytest.approx((sampled_at - reset).total_seconds(), abs=1e-3)
    assert first < reset < sampled_at
    top = read(collector, q.pg_top_statements, order_by="calls").set_index("query")
    row = top.loc["SELECT count(*) FROM calls_t"]
    assert row["calls"] == 30                              # counted from the reset
    assert row["calls_per_day"] == pytest.approx(30 * 86400 / covered)
    # over the hour the page asked for, 30 calls would read as 720 a day
    assert row["calls_per_day"] > 30 * 24


def test_live_activity_long_running_and_blockers(cluster, collector):
    sql(cluster, "CREATE TABLE IF NOT EXISTS live_t (id int PRIMARY KEY)")
    sql(cluster, "INSERT INTO live_t VALUES (1) ON CONFLICT DO NOTHING")
    dsn = f"host=127.0.0.1 port={cluster.port} user=postgres dbname={DB}"
    holder = psycopg.connect(dsn + " application_name=holder")
    waiter = psycopg.connect(dsn + " application_name=waiter")
    sleeper = psycopg.connect(dsn + " application_name=sleeper", autocommit=True)
    threads = []
    try:
        holder.execute("SELECT * FROM live_t WHERE id = 1 FOR UPDATE")
        threads = [threading.Thread(target=lambda: waiter.execute("DELETE FROM live_t WHERE id = 1")),
                   threading.Thread(target=lambda: _quietly(sleeper, "SELECT pg_sleep(600)"))]
        for t in threads:
            t.start()
        assert wait_for(lambda: len(sql(cluster, "SELECT 1 FROM pg_stat_activity WHERE application_name IN "
                                                 "('waiter', 'sleeper') AND wait_event IN ('transactionid', 'PgSleep')")) == 2)
        collector.run_once()
        now = read(collector, q.pg_activity_now).set_index("application_name")
        longer = read(collector, q.pg_long_running, min_seconds=0.0)
        default = read(collector, q.pg_long_running)
    finally:
        sql(cluster, "SELECT pg_cancel_backend(pid) FROM pg_stat_activity WHERE application_name = 'sleeper'")
        holder.rollback()
        for t in threads:
            t.join(10)
        waiter.rollback()
        for con in (holder, waiter, sleeper):
            con.close()
    assert set(now.index) == {"holder", "waiter", "sleeper"}
    assert now.index[0] == "holder"                         # the blocker first
    assert (now.loc["holder", "activity"], now.loc["holder", "blocks"]) == ("idle in transaction", 1)
    assert now.loc["waiter", "activity"] == "waiting"
    assert list(now.loc["waiter", "blocked_by"]) == [int(now.loc["holder", "pid"])]
    assert now.loc["waiter", "wait"] == "Lock: transactionid"
    assert now.loc["sleeper", "activity"] == "running" and now.loc["sleeper", "wait"] == "Timeout: PgSleep"
    assert any(lock.startswith("holds RowShareLock on public.live_t") for lock in now.loc["holder", "locks"])
    assert set(longer["application_name"]) == {"holder", "waiter", "sleeper"}
    assert default.empty                                   # nothing has run for a minute yet


def _quietly(con, statement):
    try:
        con.execute(statement)
    except psycopg.errors.QueryCanceled:
        pass


def test_table_health_sizes_and_replication(cluster, collector):
    sql(cluster, "CREATE TABLE dead_t (id int PRIMARY KEY, pad text) WITH (autovacuum_enabled = off)")
    sql(cluster, "INSERT INTO dead_t SELECT g, repeat('y', 200) FROM generate_series(1, 10000) g")
    sql(cluster, "DELETE FROM dead_t WHERE id <= 6000")
    assert wait_for(lambda: stat(cluster, "dead_t", "n_dead_tup") == 6000)
    collector.run_once()
    tables = read(collector, q.pg_table_health).set_index("table")
    dead = tables.loc["public.dead_t"]
    assert (dead["live_rows"], dead["dead_rows"], dead["dead_share"]) == (4000, 6000, 0.6)
    assert dead["needs_vacuum"] and dead["wraparound"] == "ok" and dead["indexes"] == 1
    heap, index = sql(cluster, "SELECT pg_relation_size('dead_t'), pg_relation_size('dead_t_pkey')")[0]
    assert (dead["heap_bytes"], dead["index_bytes"]) == (heap, index)
    assert dead["size_bytes"] >= heap + index and pd.isna(dead["last_vacuum"])
    indexes = read(collector, q.pg_index_sizes).set_index("index")
    assert indexes.loc["dead_t_pkey", "size_bytes"] == index and indexes.loc["dead_t_pkey", "is_primary"]
    ages = read(collector, q.pg_xid_ages).set_index("database")
    assert ages.loc[DB, "wraparound"] == "ok" and ages.loc[DB, "freeze_max_age"] == 200_000_000
    assert ages.loc[DB, "xid_age"] == sql(cluster, "SELECT age(datfrozenxid) FROM pg_database WHERE datname = %s",
                                          (DB,))[0][0]
    replication = read(collector, q.pg_replication)
    assert replication[["target", "role", "replicas"]].values.tolist() == [["pg", "primary", 0]]
    assert replication["replica"].isna().all()


def test_wraparound_levels(tmp_path):
    """PostgreSQL's own freeze age is the warning, pghero's 1.5 billion left before the stop the critical."""
    path, ts = tmp_path / "x.duckdb", utcnow() - timedelta(minutes=5)
    with write(path) as con:
        migrate(con)
        rows = [("pg_stat_statements.enabled", None, 1), ("setting.autovacuum_freeze_max_age", None, 300_000_000),
                ("database.xid_age", "database=young", 1_000), ("database.xid_age", "database=old", 300_000_000),
                ("database.xid_age", "database=danger", XID_CRITICAL_AGE),
                ("table.xid_age", "table=public.a", 299_999_999), ("table.xid_age", "table=public.b", 700_000_000)]
        con.executemany("INSERT INTO db_metrics VALUES (?, 'pg', ?, ?, ?)", [(ts, *r) for r in rows])
    with duckdb.connect(str(path), read_only=True) as con:
        since, until = utcnow() - timedelta(hours=1), utcnow()
        ages = q.pg_xid_ages(con, since=since, until=until)
        tables = q.pg_table_health(con, since=since, until=until).set_index("table")
    assert ages[["database", "wraparound"]].values.tolist() == [["danger", "critical"], ["old", "warning"],
                                                                 ["young", "ok"]]
    assert ages["left_before_stop"].tolist() == [1_500_000_000, 2_146_483_648 - 300_000_000, 2_146_483_648 - 1_000]
    assert tables["wraparound"].to_dict() == {"public.a": "ok", "public.b": "critical"}


def test_activity_snapshots_go_with_the_other_samples(tmp_path):
    from collectors.store.retention import purge
    path, now = tmp_path / "r.duckdb", utcnow()
    with write(path) as con:
        migrate(con)
        for age in (8, 6):
            con.execute("INSERT INTO pg_activity (ts, target, pid, state, blocked_by, locks, query) "
                        "VALUES (?, 'pg', 7, 'active', [], [], 'SELECT 1')", [now - timedelta(days=age)])
        assert purge(con, now)["pg_activity"] == 1           # past the 7 days of raw samples
        assert con.execute("SELECT count(*) FROM pg_activity").fetchone()[0] == 1
