"""Health, alerts and regressions.

Health is one shape everywhere (the Overview banner, `perfdeck health`, the alert engine): a DataFrame
of assessed checks, one row per (check, service, subject), with the columns ASSESSED_COLUMNS:

    component  "Latency" | "Errors" | "Jobs" | "Caches" | "Host" | "Cost" | "Components" | "Ingest"
    check      the threshold's name, e.g. "request_p95_ms" (an alert's rule)
    service    the service measured, or None (a host, a Redis instance, a budget)
    subject    what within it: an endpoint, a cache, a host, "month"...
    value      the measured value, in the threshold's unit
    unit       "ms" | "s" | "ratio" | "percent" | "usd" | "entries" | "up" | "count" | "age"
    severity   one of SEVERITIES
    level      the threshold crossed (the warning level for a warning), or the target when healthy
    message    "p95 of /search 740 ms > 500 ms warning"

An alert's target is `target(service, subject)`."""
from __future__ import annotations

SEVERITIES = ("healthy", "degraded", "warning", "critical")   # in order: worse to the right
UNKNOWN = "unknown"   # the overall status when no check could be judged: not a severity, never healthy
ASSESSED_COLUMNS = ["component", "check", "service", "subject", "value", "unit", "severity", "level", "message"]


def severity_rank(severity: str) -> int:
    return SEVERITIES.index(severity)


def worst(severities) -> str:
    """The worst of some severities; "healthy" for none."""
    return max(severities, key=severity_rank, default="healthy")


def target(service: str | None, subject: str) -> str:
    """An alert's target: "shop-api /search", or the subject alone when there is no service or the
    subject is the service itself (the Ingest checks of a service: "shop-api")."""
    return f"{service} {subject}" if service and service != subject else subject
