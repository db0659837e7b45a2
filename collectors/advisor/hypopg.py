"""Check index candidates on PostgreSQL with hypothetical indexes (the hypopg extension).

For one SELECT and its candidates (from `collectors.advisor.candidates`), on a psycopg connection:

1. EXPLAIN (FORMAT JSON) the statement with no hypothetical index: the base cost;
2. per candidate, `SELECT * FROM hypopg_create_index('CREATE INDEX ON "schema"."table" ("col", ...)')`,
   EXPLAIN again, then `hypopg_reset()`;
3. keep the cheapest candidate when the base cost is not trivial (>= `min_base_cost`) and the
   candidate cuts it by at least `min_share` (default 0.5); otherwise advise nothing.

Safety, since the text was captured from an application: only a plain EXPLAIN (never ANALYZE) of a
single SELECT is ever run. sqlglot must read the text as exactly one SELECT with no data-modifying
part (no INSERT/UPDATE/DELETE/MERGE in a CTE, no SELECT INTO, no FOR UPDATE); the statements that
carry the text are sent through the extended query protocol, which the server refuses for more than
one command, so a lexing difference between sqlglot and PostgreSQL cannot smuggle a second
statement; and everything runs in a READ ONLY transaction with a statement timeout.

Normalized statements ($1, $2, ... as pg_stat_statements stores them) cannot be explained as they
are: they are prepared (PREPARE, parameter types inferred by the server) and explained with
`EXPLAIN EXECUTE name(NULL, ...)` under `SET LOCAL plan_cache_mode = force_generic_plan`, so the plan
is the generic one and does not depend on the NULLs. A fresh statement is prepared per EXPLAIN, since
creating a hypothetical index does not invalidate a cached plan. (PostgreSQL 16 has
`EXPLAIN (GENERIC_PLAN)`; PREPARE works on 15 as well.)

Hypothetical indexes live in the backend's memory, not in the transaction: `hypopg_reset()` runs
after every trial and in `finally`. A candidate hypopg refuses (a column the table does not have,
when the parser could not tell a column from an output alias) is skipped in a savepoint and listed in
`Advice.skipped`. The caller creates the extension (`CREATE EXTENSION hypopg`).
"""
from __future__ import annotations

import itertools

import psycopg
from psycopg import sql as pgsql
from sqlglot import exp

from collectors.advisor.candidates import Candidate, parse
from collectors.advisor.model import DEFAULT_MIN_SHARE, Advice, Trial, pick

DEFAULT_MIN_BASE_COST = 1000.0
_names = itertools.count()


def check_select(text: str) -> int:
    """Raise ValueError unless `text` is a single read-only SELECT; return its number of $n parameters."""
    tree = parse(text, "postgres")
    if not isinstance(tree, exp.Select):
        raise ValueError(f"only a single SELECT is explained, not {type(tree).__name__}")
    for kind in (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Into, exp.Lock, exp.Command):
        if tree.find(kind) is not None:
            raise ValueError(f"refusing a SELECT that contains {kind.__name__}")
    if tree.find(exp.Placeholder) is not None:
        raise ValueError("'?' placeholders are not PostgreSQL's; normalized statements use $1, $2, ...")
    numbers = [int(p.this.this) for p in tree.find_all(exp.Parameter)
               if isinstance(p.this, exp.Literal) and str(p.this.this).isdigit()]
    return max(numbers, default=0)


def create_index_statement(candidate: Candidate) -> pgsql.Composed:
    """`CREATE INDEX ON "schema"."table" ("col", ...)`, every name a quoted identifier."""
    table = (pgsql.Identifier(candidate.schema, candidate.table) if candidate.schema
             else pgsql.Identifier(candidate.table))
    cols = pgsql.SQL(", ").join(pgsql.Identifier(c) for c in candidate.columns)
    return pgsql.SQL("CREATE INDEX ON {} ({})").format(table, cols)


def _cost(cur, text: str, nparams: int) -> float:
    # binary=True sends through the extended protocol: the server refuses more than one command
    if nparams == 0:
        cur.execute(b"EXPLAIN (FORMAT JSON) " + text.encode(), binary=True)
        return float(cur.fetchone()[0][0]["Plan"]["Total Cost"])
    name = f"perfdeck_advisor_{next(_names)}"
    cur.execute(f"PREPARE {name} AS ".encode() + text.encode(), binary=True)
    cur.execute(f"EXPLAIN (FORMAT JSON) EXECUTE {name}({', '.join(['NULL'] * nparams)})".encode(), binary=True)
    cost = float(cur.fetchone()[0][0]["Plan"]["Total Cost"])
    cur.execute(f"DEALLOCATE {name}".encode())   # on an error, validate's cleanup deallocates it
    return cost


def validate(conn, text: str, candidates: list[Candidate], *, min_share: float = DEFAULT_MIN_SHARE,
             min_base_cost: float = DEFAULT_MIN_BASE_COST, timeout_ms: int = 5000) -> Advice:
    """Explain `text` without and with each candidate as a hypothetical index; see the module doc."""
    nparams = check_select(text)
    trials: list[Trial] = []
    skipped: list[Candidate] = []
    try:
        with conn.transaction(), conn.cursor() as cur:
            cur.execute("SET TRANSACTION READ ONLY")
            cur.execute(pgsql.SQL("SET LOCAL statement_timeout = {}").format(pgsql.Literal(int(timeout_ms))))
            cur.execute("SET LOCAL plan_cache_mode = force_generic_plan")
            cur.execute("SELECT hypopg_reset()")
            base = _cost(cur, text, nparams)
            for cand in candidates:
                try:
                    with conn.transaction():   # a savepoint: a candidate hypopg refuses is skipped, not fatal
                        cur.execute("SELECT * FROM hypopg_create_index(%s)",
                                    (create_index_statement(cand).as_string(conn),))
                except psycopg.Error:
                    skipped.append(cand)
                    continue
                trials.append(Trial(cand, _cost(cur, text, nparams)))
                cur.execute("SELECT hypopg_reset()")
    finally:
        # hypothetical indexes outlive a rolled-back transaction: drop them whatever happened
        if not conn.closed and not conn.broken:
            with conn.transaction():
                conn.execute("SELECT hypopg_reset()")
                for (name,) in conn.execute("SELECT name FROM pg_prepared_statements WHERE name LIKE 'perfdeck_advisor_%'"):
                    conn.execute(f"DEALLOCATE {name}")
    best, worth = pick(base, trials, min_share=min_share, min_base_cost=min_base_cost)
    if not worth:
        return Advice(base, tuple(trials), None, None, tuple(skipped))
    return Advice(base, tuple(trials), best.candidate, best.cost, tuple(skipped))
