"""The single-writer discipline for the DuckDB file.

DuckDB lets one process hold a file read-write and then no other process may open it at all. So every
user of the store opens it for one short unit of work and closes it at once:

    with write() as con:      # open, BEGIN, ... COMMIT, close
        con.execute(...)
    with read() as con:       # read-only, closed at once
        con.sql(...).df()

Both retry while another process holds the lock, with bounded jittered backoff, and past the bound
raise StoreLocked naming the file.
"""
from __future__ import annotations

import os
import random
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import duckdb

DEFAULT_DB = Path("data") / "perfdeck.duckdb"


def utcnow() -> datetime:
    """Now as naive UTC, the form of every timestamp in the store."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class StoreLocked(RuntimeError):
    """Another process held the store file for longer than we were willing to wait."""


class StoreMissing(FileNotFoundError):
    """The store file does not exist yet (nothing has been collected)."""


def db_path(path: str | os.PathLike | None = None) -> Path:
    """The store file: explicit argument, then $PERFDECK_DB, then data/perfdeck.duckdb."""
    return Path(path or os.environ.get("PERFDECK_DB") or DEFAULT_DB)


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc)
    return "lock" in text.lower() and ("Conflicting" in text or "Could not set lock" in text)


def _connect(path: Path, *, read_only: bool, timeout: float) -> duckdb.DuckDBPyConnection:
    deadline = time.monotonic() + timeout
    delay = 0.005
    while True:
        try:
            return duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            if not _is_lock_error(exc):
                raise
            if time.monotonic() >= deadline:
                holder = str(exc).split("Conflicting lock is held in", 1)[-1].strip()
                raise StoreLocked(
                    f"the perfdeck store {path} is locked by another process ({holder}); "
                    f"gave up after {timeout:.1f} s"
                ) from exc
        # Full jitter keeps several waiting readers from retrying in lockstep with the writer.
        time.sleep(random.uniform(0, delay))
        delay = min(delay * 2, 0.2)


@contextmanager
def write(path: str | os.PathLike | None = None, *, timeout: float = 30.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the store read-write, run the body in one transaction, commit and close."""
    p = db_path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    con = _connect(p, read_only=False, timeout=timeout)
    try:
        con.begin()
        try:
            yield con
        except BaseException:
            con.rollback()
            raise
        con.commit()
    finally:
        con.close()


@contextmanager
def read(path: str | os.PathLike | None = None, *, timeout: float = 10.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the store read-only for one short unit of work, then close it."""
    p = db_path(path)
    if not p.exists():
        raise StoreMissing(f"no perfdeck store at {p} yet: run `perfdeck collect` (or `perfdeck demo`)")
    con = _connect(p, read_only=True, timeout=timeout)
    try:
        yield con
    finally:
        con.close()


def checkpoint(path: str | os.PathLike | None = None, *, timeout: float = 30.0) -> None:
    """Write the WAL into the store file (CHECKPOINT cannot run inside write()'s transaction)."""
    con = _connect(db_path(path), read_only=False, timeout=timeout)
    try:
        con.execute("CHECKPOINT")
    finally:
        con.close()
