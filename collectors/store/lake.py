"""The DuckLake backend: the store as a DuckLake whose catalog is a PostgreSQL database and whose data are
Parquet files in a shared folder or an object store. Several collectors write it at once and any number of
dashboards read it, each in its own process, with no file lock.

    --db 'ducklake:postgres:dbname=perfdeck host=db.internal user=perfdeck'
    PERFDECK_LAKE_DATA_PATH=/mnt/shared/perfdeck/      (or [store] lake_data_path; s3://bucket/prefix/ too)

What differs from the DuckDB file, and how the rest of the store copes:
- **Keys.** DuckLake has no primary keys, unique constraints, sequences or indexes, and no RETURNING.
  The migrations' DDL is adapted here (`adapt_ddl`); upserts are MERGE statements, which both backends
  run; ids come from `connection.next_id` (max + 1 under the exclusive write lock below).
- **Writers.** A transaction that deletes from or updates a table fails at commit when another one
  inserted into it meanwhile (DuckLake checks conflicts per table), and two writes side by side do not see
  each other's rows. So writes take a lock in the catalog database: the ingest of batches that only append
  takes it shared, and any number of collectors do that at once; a batch whose rows merge with other
  batches' (collectors.store.ingest.merges) and every other write (compaction, retention, alerts, actions,
  migrations) take it alone, after the writes in flight. A collector killed mid-write drops its PostgreSQL
  session and with it the lock.
- **Readers** see, for a whole read() block, the snapshot committed when it began, and never wait. Only
  writers create a lake.

The extensions come from the PyPI wheels that `pip install 'perfdeck[lake]'` brings (duckdb-extension-*),
loaded by path: nothing is downloaded at run time. One DuckDB instance per process holds the attached lake
(attaching costs ~0.3 s); each read or write block gets a cursor of it, with its own transaction."""
from __future__ import annotations

import importlib.util
import os
import re
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import duckdb

from collectors.redact import redact

PREFIX = "ducklake:"
CATALOG = "perfdeck_lake"          # the name the lake is attached under in every process
DATA_PATH_ENV = "PERFDECK_LAKE_DATA_PATH"
EXTENSIONS = {"postgres": "postgres_scanner", "ducklake": "ducklake", "httpfs": "httpfs"}
LOCK_KEY = 0x7065_7266_6465_636B       # "perfdeck": the advisory lock writers share or hold alone
TURNSTILE_KEY = LOCK_KEY + 1           # taken alone by a writer waiting for it alone (see locked())
ATTACH_KEY = LOCK_KEY + 3              # one ATTACH at a time (see _attaching); + 2 is the lease's
ATTACH_WAIT_S = 60.0
INSTALL_HINT = "pip install 'perfdeck[lake]'"


class LakeUnavailable(RuntimeError):
    """The lake cannot be opened as configured (missing extensions, no data path, an unknown catalog)."""


@dataclass(frozen=True)
class Lake:
    """Where a lake is: its catalog (libpq key=value conninfo of a PostgreSQL database) and its data path."""
    conninfo: str
    data_path: str

    @property
    def spec(self) -> str:             # what PERFDECK_DB / --db hold, secrets and all: for a child process only
        return f"{PREFIX}postgres:{self.conninfo}"

    def __str__(self) -> str:          # in logs and messages: without secrets
        return redact(self.spec)

    @property
    def name(self) -> str:             # for people: the catalog without secrets, and the data path
        return f"DuckLake {redact(self.conninfo)} · data {redact(self.data_path)}"

    def exists(self) -> bool:          # a lake is created by its first collector; readers find it or fail clearly
        return True

    def resolve(self) -> Lake:
        return self


def is_lake(spec) -> bool:
    return isinstance(spec, Lake) or str(spec or "").startswith(PREFIX)


def parse(spec: str, data_path: str | None = None) -> Lake:
    """`ducklake:postgres:<conninfo>` and the data path ($PERFDECK_LAKE_DATA_PATH unless given)."""
    rest = spec[len(PREFIX):]
    kind, _, conninfo = rest.partition(":")
    if kind != "postgres" or not conninfo.strip():
        raise LakeUnavailable(f"a lake store is ducklake:postgres:<libpq conninfo>, e.g. "
                              f"ducklake:postgres:dbname=perfdeck host=127.0.0.1 user=perfdeck (got {redact(spec)!r})")
    data_path = data_path or os.environ.get(DATA_PATH_ENV)
    if not data_path:
        raise LakeUnavailable(f"a lake store needs a data path for its Parquet files: set {DATA_PATH_ENV} "
                              f"(or [store] lake_data_path in perfdeck.toml) to a shared folder or an s3:// URL")
    if "://" not in data_path:
        data_path = str(Path(data_path).absolute())
    if not data_path.endswith("/"):
        data_path += "/"
    return Lake(conninfo.strip(), data_path)


def extension_path(name: str) -> str:
    """The extension file inside its PyPI wheel, for the DuckDB version running."""
    module = f"duckdb_extension_{EXTENSIONS[name]}"
    spec = importlib.util.find_spec(module)
    if spec is None or spec.origin is None:
        raise LakeUnavailable(f"the DuckLake store needs the {module.replace('_', '-')} package: {INSTALL_HINT}")
    path = Path(spec.origin).parent / "extensions" / f"v{duckdb.__version__}" / f"{EXTENSIONS[name]}.duckdb_extension"
    if not path.exists():
        built = sorted(p.name for p in (Path(spec.origin).parent / "extensions").glob("v*"))
        raise LakeUnavailable(f"the installed {module.replace('_', '-')} is built for DuckDB {', '.join(built)}, "
                              f"not the DuckDB {duckdb.__version__} running: {INSTALL_HINT} installs matching versions")
    return str(path)


# -- the process's attached lake ---------------------------------------------------------------
class _Instances:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open: dict[Lake, duckdb.DuckDBPyConnection] = {}

    def get(self, lake: Lake, create: bool) -> duckdb.DuckDBPyConnection:
        with self.lock:
            con = self.open.get(lake)
            if con is None:
                con = self.open[lake] = _attach(lake, create)
            return con

    def close(self) -> None:
        with self.lock:
            for con in self.open.values():
                con.close()
            self.open.clear()


def _attach(lake: Lake, create: bool) -> duckdb.DuckDBPyConnection:
    """The lake attached to a new in-memory DuckDB. Only a writer may create it: a reader pointed at an empty
    or mistyped database must not turn it into a lake with the data path it happened to be given."""
    from collectors.store.connection import read_settings

    con = duckdb.connect(config={"autoinstall_known_extensions": False, "autoload_known_extensions": False})
    try:
        needed = ["postgres", "ducklake"] + (["httpfs"] if "://" in lake.data_path else [])
        for name in needed:
            con.execute(f"LOAD '{extension_path(name)}'")
        if "://" in lake.data_path:
            _object_store_secret(con)
        for name, value in read_settings().items():
            con.execute(f"SET {name} = ?", [value])
        quoted = "'" + lake.spec.replace("'", "''") + "'"
        data = "'" + lake.data_path.replace("'", "''") + "'"
        with _attaching(lake):
            con.execute(f"ATTACH {quoted} AS {CATALOG} (DATA_PATH {data}, CREATE_IF_NOT_EXISTS {str(create).lower()})")
    except duckdb.IOException:
        con.close()
        raise                 # the catalog or the data not answering: unavailable_as says so
    except duckdb.Error as exc:
        con.close()
        if "does not exist" in str(exc) and not create:
            from collectors.store.connection import StoreMissing
            raise StoreMissing(f"no perfdeck store at {lake.name} yet: run `perfdeck collect` on it first (or check "
                               f"the database name)") from None
        raise LakeUnavailable(f"cannot open the lake {lake.name}: {_one_line(redact(str(exc), lake.spec))}") from None
    except BaseException:
        con.close()
        raise
    return con


@contextmanager
def _attaching(lake: Lake) -> Iterator[None]:
    """One ATTACH of the lake at a time, across processes: the first creates DuckLake's tables in the catalog
    database, and two collectors starting together on a new lake both did (the second failed: relation
    "ducklake_metadata" already exists)."""
    import psycopg

    from collectors.store.connection import StoreLocked

    con = session(lake)
    if not _take(con, "pg_try_advisory_lock", ATTACH_KEY, time.monotonic() + ATTACH_WAIT_S):
        raise StoreLocked(f"another process has been opening the lake {lake.name} for {ATTACH_WAIT_S:.0f} s; gave up")
    try:
        yield
    finally:
        try:
            con.execute("SELECT pg_advisory_unlock(%s)", [ATTACH_KEY])
        except psycopg.Error:
            con.close()        # the session is gone, and its lock with it


def _one_line(text: str) -> str:
    """An error of libpq or DuckDB (which add hints on lines of their own) as one line of a message."""
    return " ".join(text.split())


def _object_store_secret(con: duckdb.DuckDBPyConnection) -> None:
    """S3-compatible storage: credentials from the usual AWS_* variables, never from perfdeck's files."""
    options = {"KEY_ID": "AWS_ACCESS_KEY_ID", "SECRET": "AWS_SECRET_ACCESS_KEY", "REGION": "AWS_REGION",
               "ENDPOINT": "AWS_ENDPOINT_URL"}
    given = {k: os.environ[v] for k, v in options.items() if os.environ.get(v)}
    if not given:
        return
    if "ENDPOINT" in given:     # a self-hosted S3 (MinIO, Ceph): host[:port], path-style URLs
        given["ENDPOINT"] = re.sub(r"^https?://", "", given["ENDPOINT"]).rstrip("/")
        given["URL_STYLE"] = "path"
    body = ", ".join(f"{k} '{v.replace(chr(39), chr(39) * 2)}'" for k, v in given.items())
    con.execute(f"CREATE OR REPLACE SECRET perfdeck_lake_data (TYPE s3, {body})")


_instances = _Instances()
os.register_at_fork(after_in_child=_instances.__init__)


def close_all() -> None:
    """Detach every lake of this process and close this thread's catalog sessions (tests, between lakes)."""
    _instances.close()
    for con in _sessions.open.values():
        con.close()
    _sessions.open.clear()


_MISCONFIGURED = re.compile(r"password authentication failed|no password supplied|role \"[^\"]*\" does not exist|"
                            r"database \"[^\"]*\" does not exist|no pg_hba\.conf entry", re.IGNORECASE)


@contextmanager
def unavailable_as(error: type[Exception], lake: Lake) -> Iterator[None]:
    """The catalog or the data not answering (a PostgreSQL restart, a network, an unmounted folder), raised
    as `error` with the secrets masked: a store that is away for a while, not a fault of what was written."""
    import psycopg

    try:
        yield
    except (duckdb.IOException, duckdb.HTTPException, psycopg.OperationalError, psycopg.InterfaceError) as exc:
        if _MISCONFIGURED.search(str(exc)):        # answering, and saying no: waiting will not help
            raise LakeUnavailable(f"cannot open the lake {lake.name}: {_one_line(redact(str(exc), lake.spec))}") from None
        raise error(f"the lake {lake.name} is not answering: {_one_line(redact(str(exc), lake.spec))}") from None


def cursor(lake: Lake, *, create: bool = False) -> duckdb.DuckDBPyConnection:
    """A cursor of the process's lake instance, its default catalog the lake (made when `create`: writers)."""
    cur = _instances.get(lake, create).cursor()
    cur.execute(f"USE {CATALOG}")
    return cur


# -- the writers' lock, in the catalog database ----------------------------------------------------
class _Sessions(threading.local):
    """One PostgreSQL session per thread and lake for the writers' lock (and the lease, collectors.store.lease)."""
    def __init__(self) -> None:
        self.open: dict[Lake, object] = {}


_sessions = _Sessions()


def session(lake: Lake):
    """This thread's autocommit psycopg connection to the lake's catalog database."""
    import psycopg

    con = _sessions.open.get(lake)
    if con is None or con.closed or con.broken:
        # Not answering: psycopg.OperationalError, which unavailable_as turns into StoreUnavailable.
        con = _sessions.open[lake] = psycopg.connect(lake.conninfo, autocommit=True, connect_timeout=10)
    return con


def _take(con, function: str, key: int, deadline: float) -> bool:
    while not con.execute(f"SELECT {function}(%s)", [key]).fetchone()[0]:
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


@contextmanager
def locked(lake: Lake, *, exclusive: bool, timeout: float) -> Iterator[None]:
    """Hold the writers' lock, shared or alone, waiting at most `timeout` seconds. A writer that wants it
    alone first takes the turnstile (TURNSTILE_KEY), which ingests pass through on their way in: so a
    stream of ingests cannot keep maintenance out, and it waits only for the ingests in flight."""
    import psycopg

    from collectors.store.connection import StoreLocked

    con = session(lake)
    deadline = time.monotonic() + timeout
    held: list[str] = []

    def take(function: str, key: int) -> None:
        if not _take(con, function, key, deadline):
            raise StoreLocked(f"the lake {lake.name} is being written by another process "
                              f"({'writers in flight' if exclusive else 'maintenance'}); gave up after {timeout:.1f} s")
        held.append(function.replace("try_advisory_lock", "advisory_unlock") + f"({key})")

    try:
        if exclusive:
            take("pg_try_advisory_lock", TURNSTILE_KEY)
            take("pg_try_advisory_lock", LOCK_KEY)
        else:
            take("pg_try_advisory_lock_shared", TURNSTILE_KEY)
            take("pg_try_advisory_lock_shared", LOCK_KEY)
            con.execute(f"SELECT {held.pop(0)}")
        yield
    finally:
        try:
            for unlock in reversed(held):
                con.execute(f"SELECT {unlock}")
        except psycopg.Error:
            con.close()        # the session is gone, and its locks with it


# -- maintenance ---------------------------------------------------------------------------------------
# Snapshots older than this are expired, and files no snapshot needs any more are deleted this long after.
# Time travel is not used; the margin is for reads that began on an older snapshot.
KEEP_SNAPSHOTS = "1 hour"


def checkpoint(lake: Lake, timeout: float) -> None:
    """DuckLake's CHECKPOINT, alone: inlined rows flushed to Parquet, small files merged, files rewritten
    without their deleted rows, snapshots older than KEEP_SNAPSHOTS expired and unreferenced files removed."""
    with locked(lake, exclusive=True, timeout=timeout):
        cur = cursor(lake)
        try:
            for option in ("expire_older_than", "delete_older_than"):
                cur.execute(f"CALL {CATALOG}.set_option(?, ?)", [option, KEEP_SNAPSHOTS])
            cur.execute("CHECKPOINT")
        finally:
            cur.close()


# -- the schema as DuckLake takes it ------------------------------------------------------------------
# Statements at the start of a line (so a comment that names one is left alone).
_SEQUENCE = re.compile(r"^\s*CREATE\s+SEQUENCE\s+[^;]+;", re.IGNORECASE | re.MULTILINE)
_INDEX = re.compile(r"^\s*CREATE\s+(UNIQUE\s+)?INDEX\s+[^;]+;", re.IGNORECASE | re.MULTILINE)
_DEFAULT_NEXTVAL = re.compile(r"\s+DEFAULT\s+nextval\('[^']*'\)", re.IGNORECASE)
_INLINE_KEY = re.compile(r"\s+(PRIMARY\s+KEY|UNIQUE)(?=\s*[,)\n-])", re.IGNORECASE)
_TABLE_KEY = re.compile(r",\s*(PRIMARY\s+KEY|UNIQUE)\s*\([^)]*\)", re.IGNORECASE)
# ALTER TABLE ... ADD COLUMN takes only literal defaults there, and reads `false` as an expression.
_BOOLEAN_DEFAULT = re.compile(r"\bDEFAULT\s+(true|false)\b", re.IGNORECASE)


def adapt_ddl(sql: str) -> str:
    """The migrations' DDL without what DuckLake lacks: keys, unique constraints, sequences and indexes.
    What they guaranteed, the writers keep (MERGE upserts, batch ids checked before insert, next_id)."""
    for pattern in (_SEQUENCE, _INDEX, _DEFAULT_NEXTVAL, _TABLE_KEY, _INLINE_KEY):
        sql = pattern.sub("", sql)
    return _BOOLEAN_DEFAULT.sub(lambda m: f"DEFAULT '{m.group(1).lower()}'", sql)


class AdaptingConnection:
    """A write cursor whose execute() adapts DDL for the lake (used by migrate() only)."""

    def __init__(self, con: duckdb.DuckDBPyConnection):
        self._con = con

    def execute(self, sql: str, *args, **kwargs):
        return self._con.execute(adapt_ddl(sql), *args, **kwargs)

    def __getattr__(self, name):
        return getattr(self._con, name)


def is_lake_connection(con) -> bool:
    return isinstance(con, AdaptingConnection) or \
        con.execute("SELECT current_database()").fetchone()[0] == CATALOG


def conflict(exc: BaseException) -> bool:
    """A commit that lost to another writer's (DuckLake's conflict check), not a fault of the data."""
    text = str(exc)
    return isinstance(exc, duckdb.TransactionException) and ("conflict" in text.lower() or "retry" in text.lower())
