"""Database: which statements cost the most time, and how healthy are the sampled databases?"""
from __future__ import annotations

import pandas as pd
import streamlit as st

import dashboard.queries as q
from collectors import formatting as fmt
from collectors.redact import redact
from collectors.samplers.database import pg_stat_statements_hint
from collectors.store import utcnow
from dashboard import charts, columns, pg_sections, widgets
from dashboard.actions.database_actions import CreateIndex, DropIndex
from dashboard.actions.ui import action_panel

st.title("Database")
filters = widgets.sidebar_filters()

TEXT, COUNT, MS, WHEN = columns.text, columns.count, columns.ms, columns.when
SOURCES = {"sdk": "Your services (SDK)", "pg": "PostgreSQL (pg_stat_statements)"}
ORDERS = {"total": "Total time", "mean": "Mean time", "calls": "Calls"}
QUERY_COLUMNS = {
    "service": TEXT("Service"), "target": TEXT("Database"), "database": TEXT("Database"),
    "fingerprint": TEXT("Statement", width="large", help="Literals replaced by ? (the CSV has an example of each)"),
    "query": TEXT("Statement", width="large"),
    "calls": COUNT("Calls"), "total_ms": columns.duration_ms("Total time", help="All its calls together"),
    # One precision for the statement's latencies, so its max never reads below its p95. Mean and p95 are
    # of the same calls (the SDK's counts and its histograms); a few very slow calls pull the mean above it.
    "mean_ms": MS("Mean (ms)", decimals=2, help=(
        "Total time / calls. Above the p95 when fewer than 5 % of the calls, much slower than the rest, "
        "take most of the time")),
    "p95_ms": MS("p95 (ms)", decimals=2, help=(
        "95 % of the calls took at most this (from the SDK's latency histograms of the same calls, within 1 %). "
        "Equal to the max when at least 5 % of the calls took about as long as the slowest")),
    "max_ms": MS("Max (ms)", decimals=2), "rows": COUNT("Rows"),
    "cache_hit_ratio": columns.percent("Buffer hits", help="shared blocks hit / (hit + read)"),
    "calls_per_day": COUNT("Calls / day", help=(
        "Calls over the time the samples in this range cover (since a pg_stat_statements reset, if there was one)")),
}
TARGET_COLUMNS = {
    "target": TEXT("Database"), "pgss_enabled": st.column_config.CheckboxColumn("pg_stat_statements"),
    "cache_hit_ratio": columns.percent("Buffer cache hit ratio", help="Since the statistics were last reset"),
    "connections": COUNT("Connections"), "max_connections": COUNT("Max connections"),
    "size_bytes": columns.size("Size"), "file_size_bytes": columns.size("File size (SQLite)"),
    "last_sample": WHEN("Last sample (UTC)"),
}
SEQ_COLUMNS = {
    "target": TEXT("Database"), "table": TEXT("Table"),
    "flagged": st.column_config.CheckboxColumn("Needs a look", help=(
        f"Sequential scans read at least {q.database.SEQ_ROWS_READ_MIN:,} rows in this range, more than index scans "
        f"fetched, on a table of at least {q.database.SEQ_SCAN_MIN_ROWS:,} rows")),
    "seq_rows_read": COUNT("Rows read by seq scans", help="In this time range"),
    "idx_rows_fetched": COUNT("Rows fetched by index", help="In this time range"),
    "seq_rows_share": columns.percent("Seq share of rows"),
    "seq_scans": COUNT("Seq scans", help="In this time range"),
    "idx_scans": COUNT("Index scans", help="In this time range"),
    "live_rows": COUNT("Live rows"), "size_bytes": columns.size("Size"),
}   # what fits the page; the CSV also has the share of scans and the dead rows
# The example statement and pg_stat_statements' queryid are in the CSV only: the table fits the page.
QUERY_COLUMN_ORDER = ["service", "target", "fingerprint", "query", "calls", "calls_per_day", "total_ms", "mean_ms",
                      "p95_ms", "max_ms", "rows", "cache_hit_ratio", "database"]
ADVICE_COLUMNS = {
    "status": TEXT("Status", help="open, or when it was created from perfdeck (UTC)"),
    "statement": TEXT("Index to create", width=430),
    "est_improvement_pct": columns.percent100("Gain", help=(
        "Estimated: how much cheaper the statements it helps get, weighted by the time each takes today")),
    "time_saved": TEXT("Saved / day", help="Time saved a day, estimated from the calls per day and their mean latency"),
    "calls_day": COUNT("Calls / day"),
    "mean_ms": MS("Mean (ms)", decimals=2, help="Calls-weighted mean latency of the statements it helps, now"),
    # Last, in the room left: a click on the cell shows them all.
    "queries": st.column_config.ListColumn("Statements it helps", width=190),
}
# What fits the page, the long text last; the rest is in the CSV (a finding's DROP INDEX also in its panel).
FINDING_COLUMNS = {
    "kind": TEXT("Finding"), "index_name": TEXT("Index"), "table": TEXT("Table"),
    "columns": st.column_config.ListColumn("Columns"), "size_bytes": columns.size("Size"),
    "dropped_at": WHEN("Dropped (UTC)", help="Empty: not dropped from perfdeck yet"),
    "detail": TEXT("Why", width=240),
}
VERIFY_COLUMNS = {
    "created_at": WHEN("Created (UTC)"), "index_name": TEXT("Index"),
    "columns": st.column_config.ListColumn("Columns"),
    "est_improvement_pct": columns.percent100("Estimated", help="The gain the advisor promised before it was created"),
    "measured_improvement_pct": columns.percent100("Measured", help="The gain measured: 1 - mean since / mean before"),
    "mean_ms_before": MS("Mean before (ms)", decimals=2, help="The 24 hours before it was created"),
    "mean_ms_after": MS("Mean since (ms)", decimals=2, help="Since it was built"),
    "queries": st.column_config.ListColumn("Statements measured", width=200),
}
# What the latest run made of each statement: the verdict first, the statement in the room left.
VERDICT_COLUMNS = {
    "verdict": TEXT("Verdict", help="index: it wants one (above); none: no index helps it, and why; "
                                    "not analysed: why it could not be"),
    "detail": TEXT("Index wanted, or why none", width=420),
    "ms_day": columns.duration_ms("Time / day", help="Execution time a day, from pg_stat_statements or the SDK"),
    "calls_day": COUNT("Calls / day"),
    "query": TEXT("Statement", width=330),
}
VERDICTS = {"create": "index", "none": "none", "failed": "not analysed"}
NO_RUN_YET = ("No index advice yet: the collector runs the advisor hourly on every configured database, "
              "and `perfdeck advise --db URL` runs it on demand.")
HOW_TO = ("Statements come from the SDK's SQLAlchemy integration; databases are sampled when listed "
          "under `[[database]]` in perfdeck.toml or in `PERFDECK_DATABASE_URLS`.")


def top_queries(since, until, targets, deploys) -> None:
    st.subheader("Top queries")
    for target in targets[~targets["pgss_enabled"].fillna(True).astype(bool)]["target"]:
        hint = pg_stat_statements_hint()
        st.info(f"**pg_stat_statements is off on {widgets.as_text(target)}**, so its statements are missing from the "
                f"PostgreSQL view. {hint[0].upper()}{hint[1:]}", icon=":material/lightbulb:")
    source_col, order_col = st.columns([2, 1], vertical_alignment="bottom")
    source = source_col.segmented_control("Source", list(SOURCES), format_func=SOURCES.get, default="sdk",
                                          key="query_source") or "sdk"
    order = order_col.selectbox("Order by", list(ORDERS), format_func=ORDERS.get, key="query_order")
    if source == "sdk":
        data = widgets.load({"queries": q.sdk_top_queries}, since=since, until=until, service=filters.service,
                            order_by=order)
    else:
        data = widgets.load({"queries": q.pg_top_statements}, since=since, until=until, order_by=order)
    if data is None:
        return
    if data["queries"].empty:
        how = HOW_TO if source == "sdk" else ("PostgreSQL statements come from pg_stat_statements on the databases "
                                              "listed under `[[database]]` in perfdeck.toml or in `PERFDECK_DATABASE_URLS`.")
        st.info(f"No statements from {SOURCES[source]} in this time range. {how}", icon=":material/info:")
        return
    queries = data["queries"]
    widgets.table(queries, f"top-queries-{source}", column_config=QUERY_COLUMNS,
                  column_order=[c for c in QUERY_COLUMN_ORDER if c in queries])
    notes = []
    if "p95_ms" in queries and (queries["mean_ms"] > queries["p95_ms"]).any():
        notes.append("Where the mean is above the p95, fewer than 5 % of the statement's calls took most of its "
                     "time: a few calls much slower than the rest.")
    if "p95_ms" in queries and (queries["p95_ms"] >= queries["max_ms"]).any():
        notes.append("Where the p95 is the max, at least 5 % of the calls took about as long as the slowest.")
    if notes:       # both are true of the same calls (mean from their total, p95 from their histograms)
        st.caption(" ".join(notes))
    if source == "pg":
        picked = pg_sections.statement_picker(queries)
        history = picked and widgets.load({"history": q.pg_statement_history}, since=since, until=until,
                                          target=picked[0], queryid=picked[1])
        if history:
            pg_sections.statement_history(history["history"], picked, (since, until), deploys)


def qualified(df: pd.DataFrame) -> pd.Series:
    """schema.table where the advisor named a schema (PostgreSQL), else the table."""
    return df["table_schema"].map(lambda schema: f"{schema}." if isinstance(schema, str) else "") + df["table_name"]


def run_summary(run) -> None:
    """One caption line for a target's latest advisor run; a warning when it failed."""
    ago = fmt.duration(max(0.0, (utcnow() - run.ts).total_seconds()), whole=True)
    parts = [f"Last run {run.ts:%Y-%m-%d %H:%M} UTC ({ago} ago)", q.advisor.METHODS.get(run.method, run.method)]
    if pd.notna(run.statements) and pd.notna(run.analysed):
        parts.append(f"{int(run.analysed):,} of {int(run.statements):,} statements analysed")
    if pd.notna(run.seconds):
        parts.append(f"took {run.seconds:,.1f} s")
    notes = f" {widgets.as_text(redact(run.notes))}" if isinstance(run.notes, str) and run.notes else ""
    st.caption(" · ".join(p for p in parts if isinstance(p, str)) + notes)
    if isinstance(run.error, str) and run.error:
        shown = (f" Showing the findings of the run at {run.findings_ts:%Y-%m-%d %H:%M} UTC."
                 if pd.notna(run.findings_ts) else "")
        st.warning(f"**The last advisor run failed:** {widgets.as_text(redact(run.error))}.{shown}",
                   icon=":material/warning:")


def shown_columns(df: pd.DataFrame, columns: dict, when: str) -> list[str]:
    """The columns to show, without the `when` column (created / dropped) while it is empty throughout."""
    return [c for c in columns if c != when or df[when].notna().any()]


def key_of(row, *parts: str) -> str:
    """A widget key that names one recommendation or finding, stable across runs of the advisor."""
    return "advisor:" + ":".join(str(getattr(row, p)) for p in parts)


def recommendations(advice: pd.DataFrame) -> None:
    if advice.empty:
        st.success("No index is worth creating: the statements the advisor analysed are served well by the "
                   "indexes there are.", icon=":material/check_circle:")
        return
    shown = advice.assign(table=qualified(advice), time_saved=(advice["time_saved_ms_day"] / 1000).map(fmt.duration),
                          status=advice["created_at"].map(lambda t: f"created {t:%Y-%m-%d %H:%M}" if pd.notna(t) else "open"))
    widgets.table(shown, "index-recommendations", column_config=ADVICE_COLUMNS, column_order=list(ADVICE_COLUMNS))
    for row in advice[advice["created_at"].isna()].itertuples(index=False):
        key = key_of(row, "target", "table_schema", "table_name") + ":" + ",".join(row.columns)
        box = st.expander(widgets.as_text(f"Create index on {row.table_name} ({', '.join(row.columns)})"),
                          icon=":material/add:",
                          key=f"{key}:open", on_change="rerun")
        if box.open:        # the panel reads the live catalogue: only for the one being looked at
            with box:
                action_panel(CreateIndex(), key=key, title=False, preset={
                    "target": row.target, "schema": row.table_schema, "table": row.table_name,
                    "columns": list(row.columns), "unique": False})


def findings(found: pd.DataFrame) -> None:
    st.markdown("**Unused and duplicate indexes**")
    if found.empty:
        st.caption("None: every index the advisor looked at is used and covered by no other.")
        return
    widgets.table(found.assign(table=qualified(found)), "index-findings", column_config=FINDING_COLUMNS,
                  column_order=shown_columns(found, FINDING_COLUMNS, "dropped_at"))
    for row in found[found["dropped_at"].isna()].itertuples(index=False):
        key = key_of(row, "target", "table_schema", "index_name")
        box = st.expander(widgets.as_text(f"Drop index {row.index_name} on {row.table_name} ({row.kind})"),
                          icon=":material/delete:",
                          key=f"{key}:open", on_change="rerun")
        if box.open:
            with box:
                action_panel(DropIndex(), key=key, title=False, preset={
                    "target": row.target, "schema": row.table_schema, "index": row.index_name})


def verification(created: pd.DataFrame) -> None:
    st.markdown("**Created indexes: estimate vs measured**")
    if created.empty:
        st.caption("No index advised here has been created from perfdeck yet. Once one is, its statements' "
                   "latency before and after shows here.")
        return
    widgets.table(created.assign(table=qualified(created)), "index-verification", column_config=VERIFY_COLUMNS,
                  column_order=list(VERIFY_COLUMNS))


def verdicts(statements: pd.DataFrame) -> None:
    if statements.empty:
        return
    wanting = int((statements["verdict"] == "create").sum())
    with st.expander(f"What the advisor made of each statement: {wanting:,} of {len(statements):,} want an index",
                     icon=":material/list:"):
        st.caption("Statements that read only catalogues or no table, are already cheap or already indexed, or that "
                   "no index makes at least half as costly get none; each says why.")
        widgets.table(statements.assign(verdict=statements["verdict"].map(VERDICTS).fillna(statements["verdict"])),
                      "advisor-statements", column_config=VERDICT_COLUMNS, column_order=list(VERDICT_COLUMNS))


def index_advisor(data: dict) -> None:
    st.subheader("Index advisor")
    runs = data["runs"]
    if runs.empty:
        st.caption(NO_RUN_YET)
        return
    names = runs["target"].tolist()
    target = names[0]
    if len(names) > 1:       # start on a database with something to act on, not on one whose run failed
        open_advice = set(data["advice"].loc[data["advice"]["created_at"].isna(), "target"])
        first = next((i for i, name in enumerate(names) if name in open_advice), 0)
        target = st.columns([1, 2])[0].selectbox("Database", names, index=first, key="advisor_target")
    run = next(runs[runs["target"] == target].itertuples(index=False))
    run_summary(run)
    if pd.isna(run.findings_ts):
        return                  # every run failed: nothing to show but the error
    mine = {name: df[df["target"] == target] for name, df in data.items()}
    recommendations(mine["advice"])
    verdicts(mine["statements"])
    findings(mine["findings"])
    verification(mine["verification"])


def buffer_and_connections(data: dict, x_range, deploys) -> None:
    ratio, connections = data["hit_ratio"], data["connections"]
    if ratio.empty and connections.empty:
        st.caption("Buffer cache and connection statistics come from PostgreSQL targets only.")
        return
    names = sorted(set(ratio["target"]) | set(connections["target"]))
    if len(names) > 1:
        picked = st.selectbox("Database", names, key="db_target", help="For the two charts below")
        ratio, connections = ratio[ratio["target"] == picked], connections[connections["target"] == picked]
    low = min(0.9, ratio["hit_ratio"].min() - 0.02) if not ratio.empty else 0
    left, right = st.columns(2)
    with left:
        fig = widgets.shared(charts.time_lines, ratio, {"hit_ratio": "hit ratio"}, title="Buffer cache hit ratio",
                             y_title="blocks from memory", y_format="percent", y_range=(low, 1.005),
                             x_range=x_range, deploys=deploys)
        widgets.chart(fig, data["hit_ratio"], "db-cache-hit-ratio")
    with right:
        fig = widgets.shared(charts.stacked_area, connections, y="connections", stack="state",
                             title="Connections by state", y_title="connections", x_range=x_range, deploys=deploys)
        widgets.chart(fig, data["connections"], "db-connections")


def health(data: dict, x_range, deploys) -> None:
    st.subheader("Databases")
    targets = data["targets"][list(TARGET_COLUMNS)].dropna(axis="columns", how="all")  # e.g. PostgreSQL-only ones
    widgets.table(targets, "databases", column_config=TARGET_COLUMNS)
    buffer_and_connections(data, x_range, deploys)
    st.subheader("Tables with many sequential scans")
    if data["seq_scans"].empty:
        st.caption("No table was scanned sequentially in this range (PostgreSQL targets only).")
        return
    st.caption("Rows read in this time range. A large table whose rows are read mostly by sequential scans "
               "usually wants an index on the columns its queries filter by.")
    widgets.table(data["seq_scans"], "seq-scan-tables", column_config=SEQ_COLUMNS, column_order=list(SEQ_COLUMNS))


def postgres(data: dict) -> None:
    st.subheader("PostgreSQL")
    if data["xid"].empty and data["activity"].empty and data["tables"].empty:
        st.caption("Live activity, vacuum, wraparound, sizes and replication come from PostgreSQL targets: none "
                   "was sampled in this range.")
        return
    live, vacuum, sizes, replicas = st.tabs(["Activity", "Vacuum & wraparound", "Sizes", "Replication"])
    with live:
        pg_sections.activity(data["activity"], data["long"])
    with vacuum:
        pg_sections.maintenance(data["tables"], data["xid"])
    with sizes:
        pg_sections.sizes(data["tables"], data["indexes"])
    with replicas:
        pg_sections.replication(data["replication"])


def body() -> None:
    since, until = filters.range.bounds()
    data = widgets.load({"targets": q.db_targets, "hit_ratio": q.db_cache_hit_ratio,
                         "connections": q.db_connections, "seq_scans": q.seq_scan_tables,
                         "activity": q.pg_activity_now, "long": q.pg_long_running, "tables": q.pg_table_health,
                         "xid": q.pg_xid_ages, "indexes": q.pg_index_sizes, "replication": q.pg_replication},
                        since=since, until=until)
    status = widgets.load({"components": q.component_status}, kind="database")
    sdk = widgets.load({"queries": q.sdk_top_queries, "deploys": q.deploys}, since=since, until=until,
                       service=filters.service)
    advisor = widgets.load({"runs": q.advisor_runs, "advice": q.index_recommendations, "findings": q.index_findings,
                            "verification": q.index_verification, "statements": q.advisor_statements})
    if data is None or status is None or sdk is None or advisor is None:
        return
    widgets.range_caption(since, until)
    widgets.down_components(status["components"], "Database")
    if data["targets"].empty and sdk["queries"].empty and status["components"].empty and advisor["runs"].empty:
        widgets.no_data_yet(f"No statements or database samples in this time range. {HOW_TO}")
        return
    top_queries(since, until, data["targets"], sdk["deploys"])
    index_advisor(advisor)
    if data["targets"].empty:
        st.info(f"No database has been sampled in this time range. {HOW_TO}", icon=":material/info:")
        return
    health(data, (since, until), sdk["deploys"])
    postgres(data)


widgets.live(body, filters)
