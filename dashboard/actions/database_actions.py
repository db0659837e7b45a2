"""Maintenance actions on a configured SQL database (PostgreSQL through psycopg 3, or a SQLite file):
ANALYZE, VACUUM, reset pg_stat_statements, create an index, drop an index.

No SQL text from a user or from captured queries is ever executed. Every statement is built here from
a fixed keyword skeleton and identifiers that check() found in the catalogue (db_catalog, bound
parameters), each quoted by the dialect's identifier preparer. A name the catalogue does not know
(`orders; DROP TABLE orders`, `id) --`) is refused with InvalidInput before anything runs.

preview() builds the exact statements and stores them with the checked params in `preview.data`;
execute() runs those statements, after making sure they were made for the same params, so what runs
is what the operator saw. progress.step() is called before each statement, so an Abort lands between
statements, never inside one.

PostgreSQL maintenance runs in autocommit: VACUUM, CREATE INDEX CONCURRENTLY and DROP INDEX
CONCURRENTLY refuse to run in a transaction, and the concurrent forms leave reads and writes alone.
A failed CREATE INDEX CONCURRENTLY leaves an invalid index behind; CreateIndex drops it (only when it
is invalid, under the name it checked was free just before) and says so in its error.

CreateIndex's params {"target", "schema", "table", "columns", "unique", "name"} are also what the
index advisor passes with a generated definition; a missing name becomes ix_<table>_<columns>.
"""
from __future__ import annotations

import re
import time

from dashboard.actions import db_catalog as cat
from dashboard.actions.framework import (
    Action,
    ActionError,
    Field,
    InvalidInput,
    Preview,
    Progress,
    Result,
    TargetUnavailable,
)

ALL_TABLES = "(all tables)"      # the table choice meaning "the whole database"
MAX_INDEX_COLUMNS = 3
_INDEX_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")   # names an operator types: nothing to escape


def _mb(n: int | None) -> str:
    return "size unknown" if n is None else f"{n / 1e6:,.1f} MB"


def _rows_text(n: int | None) -> str:
    return "rows unknown" if n is None else f"~{n:,} rows"


def _name(params: dict, key: str, what: str, *, required: bool = True) -> str | None:
    """A name param as given (exact: identifiers are case-sensitive once quoted), or InvalidInput."""
    value = params.get(key)
    if value is None or value == "":
        if required:
            raise InvalidInput(f"choose a {what}")
        return None
    if not isinstance(value, str) or len(value) > 200 or not value.isprintable():
        raise InvalidInput(f"{what} {str(value)[:80]!r} is not a name")
    return value


def _where(schema: str | None, target: str) -> str:
    return f"in schema {schema!r} of database {target!r}" if schema else f"in database {target!r}"


def _trim(name: str, limit: int = cat.PG_NAME_MAX) -> str:
    """`name` cut to `limit` UTF-8 bytes without splitting a character."""
    return name.encode()[:limit].decode(errors="ignore")


class DatabaseAction(Action):
    """What the database actions share: the target/schema/table fields, target checks, and running
    the preview's statements on a maintenance connection."""
    kind = "database"
    dialects: tuple[str, ...] = cat.SUPPORTED

    def available(self) -> str | None:
        if cat.names(self.dialects):
            return None
        return (f"{self.title} needs a {' or '.join(self.dialects)} database: add a [[database]] with a name and url "
                "to perfdeck.toml, or set PERFDECK_DATABASE_URLS=name=url")

    def _target(self, params: dict):
        return cat.resolve(params.get("target"), self.title, self.dialects)

    def _schema(self, params: dict, dialect: str) -> str | None:
        """PostgreSQL: the schema param, "public" when none is given; SQLite has no schemas (None)."""
        return (_name(params, "schema", "schema", required=False) or "public") if dialect == "postgresql" else None

    # -- fields --------------------------------------------------------------------------------
    def _target_field(self) -> Field:
        return Field("target", "Database", "choice", options=lambda p: cat.names(self.dialects),
                     help="a database configured in perfdeck.toml or $PERFDECK_DATABASE_URLS")

    def _schema_field(self) -> Field:
        def options(params: dict):
            if not params.get("target"):
                return []
            target, dialect = self._target(params)
            if dialect != "postgresql":
                return None          # not applicable: the page hides the field
            with cat.connect(target) as con:
                return cat.schemas(con)
        return Field("schema", "Schema", "choice", options=options)

    def _table_field(self, *, allow_all: bool = False) -> Field:
        def options(params: dict):
            if not params.get("target"):
                return []
            target, dialect = self._target(params)
            with cat.connect(target) as con:
                names = cat.tables(con, self._schema(params, dialect))
            return [ALL_TABLES, *names] if allow_all else names
        return Field("table", "Table", "choice", options=options,
                     help=f"{ALL_TABLES}: every table of the database" if allow_all else "")

    def _table(self, params: dict, dialect: str, target, *, allow_all: bool = False):
        """(schema, table, TableInfo) for the table param; table None for "all" when allowed."""
        table = _name(params, "table", "table", required=not allow_all)
        if table in (None, ALL_TABLES) and allow_all:
            return None, None, None
        schema = self._schema(params, dialect)
        with cat.connect(target) as con:
            info = cat.table(con, schema, table)
        if info is None:
            raise InvalidInput(f"no table {table!r} {_where(schema, target.name)}")
        return schema, table, info

    # -- running -------------------------------------------------------------------------------
    def _statements(self, params: dict, preview: Preview) -> list[str]:
        if preview.data.get("params") != params:
            raise InvalidInput("the preview was made for other parameters (or the catalogue changed): preview again")
        return list(preview.data["statements"])

    def _run(self, con, statements: list[str], progress: Progress) -> float:
        """Run the statements in order, with an Abort point before each; returns the seconds taken."""
        t0 = time.perf_counter()
        for i, statement in enumerate(statements):
            progress.step(i, len(statements), statement)
            con.exec_driver_sql(statement)
        return time.perf_counter() - t0


class Analyze(DatabaseAction):
    name = "database.analyze"
    title = "Analyze"
    touches = "the planner statistics of one table, or of every table of a database"

    def fields(self) -> list[Field]:
        return [self._target_field(), self._schema_field(), self._table_field(allow_all=True)]

    def check(self, params: dict) -> dict:
        target, dialect = self._target(params)
        schema, table, _ = self._table(params, dialect, target, allow_all=True)
        return {"target": target.name, "schema": schema, "table": table}

    def preview(self, params: dict) -> Preview:
        target, _ = self._target(params)
        with cat.connect(target) as con:
            if params["table"] is None:
                n = len(cat.tables(con, None)) if con.dialect.name == "sqlite" else None
                statement = "ANALYZE"
                summary = f"ANALYZE every table of database {target.name!r} ({_mb(cat.database_size(con))})"
                rows = []
            else:
                info = cat.table(con, params["schema"], params["table"])
                n, statement = 1, f"ANALYZE {cat.quote(con, params['schema'], params['table'])}"
                summary = f"ANALYZE {info.kind} {statement[8:]} ({_rows_text(info.rows_estimate)}, {_mb(info.size_bytes)})"
                rows = [{"table": params["table"], "rows estimate": info.rows_estimate, "size bytes": info.size_bytes,
                         "last analyze": info.last_analyze}]
        return Preview(summary + ": reads a sample of rows and refreshes the planner's statistics; "
                       "reads and writes go on.", statements=[statement], rows=rows, count=n,
                       data={"params": params, "statements": [statement]})

    def execute(self, params: dict, preview: Preview, progress: Progress) -> Result:
        statements = self._statements(params, preview)
        target, _ = self._target(params)
        with cat.connect(target, maintenance=True) as con:
            seconds = self._run(con, statements, progress)
        what = statements[0][len("ANALYZE "):] or f"every table of {target.name!r}"
        return Result(f"Analyzed {what} in {seconds:,.1f} s.", {"duration_s": round(seconds, 3)})


class Vacuum(DatabaseAction):
    name = "database.vacuum"
    title = "Vacuum"
    touches = "PostgreSQL: dead rows of one table or of the database (VACUUM (ANALYZE)); SQLite: rewrites the file"

    def fields(self) -> list[Field]:
        return [self._target_field(), self._schema_field(), self._table_field(allow_all=True)]

    def check(self, params: dict) -> dict:
        target, dialect = self._target(params)
        if dialect == "sqlite":        # SQLite's VACUUM rewrites the whole file: no table to choose
            return {"target": target.name, "schema": None, "table": None}
        schema, table, _ = self._table(params, dialect, target, allow_all=True)
        return {"target": target.name, "schema": schema, "table": table}

    def preview(self, params: dict) -> Preview:
        target, dialect = self._target(params)
        with cat.connect(target) as con:
            if dialect == "sqlite":
                return self._sqlite_preview(con, params, target)
            if params["table"] is None:
                statement, size = "VACUUM (ANALYZE)", cat.database_size(con)
                summary, rows = f"VACUUM (ANALYZE) every table of database {target.name!r} ({_mb(size)})", []
            else:
                info = cat.table(con, params["schema"], params["table"])
                statement, size = f"VACUUM (ANALYZE) {cat.quote(con, params['schema'], params['table'])}", info.size_bytes
                summary = f"{statement} ({_rows_text(info.rows_estimate)}, {info.dead_rows or 0:,} dead, {_mb(size)})"
                rows = [{"table": params["table"], "dead rows": info.dead_rows, "size bytes": size,
                         "last vacuum": info.last_vacuum}]
        return Preview(summary + ": marks dead rows' space reusable and refreshes statistics; reads and writes go "
                       "on (it does not shrink the files: that would be VACUUM FULL, which locks the table).",
                       statements=[statement], rows=rows,
                       data={"params": params, "statements": [statement], "size_bytes": size})

    def _sqlite_preview(self, con, params: dict, target) -> Preview:
        pages = cat.sqlite_pages(con)
        size, free = pages["page_size"] * pages["page_count"], pages["page_size"] * pages["freelist_count"]
        statements = ["VACUUM", "PRAGMA optimize"]
        return Preview(
            f"VACUUM rewrites database {target.name!r} ({_mb(size)}) and gives back {pages['freelist_count']:,} free "
            f"pages of {pages['page_size']:,} bytes (~{_mb(free)}); then PRAGMA optimize refreshes statistics.",
            statements=statements, rows=[{"file bytes": size, "free pages": pages["freelist_count"],
                                          "page size": pages["page_size"], "reclaimable bytes": free}],
            warnings=["Writers wait until VACUUM is done, and it needs free disk space of up to twice the file."],
            data={"params": params, "statements": statements, "size_bytes": size, "reclaimable_bytes": free})

    def execute(self, params: dict, preview: Preview, progress: Progress) -> Result:
        statements = self._statements(params, preview)
        target, _ = self._target(params)
        before = preview.data["size_bytes"]
        with cat.connect(target, maintenance=True) as con:
            seconds = self._run(con, statements, progress)
            if params["table"] is None:
                after = cat.database_size(con)
            else:
                after = cat.table(con, params["schema"], params["table"]).size_bytes
        figures = {"size_bytes_before": before, "size_bytes_after": after, "duration_s": round(seconds, 3)}
        return Result(f"{statements[0]} done in {seconds:,.1f} s: {_mb(before)} -> {_mb(after)}.", figures)


class ResetStatements(DatabaseAction):
    name = "database.reset_pg_stat_statements"
    title = "Reset pg_stat_statements"
    touches = "the query statistics of the whole PostgreSQL server"
    destructive = True
    dialects = ("postgresql",)

    def fields(self) -> list[Field]:
        return [self._target_field()]

    def check(self, params: dict) -> dict:
        target, _ = self._target(params)
        with cat.connect(target) as con:
            if not cat.pg_stat_statements_installed(con):
                raise InvalidInput(f"pg_stat_statements is not installed in database {target.name!r}: "
                                   "CREATE EXTENSION pg_stat_statements; (it also needs shared_preload_libraries)")
        return {"target": target.name}

    def preview(self, params: dict) -> Preview:
        target, _ = self._target(params)
        with cat.connect(target) as con:
            entries = cat.pg_stat_statements_count(con)
        statement = "SELECT pg_stat_statements_reset()"
        return Preview(f"Forget all {entries:,} pg_stat_statements entries of the server behind {target.name!r}.",
                       statements=[statement], count=entries, confirm=target.name,
                       warnings=["This resets every database's query statistics on that server, for every tool that "
                                 "reads them; perfdeck's Database page starts counting again from zero."],
                       data={"params": params, "statements": [statement]})

    def execute(self, params: dict, preview: Preview, progress: Progress) -> Result:
        statements = self._statements(params, preview)
        target, _ = self._target(params)
        with cat.connect(target, maintenance=True) as con:
            entries = cat.pg_stat_statements_count(con)
            self._run(con, statements, progress)
        return Result(f"Reset pg_stat_statements on {target.name!r}: {entries:,} entries forgotten.",
                      {"entries_before": entries})


class CreateIndex(DatabaseAction):
    name = "database.create_index"
    title = "Create index"
    touches = "one new index on one table (PostgreSQL: CREATE INDEX CONCURRENTLY, no write lock)"

    def fields(self) -> list[Field]:
        def column_options(params: dict):
            if not params.get("target") or not params.get("table"):
                return []
            target, dialect = self._target(params)
            with cat.connect(target) as con:
                return cat.columns(con, self._schema(params, dialect), params["table"])
        return [self._target_field(), self._schema_field(), self._table_field(),
                Field("columns", "Columns", "multi", options=column_options,
                      help=f"in index order, at most {MAX_INDEX_COLUMNS}: equality columns first"),
                Field("unique", "Unique", "bool", default=False),
                Field("name", "Index name", "text", help="empty: ix_<table>_<columns>")]

    def check(self, params: dict) -> dict:
        target, dialect = self._target(params)
        schema, table, info = self._table(params, dialect, target)
        if info.kind == "partitioned table":
            raise InvalidInput(f"{table!r} is partitioned: CREATE INDEX CONCURRENTLY cannot build on it; index the "
                               "partitions")
        cols = params.get("columns")
        if not isinstance(cols, list) or not 1 <= len(cols) <= MAX_INDEX_COLUMNS:
            raise InvalidInput(f"choose 1 to {MAX_INDEX_COLUMNS} columns")
        cols = [_name({"c": c}, "c", "column") for c in cols]
        if len(set(cols)) != len(cols):
            raise InvalidInput(f"a column is named twice: {', '.join(cols)}")
        unique = params.get("unique") or False
        if not isinstance(unique, bool):
            raise InvalidInput("unique must be true or false")
        name = _name(params, "name", "index name", required=False)
        if name is not None and (not _INDEX_NAME.fullmatch(name) or len(name) > cat.PG_NAME_MAX):
            raise InvalidInput(f"index name {name[:80]!r}: use letters, digits and _ (at most {cat.PG_NAME_MAX})")
        with cat.connect(target) as con:
            missing = [c for c in cols if c not in cat.columns(con, schema, table)]
            if missing:
                raise InvalidInput(f"table {table!r} has no column {', '.join(map(repr, missing))}")
            for ix in cat.indexes(con, schema, table):
                if ix.usable and ix.columns[:len(cols)] == tuple(cols) and (ix.unique or not unique) \
                        and (not unique or len(ix.columns) == len(cols)):
                    raise InvalidInput(f"index {ix.name!r} on ({', '.join(ix.columns)}) already covers "
                                       f"({', '.join(cols)})")
            if name is not None and cat.name_taken(con, schema, name):
                raise InvalidInput(f"the name {name!r} is already taken {_where(schema, target.name)}")
            name = name or self._free_name(con, schema, table, cols, dialect)
        return {"target": target.name, "schema": schema, "table": table, "columns": cols, "unique": unique,
                "name": name}

    @staticmethod
    def _free_name(con, schema, table: str, cols: list[str], dialect: str) -> str:
        """ix_<table>_<cols>, trimmed to PostgreSQL's 63 bytes, with _2, _3... when taken."""
        base = f"ix_{table}_{'_'.join(cols)}"
        limit = cat.PG_NAME_MAX if dialect == "postgresql" else 1000
        for n in range(1, 100):
            suffix = "" if n == 1 else f"_{n}"
            name = _trim(base, limit - len(suffix)) + suffix
            if not cat.name_taken(con, schema, name):
                return name
        raise InvalidInput(f"no free index name like {_trim(base)!r}: give one")

    def preview(self, params: dict) -> Preview:
        target, dialect = self._target(params)
        pg = dialect == "postgresql"
        with cat.connect(target) as con:
            info = cat.table(con, params["schema"], params["table"])
            statement = (f"CREATE {'UNIQUE ' if params['unique'] else ''}INDEX {'CONCURRENTLY ' if pg else ''}"
                         f"{cat.quote(con, params['name'])} ON {cat.quote(con, params['schema'], params['table'])} "
                         f"({', '.join(cat.quote(con, c) for c in params['columns'])})")
            cleanup = f"DROP INDEX CONCURRENTLY IF EXISTS {cat.quote(con, params['schema'], params['name'])}"
        warnings = [f"It fails if ({', '.join(params['columns'])}) holds duplicate values."] if params["unique"] else []
        if pg:
            warnings.append("Reads and writes go on while it builds; it scans the table twice and first waits for "
                            f"transactions already running. If it fails, the invalid index left is dropped: {cleanup}")
        else:
            warnings.append("Other writers wait until the index is built.")
        return Preview(f"Create index {params['name']!r} on {info.kind} {params['table']!r} "
                       f"({_rows_text(info.rows_estimate)}, {_mb(info.size_bytes)}).",
                       statements=[statement], warnings=warnings,
                       rows=[{"table": params["table"], "rows estimate": info.rows_estimate,
                              "size bytes": info.size_bytes}],
                       data={"params": params, "statements": [statement], "cleanup": cleanup if pg else None})

    def execute(self, params: dict, preview: Preview, progress: Progress) -> Result:
        statements = self._statements(params, preview)
        target, _ = self._target(params)
        schema, name, started = params["schema"], params["name"], False
        try:
            with cat.connect(target, maintenance=True) as con:
                if cat.name_taken(con, schema, name):
                    raise InvalidInput(f"{name!r} was created since the preview: preview again")
                started = True
                seconds = self._run(con, statements, progress)
                size = cat.index(con, schema, name).size_bytes
        except ActionError as exc:
            if not started or preview.data["cleanup"] is None:
                raise
            note = self._clean_up(target, schema, name, preview.data["cleanup"])
            kind = TargetUnavailable if isinstance(exc, TargetUnavailable) else ActionError
            raise kind(f"creating index {name!r} failed: {exc}; {note}") from exc
        return Result(f"Created index {name!r} ({_mb(size)}) in {seconds:,.1f} s.",
                      {"index": name, "index_bytes": size, "duration_s": round(seconds, 3)})

    @staticmethod
    def _clean_up(target, schema: str, name: str, cleanup: str) -> str:
        """After a failed CREATE INDEX CONCURRENTLY: drop the invalid index it may have left behind."""
        try:
            with cat.connect(target, maintenance=True) as con:
                valid = cat.pg_index_valid(con, schema, name)
                if valid is False:
                    con.exec_driver_sql(cleanup)
                    return "the invalid index it left behind was dropped"
            return "no index was left behind" if valid is None else "the index exists and is valid"
        except ActionError as exc:
            return f"could not check for an invalid index left behind ({exc}); once the database is back run {cleanup}"


class DropIndex(DatabaseAction):
    name = "database.drop_index"
    title = "Drop index"
    touches = "one index no constraint needs (PostgreSQL: DROP INDEX CONCURRENTLY, no write lock)"
    destructive = True

    def fields(self) -> list[Field]:
        def index_options(params: dict):
            if not params.get("target"):
                return []
            target, dialect = self._target(params)
            with cat.connect(target) as con:
                return cat.droppable(con, self._schema(params, dialect))
        return [self._target_field(), self._schema_field(),
                Field("index", "Index", "choice", options=index_options,
                      help="indexes that back a primary key or unique constraint are not listed")]

    def check(self, params: dict) -> dict:
        target, dialect = self._target(params)
        schema, name = self._schema(params, dialect), _name(params, "index", "index")
        with cat.connect(target) as con:
            info = cat.index(con, schema, name)
        if info is None:
            raise InvalidInput(f"no index {name!r} {_where(schema, target.name)}")
        if info.constraint:
            raise InvalidInput(f"index {name!r} backs the {info.constraint}: it cannot be dropped on its own")
        return {"target": target.name, "schema": schema, "index": name}

    def preview(self, params: dict) -> Preview:
        target, dialect = self._target(params)
        with cat.connect(target) as con:
            info = cat.index(con, params["schema"], params["index"])
            since = cat.stats_reset(con) or "statistics began"
            concurrently = "CONCURRENTLY " if dialect == "postgresql" else ""
            statement = f"DROP INDEX {concurrently}{cat.quote(con, params['schema'], params['index'])}"
        warnings = []
        if info.scans:
            warnings.append(f"Queries used it {info.scans:,} times since {since}: they will get slower.")
        if dialect == "sqlite":
            warnings.append("SQLite keeps no index usage counts: check the queries on its columns first.")
        return Preview(f"Drop index {params['index']!r} of table {info.table!r} ({_mb(info.size_bytes)}).",
                       statements=[statement], confirm=params["index"], warnings=warnings,
                       rows=[{"index": params["index"], "table": info.table, "definition": info.definition,
                              "size bytes": info.size_bytes, "scans": info.scans, "scans since": since}],
                       data={"params": params, "statements": [statement], "size_bytes": info.size_bytes})

    def execute(self, params: dict, preview: Preview, progress: Progress) -> Result:
        statements = self._statements(params, preview)
        target, _ = self._target(params)
        with cat.connect(target, maintenance=True) as con:
            seconds = self._run(con, statements, progress)
        return Result(f"Dropped index {params['index']!r} ({_mb(preview.data['size_bytes'])} freed) in {seconds:,.1f} s.",
                      {"index_bytes_freed": preview.data["size_bytes"], "duration_s": round(seconds, 3)})


ACTIONS: list[type[Action]] = [Analyze, Vacuum, ResetStatements, CreateIndex, DropIndex]
