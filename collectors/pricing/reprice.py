"""Repricing a range on purpose (`perfdeck reprice`): price the stored calls of a range again with a
price book, show what would change (`plan_reprice`), then write it in the caller's transaction
(`apply_reprice`), the per-request costs and the spend rollups kept at ingest following their calls."""
from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import TYPE_CHECKING

from collectors.store import llm_rollup, request_costs
from collectors.store.ingest import COST_COLUMNS

if TYPE_CHECKING:
    from collectors.pricing import PriceBook


# -- repricing a range on purpose ------------------------------------------------------------------
_RANGE_SQL = """
    SELECT rowid AS row_id, ts, provider, model, input_tokens, output_tokens, cached_input_tokens,
           cache_write_tokens, cache_hit, cost_usd::VARCHAR AS old_cost, price_version AS old_version
    FROM llm_calls
    WHERE ts >= ? AND ts < ? AND (? IS NULL OR lower(model) = lower(?))
    ORDER BY ts
"""


@dataclass
class Repricing:
    """What `perfdeck reprice` would change (or changed) in a range."""
    rows: object                    # DataFrame: row_id + the new COST_COLUMNS of the calls that change
    calls: int
    changed: int                    # calls whose cost or price version differs
    spend_before: Decimal
    spend_after: Decimal
    unpriced_before: int
    unpriced_after: int
    versions_after: dict[str, int]  # price version -> calls ("unpriced" for None)

    def summary(self) -> str:
        return (f"{self.calls:,} calls, {self.changed:,} change: spend ${self.spend_before:,.6f} -> "
                f"${self.spend_after:,.6f}; unpriced {self.unpriced_before:,} -> {self.unpriced_after:,}; "
                f"prices now: " + ", ".join(f"{v} ({n:,})" for v, n in sorted(self.versions_after.items())))


def plan_reprice(con, book: PriceBook, *, since: datetime, until: datetime, model: str | None = None) -> Repricing:
    """Price every call in [since, until) again with `book`, without writing anything."""
    df = con.execute(_RANGE_SQL, [since, until, model, model]).df()
    book.price_frame(df)
    new = list(df[list(COST_COLUMNS)].itertuples(index=False, name=None))

    def cost(text):
        return Decimal(text) if isinstance(text, str) else None

    changed = [cost(o) != cost(n[2]) or (ov if isinstance(ov, str) else None) != n[4]
               for o, ov, n in zip(df["old_cost"], df["old_version"], new)]
    versions = dict(Counter(n[4] or "unpriced" for n in new))
    return Repricing(df.loc[changed, ["row_id", *COST_COLUMNS]], len(df), sum(changed),
                     sum((cost(o) for o in df["old_cost"] if cost(o) is not None), Decimal(0)),
                     sum((cost(n[2]) for n in new if n[2] is not None), Decimal(0)),
                     sum(1 for o in df["old_cost"] if cost(o) is None), sum(1 for n in new if n[2] is None), versions)


def apply_reprice(con, plan: Repricing) -> int:
    """Write a plan's costs within the caller's transaction; returns the rows updated."""
    if not plan.changed:
        return 0
    con.register("_repriced", plan.rows)
    try:
        con.execute("""
            UPDATE llm_calls SET input_cost_usd = r.input_cost_usd::DECIMAL(18, 12),
                                 output_cost_usd = r.output_cost_usd::DECIMAL(18, 12),
                                 cost_usd = r.cost_usd::DECIMAL(18, 12), saved_usd = r.saved_usd::DECIMAL(18, 12),
                                 price_version = r.price_version::VARCHAR,
                                 priced_at = CASE WHEN r.price_version IS NOT NULL THEN now()::TIMESTAMP END
            FROM _repriced r
            WHERE llm_calls.rowid = r.row_id
        """)
        repriced = con.execute("SELECT DISTINCT request_id FROM llm_calls WHERE request_id IS NOT NULL"
                               " AND rowid IN (SELECT row_id FROM _repriced)").df()["request_id"]
        [(first, last)] = con.execute("SELECT min(ts), max(ts) FROM llm_calls"
                                      " WHERE rowid IN (SELECT row_id FROM _repriced)").fetchall()
    finally:
        con.unregister("_repriced")
    request_costs.refresh(con, repriced)        # the per-request costs kept at ingest follow their calls
    llm_rollup.rebuild(con, first, last + timedelta(microseconds=1))   # and so does the spend kept per period
    return plan.changed
