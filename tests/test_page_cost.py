"""AppTest of the Cost page on a store filled through the real path: SDK → spool → collector (which
prices each call) → DuckDB."""
from __future__ import annotations

import json
import time
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
import streamlit as st
from genai_prices import Usage, calc_price
from helpers import run_app, shown_text

from collectors import formatting as fmt
from collectors import sdk
from collectors.daemon import Collector
from collectors.store import migrate, write

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "dashboard" / "app_pages" / "cost.py")
SUBHEADERS = ["Where the money goes", "Cost per request", "What caching saved", "Budgets", "Users"]



class Clock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def price(model, provider, inp, out, cached=0) -> Decimal:
    return calc_price(Usage(input_tokens=inp, output_tokens=out, cache_read_tokens=cached), model,
                      provider_id=provider, genai_request_timestamp=datetime.now(UTC)).total_price


@pytest.fixture
def seeded(tmp_path, monkeypatch, spool):
    """Two hours ago: 30 /chat requests (gpt-4o, every third answered from the app's cache, one in
    five also asking gpt-4o-mini), 10 /search requests without LLM calls, 4 /summarize jobs on an
    unknown model."""
    path = tmp_path / "perfdeck.duckdb"
    clock = Clock(time.time() - 7200)
    sdk.configure(service="api", transport=f"spool:{spool}", flush_interval=60, clock=clock)
    expected = Decimal(0)
    for i in range(30):
        clock.now += 60
        rid = f"chat-{i:02d}"
        hit = i % 3 == 0
        sdk.record_llm_call("gpt-4o", 2000 + 10 * i, 300, provider="openai", cached_input_tokens=1024,
                            request_id=rid, endpoint="/chat", user=f"user_{i % 4}", cache_hit=hit, latency_ms=900)
        expected += 0 if hit else price("gpt-4o", "openai", 2000 + 10 * i, 300, 1024)
        if i % 5 == 0:
            sdk.record_llm_call("gpt-4o-mini", 500, 20, provider="openai", request_id=rid, endpoint="/chat",
                                user=f"user_{i % 4}", latency_ms=300)
            expected += price("gpt-4o-mini", "openai", 500, 20)
        sdk.record_request("/chat", 1200.0, request_id=rid, user=f"user_{i % 4}")
    for i in range(10):
        sdk.record_request("/search", 40.0, request_id=f"search-{i}")
    for i in range(4):
        sdk.record_llm_call("acme-local-7b", 800, 100, request_id=f"job-{i}", endpoint="job:summarize")
    assert sdk.flush(5)
    Collector(path, spool_dir=spool).run_once()
    monkeypatch.setenv("PERFDECK_DB", str(path))
    monkeypatch.setenv("PERFDECK_CONFIG", str(tmp_path / "perfdeck.toml"))      # none: defaults and env
    monkeypatch.setenv("PERFDECK_DAILY_BUDGET", "1.5")
    monkeypatch.setenv("PERFDECK_MONTHLY_BUDGET", "20")
    return expected


def metric(at, label):
    return next(m for m in at.metric if m.label == label)


def test_cost_page_answers_the_four_questions(seeded):
    at = run_app(PAGE)
    assert at.title[0].value == "Cost"
    assert [h.value for h in at.subheader] == SUBHEADERS
    # spend: exactly what genai-prices says, cache hits not paid
    assert metric(at, "LLM spend").value == fmt.money(seeded)
    # unpriced calls are said, with how to price them
    [warning] = at.warning
    assert "4 calls (3,600 tokens) have no price" in warning.value and "acme-local-7b (4)" in shown_text(warning.value)
    assert "perfdeck reprice" in warning.value
    # which endpoint and model drive spend
    models = next(d.value for d in at.dataframe if "price_version" in d.value)
    assert models["model"].tolist()[:2] == ["gpt-4o", "gpt-4o-mini"]
    assert models.set_index("model").loc["acme-local-7b", "unpriced_calls"] == 4
    # what one request costs at p95: /chat only (/search never calls an LLM), the target drawn
    per_request = next(d.value for d in at.dataframe if "p95_usd" in d.value)
    assert per_request["endpoint"].tolist()[0] == "/chat"
    assert "/search" not in per_request["endpoint"].tolist()
    assert per_request.set_index("endpoint").loc["/chat", "requests"] == 30
    p95 = metric(at, "p95 per request")
    assert float(p95.value[1:]) == pytest.approx(per_request.set_index("endpoint").loc["/chat", "p95_usd"], rel=1e-3)
    assert p95.delta == "within target"
    # what caching saved; a model no price list knows saved an unknown amount ("—"), as its spend is unknown
    assert metric(at, "Calls answered from cache").value == "10"
    saved = next(d.value for d in at.dataframe if "saved_result_cache_usd" in d.value)
    acme = saved[saved["model"] == "acme-local-7b"]
    assert not acme.empty and (acme[["saved_result_cache_usd", "saved_cache_read_usd", "spend_usd"]] == "—").all(axis=None)
    assert (saved[saved["model"] != "acme-local-7b"]["saved_result_cache_usd"] != "—").all()
    # the spend chart names its bar's span, and says which models have no bars rather than list them bare
    spend = json.loads(at.get("plotly_chart")[0].proto.spec)["layout"]
    assert spend["yaxis"]["title"]["text"] == "spend per 5 min"                # the last 24 hours: 5-minute bars
    assert spend["title"]["subtitle"]["text"] == "No bars (no priced spend): acme-local-7b"
    # whether the month stays in budget
    assert metric(at, "Month forecast").value.startswith("$")
    assert any("Today" in m.value for m in at.markdown) and any("This month" in m.value for m in at.markdown)
    assert {b.key for b in at.download_button} >= {
        "csv-cost-models", "csv-cost-per-request", "csv-cost-expensive-requests", "csv-cost-savings",
        "csv-cost-users", "csv-cost-by-model", "csv-cost-per-day", "csv-budgets"}
    assert not at.error


def test_split_by_endpoint_user_search_and_request_drill_down(seeded):
    at = run_app(PAGE)
    at.segmented_control(key="cost_split").set_value("Endpoint").run()
    assert not at.exception
    assert "csv-cost-by-endpoint" in {b.key for b in at.download_button}

    at.text_input(key="cost_user_search").input("user_1").run()
    users = next(d.value for d in at.dataframe if "user_id" in d.value and "last_call" in d.value)
    assert users["user_id"].tolist() == ["user_1"]

    expensive = next(d.value for d in at.dataframe if "models" in d.value)
    top = expensive["request_id"].iloc[0]
    at.selectbox(key="cost_request").select(top).run()
    calls = next(d.value for d in at.dataframe if "cache_hit" in d.value and "latency_ms" in d.value)
    assert len(calls) >= 1 and not at.exception


def test_without_budgets_the_page_says_how_to_set_them(seeded, monkeypatch):
    monkeypatch.delenv("PERFDECK_DAILY_BUDGET")
    monkeypatch.delenv("PERFDECK_MONTHLY_BUDGET")
    at = run_app(PAGE)
    assert any("No budget is set" in i.value for i in at.info)
    assert not [m for m in at.metric if m.label == "Month forecast"]


def test_bad_cost_settings_are_a_clear_error(seeded, monkeypatch):
    monkeypatch.setenv("PERFDECK_DAILY_BUDGET", "lots")
    at = run_app(PAGE)
    assert "daily_budget must be a number" in shown_text(at.error[0].value)


def test_the_target_per_request_is_the_cost_threshold(seeded, monkeypatch):
    """One level in one place: the chart's target is the one the cost_per_query_usd check uses."""
    monkeypatch.setenv("PERFDECK_COST_PER_QUERY_USD_TARGET", "0.05")
    at = run_app(PAGE)
    assert any("target $0.05" in (m.help or "") + str(m.value) + str(m.delta) for m in at.metric), \
        [(m.label, m.value, m.delta, m.help) for m in at.metric]
    monkeypatch.setenv("PERFDECK_TARGET_PER_QUERY", "0.2")     # the old setting says where it went
    st.cache_data.clear()                                      # the page keeps its settings a minute
    at = run_app(PAGE)
    assert "moved to the health thresholds" in shown_text(at.error[0].value)


def test_empty_store_says_how_to_record_calls(tmp_path, monkeypatch):
    path = tmp_path / "perfdeck.duckdb"
    with write(path) as con:
        migrate(con)
    monkeypatch.setenv("PERFDECK_DB", str(path))
    at = run_app(PAGE)
    assert any("record_llm_call" in i.value for i in at.info)


def test_calls_stored_unpriced_of_a_model_the_price_list_knows_only_need_repricing(tmp_path, monkeypatch):
    """Calls written without the collector's pricing (or before a price existed): the note says the
    price list knows their model now and asks for `perfdeck reprice`, not for a price of its own."""
    from datetime import timedelta

    from seed_cost import call, seed_cost

    now = datetime.now(UTC).replace(tzinfo=None)
    path = tmp_path / "perfdeck.duckdb"
    seed_cost(path, calls=[call(now - timedelta(minutes=i + 1), "gpt-4o", cost=None, request_id=f"r{i}") for i in range(3)]
              + [call(now - timedelta(minutes=9), "acme-local-7b", provider=None, cost=None)])
    monkeypatch.setenv("PERFDECK_DB", str(path))
    monkeypatch.setenv("PERFDECK_CONFIG", str(tmp_path / "perfdeck.toml"))
    st.cache_data.clear()
    at = run_app(PAGE)
    [warning] = at.warning
    text = shown_text(warning.value)
    assert "4 calls (4,400 tokens) have no price" in warning.value
    assert "The price list knows gpt-4o (3) now" in text
    assert "No price list knows acme-local-7b (1)" in text and "gpt-4o (3). Give" not in text
    assert '[models."acme-local-7b"]' in warning.value and "perfdeck reprice --since 30d" in warning.value
