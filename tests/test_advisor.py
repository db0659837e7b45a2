"""Index advisor: candidates parsed from SQL text (pure functions, nothing executed), then checked
with hypothetical indexes on a real PostgreSQL with hypopg."""
from __future__ import annotations

import pytest

from collectors.advisor import Candidate, TableUse, candidates, columns_used


def C(table, *columns, schema=None):
    return Candidate(table, schema, tuple(columns))


# -- columns_used / candidates ------------------------------------------------------------------

def test_equality():
    sql = "SELECT id, total FROM orders WHERE customer_id = 42"
    assert columns_used(sql, "postgres") == [TableUse("orders", None, equality=["customer_id"])]
    assert candidates(sql, "postgres", {}) == [C("orders", "customer_id")]


def test_in_list_is_equality():
    sql = "SELECT * FROM orders WHERE status IN ('new', 'paid')"
    assert columns_used(sql, "postgres") == [TableUse("orders", None, equality=["status"])]
    assert candidates(sql, "postgres", {}) == [C("orders", "status")]


def test_range_both_directions_and_between():
    sql = "SELECT * FROM events WHERE 100 < ts AND amount BETWEEN 1 AND 5"
    assert columns_used(sql, "postgres") == [TableUse("events", None, range=["ts", "amount"])]
    # two range columns make no two-column candidate: only the first of them could use the index as a range
    assert candidates(sql, "postgres", {}) == [C("events", "ts"), C("events", "amount")]


def test_order_by_with_limit():
    sql = "SELECT * FROM events ORDER BY created_at DESC LIMIT 20"
    assert columns_used(sql, "postgres") == [TableUse("events", None, order=["created_at"])]
    assert candidates(sql, "postgres", {}) == [C("events", "created_at")]


def test_join_marks_both_sides_through_aliases():
    sql = ("SELECT o.id, c.name FROM orders o JOIN customers AS c ON c.id = o.customer_id "
           "WHERE c.country = 'FR'")
    assert columns_used(sql, "postgres") == [
        TableUse("orders", None, join=["customer_id"]),
        TableUse("customers", None, equality=["country"], join=["id"]),
    ]
    assert candidates(sql, "postgres", {}) == [
        C("orders", "customer_id"), C("customers", "country"), C("customers", "id"),
        C("customers", "country", "id"),
    ]


def test_join_using():
    sql = "SELECT * FROM orders JOIN payments USING (order_id)"
    assert columns_used(sql, "postgres") == [
        TableUse("orders", None, join=["order_id"]), TableUse("payments", None, join=["order_id"]),
    ]


def test_two_column_order_equality_first_then_range_then_order():
    sql = "SELECT * FROM events WHERE created_at > now() - interval '1 day' AND tenant_id = 7 ORDER BY score"
    assert candidates(sql, "postgres", {}) == [
        C("events", "tenant_id"), C("events", "created_at"), C("events", "score"),
        C("events", "tenant_id", "created_at"), C("events", "tenant_id", "score"),
    ]


def test_two_equality_columns_give_one_pair_in_appearance_order():
    sql = "SELECT * FROM t WHERE a = 1 AND b = 2"
    assert candidates(sql, "postgres", {}) == [C("t", "a"), C("t", "b"), C("t", "a", "b")]


def test_existing_index_covers_leading_columns():
    sql = "SELECT * FROM t WHERE a = 1 AND b = 2"
    # (a, b) covers (a) and (a, b); (b) and its pairs stay
    assert candidates(sql, "postgres", {"t": [["a", "b"]]}) == [C("t", "b")]
    # an index on (b) alone covers (b) but not (a, b)
    assert candidates(sql, "postgres", {"t": [["b"]]}) == [C("t", "a"), C("t", "a", "b")]


def test_normalized_postgres_statement():
    sql = "SELECT * FROM orders WHERE customer_id = $1 AND created_at >= $2 ORDER BY created_at LIMIT $3"
    assert columns_used(sql, "postgres") == [
        TableUse("orders", None, equality=["customer_id"], range=["created_at"], order=["created_at"]),
    ]
    assert candidates(sql, "postgres", {}) == [
        C("orders", "customer_id"), C("orders", "created_at"), C("orders", "customer_id", "created_at"),
    ]


def test_normalized_sqlite_statement():
    sql = "SELECT * FROM jobs WHERE queue = ? AND state IN (?, ?)"
    assert candidates(sql, "sqlite", {}) == [C("jobs", "queue"), C("jobs", "state"), C("jobs", "queue", "state")]


def test_schema_qualified_and_quoted_mixed_case():
    sql = ('SELECT * FROM "Sales"."Orders" AS o JOIN public.customers c ON c.id = o."CustomerId" '
           'WHERE o."Region" = $1')
    assert columns_used(sql, "postgres") == [
        TableUse("Orders", "Sales", equality=["Region"], join=["CustomerId"]),
        TableUse("customers", "public", join=["id"]),
    ]
    existing = {"public.customers": [["id"]], "Sales.Orders": [["Region", "CustomerId"]]}
    assert candidates(sql, "postgres", existing) == [C("Orders", "CustomerId", schema="Sales")]


def test_unquoted_names_fold_to_lower_case():
    assert columns_used("SELECT * FROM Orders WHERE Status = 1", "postgres") == [
        TableUse("orders", None, equality=["status"])]


def test_update_and_delete_where():
    assert candidates("UPDATE jobs SET state = 'done' WHERE id = $1", "postgres", {}) == [C("jobs", "id")]
    assert candidates("DELETE FROM sessions WHERE expires_at < ?", "sqlite", {}) == [C("sessions", "expires_at")]


def test_or_and_ambiguous_columns_are_left_out():
    # under OR no single index answers the predicate; `x` could belong to either table
    sql = "SELECT * FROM a JOIN b ON a.id = b.a_id WHERE a.k = 1 OR a.m = 2 AND x = 3"
    assert candidates(sql, "postgres", {}) == [C("a", "id"), C("b", "a_id")]


def test_subquery_is_its_own_scope_and_ctes_are_not_tables():
    sql = ("WITH recent AS (SELECT user_id FROM logins WHERE day >= $1) "
           "SELECT * FROM users u WHERE u.id IN (SELECT user_id FROM recent) AND u.plan = 'pro'")
    assert columns_used(sql, "postgres") == [
        TableUse("users", None, equality=["id", "plan"]), TableUse("logins", None, range=["day"]),
    ]


def test_refuses_bad_input():
    with pytest.raises(ValueError):
        columns_used("SELECT 1; SELECT 2", "postgres")
    with pytest.raises(ValueError):
        columns_used("CREATE TABLE t (a int)", "postgres")
    with pytest.raises(ValueError):
        columns_used("SELECT * FROM t", "mysql")


# -- hypopg validation on a real PostgreSQL ------------------------------------------------------

from collectors.advisor.hypopg import check_select, create_index_statement, validate
from tests.pg import pg_cluster  # noqa: F401  (the session fixture)


@pytest.fixture(scope="module")
def advisor_db(pg_cluster):  # noqa: F811
    """`items` (200k rows, `sku` indexed, `owner` not), `tiny` (100 rows) and "Sales"."Orders" (200k rows)."""
    pg_cluster.create_database("advisor")
    with pg_cluster.connect("advisor") as con:
        con.execute("CREATE EXTENSION hypopg")
        con.execute("CREATE TABLE items AS SELECT g AS id, g % 5000 AS owner, g AS sku, md5(g::text) AS label "
                    "FROM generate_series(1, 200000) g")
        con.execute("CREATE INDEX items_sku ON items (sku)")
        con.execute("CREATE TABLE tiny AS SELECT g AS id, g % 10 AS owner FROM generate_series(1, 100) g")
        con.execute('CREATE SCHEMA "Sales"')
        con.execute('CREATE TABLE "Sales"."Orders" AS SELECT g AS id, g % 20000 AS "CustomerId" '
                    "FROM generate_series(1, 200000) g")
        con.execute("ANALYZE")
    return pg_cluster


def _hypothetical_indexes(con) -> int:
    return con.execute("SELECT count(*) FROM hypopg_list_indexes").fetchone()[0]


def test_equality_query_gets_its_index(advisor_db):
    sql = "SELECT id, label FROM items WHERE owner = 42"
    with advisor_db.connect("advisor") as con:
        advice = validate(con, sql, candidates(sql, "postgres", {"items": [["sku"]]}))
        assert advice.best == C("items", "owner")
        assert advice.reduction > 0.9
        assert [t.candidate for t in advice.trials] == [C("items", "owner")]
        assert _hypothetical_indexes(con) == 0


def test_normalized_statement_is_explained_as_a_generic_plan(advisor_db):
    sql = "SELECT id FROM items WHERE owner = $1 AND id > $2 ORDER BY id LIMIT $3"
    with advisor_db.connect("advisor") as con:
        advice = validate(con, sql, [C("items", "owner")])
        assert advice.best == C("items", "owner")
        assert advice.reduction > 0.9
        assert con.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 0


def test_quoted_mixed_case_table(advisor_db):
    sql = 'SELECT * FROM "Sales"."Orders" WHERE "CustomerId" = 7'
    assert create_index_statement(C("Orders", "CustomerId", schema="Sales")).as_string(None) == \
        'CREATE INDEX ON "Sales"."Orders" ("CustomerId")'
    with advisor_db.connect("advisor") as con:
        advice = validate(con, sql, candidates(sql, "postgres", {}))
        assert advice.best == C("Orders", "CustomerId", schema="Sales")
        assert advice.reduction > 0.9


def test_tiny_table_gets_nothing(advisor_db):
    sql = "SELECT * FROM tiny WHERE owner = 3"
    with advisor_db.connect("advisor") as con:
        advice = validate(con, sql, candidates(sql, "postgres", {}))
        assert advice.best is None and advice.best_cost is None
        assert advice.base_cost < 1000


def test_already_indexed_column_gets_nothing(advisor_db):
    sql = "SELECT * FROM items WHERE sku = 42"
    assert candidates(sql, "postgres", {"items": [["sku"]]}) == []
    with advisor_db.connect("advisor") as con:
        # even proposed anyway, a hypothetical twin of the real index saves nothing
        advice = validate(con, sql, [C("items", "sku")])
        assert advice.best is None
        assert advice.base_cost < 1000


@pytest.mark.parametrize("sql", [
    "DELETE FROM items WHERE id = 1",
    "SELECT 1; DELETE FROM items",
    "WITH gone AS (DELETE FROM items RETURNING id) SELECT * FROM gone",
    "SELECT * INTO copy FROM items",
    "SELECT * FROM items WHERE id = 1 FOR UPDATE",
    "EXPLAIN ANALYZE SELECT * FROM items",
    "SELECT * FROM items WHERE id = ?",
])
def test_refuses_anything_but_a_single_select(advisor_db, sql):
    with pytest.raises(ValueError):
        check_select(sql)
    with advisor_db.connect("advisor") as con, pytest.raises(ValueError):
        validate(con, sql, [])
    assert advisor_db.execute("SELECT count(*) FROM items", dbname="advisor") == [(200000,)]


def test_server_refuses_a_second_statement_that_slipped_past_the_parser(advisor_db):
    import psycopg

    from collectors.advisor.plan import cost
    with advisor_db.connect("advisor") as con, con.cursor() as cur:
        with pytest.raises(psycopg.errors.SyntaxError):   # "cannot insert multiple commands into a prepared statement"
            cost(cur, "SELECT 1; DELETE FROM items", 0)
    assert advisor_db.execute("SELECT count(*) FROM items", dbname="advisor") == [(200000,)]


def test_a_candidate_hypopg_refuses_is_skipped(advisor_db):
    sql = "SELECT * FROM items WHERE owner = $1"
    with advisor_db.connect("advisor") as con:
        advice = validate(con, sql, [C("items", "no_such_column"), C("items", "owner")])
        assert advice.skipped == (C("items", "no_such_column"),)
        assert advice.best == C("items", "owner")
        assert _hypothetical_indexes(con) == 0


def test_a_failing_explain_raises_and_leaves_the_session_clean(advisor_db):
    import psycopg
    with advisor_db.connect("advisor") as con:
        with pytest.raises(psycopg.errors.IndeterminateDatatype):   # nothing tells the type of $1
            validate(con, "SELECT * FROM items WHERE $1 IS NULL", [C("items", "owner")])
        assert _hypothetical_indexes(con) == 0
        assert con.execute("SELECT count(*) FROM pg_prepared_statements").fetchone()[0] == 0


# -- any text: a ValueError or an answer, never another exception ---------------------------------------

from hypothesis import given, settings  # noqa: E402
from hypothesis import strategies as hs  # noqa: E402

from collectors.advisor.plan import _expression  # noqa: E402
from collectors.advisor.workload import prepare  # noqa: E402

_SQLISH = hs.lists(hs.sampled_from(["SELECT", "*", "FROM", "t", "WHERE", "a", "=", "$1", "AND", "(", ")", "ORDER BY",
                                    "b", "AS", "x", ",", "'s'", "::text", "JOIN", "u", "ON", "t.a", "u.b", "WITH",
                                    "c", "IN", "1", "<", "LIMIT", "UPDATE", "SET", "DELETE", "\"Q\"", ";", "--"]),
                   max_size=25).map(" ".join)


@settings(max_examples=300, deadline=None)
@given(hs.one_of(_SQLISH, hs.text(max_size=80)))
def test_any_text_is_read_or_refused_with_a_value_error(text):
    for dialect in ("postgres", "sqlite"):
        try:
            found = candidates(prepare(text, dialect), dialect, {"t": [["a"]]})
        except ValueError:
            continue
        assert all(c.columns and all(isinstance(col, str) and col for col in c.columns) for c in found)
        assert all(c.columns[:1] != ("a",) for c in found if c.table == "t")    # (a) exists on t


@settings(max_examples=300, deadline=None)
@given(hs.one_of(_SQLISH, hs.text(max_size=80)))
def test_a_plan_condition_of_any_shape_is_read_or_left_out(text):
    for wrap in ("SELECT 1 WHERE {}", "SELECT 1 ORDER BY {}"):
        tree = _expression(text, wrap)
        assert tree is None or tree.key == "select"


@given(hs.sampled_from(["a", "b", "c"]), hs.sampled_from(["x", "sorted_by", "Q"]), hs.booleans())
def test_order_by_an_output_alias_or_position_reads_its_column(column, alias, by_position):
    sql = f'SELECT id, {column} AS "{alias}" FROM t WHERE owner = $1 ORDER BY {2 if by_position else chr(34) + alias + chr(34)}'
    (use,) = columns_used(sql, "postgres")
    assert (use.equality, use.order) == (["owner"], [column])
