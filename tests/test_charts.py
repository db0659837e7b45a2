"""The figure builders of dashboard/charts.py, from real frames: what the x axis spans, how deploys and
actions are marked (hover, and labels that never overprint), and where the time_lines legend sits."""
from __future__ import annotations

import random
from datetime import datetime, timedelta

import pandas as pd
import pytest

from dashboard import charts

UNTIL = datetime(2026, 12, 3, 18, 0)
SINCE = UNTIL - timedelta(days=30)
DATA_FROM = UNTIL - timedelta(days=4)


def hourly(start: datetime, end: datetime, **columns) -> pd.DataFrame:
    times = pd.date_range(start, end, freq="1h")
    frame = pd.DataFrame({"time": times})
    for name, value in columns.items():
        frame[name] = value
    return frame


def latency_frame(start=DATA_FROM, end=UNTIL) -> pd.DataFrame:
    return hourly(start, end, p50_ms=10.0, p95_ms=50.0, p99_ms=90.0)


def deploys_at(*times, service="api", versions=None, host="web-1") -> pd.DataFrame:
    return pd.DataFrame({"ts": list(times), "service": service,
                         "version": versions or [f"v1.{i}.0" for i in range(len(times))], "host": host})


def build(kind: str, frame: pd.DataFrame, deploys=None, x_range=(SINCE, UNTIL)):
    """Each time chart builder, from the same hourly frame."""
    if kind == "latency":
        return charts.latency_chart(frame, deploys, x_range=x_range)
    if kind == "traffic":
        return charts.traffic_chart(frame.assign(requests_per_s=1.0, requests=3600, error_rate=0.01, errors=36),
                                    deploys, x_range=x_range)
    if kind == "lines":
        return charts.time_lines(frame, {"p50_ms": "p50", "p95_ms": "p95"}, title="t", y_title="y",
                                 x_range=x_range, deploys=deploys)
    if kind == "area":
        return charts.stacked_area(frame.assign(state="idle"), y="p50_ms", stack="state", title="t", y_title="y",
                                   x_range=x_range, deploys=deploys)
    if kind == "bars":
        return charts.stacked_bars(frame.assign(model="m"), y="p50_ms", stack="model", title="t", y_title="y",
                                   x_range=x_range, deploys=deploys)
    raise ValueError(kind)


KINDS = ("latency", "traffic", "lines", "area", "bars")


def axis_range(fig) -> tuple[pd.Timestamp, pd.Timestamp]:
    lo, hi = fig.layout.xaxis.range
    return pd.Timestamp(lo), pd.Timestamp(hi)


def axis_title(fig) -> str:
    """The time axis' title (the bottom axis of a chart with subplots)."""
    titles = [a.title.text for a in (fig.layout[k] for k in fig.layout if k.startswith("xaxis")) if a.title.text]
    assert len(titles) == 1, titles
    return titles[0]


# --- The time axis spans the data when the data covers clearly less than the range ----------------------
@pytest.mark.parametrize("kind", KINDS)
def test_the_axis_spans_the_data_not_the_empty_range(kind):
    fig = build(kind, latency_frame())
    lo, hi = axis_range(fig)
    span = UNTIL - DATA_FROM
    step = timedelta(hours=1) * 0.6 if kind == "bars" else timedelta(0)     # half a bar, and a little
    pad = max(span * charts.PAD_SHARE, step)
    assert lo == pd.Timestamp(DATA_FROM - pad) and hi == pd.Timestamp(UNTIL + pad)
    assert (hi - lo) < timedelta(days=4.5)                   # not the 30 days picked
    title = axis_title(fig)
    assert title.startswith(charts.TIME_AXIS) and "data only from Nov 29 18:00: 4.0 of 30 days" in title
    if kind == "traffic":                                    # both plots, one axis
        assert pd.Timestamp(fig.layout.xaxis2.range[0]) == lo


@pytest.mark.parametrize("kind", KINDS)
def test_the_picked_range_stays_when_the_data_covers_most_of_it(kind):
    fig = build(kind, latency_frame(SINCE + timedelta(days=2), UNTIL))       # 28 of 30 days
    assert axis_range(fig) == (pd.Timestamp(SINCE), pd.Timestamp(UNTIL))
    assert axis_title(fig) == charts.TIME_AXIS


@pytest.mark.parametrize("kind", KINDS)
def test_no_data_keeps_the_range_and_says_so(kind):
    fig = build(kind, latency_frame().head(0))
    assert axis_range(fig) == (pd.Timestamp(SINCE), pd.Timestamp(UNTIL))
    assert "No data in this time range" in [a.text for a in fig.layout.annotations]


def test_data_that_stopped_reads_as_from_to_in_the_unit_of_the_range():
    frame = hourly(UNTIL - timedelta(hours=20), UNTIL - timedelta(hours=14), p50_ms=1.0)
    fig = charts.time_lines(frame, {"p50_ms": "p50"}, title="t", y_title="y",
                            x_range=(UNTIL - timedelta(hours=24), UNTIL))
    assert "data only Dec 2 22:00 to Dec 3 04:00: 6.0 of 24 hours" in axis_title(fig)
    two_hours = (UNTIL - timedelta(hours=15), UNTIL - timedelta(hours=13))
    twenty_min = pd.DataFrame({"time": [UNTIL - timedelta(hours=14), UNTIL - timedelta(hours=13, minutes=40)],
                               "p50_ms": 1.0})
    fig = charts.time_lines(twenty_min, {"p50_ms": "p50"}, title="t", y_title="y", x_range=two_hours)
    assert "data only 04:00 to 04:20: 20 of 120 min" in axis_title(fig)
    fig = charts.time_lines(twenty_min.head(1), {"p50_ms": "p50"}, title="t", y_title="y", x_range=two_hours)
    assert "data only at 04:00" in axis_title(fig)


@pytest.mark.parametrize("hours, picked, said", [
    (6, timedelta(days=30), "6.0 hours of 30 days"),
    (1, timedelta(days=30), "60 min of 30 days"),
    (50, timedelta(days=7), "2.1 of 7 days"),
    (14, timedelta(hours=24), "14 of 24 hours"),
])
def test_the_note_says_the_span_in_the_unit_it_reads_best(hours, picked, said):
    frame = latency_frame(UNTIL - timedelta(hours=hours), UNTIL)
    fig = charts.latency_chart(frame, x_range=(UNTIL - picked, UNTIL))
    assert f": {said}" in axis_title(fig)


def test_a_single_point_gets_room_around_it():
    frame = latency_frame(UNTIL, UNTIL)
    lo, hi = axis_range(charts.latency_chart(frame, x_range=(SINCE, UNTIL)))
    assert lo < pd.Timestamp(UNTIL) < hi and hi - lo == timedelta(days=30) * charts.PAD_SHARE * 2


def test_without_a_range_plotly_autoranges():
    fig = charts.latency_chart(latency_frame())
    assert fig.layout.xaxis.range is None and axis_title(fig) == charts.TIME_AXIS


# --- Deploys: a marker with the version in hover; outside the data: clipped, and said -------------------
def deploy_shapes(fig) -> list[pd.Timestamp]:
    return [pd.Timestamp(s.x0) for s in fig.layout.shapes if s.line.dash == "dash" and s.yref == "paper"]


class Markers:
    """The hover markers of one kind (a trace each), read as one: x, y and hovertext of them all."""

    def __init__(self, traces):
        self.traces = traces
        self.x = [x for t in traces for x in t.x]
        self.y = [y for t in traces for y in t.y]
        self.hovertext = [h for t in traces for h in t.hovertext]


def marker_trace(fig, name: str = "deploys") -> Markers:
    return Markers([t for t in fig.data if t.name == name])


@pytest.mark.parametrize("kind", KINDS)
def test_a_deploy_outside_the_data_is_clipped_and_counted(kind):
    inside, outside = UNTIL - timedelta(days=2), UNTIL - timedelta(days=10)
    fig = build(kind, latency_frame(), deploys_at(outside, inside))
    assert deploy_shapes(fig) == [pd.Timestamp(inside)]
    assert list(marker_trace(fig).x) == [pd.Timestamp(inside)]
    assert [a.text for a in fig.layout.annotations] == ["v1.1.0"]
    assert "1 deploy outside it not drawn" in axis_title(fig)


def test_deploys_in_the_range_are_all_drawn_when_the_range_is_kept():
    frame = latency_frame(SINCE, UNTIL)
    times = [SINCE + timedelta(days=d) for d in (3, 12, 25)]
    fig = charts.latency_chart(frame, deploys_at(*times), x_range=(SINCE, UNTIL))
    assert deploy_shapes(fig) == [pd.Timestamp(t) for t in times]
    assert "not drawn" not in axis_title(fig)


def test_the_deploy_hover_names_service_version_host_and_time_as_text():
    ts = UNTIL - timedelta(days=1, minutes=7)
    fig = charts.latency_chart(latency_frame(), deploys_at(ts, versions=["<b>v2</b>"], host="web-<1>"),
                               x_range=(SINCE, UNTIL))
    marker = marker_trace(fig)
    [trace] = marker.traces
    assert trace.showlegend is False and trace.hoverinfo == "text" and trace.yaxis == charts.MARKER_AXIS
    assert trace.legendgroup in (None, "")      # a group would turn the horizontal legend into a column
    assert list(marker.hovertext) == [f"deploy api &lt;b&gt;v2&lt;/b&gt; on web-&lt;1&gt;<br>{ts:%Y-%m-%d %H:%M:%S} UTC"]
    assert fig.layout.yaxis9.overlaying == "y" and list(fig.layout.yaxis9.range) == [0, 1]
    assert [a.text for a in fig.layout.annotations] == ["&lt;b&gt;v2&lt;/b&gt;"]     # few deploys: labelled too


def test_the_marker_trace_leaves_p95_drawable_over_p99():
    """Compare puts p95 last by sorting on the name: the marker trace is no percentile."""
    fig = charts.latency_chart(latency_frame(), deploys_at(UNTIL - timedelta(days=1)), x_range=(SINCE, UNTIL))
    names = [t.name for t in fig.data]
    assert names == ["p50", "p95", "p99", "deploys"]
    assert [t.name for t in sorted(fig.data, key=lambda t: t.name == "p95")][-1] == "p95"


def test_many_close_deploys_go_to_hover_only():
    times = [UNTIL - timedelta(days=2, minutes=10 * i) for i in range(6)]
    fig = charts.latency_chart(latency_frame(), deploys_at(*times), x_range=(SINCE, UNTIL))
    assert len(deploy_shapes(fig)) == 6 and len(marker_trace(fig).x) == 6
    assert len(marker_trace(fig).traces) == 6        # a trace each: the unified hover lists them all
    assert len(marker_trace(fig).hovertext) == 6
    assert not [a for a in fig.layout.annotations if a.hovertext]          # no label at all


# --- Labels never overprint ---------------------------------------------------------------------------
def label_boxes(fig, width: float) -> list[tuple[float, float, float, float, float]]:
    """(left, right, top, bottom, line x) in px of each marker label, for a plot `width` px wide."""
    lo, hi = axis_range(fig)
    boxes = []
    for a in fig.layout.annotations:
        if not a.hovertext:
            continue
        fraction = (pd.Timestamp(a.x) - lo) / (hi - lo)
        text = a.text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")
        left, right = charts.label_extent(fraction, text, a.xanchor, width)
        top = -a.yshift if a.yanchor == "top" else a.yshift
        boxes.append((left, right, top, top + charts.LABEL_ROW_PX, fraction * width))
    return boxes


def assert_no_overprint(fig, width: float) -> None:
    boxes = label_boxes(fig, width)
    lines = [pd.Timestamp(x) for x in marker_trace(fig).x]
    lo, hi = axis_range(fig)
    line_px = [(t - lo) / (hi - lo) * width for t in lines]
    for i, (left, right, top, bottom, own) in enumerate(boxes):
        assert 0 <= left and right <= width
        assert not [x for x in line_px if abs(x - own) > 1e-6 and left <= x <= right]     # crosses no other line
        for other in boxes[i + 1:]:
            assert right <= other[0] or other[1] <= left or bottom <= other[2] or other[3] <= top, (boxes[i], other)


def assert_labels_above_the_data(fig) -> None:
    """Marker labels sit in the band kept above every y axis' domain (so no data line runs under them), have no
    background, and the figure grew by the band so the data keeps its height."""
    band_px, share = charts.label_band(fig)
    labels = [a for a in fig.layout.annotations if a.hovertext]
    assert labels and band_px > 0
    for a in labels:
        assert (a.yref, a.y, a.yanchor) == ("paper", 1, "top") and a.bgcolor is None
        assert -a.yshift + charts.LABEL_ROW_PX <= band_px
    margin = fig.layout.margin
    plot_px = fig.layout.height - margin.t - margin.b - charts.X_AXIS_PX       # the plot measured short
    for name in (k for k in fig.layout if k.startswith("yaxis") and not fig.layout[k].overlaying):
        top = (fig.layout[name].domain or (0, 1))[1]
        assert (1 - top) * plot_px >= band_px - 1e-6, name


@pytest.mark.parametrize("kind", KINDS)
def test_deploy_labels_sit_above_the_data_not_over_it(kind):
    """Seen in the tour: a label with a white box over the p99 line (Overview) and the network lines (Host)."""
    times = [UNTIL - timedelta(days=3), UNTIL - timedelta(days=3), UNTIL - timedelta(days=1)]
    fig = build(kind, latency_frame(), deploys_at(*times, service=["api", "worker", "api"]))
    assert len([a for a in fig.layout.annotations if a.hovertext]) == 3
    assert_labels_above_the_data(fig)


def test_the_band_keeps_the_data_height_and_the_legend_in_place():
    plain = charts.time_lines(latency_frame(), {"p50_ms": "p50"}, title="t", y_title="y", x_range=(SINCE, UNTIL))
    marked = charts.time_lines(latency_frame(), {"p50_ms": "p50"}, title="t", y_title="y", x_range=(SINCE, UNTIL),
                               deploys=deploys_at(UNTIL - timedelta(days=2)))
    band_px, _ = charts.label_band(marked)
    assert marked.layout.height == plain.layout.height + band_px
    for fig in (plain, marked):        # title and legend stay the same px from the top
        assert (1 - fig.layout.legend.y) * fig.layout.height == pytest.approx(charts.TITLE_TOP_PX + charts.TITLE_PX)
    assert charts.label_band(plain) == (0, 0.0)


@pytest.mark.parametrize("seed", range(40))
def test_up_to_four_deploys_are_labelled_where_nothing_overprints(seed):
    rng = random.Random(seed)
    times = sorted(DATA_FROM + timedelta(minutes=rng.randrange(0, 4 * 24 * 60)) for _ in range(rng.randint(1, 4)))
    versions = [rng.choice(["v1.2.3", "release-2026-12-01", "v10", "hotfix-checkout-rollback"]) for _ in times]
    fig = charts.latency_chart(latency_frame(), deploys_at(*times, versions=versions), x_range=(SINCE, UNTIL))
    for width in (charts.NARROW_PLOT_PX, 560, 1400, 2000, charts.WIDE_PLOT_PX):
        assert_no_overprint(fig, width)


def test_two_close_deploys_are_labelled_on_either_side():
    """20 minutes apart in 4 days: one label left of its line, the other right, neither over a line."""
    times = [UNTIL - timedelta(days=2), UNTIL - timedelta(days=2) + timedelta(minutes=20)]
    fig = charts.latency_chart(latency_frame(), deploys_at(*times, versions=["v1.7.3", "v1.7.4"]),
                               x_range=(SINCE, UNTIL))
    labels = sorted((a for a in fig.layout.annotations if a.hovertext), key=lambda a: pd.Timestamp(a.x))
    assert [(a.text, a.xanchor) for a in labels] == [("v1.7.3", "right"), ("v1.7.4", "left")]
    for width in (charts.NARROW_PLOT_PX, charts.WIDE_PLOT_PX):
        assert_no_overprint(fig, width)


def test_deploys_at_the_same_minute_stack_their_labels():
    times = [UNTIL - timedelta(days=2), UNTIL - timedelta(days=2)]
    fig = charts.latency_chart(latency_frame(), deploys_at(*times, service=["api", "worker"], versions=["v1", "w2"]),
                               x_range=(SINCE, UNTIL))
    labels = [a for a in fig.layout.annotations if a.hovertext]
    assert sorted(a.text for a in labels) == ["api v1", "worker w2"]
    assert sorted(a.yshift for a in labels) == [-charts.LABEL_ROW_PX, 0]
    for width in (charts.NARROW_PLOT_PX, charts.WIDE_PLOT_PX):
        assert_no_overprint(fig, width)


def test_a_label_near_the_right_edge_goes_left_of_its_line():
    fig = charts.latency_chart(latency_frame(), deploys_at(UNTIL - timedelta(minutes=30)), x_range=(SINCE, UNTIL))
    [label] = [a for a in fig.layout.annotations if a.hovertext]
    assert label.xanchor == "right" and label.xshift < 0
    assert_no_overprint(fig, charts.NARROW_PLOT_PX)


def test_a_long_version_is_shortened_in_the_label_not_in_hover():
    version = "build-" + "x" * 60
    fig = charts.latency_chart(latency_frame(), deploys_at(UNTIL - timedelta(days=3), versions=[version]),
                               x_range=(SINCE, UNTIL))
    [label] = [a for a in fig.layout.annotations if a.hovertext]
    assert len(label.text) == charts.LABEL_MAX_CHARS and label.text.endswith("\u2026")
    assert version in marker_trace(fig).hovertext[0]


# --- Actions: the same, marked at the foot -----------------------------------------------------------------
def actions_at(*times) -> pd.DataFrame:
    return pd.DataFrame({"ts": list(times), "label": [f"clear {i}" for i in range(len(times))],
                         "action": "app_cache.clear", "target": "<product_lru>"})


def test_actions_get_a_hover_marker_at_the_foot_and_stay_inside_the_axis():
    frame = hourly(DATA_FROM, UNTIL, hit_rate=0.5)
    fig = charts.time_lines(frame, {"hit_rate": "hit rate"}, title="t", y_title="y", x_range=(SINCE, UNTIL))
    inside, outside = UNTIL - timedelta(days=1), UNTIL - timedelta(days=20)
    fig = charts.add_action_markers(fig, actions_at(outside, inside))
    marker = marker_trace(fig, "actions")
    assert list(marker.x) == [pd.Timestamp(inside)] and list(marker.y) == [0]
    assert marker.hovertext[0].startswith("app_cache.clear &lt;product_lru&gt;<br>")
    assert [pd.Timestamp(s.x0) for s in fig.layout.shapes if s.line.dash == "dot"] == [pd.Timestamp(inside)]
    [label] = [a for a in fig.layout.annotations if a.hovertext]
    assert label.text == "clear 1" and label.yanchor == "top"      # in the band above the data, like a deploy's
    assert_labels_above_the_data(fig)


def test_action_labels_go_under_the_deploy_labels_in_the_band():
    frame = hourly(DATA_FROM, UNTIL, hit_rate=0.5)
    fig = charts.time_lines(frame, {"hit_rate": "hit rate"}, title="t", y_title="y", x_range=(SINCE, UNTIL),
                            deploys=deploys_at(UNTIL - timedelta(days=2)))
    fig = charts.add_action_markers(fig, actions_at(UNTIL - timedelta(days=2)))
    deploy, action = (a for a in fig.layout.annotations if a.hovertext)
    assert (deploy.text, action.text) == ("v1.0.0", "clear 0")
    assert -action.yshift >= -deploy.yshift + charts.LABEL_ROW_PX      # a row of its own, below
    assert_labels_above_the_data(fig)


def test_many_close_actions_go_to_hover_only():
    frame = hourly(DATA_FROM, UNTIL, hit_rate=0.5)
    fig = charts.time_lines(frame, {"hit_rate": "hit rate"}, title="t", y_title="y", x_range=(SINCE, UNTIL))
    fig = charts.add_action_markers(fig, actions_at(*[UNTIL - timedelta(hours=5, minutes=i) for i in range(5)]))
    assert len(marker_trace(fig, "actions").x) == 5
    assert not [a for a in fig.layout.annotations if a.hovertext]


# --- time_lines: title, subtitle and legend stacked, never over each other ------------------------------
def lookup_time_chart(groups: int = 4, **kwargs):
    """The Caches page's "Lookup time": mean and max per cache, two line styles and a subtitle."""
    caches = [f"shop-api · cache_number_{i}" for i in range(groups)]
    frame = pd.concat([hourly(DATA_FROM, UNTIL, cache=c, mean_ms=0.01, max_ms=0.1) for c in caches])
    return charts.time_lines(frame, {"mean_ms": "mean", "max_ms": "max"}, by="cache", title="Lookup time",
                             y_title="lookup time", y_format="ms", x_range=(SINCE, UNTIL), **kwargs)


def test_the_legend_sits_under_the_subtitle_with_room_for_its_rows_at_half_width():
    fig = lookup_time_chart()
    height = fig.layout.height
    assert fig.layout.title.subtitle.text == "solid: mean · dotted: max"
    assert fig.layout.title.yref == fig.layout.legend.yref == "container"
    subtitle_bottom = charts.TITLE_TOP_PX + charts.TITLE_PX + charts.SUBTITLE_PX
    legend_top = (1 - fig.layout.legend.y) * height
    assert fig.layout.legend.yanchor == "top" and legend_top == pytest.approx(subtitle_bottom)
    names = [t.name for t in fig.data if t.showlegend is not False]
    rows = charts.legend_rows(names, charts.HALF_FIGURE_PX - charts.Y_AXIS_PX - 10)
    assert rows >= 2                                   # four entries do not fit in one row at half width
    assert fig.layout.margin.t >= legend_top + rows * charts.LEGEND_ROW_PX
    assert height == 340 + (rows - 1) * charts.LEGEND_ROW_PX     # the plot keeps its height


def test_without_a_subtitle_the_legend_comes_right_under_the_title():
    frame = hourly(DATA_FROM, UNTIL, cpu=50.0)
    fig = charts.time_lines(frame, {"cpu": "CPU"}, title="CPU", y_title="busy", x_range=(SINCE, UNTIL))
    assert not fig.layout.title.subtitle.text
    assert (1 - fig.layout.legend.y) * fig.layout.height == pytest.approx(charts.TITLE_TOP_PX + charts.TITLE_PX)
    assert fig.layout.height == 340


def test_threshold_lines_narrow_the_plot_so_the_legend_takes_more_rows():
    with_lines = lookup_time_chart(hlines=(("target", 0.9),))
    without = lookup_time_chart()
    assert with_lines.layout.margin.r == 75 and with_lines.layout.margin.t > without.layout.margin.t


def test_legend_rows_wrap_like_a_row_of_entries():
    assert charts.legend_rows([]) == 0
    assert charts.legend_rows(["p50", "p95", "p99"], 400) == 1
    entry = charts.LEGEND_ITEM_PX + charts.LEGEND_CHAR_PX * 20
    assert charts.legend_rows(["x" * 20] * 4, entry * 2) == 2
    assert charts.legend_rows(["x" * 20] * 4, entry * 2 - 1) == 4
    ten = 2 * (charts.LEGEND_ITEM_PX + charts.LEGEND_CHAR_PX * 10)     # two entries of ten characters
    assert charts.legend_rows(["&lt;" * 10] * 2, ten) == 1               # as shown: "<" ten times
    assert charts.legend_rows(["x" * 40] * 2, ten) == 2


# --- Legends say only what is drawn, in the order one reads it ----------------------------------------------
def test_a_stack_without_bars_is_left_out_of_the_legend_and_named():
    """Seen on the Cost page: gpt-4o (every call from cache, $0) and an unpriced model in the legend, no bars."""
    frame = pd.concat([hourly(DATA_FROM, UNTIL, model=m, cost=c) for m, c in
                       (("claude", 0.01), ("gpt-4o", 0.0), ("acme-local-7b", 0.0))])
    fig = charts.stacked_bars(frame, y="cost", stack="model", title="t", y_title="spend per hour", y_format="usd",
                              x_range=(SINCE, UNTIL), empty="no priced spend")
    assert [t.name for t in fig.data] == ["claude"]
    assert fig.layout.title.subtitle.text == "No bars (no priced spend): acme-local-7b, gpt-4o"
    nothing = charts.stacked_bars(frame.assign(cost=0.0), y="cost", stack="model", title="t", y_title="y",
                                  x_range=(SINCE, UNTIL), empty="no priced spend")
    assert len(nothing.data) == 3 and not nothing.layout.title.subtitle.text     # all zero: zero bars, as before


def test_the_latency_legend_reads_p50_p95_p99_however_the_lines_are_drawn():
    fig = charts.latency_chart(latency_frame(), x_range=(SINCE, UNTIL))
    fig.data = tuple(sorted(fig.data, key=lambda t: t.name == "p95"))      # Compare draws p95 last
    assert [t.name for t in fig.data] == ["p50", "p99", "p95"]
    assert [t.name for t in sorted(fig.data, key=lambda t: t.legendrank)] == ["p50", "p95", "p99"]


def test_size_and_percent_ticks_read_as_the_tables_do():
    """Seen in the tour: "500MB" and "30%" on the axes beside "487 MB" and "30.1 %" in the tables."""
    frame = hourly(DATA_FROM, UNTIL, rss=487e6, hit=0.62)
    rss = charts.time_lines(frame, {"rss": "RSS"}, title="t", y_title="RSS", y_format="bytes", x_range=(SINCE, UNTIL))
    assert list(rss.layout.yaxis.ticktext) == ["0 B", "100 MB", "200 MB", "300 MB", "400 MB", "500 MB"]
    hits = charts.time_lines(frame, {"hit": "hit rate"}, title="t", y_title="hits", y_format="percent",
                             y_range=(0.6, 1.005), x_range=(SINCE, UNTIL))
    assert list(hits.layout.yaxis.ticktext)[:5] == ["60 %", "70 %", "80 %", "90 %", "100 %"]
    traffic = build("traffic", latency_frame())
    assert list(traffic.layout.yaxis2.ticktext)[:2] == ["0 %", "0.2 %"]
