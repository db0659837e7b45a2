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
