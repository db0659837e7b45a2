"""The one read helper every dashboard query goes through, and the shared time bucketing."""
from __future__ import annotations

import heapq
import itertools
import os
import threading
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

import duckdb
import pandas as pd

from collectors.store import read

DEFAULT_MAX_ROWS = 10_000
DEFAULT_TIMEOUT_S = 15.0


class QueryLimitExceeded(RuntimeError):
    """A dashboard query went past one of its bounds; the page says so instead of hanging."""


class QueryTooSlow(QueryLimitExceeded):
    """The query ran past its time limit and was interrupted."""


class QueryTooBig(QueryLimitExceeded):
    """The query needed more memory than a read connection may use."""


def query_timeout_s() -> float:
    """$PERFDECK_QUERY_TIMEOUT_S, 15 s by default; 0 turns the limit off."""
    return float(os.environ.get("PERFDECK_QUERY_TIMEOUT_S") or DEFAULT_TIMEOUT_S)


class _Watchdog:
    """One thread for every query's time limit: a heap of deadlines (a thread per query would cost
    more than a warm query takes). Finished entries are dropped when they reach the top."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.heap: list[tuple[float, int, _Deadline]] = []
        self.order = itertools.count()
        self.thread: threading.Thread | None = None

    def add(self, deadline: _Deadline) -> None:
        with self.cond:
            heapq.heappush(self.heap, (deadline.at, next(self.order), deadline))
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="perfdeck-query-deadlines", daemon=True)
                self.thread.start()
            self.cond.notify()

    def _run(self) -> None:
        while True:
            with self.cond:
                while self.heap and self.heap[0][2].done:
                    heapq.heappop(self.heap)
                if not self.heap:
                    self.cond.wait()
                    continue
                left = self.heap[0][0] - time.monotonic()
                if left > 0:
                    self.cond.wait(left)
                    continue
                due = heapq.heappop(self.heap)[2]
            due.fire()


_watchdog = _Watchdog()
os.register_at_fork(after_in_child=_watchdog.__init__)   # a forked child starts its own thread


class _Deadline:
    """Interrupt `con` if the block is still running after `seconds` (DuckDB's interrupt() is safe
    from another thread). Only a query of this block is interrupted: once the block has ended,
    firing does nothing."""

    def __init__(self, con: duckdb.DuckDBPyConnection, seconds: float) -> None:
        self.con, self.seconds, self.fired, self.done = con, seconds, False, False
        self.at = time.monotonic() + seconds
        self.lock = threading.Lock()

    def fire(self) -> None:
        with self.lock:
            if not self.done:
                self.fired = True
                self.con.interrupt()

    def __enter__(self) -> _Deadline:
        if self.seconds > 0:
            _watchdog.add(self)
        return self

    def __exit__(self, kind, exc, tb) -> None:
        with self.lock:
            self.done = True
        if isinstance(exc, duckdb.InterruptException) and self.fired:
            raise QueryTooSlow(f"the query ran past its {self.seconds:g} s limit") from exc
        if isinstance(exc, duckdb.OutOfMemoryException):
            raise QueryTooBig(f"the query needed more memory than a read connection may use ({exc})") from exc


def run_query(
    sql: str,
    params: Sequence[Any] | Mapping[str, Any] | None = None,
    *,
    max_rows: int = DEFAULT_MAX_ROWS,
    timeout: float | None = None,
    db: str | os.PathLike | None = None,
    con: duckdb.DuckDBPyConnection | None = None,
) -> tuple[pd.DataFrame, bool]:
    """Run one read-only query and return (frame, truncated).

    Uses `con` when given (a caller running several queries on one connection), otherwise
    `collectors.store.read(db)`. Bounded three ways:
    - time: past `timeout` seconds (default `query_timeout_s()`) the query is interrupted and
      QueryTooSlow raised;
    - memory: read connections carry a `memory_limit` (see `collectors.store.connection`); running
      out raises QueryTooBig;
    - rows: the result is streamed and only max_rows + 1 rows are ever fetched, so a cut-off
      result is flagged rather than silently short, and never materialised whole."""
    if con is None:
        with read(db) as own:
            return run_query(sql, params, max_rows=max_rows, timeout=timeout, con=own)
    with _Deadline(con, query_timeout_s() if timeout is None else timeout):
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
