"""Cancel, Terminate and Explain against a real PostgreSQL (tests/pg.py, a database of this module's own):
real backends running pg_sleep, what the signal did to them, the audit rows, and that a backend other than
the one shown is refused."""
from __future__ import annotations

import threading
from datetime import timedelta, timezone

import psycopg
import pytest

from collectors.samplers import utcnow
from collectors.samplers.database import DatabaseSampler
from dashboard.actions import InvalidInput, NotAuthorized, make_preview, run_action
from dashboard.actions.pg_backends import CancelBackend, ExplainStatement, TerminateBackend
from tests.helpers import OPERATOR, query, wait_for
from tests.pg import pg_cluster  # noqa: F401  (the session fixture)

DB = "perfdeck_pg_backends"


@pytest.fixture(scope="module")
def pg_db(pg_cluster):  # noqa: F811
    pg_cluster.create_database(DB)
    pg_cluster.execute("CREATE EXTENSION pg_stat_statements", dbname=DB)
    return pg_cluster


@pytest.fixture
def targets(monkeypatch, tmp_path, pg_db):
    monkeypatch.setenv("PERFDECK_CONFIG", str(tmp_path / "no-such.toml"))
    monkeypatch.setenv("PERFDECK_DATABASE_URLS", f"pg={pg_db.url_for(DB)}")
    return pg_db


class Sleeper:
    """A backend of an application running SELECT pg_sleep(600) on a thread; `error` is how it ended."""

    def __init__(self, cluster, app: str = "app-sleeper"):
        self.con = psycopg.connect(f"host=127.0.0.1 port={cluster.port} user=postgres dbname={DB} "
                                   f"application_name={app}", autocommit=True)
        self.pid, self.error, self.cluster = self.con.info.backend_pid, None, cluster
        self.thread = threading.Thread(target=self._run)
        self.thread.start()
        assert wait_for(lambda: self.state() == ("active", "PgSleep"))
        [(started,)] = cluster.execute("SELECT backend_start FROM pg_stat_activity WHERE pid = %s", (self.pid,))
        self.started = started.astimezone(timezone.utc).replace(tzinfo=None)

    def _run(self):
        try:
            self.con.execute("SELECT pg_sleep(600)")
        except psycopg.Error as exc:
            self.error = type(exc).__name__

    def state(self):
        rows = self.cluster.execute("SELECT state, wait_event FROM pg_stat_activity WHERE pid = %s", (self.pid,))
        return rows[0] if rows else None

    def close(self):
        self.cluster.execute("SELECT pg_terminate_backend(%s)", (self.pid,))
        self.thread.join(10)
        self.con.close()


@pytest.fixture
def sleeper(targets):
    s = Sleeper(targets)
    yield s
    s.close()


def audit(store) -> list[tuple]:
    return query(store, "SELECT action, target, outcome, error FROM action_audit ORDER BY id")


def test_cancel_the_statement_of_the_backend_shown(targets, sleeper, migrated_store, operator):
    params = {"target": "pg", "pid": sleeper.pid, "backend_start": sleeper.started.isoformat()}
    _, preview = make_preview(CancelBackend(), params, actor=OPERATOR)
    assert preview.statements == [f"SELECT pg_cancel_backend({sleeper.pid})"] and preview.confirm is None
    [row] = preview.rows
    assert (row["pid"], row["backend started (UTC)"], row["application"], row["state"], row["statement"]) == (
        sleeper.pid, sleeper.started, "app-sleeper", "active", "SELECT pg_sleep(600)")
    assert row["running (s)"] >= 0
    assert preview.summary.startswith(f"Cancel the statement of backend {sleeper.pid} (user 'postgres', "
                                      "application 'app-sleeper', active; statement running ")
    result = run_action(CancelBackend(), params, preview, actor=operator, db=migrated_store)
    assert result.summary.startswith(f"Cancelled the statement of backend {sleeper.pid} (it had run ")
    sleeper.thread.join(10)
    assert sleeper.error == "QueryCanceled"
    assert wait_for(lambda: sleeper.state() == ("idle", "ClientRead"))     # the session stays
    assert result.figures["pid"] == sleeper.pid and result.figures["signalled"] is True
    assert audit(migrated_store) == [("database.cancel_backend", "database:pg", "done", None)]


def test_terminate_needs_the_pid_typed_and_closes_the_backend(targets, sleeper, migrated_store, operator):
    params = {"target": "pg", "pid": sleeper.pid, "backend_start": str(sleeper.started)}
    _, preview = make_preview(TerminateBackend(), params, actor=OPERATOR)
    assert preview.confirm == str(sleeper.pid)
    assert preview.statements == [f"SELECT pg_terminate_backend({sleeper.pid})"]
    with pytest.raises(NotAuthorized, match=f"type '{sleeper.pid}' to confirm"):
        run_action(TerminateBackend(), params, preview, actor=operator, confirmation="yes", db=migrated_store)
    assert sleeper.state() == ("active", "PgSleep")
    result = run_action(TerminateBackend(), params, preview, actor=operator, confirmation=str(sleeper.pid),
                        db=migrated_store)
    assert result.summary.startswith(f"Terminated backend {sleeper.pid} (its statement had run ")
    assert wait_for(lambda: sleeper.state() is None)
    sleeper.thread.join(10)
    assert sleeper.error in ("AdminShutdown", "OperationalError")
    assert [r[2] for r in audit(migrated_store)] == ["refused", "done"]


def test_another_backend_or_one_that_ended_is_refused(targets, sleeper, migrated_store, operator):
    # the snapshot's start differs: the pid now names another backend
    earlier = (sleeper.started - timedelta(seconds=3)).isoformat()
    with pytest.raises(InvalidInput, match=rf"^pid {sleeper.pid} is now another backend \(started "):
        make_preview(CancelBackend(), {"target": "pg", "pid": sleeper.pid, "backend_start": earlier}, actor=OPERATOR)
    # the backend ends between the preview and the run: nothing is signalled
    params = {"target": "pg", "pid": sleeper.pid, "backend_start": sleeper.started.isoformat()}
    _, preview = make_preview(CancelBackend(), params, actor=OPERATOR)
    targets.execute("SELECT pg_terminate_backend(%s)", (sleeper.pid,))
    assert wait_for(lambda: sleeper.state() is None)
    with pytest.raises(InvalidInput, match=rf"^no backend with pid {sleeper.pid} in database 'pg' any more"):
        run_action(CancelBackend(), params, preview, actor=operator, db=migrated_store)
    assert audit(migrated_store) == [("database.cancel_backend", "database:pg", "failed",
                                      f"no backend with pid {sleeper.pid} in database 'pg' any more: it has ended")]
    with pytest.raises(InvalidInput, match="pid must be a positive whole number"):
        make_preview(CancelBackend(), {"target": "pg", "pid": "1; SELECT 1"}, actor=OPERATOR)


def test_perfdecks_own_backends_are_not_touched(targets):
    own = Sleeper(targets, app="perfdeck-sampler")
    try:
        with pytest.raises(InvalidInput, match=f"pid {own.pid} is one of perfdeck's own backends"):
            make_preview(TerminateBackend(), {"target": "pg", "pid": own.pid}, actor=OPERATOR)
        assert own.state() == ("active", "PgSleep")
    finally:
        own.close()


def qid(cluster, prefix: str) -> int:
    return cluster.execute("SELECT queryid FROM pg_stat_statements WHERE query LIKE %s", (prefix + "%",), dbname=DB)[0][0]


def test_explain_a_captured_select_and_nothing_else(targets, migrated_store, operator):
    targets.execute("CREATE TABLE expl_t (id int PRIMARY KEY, v int)", dbname=DB)
    targets.execute("INSERT INTO expl_t SELECT g, g % 10 FROM generate_series(1, 1000) g", dbname=DB)
    targets.execute("ANALYZE expl_t", dbname=DB)
    targets.execute("SELECT v FROM expl_t WHERE id = 42", dbname=DB)
    targets.execute("SELECT count(*) FROM expl_t", dbname=DB)
    targets.execute("UPDATE expl_t SET v = 1 WHERE id = 7", dbname=DB)
    select, count, update = (qid(targets, p) for p in ("SELECT v FROM expl_t", "SELECT count(*) FROM expl_t",
                                                       "UPDATE expl_t"))

    _, preview = make_preview(ExplainStatement(), {"target": "pg", "queryid": select}, actor=OPERATOR)
    [prepare, explain, deallocate] = preview.statements
    name = prepare.split()[1]
    assert prepare == f"PREPARE {name} AS SELECT v FROM expl_t WHERE id = $1"
    assert (explain, deallocate) == (f"EXPLAIN EXECUTE {name}(NULL)", f"DEALLOCATE {name}")
    result = run_action(ExplainStatement(), {"target": "pg", "queryid": select}, preview, actor=operator,
                        db=migrated_store)
    plan = result.figures["plan"].splitlines()
    assert plan[0].startswith("Index Scan using expl_t_pkey on expl_t") and "Index Cond: (id = $1)" in plan[1]

    _, preview = make_preview(ExplainStatement(), {"target": "pg", "queryid": count}, actor=OPERATOR)
    assert preview.statements == ["EXPLAIN SELECT count(*) FROM expl_t"]
    result = run_action(ExplainStatement(), {"target": "pg", "queryid": count}, preview, actor=operator,
                        db=migrated_store)
    assert "Seq Scan on expl_t" in result.figures["plan"]
    assert targets.execute("SELECT count(*) FROM expl_t", dbname=DB) == [(1000,)]

    with pytest.raises(InvalidInput, match="^only a single SELECT is explained: only a single SELECT is explained, "
                                           "not Update"):
        make_preview(ExplainStatement(), {"target": "pg", "queryid": update}, actor=OPERATOR)
    with pytest.raises(InvalidInput, match="is no longer in pg_stat_statements"):
        make_preview(ExplainStatement(), {"target": "pg", "queryid": 12345}, actor=OPERATOR)
    assert [r[2] for r in audit(migrated_store)] == ["done", "done"]

    # what the explain sent is marked as perfdeck's, and the sampler leaves it out
    texts = [r[0] for r in targets.execute("SELECT query FROM pg_stat_statements WHERE query LIKE '%EXPLAIN%'",
                                           dbname=DB)]
    assert texts and all(t.startswith("/* perfdeck dashboard */") for t in texts)
    sampler = DatabaseSampler(name="pg", url=targets.url_for(DB))
    try:
        sampler.collect(utcnow())
        targets.execute("SELECT count(*) FROM expl_t", dbname=DB)
        run_action(ExplainStatement(), {"target": "pg", "queryid": count},
                   make_preview(ExplainStatement(), {"target": "pg", "queryid": count}, actor=OPERATOR)[1],
                   actor=operator, db=migrated_store)
        shown = [row[3] for rows in sampler.collect(utcnow()) if rows.table == "pg_statements" for row in rows.rows]
    finally:
        sampler.close()
    assert "SELECT count(*) FROM expl_t" in shown
    assert not [t for t in shown if "perfdeck" in (t or "") or "EXPLAIN" in (t or "")]
