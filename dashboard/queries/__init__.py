"""All SQL the dashboard runs: one function per question, each taking a read-only connection from
`collectors.store.read()` (a cursor of the process's kept connection, handed back at the end of the
block and closed whenever a writer wants the file) and returning a DataFrame. Every query goes
through `_run.run_query`, which bounds its time, memory and rows. No Streamlit in here, so pages,
the CLI and tests call the same functions.

    from collectors.store import read
    from dashboard.queries import endpoint_percentiles
    with read() as con:
        df = endpoint_percentiles(con, since=since, until=until)
"""
from dashboard.queries._run import bucket_seconds, run_query
from dashboard.queries.advisor import (
    advisor_runs,
    advisor_statements,
    index_findings,
    index_recommendations,
    index_verification,
)
from dashboard.queries.alerts import (
    active_alerts,
    active_silences,
    alert_facets,
    alert_history,
    notification_log,
    notification_stats,
)
from dashboard.queries.audit import audit_facets, audit_log, cache_actions
from dashboard.queries.caches import (
    app_cache_namespaces,
    app_cache_over_time,
    app_cache_summary,
    redis_over_time,
    redis_slowlog,
    redis_summary,
)
from dashboard.queries.catalog import deploys, services
from dashboard.queries.compare import compare_windows, deploy_windows, regression_checks
from dashboard.queries.cost import (
    budget_status,
    cache_savings,
    compute_costs,
    cost_export,
    cost_over_time,
    cost_totals,
    daily_spend,
    expensive_requests,
    forecast_period,
    model_usage,
    request_calls,
    request_cost_overall,
    request_costs,
    unpriced_models,
    user_costs,
)
from dashboard.queries.database import (
    db_cache_hit_ratio,
    db_connections,
    db_targets,
    pg_top_statements,
    sdk_top_queries,
    seq_scan_tables,
)
from dashboard.queries.health import health_checks, health_measurements
from dashboard.queries.host import host_disks, host_over_time, hosts, processes_latest, processes_over_time
from dashboard.queries.latency import endpoint_percentiles, latency_over_time, typical_percentiles
from dashboard.queries.pg_depth import (
    pg_activity_now,
    pg_index_sizes,
    pg_long_running,
    pg_replication,
    pg_statement_history,
    pg_table_health,
    pg_xid_ages,
)
from dashboard.queries.pipeline import (
    collector_rejects,
    collector_reports,
    ingest_sources,
    last_batches,
    quarantine_counts,
    quarantined_batches,
    sdk_losses,
    sdk_reject_reasons,
    service_losses,
    source_notes,
)
from dashboard.queries.redis import (
    redis_biggest_keys,
    redis_clients,
    redis_commands,
    redis_memory_by_type,
    redis_namespaces,
    redis_sample_coverage,
)
from dashboard.queries.samplers import component_status
from dashboard.queries.traffic import endpoint_traffic, totals, traffic_over_time

__all__ = [
    "active_alerts",
    "active_silences",
    "advisor_runs",
    "advisor_statements",
    "alert_facets",
    "alert_history",
    "app_cache_namespaces",
    "app_cache_over_time",
    "app_cache_summary",
    "audit_facets",
    "audit_log",
    "bucket_seconds",
    "budget_status",
    "cache_actions",
    "cache_savings",
    "collector_rejects",
    "collector_reports",
    "compare_windows",
    "component_status",
    "compute_costs",
    "cost_export",
    "cost_over_time",
    "cost_totals",
    "daily_spend",
    "db_cache_hit_ratio",
    "db_connections",
    "db_targets",
    "deploy_windows",
    "deploys",
    "endpoint_percentiles",
    "endpoint_traffic",
    "expensive_requests",
    "forecast_period",
    "health_checks",
    "health_measurements",
    "host_disks",
    "host_over_time",
    "hosts",
    "index_findings",
    "index_recommendations",
    "index_verification",
    "ingest_sources",
    "last_batches",
    "latency_over_time",
    "model_usage",
    "notification_log",
    "notification_stats",
    "pg_activity_now",
    "pg_index_sizes",
    "pg_long_running",
    "pg_replication",
    "pg_statement_history",
    "pg_table_health",
    "pg_top_statements",
    "pg_xid_ages",
    "processes_latest",
    "processes_over_time",
    "quarantine_counts",
    "quarantined_batches",
    "redis_biggest_keys",
    "redis_clients",
    "redis_commands",
    "redis_memory_by_type",
    "redis_namespaces",
    "redis_over_time",
    "redis_sample_coverage",
    "redis_slowlog",
    "redis_summary",
    "regression_checks",
    "request_calls",
    "request_cost_overall",
    "request_costs",
    "run_query",
    "sdk_losses",
    "sdk_reject_reasons",
    "sdk_top_queries",
    "seq_scan_tables",
    "service_losses",
    "services",
    "source_notes",
    "totals",
    "traffic_over_time",
    "typical_percentiles",
    "unpriced_models",
    "user_costs",
]
