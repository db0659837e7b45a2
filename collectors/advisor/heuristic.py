"""Choose an index from PostgreSQL's statistics alone, for servers without hypopg (PgHero's idea).

Nothing is run but catalogue queries: the captured text is only parsed (`columns_used`), to know in
which position each column is used. Costs are estimated rows read:

1. Per table of the statement: its rows (pg_class.reltuples) and its columns' pg_stats lines. The
   base cost is a sequential scan of every table: the sum of their rows (a single table: its rows).
2. Per candidate, skipped (listed in `Advice.skipped`): a table of fewer than `min_rows` rows, a
   column without a pg_stats line (the table was never analyzed, or it has no such column), and a
   column the statement neither filters nor sorts on.
3. Selectivity of an equality or join column: the average key's share of the rows,
   (1 - null_frac) / n_distinct (n_distinct > 0 is a count, < 0 minus a share of the rows), at most
   the commonest value's frequency. The value of a normalized statement ($1) is unknown, so a
   skewed column is not read by its most common values; this is the estimate PostgreSQL makes for a
   generic plan too. For a join column it is the rows read per lookup.
4. Selectivity of a range or order column: 1/3, PostgreSQL's own default for `col > $1`.
5. A candidate reads its table's rows times the product of its columns' selectivities (the columns
   are assumed independent; candidates lead with an equality column, so each column narrows the
   scan). A row read through an index costs RANDOM_READ rows of a sequential scan (PostgreSQL's
   random_page_cost / seq_page_cost): the candidate's cost is the base with its table's rows replaced
   by RANDOM_READ x its estimate. So an index that reads a third or half of a table is never worth it.
6. `model.pick()`: the fewest rows wins (ties to fewer columns, as single columns come first) when it
   cuts the base by at least `min_share`. For a single table, reduction = 1 - rows read / reltuples.

Rows are counted, not pages: the RANDOM_READ weight stands in for the planner's page costs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

from collectors.advisor.candidates import Candidate, TableUse, columns_used
from collectors.advisor.model import DEFAULT_MIN_SHARE, MIN_TABLE_ROWS, Advice, Trial, pick
from collectors.advisor.pg_catalog import ColumnStats, column_stats, table_rows

RANGE_SELECTIVITY = 1 / 3      # DEFAULT_INEQ_SEL in PostgreSQL's selfuncs.h
RANDOM_READ = 4.0              # random_page_cost / seq_page_cost, PostgreSQL's defaults


@dataclass(frozen=True)
class _Table:
    use: TableUse
    rows: float                        # reltuples; 0 when never vacuumed nor analyzed (-1)
    stats: dict[str, ColumnStats]


def _tables(conn, sql: str) -> dict[tuple[str | None, str], _Table]:
    """The statement's tables that exist, keyed by (schema, table) as the parser names them."""
    tables = {}
    for use in columns_used(sql, "postgres"):
        rows = table_rows(conn, use.schema, use.table)
        if rows is not None:
            tables[(use.schema, use.table)] = _Table(use, max(rows, 0.0), column_stats(conn, use.schema, use.table))
    return tables


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


def _rows_read(table: _Table | None, candidate: Candidate, min_rows: int) -> float | None:
    """Estimated rows the candidate index reads; None when it cannot be estimated or is not worth it."""
    if table is None or table.rows < min_rows:
        return None
    selectivities = [_selectivity(table, column) for column in candidate.columns]
    return None if None in selectivities else table.rows * math.prod(selectivities)


def choose(conn, sql: str, candidates: list[Candidate], *, min_share: float = DEFAULT_MIN_SHARE,
           min_rows: int = MIN_TABLE_ROWS) -> Advice:
    """The candidate reading the fewest estimated rows, if it cuts them by `min_share`; see the module doc."""
    tables = _tables(conn, sql)
    base = sum(t.rows for t in tables.values())
    trials: list[Trial] = []
    skipped: list[Candidate] = []
    for cand in candidates:
        table = tables.get((cand.schema, cand.table))
        rows = _rows_read(table, cand, min_rows)
        if rows is None:
            skipped.append(cand)
        else:
            trials.append(Trial(cand, base - table.rows + RANDOM_READ * rows))
    best, worth = pick(base, trials, min_share=min_share)
    if not worth:
        return Advice(base, tuple(trials), None, None, tuple(skipped), method="heuristic")
    return Advice(base, tuple(trials), best.candidate, best.cost, tuple(skipped), method="heuristic")
