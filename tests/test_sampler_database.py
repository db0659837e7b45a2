"""The database sampler against a real PostgreSQL (tests/pg.py) and real SQLite files."""
from __future__ import annotations

import sqlite3

import duckdb
import pytest

from collectors.daemon import Collector
from collectors.samplers import utcnow
from collectors.samplers.database import METRICS, DatabaseSampler, pg_stat_statements_hint
from tests import pg
from tests.helpers import wait_for

pg_cluster, pg_cluster_no_pgss = pg.pg_cluster, pg.pg_cluster_no_pgss   # the session fixtures

HINT = ("enable pg_stat_statements like this: add shared_preload_libraries = 'pg_stat_statements' "
        "to postgresql.conf, restart, then CREATE EXTENSION pg_stat_statements;")


def metrics(rows) -> dict[tuple[str, str | None], float | None]:
    out = {}
    for r in rows:
        if r.table == "db_metrics":
            for ts, target, name, labels, value in r.rows:
                assert name in METRICS, name
                out[(name, labels)] = value
    return out


def statements(rows) -> list[tuple]:
    return [row for r in rows if r.table == "pg_statements" for row in r.rows]


def pgss_snapshot(cluster) -> dict[int, tuple[int, float]]:
    """pg_stat_statements itself: calls and total_exec_time per queryid of the pgbench statements."""
    out: dict[int, list] = {}
    for qid, calls, ms in cluster.execute("""
        SELECT queryid, calls, total_exec_time FROM pg_stat_statements
        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
          AND query LIKE '%pgbench_%'
    """):
        acc = out.setdefault(qid, [0, 0.0])
        acc[0] += calls
        acc[1] += ms
    return {q: tuple(v) for q, v in out.items()}


@pytest.fixture
def pg_sampler(pg_cluster):
    s = DatabaseSampler(name="pg", url=pg_cluster.url, interval=1)
    yield s
    s.close()


def _seq_scans(cluster, table: str) -> int:
    return cluster.execute("SELECT seq_scan FROM pg_stat_user_tables WHERE relname = %s", (table,))[0][0]


def test_postgres_under_pgbench(pg_cluster, pg_sampler):
    pg_cluster.pgbench("-i", "-s", "2", "-q")
    pg_cluster.execute("DROP TABLE IF EXISTS noidx")
    pg_cluster.execute("CREATE TABLE noidx AS SELECT g AS id, g % 10 AS v FROM generate_series(1, 5000) g")
    wait_for(lambda: _seq_scans(pg_cluster, "noidx") is not None)

    first = pg_sampler.collect(utcnow())
    assert statements(first) == []                       # the baseline writes nothing
    m1 = metrics(first)
    before = pgss_snapshot(pg_cluster)
    pg_cluster.pgbench("-c", "2", "-T", "3")
    after = pgss_snapshot(pg_cluster)
    with pg_cluster.connect() as con:
        for _ in range(7):
            con.execute("SELECT count(*) FROM noidx WHERE v = 3").fetchall()
    # Backends flush their table stats when they exit (or idle, at most once a second).
    wait_for(lambda: _seq_scans(pg_cluster, "noidx") >= m1[("table.seq_scan", "table=public.noidx")] + 7)
    second = pg_sampler.collect(utcnow())
    m2 = metrics(second)

    # pg_statements deltas == what pg_stat_statements reports over the same interval.
    expected = {q: (a[0] - before.get(q, (0, 0.0))[0], a[1] - before.get(q, (0, 0.0))[1])
                for q, a in after.items()}
    expected = {q: v for q, v in expected.items() if v[0] > 0}
    got = {row[2]: row for row in statements(second) if "pgbench_" in (row[3] or "")}
    assert set(got) == set(expected)
    assert len(got) >= 5
    for qid, (calls, ms) in expected.items():
        assert got[qid][4] == calls
        assert got[qid][5] == pytest.approx(ms, abs=1e-6)
    update = next(r for r in got.values() if r[3].startswith("UPDATE pgbench_accounts"))
    print(f"\npgbench UPDATE pgbench_accounts: sampler calls={update[4]} total_ms={update[5]:.3f}; "
          f"pg_stat_statements calls={expected[update[2]][0]} total_ms={expected[update[2]][1]:.3f}")
    assert update[4] > 100 and update[6] == update[4]      # one row per UPDATE
    assert all(r[4] > 0 and r[5] >= 0 and r[7] >= 0 and r[8] >= 0 for r in statements(second))
    assert not any(r[3] and r[3].startswith("/* perfdeck sampler */") for r in statements(second))

    # Table, index, cache, connection and size metrics.
    assert m2[("table.seq_scan", "table=public.noidx")] >= m1[("table.seq_scan", "table=public.noidx")] + 7
    assert m2[("table.seq_tup_read", "table=public.noidx")] >= 7 * 5000
    assert m2[("table.n_live_tup", "table=public.pgbench_accounts")] == 200_000
    assert m2[("table.last_analyze", "table=public.pgbench_accounts")] > 1.6e9     # epoch seconds
    assert m2[("table.last_autovacuum", "table=public.noidx")] is None or \
        m2[("table.last_autovacuum", "table=public.noidx")] > 1.6e9
    pkey = "table=public.pgbench_accounts,index=pgbench_accounts_pkey,unique=1,primary=1"
    assert m2[("index.size_bytes", pkey)] > 0
    assert m2[("index.idx_scan", pkey)] > m1[("index.idx_scan", pkey)]
    assert m2[("table.size_bytes", "table=public.pgbench_accounts")] > m2[("index.size_bytes", pkey)]
    for key in (("cache.hit_ratio", "database=perfdeck_test"), ("cache.hit_ratio.interval", "database=perfdeck_test")):
        assert 0.0 <= m2[key] <= 1.0
    assert m2[("connections", "state=active")] >= 1            # at least the sampler's own
    assert ("connections", "state=idle") in m2
    assert m2[("connections.max", None)] == 40
    assert m2[("database.size_bytes", "database=perfdeck_test")] > 10_000_000
    assert m2[("pg_stat_statements.enabled", None)] == 1
    assert pg_sampler.capabilities()["pg_stat_statements"] == {"enabled": True, "reason": None, "hint": None}


def test_stats_reset_between_samples_gives_no_negative_deltas(pg_cluster, pg_sampler):
    pg_cluster.execute("CREATE TABLE IF NOT EXISTS resetme (id int)")
    for _ in range(50):
        pg_cluster.execute("INSERT INTO resetme VALUES (1)")
    pg_sampler.collect(utcnow())
    pg_cluster.execute("SELECT pg_stat_statements_reset()")
    for _ in range(3):
        pg_cluster.execute("INSERT INTO resetme VALUES (2)")
    rows = statements(pg_sampler.collect(utcnow()))
    assert rows
    for r in rows:
        assert r[4] > 0 and r[5] >= 0 and (r[6] or 0) >= 0 and r[7] >= 0 and r[8] >= 0, r
    insert = [r for r in rows if (r[3] or "").startswith("INSERT INTO resetme")]
    assert [r[4] for r in insert] == [3]                  # counted from the reset, not 3 - 50


def test_reset_or_vanished_statements(pg_cluster, pg_sampler):
    """One entry reset and run again counts from zero; one reset and not run again is not written."""
    pg_cluster.execute("CREATE TABLE IF NOT EXISTS vanish (id int)")
    for _ in range(5):
        pg_cluster.execute("SELECT count(*) FROM vanish")
        pg_cluster.execute("SELECT max(id) FROM vanish")
    pg_sampler.collect(utcnow())
    qids = dict(pg_cluster.execute(
        "SELECT query, queryid FROM pg_stat_statements WHERE query IN ('SELECT count(*) FROM vanish', "
        "'SELECT max(id) FROM vanish')"))
    for qid in qids.values():
        pg_cluster.execute("SELECT pg_stat_statements_reset(0, 0, %s)", (qid,))
    pg_cluster.execute("SELECT count(*) FROM vanish")
    rows = {r[2]: r for r in statements(pg_sampler.collect(utcnow()))}
    assert rows[qids["SELECT count(*) FROM vanish"]][4] == 1      # 1 call, not 1 - 5
    assert qids["SELECT max(id) FROM vanish"] not in rows
    assert all(r[4] > 0 and r[5] >= 0 for r in rows.values())


def test_without_pg_stat_statements_preloaded(pg_cluster_no_pgss):
    pg_cluster_no_pgss.execute("CREATE TABLE IF NOT EXISTS t (id int PRIMARY KEY, v int)")
    pg_cluster_no_pgss.execute("INSERT INTO t SELECT g, g FROM generate_series(1, 100) g ON CONFLICT DO NOTHING")
    s = DatabaseSampler(name="nopgss", url=pg_cluster_no_pgss.url)
    try:
        for _ in range(2):
            rows = s.collect(utcnow())
            m = metrics(rows)
            assert statements(rows) == []
            assert m[("pg_stat_statements.enabled", None)] == 0
            assert ("table.seq_scan", "table=public.t") in m
            assert m[("index.size_bytes", "table=public.t,index=t_pkey,unique=1,primary=1")] > 0
            assert ("connections", "state=active") in m
        caps = s.capabilities()["pg_stat_statements"]
        assert caps["enabled"] is False
        assert caps["reason"] == "pg_stat_statements is not in shared_preload_libraries"
        assert caps["hint"] == HINT == pg_stat_statements_hint()
    finally:
        s.close()


def test_without_the_extension_created(pg_cluster):
    url = pg_cluster.create_database("noext")
    pg_cluster.execute("CREATE TABLE t (id int)", dbname="noext")
    s = DatabaseSampler(name="noext", url=url)
    try:
        m = metrics(s.collect(utcnow()))
        assert m[("pg_stat_statements.enabled", None)] == 0
        assert ("table.n_live_tup", "table=public.t") in m
        assert s.capabilities()["pg_stat_statements"]["reason"] == \
            "the pg_stat_statements extension is not created in this database"
        assert s.capabilities()["pg_stat_statements"]["hint"] == HINT
    finally:
        s.close()


def test_sqlite_file(tmp_path):
    path = tmp_path / "app.db"
    con = sqlite3.connect(path)
    con.executescript("""
        CREATE TABLE users (id INTEGER PRIMARY KEY, email TEXT UNIQUE, name TEXT);
        CREATE TABLE "order items" (id INTEGER PRIMARY KEY, user_id INTEGER, qty INTEGER);
        CREATE INDEX ix_items_user ON "order items" (user_id);
    """)
    con.executemany("INSERT INTO users (email, name) VALUES (?, ?)", [(f"u{i}@x", "n") for i in range(30)])
    con.executemany('INSERT INTO "order items" (user_id, qty) VALUES (?, ?)', [(i % 30, 1) for i in range(120)])
    con.commit()
    page_count, page_size, freelist = (con.execute(f"PRAGMA {p}").fetchone()[0]
                                       for p in ("page_count", "page_size", "freelist_count"))
    con.close()

    s = DatabaseSampler(name="lite", url=f"sqlite:///{path}")
    try:
        m = metrics(s.collect(utcnow()))
    finally:
        s.close()
    assert m[("sqlite.file_size_bytes", None)] == path.stat().st_size == page_count * page_size
    assert m[("sqlite.page_count", None)] == page_count
    assert m[("sqlite.page_size", None)] == page_size
    assert m[("sqlite.freelist_count", None)] == freelist
    assert m[("table.rows", "table=users")] == 30
    assert m[("table.rows", "table=order items")] == 120
    assert m[("index.info", "table=order items,index=ix_items_user,unique=0,primary=0")] == 1
    assert m[("index.info", "table=users,index=sqlite_autoindex_users_1,unique=1,primary=0")] == 1
    assert sorted(k[1] for k in m if k[0] == "index.info") == [
        "table=order items,index=ix_items_user,unique=0,primary=0",
        "table=users,index=sqlite_autoindex_users_1,unique=1,primary=0"]
    if s.capabilities().get("dbstat"):
        assert m[("table.size_bytes", "table=users")] >= page_size
        assert m[("index.size_bytes", "table=order items,index=ix_items_user,unique=0,primary=0")] >= page_size
    assert not (tmp_path / "app.db-wal").exists()


def test_sqlite_big_tables_use_estimates(tmp_path, monkeypatch):
    from collectors.samplers import database
    path = tmp_path / "big.db"
    con = sqlite3.connect(path)
    con.execute("CREATE TABLE big (id INTEGER PRIMARY KEY, v TEXT)")
    con.execute("CREATE INDEX ix_big_v ON big (v)")
    con.executemany("INSERT INTO big (v) VALUES (?)", [(str(i),) for i in range(500)])
    con.execute("ANALYZE")
    con.commit()
    con.close()
    monkeypatch.setattr(database, "COUNT_MAX_BYTES", 0)       # every table counts as too big to COUNT(*)
    s = DatabaseSampler(name="big", url=f"sqlite:///{path}")
    try:
        m = metrics(s.collect(utcnow()))
    finally:
        s.close()
    assert ("table.rows", "table=big") not in m
    assert m[("table.rows_estimate", "table=big")] == 500


def test_sqlite_missing_file_is_down_and_not_created(tmp_path):
    s = DatabaseSampler(name="gone", url=f"sqlite:///{tmp_path / 'nope.db'}")
    with pytest.raises(FileNotFoundError):
        s.collect(utcnow())
    assert not (tmp_path / "nope.db").exists()
    s.close()


def _component(db) -> tuple:
    with duckdb.connect(str(db), read_only=True) as con:
        return con.execute("SELECT status, error, last_ok FROM components WHERE name = 'pg'").fetchone()


def test_down_and_up_through_the_daemon(pg_cluster, tmp_path):
    db = tmp_path / "s.duckdb"
    sampler = DatabaseSampler(name="pg", url=pg_cluster.url, interval=0.2)
    collector = Collector(db, spool_dir=tmp_path / "spool", samplers=[sampler])
    try:
        collector.run_once()
        assert _component(db)[0] == "up"
        pg_cluster.stop()
        collector.run_once()                 # sampler failures are statuses, not daemon errors
        status, error, last_ok = _component(db)
        assert status == "down" and error and "OperationalError" in error
        assert last_ok is not None
        pg_cluster.start()
        collector.run_once()
        assert _component(db)[0] == "up"
        with duckdb.connect(str(db), read_only=True) as con:
            n, targets = con.execute("SELECT count(*), list(DISTINCT target) FROM db_metrics").fetchone()
        assert n > 0 and targets == ["pg"]
    finally:
        if not pg_cluster.running:
            pg_cluster.start()
        sampler.close()


def test_metric_names_are_documented():
    from collectors.samplers import database
    for name in METRICS:
        assert name in database.__doc__, name
    assert len(set(METRICS)) == len(METRICS)
