"""Log-bucket latency histograms (the DDSketch idea).

A duration d > 0 ms falls in bucket ceil(ln d / ln GAMMA). Every value in bucket i lies in
(GAMMA^(i-1), GAMMA^i]; reporting 2·GAMMA^i / (GAMMA + 1) for it is off by at most
(GAMMA - 1) / (GAMMA + 1) ≈ 0.99 % relative. Buckets merge by adding counts, so a percentile over
any range and any set of endpoints is a sum followed by a cumulative scan (`quantile`)."""
from __future__ import annotations

import math

GAMMA = 1.02
LN_GAMMA = math.log(GAMMA)
MIN_MS = 1e-3  # durations below a microsecond share one bucket

# SQL snippets so every query computes buckets and representative values the same way.
BUCKET_SQL = f"CAST(ceil(ln(greatest({{col}}, {MIN_MS})) / {LN_GAMMA!r}) AS INTEGER)"
VALUE_SQL = f"(2 * pow({GAMMA!r}, {{col}}) / {GAMMA + 1!r})"


def bucket_of(ms: float) -> int:
    return math.ceil(math.log(max(ms, MIN_MS)) / LN_GAMMA)


def value_of(bucket: int) -> float:
    return 2 * GAMMA**bucket / (GAMMA + 1)


def quantile(counts: dict[int, int], q: float) -> float | None:
    """The q-quantile of a {bucket: count} histogram, or None when it is empty.

    Rank-correct like DuckDB's quantile_cont: at rank r = q * (n - 1), interpolated between the
    representative values of the buckets holding order statistics floor(r) and ceil(r) (0-based).
    Within (GAMMA - 1) / (GAMMA + 1) of quantile_cont over the values themselves, at any n."""
    total = sum(counts.values())
    if total == 0:
        return None
    rank = q * (total - 1)
    lower, upper = math.floor(rank), math.ceil(rank)
    below, upper_bucket = None, None
    seen = 0
    for b in sorted(counts):
        seen += counts[b]
        if below is None and seen > lower:
            below = b
        if seen > upper:
            upper_bucket = b
            break
    lo, hi = value_of(below), value_of(upper_bucket)
    return lo + (rank - lower) * (hi - lo)
