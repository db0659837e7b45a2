"""The hour and day tiers of the request rollups (collectors.store.rollups.roll_tiers), the readers'
choice of tier (dashboard.queries.tiers) and rank-correct percentiles, on real DuckDB files."""
from __future__ import annotations

import shutil
from collections import Counter
from datetime import datetime, timedelta

import duckdb
import numpy as np
import pandas as pd
import pytest
from helpers import OPERATOR
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from seed_store import store_events

from collectors.daemon import Collector
from collectors.sdk.batch import encode
from collectors.sdk.transport.spool import SpoolTransport
from collectors.store import migrate, read, utcnow, write
from collectors.store.histogram import GAMMA, bucket_of, quantile
from collectors.store.migrations import MIGRATIONS, m009_rollup_tiers
from collectors.store.retention import purge
from collectors.store.rollups import LATE_GRACE, roll_tiers
from collectors.store.tiers import DAY, HOUR, ceil, floor, rolled_until, set_mark
from dashboard.actions import make_preview, run_action
from dashboard.actions.store_actions import CompactStore
from dashboard.queries import (
    endpoint_percentiles,
    endpoint_traffic,
    latency_over_time,
    services,
    totals,
    traffic_over_time,
)
from dashboard.queries.tiers import chart_step, tier_params

SERIES = [("api", "GET /a", 20.0), ("api", "POST /b", 150.0), ("worker", "task c", 900.0)]
TIER_TABLES = ["latency_hist_hour", "latency_hist_day", "request_rollup_hour", "request_rollup_day"]


def make_events(now: datetime, days: float, *, per_hour: float = 6, seed: int = 3) -> pd.DataFrame:
    """Sparse raw events [ts, service, endpoint, status, duration_ms] over `days` before `now`."""
    rng = np.random.default_rng(seed)
    frames = []
    for service, endpoint, median in SERIES:
        n = rng.poisson(per_hour * 24 * days)
        ts = now - pd.to_timedelta(rng.uniform(0, days * 86400, n), unit="s")
        frames.append(pd.DataFrame({
            "ts": ts.astype("datetime64[us]"), "service": service, "endpoint": endpoint,
            "status": np.where(rng.uniform(size=n) < 0.05, 500, 200).astype("int16"),
            "duration_ms": rng.lognormal(np.log(median), 0.8, n)}))
    return pd.concat(frames, ignore_index=True).sort_values("ts", ignore_index=True)


def make_store(path, events: pd.DataFrame, *, now: datetime | None = None):
    with write(path) as con:
        migrate(con)
        store_events(con, events)
        if now is not None:
            roll_tiers(con, now)
    return path


def tier_contents(con) -> dict[str, list]:
    return {t: con.execute(f"SELECT * FROM {t} ORDER BY ALL").fetchall() for t in TIER_TABLES}


def assert_tiers_match_minutes(con) -> None:
    """Every rolled hour and day (whose minutes are all still kept) holds exactly the sums of its
    minutes, key by key."""
    marks = rolled_until(con)
    for minutes, value in (("latency_hist", "count"), ("request_rollup", "requests")):
        keys = "service, endpoint, bucket" if minutes == "latency_hist" else "service, endpoint"
        for tier, width in (("hour", HOUR), ("day", DAY)):
            if marks[tier] is None:
                continue
            kept = ceil(marks["minute_purge"], width) if marks["minute_purge"] else datetime(1970, 1, 1)
            expected = con.execute(f"""
                SELECT date_trunc('{tier}', minute) AS t, {keys}, sum({value}) FROM {minutes}
                WHERE minute >= ? AND minute < ? GROUP BY ALL ORDER BY ALL""", [kept, marks[tier]]).fetchall()
            got = con.execute(f"""
                SELECT {tier}, {keys}, sum({value}) FROM {minutes}_{tier}
                WHERE {tier} >= ? GROUP BY ALL ORDER BY ALL""", [kept]).fetchall()
            assert got == expected, (minutes, tier)


@pytest.fixture(autouse=True)
def _tier_env(monkeypatch):
    for var in ("PERFDECK_RAW_DAYS", "PERFDECK_MINUTE_DAYS", "PERFDECK_HOUR_DAYS", "PERFDECK_ROLLUP_DAYS"):
        monkeypatch.delenv(var, raising=False)


# -- the rollup job ---------------------------------------------------------------------------------

def test_roll_tiers_is_exact_incremental_and_idempotent(store):
    now = datetime(2026, 11, 20, 15, 37)
    make_store(store, make_events(now, 10))
    with write(store) as con:
        first = roll_tiers(con, now - timedelta(days=2))          # a job that ran two days ago
        assert first["hours_rolled"] == 8 * 24 and first["days_rolled"] == 8     # Nov 10 (its first hours) .. 17
        assert rolled_until(con)["hour"] == datetime(2026, 11, 18, 15)
        assert rolled_until(con)["day"] == datetime(2026, 11, 18)
        later = roll_tiers(con, now)                                # then catches up from its marks
        assert later["hours_rolled"] == 48 and later["days_rolled"] == 2
        assert rolled_until(con) == {"hour": datetime(2026, 11, 20, 15), "day": datetime(2026, 11, 20),
                                     "minute_purge": None}
        assert_tiers_match_minutes(con)
        before = tier_contents(con)
        again = roll_tiers(con, now)
        assert again == dict.fromkeys(again, 0)
        assert tier_contents(con) == before


def test_migration_backfills_complete_hours_and_days(store):
    now = utcnow()
    with write(store) as con:
        con.execute("CREATE TABLE _migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP)")
        for m in MIGRATIONS[:MIGRATIONS.index(m009_rollup_tiers)]:     # a store from before the tiers
            m(con)
            con.execute("INSERT INTO _migrations VALUES (?, now()::TIMESTAMP)", [m.__name__])
        store_events(con, make_events(now, 3))
        assert migrate(con)[0] == "m009_rollup_tiers"
        marks = rolled_until(con)
        assert marks["hour"] is not None and marks["hour"] <= now and marks["day"] is not None
        assert_tiers_match_minutes(con)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(rows=st.lists(st.tuples(st.integers(0, 3 * 1440 - 1), st.sampled_from(["/a", "/b"]), st.integers(-5, 5),
                               st.integers(1, 9)), min_size=1, max_size=60),
       late=st.lists(st.tuples(st.integers(0, 3 * 1440 - 1), st.sampled_from(["/a", "/c"]), st.integers(-5, 5),
                               st.integers(1, 9)), max_size=20),
       split=st.integers(0, 3 * 1440))
def test_merge_is_exact_with_late_rows_any_order(rows, late, split):
    """Minute rows, a roll at some time, late rows anywhere before it, another roll: every tier holds
    the sums of its minutes exactly, and a third roll changes nothing."""
    start = datetime(2026, 3, 1)
    con = duckdb.connect()
    con.begin()
    migrate(con)

    def insert(batch):
        for minute, endpoint, bucket, n in batch:
            at = start + timedelta(minutes=minute)
            con.execute("INSERT INTO latency_hist VALUES (?, 's', ?, ?, ?)", [at, endpoint, bucket, n])
            con.execute("INSERT INTO request_rollup VALUES (?, 's', ?, ?, 0, 1.0, 1.0)", [at, endpoint, n])

    insert(rows)
    roll_tiers(con, start + timedelta(minutes=split))
    insert(late)
    touched = (start + timedelta(minutes=min(m for m, *_ in late)), start + timedelta(days=3)) if late else None
    roll_tiers(con, start + timedelta(days=4), touched=touched)
    assert_tiers_match_minutes(con)
    before = tier_contents(con)
    roll_tiers(con, start + timedelta(days=4))
    assert tier_contents(con) == before


def _spool_requests(spool, events: list[tuple]) -> None:
    batch_id, payload, _ = encode(service="api", host="web-1", pid=1, sent_at=utcnow().timestamp(), requests=events)
    SpoolTransport(spool).send(batch_id, payload)


def test_a_late_batch_through_the_daemon_is_counted_once_in_every_tier(store, tmp_path):
    now = utcnow()
    make_store(store, make_events(now, 4), now=now)
    late_at = (now - timedelta(days=2)).replace(minute=10)            # an hour and a day already rolled
    with read(store) as con:
        assert rolled_until(con)["day"] > late_at
        before = endpoint_traffic(con, since=now - timedelta(days=4), until=now)
    spool = tmp_path / "spool"
    epoch = (late_at - datetime(1970, 1, 1)).total_seconds()
    _spool_requests(spool, [(epoch + i, "GET /a", 12.5 + i, 200, "GET", f"late-{i}", None) for i in range(7)])
    Collector(store, spool_dir=spool).run_once()                       # ingest, compaction, tiers, retention
    with read(store) as con:
        assert_tiers_match_minutes(con)
        after = endpoint_traffic(con, since=now - timedelta(days=4), until=now).set_index(["service", "endpoint"])
        delta = after["requests"] - before.set_index(["service", "endpoint"])["requests"]
        assert delta.to_dict() == {("api", "GET /a"): 7, ("api", "POST /b"): 0, ("worker", "task c"): 0}
        day_rows = con.execute("SELECT sum(requests) FROM request_rollup_day WHERE day = ?",
                               [late_at.replace(hour=0, minute=0)]).fetchone()[0]
        minute_rows = con.execute("SELECT sum(requests) FROM request_rollup WHERE date_trunc('day', minute) = ?",
                                  [late_at.replace(hour=0, minute=0)]).fetchone()[0]
        assert day_rows == minute_rows


def test_late_rows_older_than_the_minutes_kept_are_added_then_dropped(store, monkeypatch):
    monkeypatch.setenv("PERFDECK_MINUTE_DAYS", "2")
    now = datetime(2026, 11, 20, 15, 37)
    make_store(store, make_events(now, 6), now=now)
    with write(store) as con:
        purge(con, now)
        mark = rolled_until(con)["minute_purge"]
        assert mark == datetime(2026, 11, 18, 15)                         # whole hours go
        assert con.execute("SELECT min(minute) FROM latency_hist").fetchone()[0] >= mark
        day = datetime(2026, 11, 16)
        counted = con.execute("SELECT sum(requests) FROM request_rollup_day WHERE day = ?", [day]).fetchone()[0]
        late = datetime(2026, 11, 16, 9, 30)
        con.execute("INSERT INTO latency_hist VALUES (?, 'api', 'GET /a', ?, 3)", [late, bucket_of(40.0)])
        con.execute("INSERT INTO request_rollup VALUES (?, 'api', 'GET /a', 3, 1, 120.0, 40.0)", [late])
        assert roll_tiers(con, now)["late_rows"] == 2
        assert con.execute("SELECT count(*) FROM latency_hist WHERE minute < ?", [mark]).fetchone()[0] == 0
        assert con.execute("SELECT sum(requests) FROM request_rollup_day WHERE day = ?",
                           [day]).fetchone()[0] == counted + 3
        assert con.execute("SELECT sum(count) FROM latency_hist_hour WHERE hour = ? AND bucket = ?",
                           [late.replace(minute=0), bucket_of(40.0)]).fetchone()[0] >= 3
        before = tier_contents(con)
        roll_tiers(con, now)
        assert tier_contents(con) == before


def test_the_compaction_action_also_brings_the_tiers_up_to_date(store, operator):
    now = utcnow()
    make_store(store, make_events(now, 3))                      # minutes written, never rolled
    with write(store) as con:
        roll_tiers(con, now - timedelta(days=1))
        con.execute("INSERT INTO request_rollup VALUES (?, 'api', 'GET /a', 4, 0, 40.0, 10.0)",
                     [now - timedelta(days=2)])                  # late, and no daemon saw it
    action = CompactStore(store)
    params, preview = make_preview(action, {}, actor=OPERATOR)
    run_action(action, params, preview, actor=operator, db=store)
    with read(store) as con:
        assert rolled_until(con)["hour"] == floor(now - LATE_GRACE, HOUR)
        assert_tiers_match_minutes(con)


def test_retention_never_purges_a_tier_past_what_the_next_holds(store, monkeypatch):
    monkeypatch.setenv("PERFDECK_MINUTE_DAYS", "1")
    now = datetime(2026, 11, 20, 15, 37)
    make_store(store, make_events(now, 5))                                # never rolled
    with write(store) as con:
        purge(con, now)
        assert con.execute("SELECT min(minute) FROM latency_hist").fetchone()[0] < now - timedelta(days=4)
        roll_tiers(con, now - timedelta(days=3))                          # rolled up to 3 days ago only
        purge(con, now)
        assert con.execute("SELECT min(minute) FROM latency_hist").fetchone()[0] >= datetime(2026, 11, 17, 15)
        assert_tiers_match_minutes(con)


# -- which tier a range reads -----------------------------------------------------------------------

def test_tier_params_pick_the_coarsest_tier_that_resolves_the_range(migrated_store):
    now = datetime(2026, 11, 20, 15, 37)
    with write(migrated_store) as con:
        set_mark(con, "hour", datetime(2026, 11, 20, 15))
        set_mark(con, "day", datetime(2026, 11, 20))
    since, until = datetime(2026, 11, 15, 10, 30), datetime(2026, 11, 20, 15, 20)
    with read(migrated_store) as con:
        assert tier_params(con, since, until, now=now) == {
            "tier_hour_from": datetime(2026, 11, 15, 11), "tier_day_from": datetime(2026, 11, 16),
            "tier_day_until": datetime(2026, 11, 20), "tier_hour_until": datetime(2026, 11, 20, 15)}
        # A 6-hour step cannot use days; a 5-minute step reads minutes only.
        assert tier_params(con, since, until, step=6 * 3600, now=now) == {
            "tier_hour_from": datetime(2026, 11, 15, 11), "tier_day_from": datetime(2026, 11, 15, 11),
            "tier_day_until": datetime(2026, 11, 15, 11), "tier_hour_until": datetime(2026, 11, 20, 15)}
        assert set(tier_params(con, since, until, step=300, now=now).values()) == {until}
        # Inside one hour: minutes; up to the minute the job has not rolled: minutes after the mark.
        assert set(tier_params(con, datetime(2026, 11, 20, 9, 5), datetime(2026, 11, 20, 9, 55), now=now).values()) \
            == {datetime(2026, 11, 20, 9, 55)}
        # Beyond the hours kept (90 days) the edge day is read whole; beyond the minutes kept, the edge hour.
        old = tier_params(con, datetime(2026, 5, 1, 10, 30), datetime(2026, 11, 20, 15, 37), now=now)
        assert old["tier_day_from"] == datetime(2026, 5, 1) == old["tier_hour_from"]
        week = tier_params(con, datetime(2026, 11, 10, 10, 30), datetime(2026, 11, 20, 15, 37), now=now)
        assert week["tier_hour_from"] == datetime(2026, 11, 10, 10)
    assert chart_step(datetime(2026, 5, 1), now, now=now) == 86400
    assert chart_step(datetime(2026, 11, 10), datetime(2026, 11, 11), now=now) == 3600
    assert chart_step(now - timedelta(hours=24), now, now=now) == 300
    assert chart_step(now - timedelta(days=30), now, now=now) == 6 * 3600     # a month: 6-hour points from hours
    assert chart_step(now - timedelta(days=60), now, now=now) == 86400        # longer: a point a day, from days


def test_a_store_never_rolled_reads_minutes(migrated_store):
    with read(migrated_store) as con:
        params = tier_params(con, datetime(2026, 1, 1), datetime(2026, 2, 1, 12, 5))
    assert set(params.values()) == {datetime(2026, 2, 1, 12, 5)}


@pytest.fixture(scope="module")
def twin_stores(tmp_path_factory):
    """The same 40 days of events in two stores: `rolled` has its tiers built, `minutes` was never rolled."""
    now = utcnow()
    events = make_events(now, 40, per_hour=10)
    root = tmp_path_factory.mktemp("twins")
    minutes = make_store(root / "minutes.duckdb", events)
    rolled = root / "rolled.duckdb"
    shutil.copy(minutes, rolled)
    with write(rolled) as con:
        roll_tiers(con, now)
    return now, events, rolled, minutes


@pytest.mark.parametrize("span", [timedelta(days=35), timedelta(days=30, hours=5, minutes=7),
                                  timedelta(days=7), timedelta(hours=36, minutes=13), timedelta(hours=5)])
def test_a_long_range_from_tiers_equals_the_same_range_from_minutes(twin_stores, monkeypatch, span):
    monkeypatch.setenv("PERFDECK_MINUTE_DAYS", "400")    # no edge is older than the minutes kept: exact edges
    monkeypatch.setenv("PERFDECK_HOUR_DAYS", "400")
    now, _, rolled, minutes = twin_stores
    until = now - timedelta(minutes=23)
    scope = {"since": until - span, "until": until}
    with read(rolled) as a, read(minutes) as b:
        for fn in (endpoint_percentiles, endpoint_traffic, latency_over_time, traffic_over_time):
            pd.testing.assert_frame_equal(fn(a, **scope), fn(b, **scope), check_exact=False, rtol=1e-12,
                                          obj=fn.__name__)
        # requests_per_s counts from the first period with data: an hour row starts on the hour.
        pd.testing.assert_frame_equal(totals(a, **scope).drop(columns="requests_per_s"),
                                      totals(b, **scope).drop(columns="requests_per_s"), check_exact=False, rtol=1e-12)


def test_long_ranges_read_hours_and_days_not_minutes(twin_stores, tmp_path):
    """With the rolled minutes gone (as retention takes them), whole-hour ranges still read everything:
    from the hour and day rows."""
    now, _, rolled, minutes = twin_stores
    bare = shutil.copy(rolled, tmp_path / "bare.duckdb")
    with write(bare) as con:
        hour_mark = rolled_until(con)["hour"]
        for table in ("latency_hist", "request_rollup"):
            con.execute(f"DELETE FROM {table} WHERE minute < ?", [hour_mark])
    with read(bare) as a, read(minutes) as b:
        for span in (timedelta(days=40), timedelta(days=30), timedelta(hours=30)):
            scope = {"since": hour_mark - span, "until": hour_mark}
            for fn in (endpoint_percentiles, endpoint_traffic):
                pd.testing.assert_frame_equal(fn(a, **scope), fn(b, **scope), check_exact=False, rtol=1e-12)
        assert services(a)["service"].tolist() == ["api", "worker"]


def test_percentiles_from_tiers_match_the_raw_events(twin_stores):
    now, events, rolled, _ = twin_stores
    since = now - timedelta(days=30)
    with read(rolled) as con:
        df = endpoint_percentiles(con, since=since, until=now)
    window = events[events.ts >= since]
    for row in df.itertuples():
        durations = window[window.endpoint == row.endpoint].duration_ms
        assert abs(row.requests - len(durations)) < 40          # the edge hour: older than the minutes kept
        for q, col in ((0.5, "p50_ms"), (0.95, "p95_ms"), (0.99, "p99_ms")):
            assert getattr(row, col) == pytest.approx(np.quantile(durations, q), rel=0.015)


# -- sparse percentiles -----------------------------------------------------------------------------

@pytest.mark.parametrize("n", [30, 183, 510])
def test_sparse_percentiles_are_within_one_percent_of_quantile_cont(store, n):
    now = utcnow().replace(second=0, microsecond=0)
    rng = np.random.default_rng(n)
    ts = now - pd.to_timedelta(rng.uniform(60, 7200, n), unit="s")
    events = pd.DataFrame({"ts": ts.astype("datetime64[us]"), "service": "api", "endpoint": "GET /rare",
                           "status": np.full(n, 200, "int16"), "duration_ms": rng.lognormal(np.log(80), 1.0, n)})
    make_store(store, events, now=now + timedelta(hours=2))         # tiers rolled over those minutes too
    with read(store) as con:
        exact = dict(zip(["p50_ms", "p95_ms", "p99_ms"], con.execute(
            "SELECT quantile_cont(duration_ms, [0.5, 0.95, 0.99]) FROM request_events").fetchone()[0], strict=True))
        short = endpoint_percentiles(con, since=now - timedelta(hours=2, minutes=30), until=now + timedelta(minutes=1))
        day = endpoint_percentiles(con, since=now - timedelta(days=2), until=now + timedelta(minutes=1))
        chart = latency_over_time(con, since=now - timedelta(hours=3), until=now)
    assert short["requests"].tolist() == day["requests"].tolist() == [n]
    counts = Counter(bucket_of(d) for d in events.duration_ms)
    for col, q in (("p50_ms", 0.5), ("p95_ms", 0.95), ("p99_ms", 0.99)):
        assert short[col][0] == pytest.approx(exact[col], rel=1e-12)            # raw: exact
        assert day[col][0] == pytest.approx(exact[col], rel=0.01)               # histogram, interpolated
        assert day[col][0] == pytest.approx(quantile(counts, q), rel=1e-12)     # SQL and Python agree
    assert chart["requests"].sum() == n


@settings(max_examples=200, deadline=None)
@given(values=st.lists(st.floats(0.01, 1e6), min_size=1, max_size=300), q=st.floats(0, 1))
def test_histogram_quantile_is_within_a_bucket_of_quantile_cont(values, q):
    counts = Counter(bucket_of(v) for v in values)
    assert quantile(counts, q) == pytest.approx(float(np.quantile(values, q)), rel=(GAMMA - 1) / (GAMMA + 1) + 1e-12)
