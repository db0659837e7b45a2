"""What the advisor reads and what it reports, shared by its methods (hypopg, heuristic, sqlite-plan).

A `Statement` is one entry of the workload. Each method turns one statement and its candidates into
an `Advice` (costs in the method's own unit: planner cost for hypopg, estimated rows read for the
heuristic and sqlite-plan). `advise()` folds the advice of the whole workload into `Recommendation`s,
and the catalogue adds `IndexFinding`s (unused and duplicate indexes)."""
from __future__ import annotations

from dataclasses import dataclass, field

from collectors.advisor.candidates import Candidate

DEFAULT_MIN_SHARE = 0.5        # keep a candidate only when it cuts the statement's cost by half or more
MIN_TABLE_ROWS = 10_000        # below this a sequential scan is cheap: no index is suggested


@dataclass(frozen=True)
class Statement:
    """One statement of the workload, with what it cost over `days`."""
    text: str                  # what is parsed: normalized ($1 / ?) or with literals
    calls: int
    total_ms: float
    source: str = "given"      # "pg_stat_statements" | "sdk" | "given"
    days: float = 1.0          # the span calls and total_ms cover
    key: str = ""              # how the store names it (SDK fingerprint or pg_stat_statements text)
    queryids: tuple[int, ...] = ()   # its pg_stat_statements ids (one per user that ran it)

    @property
    def mean_ms(self) -> float:
        return self.total_ms / self.calls if self.calls else 0.0

    @property
    def calls_per_day(self) -> float:
        return self.calls / self.days if self.days > 0 else float(self.calls)


@dataclass(frozen=True)
class Trial:
    candidate: Candidate
    cost: float


@dataclass(frozen=True)
class Advice:
    base_cost: float
    trials: tuple[Trial, ...]
    best: Candidate | None           # None: no candidate is worth an index
    best_cost: float | None
    skipped: tuple[Candidate, ...] = ()   # candidates the method could not try (e.g. a column the table lacks)
    method: str = "hypopg"           # "hypopg" | "heuristic" | "sqlite-plan"

    @property
    def reduction(self) -> float | None:
        """Share of the base cost the best candidate removes (0.93 = 93 % cheaper)."""
        if self.best_cost is None or self.base_cost <= 0:
            return None
        return 1 - self.best_cost / self.base_cost


def pick(base: float, trials: list[Trial], *, min_share: float, min_base_cost: float = 0.0) -> tuple[Trial | None, bool]:
    """The cheapest trial (the first of equals, so the fewest columns when candidates come single
    columns first) and whether it is worth an index: the base cost is not trivial and the trial cuts
    it by at least `min_share`."""
    best = min(trials, key=lambda t: t.cost, default=None)
    worth = best is not None and base >= min_base_cost and base > 0 and best.cost <= base * (1 - min_share)
    return best, worth


def choose(base: float, trials: list[Trial], *, min_share: float, min_base_cost: float = 0.0) -> Trial | None:
    """The cheapest single-column trial worth an index, then a wider one only if it cuts that one's cost
    by `min_share` again and that cost was not already cheap (under `min_base_cost`): a wider index must
    earn its extra column as the first one earned its place."""
    chosen, reference = None, base
    for width in sorted({len(t.candidate.columns) for t in trials}):
        best, worth = pick(reference, [t for t in trials if len(t.candidate.columns) == width],
                           min_share=min_share, min_base_cost=min_base_cost)
        if worth:
            chosen, reference = best, best.cost
    return chosen


def advice(base: float, trials: list[Trial], skipped: list, method: str, **kw) -> Advice:
    """The Advice of `choose()` over the trials."""
    best = choose(base, trials, **kw)
    return Advice(base, tuple(trials), best and best.candidate, best and best.cost, tuple(skipped), method=method)


@dataclass
class Recommendation:
    table: str
    schema: str | None
    columns: tuple[str, ...]
    create_sql: str
    method: str
    est_improvement_pct: float              # time-weighted cost reduction over the statements it helps
    time_saved_ms_per_day: float
    calls_per_day: float
    mean_ms: float                          # time-weighted mean latency of those statements today
    queries: list[str] = field(default_factory=list)   # their keys (fingerprints / normalized texts)

    def as_json(self) -> dict:
        return {"table": self.table, "schema": self.schema, "columns": list(self.columns),
                "create_sql": self.create_sql, "est_improvement_pct": round(self.est_improvement_pct, 1),
                "time_saved_ms_per_day": round(self.time_saved_ms_per_day, 1),
                "calls_per_day": round(self.calls_per_day, 1), "mean_ms": round(self.mean_ms, 3),
                "queries": self.queries, "method": self.method}


def redundant(indexes: list, makes_redundant, prefer=lambda ix: 0) -> list[tuple]:
    """(index, the index that covers it) for every index another one makes redundant, in the order of
    `indexes`; the coverer is the first by `prefer` that is not itself redundant, so two twins are
    never reported for each other."""
    covering = {id(a): sorted((b for b in indexes if makes_redundant(b, a)), key=prefer) for a in indexes}
    return [(a, next((b for b in covering[id(a)] if not covering[id(b)]), covering[id(a)][0]))
            for a in indexes if covering[id(a)]]


@dataclass(frozen=True)
class IndexFinding:
    """An existing index that costs without paying: never used, or a prefix of another one."""
    kind: str                  # "unused" | "duplicate"
    schema: str | None
    table: str
    index: str
    columns: tuple[str, ...]
    size_bytes: int | None
    detail: str                # "no scans since 2026-11-02" / "covered by ix_orders_a_b (a, b)"
    drop_sql: str

    def as_json(self) -> dict:
        return {"kind": self.kind, "schema": self.schema, "table": self.table, "index": self.index,
                "columns": list(self.columns), "size_bytes": self.size_bytes, "detail": self.detail,
                "drop_sql": self.drop_sql}
