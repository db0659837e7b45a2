"""What every figure shares: colours, the layout, names as Plotly text, the empty-figure note and
latency ticks."""

import html
import math
import re

import pandas as pd
import plotly.graph_objects as go

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
