"""What a statement really reads, from PostgreSQL's own plan of it (what Dexter and PoWA do).

The text names a view, a CTE or a partitioned table; the plan names the tables underneath. So the
advisor asks for `EXPLAIN (FORMAT JSON, VERBOSE)` of the statement's generic plan and reads from it:

- the relations scanned (views and inlined CTEs are already expanded there), each partition mapped
  to the root of its partitioned table, where an index is created once for every partition;
- per relation, the columns of its filters, index and recheck conditions, join conditions (hash,
  merge, nested-loop inner index conditions, join filters) and sort keys, read with the same
  positions as the text (`candidates.Scope`, on the plan's aliases: `m_1.ts` is partition m_1 of m);
- the total cost, the existing indexes the plan already uses, and how many catalogue relations it reads.

A normalized statement ($1) is PREPAREd and EXPLAINed as EXECUTE with NULL parameters under
`plan_cache_mode = force_generic_plan`: the plan for any value, as hypopg needs it. Run-time
partition pruning is switched off for it, since NULLs would prune every partition away from the plan
shown (the generic plan's costs are made before pruning, so they do not change). Every statement is
sent through the extended protocol, where the server refuses a second command, in a read-only
transaction with a statement timeout (`session`), and carries the advisor's mark so that perfdeck's
own statements can be told from the application's in pg_stat_statements.
"""
from __future__ import annotations

import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import sqlglot
from psycopg import sql as pgsql
from sqlglot import exp

from collectors.advisor.candidates import Scope, TableUse, conjuncts, parse

MARK = "/* perfdeck advisor */ "     # pg_stat_statements keeps it: the sampler leaves these statements out
CATALOG_SCHEMAS = ("pg_catalog", "information_schema")
_CONDITIONS = ("Filter", "Index Cond", "Recheck Cond", "Join Filter", "Hash Cond", "Merge Cond", "TID Cond")
_names = itertools.count()


def check_select(text: str) -> int:
    """Raise ValueError unless `text` is a single read-only SELECT; return its number of $n parameters."""
    tree = parse(text, "postgres")
    if not isinstance(tree, (exp.Select, exp.Union)):
        raise ValueError(f"only a single SELECT is explained, not {type(tree).__name__}")
    for kind in (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Into, exp.Lock, exp.Command):
        if tree.find(kind) is not None:
            raise ValueError(f"refusing a SELECT that contains {kind.__name__}")
    if tree.find(exp.Placeholder) is not None:
        raise ValueError("'?' placeholders are not PostgreSQL's; normalized statements use $1, $2, ...")
    numbers = [int(p.this.this) for p in tree.find_all(exp.Parameter)
               if isinstance(p.this, exp.Literal) and str(p.this.this).isdigit()]
    return max(numbers, default=0)


@contextmanager
def session(conn, *, timeout_ms: int = 5000) -> Iterator:
    """A cursor in a read-only transaction that plans generically, rolled back on exit; prepared
    statements the advisor left behind (after an error) are deallocated."""
    try:
        with conn.transaction(force_rollback=True), conn.cursor() as cur:
            cur.execute(MARK + "SET TRANSACTION READ ONLY")
            cur.execute(pgsql.SQL(MARK + "SET LOCAL statement_timeout = {}").format(pgsql.Literal(int(timeout_ms))))
            cur.execute(MARK + "SET LOCAL plan_cache_mode = force_generic_plan")
            yield cur
    finally:
        if not conn.closed and not conn.broken:
            for (name,) in conn.execute(MARK + "SELECT name FROM pg_prepared_statements "
                                        "WHERE name LIKE 'perfdeck_advisor_%'").fetchall():
                conn.execute(f"{MARK}DEALLOCATE {name}")


def explain(cur, text: str, nparams: int) -> dict:
    """The JSON plan of `text` (its generic plan when it has $n parameters): {"Plan": {...}, ...}."""
    # binary=True sends through the extended protocol: the server refuses more than one command
    if nparams == 0:
        cur.execute((MARK + "EXPLAIN (FORMAT JSON, VERBOSE) ").encode() + text.encode(), binary=True)
        return cur.fetchone()[0][0]
    name = f"perfdeck_advisor_{next(_names)}"
    cur.execute(MARK + "SET LOCAL enable_partition_pruning = off")
    cur.execute(f"{MARK}PREPARE {name} AS ".encode() + text.encode(), binary=True)
    cur.execute(f"{MARK}EXPLAIN (FORMAT JSON, VERBOSE) EXECUTE {name}({', '.join(['NULL'] * nparams)})".encode(),
                binary=True)
    plan = cur.fetchone()[0][0]
    cur.execute(f"{MARK}DEALLOCATE {name}".encode())   # on an error, session() deallocates it
    return plan


def cost(cur, text: str, nparams: int) -> float:
    return float(explain(cur, text, nparams)["Plan"]["Total Cost"])


@dataclass
class Reading:
    """What one plan says the statement reads."""
    cost: float
    uses: list[TableUse] = field(default_factory=list)     # user relations, partitions as their root
    catalogs: int = 0                                       # catalogue relations scanned
    indexes: list[str] = field(default_factory=list)        # existing indexes the plan uses
    kinds: dict[tuple[str, str], str] = field(default_factory=dict)   # (schema, table) -> relkind


def _nodes(node: dict) -> Iterator[dict]:
    yield node
    for child in node.get("Plans") or []:
        yield from _nodes(child)


def _root(cur, schema: str, relation: str) -> tuple[str, str, str] | None:
    """(schema, name, relkind) of the partitioned table at the root of `relation`'s tree, else its own."""
    cur.execute(MARK + """
        SELECT n.nspname, c.relname, c.relkind FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.oid = (SELECT coalesce(pg_partition_root(r), r) FROM to_regclass(%s) r)""",
                (pgsql.Identifier(schema, relation).as_string(cur),))
    return cur.fetchone()


def _expression(text: str, wrap: str) -> exp.Expression | None:
    """A plan's condition or sort key as sqlglot reads it; None for what it cannot (SubPlan, arrays...)."""
    try:
        tree = sqlglot.parse_one(wrap.format(text), read="postgres")
    except sqlglot.errors.SqlglotError:
        return None
    return tree if isinstance(tree, exp.Select) else None


def read(cur, text: str, nparams: int) -> Reading:
    """Explain `text` and read its relations, their used columns and its cost (see the module doc)."""
    doc = explain(cur, text, nparams)
    nodes = list(_nodes(doc["Plan"]))
    reading = Reading(float(doc["Plan"]["Total Cost"]))
    aliases: dict[str, tuple[str, str]] = {}
    for node in nodes:
        if node.get("Index Name"):
            reading.indexes.append(node["Index Name"])
        if "Relation Name" not in node:
            continue
        schema, relation = node.get("Schema") or "public", node["Relation Name"]
        if schema in CATALOG_SCHEMAS:
            reading.catalogs += 1
            continue
        root = _root(cur, schema, relation)
        if root is None:
            continue
        aliases[node.get("Alias") or relation] = root[:2]
        reading.kinds[root[:2]] = root[2]
    uses: dict = {}
    scope = Scope.of(aliases, uses)
    for node in nodes:
        for key in _CONDITIONS:
            if node.get(key):
                tree = _expression(node[key], "SELECT 1 WHERE {}")
                for predicate in conjuncts(tree.args["where"].this if tree is not None else None):
                    scope.predicate(predicate)
        for key in node.get("Sort Key") or []:
            tree = _expression(key, "SELECT 1 ORDER BY {}")
            if tree is not None:
                scope.order_by(tree.args.get("order"))
    reading.uses = list(uses.values())
    reading.indexes = list(dict.fromkeys(reading.indexes))
    return reading

