"""Small helpers shared by tests."""
from __future__ import annotations

import duckdb


def count(db, table: str, where: str = "TRUE") -> int:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0]
    finally:
        con.close()


def query(db, sql: str, params=()) -> list[tuple]:
    con = duckdb.connect(str(db), read_only=True)
    try:
        return con.execute(sql, list(params)).fetchall()
    finally:
        con.close()


def run_app(script: str):
    """Run a dashboard script in Streamlit's AppTest and fail on any exception it shows."""
    from streamlit.testing.v1 import AppTest

    at = AppTest.from_file(script, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at
