"""Check index candidates on SQLite with its own query planner, on an in-memory copy of the schema.

SQLite has no hypothetical indexes, and creating a real one on the application's file would write to
it. So the planner is asked on a copy that holds the schema and the statistics, but no data. On a
`sqlite3.Connection` the caller opened read-only (`file:...?mode=ro`), for one SELECT and its
candidates (from `collectors.advisor.candidates`):

1. The text must be exactly one read-only SELECT (sqlglot, as `hypopg.check_select`: no
   INSERT/UPDATE/DELETE in a CTE, no second statement); anything else is a ValueError. Placeholders
   (`?`, `?NNN`, `:name`) are bound to NULL. The text never runs on the real database: it is only
   EXPLAIN QUERY PLAN'd on `sqlite3.connect(":memory:")`, where the `sql` of the real sqlite_master
   tables, indexes and views is replayed (sqlite_ internals, virtual tables and whatever the copy
   cannot create are left out). Python's sqlite3 refuses to run a second statement in one call.
2. Statistics, so the copy plans as the real database would: the real sqlite_stat1 rows; a row count
   for every table without one (a count capped at `ROW_COUNT_CAP`); per candidate the stat1 line
   ANALYZE would write, "rows rows-per-key(col1) rows-per-key(col1, col2)", its distinct values
   counted over the first `sample_rows` rows (scaled to the table by Haas and Stokes' Duj1, as
   PostgreSQL's ANALYZE does) with our own SQL, whose identifiers come from the catalogue only and are
   always quoted. After writing sqlite_stat1, `ANALYZE sqlite_schema` makes the planner reload it.
3. A base plan without any candidate, then per candidate: CREATE INDEX in the copy with its stat1
   line, reload, plan, DROP INDEX (which drops its stat1 line too).
4. The cost of a plan is an estimate of the rows it reads. Its loops nest in the order listed; each
   reads per row of the loops outside it: `SCAN t` all of t; `SEARCH t USING INDEX ix (a=? AND b>?)`
   the rows per key of the equal prefix from ix's stat line (10 without one, SQLite's own guess),
   a quarter of that per range bound; a rowid or primary key equality 1. A non-covering index reads
   each row twice (entry, then table row). An AUTOMATIC index is built on every run: one full scan of
   t, then lookups. A loop passes on what it read times the selectivity of its table's other
   filters: an equality 1/distinct when a stat line tells it (else 1), a range 1/4. A temp B-tree
   adds the rows it sorts. With a LIMIT and no sort, grouping or aggregate, the loops stop early: their
   cost is scaled by LIMIT / rows produced (a `?` LIMIT counts as `PLACEHOLDER_LIMIT`). A subquery adds
   its own cost, a correlated one once per outer row. A candidate the plan does not use costs the base.
5. Candidates on tables under `min_rows` rows, or naming a table or column the catalogue lacks, are
   skipped (`Advice.skipped`). `model.choose()` chooses among the single-column trials (the cheapest, if
   it cuts the base by `min_share`), then a two-column trial only if it cuts that choice's cost by
   `min_share` again: a wider index must earn its extra column, as the first one earned its place.

`existing_indexes` and `duplicate_indexes` read the catalogue through pragma table functions.
"""
from __future__ import annotations

import math
import re
import sqlite3
from dataclasses import dataclass, field
from itertools import pairwise

import sqlglot
from sqlglot import exp
from sqlglot.dialects.sqlite import SQLite
from sqlglot.tokens import TokenType

from collectors.advisor.candidates import Candidate, columns_used, parse, quote
from collectors.advisor.model import DEFAULT_MIN_SHARE, MIN_TABLE_ROWS, Advice, IndexFinding, Trial, advice, redundant

METHOD = "sqlite-plan"
ROW_COUNT_CAP = 10_000_000     # a table without statistics is counted up to this many rows
UNKNOWN_ROWS_PER_KEY = 10      # SQLite's guess for an index equality without statistics
RANGE_SELECTIVITY = 0.25       # per bound, as SQLite guesses without sqlite_stat4
PLACEHOLDER_LIMIT = 100        # rows a `LIMIT ?` is assumed to ask for
_CANDIDATE = "perfdeck_candidate"

_USER_TABLES = ("SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' "
                "AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' ORDER BY name")
_LOOP = re.compile(r"(?:SCAN|SEARCH) (?P<name>.+?)"
                   r"(?: USING (?P<how>(?:AUTOMATIC (?:PARTIAL )?)?COVERING INDEX|INDEX|INTEGER PRIMARY KEY|PRIMARY KEY)"
                   r"(?: (?P<index>[^(]+?))?)?(?: \((?P<terms>.*)\))?")


class _NullForEveryName(dict):
    """Bindings for named placeholders (`:name`, `?NNN`): NULL whatever the name."""

    def __missing__(self, key):
        return None


# -- 1. the statement ----------------------------------------------------------------------------

def check_select(sql: str) -> tuple[exp.Select, list | dict]:
    """The statement parsed, and NULL bindings for its placeholders; ValueError unless it is a single
    read-only SELECT. sqlglot does not read `?NNN`, so those are parsed as `?`."""
    try:
        tokens = SQLite().tokenize(sql)
    except sqlglot.errors.SqlglotError as e:
        raise ValueError(f"cannot parse: {e}") from e
    numbered = [n for q, n in pairwise(tokens) if q.token_type == TokenType.PLACEHOLDER
                and n.token_type == TokenType.NUMBER and n.start == q.end + 1]
    readable = sql
    for n in reversed(numbered):
        readable = readable[:n.start] + readable[n.end + 1:]
    tree = parse(readable, "sqlite")
    if not isinstance(tree, exp.Select):
        raise ValueError(f"only a single SELECT is explained, not {type(tree).__name__}")
    for kind in (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Into, exp.Command):
        if tree.find(kind) is not None:
            raise ValueError(f"refusing a SELECT that contains {kind.__name__}")
    placeholders = list(tree.find_all(exp.Placeholder))
    plain = sum(1 for p in placeholders if not p.this) - len(numbered)
    if plain and (numbered or any(p.this for p in placeholders)):
        raise ValueError("'?' mixed with numbered or named placeholders")
    return tree, [None] * plain if plain else _NullForEveryName()


@dataclass
class _Query:
    """What the cost model needs from the statement: which table each plan name is, each table's
    filters, and the rows a LIMIT lets the loops stop at (None: they read everything)."""
    tables: dict[str, str]                       # alias or name (lower) -> table (lower)
    equality: dict[str, set[str]]                # table (lower) -> columns (lower)
    range: dict[str, set[str]]
    limit: int | None


def _query(tree: exp.Select, readable_sql: str) -> _Query:
    tables = {t.alias_or_name.lower(): t.name.lower() for t in tree.find_all(exp.Table)}
    uses = columns_used(readable_sql, "sqlite")
    limit = tree.args.get("limit")
    streams = not (tree.args.get("group") or tree.args.get("distinct")
                   or any(e.find(exp.AggFunc) for e in tree.expressions))
    count = None
    if limit is not None and streams:
        value = limit.expression
        count = int(value.this) if isinstance(value, exp.Literal) and value.is_int else PLACEHOLDER_LIMIT
    return _Query(tables, {u.table.lower(): {c.lower() for c in u.equality} for u in uses},
                  {u.table.lower(): {c.lower() for c in u.range} for u in uses}, count)


# -- the catalogue -------------------------------------------------------------------------------

def _tables(conn) -> list[str]:
    return [name for (name,) in conn.execute(_USER_TABLES)]


def _columns(conn, table: str) -> dict[str, str]:
    """lower-case name -> name, as SQLite matches column names."""
    return {name.lower(): name for (name,) in conn.execute("SELECT name FROM pragma_table_info(?)", (table,))}


@dataclass(frozen=True)
class _Index:
    name: str
    unique: bool
    origin: str                   # "c": CREATE INDEX; "u" / "pk": a constraint's autoindex
    partial: bool
    keys: tuple[tuple[str | None, str], ...]    # (column or None for an expression, collation)

    @property
    def columns(self) -> list[str]:
        """The usable prefix: the key columns up to the first expression."""
        plain = []
        for name, _ in self.keys:
            if name is None:
                break
            plain.append(name)
        return plain


def _indexes(conn, table: str) -> list[_Index]:
    found = []
    for name, unique, origin, partial in conn.execute(
            'SELECT name, "unique", origin, partial FROM pragma_index_list(?) ORDER BY seq DESC', (table,)):
        keys = conn.execute("SELECT name, coll FROM pragma_index_xinfo(?) WHERE key = 1 ORDER BY seqno", (name,))
        found.append(_Index(name, bool(unique), origin, bool(partial), tuple(keys)))
    return found


def _rowid_alias(conn, table: str, indexes: list[_Index]) -> str | None:
    """The INTEGER PRIMARY KEY column of a rowid table (its primary key is then the rowid, no index)."""
    pk = conn.execute("SELECT name, type FROM pragma_table_info(?) WHERE pk > 0", (table,)).fetchall()
    if len(pk) == 1 and pk[0][1].upper() == "INTEGER" and not any(ix.origin == "pk" for ix in indexes):
        return pk[0][0]
    return None


def existing_indexes(conn) -> dict[str, list[list[str]]]:
    """{table: [[col, ...], ...]}: each index's usable columns (up to an expression), autoindexes of
    UNIQUE / PRIMARY KEY constraints included, an INTEGER PRIMARY KEY as [col]; partial indexes left out."""
    found = {}
    for table in _tables(conn):
        indexes = _indexes(conn, table)
        alias = _rowid_alias(conn, table, indexes)
        found[table] = ([[alias]] if alias else []) + [ix.columns for ix in indexes if not ix.partial and ix.columns]
    return found


def _makes_redundant(b: _Index, a: _Index) -> bool:
    """Does index `b` answer every search index `a` answers, so that `a` can go?"""
    if a is b or a.origin != "c" or a.partial or b.partial or None in (name for name, _ in a.keys):
        return False
    if b.keys[:len(a.keys)] != a.keys or len(b.columns) < len(a.keys):
        return False
    if len(a.keys) < len(b.keys):
        return not a.unique                  # a unique (a) says more than a unique (a, b)
    if a.unique != b.unique:
        return b.unique                      # equal columns: the unique one stays
    return b.origin != "c" or a.name > b.name    # equal twins: one of them goes


def _size(conn, index: str) -> int | None:
    try:
        return conn.execute("SELECT sum(pgsize) FROM dbstat WHERE name = ?", (index,)).fetchone()[0]
    except sqlite3.OperationalError:         # SQLite built without the dbstat virtual table
        return None


def duplicate_indexes(conn) -> list[IndexFinding]:
    """Indexes created by CREATE INDEX whose columns lead another index of the same table (or equal
    them), neither partial nor on expressions; each covered by an index that is not itself reported."""
    return [IndexFinding("duplicate", "main", table, a.name, tuple(a.columns), _size(conn, a.name),
                         f"covered by {b.name} ({', '.join(b.columns)})", f"DROP INDEX {quote('main')}.{quote(a.name)}")
            for table in _tables(conn) for a, b in redundant(_indexes(conn, table), _makes_redundant)]


# -- 2. the copy and its statistics --------------------------------------------------------------

def _schema_copy(conn) -> sqlite3.Connection:
    """An in-memory database with the real one's tables, indexes and views, and no rows."""
    copy = sqlite3.connect(":memory:")
    for (ddl,) in conn.execute(
            "SELECT sql FROM sqlite_master WHERE sql IS NOT NULL AND type IN ('table', 'index', 'view') "
            "AND name NOT LIKE 'sqlite\\_%' ESCAPE '\\' AND sql NOT LIKE 'CREATE VIRTUAL TABLE%' "
            "ORDER BY type = 'view', type = 'index', rowid"):
        try:
            copy.execute(ddl)
        except sqlite3.Error:                # a custom collation or function, a view on what is missing
            continue
    copy.execute("ANALYZE")                  # creates sqlite_stat1 (empty tables give no rows)
    return copy


def _stat_numbers(stat: str) -> list[int]:
    """The leading integers of a stat1 line ("250000 13 unordered" -> [250000, 13])."""
    numbers = []
    for word in stat.split():
        if not word.isdigit():
            break
        numbers.append(int(word))
    return numbers


def _distinct(sampled: int, distinct: int, once: int, rows: int) -> float:
    """Distinct values in the table from a sample of it (Haas and Stokes' Duj1, as PostgreSQL's ANALYZE):
    `sampled` rows held `distinct` values, `once` of them seen once."""
    if sampled == 0:
        return 1.0
    return max(sampled * distinct / (sampled - once + once * sampled / max(rows, sampled)), 1.0)


@dataclass
class _Copy:
    """The schema copy, its statistics, and what a plan in it costs."""
    real: sqlite3.Connection
    sample_rows: int
    db: sqlite3.Connection = field(init=False)
    tables: dict[str, str] = field(init=False)                   # lower -> name, tables of the copy
    rows: dict[str, int] = field(default_factory=dict)           # table (lower) -> rows
    selectivity: dict[tuple[str, str], float] = field(default_factory=dict)   # (table, column) -> 1/distinct
    per_key: dict[tuple[str, tuple[str, ...]], int] = field(default_factory=dict)

    def __post_init__(self):
        self.db = _schema_copy(self.real)
        self.tables = {t.lower(): t for t in _tables(self.db)}
        real_stats = []
        if self.real.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_stat1'").fetchone():
            real_stats = self.real.execute("SELECT tbl, idx, stat FROM sqlite_stat1 ORDER BY idx IS NOT NULL").fetchall()
        self.db.executemany("INSERT INTO sqlite_stat1 VALUES (?, ?, ?)", real_stats)
        for tbl, _, stat in real_stats:
            self.rows.setdefault(tbl.lower(), (_stat_numbers(stat) or [0])[0])
        for key, table in self.tables.items():
            if key not in self.rows:
                self.rows[key] = self._count(table)
                self.db.execute("INSERT INTO sqlite_stat1 VALUES (?, NULL, ?)", (table, str(self.rows[key])))
        for tbl, idx, stat in real_stats:
            self._learn(tbl, self._index_columns(idx) if idx else [], stat)
        self.db.execute("ANALYZE sqlite_schema")

    def _count(self, table: str) -> int:
        return self.real.execute(f"SELECT count(*) FROM (SELECT 1 FROM {quote(table)} LIMIT ?)",
                                 (ROW_COUNT_CAP,)).fetchone()[0]

    def _index_columns(self, index: str) -> list[str]:
        return [name for (name,) in self.db.execute("SELECT name FROM pragma_index_info(?)", (index,))]

    def _learn(self, table: str, columns: list[str], stat: str) -> None:
        """The share of rows one value of the index's first column matches, from its stat line."""
        numbers = _stat_numbers(stat)
        if columns and columns[0] and len(numbers) > 1 and numbers[0] > 0:
            self.selectivity[(table.lower(), columns[0].lower())] = numbers[1] / numbers[0]

    def resolve(self, cand: Candidate) -> tuple[str, tuple[str, ...]] | None:
        """The candidate's table and columns as the catalogue spells them; None if one does not exist."""
        table = self.tables.get(cand.table.lower()) if cand.schema in (None, "main") else None
        if table is None:
            return None
        columns = _columns(self.db, table)
        names = tuple(columns.get(c.lower()) for c in cand.columns)
        return None if None in names else (table, names)

    def rows_per_key(self, table: str, prefix: tuple[str, ...]) -> int:
        """Rows one value of the `prefix` columns matches, estimated from the first `sample_rows` rows."""
        if (table, prefix) not in self.per_key:
            sample = f"SELECT {', '.join(map(quote, prefix))} FROM {quote(table)} LIMIT ?"
            groups = f"SELECT count(*) AS n FROM ({sample}) GROUP BY {', '.join(map(quote, prefix))}"
            sampled, distinct, once = self.real.execute(f"SELECT sum(n), count(*), sum(n = 1) FROM ({groups})",
                                                        (self.sample_rows,)).fetchone()
            rows = self.rows[table.lower()]
            self.per_key[(table, prefix)] = math.ceil(rows / _distinct(sampled or 0, distinct, once or 0, rows))
        return self.per_key[(table, prefix)]

    def stat_line(self, table: str, columns: tuple[str, ...]) -> str:
        """The stat1 line ANALYZE would give an index on `columns`: "rows per-key(col1) per-key(col1, col2)"."""
        per_key = [self.rows_per_key(table, columns[:k]) for k in range(1, len(columns) + 1)]
        line = " ".join(map(str, [self.rows[table.lower()], *per_key]))
        self._learn(table, list(columns), line)
        return line

    # -- 3. plans and 4. their costs --

    def cost(self, sql: str, params, query: _Query) -> float:
        """The cost of the plan the copy makes now, with the statistics it has now."""
        children: dict[int, list[tuple[int, str]]] = {}
        for id_, parent, _, detail in self.db.execute("EXPLAIN QUERY PLAN " + sql, params):
            children.setdefault(parent, []).append((id_, detail))
        index_stats = {idx.lower(): _stat_numbers(stat)
                       for idx, stat in self.db.execute("SELECT idx, stat FROM sqlite_stat1 WHERE idx IS NOT NULL")}
        return _Costing(self, query, children, index_stats).block(0, query.limit)[0]

    def cost_with(self, table: str, columns: tuple[str, ...], sql: str, params, query: _Query) -> float:
        stat = self.stat_line(table, columns)
        self.db.execute(f"CREATE INDEX {quote(_CANDIDATE)} ON {quote(table)} ({', '.join(map(quote, columns))})")
        try:
            self.db.execute("INSERT INTO sqlite_stat1 VALUES (?, ?, ?)", (table, _CANDIDATE, stat))
            self.db.execute("ANALYZE sqlite_schema")
            return self.cost(sql, params, query)
        finally:
            self.db.execute(f"DROP INDEX {quote(_CANDIDATE)}")   # its sqlite_stat1 line goes with it


def _terms(terms: str | None) -> tuple[int, list[str], list[str]]:
    """Of an index lookup: how many leading columns it skips (skip-scan, `ANY(a)`), the columns it
    matches by equality (in order), and one column per range bound."""
    skips, equal, bounds = 0, [], []
    for term in (terms or "").split(" AND "):
        m = re.fullmatch(r"(.+?)(=|>=|<=|>|<)\?", term)
        if m:
            (equal if m.group(2) == "=" else bounds).append(m.group(1).lower())
        elif term.startswith("ANY("):
            skips += 1
    return skips, equal, bounds


@dataclass
class _Costing:
    """One plan (its lines by parent id) and the statistics it was made with; step 4 of the module doc."""
    copy: _Copy
    query: _Query
    children: dict[int, list[tuple[int, str]]]
    index_stats: dict[str, list[int]]
    derived: dict[str, float] = field(default_factory=dict)     # MATERIALIZE / CO-ROUTINE name -> rows

    def block(self, parent: int, limit: int | None = None) -> tuple[float, float]:
        """(rows read, rows produced) of the nested loops under `parent`."""
        loops, once, rows, sorts = 0.0, 0.0, 1.0, 0
        for id_, detail in self.children.get(parent, []):
            loop = _LOOP.fullmatch(detail)
            if loop:
                read, out, build = self.loop(loop)
                loops, once, rows = loops + rows * read, once + build, rows * out
            elif detail.startswith("USE TEMP B-TREE"):
                sorts += 1
            elif id_ in self.children:
                sub_cost, sub_rows = self.block(id_)
                once += sub_cost * (rows if detail.startswith("CORRELATED") else 1)
                if detail.startswith(("MATERIALIZE ", "CO-ROUTINE ")):
                    self.derived[detail.split(" ", 1)[1].lower()] = sub_rows
        if limit is not None and not sorts and rows > limit:
            loops *= limit / rows
        return loops + once + sorts * rows, rows

    def loop(self, m: re.Match) -> tuple[float, float, float]:
        """(rows read per outer row, rows passed on per outer row, rows read once) of one SCAN/SEARCH."""
        name = m.group("name").lower()
        table = self.query.tables.get(name, name)
        if table not in self.copy.rows:
            return self.derived.get(name, 1.0), self.derived.get(name, 1.0), 0.0
        total = float(self.copy.rows[table])
        how = m.group("how") or ""
        skips, equal, bounds = _terms(m.group("terms"))
        found = self.lookup(table, total, how, m.group("index"), skips, equal) * RANGE_SELECTIVITY ** len(bounds)
        out = found
        for column in self.query.equality.get(table, set()) - set(equal):
            out *= self.copy.selectivity.get((table, column), 1.0)
        for _ in self.query.range.get(table, set()) - set(bounds):
            out *= RANGE_SELECTIVITY
        twice = how == "INDEX"                   # a non-covering index: the entry, then the table row
        return found * (2 if twice else 1), out, total if how.startswith("AUTOMATIC") else 0.0

    def lookup(self, table: str, total: float, how: str, index: str | None, skips: int, equal: list[str]) -> float:
        """Rows one lookup finds through its equality columns (before range bounds); a skip-scan makes
        one lookup per distinct value of the columns it skips."""
        if not equal:
            return total
        if how.endswith("PRIMARY KEY"):
            return 1.0
        if how.startswith("AUTOMATIC"):
            return total * math.prod(self.copy.selectivity.get((table, c), UNKNOWN_ROWS_PER_KEY / max(total, 1)) for c in equal)
        stats = self.index_stats.get((index or "").strip().lower(), [])
        if len(stats) <= skips + len(equal):
            return UNKNOWN_ROWS_PER_KEY
        return stats[skips + len(equal)] * (stats[0] / max(stats[skips], 1) if skips else 1.0)


# -- 5. validate ---------------------------------------------------------------------------------

def validate(conn, sql: str, candidates: list[Candidate], *, min_share: float = DEFAULT_MIN_SHARE,
             min_rows: int = MIN_TABLE_ROWS, sample_rows: int = 200_000) -> Advice:
    """Plan `sql` on a schema copy without and with each candidate index; see the module doc."""
    tree, params = check_select(sql)
    copy = _Copy(conn, sample_rows)
    try:
        query = _query(tree, tree.sql(dialect="sqlite"))
        resolved = {cand: copy.resolve(cand) for cand in candidates}
        for found in filter(None, resolved.values()):
            copy.stat_line(*found)              # the selectivities the costs use, base included
        base = copy.cost(sql, params, query)
        trials, skipped = [], []
        for cand, found in resolved.items():
            if found is None or copy.rows[found[0].lower()] < min_rows:
                skipped.append(cand)
            else:
                trials.append(Trial(cand, copy.cost_with(*found, sql, params, query)))
    finally:
        copy.db.close()
    return advice(base, trials, skipped, METHOD, min_share=min_share)
