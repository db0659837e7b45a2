"""AppTest of the Database page's index advisor section: the empty states, a seeded run's
recommendations and findings, creating and dropping an index on a real SQLite target from the page as
an operator, and the estimate-vs-measured table once an advised index exists."""
from __future__ import annotations

import sqlite3
from datetime import timedelta
from pathlib import Path

import pytest
import streamlit as st
from helpers import query, run_app, shown_text
from streamlit.testing.v1 import AppTest
from test_queries_advisor import advice_row, audit_row, create, plain, run_row, seed_advisor

from collectors.store import utcnow
from dashboard.actions.access import hash_password

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "dashboard" / "app_pages" / "database.py")
APP = str(ROOT / "dashboard" / "app.py")
PASSWORD = "correct horse battery"
FP = "SELECT * FROM orders WHERE customer_id = ?"
CREATE_KEY = "advisor:shop:None:orders:customer_id"      # the create panel of shop's orders (customer_id)
DROP_KEY = "advisor:shop:None:ix_orders_status"



@pytest.fixture
def env(tmp_path, monkeypatch):
    """A store path, and a real SQLite database configured as target "shop": a table orders with an
    index on status."""
    shop = tmp_path / "shop.sqlite"
    con = sqlite3.connect(shop)
    con.executescript("""
        CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER, status TEXT, note TEXT);
        CREATE INDEX ix_orders_status ON orders (status);
    """)
    con.executemany("INSERT INTO orders (customer_id, status) VALUES (?, ?)", [(i % 50, "new") for i in range(500)])
    con.commit()
    con.close()
    store = tmp_path / "perfdeck.duckdb"
    for var in ("PERFDECK_OPERATOR_PASSWORD_HASH", "PERFDECK_OPERATOR_EMAILS", "PERFDECK_REDIS_URLS", "PERFDECK_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PERFDECK_DB", str(store))
    monkeypatch.setenv("PERFDECK_DATABASE_URLS", f"shop=sqlite:///{shop}")
    monkeypatch.chdir(tmp_path)          # no perfdeck.toml, no .streamlit/secrets.toml here
    return store, shop


def seed_shop_run(store, *, advice=True, **more) -> None:
    """shop's advisor run ten minutes ago: create (customer_id) on orders, and ix_orders_status unused."""
    ran = utcnow().replace(microsecond=0) - timedelta(minutes=10)
    rows = [
        advice_row(ran, "shop", "create", "orders", ["customer_id"], est=92.0, saved=5_400_000.0, calls=12_000.0,
                   mean=30.0, queries=[FP]),
        advice_row(ran, "shop", "unused", "orders", ["status"], index="ix_orders_status", size=4096,
                   detail="no analysed statement uses it"),
    ] if advice else []
    seed_advisor(store, runs=[run_row(ran, "shop", statements=40, analysed=12, seconds=2.5)], advice=rows,
                 query_stats=[(ran, "api", FP, 10, 300.0)], **more)


def section(at: AppTest) -> list[str]:
    """The captions, successes and warnings of the page, in order (the advisor's lines among them)."""
    return [e.value for e in at.main if e.type in ("caption", "success", "warning", "markdown")]


def frame(at: AppTest, column: str):
    return next(d.value for d in at.dataframe if column in d.value)


def frame_or_none(at: AppTest, column: str):
    return next((d.value for d in at.dataframe if column in d.value), None)


def expanders(at: AppTest) -> list[str]:
    return [e.label for e in at.expander]


def test_no_run_yet_says_how_the_advisor_runs(env):
    store, _ = env
    # a few minutes back: the current minute may lie past the page's range end
    seed_advisor(store, query_stats=[(utcnow().replace(second=0, microsecond=0) - timedelta(minutes=5), "api", FP,
                                      10, 300.0)])
    at = run_app(PAGE)
    assert [h.value for h in at.subheader] == ["Top queries", "Index advisor"]
    assert any("runs the advisor hourly on every configured database" in c and "perfdeck advise --db URL" in c
               for c in section(at))
    assert not at.expander and not at.error


def test_a_run_with_nothing_worth_an_index_says_so(env):
    store, _ = env
    seed_shop_run(store, advice=False)
    at = run_app(PAGE)
    assert "Index advisor" in [h.value for h in at.subheader]
    assert at.success[0].value.startswith("No index is worth creating")
    assert any(c.startswith("Last run ") and "SQLite query plans · 12 of 40 statements analysed · took 2.5 s" in c
               for c in section(at))
    assert "None: every index the advisor looked at" in " ".join(section(at))
    assert not at.expander


def test_a_run_shows_its_recommendations_findings_and_one_expander_each(env):
    store, _ = env
    seed_shop_run(store)
    ran = utcnow().replace(microsecond=0) - timedelta(minutes=5)
    seed_advisor(store, runs=[run_row(ran, "legacy", method="heuristic", error="connection refused")])
    at = run_app(PAGE)
    # Two databases: a picker, starting on the one with advice to act on rather than on legacy, whose
    # only run failed.
    picker = at.selectbox(key="advisor_target")
    assert (picker.options, picker.value) == (["legacy", "shop"], "shop")
    assert not at.exception and not at.warning
    advice = frame(at, "time_saved")
    row = advice.iloc[0]
    assert (row["statement"], row["table"], plain(row["columns"]), row["est_improvement_pct"]) == (
        "CREATE INDEX ON orders (customer_id)", "orders", ["customer_id"], 92.0)
    assert (row["time_saved"], row["calls_day"], row["mean_ms"], plain(row["queries"])) == ("90 min", 12_000, 30.0, [FP])
    found = frame(at, "dropped_at")
    assert found[["kind", "index_name", "size_bytes"]].values.tolist() == [["unused", "ix_orders_status", 4096]]
    assert [shown_text(e) for e in expanders(at)] == ["Create index on orders (customer_id)",
                                                      "Drop index ix_orders_status on orders (unused)"]
    assert {"csv-index-recommendations", "csv-index-findings"} <= {b.key for b in at.download_button}
    assert "No index advised here has been created" in " ".join(section(at))

    at.selectbox(key="advisor_target").select("legacy").run()
    assert "**The last advisor run failed:** connection refused." in at.warning[0].value
    assert not at.expander and frame_or_none(at, "time_saved") is None


def test_each_statements_verdict_is_listed_with_its_reason(env):
    store, _ = env
    ran = utcnow().replace(microsecond=0) - timedelta(minutes=10)
    verdicts = [(ran, "shop", FP, "create", "orders (customer_id): 92 % cheaper", 12_000.0, 5_400_000.0, 100.0, 8.0),
                (ran, "shop", "SELECT * FROM **pg_class**", "none", "reads only system catalogues", 5.0, 60_000.0,
                 None, None),
                (ran, "shop", "SELEC", "failed", "ValueError: cannot parse", 1.0, 2_000.0, None, None)]
    seed_shop_run(store, statements=verdicts)
    at = run_app(PAGE)
    assert not at.exception
    label = "What the advisor made of each statement: 1 of 3 want an index"
    assert label in [shown_text(e) for e in expanders(at)]
    df = frame(at, "verdict")
    assert df[["verdict", "query", "detail"]].values.tolist() == [
        ["index", FP, "orders (customer_id): 92 % cheaper"],
        ["not analysed", "SELEC", "ValueError: cannot parse"],
        ["none", "SELECT * FROM **pg_class**", "reads only system catalogues"],
    ]
    assert "csv-advisor-statements" in {b.key for b in at.download_button}


def log_in(monkeypatch) -> AppTest:
    monkeypatch.setenv("PERFDECK_OPERATOR_PASSWORD_HASH", hash_password(PASSWORD))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.sidebar.text_input[0].input(PASSWORD)
    at.sidebar.button[0].click().run()
    assert any(m.value.startswith(":material/admin_panel_settings: **Operator**") for m in at.sidebar.markdown)
    at.switch_page("app_pages/database.py").run()
    assert not at.exception, at.exception
    return at


def button(at: AppTest, key: str):
    return next(b for b in at.button if b.key == key)


def sqlite_indexes(path) -> list[str]:
    con = sqlite3.connect(path)
    try:
        return [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type = 'index' ORDER BY name")]
    finally:
        con.close()


def test_an_operator_creates_the_advised_index_and_drops_the_unused_one(env, monkeypatch):
    store, shop = env
    seed_shop_run(store)
    at = log_in(monkeypatch)

    # Opening the expander draws the Create index panel with the advice preset from the live catalogue.
    at.session_state[f"{CREATE_KEY}:open"] = True
    at.run()
    assert at.selectbox(key=f"{CREATE_KEY}:target").value == "shop"
    assert at.selectbox(key=f"{CREATE_KEY}:table").value == "orders"
    assert at.multiselect(key=f"{CREATE_KEY}:columns").value == ["customer_id"]
    assert at.checkbox(key=f"{CREATE_KEY}:unique").value is False
    button(at, f"{CREATE_KEY}:preview").click().run()
    assert 'CREATE INDEX "ix_orders_customer_id" ON "orders" ("customer_id")' in [c.value for c in at.code]
    button(at, f"{CREATE_KEY}:run").click().run()
    assert not at.exception, at.exception
    assert shown_text(at.success[-1].value).startswith("Created index 'ix_orders_customer_id'")
    assert "ix_orders_customer_id" in sqlite_indexes(shop)
    assert query(store, "SELECT action, target, outcome, params->>'name' FROM action_audit "
                        "WHERE action LIKE 'database.%'") == [
        ("database.create_index", "database:shop", "done", "ix_orders_customer_id")]

    # Once the page's data is fresh again (it is cached for seconds), the advice reads "created".
    st.cache_data.clear()
    at.run()
    assert frame(at, "time_saved")["created_at"].notna().all()
    assert [shown_text(e) for e in expanders(at)] == ["Drop index ix_orders_status on orders (unused)"]

    # Dropping asks for the index name to be typed.
    at.session_state[f"{DROP_KEY}:open"] = True
    at.run()
    assert at.selectbox(key=f"{DROP_KEY}:index").value == "ix_orders_status"
    button(at, f"{DROP_KEY}:preview").click().run()
    assert button(at, f"{DROP_KEY}:run").disabled
    at.text_input(key=f"{DROP_KEY}:confirm").input("ix_orders_status").run()
    button(at, f"{DROP_KEY}:run").click().run()
    assert not at.exception, at.exception
    assert sqlite_indexes(shop) == ["ix_orders_customer_id"]
    st.cache_data.clear()
    at.run()
    assert frame(at, "dropped_at")["dropped_at"].notna().all() and not at.expander


def test_created_index_estimate_vs_measured(env):
    store, _ = env
    ran = utcnow().replace(second=0, microsecond=0) - timedelta(hours=2)
    created = ran + timedelta(minutes=30)
    seed_shop_run(store, audit=[audit_row(created, "database.create_index", create("shop", "orders", ["customer_id"]))])
    # seed_shop_run's own run is ten minutes ago: the advice before the creation is this older one.
    seed_advisor(store, runs=[run_row(ran, "shop")], advice=[
        advice_row(ran, "shop", "create", "orders", ["customer_id"], est=80.0, saved=1e6, queries=[FP])],
        query_stats=[(created - timedelta(minutes=20), "api", FP, 10, 500.0),     # before: 50 ms
                     (created + timedelta(minutes=5), "api", FP, 40, 200.0)])     # after: 5 ms
    at = run_app(PAGE)
    measured = frame(at, "measured_improvement_pct")
    assert len(measured) == 1
    row = measured.iloc[0]
    assert (row["index_name"], row["est_improvement_pct"], row["calls_before"]) == ("ix_orders_customer_id", 80.0, 10)
    # After: the minute 5 min after the creation, and seed_shop_run's minute (10 calls, 300 ms) too.
    assert row["calls_after"] == 50 and row["mean_ms_after"] == pytest.approx(500.0 / 50)
    assert row["mean_ms_before"] == pytest.approx(50.0)
    assert row["measured_improvement_pct"] == pytest.approx(80.0)
    assert "csv-index-verification" in {b.key for b in at.download_button}
