"""dashboard.queries.advisor on a real DuckDB store holding advisor runs, their advice, the audit rows of
index actions and the statement figures around them.

The story, on 2026-03-01 (naive UTC):
- "shop" (SQLite, no schemas): a run at 10:00, one at 11:00 and one at 12:00 that failed;
- "shop-pg" (PostgreSQL, schema public): one run at 11:30;
- "legacy": one run at 11:45 that failed, and no other.
"""
from __future__ import annotations

import json
from datetime import datetime, timedelta

import pandas as pd
import pytest

from collectors.store import migrate, read, write
from dashboard.queries import advisor_runs, advisor_statements, index_findings, index_recommendations, index_verification

T = datetime(2026, 3, 1)
FP_A = "SELECT * FROM orders WHERE customer_id = ?"
FP_B = "SELECT id FROM orders WHERE customer_id = ? AND status = ?"
PG_Q = "SELECT * FROM orders WHERE status = $1 ORDER BY created_at"


def at(hh_mm: str) -> datetime:
    hours, minutes = map(int, hh_mm.split(":"))
    return T + timedelta(hours=hours, minutes=minutes)


def run_row(ts, target, method="sqlite-plan", statements=40, analysed=12, seconds=2.5, error=None, notes=None):
    return (ts, target, method, statements, analysed, seconds, error, notes)


def advice_row(ts, target, kind, table, columns, *, schema=None, index=None, est=None, saved=None, calls=None,
               mean=None, queries=None, size=None, detail=None, method="sqlite-plan"):
    if kind == "create":
        statement = f"CREATE INDEX ON {table} ({', '.join(columns)})"
    else:
        statement = f"DROP INDEX {index}"
    return (ts, target, kind, schema, table, index, columns, statement, method, est, saved, calls, mean, queries,
            size, detail)


def audit_row(ts, action, params, outcome="done", duration_ms=0.0):
    target = f"database:{params['target']}"
    return (ts, "operator", action, target, json.dumps(params, sort_keys=True), outcome, duration_ms)


def create(target, table, columns, *, schema=None, name=None):
    return {"target": target, "schema": schema, "table": table, "columns": columns, "unique": False,
            "name": name or f"ix_{table}_{'_'.join(columns)}"}


def drop(target, index, *, schema=None):
    return {"target": target, "schema": schema, "index": index}


def seed_advisor(path, *, runs=(), advice=(), audit=(), query_stats=(), pg_statements=(), statements=()) -> None:
    """Write advisor runs, advice, index-action audit rows and statement figures into the store at `path`
    (migrated first if new). query_stats rows: (minute, service, fingerprint, calls, total_ms);
    pg_statements rows: (ts, target, query, calls, total_ms)."""
    inserts = {
        "INSERT INTO advisor_runs VALUES (?, ?, ?, ?, ?, ?, ?, ?)": runs,
        "INSERT INTO index_advice VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)": advice,
        "INSERT INTO action_audit (ts, actor, action, target, params, outcome, duration_ms) "
        "VALUES (?, ?, ?, ?, ?, ?, ?)": audit,
        "INSERT INTO query_stats (minute, service, fingerprint, calls, total_ms) VALUES (?, ?, ?, ?, ?)": query_stats,
        "INSERT INTO pg_statements (ts, target, query, calls, total_ms) VALUES (?, ?, ?, ?, ?)": pg_statements,
        "INSERT INTO advisor_statements VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)": statements,
    }
    with write(path) as con:
        migrate(con)
        for sql, rows in inserts.items():
            if rows:
                con.executemany(sql, list(rows))


RUNS = [
    run_row(at("10:00"), "shop"),
    run_row(at("11:00"), "shop", statements=42, analysed=14, seconds=3.0),
    run_row(at("12:00"), "shop", statements=None, analysed=None, seconds=0.1, error="unable to open database file"),
    run_row(at("11:30"), "shop-pg", method="hypopg", statements=300, analysed=80, seconds=12.0, notes="hypopg 1.4"),
    run_row(at("11:45"), "legacy", method="heuristic", error="connection refused"),
]
ADVICE = [
    # 10:00: superseded by the 11:00 run
    advice_row(at("10:00"), "shop", "create", "orders", ["customer_id"], est=80.0, saved=4e5, calls=1e4, mean=50.0,
               queries=[FP_A]),
    advice_row(at("10:00"), "shop", "unused", "orders", ["note"], index="ix_ancient", size=100, detail="never used"),
    # 11:00
    advice_row(at("11:00"), "shop", "create", "orders", ["customer_id"], est=90.0, saved=5e5, calls=2e4, mean=35.0,
               queries=[FP_A, FP_B]),
    advice_row(at("11:00"), "shop", "create", "items", ["kind", "created"], est=70.0, saved=2e5, calls=5e3, mean=60.0,
               queries=["SELECT * FROM items WHERE kind = ? ORDER BY created"]),
    advice_row(at("11:00"), "shop", "unused", "orders", ["status"], index="ix_old", size=5000,
               detail="SQLite keeps no usage counts; no analysed statement uses it"),
    advice_row(at("11:00"), "shop", "duplicate", "orders", ["customer_id"], index="ix_dup", size=1000,
               detail="covered by ix_orders_customer_id_status (customer_id, status)"),
    # 11:30, PostgreSQL
    advice_row(at("11:30"), "shop-pg", "create", "orders", ["status", "created_at"], schema="public", est=95.0,
               saved=1e6, calls=1e5, mean=50.0, queries=[PG_Q], method="hypopg"),
    advice_row(at("11:30"), "shop-pg", "unused", "orders", ["legacy_ref"], schema="public", index="ix_pg",
               size=8192, detail="no scans since 2026-02-01", method="hypopg"),
]
AUDIT = [
    # before any advice: neither "created" for the 11:00 advice nor measured (no estimate)
    audit_row(at("09:00"), "database.create_index", create("shop", "orders", ["customer_id"], name="ix_early")),
    # the 11:00 advice followed, the build took 1.5 s
    audit_row(at("11:10"), "database.create_index", create("shop", "orders", ["customer_id"]), duration_ms=1500.0),
    # the items advice: columns in another order, and a failed attempt with the right ones
    audit_row(at("11:12"), "database.create_index", create("shop", "items", ["created", "kind"])),
    audit_row(at("11:14"), "database.create_index", create("shop", "items", ["kind", "created"]), outcome="failed"),
    # refused before any check: its params are as typed, not a list of columns
    audit_row(at("11:11"), "database.create_index", {"target": "shop", "table": "orders", "columns": "customer_id"},
              outcome="invalid"),
    # by hand, no advice about it
    audit_row(at("11:30"), "database.create_index", create("shop", "items", ["sku"])),
    # PostgreSQL: the advice followed (the action's params always name the schema there)
    audit_row(at("11:40"), "database.create_index", create("shop-pg", "orders", ["status", "created_at"],
                                                           schema="public")),
    # drops: ix_old before the 11:00 run and refused after it; ix_dup done; ix_pg on the wrong target
    audit_row(at("10:30"), "database.drop_index", drop("shop", "ix_old")),
    audit_row(at("11:15"), "database.drop_index", drop("shop", "ix_old"), outcome="refused"),
    audit_row(at("11:20"), "database.drop_index", drop("shop", "ix_dup")),
    audit_row(at("11:50"), "database.drop_index", drop("shop", "ix_pg")),
]
QUERY_STATS = [
    (T - timedelta(hours=15), "api", FP_A, 100, 9_000.0),   # 26 h before 11:10: outside the 24 h window
    (at("08:30"), "api", FP_A, 10, 400.0),                  # before (and before ix_early at 09:00)
    (at("09:30"), "api", FP_A, 10, 500.0),                  # before
    (at("11:05"), "api", FP_B, 30, 900.0),                  # before
    (at("11:10"), "api", FP_A, 5, 1_000.0),                 # the minute of the build: neither
    (at("11:20"), "api", FP_A, 20, 100.0),                  # after
    (at("11:30"), "worker", FP_B, 20, 60.0),                # after
    (at("11:20"), "api", "SELECT 1", 1_000, 1.0),           # another statement
]
PG_STATEMENTS = [
    (at("11:35"), "shop-pg", PG_Q, 100, 5_000.0),           # before 11:40
    (at("11:45"), "shop-pg", PG_Q, 50, 250.0),              # after
    (at("11:45"), "other-pg", PG_Q, 1_000, 1.0),            # same text, another database
]


@pytest.fixture(scope="module")
def con(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "perfdeck.duckdb"
    seed_advisor(path, runs=RUNS, advice=ADVICE, audit=AUDIT, query_stats=QUERY_STATS, pg_statements=PG_STATEMENTS)
    with read(path) as con:
        yield con


def plain(value):
    """A cell as a plain value: a list for a list column (numpy arrays), None for NULL."""
    if hasattr(value, "tolist"):
        return value.tolist()
    return None if pd.isna(value) else value


def records(df: pd.DataFrame, *columns: str) -> list[tuple]:
    return [tuple(map(plain, row)) for row in df[list(columns)].itertuples(index=False)]


def test_advisor_runs_latest_per_target(con):
    df = advisor_runs(con)
    assert list(df.columns) == ["ts", "target", "method", "statements", "analysed", "seconds", "error", "notes",
                                "findings_ts"]
    assert records(df, "target", "ts", "method", "error", "findings_ts") == [
        ("legacy", at("11:45"), "heuristic", "connection refused", None),
        ("shop", at("12:00"), "sqlite-plan", "unable to open database file", at("11:00")),
        ("shop-pg", at("11:30"), "hypopg", None, at("11:30")),
    ]
    pg = df[df["target"] == "shop-pg"].iloc[0]
    assert (pg["statements"], pg["analysed"], pg["seconds"], pg["notes"]) == (300, 80, 12.0, "hypopg 1.4")


def test_advisor_statements_of_the_latest_run_that_did_not_fail(tmp_path):
    path = tmp_path / "perfdeck.duckdb"
    runs = [run_row(at("10:00"), "shop-pg", "hypopg"), run_row(at("11:00"), "shop-pg", "hypopg"),
            run_row(at("12:00"), "shop-pg", None, error="connection refused"), run_row(at("11:00"), "shop")]

    def row(ts, target, query, verdict, detail, ms_day):
        return (ts, target, query, verdict, detail, 10.0, ms_day, None, None)
    seed_advisor(path, runs=runs, statements=[
        row(at("10:00"), "shop-pg", PG_Q, "create", "orders (status): 90 % cheaper", 900.0),   # an older run
        row(at("11:00"), "shop-pg", "SELECT now()", "none", "reads no table (no index can help)", 50.0),
        row(at("11:00"), "shop-pg", "SELECT * FROM pg_class", "none", "reads only system catalogues", 80.0),
        row(at("11:00"), "shop-pg", "SELEC", "failed", "ValueError: cannot parse", 1.0),
        row(at("11:00"), "shop-pg", PG_Q, "create", "orders (status): 93 % cheaper", 700.0),
        row(at("11:00"), "shop", FP_A, "none", "already cheap: 12 rows read, under 10,000", 5.0),
    ])
    with read(path) as con:
        df = advisor_statements(con)
        assert records(df, "target", "query", "verdict", "detail") == [
            ("shop", FP_A, "none", "already cheap: 12 rows read, under 10,000"),
            ("shop-pg", PG_Q, "create", "orders (status): 93 % cheaper"),
            ("shop-pg", "SELEC", "failed", "ValueError: cannot parse"),
            ("shop-pg", "SELECT * FROM pg_class", "none", "reads only system catalogues"),
            ("shop-pg", "SELECT now()", "none", "reads no table (no index can help)"),
        ]
        assert advisor_statements(con, "shop")["query"].tolist() == [FP_A]


def test_advisor_runs_on_an_empty_store(tmp_path):
    seed_advisor(tmp_path / "empty.duckdb")
    with read(tmp_path / "empty.duckdb") as con:
        assert advisor_runs(con).empty and index_recommendations(con).empty and index_findings(con).empty
        assert advisor_statements(con).empty
        assert index_verification(con).empty


def test_recommendations_of_the_latest_good_run_with_created_at(con):
    df = index_recommendations(con)
    assert list(df.columns) == ["ts", "target", "table_schema", "table_name", "columns", "statement", "method",
                                "est_improvement_pct", "time_saved_ms_day", "calls_day", "mean_ms", "queries",
                                "detail", "created_at"]
    # Most time saved first; shop's 11:00 run, not its 10:00 one nor the failed 12:00 one.
    assert records(df, "target", "ts", "table_schema", "table_name", "columns", "est_improvement_pct",
                   "created_at") == [
        ("shop-pg", at("11:30"), "public", "orders", ["status", "created_at"], 95.0, at("11:40")),
        ("shop", at("11:00"), None, "orders", ["customer_id"], 90.0, at("11:10")),   # not ix_early at 09:00
        ("shop", at("11:00"), None, "items", ["kind", "created"], 70.0, None),       # wrong order; failed run
    ]
    assert list(df["queries"].iloc[1]) == [FP_A, FP_B]
    assert df["statement"].iloc[2] == "CREATE INDEX ON items (kind, created)"


def test_findings_of_the_latest_good_run_with_dropped_at(con):
    df = index_findings(con)
    assert list(df.columns) == ["ts", "target", "kind", "table_schema", "table_name", "index_name", "columns",
                                "statement", "size_bytes", "detail", "dropped_at"]
    assert records(df, "target", "kind", "index_name", "size_bytes", "dropped_at") == [
        ("shop", "unused", "ix_old", 5000, None),             # dropped before the run, refused after it
        ("shop", "duplicate", "ix_dup", 1000, at("11:20")),
        ("shop-pg", "unused", "ix_pg", 8192, None),           # the drop of that name was on "shop"
    ]
    assert df["statement"].tolist()[1] == "DROP INDEX ix_dup"


def test_verification_before_and_after_each_advised_index(con):
    df = index_verification(con)
    assert list(df.columns) == ["created_at", "target", "table_schema", "table_name", "columns", "index_name",
                                "advised_at", "est_improvement_pct", "queries", "calls_before", "mean_ms_before",
                                "calls_after", "mean_ms_after", "measured_improvement_pct"]
    # Only the two creations that followed advice: not ix_early (no advice before it), not items (sku) by
    # hand, not items (created, kind) whose columns no advice named, not the failed one.
    assert records(df, "created_at", "target", "index_name", "advised_at", "est_improvement_pct") == [
        (at("11:40"), "shop-pg", "ix_orders_status_created_at", at("11:30"), 95.0),
        (at("11:10"), "shop", "ix_orders_customer_id", at("11:00"), 90.0),
    ]
    pg, sdk = df.iloc[0], df.iloc[1]

    # shop, created 11:10, built 11:10:01.5; the 11:00 advice helps FP_A and FP_B. Before: the minutes
    # 08:30, 09:30 and 11:05 (the one 26 h before is outside 24 h; 11:10 is the build's own minute).
    before_calls, before_ms = 10 + 10 + 30, 400.0 + 500.0 + 900.0
    after_calls, after_ms = 20 + 20, 100.0 + 60.0       # 11:20 (api) and 11:30 (worker)
    assert list(sdk["queries"]) == [FP_A, FP_B]
    assert (sdk["calls_before"], sdk["calls_after"]) == (before_calls, after_calls)
    assert sdk["mean_ms_before"] == pytest.approx(before_ms / before_calls)      # 36 ms
    assert sdk["mean_ms_after"] == pytest.approx(after_ms / after_calls)         # 4 ms
    assert sdk["measured_improvement_pct"] == pytest.approx(100 * (1 - 4.0 / 36.0))

    # shop-pg, created 11:40: pg_statements of shop-pg only.
    assert (pg["calls_before"], pg["calls_after"]) == (100, 50)
    assert (pg["mean_ms_before"], pg["mean_ms_after"]) == (pytest.approx(50.0), pytest.approx(5.0))
    assert pg["measured_improvement_pct"] == pytest.approx(90.0)


def test_verification_window_and_no_calls_after(tmp_path):
    path = tmp_path / "perfdeck.duckdb"
    seed_advisor(path, runs=RUNS[:2], advice=ADVICE[:6], audit=AUDIT[1:2], query_stats=QUERY_STATS[:4])
    with read(path) as con:
        df = index_verification(con, window_hours=2)
    row = df.iloc[0]
    # 2 h before 11:10: only the 09:30 and 11:05 minutes; nothing after yet.
    assert (row["calls_before"], row["mean_ms_before"]) == (40, pytest.approx(1400.0 / 40))
    assert row["calls_after"] == 0
    assert pd.isna(row["mean_ms_after"]) and pd.isna(row["measured_improvement_pct"])
