"""Alerts: what fires now, the silences, the history with filters and CSV, and where the notifications
went; silencing is an operator action like the others (previewed, confirmed, audited)."""
from __future__ import annotations

from datetime import timedelta

import pandas as pd
import streamlit as st

import dashboard.queries as q
from collectors import config
from collectors import formatting as fmt
from collectors.health.notify import host_of
from collectors.health.settings import AlertSettings, alert_settings, configured_thresholds
from collectors.store import utcnow
from dashboard import columns, widgets
from dashboard.actions.alert_actions import EVERY_TARGET, EndSilence, SilenceAlerts
from dashboard.actions.ui import action_panel

st.title("Alerts")

TEXT, WHEN = columns.text, columns.when
COLUMNS = {
    "severity": TEXT("Severity now"), "state": TEXT("State"), "rule": TEXT("Rule"), "target": TEXT("Target"),
    "started_at": WHEN("Fired (UTC)"), "resolved_at": WHEN("Resolved (UTC)"), "firing": TEXT("Firing for"),
    "duration": TEXT("Lasted"), "value": TEXT("Value now", help="The latest evaluation (once resolved: the one "
                                                                "that resolved it)"),
    "threshold": TEXT("Level now", help="The level of the severity now (the target once healthy)"),
    "message": TEXT("Latest message", width=300, help="The latest evaluation (once resolved: the one that resolved it)"),
    "peak_severity": TEXT("Worst severity", help="The worst severity reached while it fired"),
    "peak_value": TEXT("Worst value", help="The worst value seen while it fired (the lowest for hit rates)"),
    "peak_level": TEXT("Worst level", help="The level of the worst severity, as the thresholds are set now"),
    "silenced": st.column_config.CheckboxColumn("Silenced"),
    "notifications": columns.count("Messages", help="Notifications that carried this alert"),
}
SILENCE_COLUMNS = {
    "id": columns.count("#"), "rule": TEXT("Rule"), "target": TEXT("Target"),
    "starts_at": WHEN("From (UTC)"), "ends_at": WHEN("Until (UTC)"),
    "reason": TEXT("Reason"), "created_by": TEXT("By"), "firing": columns.count("Firing alerts it mutes"),
}
NOTIFICATION_COLUMNS = {
    "ts": WHEN("Time (UTC)", seconds=True), "kind": TEXT("Kind"), "channel": TEXT("Channel"),
    "outcome": TEXT("Outcome"), "alerts": columns.count("Alerts"), "attempts": columns.count("Attempts"),
    "error": TEXT("Error"),
}
SPANS = {"Last 24 hours": timedelta(days=1), "Last 7 days": timedelta(days=7), "Last 30 days": timedelta(days=30),
         "Last 400 days": timedelta(days=400)}
ALL = "All"


@st.cache_data(ttl=60, show_spinner=False)
def units() -> dict[str, str]:
    """Each rule's unit, so values read as its messages do ("740 ms", "62 %")."""
    try:
        return {name: threshold.unit for name, threshold in configured_thresholds().items()}
    except ValueError:      # a broken thresholds file: the values as plain numbers
        return {}


@st.cache_data(ttl=60, show_spinner=False)
def thresholds() -> dict:
    try:
        return configured_thresholds()
    except ValueError:      # a broken thresholds file: no level for the worst severity
        return {}


# A severity -> the level it is judged by: crossing it makes that severity (degraded and healthy: the target).
LEVEL_OF = {"critical": "critical", "warning": "warning", "degraded": "target", "healthy": "target"}


def worst_level(row) -> float | None:
    """The level of the row's worst severity, so the worst value is read against its own level, as the value
    now is against the level now."""
    threshold = thresholds().get(row.rule)
    if threshold is None or row.peak_severity not in LEVEL_OF:
        return None
    service = row.service if isinstance(row.service, str) else None
    subject = row.subject if isinstance(row.subject, str) else None
    return getattr(threshold.levels_for(service, subject), LEVEL_OF[row.peak_severity])


def readable(df: pd.DataFrame) -> pd.DataFrame:
    """Values as text in their rule's unit: current and worst side by side, each with its level."""
    unit = df["rule"].map(units()).fillna("")
    df = df.assign(peak_level=[worst_level(row) for row in df.itertuples(index=False)])
    return df.assign(**{c: [fmt.value(v, u) if u else fmt.number(v) for v, u in zip(df[c], unit)]
                        for c in ("value", "threshold", "peak_value", "peak_level")})


def span(seconds: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size and seconds % size == 0:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


@st.cache_data(ttl=60, show_spinner=False)
def settings() -> AlertSettings:
    return alert_settings(config.load())


def how_it_works(s: AlertSettings) -> None:
    where = (f"a webhook to {host_of(s.webhook_url)}" if s.webhook_url
             else "log lines of the collector (set `PERFDECK_ALERT_WEBHOOK` for a Slack-compatible webhook)")
    st.caption(f"Every {span(s.interval_s)} the collector assesses the last {span(s.window_s)}. A check at "
               f"{s.min_severity} or worse must stay there for {span(s.for_s)} before it fires (a single spike never "
               f"does), and resolves at the first evaluation below {s.min_severity}. The same rule and target notify "
               f"at most once per {span(s.throttle_s)}; notifications go to {where}.")


def current(now) -> None:
    data = widgets.load({"active": q.active_alerts, "silences": q.active_silences}, now=now)
    if data is None:
        st.stop()
    active, silences = data["active"], data["silences"]
    st.subheader("Firing now")
    if active.empty:
        st.success("No alerts firing.", icon=":material/check_circle:")
    else:
        shown = readable(active).assign(firing=active["firing_s"].map(fmt.duration))
        # Fits the page: the message says again what severity, value and level now say (it is in the CSV).
        widgets.table(shown[["rule", "target", "severity", "value", "threshold", "peak_severity", "peak_value",
                             "peak_level", "firing", "silenced", "notifications", "started_at", "message"]],
                      "alerts-firing", column_config=COLUMNS, csv=active,
                      column_order=["rule", "target", "severity", "value", "threshold", "peak_severity", "peak_value",
                                    "peak_level", "firing", "silenced"])
    st.subheader("Silences")
    if silences.empty:
        st.caption("No silence is active.")
    else:
        widgets.table(silences.assign(target=silences["target"].fillna(EVERY_TARGET))[list(SILENCE_COLUMNS)],
                      "alert-silences", column_config=SILENCE_COLUMNS)
    with st.expander("Silence alerts", icon=":material/notifications_off:"):
        action_panel(SilenceAlerts(), key="alerts-silence", title=False)
    with st.expander("End a silence", icon=":material/notifications_active:"):
        action_panel(EndSilence(), key="alerts-unsilence", title=False)


def history(now) -> tuple:
    st.subheader("History")
    facets = widgets.load({"facets": q.alert_facets})
    if facets is None:
        return None
    values = facets["facets"].groupby("facet")["value"].apply(list).to_dict()
    cols = st.columns(5)
    label = cols[0].selectbox("When", list(SPANS), index=1, key="alerts-span")
    titles = {"rule": "Rule", "severity": "Worst severity", "state": "State", "target": "Target"}
    picked = {facet: cols[i + 1].selectbox(title, [ALL, *values.get(facet, [])], key=f"alerts-{facet}")
              for i, (facet, title) in enumerate(titles.items())}
    since, until = now - SPANS[label], now + timedelta(minutes=1)
    data = widgets.load({"history": q.alert_history}, since=since, until=until,
                        **{f: None if v == ALL else v for f, v in picked.items()})
    if data is not None:
        df = data["history"]
        if df.empty:
            st.caption("No alerts in this range.")
        else:
            shown = readable(df).assign(duration=df["duration_s"].map(fmt.duration))
            # The worst moment beside the reading now, before the long message (the filter above is by worst).
            # Fits the page: the latest evaluation is its message (severity, value and level now are in the CSV).
            widgets.table(shown[["started_at", "resolved_at", "duration", "state", "peak_severity", "peak_value",
                                 "peak_level", "severity", "value", "threshold", "target", "message", "rule", "silenced",
                                 "notifications"]],
                          "alert-history", column_config=COLUMNS, csv=df,
                          column_order=["started_at", "duration", "state", "peak_severity", "peak_value", "peak_level",
                                        "rule", "target", "message"])
    return since, until, label


def notifications(since, until, label: str, s: AlertSettings) -> None:
    st.subheader("Notifications")
    data = widgets.load({"stats": q.notification_stats, "log": q.notification_log}, since=since, until=until)
    if data is None:
        return
    by_outcome = data["stats"].groupby("outcome")["messages"].sum()
    cards = (("Delivered", "delivered", "Webhook messages answered with a 2xx"),
             ("Dead letters", "dead_letter", f"Webhook messages given up on after {s.webhook_retries} retries"),
             ("Logged", "logged", "Messages written as log lines (no webhook configured)"))
    for col, (title, outcome, help_) in zip(st.columns(3), cards):
        col.metric(title, f"{int(by_outcome.get(outcome, 0)):,}", help=f"{help_}, {label.lower()}", border=True)
    if data["log"].empty:
        st.caption("No notification in this range.")
    else:
        widgets.table(data["log"][list(NOTIFICATION_COLUMNS)], "alert-notifications",
                      column_config=NOTIFICATION_COLUMNS)


try:
    alert_config = settings()
except ValueError as exc:
    st.error(f"The `[alerts]` settings cannot be used: {exc}", icon=":material/error:")
    alert_config = AlertSettings()
how_it_works(alert_config)
now = utcnow()
current(now)        # never from the cache: a silence made here shows at once
rounded = now.replace(microsecond=0) - timedelta(seconds=now.second % widgets.NOW_GRANULARITY_S)
found = history(rounded)       # reruns within the same 10 s share these queries
if found is not None:
    notifications(*found, alert_config)
