"""The action framework's rules, through the store actions on a real DuckDB file: a viewer is refused and
audited, a destructive action needs its typed confirmation, every run leaves one audit row with its
outcome, the preview's counts are what the run then does, Abort stops between tables."""
from __future__ import annotations

import json
from datetime import timedelta

import pytest

from collectors.store import read, utcnow, write
from dashboard.actions import VIEWER, Aborted, InvalidInput, NotAuthorized, Progress, make_preview, run_action
from dashboard.actions.store_actions import CompactStore, PurgeRawData
from dashboard.queries import audit_facets, audit_log
from tests.helpers import OPERATOR, count, query
from tests.seed_store import seed_store


@pytest.fixture
def seeded(store):
    seed_store(store, days=3)
    return store


def audit_rows(db) -> list[dict]:
    rows = query(db, "SELECT actor, action, target, outcome, params, result, error, figures, preview "
                     "FROM action_audit ORDER BY id")
    keys = ("actor", "action", "target", "outcome", "params", "result", "error", "figures", "preview")
    return [dict(zip(keys, r)) for r in rows]


def test_purge_deletes_exactly_what_the_preview_counted(seeded, operator):
    action = PurgeRawData(seeded)
    params, preview = make_preview(action, {"days": 1}, actor=OPERATOR)
    cutoff = utcnow() - timedelta(days=1)
    older = count(seeded, "request_events", f"ts < TIMESTAMP '{cutoff:%Y-%m-%d %H:%M:%S}'")
    assert older > 10_000 and preview.rows[0] == {"table": "request_events", "rows to delete": preview.count}
    assert preview.confirm == "perfdeck.duckdb"
    rollups_before = count(seeded, "latency_hist")

    result = run_action(action, params, preview, actor=operator, confirmation="perfdeck.duckdb", db=seeded)

    assert result.figures["rows_deleted"] == preview.count
    assert result.figures["by_table"]["request_events"] == preview.data["counts"]["request_events"]
    assert count(seeded, "request_events", f"ts < TIMESTAMP '{cutoff - timedelta(minutes=1):%Y-%m-%d %H:%M:%S}'") == 0
    assert count(seeded, "latency_hist") == rollups_before          # rollups keep their history
    [row] = audit_rows(seeded)
    assert row["actor"] == "test-operator" and row["action"] == "store.purge_raw" and row["target"] == "store"
    assert row["outcome"] == "done" and json.loads(row["params"]) == {"days": 1}
    assert json.loads(row["figures"])["rows_deleted"] == preview.count
    assert row["preview"].startswith(f"Delete {preview.count:,} raw rows older than 1 days")


def test_a_viewer_is_refused_and_the_refusal_is_audited(seeded):
    action = PurgeRawData(seeded)
    params, preview = make_preview(action, {"days": 1}, actor=OPERATOR)
    before = count(seeded, "request_events")
    with pytest.raises(NotAuthorized, match="operator role"):
        run_action(action, params, preview, actor=VIEWER, confirmation="perfdeck.duckdb", db=seeded)
    assert count(seeded, "request_events") == before
    [row] = audit_rows(seeded)
    assert (row["actor"], row["outcome"], row["error"]) == ("anonymous", "refused", "the operator role is needed")


def test_a_destructive_action_needs_the_typed_confirmation(seeded, operator):
    action = PurgeRawData(seeded)
    params, preview = make_preview(action, {"days": 1}, actor=OPERATOR)
    before = count(seeded, "request_events")
    for typed in (None, "", "perfdeck", "PERFDECK.DUCKDB"):
        with pytest.raises(NotAuthorized, match="type 'perfdeck.duckdb' to confirm"):
            run_action(action, params, preview, actor=operator, confirmation=typed, db=seeded)
    assert count(seeded, "request_events") == before
    assert [r["outcome"] for r in audit_rows(seeded)] == ["refused"] * 4


@pytest.mark.parametrize("days", [0, -3, 1.5, "7; DROP TABLE request_events", None, True, 100_000])
def test_bad_parameters_are_refused_with_a_clear_message(seeded, operator, days):
    with pytest.raises(InvalidInput, match="days must be a whole number from 1 to 3650"):
        make_preview(PurgeRawData(seeded), {"days": days}, actor=OPERATOR)


def test_run_without_a_preview_is_refused(seeded, operator):
    with pytest.raises(NotAuthorized, match="preview the action first"):
        run_action(PurgeRawData(seeded), {"days": 1}, None, actor=operator, db=seeded)


def test_abort_between_tables_leaves_whole_tables_and_an_aborted_row(seeded, operator):
    with write(seeded) as con:     # old rows in two raw tables, so there are two steps to stop between
        con.execute("INSERT INTO sdk_health (ts, service, host, pid, dropped, send_errors) "
                    "VALUES (?, 'api', 'web-1', 1, 0, 0)", [utcnow() - timedelta(days=2)])
    action = PurgeRawData(seeded)
    params, preview = make_preview(action, {"days": 1}, actor=OPERATOR)
    assert preview.data["counts"]["sdk_health"] == 1

    def abort_after_first_table(p: Progress) -> None:
        if p.done:
            p.abort()

    with pytest.raises(Aborted):
        run_action(action, params, preview, actor=operator, confirmation="perfdeck.duckdb",
                   progress=Progress(abort_after_first_table), db=seeded)
    assert count(seeded, "request_events", f"ts < TIMESTAMP '{utcnow() - timedelta(days=1, minutes=1):%Y-%m-%d %H:%M:%S}'") == 0
    assert count(seeded, "sdk_health") == 1       # the next table was not touched
    [row] = audit_rows(seeded)
    assert row["outcome"] == "aborted"
    assert json.loads(row["figures"])["done"] == preview.data["counts"]["request_events"]


def test_compact_merges_duplicate_rollup_rows_and_keeps_the_sums(seeded, operator):
    with write(seeded) as con:      # the same minute written twice, as two ingest batches would
        con.execute("INSERT INTO latency_hist SELECT * FROM latency_hist LIMIT 500")
        total = con.execute("SELECT sum(count) FROM latency_hist").fetchone()[0]
    action = CompactStore(seeded)
    params, preview = make_preview(action, {}, actor=OPERATOR)
    assert preview.count == 500 and preview.confirm is None
    result = run_action(action, params, preview, actor=operator, db=seeded)
    assert result.figures["rows_merged"] == 500
    with read(seeded) as con:
        assert con.execute("SELECT sum(count) FROM latency_hist").fetchone()[0] == total
    assert audit_rows(seeded)[0]["outcome"] == "done"


def test_store_actions_say_when_there_is_no_store(tmp_path):
    action = PurgeRawData(tmp_path / "gone.duckdb")
    assert action.available() == "no store at gone.duckdb yet"


def test_audit_queries_filter_and_list_facets(seeded, operator):
    action = CompactStore(seeded)
    params, preview = make_preview(action, {}, actor=OPERATOR)
    run_action(action, params, preview, actor=operator, db=seeded)
    with pytest.raises(NotAuthorized):
        run_action(action, params, preview, actor=VIEWER, db=seeded)
    now = utcnow()
    with read(seeded) as con:
        everything = audit_log(con, since=now - timedelta(hours=1), until=now + timedelta(minutes=1))
        refused = audit_log(con, since=now - timedelta(hours=1), until=now + timedelta(minutes=1), outcome="refused")
        facets = audit_facets(con)
    assert everything["outcome"].tolist() == ["refused", "done"]
    assert refused["actor"].tolist() == ["anonymous"]
    assert facets[facets.facet == "outcome"]["value"].tolist() == ["done", "refused"]
    assert facets[facets.facet == "action"]["value"].tolist() == ["store.compact"]


def test_a_target_gone_between_preview_and_run_is_an_audited_failure(migrated_store, operator, tmp_path, monkeypatch):
    import sqlite3

    from dashboard.actions import ActionError
    from dashboard.actions.database_actions import Analyze

    path = tmp_path / "app.sqlite"
    with sqlite3.connect(path) as con:
        con.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER)")
    monkeypatch.setenv("PERFDECK_DATABASE_URLS", f"app=sqlite:///{path}")
    params, preview = make_preview(Analyze(), {"target": "app", "table": "orders"}, actor=OPERATOR)
    path.unlink()
    with pytest.raises(ActionError):
        run_action(Analyze(), params, preview, actor=operator, db=migrated_store)
    [row] = audit_rows(migrated_store)
    assert (row["action"], row["target"], row["outcome"]) == ("database.analyze", "database:app", "failed")
    assert row["error"]


def test_cache_actions_are_listed_for_chart_markers(migrated_store, operator):
    from dashboard.actions import Actor
    from dashboard.actions.audit import record
    from dashboard.queries import cache_actions

    for action, target, outcome in [("app_cache.clear", "app-cache:product_lru", "done"),
                                    ("redis.bump_cache_version", "redis:cache", "done"),
                                    ("redis.delete_keys", "redis:cache", "failed"),
                                    ("store.compact", "store", "done")]:
        record(migrated_store, actor=Actor("op", role="operator"), action=action, target=target, params={},
               preview=None, outcome=outcome)
    now = utcnow()
    with read(migrated_store) as con:
        df = cache_actions(con, since=now - timedelta(hours=1), until=now + timedelta(minutes=1))
    assert df["label"].tolist() == ["cleared product_lru", "bumped cache"]
