"""Maintenance actions on a configured SQL database (PostgreSQL via psycopg 3, or a SQLite file):
ANALYZE, VACUUM, reset pg_stat_statements, create an index, drop an index.

No SQL text from a user or a captured query ever runs. Statements are fixed keywords plus identifiers
that check() found in the catalogue (db_catalog, bound parameters), each quoted by the dialect's
preparer; any other name (`orders; DROP TABLE orders`, `id) --`) is refused with InvalidInput.

preview() builds the exact statements and keeps them with the checked params in `preview.data`;
execute() runs them only for those same params (what runs is what was shown), with an Abort point
before each statement. PostgreSQL maintenance runs in autocommit: VACUUM and the CONCURRENTLY forms
refuse transactions, and CONCURRENTLY leaves reads and writes alone. A failed CREATE INDEX
CONCURRENTLY leaves an invalid index; CreateIndex drops it (the name was free just before) and says so.

CreateIndex's params {"target", "schema", "table", "columns", "unique", "name"} are what the index
advisor passes with a generated definition; a missing name becomes ix_<table>_<columns>.
"""
from __future__ import annotations

import re
import time

from collectors import formatting as fmt
from dashboard.actions import db_catalog as cat
from dashboard.actions.framework import (
    Aborted,
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


def _size(n: int | None) -> str:
    return "size unknown" if n is None else fmt.size(n)


def _rows_and_size(info: cat.TableInfo) -> str:
    return f"{'rows unknown' if info.rows_estimate is None else f'~{info.rows_estimate:,} rows'}, {_size(info.size_bytes)}"


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


class DatabaseAction(Action):
    """What the database actions share: target/schema/table fields and checks, and an execute() that
    runs the preview's statements on a maintenance connection between `_before` and `_result`."""
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

    def _table(self, params: dict, dialect: str, target, *, allow_all: bool = False):
        """(schema, table, TableInfo) for the table param; table None for "all" when allowed."""
        table = _name(params, "table", "table", required=not allow_all)
        if allow_all and table in (None, ALL_TABLES):
            return None, None, None
        schema = self._schema(params, dialect)
        with cat.connect(target) as con:
            info = cat.table(con, schema, table)
        if info is None:
            raise InvalidInput(f"no table {table!r} {cat.where(schema, target.name)}")
        return schema, table, info

    # -- fields --------------------------------------------------------------------------------
    def _options(self, lookup, *, needs: tuple[str, ...] = ("target",), pg_only: bool = False):
        """A Field's options: `lookup(con, schema, params)` once the fields it `needs` are chosen."""
        def options(params: dict):
            if not all(params.get(key) for key in needs):
                return []
            target, dialect = self._target(params)
            if pg_only and dialect != "postgresql":
                return None          # not applicable: the page hides the field
            with cat.connect(target) as con:
                return lookup(con, self._schema(params, dialect), params)
        return options

    def _common_fields(self, *, table: bool = True, allow_all: bool = False, pg_only_table: bool = False) -> list[Field]:
        fields = [Field("target", "Database", "choice", options=lambda p: cat.names(self.dialects),
                        help="a database configured in perfdeck.toml or $PERFDECK_DATABASE_URLS"),
                  Field("schema", "Schema", "choice", options=self._options(lambda con, s, p: cat.schemas(con), pg_only=True))]
        if table:
            tables = self._options(lambda con, schema, p: ([ALL_TABLES] if allow_all else []) + cat.tables(con, schema),
                                   pg_only=pg_only_table)
            fields.append(Field("table", "Table", "choice", options=tables,
                                help=f"{ALL_TABLES}: every table of the database" if allow_all else ""))
        return fields

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
            cat.run(con, statement)
        return time.perf_counter() - t0

    def execute(self, params: dict, preview: Preview, progress: Progress) -> Result:
        statements = self._statements(params, preview)
        target, _ = self._target(params)
        with cat.connect(target, maintenance=True) as con:
            before = self._before(con, params)
            seconds = self._run(con, statements, progress)
            return self._result(con, params, preview, before, seconds)

    def _before(self, con, params: dict):
        return None

    def _result(self, con, params: dict, preview: Preview, before, seconds: float) -> Result:
        raise NotImplementedError


class Analyze(DatabaseAction):
    name = "database.analyze"
    title = "Analyze"
    touches = "the planner statistics of one table, or of every table of a database"
    keyword = "ANALYZE"
    effect = "reads a sample of rows and refreshes the planner's statistics; reads and writes go on."

    def fields(self) -> list[Field]:
        return self._common_fields(allow_all=True)

    def check(self, params: dict) -> dict:
        target, dialect = self._target(params)
        schema, table, _ = self._table(params, dialect, target, allow_all=True)
        return {"target": target.name, "schema": schema, "table": table}

    def preview(self, params: dict) -> Preview:
        target, _ = self._target(params)
        with cat.connect(target) as con:
            if params["table"] is None:
                size, statement, rows = cat.database_size(con), self.keyword, []
                what = f"every table of database {target.name!r} ({_size(size)})"
            else:
                info = cat.table(con, params["schema"], params["table"])
                size, statement = info.size_bytes, f"{self.keyword} {cat.quote(con, params['schema'], params['table'])}"
                what = f"{info.kind} {params['table']!r} ({_rows_and_size(info)})"
                rows = [{"table": params["table"], "rows estimate": info.rows_estimate, "dead rows": info.dead_rows,
                         "size bytes": size, "last analyze": info.last_analyze, "last vacuum": info.last_vacuum}]
        return Preview(f"{self.keyword} {what}: {self.effect}", statements=[statement], rows=rows,
                       data={"params": params, "statements": [statement], "what": what, "size_bytes": size})

    def _result(self, con, params, preview, before, seconds) -> Result:
        return Result(f"Analyzed {preview.data['what']} in {fmt.duration(seconds)}.", {"duration_s": round(seconds, 3)})


class Vacuum(Analyze):
    name = "database.vacuum"
    title = "Vacuum"
    touches = "PostgreSQL: dead rows of one table or of the database (VACUUM (ANALYZE)); SQLite: rewrites the file"
    keyword = "VACUUM (ANALYZE)"
    effect = ("makes dead rows' space reusable and refreshes statistics; reads and writes go on (files do not "
              "shrink: that is VACUUM FULL, which locks the table).")

    def fields(self) -> list[Field]:
        return self._common_fields(allow_all=True, pg_only_table=True)   # SQLite vacuums the whole file

    def check(self, params: dict) -> dict:
        if self._target(params)[1] == "sqlite":     # SQLite's VACUUM rewrites the whole file: no table to choose
            return {"target": params["target"], "schema": None, "table": None}
        return super().check(params)

    def preview(self, params: dict) -> Preview:
        target, dialect = self._target(params)
        if dialect != "sqlite":
            return super().preview(params)
        with cat.connect(target) as con:
            pages = cat.sqlite_pages(con)
        size, free = pages["page_size"] * pages["page_count"], pages["page_size"] * pages["freelist_count"]
        statements = ["VACUUM", "PRAGMA optimize"]
        return Preview(
            f"VACUUM rewrites database {target.name!r} ({_size(size)}) and gives back {pages['freelist_count']:,} free "
            f"pages of {pages['page_size']:,} bytes ({_size(free)}); then PRAGMA optimize refreshes statistics.",
            statements=statements, rows=[{"file bytes": size, "free pages": pages["freelist_count"],
                                          "page size": pages["page_size"], "reclaimable bytes": free}],
            warnings=["Writers wait until VACUUM is done, and it needs free disk space of up to twice the file."],
            data={"params": params, "statements": statements, "what": f"database {target.name!r}", "size_bytes": size})

    def _result(self, con, params, preview, before, seconds) -> Result:
        before = preview.data["size_bytes"]
        after = cat.database_size(con) if params["table"] is None else \
            cat.table(con, params["schema"], params["table"]).size_bytes
        return Result(f"Vacuumed {preview.data['what']} in {fmt.duration(seconds)}: {_size(before)} -> {_size(after)}.",
                      {"size_bytes_before": before, "size_bytes_after": after, "duration_s": round(seconds, 3)})


class ResetStatements(DatabaseAction):
    name = "database.reset_pg_stat_statements"
    title = "Reset pg_stat_statements"
    touches = "the query statistics of the whole PostgreSQL server"
    destructive = True
    dialects = ("postgresql",)

    def fields(self) -> list[Field]:
        return self._common_fields(table=False)[:1]

    def check(self, params: dict) -> dict:
        target, _ = self._target(params)
        with cat.connect(target) as con:
            if not cat.pg_stat_statements_installed(con):
                raise InvalidInput(f"pg_stat_statements is not installed in database {target.name!r}")
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

    def _before(self, con, params: dict) -> int:
        return cat.pg_stat_statements_count(con)

    def _result(self, con, params, preview, before, seconds) -> Result:
        return Result(f"Reset pg_stat_statements on {params['target']!r}: {before:,} entries forgotten.",
                      {"entries_before": before})


class CreateIndex(DatabaseAction):
    name = "database.create_index"
    title = "Create index"
    touches = "one new index on one table (PostgreSQL: CREATE INDEX CONCURRENTLY, no write lock)"

    def fields(self) -> list[Field]:
        columns = self._options(lambda con, schema, p: cat.columns(con, schema, p["table"]), needs=("target", "table"))
        return [*self._common_fields(),
                Field("columns", "Columns", "multi", options=columns,
                      help=f"in index order, at most {MAX_INDEX_COLUMNS}: equality columns first"),
                Field("unique", "Unique", "bool", default=False),
                Field("name", "Index name", "text", help="empty: ix_<table>_<columns>")]

    def check(self, params: dict) -> dict:
        target, dialect = self._target(params)
        schema, table, info = self._table(params, dialect, target)
        if info.kind == "partitioned table":
            raise InvalidInput(f"{table!r} is partitioned: CREATE INDEX CONCURRENTLY cannot build on it")
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
            same = cat.covering_index(con, schema, table, cols, unique)
            if same is not None:
                raise InvalidInput(f"index {same.name!r} on ({', '.join(map(str, same.columns))}) already covers "
                                   f"({', '.join(cols)})")
            if name is not None and cat.name_taken(con, schema, name):
                raise InvalidInput(f"the name {name!r} is already taken {cat.where(schema, target.name)}")
            name = name or cat.free_index_name(con, schema, f"ix_{table}_{'_'.join(cols)}")
        return {"target": target.name, "schema": schema, "table": table, "columns": cols, "unique": unique,
                "name": name}

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
        warnings.append("Reads and writes go on while it builds; it scans the table twice and first waits for "
                        f"transactions already running. If it fails, the invalid index left is dropped: {cleanup}"
                        if pg else "Other writers wait until the index is built.")
        return Preview(f"Create index {params['name']!r} on {info.kind} {params['table']!r} ({_rows_and_size(info)}).",
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
                if cat.name_taken(con, schema, name):     # so whatever carries the name after a failure is ours
                    raise InvalidInput(f"{name!r} was created since the preview: preview again")
                started = True
                seconds = self._run(con, statements, progress)
                size = cat.index(con, schema, name).size_bytes
        except ActionError as exc:
            if not started or isinstance(exc, Aborted) or preview.data["cleanup"] is None:
                raise
            note = self._clean_up(target, schema, name, preview.data["cleanup"])
            kind = TargetUnavailable if isinstance(exc, TargetUnavailable) else ActionError
            raise kind(f"creating index {name!r} failed: {exc}; {note}") from exc
        return Result(f"Created index {name!r} ({_size(size)}) in {fmt.duration(seconds)}.",
                      {"index": name, "index_bytes": size, "duration_s": round(seconds, 3)})

    @staticmethod
    def _clean_up(target, schema: str, name: str, cleanup: str) -> str:
        """After a failed CREATE INDEX CONCURRENTLY: drop the invalid index it may have left behind."""
        try:
            with cat.connect(target, maintenance=True) as con:
                valid = cat.pg_index_valid(con, schema, name)
                if valid is False:
                    cat.run(con, cleanup)
                    return "the invalid index it left behind was dropped"
            return "no index was left behind" if valid is None else "the index exists and is valid"
        except ActionError as exc:
            reason = "the database is unreachable" if isinstance(exc, TargetUnavailable) else str(exc)
            return f"could not check for an invalid index left behind ({reason}); once the database is back run {cleanup}"


class DropIndex(DatabaseAction):
    name = "database.drop_index"
    title = "Drop index"
    touches = "one index no constraint needs (PostgreSQL: DROP INDEX CONCURRENTLY, no write lock)"
    destructive = True

    def fields(self) -> list[Field]:
        return [*self._common_fields(table=False),
                Field("index", "Index", "choice", options=self._options(lambda con, schema, p: cat.droppable(con, schema)),
                      help="indexes that back a primary key or unique constraint are not listed")]

    def check(self, params: dict) -> dict:
        target, dialect = self._target(params)
        schema, name = self._schema(params, dialect), _name(params, "index", "index")
        with cat.connect(target) as con:
            info = cat.index(con, schema, name)
        if info is None:
            raise InvalidInput(f"no index {name!r} {cat.where(schema, target.name)}")
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
        usage = (f"Queries used it {info.scans:,} times since {since}: they will get slower without it."
                 if info.scans else f"No query used it since {since}." if dialect == "postgresql"
                 else "SQLite keeps no index usage counts: check the queries on its columns first.")
        return Preview(f"Drop index {params['index']!r} of table {info.table!r} ({_size(info.size_bytes)}).",
                       statements=[statement], confirm=params["index"], warnings=[usage],
                       rows=[{"index": params["index"], "table": info.table, "definition": info.definition,
                              "size bytes": info.size_bytes, "scans": info.scans, "scans since": since}],
                       data={"params": params, "statements": [statement], "size_bytes": info.size_bytes})

    def _result(self, con, params, preview, before, seconds) -> Result:
        size = preview.data["size_bytes"]
        return Result(f"Dropped index {params['index']!r} ({_size(size)} freed) in {fmt.duration(seconds)}.",
                      {"index_bytes_freed": size, "duration_s": round(seconds, 3)})


ACTIONS: list[type[Action]] = [Analyze, Vacuum, ResetStatements, CreateIndex, DropIndex]
