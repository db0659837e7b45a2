"""Database actions against a real PostgreSQL (tests/pg.py, a database of this module's own) and real
SQLite files: what each statement did in the catalogue, what the audit log says, and that names the
catalogue does not know are refused before anything runs."""
from __future__ import annotations

import json
import re
import sqlite3

import pytest

from dashboard.actions import Aborted, InvalidInput, NotAuthorized, Progress, TargetUnavailable, make_preview, run_action
from dashboard.actions.database_actions import ALL_TABLES, Analyze, CreateIndex, DropIndex, ResetStatements, Vacuum
from dashboard.actions.framework import ActionError
from tests.helpers import OPERATOR, query
from tests.pg import pg_cluster, pg_cluster_no_pgss  # noqa: F401  (the session fixtures)

DB = "perfdeck_db_actions"


@pytest.fixture(scope="module")
def pg_db(pg_cluster):  # noqa: F811
    """A database of this module's own in the session cluster; tests create their own tables in it."""
    pg_cluster.create_database(DB)
    pg_cluster.execute("CREATE EXTENSION pg_stat_statements", dbname=DB)
    return pg_cluster


@pytest.fixture
def lite(tmp_path):
    sqlite3.connect(tmp_path / "app.sqlite").close()
    return tmp_path / "app.sqlite"


@pytest.fixture
def targets(monkeypatch, tmp_path, pg_db, lite):
    monkeypatch.setenv("PERFDECK_CONFIG", str(tmp_path / "no-such.toml"))
    monkeypatch.setenv("PERFDECK_DATABASE_URLS", f"pg={pg_db.url_for(DB)},lite=sqlite:///{lite}")
    return pg_db


@pytest.fixture
def act(migrated_store, operator):
    """Preview then run an action as the operator, auditing into the migrated store: (preview, result)."""
    def act(action, params, confirmation=None, progress=None):
        preview = make_preview(action, params, actor=OPERATOR)[1]
        return preview, run_action(action, params, preview, actor=operator, confirmation=confirmation,
                                   progress=progress, db=migrated_store)
    return act


def sql(cluster, *statements: str) -> list[tuple]:
    """Run the statements in this module's database; the rows of the last one."""
    return [cluster.execute(statement, dbname=DB) for statement in statements][-1]


def lite_sql(path, *statements: str) -> list[tuple]:
    """Run the statements on the SQLite file; the rows of the last one."""
    con = sqlite3.connect(path, isolation_level=None)
    try:
        return [con.execute(statement).fetchall() for statement in statements][-1]
    finally:
        con.close()


def refusal(action, params, error=InvalidInput) -> str:
    """The one line make_preview refuses `params` with."""
    with pytest.raises(error) as exc:
        make_preview(action, params, actor=OPERATOR)
    return str(exc.value)


def audit(store) -> list[tuple]:
    rows = query(store, "SELECT action, target, outcome, error, params, figures FROM action_audit ORDER BY id")
    return [(a, t, o, e, json.loads(p) if p else None, json.loads(f) if f else None) for a, t, o, e, p, f in rows]


def plan(cluster, statement: str) -> str:
    with cluster.connect(DB) as con:
        con.execute("SET max_parallel_workers_per_gather = 0")
        return con.execute("EXPLAIN (COSTS OFF) " + statement).fetchall()[0][0]


SERIES = "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {}) "   # SQLite rows 1..n


def test_analyze_one_postgres_table_then_the_whole_database(targets, act, migrated_store, operator):
    sql(targets, "CREATE TABLE an_one AS SELECT g AS id FROM generate_series(1, 1000) g",
        "CREATE TABLE an_two AS SELECT g AS id FROM generate_series(1, 300) g")
    last = "SELECT relname, last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname LIKE 'an\\_%' ORDER BY 1"
    assert sql(targets, last) == [("an_one", False), ("an_two", False)]
    # a preview is only good for the params it was made for
    one = {"target": "pg", "schema": "public", "table": "an_one"}
    with pytest.raises(InvalidInput, match=r"^the preview was made for other parameters \(or the catalogue changed\)"):
        run_action(Analyze(), {**one, "table": "an_two"}, make_preview(Analyze(), one, actor=OPERATOR)[1],
                   actor=operator, db=migrated_store)
    assert sql(targets, last) == [("an_one", False), ("an_two", False)]
    preview, result = act(Analyze(), one)
    assert preview.statements == ['ANALYZE "public"."an_one"']
    assert sql(targets, last) == [("an_one", True), ("an_two", False)]
    assert sql(targets, "SELECT reltuples::int FROM pg_class WHERE relname = 'an_one'") == [(1000,)]
    assert re.fullmatch(r"Analyzed table 'an_one' \(~[\d,]+ rows, \d+ KB\) in [\d.]+ m?s\.", result.summary)
    preview, _ = act(Analyze(), {**one, "table": ALL_TABLES})
    assert preview.statements == ["ANALYZE"]
    assert sql(targets, last) == [("an_one", True), ("an_two", True)]
    assert [row[1:5] for row in audit(migrated_store)] == [
        ("database:pg", "failed", "the preview was made for other parameters (or the catalogue changed): preview again",
         {**one, "table": "an_two"}),
        ("database:pg", "done", None, one), ("database:pg", "done", None, {"target": "pg", "schema": None, "table": None})]


def test_analyze_sqlite_fills_sqlite_stat1(targets, lite, act, migrated_store, operator):
    lite_sql(lite, "CREATE TABLE items (id INTEGER PRIMARY KEY, kind INTEGER)",
             SERIES.format(100) + "INSERT INTO items (kind) SELECT n % 2 FROM g", "CREATE INDEX ix_items_kind ON items (kind)")
    assert lite_sql(lite, "SELECT count(*) FROM sqlite_master WHERE name = 'sqlite_stat1'") == [(0,)]
    preview, _ = act(Analyze(), {"target": "lite", "schema": None, "table": "items"})
    assert preview.statements == ['ANALYZE "items"']
    assert preview.rows == [{"table": "items", "rows estimate": 100, "dead rows": None, "size bytes": 8192,
                             "last analyze": None, "last vacuum": None}]
    assert lite_sql(lite, "SELECT tbl, idx, stat FROM sqlite_stat1") == [("items", "ix_items_kind", "100 50")]
    preview = make_preview(Analyze(), {"target": "lite", "table": ALL_TABLES}, actor=OPERATOR)[1]
    lite.unlink()                     # a missing file is an unreachable target, and is never created
    with pytest.raises(TargetUnavailable) as exc:
        run_action(Analyze(), {"target": "lite", "table": ALL_TABLES}, preview, actor=operator, db=migrated_store)
    assert str(exc.value) == f"database 'lite' (sqlite:///{lite}) is unreachable: unable to open database file"
    assert not lite.exists() and [row[2] for row in audit(migrated_store)] == ["done", "failed"]


def test_vacuum_postgres_table_and_database(targets, act, migrated_store):
    sql(targets, "CREATE TABLE vac_t AS SELECT g AS id, repeat('x', 100) AS pad FROM generate_series(1, 20000) g",
        "DELETE FROM vac_t WHERE id % 2 = 0")
    stamps = "SELECT last_vacuum IS NOT NULL, last_analyze IS NOT NULL FROM pg_stat_user_tables WHERE relname = 'vac_t'"
    assert sql(targets, stamps) == [(False, False)]
    preview, result = act(Vacuum(), {"target": "pg", "schema": "public", "table": "vac_t"})
    assert preview.statements == ['VACUUM (ANALYZE) "public"."vac_t"']
    assert sql(targets, stamps) == [(True, True)]
    assert sql(targets, "SELECT reltuples::int FROM pg_class WHERE relname = 'vac_t'") == [(10000,)]
    assert result.figures["size_bytes_after"] == sql(targets, "SELECT pg_total_relation_size('vac_t')")[0][0]
    preview, _ = act(Vacuum(), {"target": "pg", "schema": "public", "table": None})
    assert preview.statements == ["VACUUM (ANALYZE)"]
    assert [row[2] for row in audit(migrated_store)] == ["done", "done"]


def test_vacuum_sqlite_gives_back_the_free_pages(targets, lite, act, migrated_store):
    lite_sql(lite, "CREATE TABLE keep (id INTEGER PRIMARY KEY, body BLOB)", "CREATE TABLE junk (id INTEGER PRIMARY KEY, b)",
             "INSERT INTO keep (body) VALUES (randomblob(500)), (randomblob(500))",
             SERIES.format(2000) + "INSERT INTO junk (b) SELECT randomblob(1000) FROM g", "DELETE FROM junk")
    page_size, free = lite_sql(lite, "SELECT page_size, freelist_count FROM pragma_page_size, pragma_freelist_count")[0]
    size_before = lite.stat().st_size
    assert free > 400
    preview, result = act(Vacuum(), {"target": "lite", "table": "keep"})     # the table is ignored: the whole file
    assert preview.statements == ["VACUUM", "PRAGMA optimize"]
    assert preview.rows == [{"file bytes": size_before, "free pages": free, "page size": page_size,
                             "reclaimable bytes": free * page_size}]
    assert lite_sql(lite, "PRAGMA freelist_count") == [(0,)]
    assert size_before - lite.stat().st_size == free * page_size
    assert (result.figures["size_bytes_before"], result.figures["size_bytes_after"]) == (size_before, lite.stat().st_size)
    assert audit(migrated_store)[0][:5] == ("database.vacuum", "database:lite", "done", None,
                                           {"target": "lite", "schema": None, "table": None})


def test_reset_pg_stat_statements_forgets_every_entry(targets, act, migrated_store, operator):
    sql(targets, "CREATE TABLE IF NOT EXISTS pgss_t (id int)", "SELECT * FROM pgss_t WHERE id = 1")
    make_preview(ResetStatements(), {"target": "pg"}, actor=OPERATOR)    # our own catalogue queries get their entries once
    entries = sql(targets, "SELECT count(*) FROM pg_stat_statements")[0][0]    # the action's count query too
    preview = make_preview(ResetStatements(), {"target": "pg"}, actor=OPERATOR)[1]
    assert (preview.count, preview.confirm, preview.statements) == (entries, "pg", ["SELECT pg_stat_statements_reset()"])
    with pytest.raises(NotAuthorized, match="type 'pg' to confirm"):
        run_action(ResetStatements(), {"target": "pg"}, preview, actor=operator, confirmation="yes", db=migrated_store)
    assert sql(targets, "SELECT count(*) FROM pg_stat_statements WHERE query LIKE '%pgss_t%'") == [(2,)]
    result = run_action(ResetStatements(), {"target": "pg"}, preview, actor=operator, confirmation="pg", db=migrated_store)
    # all that is left is the reset call itself, recorded as it finished, marked as perfdeck's own
    assert sql(targets, "SELECT query FROM pg_stat_statements") == [
        ("/* perfdeck dashboard */ SELECT pg_stat_statements_reset()",)]
    assert result.figures == {"entries_before": entries + 1}    # + the count the test ran after the preview
    assert [row[2:4] for row in audit(migrated_store)] == [("refused", "confirmation text did not match"), ("done", None)]


def test_create_index_concurrently_turns_a_seq_scan_into_an_index_scan(targets, act, migrated_store):
    sql(targets, "CREATE TABLE big AS SELECT g id, g * 7 v, md5(g::text) pad FROM generate_series(1, 100000) g", "ANALYZE big")
    assert plan(targets, "SELECT * FROM big WHERE v = 4242") == "Seq Scan on big"
    params = {"target": "pg", "schema": "public", "table": "big", "columns": ["v"], "unique": False, "name": None}
    preview, result = act(CreateIndex(), params)
    assert preview.statements == ['CREATE INDEX CONCURRENTLY "ix_big_v" ON "public"."big" ("v")']
    table_bytes = sql(targets, "SELECT pg_total_relation_size('big') - pg_relation_size('ix_big_v')")[0][0]
    assert preview.rows == [{"table": "big", "rows estimate": 100000, "size bytes": table_bytes}]
    assert plan(targets, "SELECT * FROM big WHERE v = 4242") == "Index Scan using ix_big_v on big"
    assert sql(targets, "SELECT indisvalid, pg_relation_size(indexrelid) FROM pg_index "
                        "WHERE indexrelid = 'ix_big_v'::regclass") == [(True, result.figures["index_bytes"])]
    assert audit(migrated_store) == [("database.create_index", "database:pg", "done", None, {**params, "name": "ix_big_v"},
                                      result.figures)]
    # the same leading column again: refused, naming the index that covers it
    assert refusal(CreateIndex(), params) == "index 'ix_big_v' on (v) already covers (v)"


def test_create_index_on_a_mixed_case_table_in_a_mixed_case_schema(targets, act):
    sql(targets, 'CREATE SCHEMA "Sales"', 'CREATE TABLE "Sales"."Orders" ("Id" int PRIMARY KEY, "CustomerId" int, "Region" text)',
        """INSERT INTO "Sales"."Orders" SELECT g, g % 50, 'r' || g % 3 FROM generate_series(1, 1000) g""")
    params = {"target": "pg", "schema": "Sales", "table": "Orders", "columns": ["CustomerId", "Region"]}
    preview, _ = act(CreateIndex(), params)
    assert preview.statements == [
        'CREATE INDEX CONCURRENTLY "ix_Orders_CustomerId_Region" ON "Sales"."Orders" ("CustomerId", "Region")']
    assert sql(targets, "SELECT indexdef FROM pg_indexes WHERE schemaname = 'Sales' AND indexname LIKE 'ix%'") == [
        ('CREATE INDEX "ix_Orders_CustomerId_Region" ON "Sales"."Orders" USING btree ("CustomerId", "Region")',)]
    assert refusal(CreateIndex(), {**params, "columns": ["CustomerId"]}) == \
        "index 'ix_Orders_CustomerId_Region' on (CustomerId, Region) already covers (CustomerId)"
    # a different leading column is no duplicate; a unique index is not covered by a plain one
    assert make_preview(CreateIndex(), {**params, "columns": ["Region"]}, actor=OPERATOR)[0]["name"] == "ix_Orders_Region"
    assert make_preview(CreateIndex(), {**params, "unique": True}, actor=OPERATOR)[1].statements == [
        'CREATE UNIQUE INDEX CONCURRENTLY "ix_Orders_CustomerId_Region_2" ON "Sales"."Orders" ("CustomerId", "Region")']


def test_names_with_quotes_percent_signs_and_question_marks_are_identifiers(targets, lite, act, migrated_store):
    """Shown statements are plain SQL; what runs creates exactly the names shown, on both drivers."""
    sql(targets, 'CREATE TABLE "odd ""t"" 100%" ("a%s" int, "b?" int)')
    lite_sql(lite, 'CREATE TABLE "odd ""t"" 100%" ("a%s" INTEGER, "b?" INTEGER)')
    for target, prefix in (("pg", '"public".'), ("lite", "")):
        preview, _ = act(CreateIndex(), {"target": target, "schema": "public", "table": 'odd "t" 100%',
                                         "columns": ["a%s", "b?"]})
        concurrently = "CONCURRENTLY " if target == "pg" else ""
        assert preview.statements == [
            f'CREATE INDEX {concurrently}"ix_odd ""t"" 100%_a%s_b?" ON {prefix}"odd ""t"" 100%" ("a%s", "b?")']
        # found by its exact name in the catalogue: the index was created under the name shown
        name = 'ix_odd "t" 100%_a%s_b?'
        preview, _ = act(DropIndex(), {"target": target, "schema": "public", "index": name}, confirmation=name)
        assert preview.statements == [f'DROP INDEX {concurrently}{prefix}"ix_odd ""t"" 100%_a%s_b?"']
    assert sql(targets, "SELECT count(*) FROM pg_class WHERE relname LIKE 'ix_odd%'") == [(0,)]
    assert [row[2] for row in audit(migrated_store)] == ["done"] * 4


def test_create_index_refuses_bad_definitions_and_picks_free_names(targets):
    sql(targets, "CREATE TABLE defs (a int, b int, c int, d int)")
    base = {"target": "pg", "schema": "public", "table": "defs"}
    refusals = [
        ({"columns": []}, "choose 1 to 3 columns"), ({"columns": ["a", "nope"]}, "table 'defs' has no column 'nope'"),
        ({"columns": ["a", "b", "c", "d"]}, "choose 1 to 3 columns"), ({"columns": ["a", "a"]}, "a column is named twice: a, a"),
        ({"columns": ["a"], "unique": "yes"}, "unique must be true or false"),
        ({"columns": ["a"], "name": "defs"}, "the name 'defs' is already taken in schema 'public' of database 'pg'"),
        ({"columns": ["a"], "table": "nope"}, "no table 'nope' in schema 'public' of database 'pg'"),
        ({"columns": ["a"], "schema": "nope"}, "no table 'defs' in schema 'nope' of database 'pg'"),
    ]
    assert [refusal(CreateIndex(), {**base, **change}) for change, _ in refusals] == [m for _, m in refusals]
    assert sql(targets, "SELECT count(*) FROM pg_indexes WHERE tablename = 'defs'") == [(0,)]
    long = "t" * 60                  # ix_<table>_<cols> is trimmed to 63 bytes, then _2 while taken
    sql(targets, f"CREATE TABLE {long} (alpha int, beta int)")
    params = {**base, "table": long}
    assert make_preview(CreateIndex(), {**params, "columns": ["alpha", "beta"]}, actor=OPERATOR)[0]["name"] == "ix_" + long
    sql(targets, f"CREATE TABLE ix_{long} (x int)")
    assert make_preview(CreateIndex(), {**params, "columns": ["alpha"]}, actor=OPERATOR)[0]["name"] == f"ix_{long[2:]}_2"


def test_a_failed_or_aborted_create_index_leaves_no_index_behind(targets, act, migrated_store):
    sql(targets, "CREATE TABLE dups AS SELECT g AS id, g % 10 AS v FROM generate_series(1, 1000) g")
    with pytest.raises(ActionError) as exc:
        act(CreateIndex(), {"target": "pg", "schema": "public", "table": "dups", "columns": ["v"], "unique": True})
    message = str(exc.value)
    assert message.startswith("creating index 'ix_dups_v' failed: database 'pg': could not create unique index "
                              '"ix_dups_v" (Key (v)=(')
    assert message.endswith("is duplicated.); the invalid index it left behind was dropped")
    assert sql(targets, "SELECT count(*) FROM pg_class WHERE relname = 'ix_dups_v'") == [(0,)]
    assert audit(migrated_store)[0][:4] == ("database.create_index", "database:pg", "failed", message)
    progress = Progress()
    progress.abort()                 # Abort clicked: it lands before the first statement, nothing runs
    with pytest.raises(Aborted):
        act(CreateIndex(), {"target": "pg", "schema": "public", "table": "dups", "columns": ["v"]}, progress=progress)
    assert sql(targets, "SELECT count(*) FROM pg_class WHERE relname = 'ix_dups_v'") == [(0,)]
    assert audit(migrated_store)[1][2:4] == ("aborted", "aborted after 0 of 1")


def test_create_and_drop_an_index_on_sqlite(targets, lite, act, migrated_store):
    lite_sql(lite, "CREATE TABLE events (id INTEGER PRIMARY KEY, kind TEXT, at INTEGER, code TEXT UNIQUE)",
             SERIES.format(5000) + "INSERT INTO events (kind, at, code) SELECT 'k' || (n % 20), n, 'c' || n FROM g")
    explain = "EXPLAIN QUERY PLAN SELECT * FROM events WHERE kind = 'k3'"
    assert lite_sql(lite, explain)[0][3] == "SCAN events"
    preview, result = act(CreateIndex(), {"target": "lite", "table": "events", "columns": ["kind", "at"]})
    assert preview.statements == ['CREATE INDEX "ix_events_kind_at" ON "events" ("kind", "at")']
    assert lite_sql(lite, explain)[0][3] == "SEARCH events USING INDEX ix_events_kind_at (kind=?)"
    assert [(result.figures["index_bytes"],)] == lite_sql(lite, "SELECT sum(pgsize) FROM dbstat WHERE name = 'ix_events_kind_at'")
    assert DropIndex().fields()[1].options({"target": "lite"}) is None       # no schema on SQLite
    assert DropIndex().fields()[2].options({"target": "lite"}) == ["ix_events_kind_at"]
    assert refusal(DropIndex(), {"target": "lite", "index": "sqlite_autoindex_events_1"}) == \
        "index 'sqlite_autoindex_events_1' backs the unique constraint of events: it cannot be dropped on its own"
    preview, _ = act(DropIndex(), {"target": "lite", "index": "ix_events_kind_at"}, confirmation="ix_events_kind_at")
    assert preview.statements == ['DROP INDEX "ix_events_kind_at"']
    assert preview.rows[0]["definition"] == "CREATE INDEX \"ix_events_kind_at\" ON \"events\" (\"kind\", \"at\")"
    assert lite_sql(lite, "SELECT name FROM sqlite_master WHERE type = 'index'") == [("sqlite_autoindex_events_1",)]
    assert [row[2] for row in audit(migrated_store)] == ["done", "done"]


def test_drop_index_refuses_a_primary_key_and_drops_a_plain_index(targets, migrated_store, operator):
    sql(targets, "CREATE TABLE dt (id int PRIMARY KEY, v int, code text UNIQUE)", "CREATE INDEX ix_drop_v ON dt (v)")
    droppable = DropIndex().fields()[2].options
    for index, constraint in (("dt_pkey", "primary key"), ("dt_code_key", "unique constraint")):
        assert refusal(DropIndex(), {"target": "pg", "schema": "public", "index": index}) == \
            f'index {index!r} backs the {constraint} "{index}": it cannot be dropped on its own'
        assert index not in droppable({"target": "pg", "schema": "public"})
    assert "ix_drop_v" in droppable({"target": "pg", "schema": "public"})
    params = {"target": "pg", "schema": "public", "index": "ix_drop_v"}
    preview = make_preview(DropIndex(), params, actor=OPERATOR)[1]
    assert (preview.statements, preview.confirm) == (['DROP INDEX CONCURRENTLY "public"."ix_drop_v"'], "ix_drop_v")
    size = sql(targets, "SELECT pg_relation_size('ix_drop_v')")[0][0]
    assert (preview.rows[0]["definition"], preview.rows[0]["size bytes"]) == (
        "CREATE INDEX ix_drop_v ON public.dt USING btree (v)", size)
    with pytest.raises(NotAuthorized):
        run_action(DropIndex(), params, preview, actor=operator, confirmation="dt", db=migrated_store)
    assert sql(targets, "SELECT count(*) FROM pg_class WHERE relname = 'ix_drop_v'") == [(1,)]
    result = run_action(DropIndex(), params, preview, actor=operator, confirmation="ix_drop_v", db=migrated_store)
    assert sql(targets, "SELECT indexname FROM pg_indexes WHERE tablename = 'dt' ORDER BY 1") == [("dt_code_key",), ("dt_pkey",)]
    assert result.figures["index_bytes_freed"] == size
    assert [row[2:5] for row in audit(migrated_store)] == [
        ("refused", "confirmation text did not match", params), ("done", None, params)]


def test_injection_attempts_are_refused_and_nothing_runs(targets, lite, migrated_store, operator):
    sql(targets, "CREATE TABLE orders (id int PRIMARY KEY, v int)", "CREATE INDEX ix_orders_v ON orders (v)",
        "INSERT INTO orders SELECT g, g FROM generate_series(1, 10) g")
    attempts = [
        (Analyze(), {"target": "pg", "schema": "public", "table": "orders; DROP TABLE orders"},
         "no table 'orders; DROP TABLE orders' in schema 'public' of database 'pg'"),
        (Vacuum(), {"target": "pg", "schema": 'public"; DROP TABLE orders; --', "table": "orders"},
         "no table 'orders' in schema 'public\"; DROP TABLE orders; --' of database 'pg'"),
        (CreateIndex(), {"target": "pg", "schema": "public", "table": "orders", "columns": ["id) --"]},
         "table 'orders' has no column 'id) --'"),
        (CreateIndex(), {"target": "pg", "table": "orders", "columns": ["v"], "name": 'ix"; DROP TABLE orders; --'},
         "index name 'ix\"; DROP TABLE orders; --': use letters, digits and _ (at most 63)"),
        (DropIndex(), {"target": "pg", "schema": "public", "index": 'ix_orders_v"; DROP TABLE orders; --'},
         "no index 'ix_orders_v\"; DROP TABLE orders; --' in schema 'public' of database 'pg'"),
        (Analyze(), {"target": "lite", "table": "x\x00y"}, "table 'x\\x00y' is not a name"),
        (Analyze(), {"target": "nope", "table": "orders"}, "no database named 'nope' is configured; configured: lite, pg"),
        (Analyze(), {"target": "pg=postgresql://x"}, "no database named 'pg=postgresql://x' is configured; configured: lite, pg"),
    ]
    good = make_preview(Analyze(), {"target": "pg", "schema": "public", "table": "orders"}, actor=OPERATOR)[1]
    for action, params, message in attempts:
        assert refusal(action, params) == message
        with pytest.raises(InvalidInput):             # run with someone else's preview: refused and audited
            run_action(action, params, good, actor=operator, db=migrated_store)
    assert [row[2:4] for row in audit(migrated_store)] == [("invalid", message) for _, _, message in attempts]
    assert sql(targets, "SELECT count(*), (SELECT count(*) FROM pg_indexes WHERE tablename = 'orders') FROM orders") == [(10, 2)]
    assert sql(targets, "SELECT count(*) FROM pg_stat_statements WHERE query ILIKE '%drop table%'") == [(0,)]


def test_unsupported_dialects_missing_pg_stat_statements_and_plain_urls(targets, monkeypatch, lite,
                                                                      pg_cluster_no_pgss):  # noqa: F811
    bare = targets.create_database("perfdeck_db_actions_bare")                 # no pg_stat_statements in it
    plain = f"postgresql://postgres@127.0.0.1:{targets.port}/{DB}"             # no driver named: psycopg 3 it is
    monkeypatch.setenv("PERFDECK_DATABASE_URLS", f"my=mysql+pymysql://u@127.0.0.1/shop,lite=sqlite:///{lite},"
                                                 f"pg={plain},bare={bare},unloaded={pg_cluster_no_pgss.url}")
    assert make_preview(Analyze(), {"target": "pg", "table": None}, actor=OPERATOR)[1].statements == ["ANALYZE"]
    assert refusal(Analyze(), {"target": "my", "table": "orders"}) == "Analyze is not supported for mysql (database 'my')"
    assert refusal(ResetStatements(), {"target": "lite"}) == \
        "Reset pg_stat_statements is not supported for sqlite (database 'lite')"
    assert refusal(ResetStatements(), {"target": "bare"}) == "pg_stat_statements is not installed in database 'bare'"
    assert refusal(ResetStatements(), {"target": "unloaded"}, ActionError) == \
        "database 'unloaded': pg_stat_statements must be loaded via shared_preload_libraries"
    assert Analyze().fields()[0].options({}) == ["lite", "pg", "bare", "unloaded"]
    assert ResetStatements().fields()[0].options({}) == ["pg", "bare", "unloaded"]
    monkeypatch.setenv("PERFDECK_DATABASE_URLS", f"lite=sqlite:///{lite}")
    assert Analyze().available() is None
    assert ResetStatements().available() == (
        "Reset pg_stat_statements needs a postgresql database: add a [[database]] with a name and url to "
        "perfdeck.toml, or set PERFDECK_DATABASE_URLS=name=url")


def test_a_database_stopped_mid_action_fails_cleanly_and_is_audited(targets, migrated_store, operator):
    sql(targets, "CREATE TABLE mid AS SELECT g AS id, g AS v FROM generate_series(1, 1000) g")
    params = {"target": "pg", "schema": "public", "table": "mid", "columns": ["v"]}
    preview = make_preview(CreateIndex(), params, actor=OPERATOR)[1]
    stopped = []

    def stop_server(progress):        # called just before the CREATE INDEX statement is sent
        if not stopped:
            stopped.append(progress.note)
            targets.stop()
    try:
        with pytest.raises(TargetUnavailable) as exc:
            run_action(CreateIndex(), params, preview, actor=operator, db=migrated_store, progress=Progress(stop_server))
        assert stopped == ['CREATE INDEX CONCURRENTLY "ix_mid_v" ON "public"."mid" ("v")']
        message = str(exc.value)
        assert message.startswith("creating index 'ix_mid_v' failed: database 'pg' (") and "went away" in message
        assert message.endswith('once the database is back run DROP INDEX CONCURRENTLY IF EXISTS "public"."ix_mid_v"')
        assert refusal(Analyze(), {"target": "pg", "table": "mid"}, TargetUnavailable).startswith(
            f"database 'pg' (postgresql+psycopg://postgres@127.0.0.1:{targets.port}/{DB}) is unreachable: ")
    finally:
        targets.start()
    assert audit(migrated_store)[0][2:4] == ("failed", message)
    assert sql(targets, "SELECT count(*) FROM pg_class WHERE relname = 'ix_mid_v'") == [(0,)]


def test_fields_offer_what_the_catalogue_holds(targets, lite):
    sql(targets, "CREATE SCHEMA IF NOT EXISTS fld", 'CREATE TABLE fld.f_one (a int, "B" int)')
    lite_sql(lite, "CREATE TABLE lt (x INTEGER, y TEXT)")
    assert [f.name for f in CreateIndex().fields()] == ["target", "schema", "table", "columns", "unique", "name"]
    target, schema, table, cols = CreateIndex().fields()[:4]
    assert target.options({}) == ["pg", "lite"]
    assert schema.options({"target": "pg"})[0] == "public" and "fld" in schema.options({"target": "pg"})
    assert schema.options({"target": "lite"}) is None
    assert table.options({"target": "pg", "schema": "fld"}) == ["f_one"]
    assert cols.options({"target": "pg", "schema": "fld", "table": "f_one"}) == ["a", "B"]
    assert cols.options({"target": "lite", "table": "lt"}) == ["x", "y"]
    assert Analyze().fields()[2].options({"target": "lite"}) == [ALL_TABLES, "lt"]
    assert Vacuum().fields()[2].options({"target": "lite"}) is None       # SQLite vacuums the whole file
    assert Vacuum().fields()[2].options({"target": "pg", "schema": "fld"}) == [ALL_TABLES, "f_one"]
