"""Compare: the before/after windows shaded, and the forest plot of p95 ratios."""

from datetime import datetime

import pandas as pd
import plotly.graph_objects as go

from dashboard.charts.base import DEPLOY_COLOUR, _layout, _no_data, plot_text

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
