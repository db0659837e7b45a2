"""Time charts: latency percentiles, traffic, and the sampler pages' lines, areas and bars."""

import html
import math
from datetime import datetime

import pandas as pd
import plotly.graph_objects as go
from plotly.subplots import make_subplots

from collectors.formatting import percent, size
from dashboard.charts.base import (
    DEPLOY_COLOUR,
    ERRORS_COLOUR,
    PERCENTILE_STYLE,
    REQUESTS_COLOUR,
    TIME_AXIS,
    _layout,
    _log_ticks,
    _no_data,
    plot_text,
)
from dashboard.charts.timeaxis import NARROW_PLOT_PX, _times, add_deploy_markers, fit_time_axis


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
    for rank, (col, (name, colour)) in enumerate(PERCENTILE_STYLE.items()):
        if col in df:
            fig.add_trace(go.Scatter(
                x=df["time"], y=df[col], name=name, mode="lines", line={"color": colour, "width": 2},
                hovertemplate="%{y:,.1f} ms",
                legendrank=1000 + rank,    # p50, p95, p99 in the legend, whatever order they are drawn in
            ))
    fig.update_xaxes(title_text=TIME_AXIS)
    shown = fit_time_axis(fig, df["time"], x_range, deploys=deploys)
    if log_y:
        cols = [c for c in PERCENTILE_STYLE if c in df]
        ticks = _log_ticks(df[cols].stack() if cols else pd.Series(dtype=float))
        fig.update_yaxes(type="log", title_text="latency (log scale)", **ticks)
    else:
        fig.update_yaxes(rangemode="tozero", title_text="latency (ms)")
    _layout(fig, title, 380)
    if df.empty:
        _no_data(fig)
    return add_deploy_markers(fig, deploys, shown)


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
    fig.update_yaxes(title_text="errors (% of requests)", tickformat=".1%", rangemode="tozero", row=2, col=1,
                     **word_ticks(0, df["error_rate"].max() if len(df) else 0, percent))
    fig.update_xaxes(title_text=TIME_AXIS, row=2, col=1)
    shown = fit_time_axis(fig, df["time"], x_range, deploys=deploys)
    _layout(fig, title, 440)
    if df.empty:
        _no_data(fig)
    return add_deploy_markers(fig, deploys, shown)


# --- Sampler pages (Caches, Database, Host) ---------------------------------------------------
DASHES = ("solid", "dot", "dash", "dashdot")
DASH_NAMES = {"solid": "solid", "dot": "dotted", "dash": "dashed", "dashdot": "dash-dot"}
THRESHOLD_COLOURS = {"target": "#2A9D8F", "warning": "#F18F01", "critical": "#C73E1D"}
# y-axis formats: name -> (tickformat, ticksuffix, hover format)
Y_FORMATS = {
    "percent": (".0%", "", "%{y:.1%}"),
    "percent100": ("", " %", "%{y:.1f} %"),
    "bytes": ("~s", "B", "%{y:.3s}B"),
    "bytes_per_s": ("~s", "B/s", "%{y:.3s}B/s"),
    "ms": ("", " ms", "%{y:,.3g} ms"),
    # Rates are often below 1 per second: SI ticks would read "600m/s", so plain rounded decimals.
    "per_s": (",.3~r", "/s", "%{y:,.3g}/s"),
    "number": (",.3~r", "", "%{y:,.3g}"),
    "usd": ("$,.4~r", "", "$%{y:,.4~r}"),
}


# Axes whose tick labels a d3 format can't write as the tables do ("500 MB", "30 %": a space before the unit):
# y_format -> the words of one tick.
TICK_WORDS = {"percent": percent, "bytes": size, "bytes_per_s": lambda v: f"{size(v)}/s"}


def word_ticks(lo: float, hi: float, words) -> dict:
    """About five round ticks from `lo` to `hi` and one past it (an autoranged axis ends a little above its data;
    Plotly leaves out ticks beyond the axis), 1-2-5 steps, labelled in `words`; {} without a span."""
    if not (hi > lo):
        return {}
    raw = (hi - lo) / 5
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    ticks = [round(k * step, 12) for k in range(math.ceil(lo / step - 1e-9), math.floor(hi / step + 1e-9) + 2)]
    return {"tickvals": ticks, "ticktext": [words(t) for t in ticks]}


# Measured in the dashboard's browser: title 21 px high, subtitle 15 px under it at 39-54 px from the top,
# a legend row 24-29 px, an entry 47 px plus 5.2 px per character. A half-width figure is 512-560 px.
TITLE_TOP_PX = 8
TITLE_PX = 30
SUBTITLE_PX = 24
LEGEND_ROW_PX = 26
LEGEND_CHAR_PX = 5.8     # on the wide side
LEGEND_ITEM_PX = 50
HALF_FIGURE_PX = 512
Y_AXIS_PX = 75           # left margin a y axis takes (tick labels and title), on the wide side


def legend_rows(names: list[str], width: float = NARROW_PLOT_PX) -> int:
    """Rows a horizontal legend takes when it may be `width` px wide (the plot's width, in Plotly),
    generously measured, wrapping like Plotly's."""
    rows, used = (1 if names else 0), 0.0
    for name in names:
        w = LEGEND_ITEM_PX + LEGEND_CHAR_PX * len(html.unescape(name or ""))
        if used and used + w > width:
            rows, used = rows + 1, 0.0
        used += w
    return rows


def time_lines(
    df: pd.DataFrame,
    columns: dict[str, str],
    *,
    by: str | list[str] | None = None,
    title: str,
    y_title: str,
    y_format: str = "number",
    deploys: pd.DataFrame | None = None,
    x_range: tuple[datetime, datetime] | None = None,
    hlines: tuple[tuple[str, float], ...] = (),
    y_range: tuple[float, float] | None = None,
    dashes: dict[str, str] | None = None,
    log_y: bool = False,
    height: int = 340,
) -> go.Figure:
    """One line per (group of `by`, column of `columns`) over `df["time"]`. `columns` maps a column
    to its legend name; a single group or a single column is left out of the trace names.
    `hlines` are labelled horizontal threshold lines (name, y); `dashes` a column -> dash style."""
    tickformat, suffix, hover = Y_FORMATS[y_format]
    fig = go.Figure()
    groups = [(None, df)] if by is None else list(df.groupby(by, sort=True))
    several = len(groups) > 1 and len(columns) > 1
    styles = {col: (dashes or {}).get(col, DASHES[i % len(DASHES)]) for i, col in enumerate(columns)}
    for gi, (group, part) in enumerate(groups):
        group = " · ".join(map(str, group)) if isinstance(group, tuple) else str(group)
        shown = False
        for ci, (col, label) in enumerate(columns.items()):
            if col not in part or part[col].isna().all():
                continue
            # Several groups and columns: colour = group (one legend entry), dash = column.
            name = group if len(groups) > 1 else label
            full = f"{group} · {label}" if several else name
            fig.add_trace(go.Scatter(
                # Markers too when there are few points, so a short history is not invisible.
                x=part["time"], y=part[col], name=plot_text(name), connectgaps=False, marker={"size": 4},
                mode="lines+markers" if part[col].notna().sum() < 30 else "lines",
                legendgroup=plot_text(group) if several else None, showlegend=not (several and shown),
                line={"width": 2, "dash": styles[col] if len(columns) > 1 else "solid",
                      "color": _colour(gi if len(groups) > 1 else ci)},
                # The name goes in as meta: in the template itself a "%{...}" in it would be substituted.
                meta=plot_text(full), hovertemplate=f"%{{meta}}: {hover}<extra></extra>",
            ))
            shown = True
    subtitle = " · ".join(f"{DASH_NAMES[styles[c]]}: {label}" for c, label in columns.items()) \
        if len(columns) > 1 else ""
    for name, y in hlines:
        colour = THRESHOLD_COLOURS.get(name, DEPLOY_COLOUR)
        fig.add_hline(y=y, line={"color": colour, "width": 1, "dash": "dot"}, layer="below",
                      annotation={"text": f"{name} {percent(y)}" if y_format == "percent" else f"{name} {y:g}",
                                  "font": {"size": 10, "color": colour}, "xanchor": "left", "x": 1,
                                  "yanchor": "middle"})
    fig.update_xaxes(title_text=TIME_AXIS)
    shown = fit_time_axis(fig, df["time"] if "time" in df else [], x_range, deploys=deploys)
    if log_y:
        fig.update_yaxes(type="log", title_text=f"{y_title} (log scale)", ticksuffix=suffix)
    else:
        fig.update_yaxes(title_text=y_title, tickformat=tickformat, ticksuffix=suffix,
                         **({"range": list(y_range)} if y_range else {"rangemode": "tozero"}))
        if y_format in TICK_WORDS:
            values = pd.concat([df[c] for c in columns if c in df]).dropna() if len(df) else pd.Series(dtype=float)
            lo, hi = y_range or (0, values.max() if not values.empty else 0)
            fig.update_yaxes(ticksuffix="", **word_ticks(lo, min(hi, 1) if y_format == "percent" else hi,
                                                          TICK_WORDS[y_format]))
    _layout(fig, title, height)
    # Stacked from the top edge, each at a fixed distance from it: the title, what the line styles mean,
    # then the legend, which grows downwards into room kept for as many rows as it takes at half width.
    # (A legend anchored on the plot grows upwards, into the subtitle, as soon as it wraps.)
    legend_top = TITLE_TOP_PX + TITLE_PX + (SUBTITLE_PX if subtitle else 0)
    right = 75 if hlines else 10
    rows = legend_rows([t.name for t in fig.data if t.showlegend is not False], HALF_FIGURE_PX - Y_AXIS_PX - right)
    # Rows kept for a narrow legend come on top of the plot's height, not out of it.
    height += max(rows - 1, 0) * LEGEND_ROW_PX
    fig.update_layout(
        height=height,
        title={"subtitle": {"text": subtitle, "font": {"size": 11}}, "yref": "container",
               "y": 1 - TITLE_TOP_PX / height, "yanchor": "top"},
        legend={"x": 0, "xanchor": "left", "yref": "container", "y": 1 - legend_top / height, "yanchor": "top"},
        # Threshold labels sit in the right margin, clear of the newest data.
        margin={"t": legend_top + max(rows, 1) * LEGEND_ROW_PX + 6, "r": right})
    fig.update_xaxes(tickangle=0)
    if df.empty or not fig.data:
        _no_data(fig)
    return add_deploy_markers(fig, deploys, shown)


def _colour(i: int) -> str:
    palette = ("#2E86AB", "#F18F01", "#6A4C93", "#2A9D8F", "#C73E1D", "#8D6A9F", "#5C946E", "#E9C46A")
    return palette[i % len(palette)]


def stacked_area(
    df: pd.DataFrame, *, y: str, stack: str, title: str, y_title: str,
    x_range: tuple[datetime, datetime] | None = None, height: int = 320, deploys: pd.DataFrame | None = None,
) -> go.Figure:
    """`df[y]` over `df["time"]`, one stacked area per value of `stack` (e.g. connections by state)."""
    fig = go.Figure()
    for i, (name, part) in enumerate(df.groupby(stack, sort=True)):
        fig.add_trace(go.Scatter(x=part["time"], y=part[y], name=plot_text(name), mode="lines", stackgroup="one",
                                 line={"width": 1, "color": _colour(i)}, hovertemplate="%{y:,.1f}"))
    fig.update_xaxes(title_text=TIME_AXIS)
    shown = fit_time_axis(fig, df["time"] if "time" in df else [], x_range, deploys=deploys)
    fig.update_yaxes(title_text=y_title, rangemode="tozero")
    _layout(fig, title, height)
    return add_deploy_markers(_no_data(fig) if df.empty else fig, deploys, shown)


def bars(
    df: pd.DataFrame, *, x: str, y: str, title: str, x_title: str, x_format: str = "number",
    colour_by: str | None = None, height: int | None = None, vlines: tuple[tuple[str, float], ...] = (),
) -> go.Figure:
    """Horizontal bars of `df[x]` per `df[y]`, largest at the top (e.g. Redis memory by namespace);
    `vlines` are labelled vertical lines (name, x), such as a target."""
    tickformat, suffix, _ = Y_FORMATS[x_format]
    hover = Y_FORMATS[x_format][2].replace("%{y", "%{x")
    fig = go.Figure()
    groups = [(None, df)] if colour_by is None else list(df.groupby(colour_by, sort=True))
    for i, (name, part) in enumerate(groups):
        part = part.sort_values(x)
        fig.add_trace(go.Bar(x=part[x], y=part[y].astype(str).map(plot_text), orientation="h", name=plot_text(name or x),
                             marker_color=_colour(i), hovertemplate=hover, showlegend=colour_by is not None))
    fig.update_xaxes(title_text=x_title, tickformat=tickformat, ticksuffix=suffix)
    fig.update_yaxes(automargin=True)
    _layout(fig, title, height or max(220, 60 + 28 * len(df)))
    fig.update_layout(hovermode="closest", barmode="relative")
    for name, value in vlines:
        fig.add_vline(x=value, line={"color": THRESHOLD_COLOURS.get(name, DEPLOY_COLOUR), "width": 1.5, "dash": "dot"},
                      annotation={"text": name, "font": {"size": 10}, "yanchor": "bottom"})
    return _no_data(fig) if df.empty else fig


def stacked_bars(
    df: pd.DataFrame, *, y: str, stack: str, title: str, y_title: str, y_format: str = "number",
    x_range: tuple[datetime, datetime] | None = None, hlines: tuple[tuple[str, float], ...] = (),
    top: int = 8, height: int = 340, deploys: pd.DataFrame | None = None, empty: str | None = None,
) -> go.Figure:
    """`df[y]` over `df["time"]` as bars stacked by `stack`, the `top` largest stacks by total and the
    rest summed as "other" (e.g. spend per hour by model); `hlines` are labelled horizontal lines. A stack
    with nothing to draw (a total of 0 or none) is left out of the legend; given `empty`, why (e.g. "no
    priced spend"), a subtitle names those stacks."""
    tickformat, suffix, hover = Y_FORMATS[y_format]
    fig = go.Figure()
    nothing: list[str] = []
    if not df.empty:
        totals = df.groupby(stack)[y].sum().sort_values(ascending=False)
        if (totals > 0).any():      # all zero: zero bars, the axis still says so
            nothing = [str(k) for k, v in totals.items() if not v > 0]
            totals = totals[totals > 0]
            df = df[df[stack].isin(totals.index)]
        keep = set(totals.index[:top])
        df = df.assign(**{stack: df[stack].where(df[stack].isin(keep), "other")})
        order = [k for k in totals.index if k in keep] + (["other"] if len(totals) > top else [])
        for i, name in enumerate(order):
            part = df[df[stack] == name].groupby("time", as_index=False)[y].sum()
            fig.add_trace(go.Bar(x=part["time"], y=part[y], name=plot_text(name), marker_color=_colour(i),
                                 meta=plot_text(name), hovertemplate=f"%{{meta}}: {hover}<extra></extra>"))
    for name, value in hlines:
        fig.add_hline(y=value, line={"color": THRESHOLD_COLOURS.get(name, DEPLOY_COLOUR), "width": 1.5, "dash": "dot"},
                      annotation={"text": name, "font": {"size": 10}, "xanchor": "left", "x": 0})
    fig.update_xaxes(title_text=TIME_AXIS)
    times = _times(df["time"]) if "time" in df else pd.Series(dtype="datetime64[ns]")
    steps = times.drop_duplicates().sort_values().diff().dropna()
    shown = fit_time_axis(fig, times, x_range, deploys=deploys,
                          bar_width=steps.min() if not steps.empty else None)
    fig.update_yaxes(title_text=y_title, tickformat=tickformat, ticksuffix=suffix, rangemode="tozero")
    _layout(fig, title, height)
    if empty and nothing:
        fig.update_layout(title={"subtitle": {"text": plot_text(f"No bars ({empty}): {', '.join(nothing)}"),
                                              "font": {"size": 11}}})
    fig.update_layout(barmode="stack", hovermode="x unified")
    return add_deploy_markers(_no_data(fig) if df.empty else fig, deploys, shown)
