"""One advisor run end to end: the workload (pg_stat_statements, the store), prepare(), folding
advice into recommendations, `perfdeck advise`, and the daemon storing its runs. Real PostgreSQL
with hypopg, real SQLite files, a real DuckDB store."""
from __future__ import annotations

import json
import sqlite3
from datetime import timedelta

import pytest
from click.testing import CliRunner

from collectors.advisor.advise import Settings, _fold, advise, sdk_names
from collectors.advisor.candidates import Candidate
from collectors.advisor.model import Advice, Statement
from collectors.advisor.workload import from_pg_stat_statements, from_store, merge, prepare
from collectors.cli import main
from collectors.daemon import Collector
from collectors.store import read, utcnow, write
from tests.pg import pg_cluster  # noqa: F401  (the session fixture)

# -- prepare: captured text -> what is parsed and explained ---------------------------------------

@pytest.mark.parametrize("text, dialect, expected", [
    ("SELECT * FROM t WHERE a = %(a)s AND b = %s AND c = %s", "postgres",
     "SELECT * FROM t WHERE a = $1 AND b = $2 AND c = $3"),
    ("SELECT * FROM t WHERE a = %(a)s OR b = %(a)s", "postgres", "SELECT * FROM t WHERE a = $1 OR b = $1"),
    ("SELECT * FROM t WHERE a = :a AND b = ?", "sqlite", "SELECT * FROM t WHERE a = ? AND b = ?"),
    ("SELECT * FROM t WHERE a = $1 AND note = 'is it :x or ?'", "sqlite",
     "SELECT * FROM t WHERE a = ? AND note = 'is it :x or ?'"),
    ("UPDATE products SET stock = max(stock - ?, 0) WHERE id = ?", "sqlite", "SELECT 1 FROM products WHERE id = ?"),
    ("DELETE FROM orders WHERE customer_id = $1", "postgres", "SELECT 1 FROM orders WHERE customer_id = $1"),
    # the SET's $1 is not in the WHERE: PREPARE could not type it (pgbench's UPDATEs failed so)
    ("UPDATE accounts SET abalance = abalance + $1 WHERE aid = $2 AND note <> '$3'", "postgres",
     "SELECT 1 FROM accounts WHERE aid = $1 AND note <> '$3'"),
])
def test_prepare(text, dialect, expected):
    assert prepare(text, dialect) == expected


@pytest.mark.parametrize("text", [
    "INSERT INTO t VALUES (1)", "DELETE FROM t", "UPDATE t SET a = 1 FROM u WHERE u.id = t.id",
    "SELECT 1; SELECT 2", "VACUUM",
])
def test_prepare_refuses_what_no_index_answers(text):
    with pytest.raises(ValueError):
        prepare(text, "postgres")


def test_merge_counts_a_statement_once_and_drops_the_cheap_ones():
    server = [Statement("SELECT * FROM t WHERE a = $1", 100, 50_000.0, "pg_stat_statements", 1.0)]
    sdk = [Statement("SELECT * FROM t WHERE a = %(a)s", 90, 60_000.0, "sdk", 1.0, "SELECT * FROM t WHERE a = ?"),
           Statement("SELECT * FROM u WHERE b = ?", 10, 500.0, "sdk", 1.0),            # 0.5 s a day: cheap
           Statement("SELECT * FROM v WHERE c = ?", 10, 9_000.0, "sdk", 3.0)]          # 3 s a day
    merged = merge(server, sdk)
    # the server's figures, the app's text (its inline literals are real values)
    assert [(s.source, s.text, s.calls) for s in merged] == [
        ("pg_stat_statements", "SELECT * FROM t WHERE a = %(a)s", 100), ("sdk", "SELECT * FROM v WHERE c = ?", 10)]


def test_fold_serves_a_prefix_with_the_longer_index():
    def advice(*cols):
        return Advice(100.0, (), Candidate("t", None, cols), 10.0, method="hypopg")
    a = Statement("q1", 10, 1000.0)
    b = Statement("q2", 10, 1000.0)
    c = Statement("q3", 10, 1000.0)
    folded = _fold([(a, advice("x")), (b, advice("x", "y")), (c, advice("z"))])
    assert [(cand.columns, [s.text for s, _ in helped]) for cand, _, helped in folded] == [
        (("x", "y"), ["q2", "q1"]), (("z",), ["q3"])]


def test_settings_from_env():
    s = Settings.from_env({"PERFDECK_ADVISOR_MIN_SHARE": "0.3", "PERFDECK_ADVISOR_MIN_ROWS": "500"})
    assert (s.min_share, s.min_rows, s.min_base_cost) == (0.3, 500, 1000.0)
    with pytest.raises(ValueError, match="PERFDECK_ADVISOR_MIN_SHARE"):
        Settings.from_env({"PERFDECK_ADVISOR_MIN_SHARE": "half"})


# -- the workload ------------------------------------------------------------------------------

def test_store_workload_per_database(migrated_store):
    now = utcnow().replace(second=0, microsecond=0)
    with write(migrated_store) as con:
        con.executemany("INSERT INTO query_stats VALUES (?, 'shop-api', ?, ?, ?, ?, ?, NULL, NULL)", [
            (now - timedelta(hours=2), "shop", "SELECT * FROM orders WHERE customer_id = ?",
             "SELECT * FROM orders WHERE customer_id = ?", 40, 800.0),
            (now - timedelta(hours=1), "shop", "SELECT * FROM orders WHERE customer_id = ?",
             "SELECT * FROM orders WHERE customer_id = ?", 60, 1200.0),
            (now - timedelta(hours=1), "shop", "INSERT INTO orders VALUES (?)", "INSERT INTO orders VALUES (?)", 5, 9.0),
            (now - timedelta(hours=1), "billing", "SELECT * FROM invoices WHERE id = ?",
             "SELECT * FROM invoices WHERE id = ?", 5, 9.0),
            (now - timedelta(days=9), "shop", "SELECT * FROM old WHERE a = ?", "SELECT * FROM old WHERE a = ?", 5, 9.0),
        ])
    with read(migrated_store) as con:
        got = from_store(con, databases=sdk_names("sqlite:///data/shop.db", "shop"),
                         since=now - timedelta(days=7), until=now)
    assert len(got) == 1
    s = got[0]
    assert (s.text, s.calls, s.total_ms, s.source) == ("SELECT * FROM orders WHERE customer_id = ?", 100, 2000.0, "sdk")
    assert s.days == pytest.approx(2 / 24)          # since its first minute, not the whole week
    assert s.calls_per_day == pytest.approx(1200)


def test_sdk_names():
    assert sdk_names("sqlite:////srv/data/shop.sqlite", "shop") == ["shop", "/srv/data/shop.sqlite"]
    assert sdk_names("postgresql://app@db/appdb") == ["appdb"]


@pytest.fixture(scope="module")
def shop_pg(pg_cluster):  # noqa: F811
    """`orders` (300k rows: customer_id 30k distinct, status 3 distinct, created_at), `customers` (30k),
    `events` with a redundant and an unused index; hypopg created."""
    url = pg_cluster.create_database("advise_shop")
    with pg_cluster.connect("advise_shop") as con:
        con.execute("CREATE EXTENSION hypopg")
        con.execute("CREATE EXTENSION pg_stat_statements")
        con.execute("CREATE TABLE customers AS SELECT g AS id, 'c' || g AS name, g % 50 AS region "
                    "FROM generate_series(1, 30000) g")
        con.execute("ALTER TABLE customers ADD PRIMARY KEY (id)")
        con.execute("CREATE TABLE orders AS SELECT g AS id, g % 30000 + 1 AS customer_id, "
                    "(ARRAY['new','paid','shipped'])[g % 3 + 1] AS status, "
                    "timestamp '2026-01-01' + g * interval '1 minute' AS created_at, (g % 997) * 1.5 AS amount "
                    "FROM generate_series(1, 300000) g")
        con.execute("ALTER TABLE orders ADD PRIMARY KEY (id)")
        con.execute("CREATE TABLE events AS SELECT g AS id, g % 1000 AS kind, g % 7 AS source "
                    "FROM generate_series(1, 50000) g")
        con.execute("CREATE INDEX events_kind ON events (kind)")
        con.execute("CREATE INDEX events_kind_source ON events (kind, source)")
        con.execute("ANALYZE")
        con.execute("SELECT pg_stat_statements_reset()")
        for i in range(1, 6):
            con.execute("SELECT id, amount FROM orders WHERE customer_id = %s ORDER BY created_at DESC LIMIT 20", (i,))
            con.execute("SELECT c.name, o.amount FROM customers c JOIN orders o ON o.customer_id = c.id "
                        "WHERE c.region = %s AND o.created_at >= %s", (i, "2026-06-01"))
            con.execute("SELECT count(*) FROM orders WHERE status = %s", ("paid",))
            con.execute("UPDATE orders SET amount = amount WHERE customer_id = %s", (i,))
    return url


def test_workload_from_pg_stat_statements(shop_pg, pg_cluster):  # noqa: F811
    with pg_cluster.connect("advise_shop") as con:
        got = from_pg_stat_statements(con)
    texts = {s.text: s for s in got}
    lookup = "SELECT id, amount FROM orders WHERE customer_id = $1 ORDER BY created_at DESC LIMIT $2"
    assert lookup in texts and texts[lookup].calls == 5 and texts[lookup].source == "pg_stat_statements"
    assert "UPDATE orders SET amount = amount WHERE customer_id = $1" in texts
    assert not any(t.lstrip().upper().startswith(("CREATE", "ANALYZE", "ALTER")) for t in texts)
    assert all(s.days > 0 and s.total_ms > 0 for s in got)


def test_calls_a_day_right_after_a_reset_count_the_time_since_it():
    """pg_stat_statements counts since its reset: six minutes after one, an hour's floor on the span
    understated calls/day tenfold; the span is now the time since the reset (never under a minute; the
    floor is lifted here so a test need not wait one), bounded by two clocks. A cluster of its own: the
    reset is server-wide, and only a full one moves stats_reset."""
    import time

    from tests.pg import PgCluster, pg_bin
    if pg_bin() is None:
        pytest.skip("PostgreSQL binaries not installed")
    cluster = PgCluster().init()
    try:
        with cluster.connect() as con:
            con.execute("CREATE TABLE t AS SELECT g AS a FROM generate_series(1, 1000) g")
            con.execute("SELECT pg_stat_statements_reset()")
            reset_at = time.monotonic()
            for i in range(20):
                con.execute("SELECT count(*) FROM t WHERE a = %s", (i,))
            time.sleep(1.0)
            before = time.monotonic()
            got = {s.text: s for s in from_pg_stat_statements(con, min_days=0)}
            after = time.monotonic()
            floored = {s.text: s for s in from_pg_stat_statements(con)}
    finally:
        cluster.destroy()
    counted = got["SELECT count(*) FROM t WHERE a = $1"]
    assert counted.calls == 20
    assert (before - reset_at - 0.5) / 86400 <= counted.days <= (after - reset_at + 0.5) / 86400
    assert floored["SELECT count(*) FROM t WHERE a = $1"].days == 1 / (24 * 60)


def test_advise_postgres_with_hypopg(shop_pg):
    report = advise(shop_pg, settings=Settings(min_ms_per_day=0))
    assert report.method == "hypopg" and not report.failed
    by_table = {(r.table, r.columns): r for r in report.recommendations}
    # the lookup and the UPDATE's WHERE want (customer_id): with it the lookup sorts 10 rows before its
    # LIMIT, already cheap, so created_at does not earn a place; status (3 values) gets nothing, nor the
    # join, which reads a third of the orders by created_at whatever index it has
    assert list(by_table) == [("orders", ("customer_id",))]
    r = by_table["orders", ("customer_id",)]
    assert r.create_sql == 'CREATE INDEX CONCURRENTLY "ix_orders_customer_id" ON "public"."orders" ("customer_id")'
    assert r.method == "hypopg" and r.est_improvement_pct > 90 and len(r.queries) == 2
    assert "UPDATE orders SET amount = amount WHERE customer_id = $1" in r.queries
    assert r.time_saved_ms_per_day > 0 and r.calls_per_day > 0
    found = {(f.kind, f.index) for f in report.findings}
    assert ("duplicate", "events_kind") in found
    assert ("unused", "events_kind_source") in found
    assert not any(f.index.endswith("_pkey") for f in report.findings)


def test_advise_recommends_nothing_for_an_index_that_exists(shop_pg, pg_cluster):  # noqa: F811
    query = "SELECT * FROM customers WHERE id = $1"
    report = advise(shop_pg, [Statement(query, 1, 0.0, key=query)])
    assert report.recommendations == [] and report.analysed == 0


def test_advise_cli_json(shop_pg, tmp_path):
    q = "SELECT * FROM orders WHERE customer_id = 42"
    result = CliRunner().invoke(main, ["advise", "--db", shop_pg, "--query", q, "--json",
                                       "--store", str(tmp_path / "none.duckdb")])
    assert result.exit_code == 0, result.output
    out = json.loads(result.output)
    create = [o for o in out if o["kind"] == "create"]
    assert [(o["table"], o["columns"], o["method"], o["queries"]) for o in create] == [
        ("orders", ["customer_id"], "hypopg", [q])]
    assert create[0]["create_sql"].startswith("CREATE INDEX CONCURRENTLY") and create[0]["est_improvement_pct"] > 90
    assert {o["kind"] for o in out} == {"create", "unused", "duplicate"}


def test_advise_cli_nothing_worth_an_index(tmp_path):
    path = tmp_path / "small.db"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE t (id INTEGER PRIMARY KEY, a INTEGER)")
        con.executemany("INSERT INTO t (a) VALUES (?)", [(i,) for i in range(100)])
    sql_file = tmp_path / "queries.sql"
    sql_file.write_text("SELECT * FROM t WHERE a = 3;\nSELECT * FROM t WHERE id = 4;\n")
    result = CliRunner().invoke(main, ["advise", "--db", f"sqlite:///{path}", "--queries-file", str(sql_file),
                                       "--json", "--store", str(tmp_path / "none.duckdb")])
    assert result.exit_code == 0, result.output
    assert json.loads(result.output) == []
    human = CliRunner().invoke(main, ["advise", "--db", f"sqlite:///{path}", "--queries-file", str(sql_file),
                                      "--store", str(tmp_path / "none.duckdb")])
    assert human.exit_code == 0 and "No index is worth creating." in human.output
    # and why, statement by statement: (a) is tried and found cheap; (id) is the table's own key
    assert human.output.split("No index for 2 statements:\n")[1] == (
        "    SELECT * FROM t WHERE a = 3\n      already cheap: 100 rows read, under 10,000\n"
        "    SELECT * FROM t WHERE id = 4\n      already indexed: no column it filters, joins or sorts on lacks an index\n")


def test_advise_cli_unreachable_database_is_one_line(tmp_path):
    result = CliRunner().invoke(main, ["advise", "--db", f"sqlite:///{tmp_path / 'missing.db'}"])
    assert result.exit_code == 1 and "cannot advise on" in result.output and "Traceback" not in result.output
    result = CliRunner().invoke(main, ["advise", "--db", "mysql://root@127.0.0.1/test"])
    assert result.exit_code == 1 and "PostgreSQL and SQLite" in result.output


# -- the daemon stores each run ----------------------------------------------------------------

def test_daemon_stores_the_advice_of_each_run(shop_pg, tmp_path, monkeypatch):
    monkeypatch.setenv("PERFDECK_ADVISOR_MIN_MS_PER_DAY", "0")
    store = tmp_path / "perfdeck.duckdb"
    missing = f"sqlite:///{tmp_path / 'gone.db'}"
    collector = Collector(store, spool_dir=tmp_path / "spool", advise=[("shop", shop_pg), ("gone", missing)])
    collector.run_once()       # a database the advisor cannot reach is a stored error, not a failed tick
    with read(store) as con:
        runs = con.execute("SELECT target, method, statements > 0, error IS NULL FROM advisor_runs ORDER BY target").fetchall()
        advice = con.execute("SELECT kind, table_name, columns, statement, est_improvement_pct > 90 FROM index_advice "
                             "WHERE target = 'shop' AND kind = 'create'").fetchall()
        error = con.execute("SELECT error FROM advisor_runs WHERE target = 'gone'").fetchone()[0]
        verdicts = dict(con.execute("SELECT query, verdict || ': ' || detail FROM advisor_statements "
                                    "WHERE target = 'shop'").fetchall())
    assert runs == [("gone", None, None, False), ("shop", "hypopg", True, True)]
    assert advice == [("create", "orders", ["customer_id"],
                       'CREATE INDEX CONCURRENTLY "ix_orders_customer_id" ON "public"."orders" ("customer_id")', True)]
    assert "no SQLite database file" in error
    assert verdicts["UPDATE orders SET amount = amount WHERE customer_id = $1"].startswith(
        "create: orders (customer_id): ")
    assert verdicts["SELECT count(*) FROM orders WHERE status = $1"].startswith("none: no index cuts its cost by 50 %")
