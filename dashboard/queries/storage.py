"""How much room the store takes. The DuckDB file's size is its own (`Path.stat()`); a lake's data are
Parquet files that its catalog lists (DuckLake's ducklake_data_file and ducklake_delete_file tables, read
through the catalog database DuckLake attaches beside the lake), so its figures come from there:

- live: the data files of the current snapshot, what every query reads;
- kept: files that only older snapshots still reference (time travel), removed once those snapshots
  expire and the files have been unused for a while (both collectors.store.lake.KEEP_SNAPSHOTS);
- scheduled: files no snapshot references any more, waiting out that time before the next maintenance
  deletes them (the catalog keeps no size for them).
"""
from __future__ import annotations

import os
import shlex
from pathlib import Path

import duckdb
import pandas as pd

from collectors.store.connection import DEFAULT_DB
from collectors.store.lake import CATALOG, DATA_PATH_ENV, Lake
from dashboard.queries._run import run_query

METADATA = f"__ducklake_metadata_{CATALOG}"     # where DuckLake attaches the lake's catalog database

def store_name(store: Path | Lake) -> str:
    """The store for people: the file's path, or the lake without its secrets (never `str()` of a spec)."""
    return store.name if isinstance(store, Lake) else str(store)


def cli_command(store: Path | Lake, args: str) -> str:
    """A `perfdeck` command line for this store, to show an operator: no --db for the default file; a lake
    as its spec without secrets (the operator puts a password back, or leaves it to ~/.pgpass), with its
    data path set before it."""
    if isinstance(store, Lake):
        return f"{DATA_PATH_ENV}={shlex.quote(store.data_path)} perfdeck {args} --db {shlex.quote(str(store))}"
    return f"perfdeck {args}" + ("" if store == DEFAULT_DB else f" --db {shlex.quote(str(store))}")


LAKE_STORAGE_SQL = f"""
WITH files AS (
    SELECT end_snapshot IS NULL AS live, file_size_bytes AS bytes
    FROM {METADATA}.ducklake_data_file
    UNION ALL
    SELECT end_snapshot IS NULL, file_size_bytes
    FROM {METADATA}.ducklake_delete_file
)
SELECT
    count(*) FILTER (WHERE live)                         AS live_files,
    coalesce(sum(bytes) FILTER (WHERE live), 0)          AS live_bytes,
    count(*) FILTER (WHERE NOT live)                     AS kept_files,
    coalesce(sum(bytes) FILTER (WHERE NOT live), 0)      AS kept_bytes,
    (SELECT count(*) FROM {METADATA}.ducklake_files_scheduled_for_deletion) AS scheduled_files,
    (SELECT count(*) FROM {METADATA}.ducklake_snapshot)  AS snapshots
FROM files
"""


def lake_storage(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """One row: [live_files, live_bytes, kept_files, kept_bytes, scheduled_files, snapshots] of the lake
    `con` reads (see the module's docstring)."""
    df, _ = run_query(LAKE_STORAGE_SQL, con=con)
    return df


def folder_bytes(path: str) -> int | None:
    """Bytes of the files under a local data folder (everything on disk, files waiting for deletion
    included); None for an object store (s3://...) or a folder that cannot be read."""
    if "://" in path:
        return None
    total = 0
    try:
        for root, _dirs, files in os.walk(path):
            for name in files:
                try:
                    total += (Path(root) / name).stat().st_size
                except OSError:
                    pass      # removed by a maintenance run meanwhile
    except OSError:
        return None
    return total
