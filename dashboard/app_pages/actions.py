"""Actions: clear caches, maintain databases and the store, each previewed, confirmed and audited;
and the audit log of everything that was tried."""
from __future__ import annotations

from datetime import timedelta

import streamlit as st

import dashboard.queries as q
from collectors.store import utcnow
from dashboard import columns, widgets
from dashboard.actions import catalog
from dashboard.actions.ui import action_panel

st.title("Actions")
st.caption("Every action shows a preview of exactly what it will do, needs the operator role and a "
           "confirmation, and leaves a row in the audit log below, whatever its outcome.")

area = st.segmented_control("Area", list(catalog.AREAS), default=next(iter(catalog.AREAS)), key="area",
                            bind="query-params", required=True)
actions = {a.name: a for a in catalog.AREAS[area]}
name = st.selectbox("Action", list(actions), format_func=lambda n: actions[n].title, key="action")
with st.container(border=True):
    action_panel(actions[name](), key=f"action-{name}")

TEXT = columns.text
AUDIT_COLUMNS = {
    "ts": columns.when("Time (UTC)", seconds=True), "actor": TEXT("Who"), "action": TEXT("Action", width=160),
    "target": TEXT("Target", width=160), "outcome": TEXT("Outcome"), "duration_ms": columns.duration_ms("Took"),
    "result": TEXT("Result", width=300, help="What it did, or the error that stopped it"),
    "error": TEXT("Error"), "params": TEXT("Parameters"), "preview": TEXT("Preview"), "figures": TEXT("Figures"),
}
# What fits the page, the result last; parameters, preview and figures are in the CSV.
AUDIT_SHOWN = ["ts", "actor", "action", "target", "outcome", "duration_ms", "result"]
SPANS = {"Last 24 hours": timedelta(days=1), "Last 7 days": timedelta(days=7), "Last 30 days": timedelta(days=30),
         "Last 400 days": timedelta(days=400)}
ALL = "All"

st.subheader("Audit log")
facets = widgets.load({"facets": q.audit_facets})
if facets is not None:
    values = facets["facets"].groupby("facet")["value"].apply(list).to_dict()
    cols = st.columns(4)
    span = cols[0].selectbox("When", list(SPANS), index=1, key="audit-span")
    picked = {facet: cols[i + 1].selectbox(facet.title(), [ALL, *values.get(facet, [])], key=f"audit-{facet}")
              for i, facet in enumerate(("actor", "action", "outcome"))}
    until = utcnow() + timedelta(minutes=1)
    log = widgets.load({"log": q.audit_log}, since=until - SPANS[span], until=until,
                       **{f: None if v == ALL else v for f, v in picked.items()})
    if log is not None:
        if log["log"].empty:
            st.caption("No actions in this range.")
        else:
            rows = log["log"][list(AUDIT_COLUMNS)]
            failed = rows["error"].notna() & (rows["error"] != "")
            shown = rows.assign(result=rows["result"].where(~failed, "error: " + rows["error"].astype(str)))
            widgets.table(shown, "action-audit", column_config=AUDIT_COLUMNS, column_order=AUDIT_SHOWN, csv=rows)
