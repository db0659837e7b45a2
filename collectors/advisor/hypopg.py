"""Check index candidates on PostgreSQL with hypothetical indexes (the hypopg extension).

For one SELECT and its candidates (from `collectors.advisor.candidates`), on a psycopg connection:

1. EXPLAIN (FORMAT JSON) the statement with no hypothetical index: the base cost;
2. per candidate, `SELECT * FROM hypopg_create_index('CREATE INDEX ON "schema"."table" ("col", ...)')`,
   EXPLAIN again, then `hypopg_reset()`;
3. in passes: the single-column candidates, the two-column ones, then (given the statement's `uses`)
   three-column ones extending the cheapest pair (`candidates.widen`);
4. `model.choose`: the cheapest single column when the base cost is not trivial (>= `min_base_cost`)
   and it cuts it by at least `min_share` (default 0.5), a wider one only if it cuts that again;
   otherwise advise nothing.

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

import psycopg
from psycopg import sql as pgsql

from collectors.advisor.candidates import Candidate, TableUse, widen
from collectors.advisor.model import DEFAULT_MIN_SHARE, Advice, Trial, advice
from collectors.advisor.plan import MARK, check_select, cost, session

DEFAULT_MIN_BASE_COST = 1000.0

__all__ = ["DEFAULT_MIN_BASE_COST", "check_select", "create_index_statement", "validate"]


def create_index_statement(candidate: Candidate) -> pgsql.Composed:
    """`CREATE INDEX ON "schema"."table" ("col", ...)`, every name a quoted identifier."""
    table = (pgsql.Identifier(candidate.schema, candidate.table) if candidate.schema
             else pgsql.Identifier(candidate.table))
    cols = pgsql.SQL(", ").join(pgsql.Identifier(c) for c in candidate.columns)
    return pgsql.SQL("CREATE INDEX ON {} ({})").format(table, cols)


def validate(conn, text: str, candidates: list[Candidate], *, uses: list[TableUse] = (),
             existing: dict | None = None, min_share: float = DEFAULT_MIN_SHARE,
             min_base_cost: float = DEFAULT_MIN_BASE_COST, timeout_ms: int = 5000) -> Advice:
    """Explain `text` without and with each candidate as a hypothetical index; see the module doc."""
    nparams = check_select(text)
    trials: list[Trial] = []
    skipped: list[Candidate] = []
    try:
        with session(conn, timeout_ms=timeout_ms) as cur:
            cur.execute(MARK + "SELECT hypopg_reset()")
            base = cost(cur, text, nparams)

            def attempt(cand: Candidate) -> None:
                try:
                    with conn.transaction():   # a savepoint: a candidate hypopg refuses is skipped, not fatal
                        cur.execute(MARK + "SELECT * FROM hypopg_create_index(%s)",
                                    (create_index_statement(cand).as_string(conn),))
                except psycopg.Error:
                    skipped.append(cand)
                    return
                trials.append(Trial(cand, cost(cur, text, nparams)))
                cur.execute(MARK + "SELECT hypopg_reset()")

            for cand in candidates:
                attempt(cand)
            pairs = [t for t in trials if len(t.candidate.columns) == 2]
            if pairs:
                pair = min(pairs, key=lambda t: t.cost).candidate
                use = next((u for u in uses if (u.schema, u.table) == (pair.schema, pair.table)), None)
                for cand in widen(use, pair, existing) if use is not None else []:
                    attempt(cand)
    finally:
        # hypothetical indexes outlive a rolled-back transaction: drop them whatever happened
        if not conn.closed and not conn.broken:
            conn.execute(MARK + "SELECT hypopg_reset()")
    return advice(base, trials, skipped, "hypopg", min_share=min_share, min_base_cost=min_base_cost)
