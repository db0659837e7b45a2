"""Overview: how busy and how fast is each service, and did the last deploy change that?"""
from __future__ import annotations

from datetime import timedelta

import pandas as pd
import streamlit as st

import dashboard.queries as q
from collectors import config
from collectors.health.assess import components, overall
from collectors.health.settings import alert_settings
from dashboard import charts, widgets

st.title("Overview")
filters = widgets.sidebar_filters()

ENDPOINT_COLUMNS = {
    "service": st.column_config.TextColumn("Service"),
    "endpoint": st.column_config.TextColumn("Endpoint"),
    "requests": st.column_config.NumberColumn("Requests", format="localized"),
    "error_rate": st.column_config.NumberColumn("Error rate", format="percent", help="Share of requests that failed"),
    "p50_ms": st.column_config.NumberColumn("p50 (ms)", format="%.1f"),
    "p95_ms": st.column_config.NumberColumn("p95 (ms)", format="%.1f"),
    "p99_ms": st.column_config.NumberColumn("p99 (ms)", format="%.1f"),
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
    "severity": st.column_config.TextColumn("Severity"),
    "component": st.column_config.TextColumn("Component"),
    "message": st.column_config.TextColumn("Check", width="large"),
    "service": st.column_config.TextColumn("Service"),
    "subject": st.column_config.TextColumn("Subject"),
    "check": st.column_config.TextColumn("Threshold", help="Its name in thresholds.toml"),
    "value": st.column_config.NumberColumn("Value", format="%.4g"),
    "unit": st.column_config.TextColumn("Unit"),
    "level": st.column_config.NumberColumn("Level", format="%.4g", help="The level crossed, or the target"),
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
    status, reasons = overall(checks)
    callout, _, icon = SEVERITY_STYLE[status]
    if reasons:
        more = f" and {len(reasons) - SHOWN_REASONS} more" if len(reasons) > SHOWN_REASONS else ""
        text = "; ".join(as_text(r) for r in reasons[:SHOWN_REASONS]) + more
    else:
        text = f"all {len(checks)} checks within their targets"
    callout(f"**Health: {status}** · {text}", icon=icon)
    with st.container(horizontal=True, gap="small"):
        for row in components(checks).itertuples(index=False):
            _, colour, badge_icon = SEVERITY_STYLE[row.severity]
            st.badge(f"{as_text(row.component)}: {row.severity}", icon=badge_icon, color=colour, help=as_text(row.reason))
    with st.expander(f"All checks ({len(checks)}) over the last {span} to {until:%H:%M:%S} UTC, "
                     "not the range picked in the sidebar"):
        widgets.table(checks, "health-checks", column_config=CHECK_COLUMNS, column_order=list(CHECK_COLUMNS))


def headline(now: pd.Series, before: pd.Series | None) -> None:
    """Five metrics, each with its change against the previous period of the same length."""
    cards = [  # column, label, value, help, change format, bad when it goes up
        ("requests_per_s", "Requests / s", f"{now.requests_per_s:,.2f}",
         f"{now.requests:,} requests; averaged since the first one in the range", None, False),
        ("error_rate", "Error rate", f"{now.error_rate:.2%}", f"{now.errors:,} failed (status ≥ 500)",
         lambda d, _: f"{d * 100:+.2f} pts", True),
        *((c, c[:3], widgets.fmt_ms(now[c]), f"{c[:3]} over all requests in the range", None, True)
          for c in ("p50_ms", "p95_ms", "p99_ms")),
    ]
    for col, (name, label, value, help_, fmt, bad_up) in zip(st.columns(5), cards):
        delta, colour, arrow = None, "off", "auto"
        if before is not None and pd.notna(before[name]) and pd.notna(now[name]) and before[name]:
            change = now[name] - before[name]
            if abs(change / before[name]) < 0.0005:
                delta, arrow = "no change", "off"
            else:
                delta = (fmt or (lambda d, b: f"{d / b:+.1%}"))(change, before[name])
                colour = "inverse" if bad_up else "off"
        col.metric(label, value, delta, help=help_, delta_color=colour, delta_arrow=arrow, border=True)
    st.caption("Changes are against the previous period of the same length.")


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
    previous = widgets.load({"totals": q.totals}, since=since - (until - since), until=since,
                            service=filters.service)
    before = previous["totals"].iloc[0] if previous and not previous["totals"].empty else None
    headline(data["totals"].iloc[0], before)

    st.subheader("Endpoints")
    endpoints = data["percentiles"].merge(
        data["traffic"][["service", "endpoint", "error_rate"]], on=["service", "endpoint"], how="left")
    widgets.table(endpoints[list(ENDPOINT_COLUMNS)], "endpoints", column_config=ENDPOINT_COLUMNS)

    st.subheader("Latency over time")
    pick, scale = st.columns([3, 1], vertical_alignment="bottom")
    choices = {f"{e}  ·  {s}": (s, e) for s, e in endpoints[["service", "endpoint"]].itertuples(index=False)}
    chosen = choices.get(pick.selectbox("Endpoint", ["All endpoints", *choices], key="latency_endpoint"))
    log_y = scale.toggle("Log scale", value=True, help="Keeps p50 readable next to a long p99 tail")
    service, endpoint = chosen if chosen else (filters.service, None)
    latency = widgets.load({"latency": q.latency_over_time}, **scope | {"service": service, "endpoint": endpoint})
    if latency is None:
        return
    title = f"Latency percentiles: {endpoint or 'all endpoints'}"     # charts make names Plotly text
    st.plotly_chart(charts.latency_chart(latency["latency"], data["deploys"], x_range=(since, until),
                                         title=title, log_y=log_y), key="latency_chart")
    widgets.csv_download(latency["latency"], "latency-over-time", label="Download chart data (CSV)")

    st.subheader("Traffic")
    st.plotly_chart(charts.traffic_chart(data["rate"], data["deploys"], x_range=(since, until)),
                    key="traffic_chart")
    widgets.csv_download(data["rate"], "traffic-over-time", label="Download chart data (CSV)")
    if not data["deploys"].empty:
        with st.expander(f"Deploys in this range ({len(data['deploys'])})"):
            widgets.table(data["deploys"], "deploys", column_config={
                "ts": st.column_config.DatetimeColumn("Time (UTC)", format="YYYY-MM-DD HH:mm:ss")})


widgets.live(body, filters)
