"""Index candidates from one SQL statement, by parsing it (never by running it).

The statement (a SELECT, or the WHERE of an UPDATE/DELETE) is parsed with sqlglot in the
"postgres" or "sqlite" dialect, so normalized text with `$1` or `?` placeholders parses as well.
Each SELECT (and the top UPDATE/DELETE) is its own scope: its FROM/JOIN/USING tables give the
alias map, and only its own WHERE, JOIN ... ON/USING and ORDER BY are read; a subquery is read as
its own scope. Columns land in four positions per table:

- equality: `col = <not a column>` and `col IN (...)`;
- range:    `col < > <= >= <not a column>` and `col BETWEEN ...`;
- join:     `a.col = b.col` across two tables (in ON, USING or WHERE), on both sides; when the other
            side is not a table of the scope (a CTE, a subquery's output), on the table's side only;
- order:    plain columns of ORDER BY, also when named by an output alias or a position (ORDER BY 2).

Only conjuncts are read (the tree is walked through AND and parentheses); a predicate under OR or
NOT cannot be answered by one index and is left out. A column without a table qualifier belongs to
the only table of its scope; with several tables it is ambiguous and left out (guessing would name
columns that do not exist). Unquoted identifiers fold to lower case as PostgreSQL folds them;
quoted ones ("Sales"."Orders") are kept exactly. CTE names are not tables and are skipped.

The same positions can come from a query plan instead of the text (`collectors.advisor.plan`, which
builds a scope from the plan's aliases with `Scope.of`): `merge_uses` joins both readings.

Candidates: first one single-column candidate per used column (equality, join, range, order, in
order of first appearance per table), then ordered two-column candidates: an equality or join
column first, followed by another equality/join column (in appearance order, one order only) or a
range/order column, and the first two ORDER BY columns of a table in their order. `widen` gives the
three-column ones that extend a chosen pair. A candidate is dropped when an existing index already
starts with its columns (an index on (a, b) covers the candidate (a)). Existing indexes are passed as
{table: [[col, ...], ...]}, keyed by "schema.table" or by the bare table name.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import sqlglot
from sqlglot import exp

DIALECTS = ("postgres", "sqlite")


@dataclass(frozen=True)
class Candidate:
    table: str
    schema: str | None
    columns: tuple[str, ...]


@dataclass
class TableUse:
    """Where one table's columns appear in a statement; each list in order of first appearance."""
    table: str
    schema: str | None
    equality: list[str] = field(default_factory=list)
    range: list[str] = field(default_factory=list)
    join: list[str] = field(default_factory=list)
    order: list[str] = field(default_factory=list)

    def add(self, position: str, column: str) -> None:
        cols = getattr(self, position)
        if column not in cols:
            cols.append(column)


def _name(ident) -> str | None:
    """An identifier's name as the database stores it: quoted kept, unquoted folded to lower case."""
    if ident is None:
        return None
    if isinstance(ident, exp.Identifier):
        return ident.this if ident.quoted else ident.this.lower()
    return str(ident).lower()


def quote(name: str) -> str:
    """A double-quoted identifier, as both PostgreSQL and SQLite read it."""
    return '"' + name.replace('"', '""') + '"'


def parse(sql: str, dialect: str) -> exp.Expression:
    """The single statement of `sql`; ValueError when it is not exactly one parsable statement."""
    if dialect not in DIALECTS:
        raise ValueError(f"dialect must be one of {DIALECTS}, not {dialect!r}")
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except sqlglot.errors.SqlglotError as e:      # ParseError, TokenError (an unclosed quote), ...
        raise ValueError(f"cannot parse: {str(e).splitlines()[0]}") from e
    if len(statements) != 1:
        raise ValueError(f"expected one statement, got {len(statements)}")
    return statements[0]


_FLIP = {exp.LT: exp.GT, exp.GT: exp.LT, exp.LTE: exp.GTE, exp.GTE: exp.LTE}
_RANGE = (exp.LT, exp.GT, exp.LTE, exp.GTE)


def conjuncts(node):
    """The AND-ed predicates of a condition, through parentheses; OR/NOT subtrees are not entered."""
    if node is None:
        return
    if isinstance(node, exp.And):
        yield from conjuncts(node.this)
        yield from conjuncts(node.expression)
    elif isinstance(node, exp.Paren):
        yield from conjuncts(node.this)
    else:
        yield node


class Scope:
    """The tables one SELECT (or UPDATE/DELETE) reads, by alias, and the positions of their columns."""

    def __init__(self, node: exp.Expression, uses: dict, ctes: set[str]):
        self.uses = uses
        self.aliases: dict[str, tuple[str | None, str]] = {}
        tables: list[exp.Table] = []
        if isinstance(node, (exp.Update, exp.Delete)):
            if isinstance(node.this, exp.Table):
                tables.append(node.this)
            tables += [t for t in node.args.get("using") or [] if isinstance(t, exp.Table)]
        frm = node.args.get("from_") or node.args.get("from")
        if frm is not None and isinstance(frm.this, exp.Table):
            tables.append(frm.this)
        for j in node.args.get("joins") or []:
            if isinstance(j.this, exp.Table):
                tables.append(j.this)
        self.order_of_tables: list[tuple[str | None, str]] = []
        for t in tables:
            name, schema = _name(t.this), _name(t.args.get("db"))
            if schema is None and name in ctes:
                continue
            key = (schema, name)
            alias = t.args.get("alias")
            self.aliases[_name(alias.this) if alias is not None and alias.this is not None else name] = key
            self.order_of_tables.append(key)
            if key not in uses:
                uses[key] = TableUse(table=name, schema=schema)

    @classmethod
    def of(cls, aliases: dict[str, tuple[str | None, str]], uses: dict) -> Scope:
        """A scope over given aliases ({alias: (schema, table)}), e.g. the relations of a query plan."""
        scope = cls.__new__(cls)
        scope.uses, scope.aliases = uses, dict(aliases)
        scope.order_of_tables = list(dict.fromkeys(aliases.values()))
        for schema, table in scope.order_of_tables:
            uses.setdefault((schema, table), TableUse(table=table, schema=schema))
        return scope

    def resolve(self, col: exp.Column) -> tuple[tuple[str | None, str], str] | None:
        if not isinstance(col, exp.Column) or not isinstance(col.this, exp.Identifier):
            return None
        qualifier = col.args.get("table")
        if qualifier is None:
            distinct = set(self.aliases.values())
            if len(distinct) != 1:
                return None
            return next(iter(distinct)), _name(col.this)
        key = self.aliases.get(_name(qualifier))
        return (key, _name(col.this)) if key is not None else None

    def mark(self, position: str, col) -> None:
        hit = self.resolve(col)
        if hit is not None:
            self.uses[hit[0]].add(position, hit[1])

    def predicate(self, p: exp.Expression) -> None:
        if isinstance(p, exp.EQ) or isinstance(p, _RANGE):
            left, right = _uncast(p.this), _uncast(p.expression)
            lc, rc = isinstance(left, exp.Column), isinstance(right, exp.Column)
            if lc and rc:
                a, b = self.resolve(left), self.resolve(right)
                if isinstance(p, exp.EQ) and ((a is None) != (b is None) or a and b and a[0] != b[0]):
                    for side in (a, b):      # one side may be a CTE or subquery column: the other still looks up
                        if side is not None:
                            self.uses[side[0]].add("join", side[1])
                return
            position = "equality" if isinstance(p, exp.EQ) else "range"
            if lc:
                self.mark(position, left)
            elif rc:
                self.mark(position, right)
        elif isinstance(p, exp.In):
            self.mark("equality", _uncast(p.this))
        elif isinstance(p, exp.Between):
            self.mark("range", _uncast(p.this))
        elif isinstance(p, exp.Is) and isinstance(p.expression, exp.Null):
            self.mark("equality", _uncast(p.this))   # a btree finds NULLs: `col IS NULL` is an equality

    def order_by(self, order: exp.Order | None, outputs: dict[str, exp.Expression] | None = None) -> None:
        """Mark the plain columns of ORDER BY; an output alias or position stands for its expression."""
        outputs = outputs or {}
        for o in order.expressions if order is not None else []:
            key = o.this if isinstance(o, exp.Ordered) else o
            if isinstance(key, exp.Literal) and key.is_int:
                key = outputs.get(f"#{key.this}", key)
            elif isinstance(key, exp.Column) and key.args.get("table") is None and _name(key.this) in outputs:
                key = outputs[_name(key.this)]
            self.mark("order", _uncast(key))

    def join_using(self, join: exp.Join, left_keys: list) -> None:
        right = self.aliases.get(_name(join.this.args["alias"].this) if join.this.args.get("alias")
                                 else _name(join.this.this)) if isinstance(join.this, exp.Table) else None
        for ident in join.args.get("using") or []:
            col = _name(ident)
            if right is not None:
                self.uses[right].add("join", col)
            for key in left_keys:
                if key != right:
                    self.uses[key].add("join", col)


def _uncast(node):
    """`(col)::text` and `CAST(col AS text)` read as the column: plans write an implicit cast so."""
    while isinstance(node, (exp.Cast, exp.Paren)):
        node = node.this
    return node


def _outputs(select: exp.Select) -> dict[str, exp.Expression]:
    """What ORDER BY may name instead of a column: output aliases, and positions as "#1", "#2", ..."""
    out: dict[str, exp.Expression] = {}
    for i, e in enumerate(select.expressions, 1):
        inner = e.this if isinstance(e, exp.Alias) else e
        out[f"#{i}"] = inner
        if isinstance(e, exp.Alias):
            out.setdefault(_name(e.args["alias"]), inner)
    return out


def columns_used(sql: str, dialect: str) -> list[TableUse]:
    """Per table (in order of first appearance), the columns in equality, range, join and order positions."""
    tree = parse(sql, dialect)
    if not isinstance(tree, (exp.Query, exp.Update, exp.Delete)):
        raise ValueError(f"not a SELECT, UPDATE or DELETE: {type(tree).__name__}")
    ctes = {_name(c.args["alias"].this) for c in tree.find_all(exp.CTE) if c.args.get("alias")}
    uses: dict[tuple[str | None, str], TableUse] = {}
    nodes = [tree] if isinstance(tree, (exp.Update, exp.Delete)) else []
    nodes += list(tree.find_all(exp.Select))
    for node in nodes:
        scope = Scope(node, uses, ctes)
        for j in node.args.get("joins") or []:
            for p in conjuncts(j.args.get("on")):
                scope.predicate(p)
            if j.args.get("using"):
                # USING joins the right table to the left ones that carry the column: with one left table, that one
                scope.join_using(j, scope.order_of_tables[:1] if len(scope.order_of_tables) == 2 else [])
        where = node.args.get("where")
        for p in conjuncts(where.this if where is not None else None):
            scope.predicate(p)
        if isinstance(node, exp.Select):
            scope.order_by(node.args.get("order"), _outputs(node))
    return list(uses.values())


def merge_uses(*readings: list[TableUse]) -> list[TableUse]:
    """One TableUse per table over several readings of a statement (its plan, its text), in order."""
    out: dict[tuple[str | None, str], TableUse] = {}
    for uses in readings:
        for use in uses:
            merged = out.setdefault((use.schema, use.table), TableUse(use.table, use.schema))
            for position in ("equality", "range", "join", "order"):
                for column in getattr(use, position):
                    merged.add(position, column)
    return list(out.values())


def _covered(columns: tuple[str, ...], existing: list[list[str]]) -> bool:
    return any(tuple(ix[:len(columns)]) == columns for ix in existing)


def existing_of(use: TableUse, existing_indexes: dict[str, list[list[str]]]) -> list[list[str]]:
    """The existing indexes of the table `use` names (keyed "schema.table" or by the bare name)."""
    keys = [f"{use.schema}.{use.table}", use.table] if use.schema else [use.table]
    return [ix for k in keys for ix in existing_indexes.get(k, [])]


def _equality_like(use: TableUse) -> list[str]:
    return list(dict.fromkeys(use.equality + use.join))


def candidates_for(uses: list[TableUse], existing_indexes: dict[str, list[list[str]]] | None = None) -> list[Candidate]:
    """Single-column candidates, then ordered two-column ones, minus those an existing index covers."""
    existing_indexes = existing_indexes or {}
    singles: list[Candidate] = []
    pairs: list[Candidate] = []
    for use in uses:
        existing = existing_of(use, existing_indexes)
        eq_like = _equality_like(use)
        rest = [c for c in dict.fromkeys(use.range + use.order) if c not in eq_like]
        for col in dict.fromkeys(eq_like + rest):
            if not _covered((col,), existing):
                singles.append(Candidate(use.table, use.schema, (col,)))
        wanted = [(lead, second) for i, lead in enumerate(eq_like) for second in eq_like[i + 1:] + rest]
        if len(use.order) >= 2 and use.order[0] not in eq_like:
            wanted.append(tuple(use.order[:2]))        # ORDER BY a, b: an index in that order reads sorted
        for columns in dict.fromkeys(wanted):
            if not _covered(columns, existing):
                pairs.append(Candidate(use.table, use.schema, columns))
    return singles + pairs


def widen(use: TableUse, pair: Candidate, existing_indexes: dict[str, list[list[str]]] | None = None) -> list[Candidate]:
    """Three-column candidates extending `pair`: after two equality/join columns any other used column,
    after ORDER BY's first two its third; none after a range column (an index stops narrowing there)."""
    eq_like = _equality_like(use)
    if all(c in eq_like for c in pair.columns):
        more = [c for c in dict.fromkeys(eq_like + use.range + use.order) if c not in pair.columns]
    elif list(pair.columns) == use.order[:2]:
        more = use.order[2:3]
    else:
        more = []
    existing = existing_of(use, existing_indexes or {})
    return [Candidate(use.table, use.schema, (*pair.columns, c)) for c in more
            if not _covered((*pair.columns, c), existing)]


def candidates(sql: str, dialect: str, existing_indexes: dict[str, list[list[str]]] | None = None) -> list[Candidate]:
    """`candidates_for` the columns the statement's text uses."""
    return candidates_for(columns_used(sql, dialect), existing_indexes)
