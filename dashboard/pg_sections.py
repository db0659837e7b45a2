"""The Database page's PostgreSQL sections, drawn from `dashboard.queries.pg_depth` frames: live activity
(long-running with Cancel / Terminate, blocking chains, locks), vacuum and wraparound, table and index
sizes, replication, and one statement's history with its EXPLAIN. Rendering only: the SQL is in the
query functions, the rules of the actions in dashboard.actions."""
from __future__ import annotations

import pandas as pd
import streamlit as st

from collectors import formatting as fmt
from dashboard import charts, columns, widgets
from dashboard.actions import ActionError, make_preview, run_action
from dashboard.actions.pg_backends import CancelBackend, ExplainStatement, TerminateBackend
from dashboard.actions.ui import action_panel, current_actor
from dashboard.queries import pg_depth

TEXT, COUNT, WHEN = columns.text, columns.count, columns.when
ACTIVITY_COLUMNS = {
    "target": TEXT("Database"), "pid": TEXT("pid"), "activity": TEXT("Activity"),
    "query_ms": columns.duration_ms("Running", help="How long its current (or last) statement has run"),
    "xact_ms": columns.duration_ms("Transaction open", help="How old its transaction is"),
    "wait": TEXT("Waiting on", help="pg_stat_activity wait_event_type: wait_event"),
    "blocks": COUNT("Blocks", help="Backends waiting for a lock it holds"),
    "blocked_by": st.column_config.ListColumn("Blocked by", help="pg_blocking_pids()"),
    "locks": st.column_config.ListColumn("Locks", width=170, help="What it waits for, and its locks on your tables"),
    "query": TEXT("Statement", width=160),
}   # what fits the page (a click on a cell shows it whole); the CSV also has the application, user, client
#     address, start times and the raw wait event
TABLE_COLUMNS = {
    "target": TEXT("Database"), "table": TEXT("Table"),
    "needs_vacuum": st.column_config.CheckboxColumn("Needs vacuum", help=(
        f"Dead rows are at least {pg_depth.DEAD_SHARE:.0%} of its rows and at least {pg_depth.DEAD_MIN_ROWS:,}")),
    "dead_rows": COUNT("Dead rows"), "dead_share": columns.percent("Dead share"),
    "last_vacuum": WHEN("Last vacuum (UTC)", help="Manual or autovacuum, the later"),
    "last_analyze": WHEN("Last analyze (UTC)", help="Manual or autoanalyze, the later"),
    "bloat_bytes": columns.size("Bloat (est.)", help=(
        "Heap space beyond what the live rows need, estimated from pg_stats like the usual bloat queries")),
    "xid_age": COUNT("Transaction ID age", help="age(relfrozenxid): transactions since the table was last frozen"),
    "wraparound": TEXT("Wraparound"),
}   # the CSV also has live rows, rows changed since the last analyze, the bloat's share and the time since
#     the last vacuum
XID_COLUMNS = {
    "target": TEXT("Server of"), "database": TEXT("Database"), "wraparound": TEXT("Level"),
    "xid_age": COUNT("Transaction ID age", help="age(datfrozenxid)"),
    "freeze_max_age": COUNT("autovacuum_freeze_max_age"),
    "left_before_stop": COUNT("Left before PostgreSQL stops", help=(
        f"PostgreSQL stops assigning transaction IDs at an age of {pg_depth.XID_STOP_AGE:,}")),
    "used_share": columns.percent("Used"),
}
SIZE_COLUMNS = {
    "target": TEXT("Database"), "table": TEXT("Table"), "size_bytes": columns.size("Total"),
    "heap_bytes": columns.size("Table"), "index_bytes": columns.size("Indexes"), "indexes": COUNT("Indexes (count)"),
    "bloat_bytes": columns.size("Bloat (est.)"), "live_rows": COUNT("Live rows"),
}
INDEX_COLUMNS = {
    "target": TEXT("Database"), "table": TEXT("Table"), "index": TEXT("Index"), "size_bytes": columns.size("Size"),
    "scans": COUNT("Scans", help="Since the statistics were last reset"),
    "is_unique": st.column_config.CheckboxColumn("Unique"), "is_primary": st.column_config.CheckboxColumn("Primary"),
}
REPLICA_COLUMNS = {
    "target": TEXT("Database"), "role": TEXT("Role"), "replica": TEXT("Replica"),
    "lag_bytes": columns.size("Lag (WAL)", help="WAL the replica has not replayed yet"),
    "lag_s": columns.decimal("Lag (s)", help="Primary: replay_lag; standby: since its last replayed transaction"),
}
LEVEL_WORDS = {"critical": "critical", "warning": "warning", "ok": "ok"}


def _levels_note() -> str:
    return (f"Warning from autovacuum_freeze_max_age (PostgreSQL's own anti-wraparound vacuums start there); "
            f"critical from an age of {pg_depth.XID_CRITICAL_AGE:,}, when fewer than "
            f"{pg_depth.XID_CRITICAL_LEFT:,} transactions are left before PostgreSQL stops (pghero's threshold).")


def activity(now: pd.DataFrame, long: pd.DataFrame) -> None:
    """Live backends of the latest sample: blockers, long-running ones with their actions, all others."""
    if now.empty:
        st.caption("No backend was running, waiting or idle in a transaction at the latest sample "
                   "(perfdeck's own are left out).")
        return
    taken = now["ts"].max()
    st.caption(f"Snapshot of {taken:%Y-%m-%d %H:%M:%S} UTC (the latest sample): backends running a statement, idle in a "
               "transaction or waiting; blockers first.")
    for row in now[now["blocks"] > 0].itertuples(index=False):
        waiting = now[(now["target"] == row.target) & now["blocked_by"].map(lambda pids, p=row.pid: p in list(pids))]
        st.warning(widgets.as_text(
            f"{row.target}: backend {row.pid} ({row.activity}, transaction open "
            f"{fmt.duration(row.xact_s or 0)}) blocks {len(waiting)}: "
            + ", ".join(f"{w.pid} ({fmt.duration(w.query_s or 0)} waiting)" for w in waiting.itertuples())),
            icon=":material/lock:")
    widgets.table(now.astype({"pid": str}), "pg-activity", csv=now, column_config=ACTIVITY_COLUMNS,
                  column_order=list(ACTIVITY_COLUMNS))
    st.markdown(f"**Long-running** · statements running, or transactions open, {pg_depth.LONG_RUNNING_S} s or more")
    if long.empty:
        st.caption(f"None: no statement had run, and no transaction had been open, for {pg_depth.LONG_RUNNING_S} s.")
        return
    for row in long.itertuples(index=False):
        label = f"{row.target} · pid {row.pid} · {row.activity} · {fmt.duration(max(row.query_s or 0, row.xact_s or 0))}"
        box = st.expander(widgets.as_text(label), icon=":material/timer:", key=f"backend:{row.target}:{row.pid}:open",
                          on_change="rerun")
        if box.open:
            with box:
                start = row.backend_start.isoformat() if pd.notna(row.backend_start) else None
                preset = {"target": row.target, "pid": int(row.pid), "backend_start": start}
                key = f"backend:{row.target}:{row.pid}:{start}"
                action_panel(CancelBackend(), key=f"{key}:cancel", preset=preset)
                action_panel(TerminateBackend(), key=f"{key}:terminate", preset=preset)


def maintenance(tables: pd.DataFrame, xid: pd.DataFrame) -> None:
    if xid.empty and tables.empty:
        st.caption("No vacuum or transaction-ID figures in this range: they come from PostgreSQL targets.")
        return
    for level, show in (("critical", st.error), ("warning", st.warning)):
        dbs = xid[xid["wraparound"] == level]
        tbls = tables[tables["wraparound"] == level]
        if len(dbs) or len(tbls):
            names = [f"database {r.database} ({r.xid_age:,})" for r in dbs.itertuples()] + \
                    [f"table {r.table} ({r.xid_age:,})" for r in tbls.head(10).itertuples()]
            show(widgets.as_text(f"Transaction-ID wraparound {level}: " + ", ".join(names)
                                 + ". VACUUM (FREEZE) them, and look for long transactions that hold it back."),
                 icon=":material/warning:")
    st.markdown("**Transaction-ID age per database**")
    widgets.table(xid, "pg-xid-ages", column_config=XID_COLUMNS, column_order=list(XID_COLUMNS))
    st.caption(_levels_note())
    st.markdown("**Vacuum, analyze and bloat per table**")
    shown = tables.sort_values(["needs_vacuum", "dead_rows"], ascending=False)
    widgets.table(shown, "pg-table-health", column_config=TABLE_COLUMNS, column_order=list(TABLE_COLUMNS))


def sizes(tables: pd.DataFrame, indexes: pd.DataFrame) -> None:
    if tables.empty:
        st.caption("No table sizes in this range: they come from PostgreSQL targets.")
        return
    st.markdown("**Tables**")
    widgets.table(tables, "pg-table-sizes", column_config=SIZE_COLUMNS, column_order=list(SIZE_COLUMNS))
    st.markdown("**Indexes**")
    if indexes.empty:
        st.caption("No index on the sampled tables.")
        return
    widgets.table(indexes, "pg-index-sizes", column_config=INDEX_COLUMNS, column_order=list(INDEX_COLUMNS))


def replication(df: pd.DataFrame) -> None:
    if df.empty:
        st.caption("No replication figures in this range: they come from PostgreSQL targets.")
        return
    for row in df[(df["role"] == "primary") & (df["replicas"] == 0)].itertuples(index=False):
        st.caption(widgets.as_text(f"{row.target}: primary, no replicas."))
    shown = df[~((df["role"] == "primary") & (df["replicas"] == 0))]
    if not shown.empty:
        widgets.table(shown, "pg-replication", column_config=REPLICA_COLUMNS, column_order=list(REPLICA_COLUMNS))


def statement_picker(statements: pd.DataFrame) -> tuple[str, int] | None:
    """A select box over the Top queries (PostgreSQL) rows: (target, queryid) of the one picked."""
    if statements.empty:
        return None
    choices: dict[str, tuple[str, int]] = {}
    for target, queryid, query in zip(statements["target"], statements["queryid"], statements["query"]):
        text = " ".join(str(query or f"queryid {queryid}").split())
        label = f"{target} · {text[:110]}"
        if label in choices:          # two statements that read alike at this length
            label = f"{label} (queryid {queryid})"
        choices[label] = (target, int(queryid))
    picked = st.selectbox("Statement", list(choices), key="pg_statement",
                          help="One of the Top queries above: its history over the range, and its plan")
    return choices.get(picked)


def statement_history(history: pd.DataFrame, picked: tuple[str, int], x_range, deploys) -> None:
    fig = widgets.shared(charts.statement_history_chart, history, deploys, x_range=x_range,
                         title="Calls, mean and total time of this statement")
    widgets.chart(fig, history, "pg-statement-history")
    explain(*picked)


def explain(target: str, queryid: int) -> None:
    """A plain EXPLAIN of the picked statement, for an operator; the plan shown as text."""
    actor = current_actor()
    if not actor.is_operator:
        st.caption(":material/lock: Explaining a statement reads the database: it needs the operator role.")
        return
    key = f"explain:{target}:{queryid}"
    if st.button("Explain", key=key, icon=":material/account_tree:",
                 help="A plain EXPLAIN (not ANALYZE) of a single SELECT, read-only, with a 5 s timeout"):
        params = {"target": target, "queryid": int(queryid)}
        try:
            _, preview = make_preview(ExplainStatement(), params, actor=actor)
            result = run_action(ExplainStatement(), params, preview, actor=actor)
            st.session_state[key + ":plan"] = ("plan", "\n".join(preview.statements), result.figures["plan"])
        except ActionError as exc:
            st.session_state[key + ":plan"] = ("error", None, str(exc))
    shown = st.session_state.get(key + ":plan")
    if shown is None:
        return
    kind, statements, text = shown
    if kind == "error":
        st.error(widgets.as_text(text))
        return
    st.caption("Ran (read-only):")
    st.code(statements, language="sql", wrap_lines=True)
    st.code(text, language=None)
