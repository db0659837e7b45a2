"""Compare: did a deploy (or anything between two windows) make an endpoint slower, and is it real?"""
from __future__ import annotations

from datetime import timedelta

import pandas as pd
import streamlit as st

import dashboard.queries as q
from collectors import formatting as fmt
from collectors.store import utcnow
from dashboard import charts, columns, widgets
from dashboard.queries.compare import RULE, SAMPLE_NOTE, describe

st.title("Compare")
filters = widgets.sidebar_filters()

DEPLOY, WINDOWS = "Before/after a deploy", "Two windows"
SPANS = {"15 min": timedelta(minutes=15), "1 h": timedelta(hours=1), "6 h": timedelta(hours=6),
         "24 h": timedelta(hours=24)}
ALL = "All endpoints"
COLUMNS = {
    "service": columns.text("Service"), "endpoint": columns.text("Endpoint"), "verdict": columns.text("Verdict"),
    "p95_ratio": columns.ratio("p95 ratio", help="p95 after / p95 before"),
    "ci": columns.text("95 % CI", help="95 % bootstrap confidence interval of the p95 ratio: the verdict is a "
                               "regression when all of it lies above ×1.10"),
    "body": columns.text("Body", help="Mann–Whitney U test at p < 0.01: is a typical request slower or faster? "
                              "Shown beside the verdict, it does not decide it"),
    "p_value": columns.text("p-value", help="Mann–Whitney U test, one-sided: is after slower?"),
    **{f"{side}_{p}_ms": columns.ms(f"{p} {side} (ms)") for p in ("p95", "p50", "p99") for side in ("before", "after")},
    # Before → after in one column each, so all three percentiles fit the page (the CSV has them as numbers).
    **{p: columns.text(f"{p} (ms)", help=f"{p} before → after", alignment="right") for p in ("p95", "p50", "p99")},
    "p50_ratio": columns.ratio("p50 ratio"),
    "before_n": columns.count("Requests before"), "after_n": columns.count("Requests after"),
    "method": columns.text("Data", help="raw: every request's duration; histogram: per-minute log buckets (about 1 %), "
                                "used where raw events are no longer kept"),
}


# What fits the page; the p50 ratio, the request counts and the data each row came from are in the CSV.
SHOWN = ["service", "endpoint", "verdict", "p95_ratio", "ci", "body", "p_value", "p95", "p50", "p99"]


def before_after(before, after) -> str:
    """'29.2 → 102.5' (ms, one decimal like the other latency columns); a side without a value reads '—'."""
    def one(ms) -> str:
        return fmt.MISSING if fmt.missing(ms) else f"{ms:,.1f}"
    return f"{one(before)} → {one(after)}"


def shown(rows: pd.DataFrame) -> pd.DataFrame:
    """The table as read: the interval, the p-value and each percentile before → after as text."""
    out = rows.assign(ci=[fmt.ratio_range(lo, hi) for lo, hi in zip(rows["ci_low"], rows["ci_high"])],
                      p_value=rows["p_value"].map(lambda p: fmt.p_value(p).removeprefix("p ").removeprefix("= ")),
                      **{p: [before_after(b, a) for b, a in zip(rows[f"before_{p}_ms"], rows[f"after_{p}_ms"])]
                         for p in ("p95", "p50", "p99")})
    return out[list(COLUMNS)]


HOW_TO_MARK = ("Mark deploys with `sdk.mark_deploy(version)` in the service, or `perfdeck deploy VERSION "
               "--service NAME` from the release pipeline.")


def deploy_windows() -> tuple[tuple, tuple, str | None, str] | None:
    """The deploy picked and its windows: (before, after, service, what)."""
    left, right = st.columns([3, 2], vertical_alignment="bottom")
    span = right.segmented_control("Window", list(SPANS), default="1 h", key="compare_span") or "1 h"
    data = widgets.load({"deploys": q.deploy_windows}, service=filters.service, span=SPANS[span])
    if data is None:
        return None
    deploys = data["deploys"]
    if deploys.empty:
        st.info(f"No deploy has been recorded{' for ' + widgets.as_text(filters.service) if filters.service else ''}. "
                f"{HOW_TO_MARK} Or compare two windows.", icon=":material/info:")
        return None
    labels = [f"{d.version} · {d.service} · {d.ts:%Y-%m-%d %H:%M} UTC" for d in deploys.itertuples(index=False)]
    picked = left.selectbox("Deploy", range(len(labels)), format_func=labels.__getitem__, key="compare_deploy")
    d = deploys.iloc[picked or 0]
    if not d.complete:
        open_s = (utcnow() - d.ts).total_seconds()
        st.caption(f"The after window is still open: {fmt.duration(open_s, whole=True)} of its "
                   f"{fmt.duration(SPANS[span].total_seconds())} so far.")
    return (d.before_start, d.before_end), (d.after_start, d.after_end), d.service, f"{d.version} of {d.service}"


def two_windows() -> tuple[tuple, tuple, str | None, str] | None:
    now = utcnow().replace(second=0, microsecond=0)
    defaults = {"cmp_before_from": now - timedelta(hours=2), "cmp_before_to": now - timedelta(hours=1),
                "cmp_after_from": now - timedelta(hours=1), "cmp_after_to": now}
    for key, value in defaults.items():
        st.session_state.setdefault(key, value)   # once, so the inputs don't move with the clock
    cols = st.columns(4)
    names = ("Before: from (UTC)", "Before: to (UTC)", "After: from (UTC)", "After: to (UTC)")
    times = [(col.datetime_input(name, key=key, format="YYYY-MM-DD")
              or defaults[key]).replace(tzinfo=None) for col, name, key in zip(cols, names, defaults)]
    before, after = tuple(times[:2]), tuple(times[2:])
    for name, (start, end) in (("before", before), ("after", after)):
        if start >= end:
            st.warning(f"The {name} window ends before it starts: pick an end after its start.")
            return None
    return before, after, filters.service, filters.service or "all services"


def headline(rows: pd.DataFrame) -> None:
    bad = rows[rows["verdict"] == "regression"]
    if bad.empty:
        st.success(f"**No significant regression** among {len(rows)} endpoint{'s' if len(rows) != 1 else ''}.",
                   icon=":material/check_circle:")
    else:
        st.error(f"**{len(bad)} endpoint{'s' if len(bad) != 1 else ''} regressed significantly.** "
                 f"Worst: {widgets.as_text(describe(bad.iloc[0]))}", icon=":material/trending_up:")
    better = (rows["verdict"] == "improvement").sum()
    notes = ["A window is still open: compared on the data so far." if rows["open"].any() else "",
             f"{better} improved significantly." if better else "",
             "Some endpoints are compared from histograms (raw events are no longer kept for a window)."
             if (rows["method"] == "histogram").any() else ""]
    st.caption(" ".join(n for n in notes if n) + " " + RULE + " " + SAMPLE_NOTE)


def latency(rows: pd.DataFrame, before: tuple, after: tuple, service: str | None) -> None:
    st.subheader("Latency across both windows")
    choices = {f"{r.endpoint}  ·  {r.service}": (r.service, r.endpoint) for r in rows.itertuples(index=False)}
    pick, scale = st.columns([3, 1], vertical_alignment="bottom")
    # A picker of its own per comparison (the windows in its key): Streamlit's browser side kept showing the
    # previous comparison's endpoint when the key stayed and only the state was reset.
    key = f"compare_endpoint:{before[0]:%Y%m%d%H%M%S}:{after[1]:%Y%m%d%H%M%S}:{service or ''}"
    chosen = choices.get(pick.selectbox("Endpoint", [*choices, ALL], key=key))
    log_y = scale.toggle("Log scale", value=True, key="compare_log")
    svc, endpoint = chosen if chosen else (service, None)
    since, until = min(before[0], after[0]), max(before[1], after[1])
    data = widgets.load({"latency": q.latency_over_time}, since=since, until=until, service=svc, endpoint=endpoint)
    marks = widgets.load({"deploys": q.deploys}, since=since, until=until, service=svc)
    if data is None or marks is None:
        return
    fig = charts.latency_chart(data["latency"], marks["deploys"], x_range=(since, until), log_y=log_y,
                               title=f"Latency percentiles: {endpoint or 'all endpoints'}")
    # p95 drawn last and solid, p99 dotted: where the two meet (a narrow tail), the p95 stays in sight.
    fig.data = tuple(sorted(fig.data, key=lambda t: t.name == "p95"))
    fig.update_traces(selector={"name": "p99"}, line={"dash": "dot", "width": 1.5})
    widgets.chart(charts.shade_windows(fig, {"before": before, "after": after}), data["latency"], "compare-latency")


def body() -> None:
    st.caption("Compares the windows chosen here: the sidebar's time range is not used, its service filter is.")
    mode = st.segmented_control("Compare", [DEPLOY, WINDOWS], default=DEPLOY, key="compare_mode") or DEPLOY
    picked = deploy_windows() if mode == DEPLOY else two_windows()
    if picked is None:
        return
    before, after, service, what = picked
    result = widgets.load({"rows": q.compare_windows}, before=before, after=after, service=service)
    if result is None:
        return
    rows = result["rows"]
    st.caption(f"{widgets.as_text(what)}: before {before[0]:%Y-%m-%d %H:%M} → {before[1]:%H:%M}, "
               f"after {after[0]:%Y-%m-%d %H:%M} → {after[1]:%H:%M} UTC")
    if rows.empty:
        st.info("No endpoint has requests in both windows: nothing to compare. Pick other windows.",
                icon=":material/info:")
        return
    headline(rows)
    widgets.table(shown(rows), "compare", column_config=COLUMNS, csv=rows,   # the CSV: numbers as queried
                  column_order=SHOWN)
    st.caption("The CSV also has the p50 ratio, the requests in each window and whether each row is from raw events "
               "or histograms.")
    st.plotly_chart(widgets.shared(charts.ratio_chart, rows), key="chart-compare-ratio")
    latency(rows, before, after, service)


widgets.live(body, filters)
