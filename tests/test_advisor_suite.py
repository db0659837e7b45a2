"""The index advisor's own suite of cases, against a real PostgreSQL, with hypopg and without it (the
statistics heuristic): statements that read through views, materialized views, partitioned tables and
CTEs, ORDER BY on an output alias or on several columns, schema-qualified tables, joins, UPDATE and
DELETE, normalized $1 statements; and the ones that must get no index, each with its reason."""
from __future__ import annotations

import pytest

from collectors.advisor.advise import Settings, advise
from collectors.advisor.model import Statement
from tests.pg import pg_cluster  # noqa: F401  (the session fixture)

SCHEMA = [
    "CREATE TABLE customers AS SELECT g AS id, 'c' || g AS name, g % 20 AS region FROM generate_series(1, 100000) g",
    "ALTER TABLE customers ADD PRIMARY KEY (id)",
    "CREATE TABLE orders AS SELECT g AS id, g % 5000 AS customer_id, (ARRAY['new', 'paid', 'shipped'])[1 + g % 3] "
    "AS status, timestamptz '2026-01-01' + g * interval '1 minute' AS created_at, g % 100 AS total "
    "FROM generate_series(1, 200000) g",
    "ALTER TABLE orders ADD PRIMARY KEY (id)",
    "CREATE VIEW paid_orders AS SELECT o.*, c.region FROM orders o JOIN customers c ON c.id = o.customer_id "
    "WHERE o.status = 'paid'",
    "CREATE MATERIALIZED VIEW order_lines AS SELECT id, customer_id, total FROM orders",
    "CREATE TABLE events (id int, ts timestamptz, device int, value float) PARTITION BY RANGE (ts)",
    "CREATE TABLE events_2025 PARTITION OF events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')",
    "CREATE TABLE events_2026 PARTITION OF events FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')",
    "INSERT INTO events SELECT g, timestamptz '2025-06-01' + g * interval '1 minute', g % 1000, g "
    "FROM generate_series(1, 400000) g",
    'CREATE SCHEMA "Sales"',
    'CREATE TABLE "Sales"."Orders" AS SELECT g AS id, g % 20000 AS "CustomerId" FROM generate_series(1, 200000) g',
    # pgbench_accounts as pgbench makes it, (aid) indexed, with a teller column to tempt a wider twin
    "CREATE TABLE accounts AS SELECT g AS aid, g % 100 AS tid, 0 AS abalance FROM generate_series(1, 200000) g",
    "CREATE INDEX accounts_aid ON accounts (aid)",
    "ANALYZE",
]

# (statement, the index it must get as (table, columns), or None and what its reason must say). A wider
# index must earn its columns: (customer_id) already makes the lookups cheap, so nothing is added to it.
CASES = [
    ("SELECT * FROM paid_orders WHERE customer_id = $1", ("orders", ("customer_id",))),
    ("SELECT * FROM order_lines WHERE customer_id = $1", ("order_lines", ("customer_id",))),
    ("SELECT * FROM events WHERE device = $1", ("events", ("device",))),
    ("WITH big AS (SELECT * FROM orders WHERE total > 1) SELECT * FROM big WHERE customer_id = $1",
     ("orders", ("customer_id",))),
    ("WITH mine AS MATERIALIZED (SELECT * FROM orders WHERE customer_id = $1) "
     "SELECT * FROM mine m JOIN customers c ON c.id = m.customer_id", ("orders", ("customer_id",))),
    ("SELECT id, created_at AS placed FROM orders ORDER BY placed DESC LIMIT 20", ("orders", ("created_at",))),
    # hypopg: (customer_id) with an incremental sort is already cheap; the heuristic, which does not cost
    # sorts, reads the first 10 rows in order through both columns
    ("SELECT id FROM orders ORDER BY customer_id, created_at LIMIT 10",
     ("orders", {"hypopg": ("customer_id",), "heuristic": ("customer_id", "created_at")})),
    ('SELECT * FROM "Sales"."Orders" WHERE "CustomerId" = $1', ("Orders", ("CustomerId",))),
    ("SELECT c.name, o.total FROM customers c JOIN orders o ON o.customer_id = c.id WHERE c.id = $1",
     ("orders", ("customer_id",))),
    ("UPDATE orders SET total = 0 WHERE customer_id = $1", ("orders", ("customer_id",))),
    ("DELETE FROM customers WHERE name = $1", ("customers", ("name",))),
    ("SELECT * FROM orders WHERE id = $1", (None, "already indexed: no column it filters, joins or sorts on lacks an "
                                            "index; the plan uses orders_pkey")),
    ("SELECT * FROM accounts WHERE aid = $1 AND tid = $2", (None, "already cheap")),
    ("SELECT * FROM orders WHERE status = $1", (None, "no index cuts its cost by 50 %")),
    ("SELECT relname FROM pg_class WHERE relname = $1", (None, "reads only system catalogues")),
    ("SELECT now()", (None, "reads no table")),
]
FAILING = [
    ("SELEC id FROM orders", "cannot parse"),
    ("SELECT * FROM orders WHERE no_such_column = 1", 'column "no_such_column" does not exist'),
]


@pytest.fixture(scope="module", params=["hypopg", "heuristic"])
def suite_db(request, pg_cluster):  # noqa: F811
    name = f"advisor_suite_{request.param}"
    url = pg_cluster.create_database(name)
    with pg_cluster.connect(name) as con:
        if request.param == "hypopg":
            con.execute("CREATE EXTENSION hypopg")
        for statement in SCHEMA:
            con.execute(statement)
    return request.param, url


def _run(url, texts):
    return advise(url, [Statement(t, 100, 100_000.0, key=t) for t in texts], settings=Settings(min_ms_per_day=0))


def test_the_suite(suite_db):
    method, url = suite_db
    report = _run(url, [text for text, _ in CASES])
    assert report.method == method and not report.failed
    outcomes = {o.statement.text: o for o in report.outcomes}
    for text, (table, want) in CASES:
        outcome = outcomes[text]
        if table is None:
            assert outcome.verdict == "none" and want in outcome.detail, (text, outcome)
        else:
            want = want[method] if isinstance(want, dict) else want
            assert outcome.verdict == "create", (text, outcome)
            assert outcome.detail.startswith(f"{table} ({', '.join(want)}):"), (text, outcome.detail)


def test_the_recommendations_of_the_suite(suite_db):
    """Statements wanting the same leading columns share one index; a partitioned table's index is built
    without CONCURRENTLY (which PostgreSQL refuses there); names are quoted identifiers."""
    _, url = suite_db
    report = _run(url, [text for text, _ in CASES])
    creates = {r.create_sql for r in report.recommendations}
    assert 'CREATE INDEX "ix_events_device" ON "public"."events" ("device")' in creates
    assert 'CREATE INDEX CONCURRENTLY "ix_orders_customerid" ON "Sales"."Orders" ("CustomerId")' in creates
    assert 'CREATE INDEX CONCURRENTLY "ix_order_lines_customer_id" ON "public"."order_lines" ("customer_id")' in creates
    orders = [r for r in report.recommendations if r.table == "orders" and r.columns[0] == "customer_id"]
    assert len(orders) == 1 and len(orders[0].queries) >= 5


@pytest.mark.parametrize("text,reason", FAILING)
def test_what_cannot_be_analysed_says_why_and_stops_nothing(suite_db, text, reason):
    _, url = suite_db
    good = "SELECT * FROM events WHERE device = $1"
    report = _run(url, [text, good])
    assert [t for t, _ in report.failed] == [text] and reason in report.failed[0][1]
    assert [(o.verdict, o.statement.text) for o in report.outcomes] == [("failed", text), ("create", good)]


def test_the_advisor_leaves_nothing_behind(suite_db, pg_cluster):  # noqa: F811
    method, url = suite_db
    _run(url, [text for text, _ in CASES])
    dbname = url.rsplit("/", 1)[1]
    with pg_cluster.connect(dbname) as con:
        assert con.execute("SELECT count(*) FROM pg_indexes WHERE indexname LIKE 'ix_%'").fetchone() == (0,)
        assert con.execute("SELECT count(*) FROM pg_prepared_statements").fetchone() == (0,)
