"""All SQL the dashboard runs: one function per question, each taking a short-lived read-only
connection (`collectors.store.read()`) and returning a DataFrame. No Streamlit in here, so pages,
the CLI and tests call the same functions.

    from collectors.store import read
    from dashboard.queries import endpoint_percentiles
    with read() as con:
        df = endpoint_percentiles(con, since=since, until=until)
"""
from dashboard.queries._run import bucket_seconds, run_query
from dashboard.queries.catalog import deploys, services
from dashboard.queries.latency import endpoint_percentiles, latency_over_time
from dashboard.queries.traffic import endpoint_traffic, totals, traffic_over_time

__all__ = [
    "bucket_seconds",
    "deploys",
    "endpoint_percentiles",
    "endpoint_traffic",
    "latency_over_time",
    "run_query",
    "services",
    "totals",
    "traffic_over_time",
]
