"""Host: is the machine (CPU, memory, disks, network) or one of the watched processes the bottleneck?"""
from __future__ import annotations

import streamlit as st

import dashboard.queries as q
from dashboard import charts, columns, widgets

st.title("Host")
filters = widgets.sidebar_filters()

TEXT, SIZE = columns.text, columns.size
ALL_HOSTS = "All hosts"
DISK_COLUMNS = {
    "host": TEXT("Host"), "mount": TEXT("Mount"),
    "used_percent": st.column_config.ProgressColumn("Used %", format="%.1f %%", min_value=0, max_value=100),
    "used_bytes": SIZE("Used space"), "total_bytes": SIZE("Size"),
}
PROCESS_COLUMNS = {
    "host": TEXT("Host"), "process": TEXT("Process"), "pid": st.column_config.NumberColumn("PID", format="%d"),
    "cpu_percent": columns.decimal("CPU %", decimals=1, help="100 = one core busy"), "rss_bytes": SIZE("RSS"),
    "threads": columns.count("Threads"), "open_files": columns.count("Open files"),
    "last_seen": columns.when("Last sample (UTC)", seconds=True),
}
HOW_TO = ("`perfdeck collect` samples this machine (the `[host]` section of perfdeck.toml picks the "
          "processes to watch); run it on each host you want here.")


def time_lines(where, key: str, *args, **kwargs) -> None:
    where.plotly_chart(widgets.shared(charts.time_lines, *args, **kwargs), key=f"chart-{key}")


def machine(data: dict, lines: dict) -> None:
    over_time = data["over_time"]
    left, right = st.columns(2)
    time_lines(left, "cpu", over_time, {"cpu_percent": "CPU"}, title="CPU (all cores)", y_title="busy",
               y_format="percent100", y_range=(0, 100), **lines)
    time_lines(right, "mem", over_time, {"mem_percent": "memory", "swap_percent": "swap"},
               title="Memory and swap in use", y_title="in use", y_format="percent100",
               y_range=(0, 100), dashes={"swap_percent": "dot"}, **lines)
    left, right = st.columns(2)
    time_lines(left, "disk-io", over_time, {"disk_read_bps": "read", "disk_write_bps": "write"},
               title="Disk I/O", y_title="throughput", y_format="bytes_per_s", dashes={"disk_write_bps": "dot"}, **lines)
    time_lines(right, "net", over_time, {"net_recv_bps": "received", "net_sent_bps": "sent"},
               title="Network", y_title="throughput", y_format="bytes_per_s", dashes={"net_sent_bps": "dot"}, **lines)
    widgets.csv_download(over_time, "host-over-time", label="Download chart data (CSV)")
    st.subheader("Disks")
    if data["disks"].empty:
        st.caption("No filesystem usage in this range.")
    else:
        widgets.table(data["disks"][list(DISK_COLUMNS)], "host-disks", column_config=DISK_COLUMNS)


def processes(data: dict, lines: dict) -> None:
    st.subheader("Watched processes")
    if data["processes"].empty:
        st.info("No watched process was sampled in this range. List them under `processes` in the "
                "`[host]` section of perfdeck.toml (a name, `pid:N` or `cmd:<regex>`).", icon=":material/info:")
        return
    widgets.table(data["processes"][list(PROCESS_COLUMNS)], "host-processes", column_config=PROCESS_COLUMNS)
    over_time = data["proc_over_time"]
    series = ["host", "process"] if over_time["host"].nunique() > 1 else "process"
    lines = lines | {"by": series}
    left, right = st.columns(2)
    time_lines(left, "proc-rss", over_time, {"rss_bytes": "RSS"}, title="Resident memory (RSS)",
               y_title="RSS", y_format="bytes", **lines)
    time_lines(right, "proc-cpu", over_time, {"cpu_percent": "CPU"}, title="Process CPU (100 % = one core)",
               y_title="CPU", y_format="percent100", **lines)
    st.caption("Processes of the same name are summed (e.g. all workers of one server).")
    widgets.csv_download(over_time, "process-over-time", label="Download chart data (CSV)")


def body() -> None:
    since, until = filters.range.bounds()
    found = widgets.load({"hosts": q.hosts}, since=since, until=until)
    status = widgets.load({"components": q.component_status}, kind="host")
    if found is None or status is None:
        return
    widgets.range_caption(since, until)
    widgets.down_components(status["components"], "Host")
    names = found["hosts"]["host"].tolist()
    if not names:
        widgets.no_data_yet(f"No host samples in this time range. {HOW_TO}")
        return
    picked = st.selectbox("Host", [ALL_HOSTS, *names], key="host") if len(names) > 1 else names[0]
    host = None if picked == ALL_HOSTS else picked
    data = widgets.load({"over_time": q.host_over_time, "disks": q.host_disks, "processes": q.processes_latest,
                         "proc_over_time": q.processes_over_time}, since=since, until=until, host=host)
    deploys = widgets.load({"deploys": q.deploys}, since=since, until=until, service=filters.service)
    if data is None or deploys is None:
        return
    marks = deploys["deploys"]
    if host is not None:
        marks = marks[marks["host"] == host]
    lines = {"by": "host" if host is None and len(names) > 1 else None, "x_range": (since, until), "deploys": marks}
    machine(data, lines)
    processes(data, lines)


widgets.live(body, filters)
