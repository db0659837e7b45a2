"""instrument_sqlalchemy against real databases: SQLite always, PostgreSQL when one answers at
postgresql://postgres@127.0.0.1:5432/test (and a driver is installed). Events go through the real SDK
into a spool directory, and the test reads the batch files the daemon would ingest."""
from __future__ import annotations

import socket

import pytest
from helpers import spooled
from sqlalchemy import create_engine, text
from sqlalchemy.exc import DBAPIError

from collectors import sdk
from collectors.integrations.sqlalchemy import CONTEXT_ATTR, instrument_sqlalchemy, uninstrument_sqlalchemy

PG_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/test"


def _queries(spool_dir) -> dict[str, dict]:
    """fingerprint -> {"calls", "total_ms", "database", "sample_sql"} over every spooled batch."""
    out: dict[str, dict] = {}
    for row in spooled(spool_dir, "queries"):
        agg = out.setdefault(row["fingerprint"], {"calls": 0, "total_ms": 0.0, "database": set(),
                                                       "sample_sql": row["sample_sql"]})
        agg["calls"] += row["calls"]
        agg["total_ms"] += row["total_ms"]
        agg["database"].add(row["database"])
    return out


def _exercise(engine, table: str) -> None:
    with engine.begin() as conn:
        conn.execute(text(f"DROP TABLE IF EXISTS {table}"))
        conn.execute(text(f"CREATE TABLE {table} (id INTEGER PRIMARY KEY, name VARCHAR(40))"))
        conn.execute(text(f"INSERT INTO {table} (id, name) VALUES (:id, :name)"),
                     [{"id": i, "name": f"n{i}"} for i in range(50)])
    with engine.connect() as conn:
        for i in range(7):
            result = conn.execute(text(f"SELECT name FROM {table} WHERE id = :id"), {"id": i})
            assert result.scalar_one() == f"n{i}"
            assert getattr(result.context, CONTEXT_ATTR) >= 0
        conn.execute(text(f"SELECT count(*) FROM {table} WHERE name = 'n3'")).scalar_one()
        with pytest.raises(DBAPIError):
            conn.execute(text(f"SELECT no_such_column FROM {table}"))


def test_sqlite_statements_are_recorded(tmp_path, sdk_spool):
    engine = create_engine(f"sqlite:///{tmp_path / 'app.sqlite'}")
    assert instrument_sqlalchemy(engine) is True
    assert instrument_sqlalchemy(engine) is False          # idempotent: no double counting
    _exercise(engine, "items")
    q = _queries(sdk_spool)
    lookup = q["SELECT name FROM items WHERE id = ?"]
    assert lookup["calls"] == 7
    assert lookup["total_ms"] > 0
    assert lookup["database"] == {str(tmp_path / "app.sqlite")}      # engine.url.database by default
    assert q["SELECT count(*) FROM items WHERE name = ?"]["calls"] == 1
    assert q["INSERT INTO items (id, name) VALUES (?)"]["calls"] == 1   # executemany counts once
    assert not any("no_such_column" in fp for fp in q)                   # failed statements are not
    engine.dispose()


def test_explicit_database_name_and_uninstrument(tmp_path, sdk_spool):
    engine = create_engine(f"sqlite:///{tmp_path / 'app.sqlite'}")
    instrument_sqlalchemy(engine, database="shop")
    with engine.connect() as conn:
        conn.execute(text("SELECT 1")).all()
    assert uninstrument_sqlalchemy(engine) is True
    with engine.connect() as conn:
        conn.execute(text("SELECT 2")).all()
    q = _queries(sdk_spool)
    assert q["SELECT ?"]["calls"] == 1
    assert q["SELECT ?"]["database"] == {"shop"}


def test_never_raises_into_the_app(tmp_path, monkeypatch, sdk_spool):
    engine = create_engine(f"sqlite:///{tmp_path / 'app.sqlite'}")
    instrument_sqlalchemy(engine)

    def broken(*_a, **_k):
        raise RuntimeError("sdk is broken")

    monkeypatch.setattr(sdk, "record_query", broken)
    with engine.connect() as conn:
        assert conn.execute(text("SELECT 41 + 1")).scalar_one() == 42
    assert instrument_sqlalchemy(object()) is False      # not an engine: refused quietly


def _postgres_or_skip():
    try:
        import psycopg  # noqa: F401
    except ImportError:
        pytest.skip("no PostgreSQL driver (pip install 'psycopg[binary]')")
    try:
        socket.create_connection(("127.0.0.1", 5432), timeout=1).close()
    except OSError:
        pytest.skip("no PostgreSQL on 127.0.0.1:5432")
    engine = create_engine(PG_URL)
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
    except Exception as exc:
        pytest.skip(f"PostgreSQL at {PG_URL} not usable: {exc}")
    return engine


def test_postgresql_statements_are_recorded(sdk_spool):
    engine = _postgres_or_skip()
    instrument_sqlalchemy(engine)
    instrument_sqlalchemy(engine)
    _exercise(engine, "perfdeck_itest_items")
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE perfdeck_itest_items"))
    q = _queries(sdk_spool)
    lookup = q["SELECT name FROM perfdeck_itest_items WHERE id = ?"]   # %(id)s fingerprints to ?
    assert lookup["calls"] == 7
    assert lookup["database"] == {"test"}
    assert q["SELECT count(*) FROM perfdeck_itest_items WHERE name = ?"]["calls"] == 1
    engine.dispose()
