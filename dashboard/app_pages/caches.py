"""Caches: are the app caches and the Redis instances earning their keep, and is Redis healthy?"""
from __future__ import annotations

import pandas as pd
import streamlit as st

import dashboard.queries as q
from collectors import formatting as fmt
from collectors.health.settings import configured_thresholds
from dashboard import charts, columns, widgets
from dashboard.actions.app_cache import ClearAppCache
from dashboard.actions.ui import action_panel

st.title("Caches")
filters = widgets.sidebar_filters()

TEXT, COUNT, SIZE, WHEN = columns.text, columns.count, columns.size, columns.when
PCT = {"hit_rate": columns.percent("Hit rate", help="hits / (hits + misses) over the range")}
APP_COLUMNS = {
    "service": TEXT("Service"), "cache": TEXT("Cache"), "lookups": COUNT("Lookups"), **PCT,
    "hits": COUNT("Hits"), "misses": COUNT("Misses"),
    # One precision for both, so a max never reads below its mean.
    "mean_lookup_ms": columns.ms("Mean lookup (ms)", decimals=3), "max_lookup_ms": columns.ms("Max lookup (ms)", decimals=3),
}
REDIS_COLUMNS = {
    "instance": TEXT("Instance"), **PCT,
    "ops_per_sec": columns.decimal("Ops / s", decimals=1, help="Mean over the range"),
    "used_memory": SIZE("Memory used", help="Latest sample"), "used_memory_peak": SIZE("Peak"),
    "maxmemory": SIZE("maxmemory", help="Empty when there is no limit"),
    "evicted_per_sec": columns.decimal("Evictions / s", help="Mean over the range"),
    "mem_fragmentation_ratio": columns.decimal("Fragmentation"),
    "connected_clients": COUNT("Clients"), "keys": COUNT("Keys"), "last_sample": WHEN("Last sample (UTC)"),
}
NAMESPACE_COLUMNS = {
    "instance": TEXT("Instance"), "namespace": TEXT("Namespace"),
    "estimated_bytes": SIZE("Estimated memory", help="Sampled bytes scaled by DBSIZE / sampled keys"),
    "sampled_keys": COUNT("Sampled keys"), "ttl_share": columns.percent("Keys with a TTL"),
    "mean_ttl_sec": COUNT("Mean TTL (s)"), "sampled_at": WHEN("Sampled (UTC)"),
}
TYPE_COLUMNS = {
    "instance": TEXT("Instance"), "type": TEXT("Data type"),
    "estimated_bytes": SIZE("Estimated memory", help="Sampled bytes scaled by DBSIZE / sampled keys"),
    "share": columns.percent("Share of key memory"), "sampled_keys": COUNT("Sampled keys"),
    "sampled_bytes": SIZE("Sampled memory", help="MEMORY USAGE of the sampled keys"),
    "sampled_at": WHEN("Sampled (UTC)", help="The last sample of the pass"),
}
KEY_COLUMNS = {
    "instance": TEXT("Instance"), "key": TEXT("Key", width="large"), "type": TEXT("Data type"),
    "bytes": SIZE("Memory", help="MEMORY USAGE, measured again at every sample"),
    "share": columns.percent("Share of the dataset", help="Memory / INFO used_memory_dataset"),
    "sampled_at": WHEN("Measured (UTC)"),
}
COMMAND_COLUMNS = {
    "instance": TEXT("Instance"), "command": TEXT("Command"), "calls": COUNT("Calls"),
    "calls_per_sec": columns.decimal("Calls / s", decimals=1, help="Mean over the samples in the range"),
    "usec_per_call": columns.decimal("Time per call (µs)", decimals=1),
    "total_ms": columns.duration_ms("Total time"),
    "time_share": columns.percent("Share of command time", help="Of the instance's command time in the range"),
}
CLIENT_COLUMNS = {
    "instance": TEXT("Instance"), "name": TEXT("Client name"), "host": TEXT("Host"),
    "command": TEXT("Command", help="The last command each connection ran (or is blocked in)"),
    "perfdeck": columns.text("perfdeck's own"), "connections": COUNT("Connections"),
    "oldest_ms": columns.duration_ms("Oldest connection"), "idle_min_ms": columns.duration_ms("Least idle"),
    "idle_max_ms": columns.duration_ms("Most idle"), "sampled_at": WHEN("Listed (UTC)"),
}
SLOWLOG_COLUMNS = {
    "ts": WHEN("Time (UTC)", seconds=True), "instance": TEXT("Instance"),
    "duration_ms": columns.ms("Duration (ms)"), "command": TEXT("Command", width="large"), "client": TEXT("Client"),
}
HOW_TO = ("App caches report through `sdk.record_cache(...)` (or the Redis integration's `cached()` "
          "decorator); Redis instances are sampled when listed under `[[redis]]` in perfdeck.toml "
          "or in `PERFDECK_REDIS_URLS`.")


def hit_rate_lines(pairs) -> tuple[tuple[str, float], ...]:
    """The cache_hit_rate levels the health checks use for these (service, cache) pairs: lines only when
    they share one set (overrides per cache can differ), said in a caption otherwise."""
    try:
        lines = configured_thresholds()["cache_hit_rate"].lines_for(pairs)
    except ValueError as exc:   # a broken thresholds file: the Overview says so; here, no lines
        st.caption(f"Hit-rate levels not drawn: {widgets.as_text(exc)}")
        return ()
    if not lines:
        st.caption("The caches drawn have different hit-rate levels (overrides in thresholds.toml): "
                   "no level lines; the health checks judge each against its own.")
    return lines


def app_caches(data: dict, x_range, deploys) -> None:
    st.subheader("App caches")
    if data["summary"].empty:
        st.info(f"No app cache lookups in this time range. {HOW_TO}", icon=":material/info:")
        return
    widgets.table(data["summary"][list(APP_COLUMNS)], "app-caches", column_config=APP_COLUMNS)
    over_time = data["over_time"]
    by = "cache" if data["summary"]["service"].nunique() == 1 else ["service", "cache"]
    widgets.chart(charts.add_action_markers(charts.time_lines(
        over_time, {"hit_rate": "hit rate"}, by=by, title="Hit rate", y_title="hits / lookups",
        y_format="percent", y_range=(0, 1.05), deploys=deploys, x_range=x_range,
        hlines=hit_rate_lines(data["summary"][["service", "cache"]].itertuples(index=False, name=None)),
    ), data["actions"]), over_time, "app-caches-over-time")
    left, right = st.columns(2)
    with left:
        st.plotly_chart(widgets.shared(charts.time_lines,
            over_time, {"mean_lookup_ms": "mean", "max_lookup_ms": "max"}, by=by, title="Lookup time",
            y_title="lookup time", y_format="ms", log_y=True, dashes={"max_lookup_ms": "dot"},
            deploys=deploys, x_range=x_range), key="chart-app-lookup-time")
    with right:
        st.plotly_chart(widgets.shared(charts.time_lines,
            over_time, {"lookups_per_s": "lookups / s"}, by=by, title="Lookups per second",
            y_title="lookups / s", y_format="per_s", deploys=deploys, x_range=x_range), key="chart-app-ops")
    with st.expander(f"By namespace ({len(data['namespaces'])})"):
        widgets.table(data["namespaces"], "app-cache-namespaces", column_config=APP_COLUMNS)


def redis(data: dict, x_range, actions, deploys) -> None:
    st.subheader("Redis")
    if data["summary"].empty:
        st.info(f"No Redis samples in this time range. {HOW_TO}", icon=":material/info:")
        return
    widgets.table(data["summary"][list(REDIS_COLUMNS)], "redis-instances", column_config=REDIS_COLUMNS)
    over_time = data["over_time"]
    lines = {"by": "instance", "x_range": x_range, "deploys": deploys}
    widgets.chart(charts.add_action_markers(charts.time_lines(
        over_time, {"hit_rate": "hit rate"}, title="Keyspace hit rate", y_title="hits / lookups",
        y_format="percent", y_range=(0, 1.05), **lines,
        hlines=hit_rate_lines((None, instance) for instance in data["summary"]["instance"]),
    ), actions), over_time, "redis-over-time")
    left, right = st.columns(2)
    left.plotly_chart(widgets.shared(charts.time_lines, over_time, {"ops_per_sec": "ops / s"},
                                     title="Commands per second", y_title="ops / s", y_format="per_s", **lines),
                      key="chart-redis-ops")
    right.plotly_chart(widgets.shared(charts.time_lines,
        over_time, {"evicted_per_sec": "evicted", "expired_per_sec": "expired"}, title="Evictions and expirations",
        y_title="keys / s", y_format="per_s", dashes={"expired_per_sec": "dot"}, **lines), key="chart-redis-evictions")
    st.plotly_chart(widgets.shared(charts.time_lines,
        over_time, {"used_memory": "used", "used_memory_peak": "peak", "maxmemory": "maxmemory"},
        title="Memory: used, peak and maxmemory", y_title="memory", y_format="bytes",
        dashes={"used_memory_peak": "dot", "maxmemory": "dash"}, **lines), key="chart-redis-memory")

    namespaces(data)
    redis_table(data["types"], "**Memory by data type** (the same pass, estimated to the whole keyspace)",
                "No data types in this range: the database is empty, or the sampler's `sample_keys` is 0.",
                "redis-memory-by-type", TYPE_COLUMNS)
    redis_table(data["keys"], "**Biggest keys** (MEMORY USAGE; the running top over successive samples)",
                "No keys measured in this range: the database is empty, or `sample_keys` is 0.",
                "redis-biggest-keys", KEY_COLUMNS)
    redis_table(data["commands"], "**Commands** (INFO commandstats over the range, most total time first; "
                "perfdeck's own left out)",
                "No commands were called in this range (the sampler's own are not counted).",
                "redis-commands", COMMAND_COLUMNS)
    clients(data["clients"])
    st.markdown("**Slow log** (slowest first)")
    if data["slowlog"].empty:
        st.caption("No SLOWLOG entries in this range.")
    else:
        widgets.table(data["slowlog"], "redis-slowlog", column_config=SLOWLOG_COLUMNS)


def coverage_lines(coverage) -> None:
    """One line per instance: which pass of the keyspace sample the tables below add up, and what share
    of the keys and of the dataset's memory it saw."""
    for row in coverage.itertuples(index=False):
        when = (f"{row.first_sample:%H:%M:%S}–{row.last_sample:%H:%M:%S} UTC" if row.samples > 1
                else f"{row.last_sample:%H:%M:%S} UTC")
        keys = (f"{row.sampled_keys:,} of {row.dbsize:,} keys ({fmt.percent(row.key_share)})"
                if pd.notna(row.dbsize) and pd.notna(row.key_share) else "share of keys not recorded")
        memory = (f"{fmt.size(row.sampled_bytes)}, {fmt.percent(row.memory_share)} of the dataset's memory"
                  if pd.notna(row.memory_share) else "share of memory not recorded")
        whole = "a whole pass over the keyspace" if row.complete else "a pass still under way"
        st.caption(f"{widgets.as_text(row.instance)}: sampled {keys}, {memory}; {row.samples:,} "
                   f"sample{'s' if row.samples != 1 else ''} at {when}, {whole}.")


def namespaces(data: dict) -> None:
    st.markdown("**Memory by key namespace** (one pass of the keyspace sample of each instance)")
    frame = data["namespaces"]
    if frame.empty:
        st.caption("No namespace sample in this range: the database is empty, or the sampler's `sample_keys` is 0.")
        return
    coverage_lines(data["coverage"])
    st.plotly_chart(widgets.shared(charts.bars, frame.head(40), x="estimated_bytes", y="namespace",
                                   colour_by="instance", title="Estimated memory by namespace", x_title="memory",
                                   x_format="bytes"), key="chart-redis-namespaces")
    widgets.table(frame, "redis-namespaces", column_config=NAMESPACE_COLUMNS)


def redis_table(frame, title: str, empty: str, key: str, columns: dict) -> None:
    """One Redis sub-section: its bold title, then its table, or one line on why it is empty."""
    st.markdown(title)
    if frame.empty:
        st.caption(empty)
        return
    widgets.table(frame, key, column_config=columns)


def clients(frame) -> None:
    st.markdown("**Connected clients** (CLIENT LIST at the latest sample, by client name, host and command)")
    if frame.empty:
        st.caption("No client list in this range: the sampler's `clients` setting is off, or it has not run yet.")
        return
    shown = frame.assign(perfdeck=frame["perfdeck"].map({True: "yes", False: ""}))
    widgets.table(shown, "redis-clients", csv=frame, column_config=CLIENT_COLUMNS)


def body() -> None:
    since, until = filters.range.bounds()
    app = widgets.load({"summary": q.app_cache_summary, "namespaces": q.app_cache_namespaces,
                        "over_time": q.app_cache_over_time, "deploys": q.deploys, "actions": q.cache_actions},
                       since=since, until=until, service=filters.service)
    if app is None:
        return
    rds = widgets.load({"summary": q.redis_summary, "over_time": q.redis_over_time,
                        "namespaces": q.redis_namespaces, "coverage": q.redis_sample_coverage,
                        "types": q.redis_memory_by_type, "keys": q.redis_biggest_keys, "commands": q.redis_commands,
                        "clients": q.redis_clients, "slowlog": q.redis_slowlog}, since=since, until=until)
    status = widgets.load({"components": q.component_status}, kind="redis")
    if rds is None or status is None:
        return
    widgets.range_caption(since, until)
    widgets.down_components(status["components"], "Redis")
    if app["summary"].empty and rds["summary"].empty and status["components"].empty:
        widgets.no_data_yet(f"No cache lookups or Redis samples in this time range. {HOW_TO}")
        return
    app_caches(app, (since, until), app["deploys"])
    redis(rds, (since, until), app["actions"], app["deploys"])


widgets.live(body, filters)

# Outside the auto-refreshing fragment: a refresh must not redraw a half-filled action form.
st.subheader("Act on caches")
with st.expander("Clear an in-process cache", icon=":material/mop:"):
    action_panel(ClearAppCache(), key="caches-clear", title=False)
st.markdown(":material/build: Redis keys, cache versions and every other action: [Actions](actions)")
