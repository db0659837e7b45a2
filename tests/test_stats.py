"""collectors.health.stats: Mann–Whitney U against hand-computed examples, quantiles against numpy and
the histogram rule, and the bootstrap interval of a p95 ratio on known distributions."""
from __future__ import annotations

import math

import numpy as np
import pytest

from collectors.health import stats
from collectors.health.stats import Grouped, bootstrap_ratio, mann_whitney, quantile, subsample
from collectors.store import histogram


def test_mann_whitney_without_ties():
    # Ranks of after = 4, 5, 6: R = 15, U = 15 - 3*4/2 = 9 (every pair has after larger).
    # mean = 3*3/2 = 4.5, variance = 3*3/12 * (6 + 1) = 5.25; z = (9 - 4.5 - 0.5) / sqrt(5.25).
    r = mann_whitney([1, 2, 3], [4, 5, 6])
    assert r.u == 9
    assert r.z == pytest.approx(4 / math.sqrt(5.25))
    assert r.z == pytest.approx(1.7457431)
    assert r.p_value == pytest.approx(0.0404278, abs=1e-7)     # 1 - Phi(1.7457)
    two = mann_whitney([1, 2, 3], [4, 5, 6], alternative="two-sided")
    assert two.p_value == pytest.approx(2 * 0.0404278, abs=2e-7)
    less = mann_whitney([1, 2, 3], [4, 5, 6], alternative="less")
    assert less.z == pytest.approx((4.5 - 9 - 0.5) / math.sqrt(5.25))
    assert less.p_value == pytest.approx(0.9854518, abs=1e-7)


def test_mann_whitney_with_ties():
    # Pooled and sorted: 1b 2b 2b 2a 3b 3a 3a 4a 5a. Ranks: 1 -> 1, the three 2s -> 3, the three
    # 3s -> 6, 4 -> 8, 5 -> 9. R(after) = 3 + 6 + 6 + 8 + 9 = 32, U = 32 - 5*6/2 = 17.
    # mean = 4*5/2 = 10; ties 3 and 3: sum(t^3 - t) = 48; N = 9:
    # variance = 4*5/12 * (10 - 48 / (9*8)) = 15.5556; z = (17 - 10 - 0.5) / 3.94405 = 1.64805.
    before, after = [1, 2, 2, 3], [2, 3, 3, 4, 5]
    r = mann_whitney(before, after)
    assert r.u == 17
    variance = 4 * 5 / 12 * (10 - 48 / 72)
    assert variance == pytest.approx(15.5555556)
    assert r.z == pytest.approx(6.5 / math.sqrt(variance))
    assert r.p_value == pytest.approx(0.0496711, abs=1e-7)
    assert mann_whitney(before, after, alternative="two-sided").p_value == pytest.approx(0.0993422, abs=1e-7)
    assert mann_whitney(before, after, alternative="less").p_value == pytest.approx(0.9713881, abs=1e-7)
    # The same samples given as (value, count) groups, in any order, answer the same.
    grouped = mann_whitney(Grouped.from_counts([3, 1, 2], [1, 1, 2]), Grouped.from_counts([5, 2, 3, 4], [1, 1, 2, 1]))
    assert (grouped.u, grouped.z, grouped.p_value) == (r.u, r.z, r.p_value)


@pytest.mark.parametrize("before, after, u, p_greater", [
    # Figures match scipy.stats.mannwhitneyu(after, before, method="asymptotic", use_continuity=True).
    ([3, 1, 4, 1, 5, 9, 2, 6], [5, 3, 5, 8, 9, 7, 9, 3, 2, 3], 53, 0.13086818821209234),
    # Identical: U = 4*4/2 = 8, four ties of 2 -> variance 16/12 * (9 - 24/56), z = -0.5 / 3.3806.
    ([10, 20, 30, 40], [10, 20, 30, 40], 8, 0.5587899),
])
def test_mann_whitney_known_answers(before, after, u, p_greater):
    r = mann_whitney(before, after)
    assert r.u == u
    assert r.p_value == pytest.approx(p_greater, abs=1e-7)


def test_mann_whitney_degenerate_cases():
    assert mann_whitney([5, 5, 5], [5, 5]).p_value == 1.0         # all tied: no variance
    assert mann_whitney([], [1, 2, 3]).p_value == 1.0
    with pytest.raises(ValueError, match="alternative"):
        mann_whitney([1], [2], alternative="bigger")


def test_mann_whitney_finds_a_shift_and_not_a_copy():
    rng = np.random.default_rng(11)
    before = rng.lognormal(np.log(50), 0.5, 3000)
    assert mann_whitney(before, rng.lognormal(np.log(50), 0.5, 3000) * 1.1).p_value < 1e-6
    assert mann_whitney(before, rng.lognormal(np.log(50), 0.5, 3000)).p_value > 0.01


def test_quantile_matches_numpy_and_the_histogram_rule():
    rng = np.random.default_rng(5)
    x = rng.lognormal(3, 0.6, 1001)
    for q in (0.5, 0.95, 0.99):
        assert quantile(x, q) == pytest.approx(np.quantile(x, q))
        assert quantile(x, q, interpolate=False) == np.sort(x)[math.floor(q * 1000)]
    counts = {}
    for ms in x:
        counts[histogram.bucket_of(ms)] = counts.get(histogram.bucket_of(ms), 0) + 1
    hist = Grouped.from_counts([histogram.value_of(b) for b in counts], list(counts.values()))
    assert hist.n == 1001
    for q in (0.5, 0.95, 0.99):
        assert quantile(hist, q) == pytest.approx(histogram.quantile(counts, q))   # both interpolate
    assert quantile([1, 2, 3, 4], 0.5) == 2.5 and quantile([1, 2, 3, 4], 0.5, interpolate=False) == 2
    assert math.isnan(quantile([], 0.5))


def test_bootstrap_interval_covers_the_true_ratio_and_is_reproducible():
    rng = np.random.default_rng(2024)
    before = rng.lognormal(np.log(80), 0.5, 4000)
    after = rng.lognormal(np.log(80), 0.5, 4000) * 1.5       # true p95 ratio: 1.5
    ci = bootstrap_ratio(before, after, 0.95, seed=1)
    assert ci.low < 1.5 < ci.high
    assert 1.3 < ci.low and ci.high < 1.7
    assert ci.ratio == pytest.approx(np.quantile(after, 0.95) / np.quantile(before, 0.95))
    assert bootstrap_ratio(before, after, 0.95, seed=1) == ci
    assert bootstrap_ratio(before, after, 0.95, seed=2) != ci


def test_bootstrap_interval_coverage_over_many_experiments():
    # 200 experiments with n = 400 a side: a 95 % interval should hold the true ratio about 190 times.
    rng = np.random.default_rng(99)
    hits = 0
    for i in range(200):
        before = rng.lognormal(np.log(40), 0.6, 400)
        after = rng.lognormal(np.log(40), 0.6, 400) * 1.2
        ci = bootstrap_ratio(before, after, 0.95, seed=i, n_boot=1000)
        hits += ci.low <= 1.2 <= ci.high
    assert 180 <= hits <= 200


def test_exact_order_statistic_bootstrap_matches_plain_resampling():
    # The bootstrap draws a resample's p95 from the Beta law of order statistics instead of
    # building the resample: the two distributions agree.
    rng = np.random.default_rng(3)
    x = rng.lognormal(3, 0.5, 500)
    fast = stats._bootstrap_quantiles(Grouped.of(x), 0.95, 20_000, np.random.default_rng(1), True)
    plain = np.quantile(rng.choice(x, (20_000, len(x))), 0.95, axis=1)
    for level in (0.025, 0.25, 0.5, 0.75, 0.975):
        assert np.quantile(fast, level) == pytest.approx(np.quantile(plain, level), rel=0.01)


def test_bootstrap_of_a_histogram_and_empty_sides():
    values, before_counts, after_counts = [10.0, 20.0, 40.0], [900, 80, 20], [700, 200, 100]
    ci = bootstrap_ratio(Grouped.from_counts(values, before_counts), Grouped.from_counts(values, after_counts),
                         0.95, interpolate=False)
    assert ci.ratio == 2.0          # p95 before is the 20 ms bucket, after the 40 ms one
    assert ci.low <= 2.0 <= ci.high
    assert all(math.isnan(v) for v in (bootstrap_ratio([], [1.0, 2.0]).ratio, bootstrap_ratio([0.0], [1.0]).low))


def test_subsample_caps_a_side():
    x = np.arange(50_000, dtype=float)
    small = subsample(x, 20_000, np.random.default_rng(0))
    assert len(small) == 20_000 and len(np.unique(small)) == 20_000
    assert np.array_equal(subsample(x[:100], 20_000), x[:100])
    assert stats.MAX_SAMPLE == 20_000
