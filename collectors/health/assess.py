"""Measurements -> assessed checks: each measured value against its threshold's levels, with a severity
and a message ("p95 of /search 740 ms > 500 ms warning"); then one status per component and overall.

    checks = assess(measurements, load_thresholds())  # measurements: dashboard.queries.health_measurements
    status, reasons = overall(checks)                # "warning", ["p95 of /search 740 ms > 500 ms warning"]

Nothing judged is not healthy: `overall` then says "unknown", and why."""
from __future__ import annotations

import math
from datetime import datetime, timedelta

import pandas as pd

from collectors.formatting import value as format_value
from collectors.health import ASSESSED_COLUMNS, SEVERITIES, UNKNOWN, severity_rank, worst
from collectors.health.thresholds import COMPONENTS, Threshold, Thresholds

COMPONENT_COLUMNS = ["component", "severity", "checks", "reason"]
NOTHING_JUDGED = "nothing had enough data in the window to be judged"


def describe(threshold: Threshold, subject: str, value: float, severity: str, level: float, *,
             at: datetime | None = None) -> str:
    """The message of one check: what, its value, how it compares with the level and which level.
    A silence (unit age) says since when instead, from `at`, the end of the window, when given."""
    what = threshold.label.format(subject=subject)
    if threshold.unit == "up":
        return f"{what} is {format_value(value, 'up')}"
    if threshold.unit == "age":
        last = threshold.last or "seen"
        if severity == "healthy":
            return f"{subject}: last {last} {format_value(value, 'age')} ago"
        if at is None:
            return f"{what} for {format_value(value, 'age')}"
        seen = at - timedelta(seconds=value)
        when = f"{seen:%H:%M}" if seen.date() == at.date() else f"{seen:%Y-%m-%d %H:%M}"
        return f"{what} for {format_value(value, 'age')} (last {last} {when} UTC)"
    above = threshold.bad == "above"
    if severity == "healthy":
        sign = "≤" if above else "≥"
    elif value == level:
        sign = "≥" if above else "≤"
    else:
        sign = ">" if above else "<"
    name = "target" if severity in ("healthy", "degraded") else severity
    return f"{what} {format_value(value, threshold.unit)} {sign} {format_value(level, threshold.unit)} {name}"


def assess(measurements: pd.DataFrame, thresholds: Thresholds, *, now: datetime | None = None) -> pd.DataFrame:
    """ASSESSED_COLUMNS for each measurement of a known threshold that has a value and at least the
    threshold's min_samples; worst first, then in component, threshold, service and subject order.
    `now`, the end of the window, dates the silences ("last batch 12:03 UTC")."""
    rows = []
    for m in measurements.itertuples(index=False):
        threshold = thresholds.get(m.check)
        if threshold is None or pd.isna(m.value) or m.samples < threshold.min_samples:
            continue
        service = None if pd.isna(m.service) else m.service
        levels = threshold.levels_for(service, m.subject)
        severity = threshold.severity(m.value, levels)
        level = threshold.level_of(severity, levels)
        rows.append((threshold.component, threshold.name, service, m.subject, float(m.value), threshold.unit,
                     severity, level, describe(threshold, m.subject, m.value, severity, level, at=now)))
    df = pd.DataFrame(rows, columns=ASSESSED_COLUMNS)
    order = list(thresholds)
    df = df.assign(_rank=df["severity"].map(severity_rank), _component=df["component"].map(COMPONENTS.index),
                   _check=df["check"].map(order.index), _service=df["service"].fillna(""))
    df = df.sort_values(["_rank", "_component", "_check", "_service", "subject"],
                        ascending=[False, True, True, True, True], kind="stable")
    df = df.drop(columns=["_rank", "_component", "_check", "_service"]).reset_index(drop=True)
    # None, not NaN, for "no service" (pandas would make it NaN in a string column): target() relies on it.
    df["service"] = pd.Series([s if isinstance(s, str) else None for s in df["service"]], dtype=object)
    return df


def components(assessed: pd.DataFrame) -> pd.DataFrame:
    """[component, severity, checks, reason], one row per component that has checks, in the fixed
    component order. The reason is the message of its worst check ("+ N more" at that severity), or
    "all N checks healthy"."""
    rows = []
    for component in COMPONENTS:
        checks = assessed[assessed["component"] == component]
        if checks.empty:
            continue
        severity = worst(checks["severity"])
        if severity == "healthy":
            reason = f"all {len(checks)} checks healthy" if len(checks) > 1 else "1 check healthy"
        else:
            at_worst = checks[checks["severity"] == severity]
            more = f" (+ {len(at_worst) - 1} more {severity})" if len(at_worst) > 1 else ""
            reason = at_worst["message"].iloc[0] + more
        rows.append((component, severity, len(checks), reason))
    return pd.DataFrame(rows, columns=COMPONENT_COLUMNS)


def overall(assessed: pd.DataFrame) -> tuple[str, list[str]]:
    """The worst severity of all checks and the messages of the checks at that severity, worst first;
    no messages when everything is healthy. No checks at all is "unknown", never "healthy": an empty
    store, or one nothing has reached for a day, vouches for nothing."""
    if assessed.empty:
        return UNKNOWN, [NOTHING_JUDGED]
    severity = worst(assessed["severity"])
    if severity == "healthy":
        return severity, []
    return severity, assessed.loc[assessed["severity"] == severity, "message"].tolist()


def passes(status: str, fail_on: str = "critical") -> bool:
    """The gate of `perfdeck health` and `/healthz`: it fails when the overall status is at least `fail_on`
    severe, and when nothing could be judged (UNKNOWN: a gate that sees no data cannot vouch for anything)."""
    return status != UNKNOWN and severity_rank(status) < severity_rank(fail_on)


def _records(df: pd.DataFrame) -> list[dict]:
    return [{k: (None if isinstance(v, float) and math.isnan(v) else v) for k, v in row.items()}
            for row in df.to_dict(orient="records")]


def document(assessed: pd.DataFrame, *, window_s: float, at: datetime) -> dict:
    """{status, window_s, at, reasons, components, checks}: what `perfdeck health --json` prints and
    `/healthz` answers, for the assessed checks of the window ending `at` (naive UTC)."""
    status, reasons = overall(assessed)
    return {"status": status, "window_s": window_s, "at": at.isoformat() + "Z", "reasons": reasons,
            "components": _records(components(assessed)), "checks": _records(assessed)}


__all__ = ["COMPONENT_COLUMNS", "NOTHING_JUDGED", "SEVERITIES", "UNKNOWN", "assess", "components",
           "describe", "document", "overall", "passes"]
