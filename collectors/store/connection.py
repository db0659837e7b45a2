"""The single-writer discipline for the DuckDB file. (A lake, `ducklake:postgres:...`, is read and written
through the same read(), write() and checkpoint(), with no file lock: see collectors.store.lake.)

DuckDB lets one process hold a file read-write and then no other process may open it at all. So a
writer opens the store for one short unit of work and closes it at once:

    with write() as con:      # open, BEGIN, ... COMMIT, close
        con.execute(...)
    with read() as con:       # a read-only cursor, closed at the end of the block
        con.sql(...).df()

Both retry while another process holds the lock, with bounded jittered backoff, and past the bound
raise StoreLocked naming the file.

Warm reads. The first query on a freshly opened file pays for loading the catalogue and the blocks
it touches (measured 156 ms against 12.6 ms warm on a large store; `bench/read_connection.py`). So a
long-running reader keeps its read-only connection open between `read()` blocks and hands each block a
cursor of it, for as long as nobody wants to write. Only the dashboard does (`perfdeck dashboard` sets
`PERFDECK_READ_KEEP_S`): a one-shot process (the CLI, the collector, a test) gains nothing, and the
watcher thread below closing a connection as the interpreter exits can abort the process ("FATAL:
exception not rethrown": DuckDB called from a daemon thread at exit), which would lose a CLI's exit
code. The rule while a connection is kept:
- a writer announces itself before and while it waits for the lock, by touching `<store>.write-wanted`
  beside the file (and removes it when done); a watcher thread in every process holding a read
  connection sees it within 20 ms, stops handing the connection out and closes it once the blocks in
  flight end (each is bounded by the dashboard's query time limit). A `read()` that finds a writer
  announced waits for it to finish (up to 2 s; past that, or when the announcement is stale, it
  opens a connection of its own and closes it at once, as before), so a stream of readers cannot
  keep a writer out;
- a writer in the same process waits for that process's readers and closes the shared connection
  first (DuckDB will not open one file read-only and read-write in one process);
- an idle shared connection is closed after `PERFDECK_READ_KEEP_S` seconds (0, the default, turns reuse
  off; the dashboard's 30), and
  one whose file was replaced or changed is never handed out again.
A reader holding the file always sees the data as it is on disk, since no writer can get in while it
is held; the next `read()` after a write opens the file afresh.

Every read connection has `memory_limit` (`PERFDECK_READ_MEMORY_LIMIT`, 1GB) and `threads`
(`PERFDECK_READ_THREADS`, the cores up to 4) set, so one heavy page cannot take the machine's memory.
"""
from __future__ import annotations

import atexit
import os
import random
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import duckdb

from collectors.store import lake

DEFAULT_DB = Path("data") / "perfdeck.duckdb"
DEFAULT_READ_MEMORY_LIMIT = "1GB"
DEFAULT_READ_KEEP_S = 0.0          # the dashboard's: DASHBOARD_READ_KEEP_S
DASHBOARD_READ_KEEP_S = 30.0
WATCH_INTERVAL_S = 0.02
# A write announcement older than this is a writer that died without removing it: ignored. A writer
# still waiting for the lock touches it again at every retry (at most 0.2 s apart).
INTENT_STALE_S = 10.0
# How long a read waits for an announced writer before opening a connection of its own regardless.
WRITER_GRACE_S = 2.0


def utcnow() -> datetime:
    """Now as naive UTC, the form of every timestamp in the store."""
    return datetime.now(timezone.utc).replace(tzinfo=None)


class StoreLocked(RuntimeError):
    """Another process held the store file for longer than we were willing to wait."""


class StoreBusy(StoreLocked):
    """On a lake: another writer's commit conflicted with this one's, which wrote nothing. Like a lock,
    the store's state and not the data's: the same write is tried again."""


class StoreUnavailable(StoreLocked):
    """On a lake: its catalog database or its data path did not answer. Waited out like a lock: the
    collector keeps its batches and tries again, the dashboard says so and reads again later."""


class StoreMissing(FileNotFoundError):
    """The store file does not exist yet (nothing has been collected)."""


def db_path(path: str | os.PathLike | lake.Lake | None = None) -> Path | lake.Lake:
    """The store: explicit argument, then $PERFDECK_DB, then data/perfdeck.duckdb. A `ducklake:` spec is a
    lake (collectors.store.lake), which read() and write() take like a file."""
    spec = path or os.environ.get("PERFDECK_DB") or DEFAULT_DB
    if isinstance(spec, lake.Lake):
        return spec
    if lake.is_lake(spec):
        return lake.parse(str(spec))
    return Path(spec)


def store_spec(store: Path | lake.Lake) -> str:
    """What names the store to read() and to a child process: the file's path, or the lake's whole spec. A
    lake's str() is redacted, and a catalog whose password is masked cannot be reached: so never str()."""
    return store.spec if isinstance(store, lake.Lake) else str(store)


def next_id(con: duckdb.DuckDBPyConnection, table: str) -> int:
    """The id of a row about to be inserted into `table` (alerts, silences, action_audit): one more than the
    largest. Race-free on both backends: the file has one writer, and on the lake such rows are written
    under the exclusive write lock. (DuckLake has neither sequences nor RETURNING.)"""
    return con.execute(f'SELECT coalesce(max(id), 0) + 1 FROM "{table}"').fetchone()[0]


def read_settings() -> dict[str, str]:
    """DuckDB settings applied to every read connection: $PERFDECK_READ_MEMORY_LIMIT (a DuckDB size such
    as 1GB or 512MiB) and $PERFDECK_READ_THREADS."""
    threads = os.environ.get("PERFDECK_READ_THREADS") or str(min(os.cpu_count() or 1, 4))
    return {"memory_limit": os.environ.get("PERFDECK_READ_MEMORY_LIMIT") or DEFAULT_READ_MEMORY_LIMIT,
            "threads": str(int(threads))}


def _keep_s() -> float:
    return float(os.environ.get("PERFDECK_READ_KEEP_S") or DEFAULT_READ_KEEP_S)


def _is_lock_error(exc: Exception) -> bool:
    text = str(exc)
    return "lock" in text.lower() and ("Conflicting" in text or "Could not set lock" in text)


def _connect(path: Path, *, read_only: bool, timeout: float,
             waiting: Callable[[], None] | None = None) -> duckdb.DuckDBPyConnection:
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
        if waiting:
            waiting()
        # Full jitter keeps several waiting readers from retrying in lockstep with the writer.
        time.sleep(random.uniform(0, delay))
        delay = min(delay * 2, 0.2)


# -- write announcements -----------------------------------------------------------------------
def _intent_file(path: Path) -> Path:
    return path.with_name(path.name + ".write-wanted")


def _announce(path: Path) -> None:
    try:
        _intent_file(path).touch()
    except OSError:
        pass  # a read-only folder: nobody can write the store there anyway


def _write_wanted(path: Path) -> bool:
    try:
        return time.time() - _intent_file(path).stat().st_mtime < INTENT_STALE_S
    except OSError:
        return False


def _yield_to_writer(path: Path, deadline: float) -> bool:
    """Let an announced writer go first: wait (at most WRITER_GRACE_S) until it is done, so a stream of
    readers cannot keep it out. True when one is still announced (the read then keeps no connection)."""
    if not _write_wanted(path):
        return False
    until = min(deadline, time.monotonic() + WRITER_GRACE_S)
    while time.monotonic() < until:
        time.sleep(0.01)
        if not _write_wanted(path):
            return False
    return True


# -- the shared read connection ------------------------------------------------------------------
def _identity(st: os.stat_result) -> tuple:
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns


@dataclass(eq=False)
class _Shared:
    path: Path
    con: duckdb.DuckDBPyConnection
    identity: tuple
    users: int = 0
    last_used: float = field(default_factory=time.monotonic)
    retired: bool = False


class _Reads:
    """Per process: one shared read-only connection per store file, the blocks reading it, and the
    writers of this process waiting for them."""

    def __init__(self) -> None:
        self.cond = threading.Condition()
        self.shared: dict[str, _Shared] = {}
        self.active: dict[str, int] = {}      # read() blocks in flight, shared or not
        self.writing: dict[str, int] = {}     # write() blocks of this process in flight
        self.watcher: threading.Thread | None = None
        self.mine = threading.local()         # stores this thread is reading now
        self.stopping = False                 # the interpreter is exiting: share nothing any more

    def _wait(self, ready: Callable[[], bool], deadline: float, path: Path, what: str) -> None:
        while not ready():
            left = deadline - time.monotonic()
            if left <= 0:
                raise StoreLocked(f"the perfdeck store {path} is held by {what} in this process; gave up waiting")
            self.cond.wait(left)

    def _retire(self, key: str, entry: _Shared) -> None:
        """Hand `entry` out no more; close it now if nobody is reading it (else at its last release)."""
        if self.shared.get(key) is entry:
            del self.shared[key]
        entry.retired = True
        if entry.users == 0:
            entry.con.close()
        self.cond.notify_all()

    @contextmanager
    def reading(self, path: Path, timeout: float) -> Iterator[duckdb.DuckDBPyConnection]:
        key, deadline = os.path.abspath(path), time.monotonic() + timeout
        wanted = _yield_to_writer(path, deadline)
        try:
            identity = _identity(path.stat())
        except FileNotFoundError:
            raise StoreMissing(f"no perfdeck store at {path} yet: run `perfdeck collect` (or `perfdeck demo`)") from None
        with self.cond:
            self._wait(lambda: not self.writing.get(key), deadline, path, "a writer")
            self.active[key] = self.active.get(key, 0) + 1
            self.mine.keys = getattr(self.mine, "keys", ()) + (key,)
            entry = self.shared.get(key)
            if entry and (wanted or entry.identity != identity):
                self._retire(key, entry)      # a writer waits, or the file was replaced
                entry = None
            if entry:
                entry.users += 1
        try:
            if entry is None and not wanted and _keep_s() > 0 and not self.stopping:
                entry = self._open(key, path, identity, deadline)
            if entry is None:                 # a connection of our own, closed at once
                con = _connect(path, read_only=True, timeout=max(deadline - time.monotonic(), 0.0))
                try:
                    _configure(con)
                    yield con
                finally:
                    con.close()
                return
            cur = entry.con.cursor()
            try:
                yield cur
            finally:
                cur.close()
        finally:
            with self.cond:
                self.active[key] -= 1
                keys = list(self.mine.keys)
                keys.remove(key)
                self.mine.keys = tuple(keys)
                if entry is not None:
                    entry.users -= 1
                    entry.last_used = time.monotonic()
                    if entry.retired and entry.users == 0:
                        entry.con.close()
                self.cond.notify_all()

    def _open(self, key: str, path: Path, identity: tuple, deadline: float) -> _Shared:
        """Open the shared connection, counted as used once."""
        con = _connect(path, read_only=True, timeout=max(deadline - time.monotonic(), 0.0))
        try:
            _configure(con)
        except BaseException:
            con.close()
            raise
        entry = _Shared(path, con, identity, users=1)
        with self.cond:
            other = self.shared.get(key)
            if other is not None and other.identity == identity:
                # Another thread opened it meanwhile: both are one DuckDB instance, use theirs.
                other.users += 1
                con.close()
                return other
            if other is not None:
                self._retire(key, other)
            if self.writing.get(key):          # a write() of this process began meanwhile: ours is single-use
                entry.retired = True
                return entry
            self.shared[key] = entry
            if self.watcher is None or not self.watcher.is_alive():
                self.watcher = threading.Thread(target=self._watch, name="perfdeck-read-watcher", daemon=True)
                self.watcher.start()
        return entry

    def _watch(self) -> None:
        while True:
            time.sleep(WATCH_INTERVAL_S)
            with self.cond:
                if self.stopping:
                    return
                entries = list(self.shared.items())
            # Stat outside the lock: readers never wait on the file system for the watcher.
            retire = [(k, e) for k, e in entries if _write_wanted(e.path)]
            now, keep = time.monotonic(), _keep_s()
            with self.cond:
                retire += [(k, e) for k, e in entries if e.users == 0 and now - e.last_used > keep]
                for key, entry in retire:
                    if not entry.retired:
                        self._retire(key, entry)
                if not self.shared:
                    self.watcher = None
                    return

    @contextmanager
    def exclusive(self, path: Path, timeout: float) -> Iterator[None]:
        """While a write() of this process runs: no read of this process holds the file."""
        key, deadline = os.path.abspath(path), time.monotonic() + timeout
        if key in getattr(self.mine, "keys", ()):
            raise RuntimeError(f"write() to {path} inside a read() of it on the same thread: close the read first")
        with self.cond:
            self.writing[key] = self.writing.get(key, 0) + 1
            try:
                if key in self.shared:
                    self._retire(key, self.shared[key])
                self._wait(lambda: not self.active.get(key), deadline, path, "a read still running")
            except BaseException:
                self._done_writing(key)
                raise
        try:
            yield
        finally:
            with self.cond:
                self._done_writing(key)

    def _done_writing(self, key: str) -> None:
        self.writing[key] -= 1
        if not self.writing[key]:
            del self.writing[key]
        self.cond.notify_all()

    def close(self, path: str | os.PathLike | None = None) -> None:
        """Stop reusing this process's shared connection to `path` (every store when None): closed now
        if idle, else when its reads end."""
        with self.cond:
            for key, entry in list(self.shared.items()):
                if path is None or key == os.path.abspath(db_path(path)):
                    self._retire(key, entry)


    def stop(self) -> None:
        """At exit, before the interpreter finalizes: end the watcher and close what is idle, here on
        the main thread. A daemon thread caught inside DuckDB (closing a connection) while the
        interpreter finalizes aborts the process ("FATAL: exception not rethrown")."""
        with self.cond:
            self.stopping = True
            watcher = self.watcher
        if watcher is not None:
            watcher.join(timeout=1.0)
        self.close()


_reads = _Reads()
close_reads = _reads.close
atexit.register(_reads.stop)
# A forked child starts with no shared connection (the parent's are not usable there) and fresh locks.
os.register_at_fork(after_in_child=_reads.__init__)


def _configure(con: duckdb.DuckDBPyConnection) -> None:
    for name, value in read_settings().items():
        con.execute(f"SET {name} = ?", [value])


@contextmanager
def _writing(path: Path, timeout: float) -> Iterator[Callable[[], None]]:
    """Announce a write to readers in every process and hold this process's readers off."""
    _announce(path)
    try:
        with _reads.exclusive(path, timeout):
            yield lambda: _announce(path)
    finally:
        try:
            _intent_file(path).unlink(missing_ok=True)
        except OSError:
            pass


@contextmanager
def write(path: str | os.PathLike | None = None, *, timeout: float = 30.0,
          exclusive: bool = True) -> Iterator[duckdb.DuckDBPyConnection]:
    """Open the store read-write, run the body in one transaction, commit and close. On a lake, a write
    that only inserts (ingest) passes exclusive=False and runs beside other such writes; see
    collectors.store.lake for why the others run alone there."""
    p = db_path(path)
    if isinstance(p, lake.Lake):
        with _lake_write(p, timeout, exclusive) as con:
            yield con
        return
    p.parent.mkdir(parents=True, exist_ok=True)
    with _writing(p, timeout) as waiting:
        con = _connect(p, read_only=False, timeout=timeout, waiting=waiting)
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
def _lake_write(store: lake.Lake, timeout: float, exclusive: bool) -> Iterator[duckdb.DuckDBPyConnection]:
    with lake.unavailable_as(StoreUnavailable, store), lake.locked(store, exclusive=exclusive, timeout=timeout):
        cur = lake.cursor(store, create=True)
        try:
            cur.begin()
            try:
                yield cur
            except BaseException:
                cur.rollback()
                raise
            try:
                cur.commit()
            except duckdb.TransactionException as exc:
                if lake.conflict(exc):
                    raise StoreBusy(f"another writer changed the same tables of {store.name}; "
                                    f"nothing was written: {exc}") from exc
                raise
        finally:
            cur.close()


@contextmanager
def read(path: str | os.PathLike | None = None, *, timeout: float = 10.0) -> Iterator[duckdb.DuckDBPyConnection]:
    """The store read-only for one unit of work: a cursor of this process's shared read connection
    (see the module's docstring), closed at the end of the block."""
    p = db_path(path)
    if isinstance(p, lake.Lake):          # one snapshot for the whole block: never waits for a writer
        with lake.unavailable_as(StoreUnavailable, p):
            cur = lake.cursor(p)
            try:
                cur.begin()
                yield cur
            finally:
                cur.close()               # rolls the read-only transaction back
        return
    if not p.exists():   # said before any wait for a writer
        raise StoreMissing(f"no perfdeck store at {p} yet: run `perfdeck collect` (or `perfdeck demo`)")
    with _reads.reading(p, timeout) as con:
        yield con


def checkpoint(path: str | os.PathLike | None = None, *, timeout: float = 30.0) -> None:
    """Write the WAL into the store file (CHECKPOINT cannot run inside write()'s transaction). On a lake,
    DuckLake's maintenance (collectors.store.lake.checkpoint)."""
    p = db_path(path)
    if isinstance(p, lake.Lake):
        lake.checkpoint(p, timeout)
        return
    with _writing(p, timeout) as waiting:
        con = _connect(p, read_only=False, timeout=timeout, waiting=waiting)
        try:
            con.execute("CHECKPOINT")
        finally:
            con.close()
