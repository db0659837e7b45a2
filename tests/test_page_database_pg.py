"""AppTest of the Database page's PostgreSQL sections on what the collector sampled from a real cluster
(tests/pg.py) into a real store: a blocking chain and a pg_sleep, a table with dead rows, statements;
an operator cancels the sleeping backend and explains a statement from the page."""
from __future__ import annotations

import threading
from datetime import timedelta
from pathlib import Path

import duckdb
import psycopg
import pytest
from helpers import query, shown_text, wait_for
from streamlit.testing.v1 import AppTest

from collectors.daemon import Collector
from collectors.samplers.database import DatabaseSampler
from dashboard.actions.access import SESSION_KEY, hash_password, log_in, operator_config
from dashboard.widgets import NOW_GRANULARITY_S, TimeRange
from tests.pg import pg_cluster  # noqa: F401  (the session fixture)

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "dashboard" / "app_pages" / "database.py")
DB = "perfdeck_page_pg"
PASSWORD = "correct horse battery"


class Live:
    """holder (idle in a transaction, holding a row lock), waiter (blocked by it), sleeper (pg_sleep)."""

    def __init__(self, cluster, dbname: str = DB):
        dsn = f"host=127.0.0.1 port={cluster.port} user=postgres dbname={dbname}"
        self.cluster = cluster
        self.holder = psycopg.connect(dsn + " application_name=holder")
        self.waiter = psycopg.connect(dsn + " application_name=waiter")
        self.sleeper = psycopg.connect(dsn + " application_name=sleeper", autocommit=True)
        self.holder.execute("SELECT * FROM lock_t WHERE id = 1 FOR UPDATE")
        self.errors: dict[str, str] = {}
        self.threads = [threading.Thread(target=self._run, args=("waiter", "DELETE FROM lock_t WHERE id = 1")),
                        threading.Thread(target=self._run, args=("sleeper", "SELECT pg_sleep(600)"))]
        for t in self.threads:
            t.start()
        assert wait_for(lambda: len(self.pids()) == 3 and self.waiting() == 2)

    def _run(self, name, statement):
        try:
            getattr(self, name).execute(statement)
        except psycopg.Error as exc:
            self.errors[name] = type(exc).__name__

    def pids(self) -> dict[str, int]:
        return dict(self.cluster.execute("SELECT application_name, pid FROM pg_stat_activity WHERE application_name "
                                          "IN ('holder', 'waiter', 'sleeper')"))

    def waiting(self) -> int:
        return len(self.cluster.execute("SELECT 1 FROM pg_stat_activity WHERE wait_event IN ('transactionid', "
                                        "'PgSleep') AND application_name IN ('waiter', 'sleeper')"))

    def close(self):
        self.cluster.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'sleeper'")
        self.holder.rollback()
        for t in self.threads:
            t.join(10)
        self.waiter.rollback()
        for con in (self.holder, self.waiter, self.sleeper):
            con.close()


@pytest.fixture(scope="module")
def pg_db(pg_cluster):  # noqa: F811
    pg_cluster.create_database(DB)
    for statement in ("CREATE EXTENSION pg_stat_statements", "CREATE TABLE lock_t (id int PRIMARY KEY)",
                      "INSERT INTO lock_t VALUES (1)",
                      "CREATE TABLE dead_t (id int PRIMARY KEY, pad text) WITH (autovacuum_enabled = off)",
                      "INSERT INTO dead_t SELECT g, repeat('z', 100) FROM generate_series(1, 5000) g"):
        pg_cluster.execute(statement, dbname=DB)
    return pg_cluster


@pytest.fixture
def sampled(pg_db, tmp_path, monkeypatch):
    """The store after two samples, with the live backends of the second; the backends stay up."""
    sampler = DatabaseSampler(name="pg", url=pg_db.url_for(DB), interval=1)
    collector = Collector(tmp_path / "perfdeck.duckdb", spool_dir=tmp_path / "spool", samplers=[sampler])
    collector.run_once()
    pg_db.execute("DELETE FROM dead_t WHERE id <= 3000", dbname=DB)
    for i in range(20):
        pg_db.execute("SELECT pad FROM dead_t WHERE id = %s", (i,), dbname=DB)
    assert wait_for(lambda: pg_db.execute("SELECT n_dead_tup FROM pg_stat_user_tables WHERE relname = 'dead_t'",
                                          dbname=DB) == [(3000,)])
    live = Live(pg_db)
    collector.run_once()
    sampler.close()
    # A page's range ends at the last whole NOW_GRANULARITY_S seconds: wait until it takes in the sample.
    [(sampled_at,)] = query(collector.db, "SELECT max(ts) FROM db_metrics")
    wait_for(lambda: TimeRange("1 h", span=timedelta(hours=1)).bounds()[1] > sampled_at, timeout=NOW_GRANULARITY_S + 5)
    for var in ("PERFDECK_OPERATOR_PASSWORD_HASH", "PERFDECK_OPERATOR_EMAILS", "PERFDECK_REDIS_URLS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PERFDECK_DB", str(collector.db))
    monkeypatch.setenv("PERFDECK_CONFIG", str(tmp_path / "no-such.toml"))
    monkeypatch.setenv("PERFDECK_DATABASE_URLS", f"pg={pg_db.url_for(DB)}")
    monkeypatch.chdir(tmp_path)
    yield collector.db, live
    live.close()


def frame(at: AppTest, column: str):
    return next(d.value for d in at.dataframe if column in d.value)


def pick(at: AppTest, text: str) -> None:
    """Pick the statement whose label holds `text` for the history chart."""
    box = at.selectbox(key="pg_statement")
    box.select_index(next(i for i, label in enumerate(box.options) if text in label)).run()
    assert not at.exception, at.exception


def run(session: dict | None = None) -> AppTest:
    at = AppTest.from_file(PAGE, default_timeout=60)
    if session:
        at.session_state[SESSION_KEY] = session[SESSION_KEY]
    at.run()
    assert not at.exception, at.exception
    return at


def test_the_postgresql_sections(sampled):
    store, live = sampled
    pids = live.pids()
    at = run()
    assert [h.value for h in at.subheader][-1] == "PostgreSQL"
    assert [t.label for t in at.tabs] == ["Activity", "Vacuum & wraparound", "Sizes", "Replication"]
    activity = frame(at, "blocked_by").set_index("application_name")
    assert set(activity.index) == {"holder", "waiter", "sleeper"}
    assert activity.loc["holder", "blocks"] == 1 and activity.loc["waiter", "activity"] == "waiting"
    assert [w.value for w in at.warning if "blocks 1:" in w.value][0].startswith(
        f"pg: backend {pids['holder']} (idle in transaction, transaction open ")
    assert any(c.value.startswith("None: no statement had run") for c in at.caption)     # all under a minute
    health = frame(at, "needs_vacuum").set_index("table")
    assert health.loc["public.dead_t", "dead_rows"] == 3000 and health.loc["public.dead_t", "needs_vacuum"]
    assert frame(at, "left_before_stop").set_index("database").loc[DB, "wraparound"] == "ok"
    assert frame(at, "heap_bytes").set_index("table").loc["public.dead_t", "indexes"] == 1
    assert any(shown_text(c.value) == "pg: primary, no replicas." for c in at.caption)
    assert {"csv-pg-activity", "csv-pg-table-health", "csv-pg-xid-ages", "csv-pg-table-sizes",
            "csv-pg-index-sizes"} <= {b.key for b in at.download_button}

    # Top queries from pg_stat_statements: calls per day, and one statement's history
    at.get("button_group")[0].set_value("pg").run()
    assert not at.exception, at.exception
    top = frame(at, "queryid").set_index("query")
    assert top.loc["SELECT pad FROM dead_t WHERE id = $1", "calls"] == 20
    assert top["calls_per_day"].notna().all()
    assert not [q for q in top.index if "perfdeck" in q]
    pick(at, "dead_t WHERE id")
    assert "csv-pg-statement-history" in {b.key for b in at.download_button}
    assert any(c.value.startswith(":material/lock: Explaining a statement reads the database") for c in at.caption)


def test_an_operator_cancels_a_long_statement_and_explains_one(sampled, monkeypatch):
    store, live = sampled
    pids = live.pids()
    # The sleeper was sampled a second after it started; say it was seen after two minutes.
    with duckdb.connect(str(store)) as con:
        con.execute("UPDATE pg_activity SET query_s = 120 WHERE application_name = 'sleeper'")
    session: dict = {}
    monkeypatch.setenv("PERFDECK_OPERATOR_PASSWORD_HASH", hash_password(PASSWORD))
    assert log_in(session, operator_config(secrets={}), "test", PASSWORD).ok
    at = run(session)
    [start] = query(store, "SELECT backend_start FROM pg_activity WHERE pid = ?", [pids["sleeper"]])[0]
    key = f"backend:pg:{pids['sleeper']}:{start.isoformat()}"
    at.session_state[f"backend:pg:{pids['sleeper']}:open"] = True
    at.run()
    assert at.number_input(key=f"{key}:cancel:pid").value == pids["sleeper"]
    next(b for b in at.button if b.key == f"{key}:cancel:preview").click().run()
    assert f"SELECT pg_cancel_backend({pids['sleeper']})" in [c.value for c in at.code]
    next(b for b in at.button if b.key == f"{key}:cancel:run").click().run()
    assert not at.exception, at.exception
    assert shown_text(at.success[-1].value).startswith(f"Cancelled the statement of backend {pids['sleeper']}")
    assert wait_for(lambda: live.errors.get("sleeper") == "QueryCanceled")
    assert query(store, "SELECT action, outcome FROM action_audit") == [("database.cancel_backend", "done")]

    at.get("button_group")[0].set_value("pg").run()
    pick(at, "dead_t WHERE id")
    next(b for b in at.button if b.key.startswith("explain:pg:")).click().run()
    assert not at.exception, at.exception
    codes = [c.value for c in at.code]
    assert any(c.startswith("PREPARE perfdeck_explain_") and "SELECT pad FROM dead_t WHERE id = $1" in c
               for c in codes)
    assert any(c.startswith("Index Scan using dead_t_pkey on dead_t") for c in codes)
    assert query(store, "SELECT action, outcome FROM action_audit ORDER BY id")[-1] == ("database.explain", "done")
