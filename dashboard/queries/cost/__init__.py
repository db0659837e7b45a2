"""LLM spend: totals, per model / endpoint / request / user, caching savings, compute cost and budgets.

Every call is priced once on ingest (`llm_calls.cost_usd`, DECIMAL): these queries only add up
what was stored, so old figures never move when prices change. `cost_usd` NULL means unpriced (a
model the price list does not know): such calls are counted, never summed as $0 spend silently.
Money is summed as DECIMAL and cast to DOUBLE only in the final SELECT.

One module per part of the Cost page, all re-exported here: `spend` (totals, over time, models,
users, caching savings), `requests` (cost per request and compute), `budgets` (days, forecasts,
budgets) and `export`."""
from dashboard.queries.cost.budgets import budget_status, daily_spend, forecast_period
from dashboard.queries.cost.export import cost_export
from dashboard.queries.cost.requests import (
    compute_costs,
    expensive_requests,
    request_calls,
    request_cost_overall,
    request_costs,
)
from dashboard.queries.cost.spend import cache_savings, cost_over_time, cost_totals, model_usage, unpriced_models, user_costs

__all__ = [
    "budget_status", "cache_savings", "compute_costs", "cost_export", "cost_over_time", "cost_totals", "daily_spend",
    "expensive_requests", "forecast_period", "model_usage", "request_calls", "request_cost_overall", "request_costs",
    "unpriced_models", "user_costs",
]
