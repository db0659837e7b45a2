"""The one read helper every dashboard query goes through, and the shared time bucketing."""
from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import duckdb
import pandas as pd

from collectors.store import read

DEFAULT_MAX_ROWS = 10_000


def run_query(
    sql: str,
    params: Sequence[Any] | Mapping[str, Any] | None = None,
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    db: str | os.PathLike | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> tuple[pd.DataFrame, bool]:
    """Run one read-only query and return (frame, truncated).

    Uses `con` when given (a caller running several queries on one short connection), otherwise
    opens `collectors.store.read(db)` and closes it at once. Fetches max_rows + 1 so a cut-off
    result is flagged rather than silently short."""
    if con is None:
        with read(db) as own:
            return run_query(sql, params, max_rows=max_rows, con=own)
    cur = con.execute(sql, params or [])
    # Chunked fetch keeps DuckDB's column types even for an empty result (fetchmany would not).
    chunks = [cur.fetch_df_chunk()]
    seen = len(chunks[0])
    while seen <= max_rows:
        chunk = cur.fetch_df_chunk()
        if chunk.empty:
            break
        chunks.append(chunk)
        seen += len(chunk)
    df = pd.concat(chunks, ignore_index=True) if len(chunks) > 1 else chunks[0]
    truncated = len(df) > max_rows
    df = df.iloc[:max_rows]
    df.attrs["truncated"] = truncated
    return df, truncated


def bucket_seconds(since: datetime, until: datetime) -> int:
    """Chart time-bucket width for a range: ~100-300 points whatever the range."""
    span = (until - since).total_seconds()
    if span <= 3 * 3600:
        return 60
    if span <= 24 * 3600:
        return 300
    if span <= 7 * 86400:
        return 3600
    return 6 * 3600
