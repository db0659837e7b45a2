"""Database: which statements cost the most time, and how healthy are the sampled databases?"""
from __future__ import annotations

import streamlit as st

import dashboard.queries as q
from collectors.samplers.database import pg_stat_statements_hint
from dashboard import charts, widgets

st.title("Database")
filters = widgets.sidebar_filters()

NUM, TEXT = st.column_config.NumberColumn, st.column_config.TextColumn
SOURCES = {"sdk": "Your services (SDK)", "pg": "PostgreSQL (pg_stat_statements)"}
ORDERS = {"total": "Total time", "mean": "Mean time", "calls": "Calls"}
QUERY_COLUMNS = {
    "service": TEXT("Service"), "target": TEXT("Database"), "database": TEXT("Database"),
    "fingerprint": TEXT("Statement", width="large", help="Literals replaced by ?"),
    "sample_sql": TEXT("Example", width="medium"), "query": TEXT("Statement", width="large"),
    "calls": NUM("Calls", format="localized"), "total_ms": NUM("Total (ms)", format="localized"),
    "mean_ms": NUM("Mean (ms)", format="%.2f"), "p95_ms": NUM("p95 (ms)", format="%.2f", help="From the SDK's histograms"),
    "max_ms": NUM("Max (ms)", format="%.1f"), "rows": NUM("Rows", format="localized"),
    "cache_hit_ratio": NUM("Buffer hits", format="percent", help="shared blocks hit / (hit + read)"),
    "queryid": NUM("queryid", format="plain"),
}
TARGET_COLUMNS = {
    "target": TEXT("Database"), "pgss_enabled": st.column_config.CheckboxColumn("pg_stat_statements"),
    "cache_hit_ratio": NUM("Buffer cache hit ratio", format="percent", help="Since the statistics were last reset"),
    "connections": NUM("Connections"), "max_connections": NUM("Max connections"),
    "size_bytes": NUM("Size", format="bytes"), "file_size_bytes": NUM("File size (SQLite)", format="bytes"),
    "last_sample": st.column_config.DatetimeColumn("Last sample (UTC)", format="YYYY-MM-DD HH:mm"),
}
SEQ_COLUMNS = {
    "target": TEXT("Database"), "table": TEXT("Table"),
    "flagged": st.column_config.CheckboxColumn("Needs a look", help=(
        f"More sequential than index scans on a table of at least {q.database.SEQ_SCAN_MIN_ROWS:,} rows")),
    "seq_scans": NUM("Seq scans", format="localized", help="In this time range"),
    "idx_scans": NUM("Index scans", format="localized", help="In this time range"),
    "seq_share": NUM("Seq share", format="percent"),
    "seq_rows_read": NUM("Rows read by seq scans", format="compact"),
    "live_rows": NUM("Live rows", format="localized"), "dead_rows": NUM("Dead rows", format="localized"),
    "size_bytes": NUM("Size", format="bytes"),
}
QUERY_COLUMN_ORDER = ["service", "target", "fingerprint", "query", "calls", "total_ms", "mean_ms", "p95_ms", "max_ms",
               "rows", "cache_hit_ratio", "database", "sample_sql", "queryid"]
HOW_TO = ("Statements come from the SDK's SQLAlchemy integration; databases are sampled when listed "
          "under `[[database]]` in perfdeck.toml or in `PERFDECK_DATABASE_URLS`.")


def top_queries(since, until, targets) -> None:
    st.subheader("Top queries")
    for target in targets[~targets["pgss_enabled"].fillna(True).astype(bool)]["target"]:
        hint = pg_stat_statements_hint()
        st.info(f"**pg_stat_statements is off on `{target}`**, so its statements are missing from the "
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
        st.info(f"No statements from {SOURCES[source]} in this time range. {HOW_TO}", icon=":material/info:")
        return
    widgets.table(data["queries"], f"top-queries-{source}", column_config=QUERY_COLUMNS,
                  column_order=[c for c in QUERY_COLUMN_ORDER if c in data["queries"]])


def buffer_and_connections(data: dict, x_range) -> None:
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
        widgets.chart(charts.time_lines(ratio, {"hit_ratio": "hit ratio"}, title="Buffer cache hit ratio",
                                        y_title="blocks from memory", y_format="percent", y_range=(low, 1.005),
                                        x_range=x_range), data["hit_ratio"], "db-cache-hit-ratio")
    with right:
        widgets.chart(charts.stacked_area(connections, y="connections", stack="state", title="Connections by state",
                                          y_title="connections", x_range=x_range), data["connections"], "db-connections")


def health(data: dict, x_range) -> None:
    st.subheader("Databases")
    targets = data["targets"][list(TARGET_COLUMNS)].dropna(axis="columns", how="all")  # e.g. PostgreSQL-only ones
    widgets.table(targets, "databases", column_config=TARGET_COLUMNS)
    buffer_and_connections(data, x_range)
    st.subheader("Tables with many sequential scans")
    if data["seq_scans"].empty:
        st.caption("No table was scanned sequentially in this range (PostgreSQL targets only).")
        return
    st.caption("Scans in this time range. A large table read mostly by sequential scans usually "
               "wants an index on the columns its queries filter by.")
    widgets.table(data["seq_scans"][list(SEQ_COLUMNS)], "seq-scan-tables", column_config=SEQ_COLUMNS)


def body() -> None:
    since, until = filters.range.bounds()
    data = widgets.load({"targets": q.db_targets, "hit_ratio": q.db_cache_hit_ratio,
                         "connections": q.db_connections, "seq_scans": q.seq_scan_tables}, since=since, until=until)
    status = widgets.load({"components": q.component_status}, kind="database")
    sdk = widgets.load({"queries": q.sdk_top_queries}, since=since, until=until, service=filters.service)
    if data is None or status is None or sdk is None:
        return
    widgets.range_caption(since, until)
    widgets.down_components(status["components"], "Database")
    if data["targets"].empty and sdk["queries"].empty and status["components"].empty:
        widgets.no_data_yet(f"No statements or database samples in this time range. {HOW_TO}")
        return
    top_queries(since, until, data["targets"])
    if data["targets"].empty:
        st.info(f"No database has been sampled in this time range. {HOW_TO}", icon=":material/info:")
        return
    health(data, (since, until))


widgets.live(body, filters)
