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


# --- The time axis: what the data covers ------------------------------------------------------------
CLIP_BELOW = 0.8    # data spanning less than this share of the picked range: the axis spans the data
PAD_SHARE = 0.02    # padding on each side, a share of the data's span (of the range for a single point)


def _naive(t) -> pd.Timestamp:
    """A time as naive UTC, the form of every timestamp in the store."""
    t = pd.Timestamp(t)
    return t.tz_convert("UTC").tz_localize(None) if t.tzinfo is not None else t


def _times(values) -> pd.Series:
    times = pd.to_datetime(pd.Series(values), errors="coerce").dropna()
    if times.empty:
        return pd.Series(dtype="datetime64[ns]")
    if getattr(times.dt, "tz", None) is not None:
        times = times.dt.tz_convert("UTC").dt.tz_localize(None)
    return times


UNITS = (("days", 86400, 2), ("hours", 3600, 3), ("min", 60, 0))   # name, seconds, fewest for the unit


def _unit(length: pd.Timedelta) -> tuple[str, int]:
    return next((name, seconds) for name, seconds, least in UNITS if length.total_seconds() >= least * seconds)


def _amount(span: pd.Timedelta, whole: pd.Timedelta) -> str:
    """The data's span against the picked range: '4.0 of 30 days', '3.5 of 24 hours', '20 of 120 min',
    and in its own unit when that is smaller: '6.0 hours of 30 days'."""
    def number(length: pd.Timedelta, seconds: int) -> str:
        value = length.total_seconds() / seconds
        return f"{value:.1f}" if value < 10 else f"{value:.0f}"
    unit, seconds = _unit(whole)
    own, own_seconds = _unit(span)
    total = f"{whole.total_seconds() / seconds:.3g} {unit}"
    return f"{number(span, seconds)} of {total}" if own == unit else f"{number(span, own_seconds)} {own} of {total}"


def _stamp(t: pd.Timestamp, whole: pd.Timedelta) -> str:
    return f"{t:%b} {t.day} {t:%H:%M}" if whole >= pd.Timedelta(days=1) else f"{t:%H:%M}"


def fit_time_axis(
    fig: go.Figure, times, x_range: tuple[datetime, datetime] | None, *,
    deploys: pd.DataFrame | None = None, bar_width: pd.Timedelta | None = None,
) -> tuple[pd.Timestamp, pd.Timestamp] | None:
    """The one rule of every time chart's x axis; returns the span shown (None: Plotly's autorange).

    The axis spans the picked range, unless the data (`times`) covers clearly less of it: then it spans
    the data with a little padding, and the axis title says what the data covers ("data from Nov 29
    09:00, 4.0 of 30 days"). No data: the picked range, as it was. Deploys outside the span shown are
    not drawn (`add_deploy_markers` is given the span); the title counts them, so none vanishes unsaid."""
    if x_range is None:
        return None
    start, end = _naive(x_range[0]), _naive(x_range[1])
    whole = end - start
    shown, note = (start, end), ""
    times = _times(times)
    if not times.empty and whole > pd.Timedelta(0):
        lo, hi = times.min(), times.max()
        span = hi - lo
        if span < CLIP_BELOW * whole:
            pad = max(span * PAD_SHARE if span > pd.Timedelta(0) else whole * PAD_SHARE,
                      (bar_width or pd.Timedelta(0)) * 0.6)
            shown = (lo - pad, hi + pad)
            reaches_end = end - hi <= max(whole * 0.05, pad)
            if span == pd.Timedelta(0):
                note = f"data only at {_stamp(lo, whole)}"
            else:
                when = f"from {_stamp(lo, whole)}" if reaches_end else f"{_stamp(lo, whole)} to {_stamp(hi, whole)}"
                note = f"data only {when}: {_amount(span, whole)}"
            if deploys is not None and not deploys.empty:
                ts = _times(deploys["ts"])
                outside = int(((ts < shown[0]) | (ts > shown[1])).sum())
                if outside:
                    note += f" · {outside} deploy{'s' if outside > 1 else ''} outside it not drawn"
    fig.update_xaxes(range=list(shown))
    if note:
        fig.for_each_xaxis(lambda axis: axis.update(title_text=f"{TIME_AXIS}<br><span style='font-size:11px'>"
                                                               f"{note}</span>")
                           if axis.title.text == TIME_AXIS else None)
    return shown


def _shown_span(fig: go.Figure, x_range, extra: pd.Series) -> tuple[pd.Timestamp, pd.Timestamp]:
    """The span the x axis shows: the range given, else the one set on the figure, else what is drawn."""
    if x_range is None and fig.layout.xaxis.range:
        x_range = fig.layout.xaxis.range
    if x_range is not None:
        return _naive(x_range[0]), _naive(x_range[1])
    times = pd.concat([_times(t.x) for t in fig.data if getattr(t, "x", None) is not None and len(t.x)]
                      + [_times(extra)])
    return times.min(), times.max()


# --- Deploy and action markers ------------------------------------------------------------------------
# A label beside a marker line is kept only where it provably overprints nothing: measured (generously)
# at the narrowest plot area the pages draw, a half-width column. A wider plot only moves labels apart.
NARROW_PLOT_PX = 360      # a half-width chart with threshold labels in its right margin
WIDE_PLOT_PX = 3000       # a full-width chart on a very wide screen
LABEL_CHAR_PX = 6.0      # an 11 px character, on the wide side (measured: 4.9 px on average)
LABEL_PAD_PX = 6         # background box and a little air
LABEL_GAP_PX = 6         # from its own line (clear of the marker's triangle)
LABEL_ROW_PX = 19
LABEL_ROWS = 2
MAX_LABELS = 4           # more marks than this: hover only
LABEL_MAX_CHARS = 24
MARKER_AXIS = "y9"       # an invisible 0..1 axis over the first plot, for the hover markers


def _label_px(text: str) -> float:
    return LABEL_CHAR_PX * len(text) + LABEL_PAD_PX


def label_extent(fraction: float, text: str, anchor: str, width: float = NARROW_PLOT_PX) -> tuple[float, float]:
    """Where a label sits (px from the plot's left edge) beside a line at `fraction` of the axis."""
    x, w = fraction * width, _label_px(text)
    return (x + LABEL_GAP_PX, x + LABEL_GAP_PX + w) if anchor == "left" else (x - LABEL_GAP_PX - w, x - LABEL_GAP_PX)


def _crosses(distance: float, text: str, anchor: str) -> bool:
    """Whether a line `distance` (share of the axis) from a label's own line runs through the label at
    some plot width from NARROW_PLOT_PX to WIDE_PLOT_PX: unlike labels, lines get into a label as the
    plot widens (one just beside its own line moves out from under the label's gap, into its text)."""
    if (distance > 0) != (anchor == "left") or distance == 0:
        return False
    near, far = LABEL_GAP_PX - 3, LABEL_GAP_PX + _label_px(text) + 3
    return abs(distance) * WIDE_PLOT_PX >= near and abs(distance) * NARROW_PLOT_PX <= far


def place_labels(fractions: list[float], texts: list[str]) -> list[tuple[int, str] | None]:
    """(row, anchor) for each label, or None where it can't go: no label overlaps another label or
    leaves the plot at NARROW_PLOT_PX (and so at any wider plot: labels only move apart), and no other
    mark's line runs through it at any width up to WIDE_PLOT_PX."""
    if len(fractions) > MAX_LABELS:
        return [None] * len(fractions)
    taken: list[list[tuple[float, float]]] = [[] for _ in range(LABEL_ROWS)]
    out: list[tuple[int, str] | None] = [None] * len(fractions)
    for i in sorted(range(len(fractions)), key=lambda k: fractions[k]):
        for anchor in ("left", "right"):
            lo, hi = label_extent(fractions[i], texts[i], anchor)
            if lo < 0 or hi > NARROW_PLOT_PX or any(_crosses(fractions[j] - fractions[i], texts[i], anchor)
                                                     for j in range(len(fractions)) if j != i):
                continue
            row = next((r for r in range(LABEL_ROWS)
                        if all(hi + 4 <= a or lo >= b + 4 for a, b in taken[r])), None)
            if row is not None:
                taken[row].append((lo, hi))
                out[i] = (row, anchor)
                break
    return out


def _short(text: str) -> str:
    return text if len(text) <= LABEL_MAX_CHARS else text[:LABEL_MAX_CHARS - 1] + "\u2026"


def _marks(fig: go.Figure, rows: pd.DataFrame, x_range, *, labels: list[str], hovers: list[str], name: str,
           colour: str, dash: str, top: bool) -> go.Figure:
    """Full-height lines at `rows["ts"]`, a hover marker (a trace named `name`) on each, at the top or
    bottom edge, and, where
    `place_labels` finds room, a short label; marks outside the span shown are left out."""
    start, end = _shown_span(fig, x_range, rows["ts"])
    ts = _times(rows["ts"]).reindex(rows.index)
    inside = ((ts >= start) & (ts <= end)).to_numpy()
    rows, ts = rows[inside], ts[inside]
    labels = [x for x, keep in zip(labels, inside) if keep]
    hovers = [x for x, keep in zip(hovers, inside) if keep]
    if rows.empty:
        return fig
    for t in ts:
        fig.add_shape(type="line", x0=t, x1=t, y0=0, y1=1, xref="x", yref="paper",
                      line={"color": colour, "width": 1, "dash": dash}, layer="below")
    fig.update_layout({f"yaxis{MARKER_AXIS[1:]}": {"overlaying": "y", "range": [0, 1], "visible": False,
                                                   "fixedrange": True}})
    # A trace per mark: the unified hover lists one point per trace, so marks close together (two
    # services deployed in the same minute) are all listed when hovering any of them.
    for t, hover in zip(ts, hovers):
        fig.add_trace(go.Scatter(
            x=[t], y=[1 if top else 0], yaxis=MARKER_AXIS, mode="markers", name=name,
            showlegend=False, cliponaxis=False, hovertext=[hover], hoverinfo="text",
            marker={"symbol": "triangle-down" if top else "triangle-up", "size": 10, "color": colour,
                    "line": {"width": 1, "color": "white"}},
        ))
    span = (end - start) or pd.Timedelta(seconds=1)
    fractions = [(t - start) / span for t in ts]
    for t, text, hover, spot in zip(ts, labels, hovers, place_labels(fractions, labels)):
        if spot is None:
            continue
        row, anchor = spot
        fig.add_annotation(
            x=t, y=1 if top else 0, xref="x", yref="paper", text=plot_text(text), showarrow=False,
            xanchor=anchor, yanchor="top" if top else "bottom",
            xshift=LABEL_GAP_PX if anchor == "left" else -LABEL_GAP_PX,
            yshift=-row * LABEL_ROW_PX if top else row * LABEL_ROW_PX,
            font={"size": 11, "color": colour}, bgcolor="rgba(255,255,255,0.8)", hovertext=hover,
        )
    return fig


def add_deploy_markers(
    fig: go.Figure, deploys: pd.DataFrame | None, x_range: tuple[datetime, datetime] | None = None,
) -> go.Figure:
    """A dashed vertical line per deploy inside the span shown (`x_range`, else the figure's), with a
    marker at its top whose hover names service, version, host and time. Up to MAX_LABELS deploys also
    get a short version label beside the line, each only where it overprints nothing."""
    if deploys is None or deploys.empty:
        return fig
    several_services = deploys["service"].nunique() > 1
    labels, hovers = [], []
    for row in deploys.itertuples(index=False):
        labels.append(_short(f"{row.service} {row.version}" if several_services else str(row.version)))
        host = f" on {plot_text(row.host)}" if isinstance(row.host, str) and row.host else ""
        hovers.append(f"deploy {plot_text(row.service)} {plot_text(row.version)}{host}<br>"
                      f"{_naive(row.ts):%Y-%m-%d %H:%M:%S} UTC")
    return _marks(fig, deploys, x_range, labels=labels, hovers=hovers, name="deploys", colour=DEPLOY_COLOUR,
                  dash="dash", top=True)


ACTION_COLOUR = "#7B2CBF"


def add_action_markers(fig: go.Figure, actions: pd.DataFrame | None) -> go.Figure:
    """A dotted vertical line per maintenance action (from `queries.cache_actions`) inside the span the
    figure shows, with a marker at its foot (hover: action, target, time) and, for a few, a short label
    at the bottom where it overprints nothing, so it reads apart from the deploys marked at the top."""
    if actions is None or actions.empty:
        return fig
    labels = [_short(str(row.label)) for row in actions.itertuples(index=False)]
    hovers = [f"{plot_text(row.action)} {plot_text(row.target)}<br>{_naive(row.ts):%Y-%m-%d %H:%M:%S} UTC"
              for row in actions.itertuples(index=False)]
    return _marks(fig, actions, None, labels=labels, hovers=hovers, name="actions", colour=ACTION_COLOUR,
                  dash="dot", top=False)


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
    fig.update_yaxes(title_text="errors (% of requests)", tickformat=".1%", rangemode="tozero", row=2, col=1)
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
                      annotation={"text": f"{name} {y:.0%}" if y_format == "percent" else f"{name} {y:g}",
                                  "font": {"size": 10, "color": colour}, "xanchor": "left", "x": 1,
                                  "yanchor": "middle"})
    fig.update_xaxes(title_text=TIME_AXIS)
    shown = fit_time_axis(fig, df["time"] if "time" in df else [], x_range, deploys=deploys)
    if log_y:
        fig.update_yaxes(type="log", title_text=f"{y_title} (log scale)", ticksuffix=suffix)
    else:
        fig.update_yaxes(title_text=y_title, tickformat=tickformat, ticksuffix=suffix,
                         **({"range": list(y_range)} if y_range else {"rangemode": "tozero"}))
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
    fig.update_xaxes(title_text=TIME_AXIS)
    times = _times(df["time"]) if "time" in df else pd.Series(dtype="datetime64[ns]")
    steps = times.drop_duplicates().sort_values().diff().dropna()
    shown = fit_time_axis(fig, times, x_range, deploys=deploys,
                          bar_width=steps.min() if not steps.empty else None)
    fig.update_yaxes(title_text=y_title, tickformat=tickformat, ticksuffix=suffix, rangemode="tozero")
    _layout(fig, title, height)
    fig.update_layout(barmode="stack", hovermode="x unified")
    return add_deploy_markers(_no_data(fig) if df.empty else fig, deploys, shown)


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
