"""Ingest: is everything the apps send reaching the store? The sources' backlog and lag, and every loss
counted on the way (SDK drops and refusals, collector rejects, quarantined batches, source notes)."""
from __future__ import annotations

from datetime import timedelta

import pandas as pd
import streamlit as st

import dashboard.queries as q
from collectors import config
from collectors import formatting as fmt
from collectors.health.settings import alert_settings
from dashboard import columns, widgets

st.title("Ingest")
st.caption("perfdeck loses nothing silently: every event an SDK dropped or refused, every row the collector "
           "rejected and every batch it quarantined is counted here, by service, reason and source.")
filters = widgets.sidebar_filters()

TEXT, COUNT = columns.text, columns.count
# A source's latest report is state, not history: looked for in the day before the range's end.
SOURCE_LOOKBACK = timedelta(days=1)
COLLECTOR_LATE_S = 60    # the collector reports every ~10 s: past this, say it is not reporting

COLUMNS = {
    "severity": TEXT("Severity"), "message": TEXT("Check", width="large"),
    "check": TEXT("Check name", help="Its name in thresholds.toml"),
    "source": TEXT("Source"), "waiting": COUNT("Waiting", help="Batches waiting to be ingested"),
    "lag": TEXT("Ingest lag", help="Age of the oldest waiting batch"),
    "length": COUNT("Stream length", help="Entries in the Redis stream (XLEN); none for a spool"),
    "unacked": COUNT("Unacknowledged", help="Stream entries delivered to a collector, not yet acknowledged"),
    "reported": TEXT("Last report", help="When the collector last reported this source (about every 10 s)"),
    "error": TEXT("Error", width="large"),
    "service": TEXT("Service", width="medium"), "batches": COUNT("Batches"), "events": COUNT("Events"),
    "last": TEXT("Last batch", help="Before the end of the range"),
    "dropped": COUNT("Dropped by SDK", help="Buffer or retry backlog full: lost"),
    "send_errors": COUNT("Send errors", help="Failed sends, retried: lost only once they turn into drops"),
    "sdk_rejected": COUNT("Refused by SDK", help="Invalid values refused at record time"),
    "collector_rejected": COUNT("Rejected by collector", help="Rows dropped from good batches"),
    "kind": TEXT("Kind"), "reason": TEXT("Reason", width="medium"), "rows": COUNT("Rows"),
    "count": COUNT("Count"), "ts": columns.when("Time (UTC)", seconds=True),
    "name": TEXT("Batch"), "first_seen": columns.when("First (UTC)", seconds=True),
    "last_seen": columns.when("Last (UTC)", seconds=True),
}


def age(seconds) -> str:
    return fmt.duration(seconds, whole=True)


def show(df: pd.DataFrame, name: str, shown: list[str], empty: str) -> None:
    """A table of `shown` columns (its CSV has every column), or a line saying there is nothing."""
    if df.empty:
        st.caption(empty)
    else:
        widgets.table(df, name, column_config={c: COLUMNS[c] for c in shown}, column_order=shown)


def checks_now() -> None:
    """The Ingest checks of the health window ending now, as the Overview banner judges them."""
    try:
        window_s = alert_settings(config.load()).window_s
        until = widgets.TimeRange("health", span=timedelta(seconds=window_s)).bounds()[1]
        data = widgets.load({"checks": q.health_checks}, until=until, window_s=window_s)
    except ValueError:   # a broken [alerts] table or thresholds file: the Overview says which and why
        st.caption("Ingest checks: not assessed, the thresholds or [alerts] settings cannot be used (see the "
                   "Overview).")
        return
    if data is None:
        st.stop()
    checks = data["checks"][data["checks"]["component"] == "Ingest"]
    bad = checks[checks["severity"] != "healthy"]
    span = fmt.duration(window_s)
    if checks.empty:
        st.caption(f"No ingest check had data in the last {span}.")
    elif bad.empty:
        st.success(f"All {len(checks)} ingest checks within their targets over the last {span}.",
                   icon=":material/check_circle:")
    else:
        st.subheader(f"Checks not healthy over the last {span}")
        show(bad, "ingest-checks", ["severity", "message", "check"], "")


def sources(until) -> None:
    st.subheader("Sources")
    st.caption("Each source's latest report from the collector, up to the end of the range.")
    data = widgets.load({"sources": q.ingest_sources}, since=until - SOURCE_LOOKBACK, until=until)
    if data is None:
        st.stop()
    df = data["sources"]
    if df.empty:
        st.caption("No source reported in the day before the end of the range: the collector (`perfdeck "
                   "collect`) reports each of its sources about every 10 s.")
        return
    latest = df["report_age_s"].min()
    if latest > COLLECTOR_LATE_S:
        st.warning(f"The collector last reported {age(latest)} before the end of the range: nothing it "
                   "would ingest is being stored.", icon=":material/warning:")
    shown = df.assign(waiting=df["pending"], lag=df["oldest_pending_s"].map(age),
                      length=df["stream_length"], unacked=df["stream_pending"],
                      reported=df["report_age_s"].map(lambda s: f"{age(s)} ago"))
    show(shown, "ingest-sources", ["source", "waiting", "lag", "length", "unacked", "reported", "error"], "")


def losses(since, until) -> None:
    scope = {"since": since, "until": until, "service": filters.service}
    data = widgets.load({"batches": q.last_batches, "sdk": q.sdk_losses, "reasons": q.sdk_reject_reasons,
                         "rejects": q.collector_rejects}, **scope)
    if data is None:
        return
    per_service = q.service_losses(None, **scope, batches=data["batches"], sdk=data["sdk"], rejects=data["rejects"])
    st.subheader("Services")
    show(per_service.assign(last=per_service["silent_s"].map(lambda s: fmt.MISSING if fmt.missing(s) else f"{age(s)} ago")),
         "ingest-services", ["service", "batches", "events", "last", "dropped", "send_errors", "sdk_rejected",
                             "collector_rejected"], "No batch arrived in this range.")
    st.subheader("Refused by the SDKs")
    show(data["reasons"], "ingest-sdk-rejects", ["service", "kind", "reason", "events"],
         "No event refused by an SDK in this range.")
    st.subheader("Rejected by the collector")
    show(data["rejects"], "ingest-collector-rejects", ["service", "kind", "reason", "rows", "batches", "last_seen"],
         "No row rejected by the collector in this range.")

    other = widgets.load({"quarantined": q.quarantined_batches, "notes": q.source_notes}, since=since, until=until)
    if other is None:
        return
    st.subheader("Quarantined batches")
    st.caption("Whole batches that could not be read or written; each file is kept in the quarantine folder "
               "beside the spool, with its reason.")
    show(other["quarantined"], "ingest-quarantine", ["ts", "source", "name", "reason"],
         "No batch quarantined in this range.")
    st.subheader("Source notes")
    st.caption("What the collector counted that belongs to no batch: something in the spool that is not a batch "
               "(a directory, a fifo, a link), a stale temporary file removed, stream entries deleted before they "
               "were read, a consumer group recreated, samples for a table the store does not have, OTLP bodies "
               "the listener refused (kind otlp: undecodable, bad gzip, another content type, too large) and the "
               "spans it ignored.")
    show(other["notes"], "ingest-source-notes", ["kind", "reason", "count", "first_seen", "last_seen"],
         "No note about a source in this range.")


def body() -> None:
    since, until = filters.range.bounds()
    widgets.range_caption(since, until)
    checks_now()
    sources(until)
    losses(since, until)


widgets.live(body, filters)
