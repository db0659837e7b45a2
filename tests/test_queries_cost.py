"""dashboard.queries.cost on real DuckDB stores filled with hand-priced LLM calls, request events and
process CPU samples. Every figure is checked against a computation in plain Python on the same rows.

The main story, on 2026-03-10 (naive UTC), range [10:00, 14:00):
- /chat (api): r6 calls at 09:59:59.9 and ends at 10:00:00.2 (in range, by its event); r1 makes two
  calls; r2 is answered from the result cache; n1..n3 call no LLM; r9 is priced with an older price
  list; r5 calls at 13:59:59.5 and ends at 14:00:00.2 (the next range's).
- /summarize (api): r3 and r8 on a price override; r4 calls an unknown model and its event was lost.
- /health: requests that never call an LLM.
- worker: two calls outside any request (no request_id, no endpoint, no user), one of them unpriced.
"""
from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from decimal import Decimal

import numpy as np
import pandas as pd
import pytest
from seed_cost import call, cpu, event, seed_cost

from collectors.store import read
from dashboard.queries import (
    budget_status,
    cache_savings,
    compute_costs,
    cost_export,
    cost_over_time,
    cost_totals,
    daily_spend,
    expensive_requests,
    forecast_period,
    model_usage,
    request_calls,
    request_cost_overall,
    request_costs,
    unpriced_models,
    user_costs,
)

T = datetime(2026, 3, 10)
OVERRIDE = "override acme-local-7b#1a2b3c4d"


def at(hms: str, day: datetime = T) -> datetime:
    h, m, *s = hms.split(":")
    return day + timedelta(hours=int(h), minutes=int(m), seconds=float(s[0]) if s else 0)


SINCE, UNTIL = at("10:00"), at("14:00")

CALLS = [
    call(at("09:59:59.9"), cost="0.002", request_id="r6", endpoint="/chat", user_id="dave", input_tokens=100,
         output_tokens=10, latency_ms=900.0),
    call(at("10:05:00"), "gpt-4o", cost="0.0045", saved="0.0005", request_id="r1", endpoint="/chat", user_id="alice",
         input_tokens=1000, output_tokens=200, cached_input_tokens=400, latency_ms=2000.0),
    call(at("10:05:03"), "gpt-4o-mini", cost="0.000135", request_id="r1", endpoint="/chat", user_id="alice",
         input_tokens=500, output_tokens=100, latency_ms=1000.0),
    call(at("10:20:00"), "gpt-4o", cost="0", saved="0.0035", cache_hit=True, request_id="r2", endpoint="/chat",
         user_id="bob_1", input_tokens=800, output_tokens=150, latency_ms=5.0),
    call(at("11:10:00"), "acme-local-7b", provider="acme", cost="0.0001", price_version=OVERRIDE, request_id="r3",
         endpoint="/summarize", user_id="carol%", input_tokens=300, output_tokens=50, latency_ms=500.0),
    call(at("11:30:00"), "mystery-1", provider="mystery", cost=None, request_id="r4", endpoint="/summarize",
         user_id="alice", input_tokens=700, output_tokens=70, latency_ms=700.0),
    call(at("11:45:00"), "acme-local-7b", provider="acme", cost="0.0002", price_version=OVERRIDE, request_id="r8",
         endpoint="/summarize", user_id="carolyn", input_tokens=600, output_tokens=90, latency_ms=None),
    call(at("12:10:00"), "gpt-4o", cost="0.0008", price_version="genai-prices 0.2.2", request_id="r9",
         endpoint="/chat", user_id="bobx1", input_tokens=400, output_tokens=60, latency_ms=1000.0),
    call(at("12:40:00"), "claude-x", provider="anthropic", service="worker", host="h2", cost="0.01", saved="0.002",
         input_tokens=2000, output_tokens=500, cached_input_tokens=1500, cache_write_tokens=200, latency_ms=4000.0),
    call(at("12:50:00"), "mystery-1", provider="mystery", service="worker", host="h2", cost=None),
    call(at("13:59:59.5"), "gpt-4o", cost="0.001", request_id="r5", endpoint="/chat", user_id="bob_1"),
]
EVENTS = [
    event(at("10:00:00.2"), "/chat", "r6", duration_ms=1000.0),
    event(at("10:05:10"), "/chat", "r1", duration_ms=10500.0),
    event(at("10:05:30"), "/chat"),  # no request id: no request here, but it shares its host-minute's CPU
    event(at("10:20:01"), "/chat", "r2"),
    event(at("10:30:00"), "/chat", "n1"),
    event(at("10:31:00"), "/chat", "n2"),
    event(at("10:32:00"), "/chat", "n3"),
    event(at("11:10:02"), "/summarize", "r3"),
    event(at("11:45:02"), "/summarize", "r8"),
    event(at("12:10:01"), "/chat", "r9"),
    *[event(at(f"1{i}:00:30"), "/health", f"h{i}") for i in range(4)],
    event(at("14:00:00.2"), "/chat", "r5"),
]
# h1 at 10:05: api averages 60 % and the worker 100 % -> 96 core-seconds, shared by r1 and the
# anonymous request. h1 at 10:06 and h2 at 10:05 burn CPU with no request to charge.
CPU = [
    cpu(at("10:05:00"), "h1", "api", 1, 50.0), cpu(at("10:05:30"), "h1", "api", 1, 70.0),
    *[cpu(at(f"10:05:{s}"), "h1", "worker", 2, 100.0) for s in ("05", "25", "45")],
    cpu(at("10:06:00"), "h1", "api", 1, 10.0),
    cpu(at("10:05:10"), "h2", "worker", 3, 25.0),
]
RATE = 0.36  # $ per core-hour: 0.0001 $ per core-second


@pytest.fixture(scope="module")
def cost_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("cost") / "perfdeck.duckdb"
    seed_cost(path, calls=CALLS, events=EVENTS, cpu_samples=CPU)
    return path


@pytest.fixture(scope="module")
def con(cost_store):
    with read(cost_store) as con:
        yield con


# -- plain-Python reference ------------------------------------------------------------------------------

def usd(values) -> float:
    """Exact Decimal sum of the priced values, as the float the queries return."""
    return float(sum((v for v in values if v is not None), Decimal(0)))


def calls_in(since=SINCE, until=UNTIL, service=None, calls=CALLS):
    return [c for c in calls if since <= c["ts"] < until and service in (None, c["service"])]


def figures(rows) -> dict:
    """The figures cost_export gives for a group of calls."""
    return {
        "calls": len(rows),
        "llm_requests": len({c["request_id"] for c in rows if c["request_id"] is not None}),
        "input_tokens": sum(c["input_tokens"] for c in rows),
        "output_tokens": sum(c["output_tokens"] for c in rows),
        "cached_input_tokens": sum(c["cached_input_tokens"] for c in rows),
        "spend_usd": usd(c["cost_usd"] for c in rows),
        "saved_usd": usd(c["saved_usd"] for c in rows),
        "unpriced_calls": sum(c["cost_usd"] is None for c in rows),
    }


def group(rows, key) -> dict:
    out = defaultdict(list)
    for row in rows:
        out[key(row)].append(row)
    return dict(out)


def per_request(calls, events, since, until):
    """{request_id: {ts, endpoint, service, calls, cost, has_event}}: a request is placed at its
    event's time (its first call's without one), and carries all its calls either side of the range.
    An event without an id is a request of its own, with no calls (keyed "#<its index in events>")."""
    first_event = {}
    for i, e in sorted(enumerate(events), key=lambda ie: ie[1]["ts"]):
        first_event.setdefault(e["request_id"] or f"#{i}", e)
    by_id = group([c for c in calls if c["request_id"] is not None], lambda c: c["request_id"])
    out = {}
    for rid in set(first_event) | set(by_id):
        e, mine = first_event.get(rid), sorted(by_id.get(rid, []), key=lambda c: c["ts"])
        ts = e["ts"] if e else mine[0]["ts"]
        if since <= ts < until:
            out[rid] = {"ts": ts, "endpoint": e["endpoint"] if e else mine[0]["endpoint"],
                        "service": e["service"] if e else mine[0]["service"], "calls": len(mine),
                        "cost": usd(c["cost_usd"] for c in mine), "has_event": e is not None}
    return out


def row_of(df: pd.DataFrame, **where) -> dict:
    mask = np.logical_and.reduce([df[k] == v for k, v in where.items()])
    rows = df[mask].to_dict("records")
    assert len(rows) == 1, where
    return rows[0]


# -- 1. totals -----------------------------------------------------------------------------------------------------

def test_cost_totals(con):
    df = cost_totals(con, since=SINCE, until=UNTIL)
    assert list(df.columns) == ["calls", "priced_calls", "unpriced_calls", "cache_hit_calls", "spend_usd", "input_tokens",
                                "output_tokens", "cached_input_tokens", "llm_requests", "calls_per_request",
                                "spend_per_request_usd", "saved_result_cache_usd", "saved_cache_read_usd",
                                "output_tokens_per_s", "first_call"]
    assert len(df) == 1
    row = df.iloc[0].to_dict()
    rows = calls_in()
    in_requests = [c for c in rows if c["request_id"] is not None]
    generating = [c for c in rows if not c["cache_hit"] and c["latency_ms"]]
    expected = figures(rows)
    assert row["calls"] == expected["calls"] == 10  # the 09:59:59.9 call is not in the range
    assert row["priced_calls"] == 8
    assert row["unpriced_calls"] == expected["unpriced_calls"] == 2
    assert row["cache_hit_calls"] == 1
    assert row["spend_usd"] == pytest.approx(expected["spend_usd"], rel=1e-12)
    assert row["spend_usd"] == pytest.approx(0.016735, rel=1e-12)  # unpriced calls add nothing
    for col in ("input_tokens", "output_tokens", "cached_input_tokens", "llm_requests"):
        assert row[col] == expected[col], col
    assert row["llm_requests"] == 7
    assert row["calls_per_request"] == pytest.approx(len(in_requests) / 7)
    assert row["spend_per_request_usd"] == pytest.approx(usd(c["cost_usd"] for c in in_requests) / 7, rel=1e-12)
    assert row["saved_result_cache_usd"] == pytest.approx(0.0035, rel=1e-12)
    assert row["saved_cache_read_usd"] == pytest.approx(0.0005 + 0.002, rel=1e-12)
    assert row["output_tokens_per_s"] == pytest.approx(
        sum(c["output_tokens"] for c in generating) / (sum(c["latency_ms"] for c in generating) / 1000))
    assert row["first_call"] == at("10:05:00")


def test_cost_totals_service_and_empty_range(con):
    worker = cost_totals(con, since=SINCE, until=UNTIL, service="worker").iloc[0]
    assert (worker["calls"], worker["unpriced_calls"], worker["llm_requests"]) == (2, 1, 0)
    assert worker["spend_usd"] == pytest.approx(0.01, rel=1e-12)
    assert pd.isna(worker["calls_per_request"]) and pd.isna(worker["spend_per_request_usd"])

    empty = cost_totals(con, since=at("00:00"), until=at("01:00"))
    assert len(empty) == 1
    row = empty.iloc[0]
    assert row["calls"] == 0 and row["spend_usd"] == 0.0 and row["saved_cache_read_usd"] == 0.0
    assert row["input_tokens"] == 0 and pd.isna(row["first_call"])
    assert empty["spend_usd"].dtype == np.float64


# -- 2. over time -----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("by,bucket_s", [("model", 3600), ("endpoint", 1800), ("service", 3600), ("provider", 7200)])
def test_cost_over_time(con, by, bucket_s):
    df = cost_over_time(con, since=SINCE, until=UNTIL, by=by, bucket_s=bucket_s)
    assert list(df.columns) == ["time", "key", "cost_usd", "calls", "saved_usd"]
    assert df.attrs["bucket_seconds"] == bucket_s
    assert df["cost_usd"].dtype == np.float64

    def key(c):
        seconds = (c["ts"] - T).total_seconds() // bucket_s * bucket_s
        return T + timedelta(seconds=seconds), c[by] if c[by] is not None else "(none)"

    expected = group(calls_in(), key)
    assert len(df) == len(expected)
    for (time, k), rows in expected.items():
        row = row_of(df, time=time, key=k)
        assert row["calls"] == len(rows)
        assert row["cost_usd"] == pytest.approx(usd(c["cost_usd"] for c in rows), rel=1e-12, abs=0)
        assert row["saved_usd"] == pytest.approx(usd(c["saved_usd"] for c in rows), rel=1e-12, abs=0)


def test_cost_over_time_spot_values(con):
    df = cost_over_time(con, since=SINCE, until=UNTIL, by="endpoint")
    # 12:00 bucket: the worker's two calls have no endpoint; the unpriced one adds a call, not cost.
    none = row_of(df, time=at("12:00"), key="(none)")
    assert (none["calls"], none["cost_usd"], none["saved_usd"]) == (2, pytest.approx(0.01), pytest.approx(0.002))
    summarize = row_of(df, time=at("11:00"), key="/summarize")
    assert (summarize["calls"], summarize["cost_usd"]) == (3, pytest.approx(0.0003, rel=1e-12))


@pytest.mark.parametrize("by", ["user", "model; DROP TABLE llm_calls", ""])
def test_cost_over_time_rejects_unknown_grouping(con, by):
    with pytest.raises(ValueError):
        cost_over_time(con, since=SINCE, until=UNTIL, by=by)


# -- 3, 4. models -------------------------------------------------------------------------------------------------------

def test_model_usage(con):
    df = model_usage(con, since=SINCE, until=UNTIL)
    assert list(df.columns) == ["provider", "model", "calls", "cache_hit_calls", "input_tokens", "output_tokens",
                                "cached_input_tokens", "cache_write_tokens", "spend_usd", "saved_usd", "avg_latency_ms",
                                "output_tokens_per_s", "cost_per_call_usd", "price_version", "unpriced_calls"]
    expected = group(calls_in(), lambda c: (c["provider"], c["model"]))
    assert len(df) == len(expected) == 5
    assert df["spend_usd"].dropna().is_monotonic_decreasing and df["spend_usd"].isna().sum() == 1   # unpriced last
    for (provider, model), rows in expected.items():
        row = row_of(df, provider=provider, model=model)
        fig = figures(rows)
        priced = [c for c in rows if c["cost_usd"] is not None]
        generating = [c for c in rows if not c["cache_hit"] and c["latency_ms"]]
        assert row["calls"] == fig["calls"]
        assert row["cache_hit_calls"] == sum(c["cache_hit"] for c in rows)
        for col in ("input_tokens", "output_tokens", "cached_input_tokens", "unpriced_calls"):
            assert row[col] == fig[col], (model, col)
        assert row["cache_write_tokens"] == sum(c["cache_write_tokens"] for c in rows)
        if priced:
            assert row["spend_usd"] == pytest.approx(fig["spend_usd"], rel=1e-12, abs=0)
            assert row["saved_usd"] == pytest.approx(fig["saved_usd"], rel=1e-12, abs=0)
        else:       # no price known: the spend is unknown, not $0
            assert pd.isna(row["spend_usd"]) and pd.isna(row["saved_usd"]) and pd.isna(df.iloc[-1]["spend_usd"])
        if priced:
            assert row["cost_per_call_usd"] == pytest.approx(fig["spend_usd"] / len(priced), rel=1e-12, abs=0)
        if generating:
            assert row["output_tokens_per_s"] == pytest.approx(
                sum(c["output_tokens"] for c in generating) / sum(c["latency_ms"] / 1000 for c in generating))
    gpt4o = row_of(df, model="gpt-4o")
    assert gpt4o["avg_latency_ms"] == pytest.approx((2000 + 1000 + 1000) / 3)  # the cache hit left out
    assert gpt4o["price_version"] == "genai-prices 0.2.2, genai-prices 0.2.3"
    assert row_of(df, model="acme-local-7b")["price_version"] == OVERRIDE
    assert row_of(df, model="claude-x")["cache_write_tokens"] == 200
    mystery = row_of(df, model="mystery-1")
    assert (mystery["calls"], mystery["unpriced_calls"]) == (2, 2) and pd.isna(mystery["spend_usd"])
    assert pd.isna(mystery["price_version"]) and pd.isna(mystery["cost_per_call_usd"])
    assert df.iloc[0]["model"] == "claude-x"


def test_unpriced_models(con):
    df = unpriced_models(con, since=SINCE, until=UNTIL)
    assert list(df.columns) == ["provider", "model", "calls", "input_tokens", "output_tokens", "first_seen", "last_seen"]
    assert df.to_dict("records") == [{
        "provider": "mystery", "model": "mystery-1", "calls": 2, "input_tokens": 700 + 1000, "output_tokens": 70 + 100,
        "first_seen": at("11:30"), "last_seen": at("12:50"),
    }]
    assert unpriced_models(con, since=SINCE, until=UNTIL, service="api")["calls"].tolist() == [1]
    assert unpriced_models(con, since=SINCE, until=at("11:00")).empty


# -- 5, 6, 7. requests ----------------------------------------------------------------------------------------------------

REQUEST_COLUMNS = ["service", "endpoint", "requests", "llm_requests", "calls_per_request", "mean_usd", "p50_usd",
                   "p95_usd", "max_usd", "total_usd", "compute_usd"]


def assert_request_costs(df, reference, compute=None):
    """Each endpoint's figures against numpy over the reference per-request costs (+ compute by id)."""
    compute = compute or {}
    endpoints = group(reference.items(), lambda kv: (kv[1]["service"], kv[1]["endpoint"]))
    endpoints = {k: v for k, v in endpoints.items() if any(r["calls"] for _, r in v)}
    assert len(df) == len(endpoints)
    for (service, endpoint), items in endpoints.items():
        row = row_of(df, service=service, endpoint=endpoint)
        costs = np.array([r["cost"] + compute.get(rid, 0.0) for rid, r in items])
        assert row["requests"] == len(items)
        assert row["llm_requests"] == sum(r["calls"] > 0 for _, r in items)
        assert row["calls_per_request"] == pytest.approx(sum(r["calls"] for _, r in items) / len(items))
        assert row["mean_usd"] == pytest.approx(costs.mean(), rel=1e-9, abs=1e-15)
        assert row["p50_usd"] == pytest.approx(np.percentile(costs, 50), rel=1e-9, abs=1e-15)
        assert row["p95_usd"] == pytest.approx(np.percentile(costs, 95), rel=1e-9, abs=1e-15)
        assert row["max_usd"] == pytest.approx(costs.max(), rel=1e-9, abs=1e-15)
        assert row["total_usd"] == pytest.approx(costs.sum(), rel=1e-9, abs=1e-15)
        assert row["compute_usd"] == pytest.approx(sum(compute.get(rid, 0.0) for rid, _ in items), abs=1e-15)
    assert df["total_usd"].is_monotonic_decreasing


def test_request_costs(con):
    df = request_costs(con, since=SINCE, until=UNTIL)
    assert list(df.columns) == REQUEST_COLUMNS
    assert_request_costs(df, per_request(CALLS, EVENTS, SINCE, UNTIL))
    # The same figures, by hand: /health (no LLM call) and the worker (no request ids) are not here.
    assert df[["service", "endpoint"]].values.tolist() == [["api", "/chat"], ["api", "/summarize"]]
    chat = row_of(df, endpoint="/chat")
    # r6 (its call at 09:59:59.9 joins its 10:00:00.2 event), r1, the request without an id, r2,
    # n1-n3, r9; r5 ends at 14:00:00.2
    assert (chat["requests"], chat["llm_requests"]) == (8, 4)
    assert chat["calls_per_request"] == pytest.approx(5 / 8)
    assert chat["p50_usd"] == 0.0  # five of eight requests cost nothing (r2's call was answered from a cache)
    assert chat["total_usd"] == pytest.approx(0.002 + 0.004635 + 0.0008, rel=1e-12)
    assert chat["max_usd"] == pytest.approx(0.004635, rel=1e-12)
    assert chat["compute_usd"] == 0.0
    summarize = row_of(df, endpoint="/summarize")  # r4 has no event: placed at its call, $0 (unpriced)
    assert (summarize["requests"], summarize["llm_requests"]) == (3, 3)
    assert summarize["total_usd"] == pytest.approx(0.0003, rel=1e-12)


def test_request_cost_overall_is_every_llm_endpoint_together(con):
    [row] = request_cost_overall(con, since=SINCE, until=UNTIL).to_dict("records")
    assert list(row) == REQUEST_COLUMNS[2:]
    reference = per_request(CALLS, EVENTS, SINCE, UNTIL)
    llm_endpoints = {(r["service"], r["endpoint"]) for r in reference.values() if r["calls"]}
    costs = np.array([r["cost"] for r in reference.values() if (r["service"], r["endpoint"]) in llm_endpoints])
    assert row["requests"] == len(costs) == 11          # /chat's 8 and /summarize's 3; /health is left out
    assert row["p95_usd"] == pytest.approx(np.percentile(costs, 95), rel=1e-9, abs=1e-15)
    assert row["mean_usd"] == pytest.approx(costs.mean(), rel=1e-9, abs=1e-15)
    [empty] = request_cost_overall(con, since=at("16:00"), until=at("17:00")).to_dict("records")
    assert empty["requests"] == 0 and pd.isna(empty["p95_usd"])


def test_request_costs_compute_allocation(con):
    df = request_costs(con, since=SINCE, until=UNTIL, usd_per_core_hour=RATE)
    # h1 at 10:05: (50+70)/2 % + 100 % of a core for 60 s = 96 core-s, over r1 and the request
    # without an id (EVENTS[2]).
    r1_compute = 96 / 2 * RATE / 3600
    assert r1_compute == pytest.approx(0.0048)
    assert_request_costs(df, per_request(CALLS, EVENTS, SINCE, UNTIL), compute={"r1": r1_compute, "#2": r1_compute})
    chat = row_of(df, endpoint="/chat")
    assert chat["compute_usd"] == pytest.approx(2 * 0.0048)
    assert chat["max_usd"] == pytest.approx(0.004635 + 0.0048)
    assert row_of(df, endpoint="/summarize")["compute_usd"] == 0.0


def test_request_costs_range_edges_partition(con):
    """Each request falls in exactly one range, with all its calls: adjacent ranges add up."""
    whole = request_costs(con, since=SINCE, until=at("15:00"))
    parts = [request_costs(con, since=s, until=u) for s, u in
             ((SINCE, at("12:00")), (at("12:00"), UNTIL), (UNTIL, at("15:00")))]
    both = pd.concat(parts).groupby(["service", "endpoint"])[["requests", "total_usd"]].sum()
    for row in whole.to_dict("records"):
        assert both.loc[(row["service"], row["endpoint"]), "requests"] == row["requests"]
        assert both.loc[(row["service"], row["endpoint"]), "total_usd"] == pytest.approx(row["total_usd"], rel=1e-12)
    # r5: its 13:59:59.5 call belongs to its 14:00:00.2 event's range, not to the range of the call.
    late = parts[2]
    assert late[["endpoint", "requests", "llm_requests"]].values.tolist() == [["/chat", 1, 1]]
    assert late.iloc[0]["total_usd"] == pytest.approx(0.001, rel=1e-12)


def test_join_does_not_depend_on_insert_order(tmp_path):
    frames = []
    for events_first in (False, True):
        path = tmp_path / f"events_first_{events_first}.duckdb"
        seed_cost(path, calls=CALLS, events=EVENTS, cpu_samples=CPU, events_first=events_first)
        with read(path) as con:
            frames.append((request_costs(con, since=SINCE, until=UNTIL, usd_per_core_hour=RATE),
                           expensive_requests(con, since=SINCE, until=UNTIL)))
    for a, b in zip(*frames):
        pd.testing.assert_frame_equal(a, b)
    assert row_of(frames[0][1], request_id="r6")["ts"] == at("10:00:00.2")


def test_expensive_requests(con):
    df = expensive_requests(con, since=SINCE, until=UNTIL)
    assert list(df.columns) == ["request_id", "ts", "service", "endpoint", "user_id", "duration_ms", "calls", "models",
                                "input_tokens", "output_tokens", "cost_usd"]
    reference = per_request(CALLS, EVENTS, SINCE, UNTIL)
    with_calls = sorted(((r["cost"], r["ts"], rid) for rid, r in reference.items() if r["calls"]), reverse=True)
    assert df["request_id"].tolist() == [rid for _, _, rid in with_calls]
    assert df["request_id"].tolist() == ["r1", "r6", "r9", "r8", "r3", "r4", "r2"]  # $0 ones: latest first
    for row in df.to_dict("records"):
        assert row["cost_usd"] == pytest.approx(reference[row["request_id"]]["cost"], rel=1e-12, abs=0)
    r1 = row_of(df, request_id="r1")
    assert r1 == {"request_id": "r1", "ts": at("10:05:10"), "service": "api", "endpoint": "/chat", "user_id": "alice",
                  "duration_ms": 10500.0, "calls": 2, "models": "gpt-4o, gpt-4o-mini", "input_tokens": 1500,
                  "output_tokens": 300, "cost_usd": pytest.approx(0.004635, rel=1e-12)}
    r4 = row_of(df, request_id="r4")  # no event: its first call's time, no duration
    assert r4["ts"] == at("11:30") and pd.isna(r4["duration_ms"]) and r4["endpoint"] == "/summarize"
    assert expensive_requests(con, since=SINCE, until=UNTIL, limit=2)["request_id"].tolist() == ["r1", "r6"]
    assert expensive_requests(con, since=SINCE, until=UNTIL, service="worker").empty


def test_request_calls(con):
    df = request_calls(con, request_id="r1")
    assert list(df.columns) == ["ts", "provider", "model", "input_tokens", "cached_input_tokens", "output_tokens",
                                "cache_hit", "latency_ms", "cost_usd", "saved_usd", "price_version"]
    assert df["model"].tolist() == ["gpt-4o", "gpt-4o-mini"]
    assert df["cost_usd"].tolist() == [0.0045, 0.000135]
    assert df["saved_usd"].tolist() == [0.0005, 0.0]
    assert df["cached_input_tokens"].tolist() == [400, 0]
    unpriced = request_calls(con, request_id="r4").iloc[0]
    assert pd.isna(unpriced["cost_usd"]) and pd.isna(unpriced["price_version"])
    assert request_calls(con, request_id="nope").empty


@pytest.fixture(scope="module")
def spread_store(tmp_path_factory):
    """300 /search and 60 /ask requests with 0-3 calls of random price each: percentiles to check."""
    rng = np.random.default_rng(7)
    calls, events = [], []
    for i in range(360):
        endpoint = "/search" if i < 300 else "/ask"
        ts = at("10:00") + timedelta(seconds=10 * i + 5)
        rid = f"q{i}"
        events.append(event(ts, endpoint, rid))
        for j in range(int(rng.integers(0, 4))):
            cost = str(Decimal(int(rng.integers(1, 10**7))) / 10**9)
            calls.append(call(ts - timedelta(seconds=0.1 * (j + 1)), cost=cost, request_id=rid, endpoint=endpoint))
    path = tmp_path_factory.mktemp("spread") / "perfdeck.duckdb"
    seed_cost(path, calls=calls, events=events)
    return path, calls, events


def test_request_percentiles_match_numpy(spread_store):
    path, calls, events = spread_store
    since, until = at("10:00"), at("11:00")
    with read(path) as con:
        df = request_costs(con, since=since, until=until)
    reference = per_request(calls, events, since, until)
    assert len(reference) == 360 and sum(r["calls"] == 0 for r in reference.values()) > 50
    assert_request_costs(df, reference)
    search = row_of(df, endpoint="/search")
    costs = [r["cost"] for r in reference.values() if r["endpoint"] == "/search"]
    assert search["p95_usd"] == pytest.approx(np.percentile(costs, 95, method="linear"), rel=1e-12)


# -- 8. users ----------------------------------------------------------------------------------------------------------------

def test_user_costs(con):
    df = user_costs(con, since=SINCE, until=UNTIL)
    assert list(df.columns) == ["user_id", "calls", "llm_requests", "spend_usd", "tokens", "saved_usd", "last_call"]
    expected = group(calls_in(), lambda c: c["user_id"] or "(anonymous)")
    assert sorted(df["user_id"]) == sorted(expected)
    assert df["spend_usd"].is_monotonic_decreasing
    assert df.iloc[0]["user_id"] == "(anonymous)"  # the worker's calls carry no user
    for user, rows in expected.items():
        row, fig = row_of(df, user_id=user), figures(rows)
        assert (row["calls"], row["llm_requests"]) == (fig["calls"], fig["llm_requests"])
        assert row["spend_usd"] == pytest.approx(fig["spend_usd"], rel=1e-12, abs=0)
        assert row["saved_usd"] == pytest.approx(fig["saved_usd"], rel=1e-12, abs=0)
        assert row["tokens"] == fig["input_tokens"] + fig["output_tokens"]
        assert row["last_call"] == max(c["ts"] for c in rows)
    bob = row_of(df, user_id="bob_1")
    assert (bob["calls"], bob["spend_usd"], bob["saved_usd"]) == (2, pytest.approx(0.001), pytest.approx(0.0035))
    assert user_costs(con, since=SINCE, until=UNTIL, limit=2)["user_id"].tolist() == df["user_id"].tolist()[:2]


@pytest.mark.parametrize("search,users", [
    ("b_1", ["bob_1"]),            # _ is a letter here, not "any character" (bobx1 stays out)
    ("L%", ["carol%"]),            # % too, and the match ignores case (carolyn stays out)
    ("ALICE", ["alice"]),
    ("carol", ["carolyn", "carol%"]),
    ("zed", []),
    ("", None),                    # empty: no filter
])
def test_user_search(con, search, users):
    df = user_costs(con, since=SINCE, until=UNTIL, search=search)
    if users is None:
        assert len(df) == len(user_costs(con, since=SINCE, until=UNTIL))
    else:
        assert df["user_id"].tolist() == users


# -- 9. caching ----------------------------------------------------------------------------------------------------------------

def test_cache_savings(con):
    df = cache_savings(con, since=SINCE, until=UNTIL)
    assert list(df.columns) == ["endpoint", "model", "calls", "cache_hit_calls", "hit_rate", "saved_result_cache_usd",
                                "cached_input_tokens", "saved_cache_read_usd", "spend_usd"]
    expected = group(calls_in(), lambda c: (c["endpoint"], c["model"]))
    assert len(df) == len(expected)
    totals = (df["saved_result_cache_usd"] + df["saved_cache_read_usd"]).tolist()
    assert totals == sorted(totals, reverse=True)
    for (endpoint, model), rows in expected.items():
        row = df[(df["endpoint"].isna() if endpoint is None else df["endpoint"] == endpoint) & (df["model"] == model)]
        assert len(row) == 1
        row = row.iloc[0]
        hits = [c for c in rows if c["cache_hit"]]
        assert (row["calls"], row["cache_hit_calls"]) == (len(rows), len(hits))
        assert row["hit_rate"] == pytest.approx(len(hits) / len(rows))
        assert row["saved_result_cache_usd"] == pytest.approx(usd(c["saved_usd"] for c in hits), rel=1e-12, abs=0)
        assert row["saved_cache_read_usd"] == pytest.approx(
            usd(c["saved_usd"] for c in rows if not c["cache_hit"]), rel=1e-12, abs=0)
        assert row["cached_input_tokens"] == sum(c["cached_input_tokens"] for c in rows)
        assert row["spend_usd"] == pytest.approx(usd(c["cost_usd"] for c in rows), rel=1e-12, abs=0)
    top = df.iloc[0]
    assert (top["endpoint"], top["model"], top["hit_rate"]) == ("/chat", "gpt-4o", 0.25)
    assert top["saved_result_cache_usd"] == pytest.approx(0.0035) and top["saved_cache_read_usd"] == pytest.approx(0.0005)


# -- 12. compute ------------------------------------------------------------------------------------------------------------

def test_compute_costs(con):
    df = compute_costs(con, since=SINCE, until=at("11:00"), usd_per_core_hour=RATE)
    assert list(df.columns) == ["time", "host", "core_seconds", "compute_usd"]
    assert df[["time", "host"]].values.tolist() == [[SINCE, "h1"], [SINCE, "h2"]]
    assert df["core_seconds"].tolist() == pytest.approx([96 + 6, 15])
    assert df["compute_usd"].tolist() == pytest.approx([102 * RATE / 3600, 15 * RATE / 3600])
    minutes = compute_costs(con, since=SINCE, until=at("11:00"), usd_per_core_hour=RATE, bucket_s=60)
    assert minutes[["time", "host"]].values.tolist() == [[at("10:05"), "h1"], [at("10:05"), "h2"], [at("10:06"), "h1"]]
    assert minutes["core_seconds"].tolist() == pytest.approx([96, 15, 6])
    assert compute_costs(con, since=at("11:00"), until=UNTIL, usd_per_core_hour=RATE).empty


# -- 13. export ------------------------------------------------------------------------------------------------------------------

EXPORT_FIGURES = ["calls", "llm_requests", "input_tokens", "output_tokens", "cached_input_tokens", "spend_usd", "saved_usd",
                  "unpriced_calls"]


@pytest.mark.parametrize("by,keys", [
    ("endpoint", ["service", "endpoint"]), ("model", ["provider", "model"]), ("user", ["user_id"]), ("day", ["day"]),
])
def test_cost_export(con, by, keys):
    since, until = at("00:00"), at("00:00", T + timedelta(days=2))
    df = cost_export(con, since=since, until=until, by=by)
    assert list(df.columns) == keys + EXPORT_FIGURES
    rows = calls_in(since, until)

    def key(c):
        # DuckDB's DATE comes back as a midnight datetime64 in the frame.
        return tuple(pd.Timestamp(c["ts"].date()) if k == "day" else c[k] for k in keys)

    expected = group(rows, key)
    assert len(df) == len(expected)
    got = {tuple(None if pd.isna(v) else v for v in r[:len(keys)]): r for r in df.itertuples(index=False)}
    for k, group_rows in expected.items():
        row = got[k]._asdict()
        fig = figures(group_rows)
        for col in EXPORT_FIGURES:
            assert row[col] == pytest.approx(fig[col], rel=1e-12, abs=0), (k, col)


def test_cost_export_spot_values_and_bad_grouping(con):
    by_day = cost_export(con, since=at("00:00"), until=at("00:00", T + timedelta(days=1)), by="day")
    assert by_day["day"].tolist() == [pd.Timestamp(T)]
    assert by_day.iloc[0]["calls"] == len(CALLS) and by_day.iloc[0]["unpriced_calls"] == 2
    assert by_day.iloc[0]["spend_usd"] == pytest.approx(0.016735 + 0.002, rel=1e-12)
    with pytest.raises(ValueError):
        cost_export(con, since=SINCE, until=UNTIL, by="week")


# -- 10, 11. days and budgets ---------------------------------------------------------------------------------------------------

def test_forecast_period_on_a_known_series():
    start, end = datetime(2026, 4, 1), datetime(2026, 5, 1)  # 30 days
    day10 = start + timedelta(days=10)
    # $30 spent in 10 days, $21 of it in the last 7 days: $3/day for the 20 days left.
    fc = forecast_period(30.0, start, end, day10, recent_spend=21.0, recent_hours=7 * 24)
    assert fc == {"spent": 30.0, "elapsed_share": pytest.approx(1 / 3), "burn_rate_per_day": pytest.approx(3.0),
                  "forecast": pytest.approx(90.0), "remaining_days": pytest.approx(20.0)}
    over = forecast_period(95.0, start, end, end, recent_spend=21.0, recent_hours=7 * 24)
    assert over["forecast"] == 95.0 and over["remaining_days"] == 0.0 and over["elapsed_share"] == 1.0
    after = forecast_period(95.0, start, end, end + timedelta(days=3), recent_spend=21.0, recent_hours=7 * 24)
    assert after["forecast"] == 95.0
    idle = forecast_period(5.0, start, end, day10, recent_spend=0.0, recent_hours=0.0)
    assert idle["burn_rate_per_day"] == 0.0 and idle["forecast"] == 5.0


NOW = datetime(2026, 3, 20, 12, 0)
# A store two days old: $0.10 an hour since 2026-03-18 12:00, up to 11:00 today.
HOURLY = [call(datetime(2026, 3, 18, 12) + timedelta(hours=h), cost="0.1", service="api" if h % 2 else "worker")
          for h in range(48)]


@pytest.fixture(scope="module")
def young_store(tmp_path_factory):
    path = tmp_path_factory.mktemp("young") / "perfdeck.duckdb"
    seed_cost(path, calls=HOURLY)
    return path


def test_budget_status_uses_the_data_the_store_has(young_store):
    with read(young_store) as con:
        df = budget_status(con, now=NOW, daily_budget=2.0, monthly_budget=50.0)
    assert list(df.columns) == ["period", "budget_usd", "spent_usd", "share_used", "elapsed_share", "burn_rate_per_day",
                                "forecast_usd", "forecast_share", "on_track", "period_start", "period_end"]
    today, month = df.to_dict("records")
    # Today: 12 calls since midnight; the last 3 hours hold 3 of them -> $2.40/day for the 12 hours left.
    assert today["period"] == "today"
    assert (today["period_start"], today["period_end"]) == (datetime(2026, 3, 20), datetime(2026, 3, 21))
    assert today["spent_usd"] == pytest.approx(1.2)
    assert today["share_used"] == pytest.approx(0.6)
    assert today["elapsed_share"] == pytest.approx(0.5)
    assert today["burn_rate_per_day"] == pytest.approx(2.4)
    assert today["forecast_usd"] == pytest.approx(1.2 + 2.4 * 0.5)
    assert today["forecast_share"] == pytest.approx(1.2)
    assert not today["on_track"]
    # This month: $4.80 over the 2 days of data (not 7) -> $2.40/day for the 11.5 days left.
    assert month["period"] == "this month"
    assert (month["period_start"], month["period_end"]) == (datetime(2026, 3, 1), datetime(2026, 4, 1))
    assert month["spent_usd"] == pytest.approx(4.8)
    assert month["burn_rate_per_day"] == pytest.approx(4.8 / 2)
    assert month["forecast_usd"] == pytest.approx(4.8 + 2.4 * 11.5)
    assert month["share_used"] == pytest.approx(4.8 / 50)
    assert bool(month["on_track"])


def test_budget_status_options(young_store):
    with read(young_store) as con:
        assert budget_status(con, now=NOW).empty
        assert list(budget_status(con, now=NOW).columns)[:3] == ["period", "budget_usd", "spent_usd"]
        only_month = budget_status(con, now=NOW, monthly_budget=10.0, service="api")
        with pytest.raises(ValueError):
            budget_status(con, now=NOW, daily_budget=0.0)
    assert only_month["period"].tolist() == ["this month"]
    api = [c for c in HOURLY if c["service"] == "api"]
    # The api's first call is at 13:00 on the 18th: 47 hours of data.
    assert only_month.iloc[0]["spent_usd"] == pytest.approx(0.1 * len(api))
    assert only_month.iloc[0]["burn_rate_per_day"] == pytest.approx(0.1 * len(api) / 47 * 24)


def test_budget_status_long_history_uses_seven_days(tmp_path):
    path = tmp_path / "perfdeck.duckdb"
    # $1 a day at noon since February; the last 7 days before March 20 12:00 hold 7 of them.
    daily = [call(datetime(2026, 2, 1, 12) + timedelta(days=d), cost="1") for d in range(47)]
    seed_cost(path, calls=daily)
    with read(path) as con:
        month = budget_status(con, now=NOW, monthly_budget=100.0).iloc[0]
    assert month["spent_usd"] == pytest.approx(19.0)  # March 1..19 (the 20th's call is at noon, not before now)
    assert month["burn_rate_per_day"] == pytest.approx(1.0)
    assert month["forecast_usd"] == pytest.approx(19.0 + 11.5)


def test_daily_spend(young_store):
    with read(young_store) as con:
        df = daily_spend(con, since=datetime(2026, 3, 17, 6), until=datetime(2026, 3, 22))
        api = daily_spend(con, since=datetime(2026, 3, 17, 6), until=datetime(2026, 3, 22), service="api")
        nothing = daily_spend(con, since=datetime(2026, 3, 22), until=datetime(2026, 3, 22))
    assert list(df.columns) == ["day", "spend_usd", "calls"]
    days = pd.date_range("2026-03-17", "2026-03-21").date.tolist()  # until at midnight: the 22nd is not in
    assert df["day"].dt.date.tolist() == days
    by_day = group(HOURLY, lambda c: c["ts"].date())
    assert df["calls"].tolist() == [len(by_day.get(d, [])) for d in days] == [0, 12, 24, 12, 0]
    assert df["spend_usd"].tolist() == pytest.approx([usd(c["cost_usd"] for c in by_day.get(d, [])) for d in days])
    assert df["spend_usd"].dtype == np.float64
    assert api["calls"].tolist() == [0, 6, 12, 6, 0]
    assert nothing.empty
