"""The LLM spend rollups (collectors.store.llm_rollup) against the calls themselves: every Cost page
query that reads them must give what its former SQL over raw `llm_calls` gives on the same store (kept
below as the reference), to the last digit, whatever the range (inside minutes, across the hour and
day tiers, beyond the minutes and hours kept), after the tier job, retention, late calls, a reprice,
replayed batches, and however the calls were split into batches or ordered. Figures derived from
float latencies (sums in another order) are compared to 1e-12."""
from __future__ import annotations

import random
import tempfile
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pandas as pd
import pytest
from helpers import ingest_payloads
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors.pricing import PriceBook
from collectors.pricing.reprice import apply_reprice, plan_reprice
from collectors.sdk.batch import encode
from collectors.store import llm_rollup, migrate, read, utcnow, write
from collectors.store.migrations import MIGRATIONS
from collectors.store.retention import purge
from collectors.store.rollups import compact, roll_tiers
from dashboard.queries import cost as q
from dashboard.queries._run import run_query
from dashboard.queries.cost import budgets

# -- the former queries, over raw llm_calls ---------------------------------------------------------

RANGE = """ts >= $since
      AND ts < $until
      AND ($service IS NULL OR service = $service)"""
TOKENS_PER_S = """sum(output_tokens) FILTER (WHERE NOT cache_hit AND latency_ms > 0)
           / nullif(sum(latency_ms) FILTER (WHERE NOT cache_hit AND latency_ms > 0) / 1000, 0)"""

COST_TOTALS_SQL = f"""
WITH calls AS (
    SELECT count(*) AS calls,
           count(cost_usd) AS priced_calls,
           count(*) FILTER (WHERE cache_hit) AS cache_hit_calls,
           coalesce(sum(cost_usd), 0) AS spend,
           sum(input_tokens) AS input_tokens,
           sum(output_tokens) AS output_tokens,
           sum(cached_input_tokens) AS cached_input_tokens,
           count(DISTINCT request_id) AS llm_requests,
           count(request_id) AS calls_in_requests,
           coalesce(sum(cost_usd) FILTER (WHERE request_id IS NOT NULL), 0) AS spend_in_requests,
           coalesce(sum(saved_usd) FILTER (WHERE cache_hit), 0) AS saved_result_cache,
           coalesce(sum(saved_usd) FILTER (WHERE NOT cache_hit), 0) AS saved_cache_read,
           {TOKENS_PER_S} AS output_tokens_per_s,
           min(ts) AS first_call
    FROM llm_calls
    WHERE {RANGE}
)
SELECT calls,
       priced_calls,
       calls - priced_calls AS unpriced_calls,
       cache_hit_calls,
       CAST(spend AS DOUBLE) AS spend_usd,
       CAST(coalesce(input_tokens, 0) AS BIGINT) AS input_tokens,
       CAST(coalesce(output_tokens, 0) AS BIGINT) AS output_tokens,
       CAST(coalesce(cached_input_tokens, 0) AS BIGINT) AS cached_input_tokens,
       llm_requests,
       calls_in_requests / nullif(llm_requests, 0) AS calls_per_request,
       CAST(spend_in_requests AS DOUBLE) / nullif(llm_requests, 0) AS spend_per_request_usd,
       CAST(saved_result_cache AS DOUBLE) AS saved_result_cache_usd,
       CAST(saved_cache_read AS DOUBLE) AS saved_cache_read_usd,
       output_tokens_per_s,
       first_call
FROM calls
"""
COST_OVER_TIME_SQL = """
SELECT time_bucket(to_seconds(CAST($bucket_s AS BIGINT)), ts) AS time,
       coalesce({key}, '(none)') AS key,
       CAST(coalesce(sum(cost_usd), 0) AS DOUBLE) AS cost_usd,
       count(*) AS calls,
       CAST(coalesce(sum(saved_usd), 0) AS DOUBLE) AS saved_usd
FROM llm_calls
WHERE {range}
GROUP BY ALL
ORDER BY time, key
"""
MODEL_USAGE_SQL = f"""
SELECT provider,
       model,
       count(*) AS calls,
       count(*) FILTER (WHERE cache_hit) AS cache_hit_calls,
       CAST(sum(input_tokens) AS BIGINT) AS input_tokens,
       CAST(sum(output_tokens) AS BIGINT) AS output_tokens,
       CAST(sum(cached_input_tokens) AS BIGINT) AS cached_input_tokens,
       CAST(coalesce(sum(cache_write_tokens), 0) AS BIGINT) AS cache_write_tokens,
       -- Unknown (NULL) for a model no call of which was priced: not $0.
       CAST(sum(cost_usd) AS DOUBLE) AS spend_usd,
       CAST(sum(saved_usd) AS DOUBLE) AS saved_usd,
       -- The model's own latency: a result-cache hit never reached it.
       avg(latency_ms) FILTER (WHERE NOT cache_hit) AS avg_latency_ms,
       {TOKENS_PER_S} AS output_tokens_per_s,
       CAST(sum(cost_usd) AS DOUBLE) / nullif(count(cost_usd), 0) AS cost_per_call_usd,
       string_agg(DISTINCT price_version, ', ' ORDER BY price_version) AS price_version,
       count(*) - count(cost_usd) AS unpriced_calls
FROM llm_calls
WHERE {RANGE}
GROUP BY provider, model
ORDER BY spend_usd DESC NULLS LAST, calls DESC, provider, model
"""
UNPRICED_MODELS_SQL = f"""
SELECT provider,
       model,
       count(*) AS calls,
       CAST(sum(input_tokens) AS BIGINT) AS input_tokens,
       CAST(sum(output_tokens) AS BIGINT) AS output_tokens,
       min(ts) AS first_seen,
       max(ts) AS last_seen
FROM llm_calls
WHERE {RANGE}
  AND cost_usd IS NULL
GROUP BY provider, model
ORDER BY calls DESC, provider, model
"""
USER_COSTS_SQL = f"""
SELECT coalesce(user_id, '(anonymous)') AS user_id,
       count(*) AS calls,
       count(DISTINCT request_id) AS llm_requests,
       CAST(coalesce(sum(cost_usd), 0) AS DOUBLE) AS spend_usd,
       CAST(sum(input_tokens + output_tokens) AS BIGINT) AS tokens,
       CAST(coalesce(sum(saved_usd), 0) AS DOUBLE) AS saved_usd,
       max(ts) AS last_call
FROM llm_calls
WHERE {RANGE}
  AND ($pattern IS NULL OR user_id ILIKE $pattern ESCAPE '\\')
GROUP BY llm_calls.user_id
ORDER BY spend_usd DESC, calls DESC, user_id
LIMIT $limit
"""
CACHE_SAVINGS_SQL = f"""
WITH per_key AS (
    SELECT endpoint,
           model,
           count(*) AS calls,
           count(*) FILTER (WHERE cache_hit) AS cache_hit_calls,
           coalesce(sum(saved_usd) FILTER (WHERE cache_hit), 0) AS saved_result_cache,
           sum(cached_input_tokens) AS cached_input_tokens,
           coalesce(sum(saved_usd) FILTER (WHERE NOT cache_hit), 0) AS saved_cache_read,
           coalesce(sum(cost_usd), 0) AS spend
    FROM llm_calls
    WHERE {RANGE}
    GROUP BY endpoint, model
)
SELECT endpoint,
       model,
       calls,
       cache_hit_calls,
       cache_hit_calls / calls AS hit_rate,
       CAST(saved_result_cache AS DOUBLE) AS saved_result_cache_usd,
       CAST(cached_input_tokens AS BIGINT) AS cached_input_tokens,
       CAST(saved_cache_read AS DOUBLE) AS saved_cache_read_usd,
       CAST(spend AS DOUBLE) AS spend_usd
FROM per_key
ORDER BY saved_result_cache + saved_cache_read DESC, calls DESC, endpoint, model
"""
DAILY_SPEND_SQL = f"""
WITH days AS (
    -- Every UTC day the range touches, spend or not (the last one only if the range reaches into it).
    SELECT CAST(d AS DATE) AS day
    FROM generate_series(date_trunc('day', CAST($since AS TIMESTAMP)),
                         date_trunc('day', CAST($until AS TIMESTAMP) - INTERVAL 1 MICROSECOND),
                         INTERVAL 1 DAY) AS t(d)
),
spend AS (
    SELECT CAST(ts AS DATE) AS day, sum(cost_usd) AS spend, count(*) AS calls
    FROM llm_calls
    WHERE {RANGE}
    GROUP BY day
)
SELECT days.day,
       CAST(coalesce(spend.spend, 0) AS DOUBLE) AS spend_usd,
       coalesce(spend.calls, 0) AS calls
FROM days
LEFT JOIN spend USING (day)
ORDER BY days.day
"""
BUDGET_SPEND_SQL = """
SELECT CAST(coalesce(sum(cost_usd) FILTER (WHERE ts >= $period_start), 0) AS DOUBLE) AS spent,
       CAST(coalesce(sum(cost_usd) FILTER (WHERE ts >= $recent_start), 0) AS DOUBLE) AS recent
FROM llm_calls
WHERE ts >= least($period_start, $recent_start)
  AND ts < $now
  AND ($service IS NULL OR service = $service)
"""


def old_budget_status(con, *, now, daily_budget=None, monthly_budget=None, service=None) -> pd.DataFrame:
    """budget_status as it was, over raw calls."""
    first = run_query(budgets.FIRST_CALL_SQL, {"service": service}, con=con)[0]["first_call"].iloc[0]
    rows = []
    for period, (start, end, window) in budgets._periods(now).items():
        budget = {"today": daily_budget, "this month": monthly_budget}[period]
        if budget is None:
            continue
        recent_start = now - window
        if not pd.isna(first):
            recent_start = max(recent_start, pd.Timestamp(first).to_pydatetime())
        recent_hours = max((now - recent_start).total_seconds(), 0.0) / 3600
        params = {"period_start": start, "recent_start": recent_start, "now": now, "service": service}
        spend = run_query(BUDGET_SPEND_SQL, params, con=con)[0]
        spent, recent = float(spend["spent"].iloc[0]), float(spend["recent"].iloc[0])
        fc = budgets.forecast_period(spent, start, end, now, recent, recent_hours)
        rows.append({"period": period, "budget_usd": float(budget), "spent_usd": spent, "share_used": spent / budget,
                     "elapsed_share": fc["elapsed_share"], "burn_rate_per_day": fc["burn_rate_per_day"],
                     "forecast_usd": fc["forecast"], "forecast_share": fc["forecast"] / budget,
                     "on_track": fc["forecast"] <= budget, "period_start": start, "period_end": end})
    return pd.DataFrame(rows, columns=budgets.BUDGET_COLUMNS)


def old(con, name: str, *, since, until, service=None, **kw) -> pd.DataFrame:
    """The former query `name` over raw calls."""
    params = {"since": since, "until": until, "service": service}
    if name == "cost_over_time":
        sql = COST_OVER_TIME_SQL.format(key=q.spend.OVER_TIME_KEYS[kw["by"]], range=RANGE)
        params["bucket_s"] = kw["bucket_s"]
    elif name == "user_costs":
        sql = USER_COSTS_SQL
        params |= {"pattern": q.spend._contains_pattern(kw.get("search")), "limit": kw.get("limit", 20)}
    else:
        sql = {"cost_totals": COST_TOTALS_SQL, "model_usage": MODEL_USAGE_SQL, "unpriced_models": UNPRICED_MODELS_SQL,
               "cache_savings": CACHE_SAVINGS_SQL, "daily_spend": DAILY_SPEND_SQL}[name]
    return run_query(sql, params, con=con)[0]


# -- comparing ----------------------------------------------------------------------------------------------

LATENCY_DERIVED = ("avg_latency_ms", "output_tokens_per_s")   # float sums, added in another order


def assert_same(new: pd.DataFrame, ref: pd.DataFrame, what: str) -> None:
    assert list(new.columns) == list(ref.columns), what
    new, ref = new.reset_index(drop=True), ref.reset_index(drop=True)
    exact = [c for c in ref.columns if c not in LATENCY_DERIVED]
    pd.testing.assert_frame_equal(new[exact], ref[exact], check_exact=True, obj=what)
    for c in LATENCY_DERIVED:
        if c in ref.columns:
            pd.testing.assert_series_equal(new[c], ref[c], check_exact=False, rtol=1e-12, obj=f"{what} {c}")


def cases(now: datetime):
    """(name, kwargs) of every rewritten query over ranges inside minutes, across the tiers, beyond
    the minutes and hours kept, on whole hours and days, and empty ones."""
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    ranges = [
        (now - timedelta(minutes=37, seconds=13.5), now - timedelta(minutes=3, seconds=2.25)),
        (now - timedelta(hours=5, minutes=7, seconds=3), now),
        (now - timedelta(days=2, hours=3, minutes=17, seconds=5.123), now - timedelta(hours=1, minutes=2)),
        (now - timedelta(days=4, hours=7, seconds=0.5), now - timedelta(days=1, hours=20, minutes=3)),
        (day - timedelta(days=5), day),
        (day - timedelta(days=3, hours=2), now + timedelta(hours=1)),
        (now - timedelta(days=8), now - timedelta(days=7)),       # no calls
        (now - timedelta(hours=2), now - timedelta(hours=2)),       # empty
    ]
    for since, until in ranges:
        for service in (None, "api", "worker"):
            r = {"since": since, "until": until, "service": service}
            for name in ("cost_totals", "model_usage", "unpriced_models", "cache_savings", "daily_spend"):
                yield name, r
            for by, step in (("model", 3600), ("endpoint", 60), ("provider", 300), ("service", 86400), ("model", 90),
                             ("model", 6 * 3600)):
                yield "cost_over_time", {**r, "by": by, "bucket_s": step}
            for search, limit in ((None, 20), ("u1", 20), ("%", 5), ("_", 3), (None, 2)):
                yield "user_costs", {**r, "search": search, "limit": limit}


def check(path: Path, now: datetime) -> int:
    """Every case: the query equals its former raw SQL. Returns how many were compared."""
    n = 0
    with read(path) as con:
        for name, kwargs in cases(now):
            assert_same(getattr(q, name)(con, **kwargs), old(con, name, **kwargs), f"{name} {kwargs}")
            n += 1
        for at in (now, now - timedelta(hours=30, minutes=1, seconds=7)):
            for service in (None, "worker"):
                kwargs = {"now": at, "daily_budget": 0.5, "monthly_budget": 20.0, "service": service}
                assert_same(q.budget_status(con, **kwargs), old_budget_status(con, **kwargs), f"budgets {kwargs}")
    return n


# -- the store: SDK batches through the real write path ------------------------------------------------------

MODELS = ("gpt-4o-mini", "gpt-4o", "claude-3-5-haiku-latest", "acme-unknown-1")   # the last one has no price


def workload(seed: int, n: int, now: float, span_s: float = 5 * 86400) -> list[tuple[str, tuple]]:
    """(service, SDK llm call) of `n` requests over the `span_s` before `now`: 1-4 calls each, seconds to
    hours apart (a request's calls may cross minutes, hours, days and a range's edges, and change user
    or service), some without a request id or user, cache hits, latencies missing or 0."""
    rng = random.Random(seed)
    out = []
    for i in range(n):
        service = rng.choice(("api", "api", "worker"))
        ts = now - rng.uniform(30, span_s)
        rid = f"r{seed}-{i}" if rng.random() < 0.8 else None
        user = rng.choice((f"u{i % 13}", f"u{i % 5}", None, "U_1%x"))
        for _ in range(rng.choice((1, 1, 2, 3, 4))):
            latency = rng.choice((None, 0.0, rng.uniform(50, 4000), rng.uniform(50, 4000)))
            out.append((service, (ts, rng.choice(("openai", "anthropic", None)), rng.choice(MODELS),
                                  rng.randint(0, 5000), rng.randint(0, 900), rng.randint(0, 300), rid,
                                  rng.choice(("/chat", "/search", None)), user, rng.random() < 0.15, latency,
                                  rng.choice((0, 0, 64)))))
            ts += rng.choice((0.0, 1.5, 45.0, 700.0, 5000.0))
            if rng.random() < 0.1:
                user = f"u{rng.randint(0, 3)}"
            if rng.random() < 0.05:     # a request whose calls are made by two services
                service = "worker" if service == "api" else "api"
    return [c for c in out if c[1][0] < now]


def batches(calls: list, rng: random.Random, pieces: int, now: float) -> list[bytes]:
    """The calls shuffled and cut into `pieces`, each sent as one SDK batch per service."""
    calls = calls[:]
    rng.shuffle(calls)
    cuts = sorted(rng.sample(range(1, len(calls)), min(pieces - 1, len(calls) - 1))) if len(calls) > 1 else []
    out = []
    for lo, hi in zip([0, *cuts], [*cuts, len(calls)]):
        for service in ("api", "worker"):
            mine = [c for s, c in calls[lo:hi] if s == service]
            if mine:
                out.append(encode(service=service, host="h1", pid=1, sent_at=now, llm=mine)[1])
    return out


def settle(con, now: datetime) -> None:
    """What the collector runs after ingest: the tier job, then retention."""
    con.begin()
    roll_tiers(con, now)
    purge(con, now)
    con.commit()


@pytest.fixture(scope="module", autouse=True)
def short_tiers():
    """Minutes kept 1 day and hours 3: a 5-day store reads all three tiers and raw edges beyond them."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PERFDECK_MINUTE_DAYS", "1")
        mp.setenv("PERFDECK_HOUR_DAYS", "3")
        yield


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """A settled store: calls in 40 batches, tiers rolled and retention run; then late calls (before
    the minutes kept, in rolled hours, in this hour) and the tier job again. Returns (path, now)."""
    path = tmp_path_factory.mktemp("llm-rollup") / "perfdeck.duckdb"
    now = utcnow()
    epoch = (now - datetime(1970, 1, 1)).total_seconds()
    with write(path) as con:
        migrate(con)
    with duckdb.connect(str(path)) as con:
        ingest_payloads(con, batches(workload(1, 700, epoch), random.Random(2), 20, epoch), 3, epoch)
        settle(con, now)
        late = [c for c in workload(3, 60, epoch) if c[1][0] < epoch - 3600]
        ingest_payloads(con, batches(late, random.Random(4), 4, epoch), 2, epoch)
        settle(con, now)
        marks = dict(con.execute("SELECT * FROM rollup_watermarks").fetchall())
    assert {"hour", "day", "minute_purge"} <= set(marks)
    return path, now


def copy(built, tmp_path) -> tuple[Path, datetime]:
    path, now = built
    dst = tmp_path / "perfdeck.duckdb"
    dst.write_bytes(path.read_bytes())
    return dst, now


# -- tests ----------------------------------------------------------------------------------------------------

def test_every_query_equals_its_raw_sql_across_tiers_and_late_calls(built):
    path, now = built
    with read(path) as con:
        tiers = {t: con.execute(f"SELECT count(*) FROM llm_rollup{s}").fetchone()[0]
                 for t, s in (("minute", ""), ("hour", "_hour"), ("day", "_day"))}
    assert all(tiers.values()), tiers      # every tier holds rows: the ranges read all of them
    assert check(path, now) > 300


def test_replayed_batches_and_compaction_change_nothing(built, tmp_path):
    path, now = copy(built, tmp_path)
    epoch = (now - datetime(1970, 1, 1)).total_seconds()
    payloads = batches(workload(5, 80, epoch, span_s=3 * 3600), random.Random(6), 6, epoch)
    with duckdb.connect(str(path)) as con:
        ingest_payloads(con, payloads, 2, epoch)
        before = con.execute("SELECT count(*), sum(calls) FROM llm_rollup").fetchall()
        ingest_payloads(con, payloads + payloads[:2], 3, epoch)      # a replay: the same batch ids again
        assert con.execute("SELECT count(*), sum(calls) FROM llm_rollup").fetchall() == before
        con.begin()
        removed = compact(con, datetime(1970, 1, 1), datetime(9999, 1, 1))
        con.commit()
        assert removed > 0
        settle(con, now)
    check(path, now)


def test_late_calls_of_rolled_hours_count_at_once(built, tmp_path):
    """Calls arriving for hours already rolled (and minutes already purged), in batches of LLM calls
    only: the collector's tier job is not told of them, so ingest counts them in the tiers itself."""
    path, now = copy(built, tmp_path)
    epoch = (now - datetime(1970, 1, 1)).total_seconds()
    late = [c for c in workload(9, 80, epoch) if c[1][0] < epoch - 3600]
    with duckdb.connect(str(path)) as con:
        before = con.execute("SELECT sum(calls) FROM llm_rollup_hour").fetchone()[0]
        ingest_payloads(con, batches(late, random.Random(10), 3, epoch), 1, epoch)
        assert con.execute("SELECT sum(calls) FROM llm_rollup_hour").fetchone()[0] > before
    check(path, now)


def test_a_reprice_moves_the_rollups_with_the_calls(built, tmp_path):
    path, now = copy(built, tmp_path)
    prices = tmp_path / "prices.toml"
    prices.write_text('[models."acme-unknown-1"]\ninput = 1.25\noutput = 3\n[models."gpt-4o"]\ninput = 7\noutput = 11\n')
    with duckdb.connect(str(path)) as con:
        con.begin()
        plan = plan_reprice(con, PriceBook.load(prices), since=now - timedelta(days=4, minutes=13),
                            until=now - timedelta(minutes=20))
        assert plan.changed and plan.unpriced_after < plan.unpriced_before
        apply_reprice(con, plan)
        con.commit()
    check(path, now)
    with duckdb.connect(str(path)) as con:
        settle(con, now)            # and the tier job after it finds nothing stale
    check(path, now)


def test_a_store_from_before_the_rollups_is_filled_by_the_migration(tmp_path):
    """A store at m011 (calls only, tiers rolled and minutes purged up to its marks) migrated: the
    rollups are filled from its calls and every query equals its raw SQL."""
    now = utcnow()
    epoch = (now - datetime(1970, 1, 1)).total_seconds()
    scratch, path = tmp_path / "scratch.duckdb", tmp_path / "perfdeck.duckdb"
    with write(scratch) as con:
        migrate(con)
    with duckdb.connect(str(scratch)) as con:
        ingest_payloads(con, batches(workload(7, 300, epoch), random.Random(8), 10, epoch), 5, epoch)
        calls = con.sql("FROM llm_calls").arrow()
    with write(path) as con:
        con.execute("CREATE TABLE _migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP)")
        for migration in MIGRATIONS[:11]:
            migration(con)
            con.execute("INSERT INTO _migrations VALUES (?, now()::TIMESTAMP)", [migration.__name__])
        assert migration.__name__ == "m011_ingest_rollup"
        con.register("scratch_calls", calls)
        con.execute("INSERT INTO llm_calls SELECT * FROM scratch_calls")
        hour = now.replace(minute=0, second=0, microsecond=0)
        con.executemany("INSERT INTO rollup_watermarks VALUES (?, ?)", [
            ("hour", hour - timedelta(hours=3)), ("day", hour.replace(hour=0) - timedelta(days=1)),
            ("minute_purge", hour - timedelta(days=1))])
    with write(path) as con:
        assert migrate(con)[0] == "m012_llm_rollup"
    with read(path) as con:
        assert con.execute("SELECT min(minute) FROM llm_rollup").fetchone()[0] >= hour - timedelta(days=1)
        assert con.execute("SELECT count(*) FROM llm_request_spans").fetchone()[0] > 0
    check(path, now)


@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10_000), pieces=st.integers(1, 12), per_transaction=st.integers(1, 4),
       late=st.integers(0, 3))
def test_any_batch_split_and_arrival_order_gives_the_raw_figures(short_tiers, seed, pieces, per_transaction, late):
    """However the calls are cut into batches and transactions, and whichever arrive after the tier
    job and retention ran, the queries equal their raw SQL, and the rollups hold what a rebuild from
    the calls gives."""
    now = utcnow()
    epoch = (now - datetime(1970, 1, 1)).total_seconds()
    calls = workload(seed, 40, epoch, span_s=3 * 86400)
    rng = random.Random(seed)
    payloads = batches(calls, rng, pieces, epoch)
    held_back = payloads[len(payloads) - min(late, len(payloads) - 1):] if len(payloads) > 1 else []
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "perfdeck.duckdb"
        with write(path) as con:
            migrate(con)
        with duckdb.connect(str(path)) as con:
            ingest_payloads(con, payloads[:len(payloads) - len(held_back)], per_transaction, epoch)
            settle(con, now)
            if held_back:
                ingest_payloads(con, held_back, per_transaction, epoch)
                settle(con, now)
        with read(path) as con:
            for name in ("cost_totals", "model_usage", "unpriced_models", "cache_savings", "daily_spend", "user_costs"):
                for since, until in ((now - timedelta(days=3, hours=1), now),
                                     (now - timedelta(days=1, hours=2, seconds=7.5), now - timedelta(minutes=9))):
                    r = {"since": since, "until": until}
                    assert_same(getattr(q, name)(con, **r), old(con, name, **r), f"{name} {r}")
            r = {"since": now - timedelta(days=3), "until": now, "by": "model", "bucket_s": 86400}
            assert_same(q.cost_over_time(con, **r), old(con, "cost_over_time", **r), "cost_over_time")
            spans = con.execute("SELECT * FROM llm_request_spans ORDER BY ALL").fetchall()
            users = con.execute("SELECT day, service, user_id, sum(calls), sum(cost_usd), sum(tokens), "
                                "sum(saved_usd), max(last_ts) FROM llm_user_day GROUP BY ALL ORDER BY ALL").fetchall()
        with write(path) as con:
            llm_rollup.rebuild(con, spans=True)
            assert con.execute("SELECT * FROM llm_request_spans ORDER BY ALL").fetchall() == spans
            assert con.execute("SELECT * FROM llm_user_day ORDER BY ALL").fetchall() == users


def test_the_collector_compacts_minutes_that_only_llm_calls_touched(tmp_path):
    """Two batches of LLM calls alone, for one minute, in two collector runs: the second run's
    compaction merges their minute rows (the collector marked only request, cache and query minutes)."""
    import time

    from collectors.daemon import Collector
    from collectors.sdk.transport.spool import SpoolTransport

    store, spool = tmp_path / "perfdeck.duckdb", tmp_path / "spool"
    ts = (time.time() // 60 - 2) * 60 + 5
    for _ in range(2):
        SpoolTransport(spool).send(*encode(service="api", host="h", pid=1, sent_at=ts + 10, llm=[
            (ts, "openai", "gpt-4o-mini", 100, 20, 0, None, "/chat", "u1", False, 300.0, 0)])[:2])
        Collector(store, spool_dir=spool).run_once()
    with read(store) as con:
        rows = con.execute("SELECT calls FROM llm_rollup WHERE minute = to_timestamp(?)::TIMESTAMP",
                           [ts // 60 * 60]).fetchall()
    assert rows == [(2,)]
