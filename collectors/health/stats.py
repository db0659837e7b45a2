"""Statistics for comparing two windows of request durations: pure numpy (scipy is not a dependency).

Both tests work on *grouped* data: ascending distinct values and how many times each occurs on each
side. Raw durations are grouped with `np.unique` (almost every value occurs once); latency histograms
already are grouped (one value per log bucket, see collectors.store.histogram). So one implementation
serves raw events and histograms, and a histogram of a million requests costs no more than its few
hundred buckets.

- `mann_whitney(before, after)`: Mann–Whitney U with the normal approximation, the tie correction of
  the variance and a continuity correction of 0.5 (what scipy.stats.mannwhitneyu reports with
  method="asymptotic", use_continuity=True). U counts the (before, after) pairs where after is
  larger, ties as half. alternative "greater" asks "is after slower?", "less" "is after faster?".
- `bootstrap_ratio(before, after, q)`: percentile bootstrap of quantile(after, q) / quantile(before, q).
  Each replicate needs only the order statistics of a resample, and those can be drawn exactly without
  building the resample: the k-th smallest of n draws with replacement is x[floor(n * U(k))] with
  U(k) ~ Beta(k, n - k + 1), the k-th smallest of n uniforms (floor is monotone). So thousands of
  replicates cost microseconds whatever n is.

Speed and memory: callers cap each side at MAX_SAMPLE durations (`subsample`, or a capped query as
dashboard.queries.compare does) before the test; a random subsample of 20,000 still detects a 2 %
shift of a lognormal latency at p < 0.001, and the bootstrap interval from it is, if anything, wider
(more cautious) than one from every request."""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

MAX_SAMPLE = 20_000   # durations per side fed to the test and the bootstrap
N_BOOT = 2_000        # bootstrap replicates
ALTERNATIVES = ("greater", "less", "two-sided")


@dataclass(frozen=True)
class Grouped:
    """A sample as ascending distinct `values` with their `counts` (> 0)."""

    values: np.ndarray
    counts: np.ndarray

    @property
    def n(self) -> int:
        return int(self.counts.sum())

    @classmethod
    def of(cls, sample) -> Grouped:
        values, counts = np.unique(np.asarray(sample, dtype=float), return_counts=True)
        return cls(values, counts)

    @classmethod
    def from_counts(cls, values, counts) -> Grouped:
        """From a histogram: (value, count) pairs in any order, zero counts dropped."""
        values, counts = np.asarray(values, dtype=float), np.asarray(counts, dtype=np.int64)
        keep = counts > 0
        order = np.argsort(values[keep], kind="stable")
        return cls(values[keep][order], counts[keep][order])

    def at(self, positions: np.ndarray) -> np.ndarray:
        """The values at 0-based positions of the sorted sample."""
        return self.values[np.searchsorted(np.cumsum(self.counts), positions, side="right")]


def _as_grouped(sample) -> Grouped:
    return sample if isinstance(sample, Grouped) else Grouped.of(sample)


def subsample(values, max_n: int = MAX_SAMPLE, rng: np.random.Generator | None = None) -> np.ndarray:
    """At most `max_n` of `values`, drawn without replacement (all of them when there are fewer)."""
    values = np.asarray(values, dtype=float)
    if len(values) <= max_n:
        return values
    rng = rng if rng is not None else np.random.default_rng(0)
    return rng.choice(values, size=max_n, replace=False)


def normal_sf(z: float) -> float:
    """P(Z > z) for a standard normal; erfc keeps the far tail accurate (no 1 - cdf cancellation)."""
    return 0.5 * math.erfc(z / math.sqrt(2))


@dataclass(frozen=True)
class MannWhitney:
    u: float        # pairs (before, after) with after > before, ties counted as half
    z: float        # continuity-corrected normal score, in the direction of `alternative`
    p_value: float
    alternative: str


def mann_whitney(before, after, *, alternative: str = "greater") -> MannWhitney:
    """Mann–Whitney U test of `after` against `before` (arrays or `Grouped`), normal approximation
    with tie and continuity corrections. alternative: "greater" (after is slower), "less" (after
    is faster) or "two-sided". All values tied, or an empty side: z = 0, p = 1."""
    if alternative not in ALTERNATIVES:
        raise ValueError(f"alternative must be one of {ALTERNATIVES}, got {alternative!r}")
    b, a = _as_grouped(before), _as_grouped(after)
    n_b, n_a = b.n, a.n
    values = np.union1d(b.values, a.values)
    count_b = np.zeros(len(values), dtype=np.int64)
    count_a = np.zeros(len(values), dtype=np.int64)
    count_b[np.searchsorted(values, b.values)] = b.counts
    count_a[np.searchsorted(values, a.values)] = a.counts
    ties = (count_b + count_a).astype(float)
    # Average rank of each group of equal values in the pooled sample (ranks start at 1).
    avg_rank = np.cumsum(ties) - ties + (ties + 1) / 2
    u = float((count_a * avg_rank).sum() - n_a * (n_a + 1) / 2)
    n = n_b + n_a
    mean = n_b * n_a / 2
    variance = n_b * n_a / 12 * ((n + 1) - ((ties**3 - ties).sum() / (n * (n - 1)) if n > 1 else 0.0))
    if n_b == 0 or n_a == 0 or variance <= 0:
        return MannWhitney(u, 0.0, 1.0, alternative)
    sd = math.sqrt(variance)
    if alternative == "greater":
        z = (u - mean - 0.5) / sd
        p = normal_sf(z)
    elif alternative == "less":
        z = (mean - u - 0.5) / sd
        p = normal_sf(z)
    else:
        z = (abs(u - mean) - 0.5) / sd
        p = min(1.0, 2 * normal_sf(z))
    return MannWhitney(u, z, p, alternative)


def quantile(sample, q: float, *, interpolate: bool = True) -> float:
    """The q-quantile of an array or `Grouped`. interpolate=True is numpy's default ("linear",
    DuckDB's quantile_cont); False takes the lower order statistic at q * (n - 1), the rule of the
    latency histograms (collectors.store.histogram.quantile)."""
    g = _as_grouped(sample)
    if g.n == 0:
        return math.nan
    h = q * (g.n - 1)
    lo = math.floor(h)
    lo_value, hi_value = g.at(np.array([lo, min(lo + 1, g.n - 1)]))
    return float(lo_value + (h - lo) * (hi_value - lo_value)) if interpolate else float(lo_value)


def _bootstrap_quantiles(g: Grouped, q: float, size: int, rng: np.random.Generator, interpolate: bool) -> np.ndarray:
    """`size` bootstrap replicates of quantile(resample of g, q), drawn exactly (see module doc)."""
    n = g.n
    h = q * (n - 1)
    k = math.floor(h) + 1                     # 1-based rank of the lower order statistic
    u_k = rng.beta(k, n - k + 1, size)        # k-th smallest of n uniforms
    low = g.at(np.minimum(np.floor(n * u_k), n - 1))
    frac = h - (k - 1)
    if not interpolate or frac == 0 or k >= n:
        return low
    # The next order statistic: the smallest of the n - k uniforms above u_k.
    u_next = u_k + (1 - u_k) * rng.beta(1, n - k, size)
    high = g.at(np.minimum(np.floor(n * u_next), n - 1))
    return low + frac * (high - low)


@dataclass(frozen=True)
class RatioCI:
    ratio: float    # quantile(after) / quantile(before) of the samples given
    low: float
    high: float


def bootstrap_ratio(before, after, q: float = 0.95, *, confidence: float = 0.95, n_boot: int = N_BOOT,
                    seed: int = 0, interpolate: bool = True) -> RatioCI:
    """Percentile-bootstrap confidence interval of quantile(after, q) / quantile(before, q).
    Reproducible for a given seed; NaNs when a side is empty or its quantile is not positive."""
    b, a = _as_grouped(before), _as_grouped(after)
    qb, qa = quantile(b, q, interpolate=interpolate), quantile(a, q, interpolate=interpolate)
    if b.n == 0 or a.n == 0 or not qb > 0:
        return RatioCI(math.nan, math.nan, math.nan)
    rng = np.random.default_rng(seed)
    with np.errstate(divide="ignore", invalid="ignore"):   # a resample of a zero duration
        ratios = (_bootstrap_quantiles(a, q, n_boot, rng, interpolate)
                  / _bootstrap_quantiles(b, q, n_boot, rng, interpolate))
    tail = (1 - confidence) / 2
    low, high = np.nanquantile(ratios, [tail, 1 - tail])
    return RatioCI(qa / qb, float(low), float(high))
