"""Choose an index from PostgreSQL's statistics alone, for servers without hypopg (PgHero's idea).

Nothing is run but catalogue queries: the captured text is only parsed (`columns_used`), to know in
which position each column is used. Costs are estimated rows read:

1. Per table of the statement: its rows (pg_class.reltuples) and its columns' pg_stats lines. Its
   base cost is its cheapest existing access path: a sequential scan (its rows), or an existing
   btree index whose leading columns the statement uses, costed as a candidate on those columns
   would be (steps 3-5). The statement's base is the sum over its tables. So an index that already
   serves a query makes the base small, and a wider twin of it ((aid, tid) beside (aid)) is never
   proposed: a statement whose base is under `min_rows` rows is already cheap.
2. Per candidate, skipped (listed in `Advice.skipped`): a table of fewer than `min_rows` rows, a
   column without a pg_stats line (the table was never analyzed, or it has no such column), and a
   column the statement neither filters nor sorts on.
3. Selectivity of an equality or join column: the average key's share of the rows,
   (1 - null_frac) / n_distinct (n_distinct > 0 is a count, < 0 minus a share of the rows), at most
   the commonest value's frequency. The value of a normalized statement ($1) is unknown, so a
   skewed column is not read by its most common values; this is the estimate PostgreSQL makes for a
   generic plan too. For a join column it is the rows read per lookup.
4. Selectivity of a range or order column: 1/3, PostgreSQL's own default for `col > $1`. But an
   index that returns the rows in ORDER BY's order (equality columns, then all ORDER BY columns) stops
   a `LIMIT n` after n rows (a `LIMIT $1`: PLACEHOLDER_LIMIT), unless the rows are grouped first.
5. A candidate reads its table's rows times the product of its columns' selectivities (the columns
   are assumed independent; candidates lead with an equality column, so each column narrows the
   scan). A row read through an index costs RANDOM_READ rows of a sequential scan (PostgreSQL's
   random_page_cost / seq_page_cost): the candidate's cost is the base with its table's rows replaced
   by RANDOM_READ x its estimate. So an index that reads a third or half of a table is never worth it.
6. `model.choose()`: the single column reading the fewest rows when it cuts the base by at least
   `min_share`, a two-column one (then a three-column one extending the best pair, given the
   statement's `uses`) only if it cuts that again. For a single table, reduction = 1 - rows read / base.

Rows are counted, not pages: the RANDOM_READ weight stands in for the planner's page costs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace

from sqlglot import exp

from collectors.advisor.candidates import Candidate, TableUse, columns_used, existing_of, parse, widen
from collectors.advisor.model import DEFAULT_MIN_SHARE, MIN_TABLE_ROWS, Advice, Trial, advice
from collectors.advisor.pg_catalog import ColumnStats, column_stats, existing_indexes, table_rows

RANGE_SELECTIVITY = 1 / 3      # DEFAULT_INEQ_SEL in PostgreSQL's selfuncs.h
RANDOM_READ = 4.0              # random_page_cost / seq_page_cost, PostgreSQL's defaults
PLACEHOLDER_LIMIT = 100        # rows a `LIMIT $1` is assumed to ask for


@dataclass(frozen=True)
class _Table:
    use: TableUse
    rows: float                        # reltuples; 0 when never vacuumed nor analyzed (-1)
    stats: dict[str, ColumnStats]
    base: float = 0.0                  # rows its cheapest existing access path reads (step 1)


def _tables(conn, uses: list[TableUse], existing: dict, min_rows: int) -> dict[tuple[str | None, str], _Table]:
    """The statement's tables that exist, keyed by (schema, table) as `uses` names them."""
    tables = {}
    for use in uses:
        rows = table_rows(conn, use.schema, use.table)
        if rows is not None:
            table = _Table(use, max(rows, 0.0), column_stats(conn, use.schema, use.table))
            paths = [RANDOM_READ * r for ix in existing_of(use, existing)
                     if (r := _rows_read(table, Candidate(use.table, use.schema, _served(table, ix)), min_rows))
                     is not None]
            tables[(use.schema, use.table)] = replace(table, base=min([table.rows, *paths]))
    return tables


def _served(table: _Table, index: list[str]) -> tuple[str, ...]:
    """The leading columns of an existing index that the statement's filters use (after a range
    column an index narrows no further): what it can search on."""
    use, prefix = table.use, []
    for column in index:
        if column in use.equality or column in use.join:
            prefix.append(column)
        elif column in use.range:
            prefix.append(column)
            break
        else:
            break
    return tuple(prefix)


def _equality_selectivity(stats: ColumnStats, rows: float) -> float:
    """The average key's share of the rows (step 3 of the module doc)."""
    distinct = stats.n_distinct if stats.n_distinct > 0 else -stats.n_distinct * rows
    selectivity = (1 - stats.null_frac) / max(distinct, 1.0)
    return selectivity if stats.top_freq is None else min(selectivity, stats.top_freq)


def _selectivity(table: _Table, column: str) -> float | None:
    stats = table.stats.get(column)
    if stats is None:
        return None
    if column in table.use.equality or column in table.use.join:
        return _equality_selectivity(stats, table.rows)
    if column in table.use.range or column in table.use.order:
        return RANGE_SELECTIVITY
    return None


def _rows_read(table: _Table | None, candidate: Candidate, min_rows: int, limit: int | None = None) -> float | None:
    """Estimated rows the candidate index reads; None when it cannot be estimated or is not worth it.
    An index that returns the rows in the statement's ORDER BY (equality columns, then every ORDER BY
    column in order) stops after LIMIT rows."""
    if table is None or table.rows < min_rows or not candidate.columns:
        return None
    use, columns = table.use, candidate.columns
    lead = next((i for i, c in enumerate(columns) if c not in use.equality), len(columns))
    sorted_read = limit is not None and use.order and columns[lead:] == tuple(use.order)
    selectivities = [_selectivity(table, column) for column in (columns[:lead] if sorted_read else columns)]
    if None in selectivities:
        return None
    rows = table.rows * math.prod(selectivities)
    return min(rows, limit) if sorted_read else rows


def _limit(sql: str) -> int | None:
    """The rows a plain `SELECT ... ORDER BY ... LIMIT n` asks for (`LIMIT $1`: PLACEHOLDER_LIMIT);
    None when there is no LIMIT or the rows are grouped, aggregated or made distinct before it."""
    tree = parse(sql, "postgres")
    limit = tree.args.get("limit") if isinstance(tree, exp.Select) else None
    if limit is None or tree.args.get("group") or tree.args.get("distinct") or tree.find(exp.AggFunc):
        return None
    value = limit.expression
    return int(value.this) if isinstance(value, exp.Literal) and value.is_int else PLACEHOLDER_LIMIT


def choose(conn, sql: str, candidates: list[Candidate], *, uses: list[TableUse] | None = None,
           existing: dict | None = None, min_share: float = DEFAULT_MIN_SHARE,
           min_rows: int = MIN_TABLE_ROWS) -> Advice:
    """The candidate reading the fewest estimated rows, if it cuts them by `min_share`; see the module doc.
    `uses` (default: the text's own reading) and `existing` (default: the catalogue's) as `advise` has them."""
    uses = columns_used(sql, "postgres") if uses is None else uses
    existing = existing_indexes(conn) if existing is None else existing
    tables = _tables(conn, uses, existing, min_rows)
    limit = _limit(sql)
    base = sum(t.base for t in tables.values())
    trials: list[Trial] = []
    skipped: list[Candidate] = []

    def attempt(cand: Candidate) -> None:
        table = tables.get((cand.schema, cand.table))
        rows = _rows_read(table, cand, min_rows, limit)
        if rows is None:
            skipped.append(cand)
        else:
            trials.append(Trial(cand, base - table.base + min(table.base, RANDOM_READ * rows)))

    for cand in candidates:
        attempt(cand)
    pairs = [t for t in trials if len(t.candidate.columns) == 2]
    if pairs:
        pair = min(pairs, key=lambda t: t.cost).candidate
        for cand in widen(tables[(pair.schema, pair.table)].use, pair, existing):
            attempt(cand)
    return advice(base, trials, skipped, "heuristic", min_share=min_share, min_base_cost=min_rows)
