"""Overview: how busy and how fast is each service, and did the last deploy change that?"""
from __future__ import annotations

from datetime import timedelta

import pandas as pd
import streamlit as st

import dashboard.queries as q
from collectors import config
from collectors import formatting as fmt
from collectors.health.assess import components, overall
from collectors.health.settings import alert_settings
from dashboard import charts, columns, widgets

st.title("Overview")
filters = widgets.sidebar_filters()

ENDPOINT_COLUMNS = {
    "service": columns.text("Service"),
    "endpoint": columns.text("Endpoint"),
    "requests": columns.count("Requests"),
    "error_rate": columns.percent("Error rate", help="Share of requests that failed"),
    "p50_ms": columns.ms("p50 (ms)"),
    "p95_ms": columns.ms("p95 (ms)"),
    "p99_ms": columns.ms("p99 (ms)"),
    "tail": columns.text("Tail", help="With few requests a p95 or p99 is no more than the slowest two of them: "
                                      "read it as a maximum, not as a tail."),
}
# severity: (callout, badge colour, icon)
SEVERITY_STYLE = {
    "healthy": (st.success, "green", ":material/check_circle:"),
    "degraded": (st.info, "blue", ":material/info:"),
    "warning": (st.warning, "orange", ":material/warning:"),
    "critical": (st.error, "red", ":material/error:"),
}
SHOWN_REASONS = 3
as_text = widgets.as_text   # messages name services, endpoints, caches and sources as recorded

CHECK_COLUMNS = {
    "severity": columns.text("Severity"),
    "component": columns.text("Component"),
    "value": columns.text("Value"),
    "level": columns.text("Level", help="The level crossed, or the target"),
    "check": columns.text("Check name", help="Its name in thresholds.toml"),
    # Last, in the room left; it names the service and subject (their own columns are in the CSV).
    "message": columns.text("Check", width=480),
}


def health_banner() -> None:
    """Current health: the checks of the last [alerts] window ending now, whatever range is picked."""
    try:
        window_s = alert_settings(config.load()).window_s
        until = widgets.TimeRange("health", span=timedelta(seconds=window_s)).bounds()[1]
        data = widgets.load({"checks": q.health_checks}, until=until, window_s=window_s)
    except ValueError as exc:   # a broken [alerts] table or thresholds file
        st.error(f"**Health: not assessed.** {as_text(exc)}", icon=":material/error:")
        return
    if data is None:
        return
    checks, span = data["checks"], f"{window_s / 60:g} min" if window_s >= 60 else f"{window_s:g} s"
    if checks.empty:
        st.caption(f"Health: nothing had enough data in the last {span} to be judged.")
        return
    status, reasons = widgets.shared(overall, checks)
    callout, _, icon = SEVERITY_STYLE[status]
    if reasons:
        more = f" and {len(reasons) - SHOWN_REASONS} more" if len(reasons) > SHOWN_REASONS else ""
        text = "; ".join(as_text(r) for r in reasons[:SHOWN_REASONS]) + more
    else:
        text = f"all {len(checks)} checks within their targets"
    callout(f"**Health: {status}** · {text}", icon=icon)
    with st.container(horizontal=True, gap="small"):
        for row in widgets.shared(components, checks).itertuples(index=False):
            _, colour, badge_icon = SEVERITY_STYLE[row.severity]
            st.badge(f"{as_text(row.component)}: {row.severity}", icon=badge_icon, color=colour, help=as_text(row.reason))
    with st.expander(f"All checks ({len(checks)}) over the last {span} to {until:%H:%M:%S} UTC, "
                     "not the range picked in the sidebar"):
        shown = checks.assign(value=[fmt.value(v, u) for v, u in zip(checks["value"], checks["unit"])],
                              level=[fmt.value(v, u) for v, u in zip(checks["level"], checks["unit"])])
        widgets.table(shown, "health-checks", column_config=CHECK_COLUMNS, column_order=list(CHECK_COLUMNS), csv=checks)


TYPICAL_HELP = ("{p} of a typical request: each endpoint's {p} weighted by its requests in the range (all "
                "requests pooled would swing with the traffic mix). The change applies this range's mix to the "
                "previous period's endpoints, so it moves only when endpoints get faster or slower.")


def headline(now: pd.Series, before: pd.Series | None, typical: pd.Series, typical_before: pd.Series) -> None:
    """Five metrics, each with its change against the previous period of the same length."""
    cards = [  # label, value now, value before, shown, help, change format, bad when it goes up
        ("Requests / s", now.requests_per_s, None if before is None else before.requests_per_s,
         f"{now.requests_per_s:,.2f}", f"{now.requests:,} requests; averaged since the first one in the range",
         None, False),
        ("Error rate", now.error_rate, None if before is None else before.error_rate, fmt.percent(now.error_rate),
         f"{now.errors:,} failed (status ≥ 500)", lambda d, _: f"{d * 100:+.2f} pts", True),
        *((f"Typical {c[:3]}", typical[c], typical_before[c], fmt.ms(typical[c]), TYPICAL_HELP.format(p=c[:3]), None,
           True)
          for c in ("p50_ms", "p95_ms", "p99_ms")),
    ]
    for col, (label, value, previous, shown, help_, change, bad_up) in zip(st.columns(5), cards):
        delta, colour, arrow = None, "off", "auto"
        if not fmt.missing(previous) and not fmt.missing(value) and previous:
            difference = value - previous
            if abs(difference / previous) < 0.0005:
                delta, arrow = "no change", "off"
            else:
                delta = (change or (lambda d, b: f"{d / b * 100:+.1f} %"))(difference, previous)
                colour = "inverse" if bad_up else "off"
        col.metric(label, shown, delta, help=help_, delta_color=colour, delta_arrow=arrow, border=True)
    st.caption("Changes are against the previous period of the same length. Typical: each endpoint's percentile "
               "weighted by its requests. The chart below takes each percentile over all requests pooled, not per "
               "endpoint, so its lines can sit higher or lower than the cards.")


def tail_note(requests: int) -> str:
    """When a percentile of `requests` is interpolated between the two slowest requests (its rank
    q·(n−1) lies past n−2): below 20 requests for p95, below 100 for p99."""
    if requests == 1:
        return "p95 and p99: its only request"
    rests = [name for name, q in (("p95", 0.95), ("p99", 0.99)) if q * (requests - 1) > requests - 2]
    return f"{' and '.join(rests)} from the 2 slowest" if rests else ""


def body() -> None:
    banner = st.container()   # filled once the store is known to answer, so a missing store says so once
    since, until = filters.range.bounds()
    scope = {"since": since, "until": until, "service": filters.service}
    data = widgets.load({
        "totals": q.totals, "percentiles": q.endpoint_percentiles, "traffic": q.endpoint_traffic,
        "rate": q.traffic_over_time, "deploys": q.deploys,
    }, **scope)
    if data is None:
        return
    with banner:
        health_banner()
    widgets.range_caption(since, until)
    if data["totals"].empty:
        if widgets.service_names():
            st.info("No requests were recorded in this time range. Pick a longer range in the sidebar.")
        else:
            widgets.no_data_yet("The store is empty.")
        return
    previous = widgets.load({"totals": q.totals, "percentiles": q.endpoint_percentiles},
                            since=since - (until - since), until=since, service=filters.service)
    before = previous["totals"].iloc[0] if previous and not previous["totals"].empty else None
    endpoints_before = previous["percentiles"] if previous else data["percentiles"].iloc[:0]
    headline(data["totals"].iloc[0], before, widgets.shared(q.typical_percentiles, data["percentiles"]),
             widgets.shared(q.typical_percentiles, endpoints_before, mix=data["percentiles"]))

    st.subheader("Endpoints")
    endpoints = data["percentiles"].merge(
        data["traffic"][["service", "endpoint", "error_rate"]], on=["service", "endpoint"], how="left")
    endpoints["tail"] = endpoints["requests"].map(tail_note)
    # The tail note only where some endpoint has one: with enough requests everywhere it would be an empty column.
    shown = [c for c in ENDPOINT_COLUMNS if c != "tail" or endpoints["tail"].astype(bool).any()]
    widgets.table(endpoints[list(ENDPOINT_COLUMNS)], "endpoints", column_config=ENDPOINT_COLUMNS, column_order=shown)

    st.subheader("Latency over time")
    pick, scale = st.columns([3, 1], vertical_alignment="bottom")
    choices = {f"{e}  ·  {s}": (s, e) for s, e in endpoints[["service", "endpoint"]].itertuples(index=False)}
    chosen = choices.get(pick.selectbox("Endpoint", ["All endpoints", *choices], key="latency_endpoint"))
    log_y = scale.toggle("Log scale", value=True, help="Keeps p50 readable next to a long p99 tail")
    service, endpoint = chosen if chosen else (filters.service, None)
    latency = widgets.load({"latency": q.latency_over_time}, **scope | {"service": service, "endpoint": endpoint})
    if latency is None:
        return
    # All endpoints: every request pooled (a slow endpoint's tail shows), unlike the cards' typical request.
    title = f"Latency percentiles: {endpoint or 'all requests pooled'}"     # charts make names Plotly text
    st.plotly_chart(widgets.shared(charts.latency_chart, latency["latency"], data["deploys"],
                                   x_range=(since, until), title=title, log_y=log_y), key="latency_chart")
    widgets.csv_download(latency["latency"], "latency-over-time", label="Download chart data (CSV)")

    st.subheader("Traffic")
    st.plotly_chart(widgets.shared(charts.traffic_chart, data["rate"], data["deploys"], x_range=(since, until)),
                    key="traffic_chart")
    widgets.csv_download(data["rate"], "traffic-over-time", label="Download chart data (CSV)")
    if not data["deploys"].empty:
        with st.expander(f"Deploys in this range ({len(data['deploys'])})"):
            widgets.table(data["deploys"], "deploys", column_config={"ts": columns.when("Time (UTC)", seconds=True)})


widgets.live(body, filters)
