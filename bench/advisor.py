"""Does each index the advisor recommends help, and by about what it estimated?

Two workloads, each run for real, advised, then timed again after creating what was recommended:

- PostgreSQL: a throwaway cluster (tests/pg.py: pg_stat_statements preloaded, hypopg installed) with a
  shop schema (customers, products, orders), an app-like mix of statements run with random parameters
  so pg_stat_statements holds the workload; `advise(url)` reads it from there.
- SQLite: the demo's shop database (`collectors.demo.workload.open_database`) and the statements the
  demo runs, timed here and handed to `advise()` as the workload the SDK would have recorded.

For every recommendation: the median time per call of each statement it helps, before and after
`CREATE INDEX`, in the same run (the "before" figure is the reference). Prints only; asserts nothing.

    .venv/bin/python bench/advisor.py [--orders 1000000] [--calls 60]
"""
from __future__ import annotations

import argparse
import random
import sqlite3
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from collectors.advisor.advise import Settings, advise  # noqa: E402
from collectors.advisor.model import Statement  # noqa: E402

PG_SCHEMA = """
CREATE EXTENSION hypopg;
CREATE EXTENSION pg_stat_statements;
CREATE TABLE customers AS
  SELECT g AS id, 'c' || g || '@example.com' AS email, g % 40 AS region, now() - g * interval '1 hour' AS created_at
  FROM generate_series(1, {customers}) g;
ALTER TABLE customers ADD PRIMARY KEY (id);
CREATE TABLE products AS
  SELECT g AS id, 'product ' || g AS name, g % 25 AS category, (g % 300) + 0.99 AS price FROM generate_series(1, 20000) g;
ALTER TABLE products ADD PRIMARY KEY (id);
CREATE TABLE orders AS
  SELECT g AS id, (g::bigint * 7919) % {customers} + 1 AS customer_id, (g::bigint * 104729) % 20000 + 1 AS product_id,
         CASE WHEN g % 100 = 0 THEN 'pending' WHEN g % 10 = 0 THEN 'cancelled' ELSE 'shipped' END AS status,
         timestamp '2026-01-01' + g * interval '20 seconds' AS created_at, (g % 500) + 0.5 AS amount
  FROM generate_series(1, {orders}) g;
ALTER TABLE orders ADD PRIMARY KEY (id);
ANALYZE;
"""

# (statement with psycopg placeholders, parameter maker); an app's mix: lookups, a join, a report
PG_WORKLOAD = [
    ("SELECT id, amount, created_at FROM orders WHERE customer_id = %s ORDER BY created_at DESC LIMIT 20",
     lambda r, n: (r.randint(1, n["customers"]),)),
    ("SELECT id, region FROM customers WHERE email = %s", lambda r, n: (f"c{r.randint(1, n['customers'])}@example.com",)),
    ("SELECT id, customer_id, amount FROM orders WHERE status = 'pending' AND created_at >= %s ORDER BY created_at",
     lambda r, n: (f"2026-08-{r.randint(10, 18):02d}",)),      # the last days of the orders
    ("SELECT o.id, o.amount FROM orders o JOIN products p ON p.id = o.product_id WHERE o.product_id = %s",
     lambda r, n: (r.randint(1, 20000),)),
    ("SELECT count(*) FROM orders WHERE status = %s", lambda r, n: (r.choice(["shipped", "cancelled"]),)),
    ("SELECT name, price FROM products WHERE id = %s", lambda r, n: (r.randint(1, 20000),)),
    ("UPDATE customers SET region = region WHERE email = %s", lambda r, n: (f"c{r.randint(1, n['customers'])}@example.com",)),
]


def median_ms(con, sql: str, make_params, calls: int) -> float:
    """Median wall time of one call, rows fetched; parameters are drawn outside the timing."""
    times = []
    for _ in range(calls):
        params = make_params()
        t = time.perf_counter()
        cur = con.execute(sql, params)
        if cur.description:
            cur.fetchall()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def report(title: str, rows: list[tuple]) -> None:
    print(f"\n{title}")
    print(f"{'index':58} {'method':11} {'est.':>6} {'before ms':>10} {'after ms':>9} {'speedup':>8}  statement")
    for index, method, est, before, after, text in rows:
        print(f"{index:58} {method:11} {est:5.0f}% {before:10.3f} {after:9.3f} {before / after:7.1f}x  {text[:70]}")


def bench_postgres(orders: int, calls: int) -> None:
    from tests.pg import PgCluster

    sizes = {"orders": orders, "customers": max(orders // 20, 10_000)}
    cluster = PgCluster().init()
    try:
        url = cluster.create_database("shop")
        with cluster.connect("shop") as con:
            t = time.perf_counter()
            con.execute(PG_SCHEMA.format(**sizes))
            print(f"PostgreSQL: {orders:,} orders, {sizes['customers']:,} customers loaded in {time.perf_counter() - t:.1f} s")
            con.execute("SELECT pg_stat_statements_reset()")
            rng = random.Random(7)
            for _ in range(calls):
                for sql, params in PG_WORKLOAD:
                    con.execute(sql, params(rng, sizes))
            t = time.perf_counter()
            result = advise(url, settings=Settings(min_ms_per_day=0))
            print(f"advised in {time.perf_counter() - t:.2f} s ({result.method}): {result.statements} statements, "
                  f"{result.analysed} with candidates, {len(result.recommendations)} recommendations")
            for f in result.findings:
                print(f"  {f.kind}: {f.index} ({f.detail})")
            rows = []
            by_text = {" ".join(s.split()): (s, p) for s, p in PG_WORKLOAD}
            timed = {}
            for rec in result.recommendations:
                for key in rec.queries:
                    sql, params = _pg_statement(key, by_text)
                    timed[key] = median_ms(con, sql, partial(params, rng, sizes), calls)
            for rec in result.recommendations:
                con.execute(rec.create_sql.replace(" CONCURRENTLY", ""))
            con.execute("ANALYZE")
            for rec in result.recommendations:
                for key in rec.queries:
                    sql, params = _pg_statement(key, by_text)
                    after = median_ms(con, sql, partial(params, rng, sizes), calls)
                    rows.append((f"{rec.table} ({', '.join(rec.columns)})", rec.method, rec.est_improvement_pct,
                                 timed[key], after, key))
            report("PostgreSQL: median time per call before and after the recommended indexes", rows)
    finally:
        cluster.destroy()


def _pg_statement(normalized: str, by_text: dict):
    """The workload entry behind a pg_stat_statements text ($1 where the app sent %s)."""
    import re
    pattern = re.escape(" ".join(normalized.split()))
    pattern = re.sub(r"\\\$\d+", ".+", pattern)
    for text, entry in by_text.items():
        if re.fullmatch(pattern, text):
            return entry
    raise LookupError(normalized)


# The demo's statements as its SQLite driver receives them (see collectors/demo/workload.py).
SQLITE_WORKLOAD = [
    ("SELECT id, product_id, quantity, amount, status, created_at FROM orders WHERE customer_id = ? "
     "ORDER BY created_at DESC", lambda r: (r.randint(1, 20_000),)),
    ("SELECT p.id, p.name, p.price, count(o.id) AS sold FROM products p JOIN orders o ON o.product_id = p.id "
     "WHERE p.category = ? AND p.stock > 0 GROUP BY p.id ORDER BY sold DESC LIMIT 20",
     lambda r: (r.choice(["books", "garden", "kitchen", "toys", "audio"]),)),
    ("SELECT id, name, category, price, stock FROM products WHERE id = ?", lambda r: (r.randint(1, 5000),)),
    ("SELECT id, customer_id, amount FROM orders WHERE id = ?", lambda r: (r.randint(1, 250_000),)),
    ("SELECT p.category, count(*), sum(o.amount) FROM orders o JOIN products p ON p.id = o.product_id "
     "GROUP BY p.category", lambda r: ()),
]


def bench_sqlite(calls: int) -> None:
    from collectors.demo.workload import open_database

    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "shop.sqlite"
        open_database(path).dispose()
        con = sqlite3.connect(path)
        rng = random.Random(7)
        statements, before = [], {}
        for sql, params in SQLITE_WORKLOAD:
            before[sql] = median_ms(con, sql, partial(params, rng), max(calls // 6, 5))
            # the workload as the SDK would record it: 1,000 calls a day at the measured mean
            statements.append(Statement(sql, 1000, 1000 * before[sql], "sdk", 1.0, sql))
        t = time.perf_counter()
        result = advise(f"sqlite:///{path}", store_workload=statements, settings=Settings())
        print(f"\nSQLite demo shop: advised in {time.perf_counter() - t:.2f} s ({result.method}): "
              f"{result.statements} statements, {len(result.recommendations)} recommendations")
        for rec in result.recommendations:
            con.execute(rec.create_sql)
        con.execute("ANALYZE")
        rows = []
        params_of = dict(SQLITE_WORKLOAD)
        for rec in result.recommendations:
            for sql in rec.queries:
                after = median_ms(con, sql, partial(params_of[sql], rng), max(calls // 6, 5))
                rows.append((f"{rec.table} ({', '.join(rec.columns)})", rec.method, rec.est_improvement_pct,
                             before[sql], after, sql))
        report("SQLite (the demo's shop): median time per call before and after the recommended indexes", rows)
        con.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--orders", type=int, default=1_000_000)
    parser.add_argument("--calls", type=int, default=60, help="calls of each statement per measurement")
    args = parser.parse_args()
    bench_sqlite(args.calls)
    bench_postgres(args.orders, args.calls)
