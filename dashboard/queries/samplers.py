"""Shared by the sampler-backed pages (Caches, Database, Host): label parsing and component status.

Sampler metrics are stored long format with labels as "k=v,k2=v2" strings; `label_sql` is the one
place that parses them, in SQL, so every query pulls a label out the same way."""
from __future__ import annotations

import duckdb
import pandas as pd

from dashboard.queries._run import run_query


def label_sql(key: str, *, col: str = "labels", rest: bool = False) -> str:
    """SQL for the value of label `key` in `col` (NULL when absent). `rest=True` takes everything
    after "key=" (for Redis namespaces, whose prefix is written as is and may hold commas).
    `key` and `col` must be code constants, never user values."""
    if not key.isidentifier() or not col.isidentifier():
        raise ValueError(f"label key and column must be identifiers: {key!r}, {col!r}")
    pattern = f"^{key}=(.*)$" if rest else f"(?:^|,){key}=([^,]*)"
    return f"nullif(regexp_extract({col}, '{pattern}', 1), '')"


COMPONENT_STATUS_SQL = """
SELECT name, kind, target, status, since, last_ok, checked_at, error
FROM components
WHERE kind = $kind
ORDER BY status = 'up', name
"""


def component_status(con: duckdb.DuckDBPyConnection, *, kind: str) -> pd.DataFrame:
    """[name, kind, target, status, since, last_ok, checked_at, error] of the watched components of
    one kind ('redis', 'database', 'host'), the down ones first. Targets are already masked."""
    df, _ = run_query(COMPONENT_STATUS_SQL, {"kind": kind}, max_rows=500, con=con)
    return df
