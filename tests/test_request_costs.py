"""Per-request LLM cost kept at ingest (collectors.store.request_costs), through the real write path:
SDK batches encoded, decoded, priced by the collector's price book and written by write_batches, with a
request's calls and its event in any order and any batches. The figures must equal what the
query-time join of raw events and calls gives on the same store (request_costs with a $0 core-hour
takes that path), and the rows must not depend on how the events were split or ordered."""
from __future__ import annotations

import random
import time
from decimal import Decimal

import duckdb
import pandas as pd
import pytest
from helpers import ingest_payloads
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from collectors.pricing import PriceBook
from collectors.sdk.batch import encode
from collectors.store import migrate, read, request_costs, write
from dashboard.queries import expensive_requests, request_cost_overall
from dashboard.queries import request_costs as request_cost_figures

NOW = float(int(time.time()) // 3600 * 3600 - 3600)     # the start of the hour before this one
MODELS = ("gpt-4o-mini", "gpt-4o", "acme-unknown-1")      # the last one has no price: its calls cost nothing


def workload(seed: int, n: int = 120) -> tuple[list, list]:
    """(request events, LLM calls) of `n` requests over 40 minutes: most with an event, some with calls
    only, calls up to 2 s before their event, some arriving minutes late; a few events without an id, a
    few calls without an endpoint (a request known only from such calls has none)."""
    rng = random.Random(seed)
    events, calls = [], []
    for i in range(n):
        ts = NOW + rng.uniform(0, 2400)
        endpoint = rng.choice(("/chat", "/search", "/summarize"))
        rid = f"req-{seed}-{i}"
        if rng.random() < 0.9:
            events.append((ts, endpoint, rng.uniform(5, 900), 200, "GET", rid if rng.random() < 0.95 else None, None))
        for j in range(rng.choice((0, 0, 1, 1, 2, 3))):
            calls.append((ts - rng.uniform(0, 2), "openai", rng.choice(MODELS), rng.randint(10, 4000),
                          rng.randint(1, 800), 0, rid, endpoint if rng.random() < 0.85 else None, f"u{i % 7}",
                          rng.random() < 0.1, 500.0, 0))
    return events, calls


def batches(events: list, calls: list, rng: random.Random, pieces: int) -> list[bytes]:
    """The events and calls shuffled and cut into `pieces` SDK batches of either kind or both."""
    items = [("requests", e) for e in events] + [("llm", c) for c in calls]
    rng.shuffle(items)
    cuts = sorted(rng.sample(range(1, len(items)), min(pieces - 1, len(items) - 1)))
    out = []
    for lo, hi in zip([0, *cuts], [*cuts, len(items)]):
        part = items[lo:hi]
        out.append(encode(service="api", host="web-1", pid=1, sent_at=NOW,
                          requests=[e for kind, e in part if kind == "requests"],
                          llm=[c for kind, c in part if kind == "llm"])[1])
    return out


def ingest(con: duckdb.DuckDBPyConnection, payloads: list[bytes], per_transaction: int) -> None:
    ingest_payloads(con, payloads, per_transaction, now=NOW + 3600)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    path = tmp_path_factory.mktemp("request-costs") / "perfdeck.duckdb"
    events, calls = workload(1, 400)
    with write(path) as con:
        migrate(con)
    with duckdb.connect(str(path)) as con:
        ingest(con, batches(events, calls, random.Random(2), 25), per_transaction=3)
    return path


# Whole minutes: requests are counted from the per-minute rollups, like every request count on the pages.
RANGES = [(0, 3600), (0, 1200), (1200, 2400), (600, 720)]


@pytest.mark.parametrize(("lo", "hi"), RANGES)
def test_figures_equal_the_query_time_join(store, lo, hi):
    since, until = pd.Timestamp(NOW + lo, unit="s").to_pydatetime(), pd.Timestamp(NOW + hi, unit="s").to_pydatetime()
    with read(store) as con:
        kept = request_cost_figures(con, since=since, until=until)
        joined = request_cost_figures(con, since=since, until=until, usd_per_core_hour=0.0)
        overall = request_cost_overall(con, since=since, until=until)
        overall_joined = request_cost_overall(con, since=since, until=until, usd_per_core_hour=0.0)
    assert len(kept) >= 1 and kept["llm_requests"].sum() >= 1
    pd.testing.assert_frame_equal(kept, joined, check_dtype=False, rtol=1e-9)
    pd.testing.assert_frame_equal(overall, overall_joined, check_dtype=False, rtol=1e-9)


def test_expensive_requests_are_the_costliest_with_their_calls(store):
    since, until = pd.Timestamp(NOW, unit="s").to_pydatetime(), pd.Timestamp(NOW + 3600, unit="s").to_pydatetime()
    with read(store) as con:
        top = expensive_requests(con, since=since, until=until, limit=10)
        sums = con.execute("""
            SELECT request_id, count(*), sum(cost_usd), list_sort(list_distinct(list(model)))
            FROM llm_calls WHERE request_id IN (SELECT unnest(?)) GROUP BY request_id
        """, [top["request_id"].tolist()]).fetchall()
        cheaper = con.execute("""
            SELECT max(total) FROM (SELECT sum(coalesce(cost_usd, 0)) AS total FROM llm_calls
                                    WHERE request_id IS NOT NULL AND request_id NOT IN (SELECT unnest(?))
                                    GROUP BY request_id)
        """, [top["request_id"].tolist()]).fetchone()[0]
    assert top["cost_usd"].is_monotonic_decreasing
    by_id = {rid: (n, float(total or 0), ", ".join(models)) for rid, n, total, models in sums}
    for row in top.to_dict("records"):
        assert (row["calls"], row["cost_usd"], row["models"]) == pytest.approx(by_id[row["request_id"]])
    assert top["cost_usd"].min() >= float(cheaper)


def rows(con: duckdb.DuckDBPyConnection) -> list[tuple]:
    return con.execute("""
        SELECT request_id, ts, service, endpoint, host, user_id, duration_ms, calls, models, input_tokens,
               output_tokens, llm_usd, has_event
        FROM llm_requests ORDER BY request_id
    """).fetchall()


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(seed=st.integers(0, 10**6), pieces=st.integers(1, 12), per_transaction=st.integers(1, 4))
def test_rows_do_not_depend_on_how_events_arrive(seed, pieces, per_transaction):
    events, calls = workload(seed, 30)
    with duckdb.connect() as split, duckdb.connect() as whole:
        for con in (split, whole):
            migrate(con)
        ingest(split, batches(events, calls, random.Random(seed), pieces), per_transaction)
        ingest(whole, batches(events, calls, random.Random(seed), 1), 1)
        assert rows(split) == rows(whole)
        # and the rows are what rebuilding them from the stored calls and events gives
        kept = rows(split)
        request_costs.rebuild(split)
        assert rows(split) == kept


def test_repriced_calls_refresh_their_requests(store, tmp_path):
    path = tmp_path / "perfdeck.duckdb"
    events, calls = workload(5, 40)
    with write(path) as con:
        migrate(con)
    with duckdb.connect(str(path)) as con:
        ingest(con, batches(events, calls, random.Random(5), 4), 2)
        rid = con.execute("SELECT request_id FROM llm_requests WHERE calls > 0 ORDER BY llm_usd DESC LIMIT 1").fetchone()[0]
        con.execute("UPDATE llm_calls SET cost_usd = 1.5 WHERE request_id = ?", [rid])
        request_costs.refresh(con, [rid])
        n, usd = con.execute("SELECT calls, llm_usd FROM llm_requests WHERE request_id = ?", [rid]).fetchone()
    assert usd == Decimal("1.5") * n


def test_reprice_moves_the_requests_with_their_calls(tmp_path):
    """`perfdeck reprice` with a price for the unknown model: its requests' costs follow their calls."""
    from collectors.pricing import apply_reprice, plan_reprice

    path, prices = tmp_path / "perfdeck.duckdb", tmp_path / "prices.toml"
    events, calls = workload(9, 60)
    with write(path) as con:
        migrate(con)
    with duckdb.connect(str(path)) as con:
        ingest(con, batches(events, calls, random.Random(9), 5), 2)
        before = con.execute("SELECT sum(llm_usd) FROM llm_requests").fetchone()[0]
    prices.write_text('[models."acme-unknown-1"]\ninput = 1.0\noutput = 2.0\n')
    with write(path) as con:
        plan = plan_reprice(con, PriceBook.load(prices), since=pd.Timestamp(NOW - 60, unit="s").to_pydatetime(),
                            until=pd.Timestamp(NOW + 3600, unit="s").to_pydatetime())
        assert plan.changed > 0
        apply_reprice(con, plan)
        after = rows(con)
        calls_total = con.execute("SELECT sum(cost_usd) FROM llm_calls WHERE request_id IS NOT NULL").fetchone()[0]
        request_costs.rebuild(con)
        assert rows(con) == after
    assert sum(r[11] for r in after) == calls_total > before


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(costs=st.lists(st.one_of(st.just(Decimal(0)), st.decimals("0.000001", "5", places=6),
                                st.sampled_from([Decimal("0.0021"), Decimal("0.0022")])), min_size=1, max_size=300),
       zeros=st.integers(0, 400))
def test_percentiles_are_quantile_cont_over_every_request(costs, zeros):
    """Costs from one tie to many buckets, among requests that made no call (counted by the rollups):
    p50 and p95 equal quantile_cont over all of them, $0 for those without a call."""
    import numpy as np

    start = pd.Timestamp(NOW, unit="s").to_pydatetime()
    with duckdb.connect() as con:
        migrate(con)
        con.execute("INSERT INTO request_rollup VALUES (?, 'api', '/chat', ?, 0, 0, 0)", [start, zeros + len(costs)])
        con.executemany("INSERT INTO llm_requests VALUES (?, ?, ?, 'api', '/chat', 'h', NULL, 1, 1, ['m'], 1, 1, ?, true)",
                        [[f"r{i}", start, start, c] for i, c in enumerate(costs)])
        got = request_cost_figures(con, since=start, until=start + pd.Timedelta(minutes=1)).iloc[0]
    everything = [0.0] * zeros + [float(c) for c in costs]
    assert got.requests == len(everything) and got.llm_requests == len(costs)
    assert got.p50_usd == pytest.approx(np.quantile(everything, 0.5), rel=1e-9, abs=1e-12)
    assert got.p95_usd == pytest.approx(np.quantile(everything, 0.95), rel=1e-9, abs=1e-12)
