"""Cost: what LLM calls cost, which endpoint and model drive it, what one request costs, what caching
saved, and whether the budgets hold."""
from __future__ import annotations

import json

import pandas as pd
import streamlit as st

import dashboard.queries as q
from collectors import config
from collectors.formatting import money, percent
from collectors.health.settings import configured_thresholds
from collectors.pricing import PriceBook
from collectors.store import db_path, utcnow
from dashboard import charts, columns, widgets
from dashboard.queries.storage import cli_command

st.title("Cost")
filters = widgets.sidebar_filters()

TEXT, COUNT, USD, WHEN = columns.text, columns.count, columns.usd, columns.when
COLUMNS = {
    "service": TEXT("Service"), "endpoint": TEXT("Endpoint"), "provider": TEXT("Provider"), "model": TEXT("Model"),
    "requests": COUNT("Requests"), "llm_requests": COUNT("With LLM calls", help="Requests that made at least one LLM call"),
    "calls": COUNT("Calls"), "cache_hit_calls": COUNT("From cache", help="Calls answered by the app's own cache"),
    "calls_per_request": columns.decimal("Calls / request"),
    # One request's cost is a fraction of a cent: six decimals, so a p50 never reads $0.0000.
    "mean_usd": USD("Mean", decimals=6), "p50_usd": USD("p50", decimals=6), "p95_usd": USD("p95", decimals=6),
    "max_usd": USD("Max", decimals=6),
    "total_usd": USD("Total", decimals=2),
    "compute_usd": USD("Compute", decimals=6, help="CPU of the watched processes × the configured $/core-hour"),
    "spend_usd": USD("Spend", help="Priced calls only: empty when none was priced"), "saved_usd": USD("Saved"),
    "cost_usd": USD("Cost", decimals=6), "cost_per_call_usd": USD("Per call", decimals=6),
    "input_tokens": COUNT("Input tokens"), "output_tokens": COUNT("Output tokens"),
    "cached_input_tokens": COUNT("Cached input", help="Input read from the provider's prompt cache"),
    "cache_write_tokens": COUNT("Cache writes"), "tokens": COUNT("Tokens"),
    "avg_latency_ms": columns.ms("Mean latency (ms)", decimals=0),
    "output_tokens_per_s": columns.decimal("Output tokens / s", decimals=0),
    "price_version": TEXT("Priced with"), "unpriced_calls": COUNT("Unpriced"),
    "user_id": TEXT("User"), "last_call": WHEN("Last call (UTC)"),
    "ts": WHEN("Time (UTC)", seconds=True), "request_id": TEXT("Request"),
    "duration_ms": columns.duration_ms("Duration"), "models": TEXT("Models"),
    "latency_ms": columns.ms("Latency (ms)", decimals=0), "cache_hit": st.column_config.CheckboxColumn("From cache"),
    "hit_rate": columns.percent("Hit rate"),
    "saved_result_cache_usd": USD("Saved: answered from cache"), "saved_cache_read_usd": USD("Saved: prompt-cache reads"),
    "first_seen": WHEN("First seen (UTC)"), "last_seen": WHEN("Last seen (UTC)"),
}
HOW_TO = ("LLM calls are recorded by `sdk.record_llm_call(...)` or the OpenAI / Anthropic integrations "
          "(`collectors.integrations.llm`), and priced as the collector ingests them.")
GROUPINGS = {"Model": "model", "Endpoint": "endpoint", "Service": "service"}


# Wide tables lead with what they are about and the money, and show what fits the page; the CSV has every column.
MODEL_ORDER = ["model", "provider", "calls", "unpriced_calls", "spend_usd", "saved_usd", "cost_per_call_usd",
               "cache_hit_calls", "input_tokens", "output_tokens", "avg_latency_ms"]
MODEL_MORE = "cached input, cache writes, output tokens / s and the price list used"
EXPENSIVE_ORDER = ["ts", "endpoint", "cost_usd", "calls", "models", "duration_ms", "input_tokens", "output_tokens",
                   "user_id", "request_id"]


def shown(df: pd.DataFrame) -> dict:
    return {c: COLUMNS[c] for c in df.columns if c in COLUMNS}


@st.cache_data(ttl=60, show_spinner=False)
def settings() -> config.CostSettings:
    return config.cost_settings(config.load())


@st.cache_resource(ttl=60, show_spinner=False)
def price_book(prices_file) -> PriceBook:
    return PriceBook.load(prices_file)


def priced_now(book: PriceBook, provider, model) -> bool:
    """Whether the price list (with the overrides) now knows `model`: its calls were stored unpriced
    before it did (or by a writer that does not price), and only need `perfdeck reprice`."""
    return book.price(model=str(model), provider=None if pd.isna(provider) else str(provider), ts=utcnow(),
                      input_tokens=1, output_tokens=1) is not None


def unpriced_note(totals: pd.Series, unpriced: pd.DataFrame, prices_file) -> None:
    if not totals.unpriced_calls:
        return
    tokens = int(unpriced["input_tokens"].sum() + unpriced["output_tokens"].sum())
    command = cli_command(db_path(), "reprice --since 30d")
    known = unpriced.apply(lambda r: priced_now(price_book(prices_file), r.provider, r.model), axis=1).astype(bool)
    unknown = unpriced[~known]

    def listed(rows: pd.DataFrame) -> str:
        return ", ".join(f"{widgets.as_text(m)} ({n:,})" for m, n in rows[["model", "calls"]].itertuples(index=False))

    why = []
    if known.any():
        why.append(f"The price list knows {listed(unpriced[known])} now: their calls were stored before it did, "
                   "so pricing them again is all they need.")
    if not unknown.empty:
        # A TOML basic string (json's escapes are TOML's); no backtick, so the name cannot close the fence.
        toml_name = json.dumps(str(unknown.iloc[0].model)).replace("`", "\\u0060")
        why.append(f"No price list knows {listed(unknown)}. Give them a price in `{prices_file}` ($ per million "
                   f"tokens; the collector picks it up as it is saved):\n\n"
                   f"```toml\n[models.{toml_name}]\ninput = 0.20\noutput = 0.40\n```\n")
    st.warning(
        f"**{totals.unpriced_calls:,} calls ({tokens:,} tokens) have no price** and are not in the spend "
        f"below. {' '.join(why)} Then price the calls already recorded:\n\n"
        f"```\n{command}\n```", icon=":material/price_change:")


def headline(t: pd.Series, overall: pd.Series, budget: pd.DataFrame, target: float) -> None:
    month = budget[budget["period"] == "this month"]
    p95 = overall.p95_usd if overall.requests else None
    cards = [
        ("LLM spend", money(t.spend_usd), f"{t.calls:,} calls, {t.unpriced_calls:,} unpriced", None),
        ("p95 per request", money(p95),
         f"Over the {overall.requests:,} requests of the endpoints that call an LLM: mean "
         f"{money(overall.mean_usd)}, p50 {money(overall.p50_usd)}, max {money(overall.max_usd)}; "
         f"target {money(target)}",
         None if p95 is None else "over target" if p95 > target else "within target"),
        ("Saved by caching", money(t.saved_result_cache_usd + t.saved_cache_read_usd),
         f"{t.cache_hit_calls:,} calls answered from cache ({money(t.saved_result_cache_usd)}) and prompt-cache "
         f"reads ({money(t.saved_cache_read_usd)})", None),
        ("Tokens", f"{t.input_tokens + t.output_tokens:,.0f}",
         f"{t.input_tokens:,} in ({t.cached_input_tokens:,} cached), {t.output_tokens:,} out; "
         f"{t.calls_per_request:.2f} calls per request", None),
    ]
    if not month.empty:
        m = month.iloc[0]
        cards.append(("Month forecast", money(m.forecast_usd), f"{money(m.spent_usd)} spent of a "
                      f"{money(m.budget_usd)} budget; burning {money(m.burn_rate_per_day)} a day",
                      "within budget" if m.on_track else "over budget"))
    for col, (label, value, help_, verdict) in zip(st.columns(len(cards)), cards):
        colour = "normal" if verdict in ("within target", "within budget") else "inverse" if verdict else "off"
        col.metric(label, value, verdict, help=help_, border=True, delta_arrow="off", delta_color=colour)


def budgets(budget: pd.DataFrame, cost: config.CostSettings, service: str | None) -> None:
    st.subheader("Budgets")
    if budget.empty:
        st.info("No budget is set. Add `daily_budget` and `monthly_budget` (USD) under `[cost]` in "
                "perfdeck.toml, or set `PERFDECK_DAILY_BUDGET` / `PERFDECK_MONTHLY_BUDGET`.", icon=":material/info:")
    for col, b in zip(st.columns(max(len(budget), 1)), budget.itertuples(index=False)):
        verdict = "on track" if b.on_track else "forecast over budget"
        col.markdown(f"**{b.period.capitalize()}**: {money(b.spent_usd)} of {money(b.budget_usd)} "
                     f"({percent(b.share_used)}) · {verdict}")
        col.progress(min(float(b.share_used), 1.0))
        col.caption(f"Burn rate {money(b.burn_rate_per_day)} / day · forecast {money(b.forecast_usd)} "
                    f"({percent(b.forecast_share)} of budget) by {b.period_end:%Y-%m-%d %H:%M} UTC")
    now = utcnow()
    month = widgets.load({"daily": q.daily_spend, "deploys": q.deploys},
                         since=now.replace(day=1, hour=0, minute=0, second=0, microsecond=0),
                         until=now.replace(second=0, microsecond=0), service=service)
    if month is None:
        return
    daily = month["daily"]
    lines = ((f"daily budget {money(cost.daily_budget)}", cost.daily_budget),) if cost.daily_budget else ()
    fig = widgets.shared(charts.stacked_bars, daily.assign(time=daily["day"], stack="spend"), y="spend_usd",
                         stack="stack", title="Spend per day this month (UTC)", y_title="spend", y_format="usd",
                         hlines=lines, height=280, deploys=month["deploys"])
    widgets.chart(fig, daily, "cost-per-day")
    if not budget.empty:
        widgets.csv_download(budget, "budgets", label="Download budgets (CSV)")


def spend(scope: dict, models: pd.DataFrame, x_range, deploys: pd.DataFrame) -> None:
    st.subheader("Where the money goes")
    label = st.segmented_control("Split by", list(GROUPINGS), default="Model", key="cost_split") or "Model"
    over = widgets.load({"over": q.cost_over_time}, **scope, by=GROUPINGS[label])
    if over is None:
        return
    fig = widgets.shared(charts.stacked_bars, over["over"], y="cost_usd", stack="key",
                         title=f"LLM spend by {label.lower()}", y_title=f"spend per {per_bucket(scope['bucket_s'])}",
                         y_format="usd", x_range=x_range, deploys=deploys, empty="no priced spend")
    widgets.chart(fig, over["over"], f"cost-by-{GROUPINGS[label]}")
    st.markdown("**Models**: calls, tokens and spend")
    widgets.table(models, "cost-models", column_config=shown(models), column_order=MODEL_ORDER)
    st.caption(f"The CSV also has {MODEL_MORE}.")


def per_bucket(seconds: int) -> str:
    """A bar's time span in words: 'minute', '5 min', 'hour', '6 hours', 'day'."""
    for unit, size, one in (("days", 86400, "day"), ("hours", 3600, "hour"), ("min", 60, "minute")):
        if seconds >= size and seconds % size == 0:
            return one if seconds == size else f"{seconds // size} {unit}"
    return f"{seconds} s"


def per_request(requests: pd.DataFrame, expensive: pd.DataFrame, target: float, compute: bool) -> None:
    st.subheader("Cost per request")
    st.caption("Each request's LLM calls joined to its request event by request id"
               + (", plus its share of the service's CPU" if compute else "")
               + ". Requests that called no LLM count as $0.")
    if requests.empty:
        st.info("No request with a request id called an LLM in this range.", icon=":material/info:")
        return
    widgets.table(requests, "cost-per-request", column_config=shown(requests))
    fig = widgets.shared(charts.bars, requests.assign(label=requests["endpoint"] + " · " + requests["service"]),
                         x="p95_usd", y="label", title="p95 cost per request", x_title="USD per request",
                         x_format="usd", vlines=(("target", target),))
    widgets.chart(fig, None, "cost-p95")
    st.markdown("**Most expensive requests**")
    widgets.table(expensive, "cost-expensive-requests", column_config=shown(expensive), column_order=EXPENSIVE_ORDER)
    ids = expensive["request_id"].tolist()
    pick = st.selectbox("Calls of request", ids, index=None, placeholder="Pick a request to see its LLM calls",
                        key="cost_request")
    if pick:
        calls = widgets.load({"calls": q.request_calls}, request_id=pick)
        if calls is not None:
            widgets.table(calls["calls"], "cost-request-calls", column_config=shown(calls["calls"]))


def users(scope: dict) -> None:
    st.subheader("Users")
    search = st.text_input("Find a user", key="cost_user_search", placeholder="part of a user id")
    data = widgets.load({"users": q.user_costs}, **scope, search=search.strip() or None)
    if data is not None:
        widgets.table(data["users"], "cost-users", column_config=shown(data["users"]))


def savings(t: pd.Series, saved: pd.DataFrame, models: pd.DataFrame) -> None:
    st.subheader("What caching saved")
    a, b, c = st.columns(3)
    a.metric("Calls answered from cache", f"{t.cache_hit_calls:,}", border=True,
             help="LLM calls the app answered from its own result cache: not paid for")
    b.metric("Their price, not paid", money(t.saved_result_cache_usd), border=True)
    c.metric("Prompt-cache reads", money(t.saved_cache_read_usd), border=True,
             help=f"{t.cached_input_tokens:,} input tokens billed at the cache-read rate instead of the input rate")
    # A model no price list knows saved an unknown amount, like its unknown spend in the Models table.
    unknown = saved["model"].isin(models.loc[models["spend_usd"].isna(), "model"])
    money_columns = [c for c in saved.columns if c.endswith("_usd")]
    shown_saved = saved.assign(**{c: saved[c].where(~unknown) for c in money_columns})
    widgets.table(shown_saved, "cost-savings", column_config=shown(saved))


def body() -> None:
    since, until = filters.range.bounds()
    scope = {"since": since, "until": until, "service": filters.service}
    try:
        cost = settings()
        # The target the cost_per_query_usd check judges this service by: one level, drawn and judged alike.
        target = configured_thresholds()["cost_per_query_usd"].levels_for(filters.service, None).target
    except ValueError as exc:
        st.error(f"The cost settings cannot be used: {widgets.as_text(exc)}", icon=":material/error:")
        return
    bucket_s = q.bucket_seconds(since, until)
    data = widgets.load({"totals": q.cost_totals, "models": q.model_usage, "unpriced": q.unpriced_models,
                         "saved": q.cache_savings, "deploys": q.deploys}, **scope)
    if data is None:
        return
    per_req = widgets.load({"requests": q.request_costs, "overall": q.request_cost_overall}, **scope,
                           usd_per_core_hour=cost.compute_usd_per_core_hour)
    expensive = widgets.load({"expensive": q.expensive_requests}, **scope)
    budget = widgets.load({"budget": q.budget_status}, now=utcnow().replace(second=0, microsecond=0),
                          daily_budget=cost.daily_budget, monthly_budget=cost.monthly_budget, service=filters.service)
    if per_req is None or expensive is None or budget is None:
        return
    widgets.range_caption(since, until)
    t = data["totals"].iloc[0]
    if not t.calls:
        widgets.no_data_yet(f"No LLM calls in this time range. {HOW_TO}")
        return
    unpriced_note(t, data["unpriced"], cost.prices_file)
    headline(t, per_req["overall"].iloc[0], budget["budget"], target)
    spend(scope | {"bucket_s": bucket_s}, data["models"], (since, until), data["deploys"])
    per_request(per_req["requests"], expensive["expensive"], target,
                cost.compute_usd_per_core_hour is not None)
    savings(t, data["saved"], data["models"])
    budgets(budget["budget"], cost, filters.service)
    users(scope)


widgets.live(body, filters)
