"""dashboard.queries against real DuckDB files seeded like the daemon would fill them."""
from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from seed_store import seed_store

from collectors.store import migrate, read, write
from collectors.store.histogram import bucket_of, quantile
from dashboard.queries import (
    bucket_seconds,
    deploys,
    endpoint_percentiles,
    endpoint_traffic,
    latency_over_time,
    run_query,
    services,
    totals,
    traffic_over_time,
)

QS = {"p50_ms": 0.50, "p95_ms": 0.95, "p99_ms": 0.99}
# The histogram interpolates between bucket representative values, each within (gamma-1)/(gamma+1)
# = 0.99 % of the true order statistics: within 0.99 % of numpy's default (linear) percentile, which
# is DuckDB's quantile_cont.
RTOL = 0.01


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    path = tmp_path_factory.mktemp("store") / "perfdeck.duckdb"
    now = datetime.now(UTC).replace(tzinfo=None)
    events = seed_store(path, now=now)
    return path, now, events


@pytest.fixture(scope="module")
def con(seeded):
    with read(seeded[0]) as con:
        yield con


def assert_matches_numpy(row, durations):
    assert row["requests"] == len(durations)
    for col, q in QS.items():
        expected = np.percentile(durations, q * 100)
        assert row[col] == pytest.approx(expected, rel=RTOL), col


def test_endpoint_percentiles_match_numpy(seeded, con):
    _, now, events = seeded
    df = endpoint_percentiles(con, since=now - timedelta(days=30), until=now)
    assert list(df.columns) == ["service", "endpoint", "requests", "p50_ms", "p95_ms", "p99_ms"]
    assert len(df) == events.groupby(["service", "endpoint"]).ngroups == 7
    assert df["requests"].is_monotonic_decreasing
    for row in df.to_dict("records"):
        raw = events[(events.service == row["service"]) & (events.endpoint == row["endpoint"])]
        assert_matches_numpy(row, raw.duration_ms.to_numpy())


def test_endpoint_percentiles_equal_python_quantile(seeded, con):
    """The SQL percentile is exactly collectors.store.histogram.quantile, bucket for bucket."""
    _, now, events = seeded
    df = endpoint_percentiles(con, since=now - timedelta(days=30), until=now, service="worker")
    for row in df.to_dict("records"):
        raw = events[events.endpoint == row["endpoint"]].duration_ms
        counts = Counter(bucket_of(d) for d in raw)
        for col, q in QS.items():
            assert row[col] == pytest.approx(quantile(counts, q), rel=1e-12)


def test_time_filter(seeded, con):
    _, now, events = seeded
    until = now.replace(second=0, microsecond=0)
    since = until - timedelta(hours=6)  # minute-aligned, so minute rows split exactly like events
    df = endpoint_percentiles(con, since=since, until=until)
    window = events[(events.ts >= since) & (events.ts < until)]
    assert df["requests"].sum() == len(window) > 0
    for row in df.to_dict("records"):
        raw = window[(window.service == row["service"]) & (window.endpoint == row["endpoint"])]
        assert_matches_numpy(row, raw.duration_ms.to_numpy())
    later = endpoint_percentiles(con, since=now + timedelta(minutes=1), until=now + timedelta(hours=1))
    assert later.empty


def test_service_filter(seeded, con):
    now = seeded[1]
    everything = endpoint_percentiles(con, since=now - timedelta(days=30), until=now)
    worker = endpoint_percentiles(con, since=now - timedelta(days=30), until=now, service="worker")
    assert set(worker["service"]) == {"worker"}
    assert set(worker["endpoint"]) == {"task send_email", "task build_report"}
    pd.testing.assert_frame_equal(
        worker.reset_index(drop=True),
        everything[everything.service == "worker"].reset_index(drop=True),
    )
    assert endpoint_percentiles(con, since=now - timedelta(days=30), until=now, service="nope").empty


def test_totals(seeded, con):
    _, now, events = seeded
    since = now - timedelta(days=30)
    row = totals(con, since=since, until=now).iloc[0]
    assert row["requests"] == len(events)
    assert row["errors"] == (events.status >= 500).sum()
    assert row["error_rate"] == pytest.approx((events.status >= 500).mean())
    first_minute = events.ts.min().floor("min")
    assert row["requests_per_s"] == pytest.approx(len(events) / (now - first_minute).total_seconds())
    six_hours_ago = now.replace(second=0, microsecond=0) - timedelta(hours=6)
    recent = totals(con, since=six_hours_ago, until=now).iloc[0]
    assert recent["requests_per_s"] == pytest.approx(recent["requests"] / (now - six_hours_ago).total_seconds())
    assert_matches_numpy(row, events.duration_ms.to_numpy())
    api = totals(con, since=since, until=now, service="api").iloc[0]
    assert api["requests"] == (events.service == "api").sum()


def test_endpoint_traffic(seeded, con):
    _, now, events = seeded
    df = endpoint_traffic(con, since=now - timedelta(days=30), until=now, service="api")
    expected = events[events.service == "api"].groupby("endpoint").status.agg(
        requests="size", errors=lambda s: (s >= 500).sum())
    got = df.set_index("endpoint")
    assert got["requests"].to_dict() == expected["requests"].to_dict()
    assert got["errors"].to_dict() == expected["errors"].to_dict()


@pytest.mark.parametrize("span, step", [
    (timedelta(minutes=15), 60), (timedelta(hours=3), 60), (timedelta(hours=6), 300),
    (timedelta(hours=24), 300), (timedelta(days=7), 3600), (timedelta(days=30), 6 * 3600),
])
def test_bucket_seconds(span, step):
    now = datetime(2025, 1, 1)
    assert bucket_seconds(now - span, now) == step


def test_traffic_over_time(seeded, con):
    _, now, events = seeded
    since = now - timedelta(hours=24)
    df = traffic_over_time(con, since=since, until=now)
    assert list(df.columns) == ["time", "requests", "errors", "requests_per_s", "error_rate"]
    assert df.attrs["bucket_seconds"] == 300
    assert (df["time"].diff().dropna() == pd.Timedelta(minutes=5)).all()
    in_range = events[events.ts.dt.floor("min") >= since]
    assert df["requests"].sum() == len(in_range)
    full = df.iloc[1:-1]  # edge buckets are partly outside the range
    assert np.allclose(full["requests_per_s"], full["requests"] / 300)


def test_latency_over_time_one_bucket(seeded, con):
    _, now, events = seeded
    since = now.replace(minute=0, second=0, microsecond=0) - timedelta(days=2)
    df = latency_over_time(con, since=since, until=now, service="api", endpoint="POST /checkout")
    assert df.attrs["bucket_seconds"] == 3600
    row = df.iloc[5]
    start = row["time"]
    raw = events[(events.endpoint == "POST /checkout") & (events.ts >= start)
                 & (events.ts < start + pd.Timedelta(hours=1))]
    assert_matches_numpy(row, raw.duration_ms.to_numpy())


def test_deploys_and_services(seeded, con):
    _, now, _ = seeded
    assert services(con)["service"].tolist() == ["api", "worker"]
    day = deploys(con, since=now - timedelta(hours=24), until=now)
    assert day["version"].tolist() == ["v1.5.0", "v1.5.1"]
    assert deploys(con, since=now - timedelta(days=3), until=now, service="worker")["version"].tolist() == ["v0.9.0"]


def test_empty_store_returns_empty_frames(tmp_path):
    path = tmp_path / "empty.duckdb"
    with write(path) as w:
        migrate(w)
    now = datetime(2025, 1, 1)
    scope = {"since": now - timedelta(days=1), "until": now}
    with read(path) as con:
        for fn in (endpoint_percentiles, endpoint_traffic, totals, traffic_over_time,
                   latency_over_time, deploys):
            df = fn(con, **scope)
            assert df.empty and len(df.columns) > 0, fn.__name__
        assert services(con).empty
        assert list(endpoint_percentiles(con, **scope).columns) == [
            "service", "endpoint", "requests", "p50_ms", "p95_ms", "p99_ms"]


def test_run_query_flags_truncation(seeded):
    df, truncated = run_query("SELECT * FROM range(10) t(i) ORDER BY i", max_rows=3, db=seeded[0])
    assert truncated and df["i"].tolist() == [0, 1, 2] and df.attrs["truncated"]
    df, truncated = run_query("SELECT * FROM range($n) t(i)", {"n": 3}, max_rows=3, db=seeded[0])
    assert not truncated and len(df) == 3
    df, truncated = run_query("SELECT * FROM range(5000) t(i)", max_rows=4500, db=seeded[0])
    assert truncated and len(df) == 4500  # spans several fetch chunks
