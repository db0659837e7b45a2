"""Regressions: compare the latency of two windows per endpoint, or before/after a deploy.

`compare_windows` takes each endpoint's durations from the raw request events when they are complete
for both windows (raw events are kept RAW_DAYS; complete = at least as many events as the histograms
count in the window's whole minutes), else from the log-bucket histograms (minutes, hours and days,
dashboard.queries.tiers; kept 400 days, values to about 1 %, interpolated between order statistics
like quantile_cont). Either way it reports p50/p95/p99 of each window, the p95 ratio with a
bootstrap confidence interval and a Mann–Whitney test (collectors.health.stats): on raw durations,
or on the histogram's bucket values, where equal buckets count as ties (differences under ~2 % are
not seen, which only makes the test more cautious). The `method` column says which.

The verdict follows the quantile it reports, the p95: an endpoint is a "regression" when the whole
95 % bootstrap CI of its p95 ratio (after / before) lies above the threshold (THRESHOLD, ×1.10 unless
`min_ratio` says otherwise), an "improvement" when the whole CI lies below 1 / threshold, else "no
change"; "too few requests" when a window has fewer than `min_requests`. The p99 is shown but does
not decide: its interval rests on 1 % of the requests and is too wide to gate on in an hour's window.
The Mann–Whitney test no longer decides either: it measures the body of the distribution (is a
typical request slower?), which can move the other way from the tail (a deploy that makes most
requests faster and the slowest 5 % five times slower). Its one-sided p-value (after slower) stays in
`p_value` and its reading, at `alpha`, in `body`: "slower", "faster" or "same".

A window that had not ended `OPEN_MARGIN` before `now` (a deploy minutes old, a window to "now") is
compared on the data so far and its rows say so: `open` is True. The verdict is the same function
(`verdict`) for the Compare page, `perfdeck compare` (exit 1 on a regression) and the deploy
regression alert (`regression_checks`, which only judges deploys whose after window has ended).
Rows come regressions first, largest p95 ratio first, then the rest by p95 ratio."""
from __future__ import annotations

import math
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd

from collectors import formatting as fmt
from collectors.health import ASSESSED_COLUMNS, stats
from collectors.store import utcnow
from collectors.store.histogram import GAMMA
from collectors.store.retention import retention_days
from dashboard.queries._run import run_query
from dashboard.queries.latency import raw_summary
from dashboard.queries.tiers import LATENCY_ROWS, tier_params

QUANTILES = ((0.50, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms"))
COLUMNS = ["service", "endpoint", "before_n", "after_n",
           "before_p50_ms", "before_p95_ms", "before_p99_ms", "after_p50_ms", "after_p95_ms", "after_p99_ms",
           "p95_ratio", "ci_low", "ci_high", "p50_ratio", "p_value", "body", "method", "open", "verdict"]
VERDICTS = ("regression", "improvement", "no change", "too few requests")
THRESHOLD = 1.10                      # a regression: the p95 ratio's whole CI above this
ALPHA = 0.01                          # the Mann–Whitney test's level, for the `body` column only
OPEN_MARGIN = timedelta(minutes=1)    # a window ending later than now - this is still open (ingest lag)


def verdict(ci_low: float, ci_high: float, threshold: float = THRESHOLD) -> str:
    """The verdict for a p95 ratio's confidence interval: "regression" when it lies wholly above
    `threshold`, "improvement" when wholly below 1 / threshold, else "no change" (a missing
    interval: "too few requests")."""
    if ci_low is None or ci_high is None or pd.isna(ci_low) or pd.isna(ci_high):
        return "too few requests"
    if ci_low > threshold:
        return "regression"
    if ci_high < 1 / threshold:
        return "improvement"
    return "no change"

# At most $cap durations per endpoint, picked by a seeded hash: the same sample on every run. One row
# per endpoint with its durations as a list (much cheaper to fetch than a row per duration).
RAW_SAMPLE_SQL = """
SELECT service,
       endpoint,
       list(duration_ms ORDER BY hash(ts, duration_ms, $seed))[1:$cap] AS durations
FROM request_events
WHERE ts >= $since
  AND ts < $until
  AND ($service IS NULL OR service = $service)
GROUP BY service, endpoint
"""

HIST_SQL = f"""
SELECT service, endpoint, bucket, CAST(sum(count) AS BIGINT) AS n
FROM ({LATENCY_ROWS})
WHERE ($service IS NULL OR service = $service)
GROUP BY service, endpoint, bucket
"""


def _window(window, name: str) -> tuple[datetime, datetime]:
    since, until = window
    if not since < until:
        raise ValueError(f"the {name} window must end after it starts, got {since} .. {until}")
    return since, until


def _by_endpoint(df: pd.DataFrame) -> dict:
    return {key: part for key, part in df.groupby(["service", "endpoint"], sort=False)}


def _side(con, since, until, service, *, raw_allowed: bool, seed: int, cap: int) -> dict:
    """One window: raw summary rows, histograms and (lazily) raw samples, keyed by (service, endpoint)."""
    hist, _ = run_query(HIST_SQL, {"since": since, "until": until, "service": service} | tier_params(con, since, until),
                        max_rows=10_000_000, con=con)
    hists = {key: stats.Grouped.from_counts(2 * GAMMA ** part["bucket"].to_numpy(float) / (GAMMA + 1), part["n"])
             for key, part in _by_endpoint(hist).items()}
    raw = {}
    if raw_allowed:
        summary = raw_summary(con, since=since, until=until, service=service)
        raw = {(r.service, r.endpoint): r for r in summary.itertuples(index=False)
               if r.raw_n > 0 and r.raw_n >= r.whole_minutes_n}

    def samples() -> dict:
        df, _ = run_query(RAW_SAMPLE_SQL, {"since": since, "until": until, "service": service, "seed": seed,
                                           "cap": cap}, max_rows=1_000_000, con=con)
        return {(r.service, r.endpoint): np.asarray(r.durations, dtype=float) for r in df.itertuples(index=False)}

    return {"hist": hists, "raw": raw, "samples": samples}


def _row(before: stats.Grouped, after: stats.Grouped, pct_before: dict, pct_after: dict, *,
         interpolate: bool, min_requests: int, alpha: float, min_ratio: float, seed: int) -> dict:
    row = {f"before_{c}": pct_before[c] for _, c in QUANTILES} | {f"after_{c}": pct_after[c] for _, c in QUANTILES}
    row["p95_ratio"] = pct_after["p95_ms"] / pct_before["p95_ms"] if pct_before["p95_ms"] > 0 else math.nan
    row["p50_ratio"] = pct_after["p50_ms"] / pct_before["p50_ms"] if pct_before["p50_ms"] > 0 else math.nan
    if min(before.n, after.n) < min_requests:
        return row | {"ci_low": math.nan, "ci_high": math.nan, "p_value": math.nan, "body": None,
                      "verdict": "too few requests"}
    ci = stats.bootstrap_ratio(before, after, 0.95, seed=seed, interpolate=interpolate)
    slower = stats.mann_whitney(before, after, alternative="greater").p_value
    faster = stats.mann_whitney(before, after, alternative="less").p_value
    body = "slower" if slower < alpha else "faster" if faster < alpha else "same"
    return row | {"ci_low": ci.low, "ci_high": ci.high, "p_value": slower, "body": body,
                  "verdict": verdict(ci.low, ci.high, min_ratio)}


def compare_windows(
    con: duckdb.DuckDBPyConnection,
    *,
    before: tuple[datetime, datetime],
    after: tuple[datetime, datetime],
    service: str | None = None,
    min_requests: int = 20,
    alpha: float = ALPHA,
    min_ratio: float = THRESHOLD,
    seed: int = 0,
    max_sample: int = stats.MAX_SAMPLE,
    now: datetime | None = None,
) -> pd.DataFrame:
    """One row per (service, endpoint) with requests in both windows [start, end) (naive UTC):
    COLUMNS (see the module doc). Raises ValueError for a window that does not end after it starts."""
    before, after = _window(before, "before"), _window(after, "after")
    now = now or utcnow()
    still_open = max(before[1], after[1]) > now - OPEN_MARGIN
    raw_from = now - timedelta(days=retention_days()["raw"])
    raw_allowed = min(before[0], after[0]) >= raw_from
    sides = [_side(con, *w, service, raw_allowed=raw_allowed, seed=seed, cap=max_sample) for w in (before, after)]
    settings = {"min_requests": min_requests, "alpha": alpha, "min_ratio": min_ratio, "seed": seed}
    rows, samples = [], None
    for key in sorted(set(sides[0]["hist"]) | set(sides[0]["raw"])):
        if key in sides[0]["raw"] and key in sides[1]["raw"]:
            samples = samples or [side["samples"]() for side in sides]
            groups = [stats.Grouped.of(s[key]) for s in samples]
            pcts = [{c: getattr(side["raw"][key], c) for _, c in QUANTILES} for side in sides]
            row = _row(*groups, *pcts, interpolate=True, **settings)
            row |= {"before_n": sides[0]["raw"][key].raw_n, "after_n": sides[1]["raw"][key].raw_n, "method": "raw"}
        elif key in sides[0]["hist"] and key in sides[1]["hist"]:
            groups = [side["hist"][key] for side in sides]
            pcts = [{c: stats.quantile(g, q) for q, c in QUANTILES} for g in groups]
            row = _row(*groups, *pcts, interpolate=True, **settings)
            row |= {"before_n": groups[0].n, "after_n": groups[1].n, "method": "histogram"}
        else:
            continue
        rows.append({"service": key[0], "endpoint": key[1], "open": still_open} | row)
    df = pd.DataFrame(rows, columns=COLUMNS)
    if df.empty:
        return df
    df = df.astype({"before_n": "int64", "after_n": "int64"})
    df["_first"] = df["verdict"] != "regression"
    return (df.sort_values(["_first", "p95_ratio", "service", "endpoint"], ascending=[True, False, True, True],
                           na_position="last", ignore_index=True).drop(columns="_first"))


# Consecutive marks of the same version of a service are one deploy (a rollout over several hosts,
# or a restart): its time is the first mark, and the previous/next deploy is a different version.
DEPLOY_WINDOWS_SQL = """
WITH marked AS (
    SELECT ts, service, version, host,
           version IS DISTINCT FROM lag(version) OVER (PARTITION BY service ORDER BY ts) AS is_new
    FROM deploys
    WHERE ($service IS NULL OR service = $service)
),
starts AS (
    SELECT ts, service, version, host,
           lag(ts) OVER (PARTITION BY service ORDER BY ts) AS previous_ts,
           lead(ts) OVER (PARTITION BY service ORDER BY ts) AS next_ts
    FROM marked
    WHERE is_new
)
SELECT ts, service, version, host, previous_ts, next_ts
FROM starts
WHERE ($version IS NULL OR version = $version)
  AND ($since IS NULL OR ts >= $since)
  AND ts <= $now
ORDER BY ts DESC, service
LIMIT $limit
"""


def deploy_windows(
    con: duckdb.DuckDBPyConnection,
    *,
    version: str | None = None,
    service: str | None = None,
    span: timedelta = timedelta(hours=1),
    since: datetime | None = None,
    now: datetime | None = None,
    limit: int = 100,
) -> pd.DataFrame:
    """Deploys, newest first, with the windows to compare around each: [ts, service, version, host,
    before_start, before_end, after_start, after_end, complete]. before = [ts - span, ts), cut at the
    service's previous deploy; after = [ts, ts + span), cut at its next deploy and at now; complete
    says the after window has fully elapsed."""
    now = now or utcnow()
    params = {"version": version, "service": service, "since": since, "now": now, "limit": limit}
    df, _ = run_query(DEPLOY_WINDOWS_SQL, params, max_rows=limit, con=con)
    span = pd.Timedelta(span)
    df["before_start"] = (df["ts"] - span).where(df["previous_ts"].isna() | (df["previous_ts"] < df["ts"] - span),
                                                 df["previous_ts"])
    df["before_end"] = df["after_start"] = df["ts"]
    planned_end = (df["ts"] + span).where(df["next_ts"].isna() | (df["next_ts"] > df["ts"] + span), df["next_ts"])
    df["after_end"] = planned_end.where(planned_end < pd.Timestamp(now), pd.Timestamp(now))
    df["complete"] = planned_end <= pd.Timestamp(now)
    return df.drop(columns=["previous_ts", "next_ts"])


def regression_checks(
    con: duckdb.DuckDBPyConnection,
    *,
    now: datetime,
    span: timedelta | float = timedelta(hours=1),
    alpha: float = ALPHA,
    min_ratio: float = THRESHOLD,
    min_requests: int = 20,
) -> pd.DataFrame:
    """Health rows (ASSESSED_COLUMNS, component "Regressions", check "deploy_regression") for the
    endpoints of each service whose latest deploy's after window ended within the last `span`:
    "warning" for a regression (`verdict`: the p95 ratio's CI above `min_ratio`), "healthy" otherwise.
    So a deploy is judged once its after window is complete, and its rows stay for `span` (long enough for an alert's `for`)."""
    span = span if isinstance(span, timedelta) else timedelta(seconds=float(span))
    deploys = deploy_windows(con, span=span, since=now - 2 * span, now=now)
    due = deploys[deploys["complete"] & (deploys["after_end"] > pd.Timestamp(now - span))]
    rows = []
    for d in due.drop_duplicates("service").itertuples(index=False):    # newest deploy of each service
        df = compare_windows(con, before=(d.before_start, d.before_end), after=(d.after_start, d.after_end),
                             service=d.service, min_requests=min_requests, alpha=alpha, min_ratio=min_ratio, now=now)
        for r in df[df["verdict"] != "too few requests"].itertuples(index=False):
            bad = r.verdict == "regression"
            rows.append({"component": "Regressions", "check": "deploy_regression", "service": r.service,
                         "subject": r.endpoint, "value": float(r.p95_ratio), "unit": "ratio",
                         "severity": "warning" if bad else "healthy", "level": min_ratio,
                         "message": f"{describe(r._asdict())} after {d.service} {d.version} "
                                    f"({d.ts:%Y-%m-%d %H:%M} UTC): {r.verdict}"})
    return pd.DataFrame(rows, columns=ASSESSED_COLUMNS)


# --- Words for a row, shared by the Compare page, the CLI and the health messages -------------------
def describe(row) -> str:
    """'/search p95 100 ms → 1.24 s (×12.4, 95 % CI ×10.9–×14.0; body: slower, p < 0.001)' for a
    compare row; ', so far' when a window was still open."""
    ci = (f", 95 % CI {fmt.ratio_range(row['ci_low'], row['ci_high'])}; body: {row['body']}, "
          f"{fmt.p_value(row['p_value'])}"
          if not pd.isna(row["ci_low"]) else "")
    so_far = ", so far" if row.get("open") else ""
    return (f"{row['endpoint']} p95 {fmt.ms(row['before_p95_ms'])} → {fmt.ms(row['after_p95_ms'])} "
            f"({fmt.ratio(row['p95_ratio'])}{ci}{so_far})")


RULE = (f"An endpoint is a **regression** when the whole 95 % interval of its p95 ratio (after / before) lies "
        f"above ×{THRESHOLD:.2f}, an **improvement** when it lies below ×{1 / THRESHOLD:.2f}, else **no change**. "
        f"The p99 is shown but does not decide (its interval is too wide). The Mann–Whitney test describes the "
        f"**body** (is a typical request slower or faster, at p < {ALPHA}); it does not decide, because the body "
        f"and the tail can move in opposite directions.")


SAMPLE_NOTE = (f"On raw events the test and the interval use at most {stats.MAX_SAMPLE:,} durations per endpoint "
               f"and window (a fixed pseudo-random sample); counts and percentiles use every request.")
