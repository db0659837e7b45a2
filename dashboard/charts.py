"""Plotly figure builders: frames from `dashboard.queries` in, figures out. No Streamlit, no SQL.

Every time chart has a UTC time axis spanning the selected range and the deploys in it marked as
dashed vertical lines labelled with the version (hover for service, host and exact time).

Names from the data (services, endpoints, versions, caches, models, ...) go through `plot_text` wherever
Plotly shows text: it reads HTML tags (<a href>, <b>) and entities in titles, legends, hover, annotations
and tick labels alike."""
from __future__ import annotations

import html
import math
import re
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

# Bidi overrides and isolates reorder what is around them ("gpj.exe" shown as "exe.jpg"), and control
# characters have no business in a name: both show as U+FFFD.
_HIDDEN = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def plot_text(value) -> str:
    """A name as Plotly text (titles, legends, annotations, hover, tick labels): Plotly reads <b>, <a href>,
    <br> and entities in all of them, so "<", ">" and "&" become entities and show as themselves."""
    return html.escape(_HIDDEN.sub("\ufffd", str(value)), quote=False)


def _layout(fig: go.Figure, title: str, height: int) -> go.Figure:
    fig.update_layout(
        title={"text": plot_text(title), "x": 0, "xanchor": "left"},
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
        label = plot_text(f"{row.service} {row.version}" if several_services else row.version)
        fig.add_shape(type="line", x0=row.ts, x1=row.ts, y0=0, y1=1, xref="x", yref="paper",
                      line={"color": DEPLOY_COLOUR, "width": 1, "dash": "dash"}, layer="below")
        host = f" on {plot_text(row.host)}" if isinstance(row.host, str) and row.host else ""
        fig.add_annotation(
            # Three staggered rows so labels of close deploys don't print over each other.
            x=row.ts, y=1 - 0.07 * (i % 3), xref="x", yref="paper", text=label, showarrow=False,
            xanchor="right" if near_right else "left", yanchor="top", xshift=-3 if near_right else 3,
            font={"size": 11, "color": DEPLOY_COLOUR},
            bgcolor="rgba(255,255,255,0.8)",
            hovertext=f"deploy {plot_text(row.service)} {plot_text(row.version)}{host}<br>{row.ts:%Y-%m-%d %H:%M:%S} UTC",
        )
    return fig


ACTION_COLOUR = "#7B2CBF"


def add_action_markers(fig: go.Figure, actions: pd.DataFrame | None) -> go.Figure:
    """Dotted vertical line per maintenance action (from `queries.cache_actions`), labelled at the
    bottom so it reads apart from the deploys labelled at the top."""
    if actions is None or actions.empty:
        return fig
    for i, row in enumerate(actions.itertuples(index=False)):
        fig.add_shape(type="line", x0=row.ts, x1=row.ts, y0=0, y1=1, xref="x", yref="paper",
                      line={"color": ACTION_COLOUR, "width": 1, "dash": "dot"}, layer="below")
        fig.add_annotation(x=row.ts, y=0.02 + 0.07 * (i % 2), xref="x", yref="paper", text=plot_text(row.label),
                           showarrow=False, xanchor="left", yanchor="bottom", xshift=3,
                           font={"size": 11, "color": ACTION_COLOUR}, bgcolor="rgba(255,255,255,0.8)",
                           hovertext=f"{plot_text(row.action)} {plot_text(row.target)}<br>{row.ts:%Y-%m-%d %H:%M:%S} UTC")
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
                      annotation={"text": f"{name} {y:.0%}" if y_format == "percent" else f"{name} {y:g}",
                                  "font": {"size": 10, "color": colour}, "xanchor": "left", "x": 1,
                                  "yanchor": "middle"})
    fig.update_xaxes(title_text=TIME_AXIS, range=x_range)
    if log_y:
        fig.update_yaxes(type="log", title_text=f"{y_title} (log scale)", ticksuffix=suffix)
    else:
        fig.update_yaxes(title_text=y_title, tickformat=tickformat, ticksuffix=suffix,
                         **({"range": list(y_range)} if y_range else {"rangemode": "tozero"}))
    _layout(fig, title, height)
    # Title (and what the line styles mean) on top, the legend in a row of its own under it.
    fig.update_layout(title={"subtitle": {"text": subtitle, "font": {"size": 11}}, "y": 0.98, "yanchor": "top"},
                      legend={"x": 0, "xanchor": "left", "y": 1.0, "yanchor": "bottom"},
                      # Threshold labels sit in the right margin, clear of the newest data.
                      margin={"t": 95 if len(fig.data) > 4 else 80, "r": 75 if hlines else 10})
    fig.update_xaxes(tickangle=0)
    if df.empty or not fig.data:
        _no_data(fig)
    return add_deploy_markers(fig, deploys, x_range)


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
    fig.update_xaxes(title_text=TIME_AXIS, range=x_range)
    fig.update_yaxes(title_text=y_title, rangemode="tozero")
    _layout(fig, title, height)
    return add_deploy_markers(_no_data(fig) if df.empty else fig, deploys, x_range)


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
    top: int = 8, height: int = 340, deploys: pd.DataFrame | None = None,
) -> go.Figure:
    """`df[y]` over `df["time"]` as bars stacked by `stack`, the `top` largest stacks by total and the
    rest summed as "other" (e.g. spend per hour by model); `hlines` are labelled horizontal lines."""
    tickformat, suffix, hover = Y_FORMATS[y_format]
    fig = go.Figure()
    if not df.empty:
        totals = df.groupby(stack)[y].sum().sort_values(ascending=False)
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
    fig.update_xaxes(title_text=TIME_AXIS, range=x_range)
    fig.update_yaxes(title_text=y_title, tickformat=tickformat, ticksuffix=suffix, rangemode="tozero")
    _layout(fig, title, height)
    fig.update_layout(barmode="stack", hovermode="x unified")
    return add_deploy_markers(_no_data(fig) if df.empty else fig, deploys, x_range)


# --- Compare -----------------------------------------------------------------------------------------
VERDICT_COLOURS = {"regression": "#C73E1D", "improvement": "#2A9D8F", "no change": "#6C757D",
                   "too few requests": "#ADB5BD"}
RATIO_TICKS = (0.5, 0.67, 0.8, 0.9, 1, 1.1, 1.25, 1.5, 2, 3, 5)
COARSE_RATIO_TICKS = (0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500)
WINDOW_COLOURS = {"before": "rgba(46,134,171,0.10)", "after": "rgba(241,143,1,0.12)"}


def shade_windows(fig: go.Figure, windows: dict[str, tuple[datetime, datetime]]) -> go.Figure:
    """A lightly shaded, labelled band per named window (e.g. {"before": (a, b), "after": (c, d)})."""
    for name, (start, end) in windows.items():
        fig.add_vrect(x0=start, x1=end, fillcolor=WINDOW_COLOURS.get(name, "rgba(108,117,125,0.10)"),
                      line_width=0, layer="below", annotation={"text": name, "font": {"size": 11}},
                      annotation_position="bottom left")
    return fig


def ratio_chart(df: pd.DataFrame, *, title: str = "p95 after / before, with its 95 % confidence interval") -> go.Figure:
    """A forest plot from `queries.compare_windows`: per endpoint the p95 ratio as a dot coloured by
    verdict and its bootstrap CI as a bar, the worst at the top; a dotted line at ×1 (no change)."""
    fig = go.Figure()
    shown = df.dropna(subset=["p95_ratio"]).iloc[::-1]
    labels = (shown["endpoint"] if shown["service"].nunique() <= 1
              else shown["service"] + " " + shown["endpoint"]).map(plot_text)
    for verdict, colour in VERDICT_COLOURS.items():
        mine = shown["verdict"] == verdict
        if not mine.any():
            continue
        part = shown[mine]
        fig.add_trace(go.Scatter(
            x=part["p95_ratio"], y=labels[mine], mode="markers", name=verdict,
            marker={"color": colour, "size": 11, "symbol": "diamond"},
            error_x={"type": "data", "symmetric": False, "array": (part["ci_high"] - part["p95_ratio"]).fillna(0),
                     "arrayminus": (part["p95_ratio"] - part["ci_low"]).fillna(0), "color": colour, "thickness": 2},
            customdata=part[["ci_low", "ci_high"]],
            hovertemplate="×%{x:.2f} (95 % CI ×%{customdata[0]:.2f}–×%{customdata[1]:.2f})<extra></extra>",
        ))
    fig.add_vline(x=1, line={"color": DEPLOY_COLOUR, "width": 1, "dash": "dot"})
    ends = pd.concat([shown["p95_ratio"], shown["ci_low"], shown["ci_high"], pd.Series([1.0])]).dropna()
    lo, hi = ends[ends > 0].min(), ends.max()
    ticks = [t for t in (RATIO_TICKS if hi / lo < 6 else COARSE_RATIO_TICKS) if lo / 1.3 <= t <= hi * 1.3]
    fig.update_xaxes(title_text="p95 after / before (log scale)", type="log",
                     tickvals=ticks, ticktext=[f"×{t:g}" for t in ticks])
    fig.update_yaxes(automargin=True, categoryorder="array", categoryarray=list(labels))
    _layout(fig, title, max(220, 90 + 32 * len(shown)))
    fig.update_layout(hovermode="closest")
    return _no_data(fig, "Nothing to compare") if shown.empty else fig
