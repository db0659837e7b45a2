"""What PostgreSQL's catalogue says about indexes and tables, for the index advisor.

Existing indexes feed `candidates()` (nothing an index already starts with is proposed again);
with pg_qualstats created, `qualstats_uses` adds the predicates it saw a statement run;
`table_rows` and `column_stats` feed the statistics heuristic when hypopg is not installed; unused
and duplicate indexes are findings of their own: they slow every write and take disk, serving no read.

Everything here is a read-only catalogue query with bound parameters. The only SQL built from names
is the DROP INDEX a finding shows, and every name in it is a quoted identifier. An index attached to
a partitioned index, or a partitioned index itself, is never a finding: neither can be dropped alone
with DROP INDEX CONCURRENTLY. Scan counts are this server's own: an index only a replica uses looks
unused here.
"""
from __future__ import annotations

from dataclasses import dataclass

from psycopg import sql as pgsql

from collectors.advisor.candidates import TableUse
from collectors.advisor.model import IndexFinding, redundant
from collectors.advisor.plan import MARK

_USER_SCHEMA = "n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname !~ '^pg_(toast|temp)'"

# One row per index of a user table. `columns` holds, per key column (INCLUDE ones left out), its name
# (NULL for an expression) and its text as pg_get_indexdef shows it.
_INDEXES = f"""
    SELECT ci.oid, n.nspname, ct.relname, ci.relname, am.amname, i.indisunique, i.indisvalid,
           i.indpred IS NOT NULL, i.indnatts > i.indnkeyatts,
           ARRAY(SELECT ARRAY[a.attname::text, pg_get_indexdef(ci.oid, k.ord::int, true)]
                 FROM unnest(i.indkey[0:i.indnkeyatts - 1]) WITH ORDINALITY k(attnum, ord)
                 LEFT JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
                 ORDER BY k.ord),
           i.indclass::oid[], i.indcollation::oid[],
           EXISTS (SELECT 1 FROM pg_constraint con WHERE con.conindid = ci.oid),
           ci.relkind = 'i' AND NOT ci.relispartition,
           pg_table_is_visible(ct.oid), pg_relation_size(ci.oid), s.idx_scan
    FROM pg_index i JOIN pg_class ci ON ci.oid = i.indexrelid JOIN pg_class ct ON ct.oid = i.indrelid
    JOIN pg_namespace n ON n.oid = ct.relnamespace JOIN pg_am am ON am.oid = ci.relam
    LEFT JOIN pg_stat_all_indexes s ON s.indexrelid = ci.oid
    WHERE {_USER_SCHEMA}
    ORDER BY n.nspname, ct.relname, ci.relname"""

# A table, materialized view or partitioned table by name: in `schema`, or the one the search_path finds
_RELATION = """
    SELECT n.nspname, c.relname, c.reltuples
    FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
    WHERE c.relname = %(table)s AND c.relkind IN ('r', 'p', 'm')
      AND (n.nspname = %(schema)s OR (%(schema)s::text IS NULL AND pg_table_is_visible(c.oid)))"""


@dataclass(frozen=True)
class _Index:
    oid: int
    schema: str
    table: str
    name: str
    method: str                          # btree, hash, gin, ...
    unique: bool
    valid: bool
    partial: bool
    has_include: bool
    keys: tuple[str | None, ...]         # key columns; None for an expression
    shown: tuple[str, ...]               # key columns as text: the name, or the expression
    key_classes: tuple[tuple, ...]       # per key column: (operator class, collation)
    backs_constraint: bool               # a primary key, unique, exclusion or foreign key constraint needs it
    plain: bool                          # neither partitioned nor attached to a partitioned index
    table_visible: bool                  # the search_path finds the table by its bare name
    size_bytes: int
    scans: int | None                    # idx_scan since the statistics reset

    @property
    def usable_keys(self) -> list[str]:
        """The leading key columns up to the first expression: what a search on plain columns can use."""
        prefix = []
        for key in self.keys:
            if key is None:
                break
            prefix.append(key)
        return prefix

    @property
    def drop_sql(self) -> str:
        return pgsql.SQL("DROP INDEX CONCURRENTLY {}").format(pgsql.Identifier(self.schema, self.name)).as_string(None)


def _indexes(conn) -> list[_Index]:
    out = []
    for (oid, schema, table, name, method, unique, valid, partial, has_include, columns, classes, collations,
         backs, plain, visible, size, scans) in conn.execute(MARK + _INDEXES):
        out.append(_Index(oid, schema, table, name, method, unique, valid, partial, has_include,
                          tuple(c[0] for c in columns), tuple(c[0] or c[1] for c in columns),
                          tuple(zip(classes, collations)), backs, plain, visible, size, scans))
    return out


def hypopg_installed(conn) -> bool:
    """Is the hypopg extension created in this database (not merely available on the server)?"""
    return extension_installed(conn, "hypopg")


def existing_indexes(conn) -> dict[str, list[list[str]]]:
    """Valid, non-partial btree indexes as {"schema.table": [[col, ...], ...]}, also under the bare
    table name when the search_path finds the table; each list is the usable prefix of the key."""
    out: dict[str, list[list[str]]] = {}
    for ix in _indexes(conn):
        if ix.method != "btree" or not ix.valid or ix.partial or not ix.usable_keys:
            continue
        keys = [f"{ix.schema}.{ix.table}"] + ([ix.table] if ix.table_visible else [])
        for key in keys:
            out.setdefault(key, []).append(ix.usable_keys)
    return out


def extension_installed(conn, name: str) -> bool:
    """Is the extension created in this database (not merely available on the server)?"""
    return conn.execute(MARK + "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = %s)", (name,)).fetchone()[0]


# The predicates pg_qualstats saw run for some statements: per qual its column (a join qual: both
# columns; on a partition: named on the root of its tree), its operator and whether it joins.
_QUALS = """
    SELECT DISTINCT n.nspname, c.relname, a.attname, op.oprname, q.lrelid IS NOT NULL AND q.rrelid IS NOT NULL
    FROM pg_qualstats q
    CROSS JOIN LATERAL (VALUES (q.lrelid, q.lattnum), (q.rrelid, q.rattnum)) AS side(relid, attnum)
    JOIN pg_attribute a ON a.attrelid = side.relid AND a.attnum = side.attnum
    JOIN pg_class c ON c.oid = coalesce(pg_partition_root(side.relid), side.relid)
    JOIN pg_namespace n ON n.oid = c.relnamespace
    JOIN pg_operator op ON op.oid = q.opno
    WHERE q.dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
      AND q.queryid = ANY(%s) AND n.nspname NOT IN ('pg_catalog', 'information_schema')
    ORDER BY 1, 2, 3"""
_POSITIONS = {"=": "equality", "<": "range", ">": "range", "<=": "range", ">=": "range"}


def qualstats_uses(conn, queryids: list[int]) -> list[TableUse]:
    """The columns pg_qualstats saw these statements filter and join on, in the advisor's positions."""
    uses: dict[tuple[str, str], TableUse] = {}
    for schema, table, column, operator, join in conn.execute(MARK + _QUALS, (list(queryids),)):
        position = "join" if join and operator == "=" else _POSITIONS.get(operator)
        if position is not None:
            uses.setdefault((schema, table), TableUse(table, schema)).add(position, column)
    return list(uses.values())


def table_rows(conn, schema: str | None, table: str) -> float | None:
    """pg_class.reltuples of the table (-1: never vacuumed nor analyzed); None when there is no such table.
    Without a schema, the table the search_path finds."""
    row = conn.execute(MARK + _RELATION, {"schema": schema, "table": table}).fetchone()
    return None if row is None else float(row[2])


@dataclass(frozen=True)
class ColumnStats:
    """One column's line of pg_stats (what ANALYZE sampled)."""
    null_frac: float
    n_distinct: float          # > 0: the number of distinct values; < 0: minus their share of the rows
    top_freq: float | None     # most_common_freqs[1]: the share of the commonest value (None: no MCV list)


def column_stats(conn, schema: str | None, table: str) -> dict[str, ColumnStats]:
    """pg_stats per column of the table; empty when it was never analyzed. For a table with children
    (inheritance or partitions) the statistics of the whole tree win, since a query on it reads them all."""
    rows = conn.execute(MARK + f"""
        SELECT s.attname, s.null_frac, s.n_distinct, s.most_common_freqs[1]
        FROM pg_stats s JOIN ({_RELATION}) r ON r.nspname = s.schemaname AND r.relname = s.tablename
        ORDER BY s.inherited""", {"schema": schema, "table": table})
    return {name: ColumnStats(null_frac, n_distinct, top_freq) for name, null_frac, n_distinct, top_freq in rows}


def _since(conn) -> str:
    reset = conn.execute(MARK + "SELECT stats_reset::timestamptz(0)::text FROM pg_stat_database "
                         "WHERE datname = current_database()").fetchone()
    return reset[0] if reset and reset[0] else "the server started"


def unused_indexes(conn) -> list[IndexFinding]:
    """Valid indexes with no scan since the statistics reset, that neither enforce uniqueness nor
    back a constraint (dropping those would change what the database accepts)."""
    since = _since(conn)
    return [IndexFinding("unused", ix.schema, ix.table, ix.name, ix.shown, ix.size_bytes,
                         f"no index scans since {since}", ix.drop_sql)
            for ix in _indexes(conn)
            if ix.scans == 0 and ix.valid and ix.plain and not ix.unique and not ix.backs_constraint]


def _makes_redundant(b: _Index, a: _Index) -> bool:
    """Does index `b` answer every search index `a` answers, so that `a` can go?"""
    if a.oid == b.oid or a.backs_constraint or not a.plain or a.has_include:
        return False
    same_kind = (a.schema, a.table, a.method) == (b.schema, b.table, b.method) and a.valid and b.valid
    plain_keys = not (a.partial or b.partial or None in a.keys or None in b.keys)
    if not (same_kind and plain_keys and b.key_classes[:len(a.keys)] == a.key_classes
            and b.keys[:len(a.keys)] == a.keys):
        return False
    if len(a.keys) < len(b.keys):
        return not a.unique                  # a unique (a) says more than a unique (a, b)
    if a.unique != b.unique:
        return b.unique                      # equal columns: the unique one stays
    return b.backs_constraint or a.oid > b.oid   # equal twins: the later one goes, once


def duplicate_indexes(conn) -> list[IndexFinding]:
    """Indexes whose key is a leading prefix of another index of the same table and access method
    (or equal to it), neither partial nor on expressions. Each is reported once, covered by the
    shortest such index that is not itself reported."""
    return [IndexFinding("duplicate", a.schema, a.table, a.name, a.shown, a.size_bytes,
                         f"covered by {b.name} ({', '.join(b.shown)})", a.drop_sql)
            for a, b in redundant(_indexes(conn), _makes_redundant, prefer=lambda ix: len(ix.keys))]
