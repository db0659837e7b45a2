"""One statement's history (pg_stat_statements deltas): calls, mean time and total time per time bucket."""

from datetime import datetime

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.charts.base import ERRORS_COLOUR, REQUESTS_COLOUR, TIME_AXIS, _layout, _no_data
from dashboard.charts.timeaxis import add_deploy_markers, fit_time_axis

__all__ = ["statement_history_chart"]

TOTAL_COLOUR = "#6A4C93"


def statement_history_chart(
    df: pd.DataFrame,
    deploys: pd.DataFrame | None = None,
    *,
    x_range: tuple[datetime, datetime] | None = None,
    title: str = "Statement over time",
) -> go.Figure:
    """Calls, mean ms and total time (s) per bucket, three rows sharing the time axis; from
    `pg_statement_history` (columns time, calls, mean_ms, total_ms)."""
    fig = make_subplots(rows=3, cols=1, shared_xaxes=True, vertical_spacing=0.06, row_heights=[0.34, 0.33, 0.33])
    step = df.attrs.get("bucket_seconds")
    per = f" per {step // 60} min" if step and step % 3600 else f" per {step // 3600} h" if step else ""
    fig.add_trace(go.Bar(x=df["time"], y=df["calls"], name=f"calls{per}", marker={"color": REQUESTS_COLOUR},
                         hovertemplate="%{y:,} calls<extra></extra>"), row=1, col=1)
    fig.add_trace(go.Scatter(x=df["time"], y=df["mean_ms"], name="mean (ms)", mode="lines+markers",
                             marker={"size": 4}, line={"color": ERRORS_COLOUR, "width": 2},
                             hovertemplate="%{y:,.3g} ms mean<extra></extra>"), row=2, col=1)
    fig.add_trace(go.Bar(x=df["time"], y=df["total_ms"] / 1000.0, name=f"total time (s){per}",
                         marker={"color": TOTAL_COLOUR}, hovertemplate="%{y:,.3g} s in all<extra></extra>"),
                  row=3, col=1)
    fig.update_yaxes(title_text=f"calls{per}", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="mean (ms)", rangemode="tozero", row=2, col=1)
    fig.update_yaxes(title_text="total (s)", rangemode="tozero", row=3, col=1)
    fig.update_xaxes(title_text=TIME_AXIS, row=3, col=1)
    shown = fit_time_axis(fig, df["time"], x_range, deploys=deploys)
    _layout(fig, title, 520)
    if df.empty:
        _no_data(fig)
    return add_deploy_markers(fig, deploys, shown)
