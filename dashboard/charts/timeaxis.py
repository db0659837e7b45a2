"""The time axis of every time chart: fitted to the data when it covers clearly less of the picked range
(and saying so), and the deploys and maintenance actions marked on it, with labels only where they provably
overprint nothing (the rest in hover): in a band kept above the data, so a label never covers a line."""

from datetime import datetime

import pandas as pd
import plotly.graph_objects as go

from dashboard.charts.base import DEPLOY_COLOUR, TIME_AXIS, plot_text

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
# The label band: the y axes' domains end below it, and the figure grows by it so the data keeps its height.
# Its share of the plot is worked out from a plot height measured generously short (the x axis' ticks, title
# and note take at most X_AXIS_PX), so the band is never lower than its labels.
X_AXIS_PX = 80
BAND_PAD_PX = 4


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
    bottom edge of the data, and, where `place_labels` finds room, a short label in the band above the data;
    marks outside the span shown are left out."""
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
    spots = place_labels(fractions, labels)
    rows_used = max((spot[0] + 1 for spot in spots if spot), default=0)
    if not rows_used:
        return fig
    below = _reserve_band(fig, rows_used * LABEL_ROW_PX + BAND_PAD_PX)     # under the labels already there
    for t, text, hover, spot in zip(ts, labels, hovers, spots):
        if spot is None:
            continue
        row, anchor = spot
        fig.add_annotation(
            x=t, y=1, xref="x", yref="paper", text=plot_text(text), showarrow=False,
            xanchor=anchor, yanchor="top",
            xshift=LABEL_GAP_PX if anchor == "left" else -LABEL_GAP_PX,
            yshift=-(below + row * LABEL_ROW_PX),
            font={"size": 11, "color": colour}, hovertext=hover,
        )
    return fig


def label_band(fig: go.Figure) -> tuple[int, float]:
    """(px, share of the plot area) kept above the data for marker labels; (0, 0.0) when none."""
    meta = fig.layout.meta if isinstance(fig.layout.meta, dict) else {}
    return meta.get("label_band_px", 0), meta.get("label_band_share", 0.0)


def _reserve_band(fig: go.Figure, px: int) -> int:
    """Keep `px` more at the top of the plot area for labels, above every y axis' domain, and make the
    figure that much taller; returns the px of band already there (where the new rows start)."""
    had_px, had_share = label_band(fig)
    margin = fig.layout.margin
    before = fig.layout.height or 450
    height = before + px
    total = had_px + px
    share = total / max(height - (margin.t or 0) - (margin.b or 0) - X_AXIS_PX, total * 2)
    scale = (1 - share) / (1 - had_share)
    for name in [k for k in fig.layout if k.startswith("yaxis")]:
        axis = fig.layout[name]
        if axis.overlaying:         # drawn in the domain of the axis it overlays
            continue
        lo, hi = axis.domain or (0, 1)
        axis.domain = [lo * scale, hi * scale]
    for item in (fig.layout.title, fig.layout.legend):      # placed in px from the top: they stay there
        if item.yref == "container" and isinstance(item.y, (int, float)):
            item.y = 1 - (1 - item.y) * before / height
    meta = fig.layout.meta if isinstance(fig.layout.meta, dict) else {}
    fig.update_layout(height=height, meta={**meta, "label_band_px": total, "label_band_share": share})
    return had_px


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
    figure shows, with a marker at its foot (hover: action, target, time), so it reads apart from the deploys
    marked at the top, and, for a few, a short label in its colour in the band above the data (under the
    deploys' labels) where it overprints nothing."""
    if actions is None or actions.empty:
        return fig
    labels = [_short(str(row.label)) for row in actions.itertuples(index=False)]
    hovers = [f"{plot_text(row.action)} {plot_text(row.target)}<br>{_naive(row.ts):%Y-%m-%d %H:%M:%S} UTC"
              for row in actions.itertuples(index=False)]
    return _marks(fig, actions, None, labels=labels, hovers=hovers, name="actions", colour=ACTION_COLOUR,
                  dash="dot", top=False)
