"""Plotly figure builders: frames from `dashboard.queries` in, figures out. No Streamlit, no SQL.

Every time chart has a UTC time axis spanning the selected range and the deploys in it marked as
dashed vertical lines labelled with the version (hover for service, host and exact time)."""
from __future__ import annotations

import math
from datetime import datetime

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

PERCENTILE_STYLE = {  # column: (legend name, colour)
    "p50_ms": ("p50", "#2E86AB"),
    "p95_ms": ("p95", "#F18F01"),
    "p99_ms": ("p99", "#C73E1D"),
}
REQUESTS_COLOUR = "#2E86AB"
ERRORS_COLOUR = "#C73E1D"
DEPLOY_COLOUR = "#6C757D"
TIME_AXIS = "Time (UTC)"


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(
        title={"text": title, "x": 0, "xanchor": "left"},
        height=height,
        margin={"l": 10, "r": 10, "t": 70, "b": 10},
        hovermode="x unified",
        legend={"orientation": "h", "x": 1, "xanchor": "right", "y": 1.02, "yanchor": "bottom"},
    )
    return fig


def _no_data(fig: go.Figure, text: str = "No data in this time range") -> go.Figure:
    fig.add_annotation(text=text, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font={"size": 14, "color": DEPLOY_COLOUR})
    fig.update_yaxes(showticklabels=False)
    return fig


def _ms_label(ms: float) -> str:
    return f"{ms / 1000:g} s" if ms >= 1000 else f"{ms:g} ms"


def _log_ticks(values: pd.Series) -> dict:
    """1-2-5 ticks with units for a log latency axis (Plotly's own log ticks label 2 and 5 of each
    decade as bare digits, which reads as noise)."""
    positive = values[values > 0]
    if positive.empty:
        return {}
    lo, hi = positive.min(), positive.max()
    ticks = [m * 10.0**k for k in range(math.floor(math.log10(lo)), math.ceil(math.log10(hi)) + 1)
             for m in (1, 2, 5) if lo / 2 <= m * 10.0**k <= hi * 2]
    return {"tickvals": ticks, "ticktext": [_ms_label(t) for t in ticks]} if len(ticks) >= 2 else {}


def add_deploy_markers(
    fig: go.Figure, deploys: pd.DataFrame | None, x_range: tuple[datetime, datetime] | None = None,
) -> go.Figure:
    """Dashed vertical line per deploy across all subplots, labelled with its version."""
    if deploys is None or deploys.empty:
        return fig
    several_services = deploys["service"].nunique() > 1
    start, end = x_range or (deploys["ts"].min(), deploys["ts"].max())
    span = (end - start) or pd.Timedelta(seconds=1)
    for i, row in enumerate(deploys.itertuples(index=False)):
        near_right = (row.ts - start) / span > 0.85  # label on the left of its line, not cut off
        label = f"{row.service} {row.version}" if several_services else row.version
        fig.add_shape(type="line", x0=row.ts, x1=row.ts, y0=0, y1=1, xref="x", yref="paper",
                      line={"color": DEPLOY_COLOUR, "width": 1, "dash": "dash"}, layer="below")
        host = f" on {row.host}" if isinstance(row.host, str) and row.host else ""
        fig.add_annotation(
            # Three staggered rows so labels of close deploys don't print over each other.
            x=row.ts, y=1 - 0.07 * (i % 3), xref="x", yref="paper", text=label, showarrow=False,
            xanchor="right" if near_right else "left", yanchor="top", xshift=-3 if near_right else 3, font={"size": 11, "color": DEPLOY_COLOUR},
            bgcolor="rgba(255,255,255,0.8)",
            hovertext=f"deploy {row.service} {row.version}{host}<br>{row.ts:%Y-%m-%d %H:%M:%S} UTC",
        )
    return fig


def latency_chart(
    df: pd.DataFrame,
    deploys: pd.DataFrame | None = None,
    *,
    x_range: tuple[datetime, datetime] | None = None,
    title: str = "Latency percentiles",
    log_y: bool = False,
) -> go.Figure:
    """p50/p95/p99 lines over time from `latency_over_time` (columns time, p50_ms, p95_ms, p99_ms)."""
    fig = go.Figure()
    for col, (name, colour) in PERCENTILE_STYLE.items():
        if col in df:
            fig.add_trace(go.Scatter(
                x=df["time"], y=df[col], name=name, mode="lines", line={"color": colour, "width": 2},
                hovertemplate="%{y:,.1f} ms",
            ))
    fig.update_xaxes(title_text=TIME_AXIS, range=x_range)
    if log_y:
        cols = [c for c in PERCENTILE_STYLE if c in df]
        ticks = _log_ticks(df[cols].stack() if cols else pd.Series(dtype=float))
        fig.update_yaxes(type="log", title_text="latency (log scale)", **ticks)
    else:
        fig.update_yaxes(rangemode="tozero", title_text="latency (ms)")
    _layout(fig, title, 380)
    if df.empty:
        _no_data(fig)
    return add_deploy_markers(fig, deploys, x_range)


def traffic_chart(
    df: pd.DataFrame,
    deploys: pd.DataFrame | None = None,
    *,
    x_range: tuple[datetime, datetime] | None = None,
    title: str = "Request rate and error rate",
) -> go.Figure:
    """Requests/s above, error rate below, sharing the time axis; from `traffic_over_time`."""
    fig = make_subplots(rows=2, cols=1, shared_xaxes=True, row_heights=[0.62, 0.38], vertical_spacing=0.08)
    fig.add_trace(go.Scatter(
        x=df["time"], y=df["requests_per_s"], name="requests / s", mode="lines",
        line={"color": REQUESTS_COLOUR, "width": 2}, fill="tozeroy", fillcolor="rgba(46,134,171,0.12)",
        customdata=df[["requests"]], hovertemplate="%{y:,.2f} req/s (%{customdata[0]:,} requests)",
    ), row=1, col=1)
    fig.add_trace(go.Scatter(
        x=df["time"], y=df["error_rate"], name="error rate", mode="lines",
        line={"color": ERRORS_COLOUR, "width": 2},
        customdata=df[["errors"]], hovertemplate="%{y:.2%} (%{customdata[0]:,} errors)",
    ), row=2, col=1)
    fig.update_yaxes(title_text="requests / s", rangemode="tozero", row=1, col=1)
    fig.update_yaxes(title_text="errors (% of requests)", tickformat=".1%", rangemode="tozero", row=2, col=1)
    fig.update_xaxes(range=x_range)
    fig.update_xaxes(title_text=TIME_AXIS, row=2, col=1)
    _layout(fig, title, 440)
    if df.empty:
        _no_data(fig)
    return add_deploy_markers(fig, deploys, x_range)
