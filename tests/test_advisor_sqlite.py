"""Index advisor on SQLite: candidates checked with SQLite's own planner on an in-memory copy of the
schema, against real database files (hundreds of thousands of rows, ANALYZEd), the demo's shop included."""
from __future__ import annotations

import hashlib
import sqlite3

import pytest

from collectors.advisor import Candidate, candidates
from collectors.advisor.sqlite_plan import check_select, duplicate_indexes, existing_indexes, validate


def C(table, *columns, schema=None):
    return Candidate(table, schema, tuple(columns))


def read_only(path) -> sqlite3.Connection:
    return sqlite3.connect(path.as_uri() + "?mode=ro", uri=True)


def advise(con, sql):
    return validate(con, sql, candidates(sql, "sqlite", existing_indexes(con)))


def digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


ROWS = "WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < {}) "


@pytest.fixture(scope="module")
def db(tmp_path_factory):
    """`items` (200k rows, `sku` indexed), `owners` (5k), `tiny` (100) and "Sales Orders" (200k)."""
    path = tmp_path_factory.mktemp("advisor") / "app.db"
    con = sqlite3.connect(path)
    con.executescript(f"""
        CREATE TABLE items (id INTEGER PRIMARY KEY, owner INT, sku INT, kind INT, grp INT, created_at INT, label TEXT);
        {ROWS.format(200_000)} INSERT INTO items
            SELECT n, n % 5000, n, n % 100, n / 100 % 100, n, 'item ' || n FROM g;
        CREATE INDEX items_sku ON items (sku);
        CREATE TABLE owners (id INTEGER PRIMARY KEY, name TEXT, region TEXT);
        {ROWS.format(5000)} INSERT INTO owners SELECT n, 'owner ' || n, 'r' || (n % 5) FROM g;
        CREATE TABLE tiny (id INTEGER PRIMARY KEY, owner INT);
        {ROWS.format(100)} INSERT INTO tiny SELECT n, n % 10 FROM g;
        CREATE TABLE "Sales Orders" (id INTEGER PRIMARY KEY, "CustomerId" INT, total REAL);
        {ROWS.format(200_000)} INSERT INTO "Sales Orders" SELECT n, n % 20000, n * 0.5 FROM g;
        ANALYZE;
    """)
    con.close()
    return path


# -- validate -----------------------------------------------------------------------------------

def test_equality(db):
    sql = "SELECT id, label FROM items WHERE owner = ?"
    with read_only(db) as con:
        advice = advise(con, sql)
    assert advice.best == C("items", "owner") and advice.method == "sqlite-plan"
    assert [t.candidate for t in advice.trials] == [C("items", "owner")]
    assert advice.reduction > 0.99


def test_in_list(db):
    with read_only(db) as con:
        advice = advise(con, "SELECT id, label FROM items WHERE owner IN (?, ?, ?)")
    assert advice.best == C("items", "owner") and advice.reduction > 0.99


def test_range(db):
    with read_only(db) as con:
        advice = advise(con, "SELECT id, label FROM items WHERE created_at >= ? AND created_at < ?")
    assert advice.best == C("items", "created_at") and advice.reduction > 0.8


def test_order_by_with_limit(db):
    with read_only(db) as con:
        advice = advise(con, "SELECT id, label FROM items ORDER BY created_at DESC LIMIT 20")
        assert advice.best == C("items", "created_at") and advice.reduction > 0.99
        # without the LIMIT every row is read anyway: an index only adds a lookup per row
        assert advise(con, "SELECT id, label FROM items ORDER BY created_at DESC").best is None


def test_join_gets_the_inner_tables_join_column(db):
    sql = "SELECT w.name, i.label FROM owners w JOIN items i ON i.owner = w.id WHERE w.region = ?"
    with read_only(db) as con:
        advice = advise(con, sql)
    # 1,000 owners of a region, 40 items each, instead of all 200,000 items
    assert advice.best == C("items", "owner") and advice.reduction > 0.75
    assert advice.skipped == (C("owners", "region"), C("owners", "region", "id"))   # 5,000 rows: a scan is cheap


def test_two_equality_columns(db):
    with read_only(db) as con:
        advice = advise(con, "SELECT id FROM items WHERE kind = ? AND grp = ?")
    # either column alone matches 2,000 rows, both together 20
    assert advice.best == C("items", "kind", "grp") and advice.reduction > 0.99


def test_two_columns_lead_with_the_equality(db):
    sql = "SELECT id, label FROM items WHERE created_at > ? AND kind = ?"
    with read_only(db) as con:
        found = candidates(sql, "sqlite", existing_indexes(con))
        assert found == [C("items", "kind"), C("items", "created_at"), C("items", "kind", "created_at")]
        advice = validate(con, sql, [*found, C("items", "created_at", "kind")])
    cost = {t.candidate.columns: t.cost for t in advice.trials}
    assert advice.best == C("items", "kind", "created_at")
    assert cost[("kind", "created_at")] < cost[("kind",)] < cost[("created_at", "kind")]


def test_tiny_table_gets_nothing(db):
    with read_only(db) as con:
        advice = advise(con, "SELECT * FROM tiny WHERE owner = ?")
    assert advice.best is None and advice.best_cost is None and advice.trials == ()
    assert advice.skipped == (C("tiny", "owner"),)


def test_existing_index_gets_nothing(db):
    sql = "SELECT id, label FROM items WHERE sku = ?"
    with read_only(db) as con:
        assert candidates(sql, "sqlite", existing_indexes(con)) == []
        # proposed anyway, a twin of the real index saves nothing
        advice = validate(con, sql, [C("items", "sku")])
    assert advice.best is None and advice.trials[0].cost == advice.base_cost


@pytest.mark.parametrize("sql", [
    "SELECT label FROM items WHERE owner = ?",
    "SELECT label FROM items WHERE owner = :owner",
    "SELECT label FROM items WHERE owner = ?1",
    "SELECT label FROM items WHERE owner = ? LIMIT ?",
])
def test_placeholders(db, sql):
    with read_only(db) as con:     # candidates() does not parse ?NNN: given here
        assert validate(con, sql, [C("items", "owner")]).best == C("items", "owner")


@pytest.mark.parametrize("sql", [
    'SELECT * FROM "Sales Orders" WHERE "CustomerId" = ?',
    'SELECT o.total FROM "Sales Orders" AS o WHERE o."CustomerId" = :customer',
])
def test_quoted_mixed_case_table(db, sql):
    with read_only(db) as con:
        advice = advise(con, sql)
    assert advice.best == C("Sales Orders", "CustomerId") and advice.reduction > 0.99


def test_a_table_or_column_the_catalogue_lacks_is_skipped(db):
    with read_only(db) as con:
        advice = validate(con, "SELECT * FROM items WHERE owner = ?",
                          [C("items", "no_such_column"), C("no_such_table", "owner"), C("items", "owner")])
    assert advice.skipped == (C("items", "no_such_column"), C("no_such_table", "owner"))
    assert advice.best == C("items", "owner")


@pytest.mark.parametrize("sql", [
    "DELETE FROM items WHERE id = 1",
    "SELECT 1; DELETE FROM items",
    "SELECT * FROM tiny; DROP TABLE items",
    "WITH gone AS (DELETE FROM items RETURNING id) SELECT * FROM gone",
    "INSERT INTO tiny SELECT * FROM tiny",
    "UPDATE items SET owner = 1",
    "SELECT * FROM items WHERE owner = ? AND kind = :kind",    # mixed placeholders: nothing to bind them to
])
def test_refuses_anything_but_a_single_select(db, sql):
    before = digest(db)
    with pytest.raises(ValueError):
        check_select(sql)
    with read_only(db) as con, pytest.raises(ValueError):
        validate(con, sql, [C("items", "owner")])
    assert digest(db) == before


def test_the_statement_never_runs_on_the_real_database(db):
    sql = "SELECT id, label FROM items WHERE owner = ? ORDER BY created_at"
    before, files = digest(db), sorted(db.parent.iterdir())
    ran = []
    with read_only(db) as con:
        con.set_trace_callback(ran.append)
        advice = advise(con, sql)
        assert con.total_changes == 0
    assert advice.best == C("items", "owner")
    # catalogue, statistics and samples only (pragma table functions trace their pragma as a comment)
    assert ran and all(s.startswith(("SELECT ", "-- PRAGMA ")) for s in ran)
    assert not any("WHERE owner = ?" in s or "EXPLAIN" in s for s in ran)
    assert digest(db) == before and sorted(db.parent.iterdir()) == files


# -- catalogue ----------------------------------------------------------------------------------

@pytest.fixture
def catalogue(tmp_path):
    path = tmp_path / "catalogue.db"
    con = sqlite3.connect(path)
    con.executescript(f"""
        CREATE TABLE t (id INTEGER PRIMARY KEY, a INT, b TEXT, c INT, email TEXT UNIQUE);
        CREATE INDEX t_expr ON t (a, lower(b), c);
        CREATE INDEX t_partial ON t (b) WHERE c > 0;
        CREATE INDEX t_c_a ON t (c, a);
        CREATE TABLE w (k1 INT, k2 INT, v TEXT, PRIMARY KEY (k1, k2)) WITHOUT ROWID;
        CREATE TABLE n (x TEXT PRIMARY KEY, y INT);
        CREATE TABLE d (id INTEGER PRIMARY KEY, a INT, b INT, c INT, u INT UNIQUE);
        {ROWS.format(20_000)} INSERT INTO d SELECT n, n % 7, n % 100, n, n FROM g;
        CREATE INDEX d_b ON d (b);
        CREATE INDEX d_b_c ON d (b, c);
        CREATE INDEX d_twin ON d (b, c);
        CREATE UNIQUE INDEX d_c_unique ON d (c);
        CREATE INDEX d_c_a ON d (c, a);
        CREATE INDEX d_u_a ON d (u, a);
        CREATE INDEX d_b_partial ON d (b) WHERE a > 0;
        CREATE INDEX d_a_nocase ON d (a COLLATE NOCASE);
        CREATE INDEX d_a_b ON d (a, b);
        CREATE TABLE "Sales Orders" ("CustomerId" INT, x INT);
        CREATE INDEX "By Customer, X" ON "Sales Orders" ("CustomerId", x);
    """)
    con.execute('CREATE INDEX "By ""Customer""" ON "Sales Orders" ("CustomerId")')
    con.close()
    return path


def test_existing_indexes(catalogue):
    with read_only(catalogue) as con:
        found = existing_indexes(con)
    # the rowid alias, the UNIQUE autoindex, an expression ends the usable prefix, the partial is left out
    assert found["t"] == [["id"], ["email"], ["a"], ["c", "a"]]
    assert found["w"] == [["k1", "k2"]]            # WITHOUT ROWID: its primary key is an autoindex
    assert found["n"] == [["x"]]                   # a TEXT primary key is an autoindex, not the rowid
    assert found["Sales Orders"] == [["CustomerId", "x"], ["CustomerId"]]      # in order of creation


def test_duplicate_indexes(catalogue):
    with read_only(catalogue) as con:
        found = {f.index: f for f in duplicate_indexes(con)}
    # not: d_c_unique (unique), d_u_a's autoindex (a constraint), d_b_partial, d_a_nocase (other collation)
    assert sorted(found) == ["By \"Customer\"", "d_b", "d_twin"]
    d_b = found["d_b"]
    assert (d_b.kind, d_b.schema, d_b.table, d_b.columns) == ("duplicate", "main", "d", ("b",))
    assert d_b.detail == "covered by d_b_c (b, c)" and d_b.size_bytes >= 4096
    assert d_b.drop_sql == 'DROP INDEX "main"."d_b"'
    assert found["d_twin"].detail == "covered by d_b_c (b, c)"
    assert found['By "Customer"'].drop_sql == 'DROP INDEX "main"."By ""Customer"""'


# -- the demo's shop ----------------------------------------------------------------------------

# the demo's statements as SQLAlchemy's sqlite driver sends them (`:cid` becomes `?`)
CUSTOMER_ORDERS = ("SELECT id, product_id, quantity, amount, status, created_at FROM orders"
                   " WHERE customer_id = ? ORDER BY created_at DESC")
SEARCH_V18 = ("SELECT p.id, p.name, p.price, count(o.id) AS sold FROM products p"
              " JOIN orders o ON o.product_id = p.id WHERE p.category = ? AND p.stock > 0"
              " GROUP BY p.id ORDER BY sold DESC LIMIT 20")
DAILY_REPORT = ("SELECT p.category, count(*), sum(o.amount) FROM orders o JOIN products p"
                " ON p.id = o.product_id GROUP BY p.category")
PRODUCT = "SELECT id, name, category, price, stock FROM products WHERE id = ?"


@pytest.fixture(scope="module")
def shop(tmp_path_factory):
    from collectors.demo.workload import open_database
    path = tmp_path_factory.mktemp("demo") / "shop.db"
    open_database(path).dispose()
    return path


@pytest.mark.parametrize("sql, index", [
    (CUSTOMER_ORDERS, C("orders", "customer_id")),
    (SEARCH_V18, C("orders", "product_id")),
    (DAILY_REPORT, None),                  # reads all of orders whatever the index
    (PRODUCT, None),                       # a primary key lookup
])
def test_demo_statements(shop, sql, index):
    with read_only(shop) as con:
        advice = advise(con, sql)
    assert advice.best == index
    if index:
        assert advice.reduction > 0.9


@pytest.mark.parametrize("sql, params, used", [
    (CUSTOMER_ORDERS, (42,), "SEARCH orders USING INDEX ix (customer_id=?)"),
    (SEARCH_V18, ("books",), "SEARCH o USING COVERING INDEX ix (product_id=?)"),
])
def test_demo_recommendation_is_used_once_created(shop, tmp_path, sql, params, used):
    with read_only(shop) as con:
        best = advise(con, sql).best
        copy = sqlite3.connect(tmp_path / "copy.db")
        con.backup(copy)
    plan = lambda: [row[3] for row in copy.execute("EXPLAIN QUERY PLAN " + sql, params)]  # noqa: E731
    assert used not in plan()
    copy.execute(f"CREATE INDEX ix ON {best.table} ({', '.join(best.columns)})")
    copy.execute("ANALYZE")
    assert used in plan()
    copy.close()
