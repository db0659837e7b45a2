"""Spend per day, forecasts and the daily and monthly budgets."""
from __future__ import annotations

from datetime import datetime, timedelta

import duckdb
import pandas as pd

from dashboard.queries._run import run_query
from dashboard.queries.cost._common import CALL_ROWS, llm_params

# -- 10, 11. days and budgets ----------------------------------------------------------------------------------

DAILY_SPEND_SQL = f"""
WITH days AS (
    -- Every UTC day the range touches, spend or not (the last one only if the range reaches into it).
    SELECT CAST(d AS DATE) AS day
    FROM generate_series(date_trunc('day', CAST($since AS TIMESTAMP)),
                         date_trunc('day', CAST($until AS TIMESTAMP) - INTERVAL 1 MICROSECOND),
                         INTERVAL 1 DAY) AS t(d)
),
spend AS (
    SELECT CAST(time AS DATE) AS day, sum(cost_usd) AS spend, CAST(sum(calls) AS BIGINT) AS calls
    FROM ({CALL_ROWS})
    WHERE ($service IS NULL OR service = $service)
    GROUP BY day
)
SELECT days.day,
       CAST(coalesce(spend.spend, 0) AS DOUBLE) AS spend_usd,
       coalesce(spend.calls, 0) AS calls
FROM days
LEFT JOIN spend USING (day)
ORDER BY days.day
"""


def daily_spend(
    con: duckdb.DuckDBPyConnection, *, since: datetime, until: datetime, service: str | None = None,
) -> pd.DataFrame:
    """[day, spend_usd, calls] for every UTC day in [since, until), zero days included."""
    df, _ = run_query(DAILY_SPEND_SQL, llm_params(con, since, until, service, step=86400), con=con)
    return df


def forecast_period(
    spent: float,
    period_start: datetime,
    period_end: datetime,
    now: datetime,
    recent_spend: float,
    recent_hours: float,
) -> dict:
    """Where spend will end the period if the recent burn rate holds.

    Returns {spent, elapsed_share, burn_rate_per_day, forecast, remaining_days}: burn rate is
    recent_spend over recent_hours, per day (0 when recent_hours is not positive); forecast adds
    it over the time left, so it equals `spent` once the period is over."""
    length = (period_end - period_start).total_seconds()
    elapsed = (now - period_start).total_seconds()
    elapsed_share = min(max(elapsed / length, 0.0), 1.0) if length > 0 else 1.0
    burn_rate = recent_spend / recent_hours * 24 if recent_hours > 0 else 0.0
    remaining_days = max((period_end - now).total_seconds(), 0.0) / 86400
    return {
        "spent": spent,
        "elapsed_share": elapsed_share,
        "burn_rate_per_day": burn_rate,
        "forecast": spent + burn_rate * remaining_days,
        "remaining_days": remaining_days,
    }


FIRST_CALL_SQL = """
SELECT min(ts) AS first_call FROM llm_calls WHERE ($service IS NULL OR service = $service)
"""

# What was spent in [$since, $until): the period so far, then the burn rate's recent window.
SPEND_SQL = f"""
SELECT CAST(coalesce(sum(cost_usd), 0) AS DOUBLE) AS spent
FROM ({CALL_ROWS})
WHERE ($service IS NULL OR service = $service)
"""

BUDGET_COLUMNS = ["period", "budget_usd", "spent_usd", "share_used", "elapsed_share", "burn_rate_per_day",
                  "forecast_usd", "forecast_share", "on_track", "period_start", "period_end"]
# Burn rate windows: the last hours for the day (reacts within the day), the last week for the month
# (smooths weekends out).
DAY_WINDOW = timedelta(hours=3)
MONTH_WINDOW = timedelta(days=7)


def _periods(now: datetime) -> dict[str, tuple[datetime, datetime, timedelta]]:
    day = now.replace(hour=0, minute=0, second=0, microsecond=0)
    month = day.replace(day=1)
    next_month = month.replace(year=month.year + 1, month=1) if month.month == 12 else month.replace(month=month.month + 1)
    return {"today": (day, day + timedelta(days=1), DAY_WINDOW), "this month": (month, next_month, MONTH_WINDOW)}


def budget_status(
    con: duckdb.DuckDBPyConnection,
    *,
    now: datetime,
    daily_budget: float | None = None,
    monthly_budget: float | None = None,
    service: str | None = None,
) -> pd.DataFrame:
    """[period, budget_usd, spent_usd, share_used, elapsed_share, burn_rate_per_day, forecast_usd,
    forecast_share, on_track, period_start, period_end], one row per configured budget ("today",
    "this month": UTC calendar day and month holding `now`, naive UTC). Spent counts up to `now`.
    The burn rate is the spend of the last 3 hours (today) or 7 days (this month), shortened to the
    time since the first LLM call recorded (for `service` if given): a 4-day-old store's spend is
    spread over 4 days, not 7."""
    budgets = {"today": daily_budget, "this month": monthly_budget}
    first_df, _ = run_query(FIRST_CALL_SQL, {"service": service}, con=con)
    first_call = first_df["first_call"].iloc[0]
    rows = []
    for period, (start, end, window) in _periods(now).items():
        budget = budgets[period]
        if budget is None:
            continue
        if budget <= 0:
            raise ValueError(f"the {period} budget must be positive, not {budget}")
        recent_start = now - window
        if not pd.isna(first_call):
            recent_start = max(recent_start, pd.Timestamp(first_call).to_pydatetime())
        recent_hours = max((now - recent_start).total_seconds(), 0.0) / 3600
        spent, recent = (float(run_query(SPEND_SQL, llm_params(con, frm, now, service), con=con)[0]["spent"].iloc[0])
                         for frm in (start, recent_start))
        fc = forecast_period(spent, start, end, now, recent, recent_hours)
        rows.append({
            "period": period,
            "budget_usd": float(budget),
            "spent_usd": spent,
            "share_used": spent / budget,
            "elapsed_share": fc["elapsed_share"],
            "burn_rate_per_day": fc["burn_rate_per_day"],
            "forecast_usd": fc["forecast"],
            "forecast_share": fc["forecast"] / budget,
            "on_track": fc["forecast"] <= budget,
            "period_start": start,
            "period_end": end,
        })
    return pd.DataFrame(rows, columns=BUDGET_COLUMNS)
