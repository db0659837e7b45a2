"""Connections to a configured database and the catalogue lookups the database actions build on.

Design:
- A target is resolved by its configured name (dashboard.actions.targets); its dialect comes from the
  URL alone, so an unsupported one (anything but postgresql and sqlite) is refused before connecting.
- `connect()` opens one connection through a throwaway engine (NullPool, disposed on exit) with a short
  connect timeout. Catalogue work gets a short statement timeout; maintenance (VACUUM, CREATE INDEX)
  a long one, and a lock timeout so it cannot queue behind a long transaction forever. SQLite files
  are opened read-only for catalogue work and never created (a missing file is an unreachable target).
- Errors leave as one line: could not connect, or the connection died -> TargetUnavailable; anything
  else the database said -> ActionError with its message (and PostgreSQL's detail line).
- Every statement sent starts with MARK, "/* perfdeck dashboard */", so the database sampler leaves
  perfdeck's own work out of the statements it reports (pg_stat_statements keeps the comment).
- Lookups only ever bind names as parameters (pg_catalog, sqlite_master, pragma_* table functions).
  The only SQL built from names is built with `quote()`, which quotes every identifier through the
  dialect's preparer, and only from names the catalogue returned.
"""
from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.pool import NullPool

from collectors.redact import redact
from collectors.samplers.database import COUNT_MAX_BYTES, DBSTAT_MAX_BYTES
from dashboard.actions import targets
from dashboard.actions.framework import ActionError, InvalidInput, TargetUnavailable

SUPPORTED = ("postgresql", "sqlite")
CONNECT_TIMEOUT_S = 5
CATALOG_TIMEOUT_MS = 15_000          # catalogue queries and previews
MAINTENANCE_TIMEOUT_MS = 7_200_000   # VACUUM / CREATE INDEX on a big table take a while, but not forever
LOCK_TIMEOUT_MS = 60_000             # give up rather than wait behind a long transaction
SQLITE_BUSY_S = 30                   # SQLite: wait this long for another writer to finish
PG_NAME_MAX = 63                     # bytes in a PostgreSQL identifier (NAMEDATALEN - 1)
MARK = "/* perfdeck dashboard */"    # on every statement sent, so the sampler knows them for ours


def dialect_of(target: targets.Target) -> str:
    try:
        return make_url(target.url).get_backend_name()
    except ArgumentError:       # its message quotes the whole URL, password and all
        raise InvalidInput(f"database {target.name!r}: its URL ({target.shown}) cannot be parsed") from None


def resolve(name, what: str, dialects: tuple[str, ...] = SUPPORTED) -> tuple[targets.Target, str]:
    """The configured database `name` and its dialect; InvalidInput when `what` cannot run on it."""
    target = targets.get("database", name)
    dialect = dialect_of(target)
    if dialect not in dialects:
        raise InvalidInput(f"{what} is not supported for {dialect} (database {target.name!r})")
    return target, dialect


def names(dialects: tuple[str, ...] = SUPPORTED) -> list[str]:
    """Configured database names whose dialect is one of `dialects`, in config order."""
    return [name for name, target in targets.configured("database").items() if dialect_of(target) in dialects]


def _one_line(exc: BaseException, url: str | None = None) -> str:
    """The database's message (its first line: libpq adds hints below) and PostgreSQL's detail,
    redacted (libpq and SQLAlchemy may quote the DSN), with `url`'s own secrets too."""
    orig = getattr(exc, "orig", None) or exc
    diag = getattr(orig, "diag", None)
    lines = str(getattr(diag, "message_primary", None) or orig).strip().splitlines()
    line = " ".join(lines[0].split()) if lines else type(orig).__name__
    detail = getattr(diag, "message_detail", None)
    return redact(f"{line} ({' '.join(detail.split())})" if detail else line, url)


def _unreachable(exc: DBAPIError) -> bool:
    """Did the connection die (server stopped, network gone) rather than the statement fail?"""
    if exc.connection_invalidated:
        return True
    state = getattr(exc.orig, "sqlstate", "")
    # 08xxx: connection exceptions; 57P01-03: the server is shutting down or starting; psycopg reports
    # a connection closed under it with no SQLSTATE at all.
    if state is None:
        return isinstance(exc, (OperationalError, InterfaceError))
    return state.startswith("08") or state in ("57P01", "57P02", "57P03")


def _sqlite_path(target: targets.Target) -> str:
    path = make_url(target.url).database
    if not path or path == ":memory:":
        raise InvalidInput(f"database {target.name!r} is an in-memory SQLite database: there is nothing to maintain")
    return os.path.abspath(path)


def _engine(target: targets.Target, maintenance: bool):
    dialect = dialect_of(target)
    if dialect == "sqlite":
        # mode=rw/ro never creates a missing file; the busy timeout is how long to wait for a writer
        file_uri = f"{Path(_sqlite_path(target)).as_uri()}?mode={'rw' if maintenance else 'ro'}"
        busy = SQLITE_BUSY_S if maintenance else CONNECT_TIMEOUT_S
        return create_engine("sqlite://", poolclass=NullPool, creator=lambda: sqlite3.connect(
            file_uri, uri=True, timeout=busy, check_same_thread=False))
    url = make_url(target.url)
    if url.drivername == "postgresql":      # SQLAlchemy's default driver is psycopg2; perfdeck ships psycopg 3
        url = url.set(drivername="postgresql+psycopg")
    timeout = MAINTENANCE_TIMEOUT_MS if maintenance else CATALOG_TIMEOUT_MS
    args = {"connect_timeout": CONNECT_TIMEOUT_S, "application_name": "perfdeck-actions",
            "options": f"-c statement_timeout={timeout} -c lock_timeout={LOCK_TIMEOUT_MS}"}
    try:
        return create_engine(url, poolclass=NullPool, connect_args=args)
    except ImportError as exc:
        raise InvalidInput(f"database {target.name!r}: its driver is not installed ({redact(exc, target.url)}); "
                           "use a "
                           "postgresql+psycopg:// URL") from exc


@contextmanager
def connect(target: targets.Target, *, maintenance: bool = False) -> Iterator[Connection]:
    """One connection to `target`. Maintenance connections are read-write and autocommit (VACUUM and
    CREATE INDEX CONCURRENTLY cannot run inside a transaction); catalogue ones roll back on exit."""
    engine = _engine(target, maintenance)
    try:
        try:
            con = engine.connect()
        except DBAPIError as exc:
            raise TargetUnavailable(f"database {target.name!r} ({target.shown}) is unreachable: "
                                    f"{_one_line(exc, target.url)}") from exc
        with con:
            if maintenance:
                con = con.execution_options(isolation_level="AUTOCOMMIT")
            try:
                yield con
            except DBAPIError as exc:
                if _unreachable(exc):
                    raise TargetUnavailable(f"database {target.name!r} ({target.shown}) went away: "
                                            f"{_one_line(exc, target.url)}") from exc
                raise ActionError(f"database {target.name!r}: {_one_line(exc, target.url)}") from exc
    finally:
        engine.dispose()


def where(schema: str | None, target_name: str) -> str:
    """Where a name was looked for, for messages: "in schema 'public' of database 'app'"."""
    return f"in schema {schema!r} of database {target_name!r}" if schema else f"in database {target_name!r}"


def _percent_placeholders(con: Connection) -> bool:
    return con.dialect.paramstyle in ("format", "pyformat")


def quote(con: Connection, *parts: str | None) -> str:
    """`"schema"."name"`: every part quoted by the dialect (mixed case and odd characters survive)."""
    quoted = ".".join(con.dialect.identifier_preparer.quote_identifier(p) for p in parts if p is not None)
    # The preparer doubles % for drivers with %s placeholders; shown and audited is the plain SQL text.
    return quoted.replace("%%", "%") if _percent_placeholders(con) else quoted


def run(con: Connection, statement: str) -> None:
    """Run one statement built with quote(), exactly as shown (% escaped for the driver, if it needs it),
    after perfdeck's mark."""
    statement = f"{MARK} {statement}"
    con.exec_driver_sql(statement.replace("%", "%%") if _percent_placeholders(con) else statement)


def _rows(con: Connection, sql: str, **params) -> list:
    return list(con.execute(text(f"{MARK} {sql}"), params))


def _is_pg(con: Connection) -> bool:
    return con.dialect.name == "postgresql"


# -- tables and columns ------------------------------------------------------------------------------
_PG_TABLE_KINDS = "('r', 'p', 'm')"     # tables, partitioned tables, materialized views
_USER_SCHEMA = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg\\_toast%'"


def schemas(con: Connection) -> list[str]:
    """PostgreSQL schemas holding user tables, "public" first."""
    found = [r[0] for r in _rows(con, f"""
        SELECT DISTINCT n.nspname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN {_PG_TABLE_KINDS} AND {_USER_SCHEMA} AND n.nspname NOT LIKE 'pg\\_temp%'
        ORDER BY 1""")]
    return sorted(found, key=lambda s: s != "public")


def tables(con: Connection, schema: str | None) -> list[str]:
    if _is_pg(con):
        return [r[0] for r in _rows(con, f"""
            SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = :schema AND c.relkind IN {_PG_TABLE_KINDS} ORDER BY 1""", schema=schema)]
    return [r[0] for r in _rows(con, "SELECT name FROM sqlite_master WHERE type = 'table' "
                                     "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' ORDER BY 1")]


@dataclass
class TableInfo:
    schema: str | None
    name: str
    kind: str                      # "table" | "partitioned table" | "materialized view"
    rows_estimate: int | None
    size_bytes: int | None         # table, toast and indexes
    last_analyze: str | None = None
    last_vacuum: str | None = None
    dead_rows: int | None = None


def table(con: Connection, schema: str | None, name: str) -> TableInfo | None:
    """The table `name` (of `schema` on PostgreSQL), or None when the catalogue has no such table."""
    if _is_pg(con):
        rows = _rows(con, f"""
            SELECT c.relkind, c.reltuples::bigint, pg_total_relation_size(c.oid),
                   greatest(s.last_analyze, s.last_autoanalyze)::text,
                   greatest(s.last_vacuum, s.last_autovacuum)::text, s.n_live_tup, s.n_dead_tup
            FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            LEFT JOIN pg_stat_all_tables s ON s.relid = c.oid
            WHERE n.nspname = :schema AND c.relname = :name AND c.relkind IN {_PG_TABLE_KINDS}""",
                     schema=schema, name=name)
        if not rows:
            return None
        kind, reltuples, size, analyzed, vacuumed, live, dead = rows[0]
        kinds = {"r": "table", "p": "partitioned table", "m": "materialized view"}
        # reltuples is -1 until the first VACUUM/ANALYZE; the live-row counter is the next best guess
        return TableInfo(schema, name, kinds[kind], reltuples if reltuples >= 0 else live, size, analyzed,
                         vacuumed, dead)
    if name not in tables(con, None):
        return None
    return TableInfo(None, name, "table", _sqlite_rows(con, name), _sqlite_size(con, name))


def _sqlite_file_bytes(con: Connection) -> int:
    page_size = con.exec_driver_sql("PRAGMA page_size").scalar()
    return page_size * con.exec_driver_sql("PRAGMA page_count").scalar()


def _sqlite_rows(con: Connection, name: str) -> int | None:
    """sqlite_stat1's count when ANALYZE ran, else COUNT(*) on a small file, else unknown."""
    if _rows(con, "SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'"):
        stats = _rows(con, "SELECT stat FROM sqlite_stat1 WHERE tbl = :t", t=name)
        if stats:
            return int(stats[0][0].split()[0])
    if _sqlite_file_bytes(con) <= COUNT_MAX_BYTES:
        return con.exec_driver_sql(f"SELECT count(*) FROM {quote(con, name)}").scalar()
    return None


def _sqlite_size(con: Connection, name: str, *, with_indexes: bool = True) -> int | None:
    """Bytes of the table (and its indexes) from dbstat, which reads every page: small files only."""
    if _sqlite_file_bytes(con) > DBSTAT_MAX_BYTES:
        return None
    extra = "OR name IN (SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = :n)" \
        if with_indexes else ""
    try:
        return _rows(con, f"SELECT coalesce(sum(pgsize), 0) FROM dbstat WHERE name = :n {extra}", n=name)[0][0]
    except DBAPIError:      # SQLite built without the dbstat table
        return None


def columns(con: Connection, schema: str | None, table_name: str) -> list[str]:
    if _is_pg(con):
        return [r[0] for r in _rows(con, """
            SELECT a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
            JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = :schema AND c.relname = :table AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum""", schema=schema, table=table_name)]
    return [r[0] for r in _rows(con, "SELECT name FROM pragma_table_info(:t) ORDER BY cid", t=table_name)]


def database_size(con: Connection) -> int:
    if _is_pg(con):
        return con.exec_driver_sql(f"{MARK} SELECT pg_database_size(current_database())").scalar()
    return _sqlite_file_bytes(con)


# -- indexes -----------------------------------------------------------------------------------------
@dataclass
class IndexInfo:
    name: str
    table: str
    columns: tuple            # key columns in order; None for an expression
    unique: bool
    usable: bool = True       # valid, not partial, btree: a plain index the planner can use for anything
    constraint: str | None = None    # what needs it: 'primary key "t_pkey"', 'unique constraint ...'
    definition: str | None = None
    size_bytes: int | None = None
    scans: int | None = None  # PostgreSQL idx_scan since the statistics reset


_PG_INDEX = """
    SELECT ci.relname, ct.relname, i.indisunique, i.indisvalid AND i.indpred IS NULL AND am.amname = 'btree',
           ARRAY(SELECT a.attname::text FROM unnest(i.indkey[0:i.indnkeyatts - 1]) WITH ORDINALITY k(attnum, ord)
                 LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum ORDER BY k.ord),
           (SELECT CASE con.contype WHEN 'p' THEN 'primary key' WHEN 'u' THEN 'unique constraint'
                   WHEN 'x' THEN 'exclusion constraint' ELSE 'foreign key' END || ' "' || con.conname || '"'
            FROM pg_constraint con WHERE con.conindid = ci.oid ORDER BY con.contype DESC LIMIT 1),
           pg_get_indexdef(ci.oid), pg_relation_size(ci.oid), s.idx_scan
    FROM pg_index i JOIN pg_class ci ON ci.oid = i.indexrelid JOIN pg_class ct ON ct.oid = i.indrelid
    JOIN pg_namespace n ON n.oid = ci.relnamespace JOIN pg_am am ON am.oid = ci.relam
    LEFT JOIN pg_stat_all_indexes s ON s.indexrelid = ci.oid
    WHERE n.nspname = :schema"""


def _pg_index(row) -> IndexInfo:
    name, tbl, unique, usable, cols, constraint, definition, size, scans = row
    return IndexInfo(name, tbl, tuple(cols), unique, usable, constraint, definition, size, scans)


def _sqlite_index(con: Connection, tbl: str, row) -> IndexInfo:
    name, unique, origin, partial = row
    cols = tuple(r[0] for r in _rows(con, "SELECT name FROM pragma_index_info(:i) ORDER BY seqno", i=name))
    constraint = {"pk": "primary key", "u": "unique constraint"}.get(origin)
    return IndexInfo(name, tbl, cols, bool(unique), not partial, constraint and f"{constraint} of {tbl}")


def indexes(con: Connection, schema: str | None, table_name: str) -> list[IndexInfo]:
    """The indexes of a table, with their key columns in order."""
    if _is_pg(con):
        return [_pg_index(r) for r in _rows(con, _PG_INDEX + " AND ct.relname = :table ORDER BY 1",
                                            schema=schema, table=table_name)]
    return [_sqlite_index(con, table_name, r) for r in _rows(
        con, 'SELECT name, "unique", origin, partial FROM pragma_index_list(:t) ORDER BY name', t=table_name)]


def index(con: Connection, schema: str | None, name: str) -> IndexInfo | None:
    """One index by name, with its definition, size and (PostgreSQL) scans; None when there is none."""
    if _is_pg(con):
        rows = _rows(con, _PG_INDEX + " AND ci.relname = :name", schema=schema, name=name)
        return _pg_index(rows[0]) if rows else None
    rows = _rows(con, "SELECT tbl_name, sql FROM sqlite_master WHERE type = 'index' AND name = :n", n=name)
    if not rows:
        return None
    tbl, sql = rows[0]
    info = next(i for i in indexes(con, None, tbl) if i.name == name)
    info.definition, info.size_bytes = sql, _sqlite_size(con, name, with_indexes=False)
    return info


def droppable(con: Connection, schema: str | None) -> list[str]:
    """Index names an operator may drop: none that a constraint needs, no SQLite auto-index."""
    if _is_pg(con):
        return [i.name for i in map(_pg_index, _rows(con, _PG_INDEX + " ORDER BY 1", schema=schema))
                if i.constraint is None]
    return [r[0] for r in _rows(con, """
        SELECT m.name FROM sqlite_master m WHERE m.type = 'index' AND m.sql IS NOT NULL ORDER BY 1""")]


def name_taken(con: Connection, schema: str | None, name: str) -> bool:
    """Is `name` used by any relation (PostgreSQL: in the schema) or schema object (SQLite, any case)?"""
    if _is_pg(con):
        return bool(_rows(con, """
            SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
            WHERE n.nspname = :schema AND c.relname = :name""", schema=schema, name=name))
    return bool(_rows(con, "SELECT 1 FROM sqlite_master WHERE lower(name) = lower(:n)", n=name))


def pg_index_valid(con: Connection, schema: str, name: str) -> bool | None:
    """pg_index.indisvalid of the index `name`, None when there is no such index."""
    rows = _rows(con, """
        SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
        JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = :schema AND c.relname = :name""",
                 schema=schema, name=name)
    return rows[0][0] if rows else None


def stats_reset(con: Connection) -> str | None:
    """When PostgreSQL's statistics of this database were last reset (None: never, or SQLite)."""
    if not _is_pg(con):
        return None
    return con.exec_driver_sql(
        f"{MARK} SELECT stats_reset::text FROM pg_stat_database WHERE datname = current_database()").scalar()


def sqlite_pages(con: Connection) -> dict:
    """SQLite's page size, page count and free-list pages: VACUUM gives the free pages back."""
    return {key: con.exec_driver_sql(f"PRAGMA {key}").scalar() for key in ("page_size", "page_count", "freelist_count")}


def pg_stat_statements_installed(con: Connection) -> bool:
    return bool(_rows(con, "SELECT 1 FROM pg_extension WHERE extname = 'pg_stat_statements'"))


def pg_stat_statements_count(con: Connection) -> int:
    """Entries in pg_stat_statements, all databases of the server (what a reset forgets)."""
    return con.exec_driver_sql(f"{MARK} SELECT count(*) FROM pg_stat_statements").scalar()


def covering_index(con: Connection, schema: str | None, table_name: str, cols: list[str], unique: bool):
    """An existing index that makes a new one on `cols` pointless: one whose leading key columns are
    `cols` in that order (for a unique one: a unique index on exactly `cols`)."""
    for ix in indexes(con, schema, table_name):
        if ix.usable and (ix.unique and ix.columns == tuple(cols) if unique else ix.columns[:len(cols)] == tuple(cols)):
            return ix
    return None


def free_index_name(con: Connection, schema: str | None, base: str) -> str:
    """`base`, trimmed to PostgreSQL's 63 bytes (never splitting a character), with _2, _3... while taken."""
    limit = PG_NAME_MAX if _is_pg(con) else 1000
    for n in range(1, 100):
        suffix = "" if n == 1 else f"_{n}"
        name = base.encode()[:limit - len(suffix)].decode(errors="ignore") + suffix
        if not name_taken(con, schema, name):
            return name
    raise InvalidInput(f"no free index name like {base[:60]!r}: give one")
