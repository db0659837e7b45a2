"""The DuckLake store's read and write semantics against a real PostgreSQL catalog: a read block is one
snapshot, a reader never creates a lake, and a catalog that answers "no" is a configuration error rather
than an outage to wait out."""
from __future__ import annotations

import threading

import pytest
from helpers import free_port

from collectors.store import connection, lake, migrate
from tests.pg import lake_store, pg_cluster  # noqa: F401  (the fixtures)


def open_failing(store, error: type[Exception], use: str = "read", **match) -> pytest.ExceptionInfo:
    """What opening `store` to read (or write) raises, which must be `error`; the lake detached after."""
    try:
        with pytest.raises(error, **match) as caught:
            with getattr(connection, use)(store) as con:
                con.execute("SELECT 1")
    finally:
        lake.close_all()
    return caught


def test_a_read_block_is_one_snapshot(lake_store):  # noqa: F811
    with connection.write(lake_store) as con:
        migrate(con)
        con.execute("INSERT INTO deploys VALUES (now()::TIMESTAMP, 'api', 'v1', NULL)")

    def deploy_again() -> None:
        with connection.write(lake_store) as con:
            con.execute("INSERT INTO deploys VALUES (now()::TIMESTAMP, 'api', 'v2', NULL)")

    with connection.read(lake_store) as con:
        before = con.execute("SELECT count(*) FROM deploys").fetchone()[0]
        writer = threading.Thread(target=deploy_again)
        writer.start()
        writer.join(30)
        during = con.execute("SELECT count(*) FROM deploys").fetchone()[0]
    with connection.read(lake_store) as con:
        after = con.execute("SELECT count(*) FROM deploys").fetchone()[0]
    assert (before, during, after) == (1, 1, 2)


def test_a_reader_does_not_make_a_lake_of_an_empty_database(pg_cluster, tmp_path, monkeypatch):  # noqa: F811
    pg_cluster.create_database("not_a_lake_yet")
    monkeypatch.setenv(lake.DATA_PATH_ENV, str(tmp_path))
    store = connection.db_path(f"ducklake:postgres:host=127.0.0.1 port={pg_cluster.port} user=postgres "
                               f"dbname=not_a_lake_yet")
    open_failing(store, connection.StoreMissing, match="no perfdeck store at .* yet: run `perfdeck collect`")
    assert pg_cluster.execute("SELECT count(*) FROM pg_tables WHERE tablename LIKE 'ducklake%'",
                              dbname="not_a_lake_yet") == [(0,)]


@pytest.mark.parametrize("use", ["read", "write"])
def test_a_catalog_that_says_no_is_misconfigured_not_away(pg_cluster, tmp_path, monkeypatch, use):  # noqa: F811
    """A database that does not exist (like a wrong password) will not come back by waiting: LakeUnavailable,
    which the collector and the dashboard report as such, not StoreUnavailable."""
    monkeypatch.setenv(lake.DATA_PATH_ENV, str(tmp_path))
    store = connection.db_path(f"ducklake:postgres:host=127.0.0.1 port={pg_cluster.port} user=postgres "
                               f"dbname=no_such_database password=hunter2")
    caught = open_failing(store, lake.LakeUnavailable, use)
    assert not isinstance(caught.value, connection.StoreUnavailable)
    assert 'database "no_such_database" does not exist' in str(caught.value)
    assert "hunter2" not in str(caught.value)


def test_a_catalog_that_does_not_answer_is_away(tmp_path, monkeypatch):
    monkeypatch.setenv(lake.DATA_PATH_ENV, str(tmp_path))
    store = connection.db_path(f"ducklake:postgres:host=127.0.0.1 port={free_port()} user=postgres dbname=x")
    open_failing(store, connection.StoreUnavailable, match="is not answering")
