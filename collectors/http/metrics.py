"""`GET /metrics`: what perfdeck knows now, in the Prometheus text exposition format 0.0.4.

Window. Every figure but health and ingest covers the per-minute rollup rows of the last WINDOW_MINUTES
minutes: the current (partial) minute and the four before it (`window`), so a scrape every 15-60 s
always sees the last five minutes. The values are totals over that window, not counters since start:
they go down as well as up, so use them as they are (no rate()):

    perfdeck_window_seconds                               the window's nominal length (300)
    perfdeck_requests{service,endpoint}                   requests in the window (gauge)
    perfdeck_request_errors{service,endpoint}             of which answered with status >= 500 (gauge)
    perfdeck_request_duration_seconds{service,endpoint}   histogram: _bucket{le}, _sum, _count
        histogram_quantile(0.95, sum by (le, service) (perfdeck_request_duration_seconds_bucket))
    perfdeck_cache_lookups{service,cache}, perfdeck_cache_hit_ratio{service,cache}   app caches (0-1)
    perfdeck_llm_calls{model}, perfdeck_llm_cost_usd{model}, perfdeck_llm_tokens{model,kind}  kind: input|output
    perfdeck_health_status{component,check,service,subject}   0 ok (healthy, or degraded: past the
        target but short of the warning level), 1 warning, 2 critical, over the [alerts] window
    perfdeck_health_ok                                    1 when /healthz answers 200 (the health gate passes)
    perfdeck_ingest_sdk_dropped_events{service}, perfdeck_ingest_rejected_rows{service},
    perfdeck_ingest_quarantined_batches{source}           losses over the [alerts] window (health's figures)

Histograms. The store keeps log buckets (collectors.store.histogram, ~1 % wide); each is counted at the
first `le` bound (LE_BOUNDS, seconds) not below its representative value, the value every perfdeck
percentile reports for it; so a request within ~1 % of a bound may be counted on the other side of it.
_count equals the requests of the window and _sum is their exact total duration.

Cardinality. At most MAX_ENDPOINTS endpoints per service are named, the busiest in the window; the rest
are summed under endpoint="(other)". Label values are escaped as the format says (backslash, double
quote, newline); names stay text."""
from __future__ import annotations

import math
from datetime import datetime, timedelta

import duckdb
import pandas as pd

from collectors.store.histogram import GAMMA, LN_GAMMA, value_of

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
WINDOW_MINUTES = 5
MAX_ENDPOINTS = 100          # named endpoints per service; the rest are endpoint="(other)"
OTHER = "(other)"
# Seconds: Prometheus's default buckets, with 25 s and 60 s for slow jobs and LLM calls.
LE_BOUNDS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 25.0, 60.0)
SEVERITY_VALUE = {"healthy": 0, "degraded": 0, "warning": 1, "critical": 2}


def _last_bucket(bound_s: float) -> int:
    """The highest log bucket whose representative value is at most `bound_s` seconds."""
    i = math.floor(math.log(bound_s * 1000 * (GAMMA + 1) / 2) / LN_GAMMA)
    while value_of(i + 1) <= bound_s * 1000:
        i += 1
    while value_of(i) > bound_s * 1000:
        i -= 1
    return i


# bucket -> index of its le bound (len(LE_BOUNDS): only +Inf)
_LE_INDEX = ("CASE " + " ".join(f"WHEN bucket <= {_last_bucket(b)} THEN {k}" for k, b in enumerate(LE_BOUNDS))
             + f" ELSE {len(LE_BOUNDS)} END")

# Each endpoint with its name as shown: itself among the MAX_ENDPOINTS busiest of its service, else OTHER.
_SHOWN = """
WITH rollup AS (
    SELECT service, endpoint, sum(requests) AS requests, sum(errors) AS errors, sum(duration_sum_ms) AS duration_sum_ms
    FROM request_rollup
    WHERE minute >= $since
      AND minute < $until
    GROUP BY service, endpoint
),
shown AS (
    SELECT *,
           CASE WHEN row_number() OVER (PARTITION BY service ORDER BY requests DESC, endpoint) <= $top
                THEN endpoint ELSE $other END AS shown
    FROM rollup
)"""

REQUESTS_SQL = _SHOWN + """
SELECT service, shown AS endpoint, sum(requests)::BIGINT AS requests, sum(errors)::BIGINT AS errors,
       sum(duration_sum_ms) AS duration_sum_ms
FROM shown
GROUP BY service, shown
ORDER BY service, shown = $other, shown
"""

HISTOGRAM_SQL = _SHOWN + f""",
hist AS (
    SELECT service, endpoint, {_LE_INDEX} AS le, sum(count) AS count
    FROM latency_hist
    WHERE minute >= $since
      AND minute < $until
    GROUP BY ALL
)
SELECT h.service, coalesce(s.shown, $other) AS endpoint, h.le, sum(h.count)::BIGINT AS count
FROM hist AS h
LEFT JOIN shown AS s USING (service, endpoint)
GROUP BY ALL
"""

CACHES_SQL = """
SELECT service, cache, sum(hits)::BIGINT AS hits, (sum(hits) + sum(misses))::BIGINT AS lookups
FROM cache_stats
WHERE minute >= $since
  AND minute < $until
GROUP BY service, cache
ORDER BY service, cache
"""

LLM_SQL = """
SELECT model, sum(calls)::BIGINT AS calls, coalesce(sum(cost_usd), 0)::DOUBLE AS cost_usd,
       sum(input_tokens)::BIGINT AS input_tokens, sum(output_tokens)::BIGINT AS output_tokens
FROM llm_rollup
WHERE minute >= $since
  AND minute < $until
GROUP BY model
ORDER BY model
"""


def window(now: datetime) -> tuple[datetime, datetime]:
    """[since, until) of the minute rows: the minute holding `now` and the WINDOW_MINUTES - 1 before it."""
    minute = now.replace(second=0, microsecond=0)
    return minute - timedelta(minutes=WINDOW_MINUTES - 1), minute + timedelta(minutes=1)


def _params(now: datetime) -> dict:
    since, until = window(now)
    return {"since": since, "until": until, "top": MAX_ENDPOINTS, "other": OTHER}


def endpoint_requests(con: duckdb.DuckDBPyConnection, now: datetime) -> list[tuple]:
    """(service, endpoint, requests, errors, duration_sum_ms) of the window, endpoints capped per service."""
    return con.execute(REQUESTS_SQL, _params(now)).fetchall()


def endpoint_histograms(con: duckdb.DuckDBPyConnection, now: datetime) -> dict[tuple[str, str], list[int]]:
    """{(service, endpoint): cumulative counts at each LE_BOUNDS bound and +Inf} of the window."""
    out: dict[tuple[str, str], list[int]] = {}
    for service, endpoint, le, count in con.execute(HISTOGRAM_SQL, _params(now)).fetchall():
        out.setdefault((service, endpoint), [0] * (len(LE_BOUNDS) + 1))[le] += count
    for counts in out.values():
        for k in range(1, len(counts)):
            counts[k] += counts[k - 1]
    return out


def cache_ratios(con: duckdb.DuckDBPyConnection, now: datetime) -> list[tuple]:
    """(service, cache, hits, lookups) of the app caches in the window."""
    since, until = window(now)
    return con.execute(CACHES_SQL, {"since": since, "until": until}).fetchall()


def llm_spend(con: duckdb.DuckDBPyConnection, now: datetime) -> list[tuple]:
    """(model, calls, cost_usd, input_tokens, output_tokens) of the window (unpriced calls cost nothing here)."""
    since, until = window(now)
    return con.execute(LLM_SQL, {"since": since, "until": until}).fetchall()


# -- the text format ------------------------------------------------------------------------------
def escape(value) -> str:
    """A label value as the exposition format writes it: backslash, double quote and newline escaped."""
    return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def number(value) -> str:
    if isinstance(value, int | bool):
        return str(int(value))
    value = float(value)
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(value)


class Exposition:
    """Families in order, each once: HELP, TYPE, then its samples."""

    def __init__(self) -> None:
        self.lines: list[str] = []

    def family(self, name: str, kind: str, help_text: str) -> None:
        self.lines.append(f"# HELP {name} {help_text.replace(chr(92), chr(92) * 2).replace(chr(10), ' ')}")
        self.lines.append(f"# TYPE {name} {kind}")

    def sample(self, name: str, labels: dict, value) -> None:
        inner = ",".join(f'{k}="{escape(v)}"' for k, v in labels.items())
        self.lines.append(f"{name}{{{inner}}} {number(value)}" if inner else f"{name} {number(value)}")

    def text(self) -> str:
        return "\n".join(self.lines) + "\n"


_LE_LABELS = [repr(b) for b in LE_BOUNDS] + ["+Inf"]


def render(con: duckdb.DuckDBPyConnection, *, now: datetime, checks: pd.DataFrame | None = None) -> str:
    """The exposition of the window ending `now` (naive UTC); `checks`: the assessed health checks
    (collectors.health.ASSESSED_COLUMNS) for the health and ingest families, none when None."""
    out = Exposition()
    out.family("perfdeck_window_seconds", "gauge", "Length of the window the request, cache and LLM figures cover.")
    out.sample("perfdeck_window_seconds", {}, WINDOW_MINUTES * 60)

    requests = endpoint_requests(con, now)
    out.family("perfdeck_requests", "gauge", "Requests in the window, per service and endpoint.")
    for service, endpoint, n, _errors, _sum in requests:
        out.sample("perfdeck_requests", {"service": service, "endpoint": endpoint}, n)
    out.family("perfdeck_request_errors", "gauge", "Requests in the window answered with status >= 500.")
    for service, endpoint, _n, errors, _sum in requests:
        out.sample("perfdeck_request_errors", {"service": service, "endpoint": endpoint}, errors)

    sums = {(service, endpoint): total for service, endpoint, _n, _e, total in requests}
    name = "perfdeck_request_duration_seconds"
    out.family(name, "histogram", "Request durations in the window, from perfdeck's log-bucket histograms.")
    lines = out.lines
    for (service, endpoint), counts in sorted(endpoint_histograms(con, now).items()):
        labels = f'service="{escape(service)}",endpoint="{escape(endpoint)}"'
        lines.extend(f'{name}_bucket{{{labels},le="{le}"}} {c}' for le, c in zip(_LE_LABELS, counts))
        lines.append(f"{name}_sum{{{labels}}} {number(sums.get((service, endpoint), 0.0) / 1000)}")
        lines.append(f"{name}_count{{{labels}}} {counts[-1]}")

    caches = cache_ratios(con, now)
    out.family("perfdeck_cache_lookups", "gauge", "App cache lookups in the window.")
    for service, cache, _hits, lookups in caches:
        out.sample("perfdeck_cache_lookups", {"service": service, "cache": cache}, lookups)
    out.family("perfdeck_cache_hit_ratio", "gauge", "Share of the window's app cache lookups that hit (0-1).")
    for service, cache, hits, lookups in caches:
        if lookups:
            out.sample("perfdeck_cache_hit_ratio", {"service": service, "cache": cache}, hits / lookups)

    spend = llm_spend(con, now)
    out.family("perfdeck_llm_calls", "gauge", "LLM calls in the window, per model.")
    for model, calls, *_ in spend:
        out.sample("perfdeck_llm_calls", {"model": model}, calls)
    out.family("perfdeck_llm_cost_usd", "gauge", "LLM spend in the window in US dollars, per model (unpriced calls: 0).")
    for model, _calls, cost, *_ in spend:
        out.sample("perfdeck_llm_cost_usd", {"model": model}, cost)
    out.family("perfdeck_llm_tokens", "gauge", "LLM tokens in the window, per model and kind (input, output).")
    for model, _calls, _cost, tokens_in, tokens_out in spend:
        out.sample("perfdeck_llm_tokens", {"model": model, "kind": "input"}, tokens_in)
        out.sample("perfdeck_llm_tokens", {"model": model, "kind": "output"}, tokens_out)

    if checks is not None:
        _health(out, checks)
    return out.text()


_INGEST = (("sdk_dropped_events", "perfdeck_ingest_sdk_dropped_events", "service",
            "Events the apps' SDKs dropped in the health window."),
           ("rejected_rows", "perfdeck_ingest_rejected_rows", "service",
            "Rows refused by the SDKs or dropped by the collector in the health window."),
           ("quarantined_batches", "perfdeck_ingest_quarantined_batches", "source",
            "Batches quarantined in the health window, per source."))


def _health(out: Exposition, checks: pd.DataFrame) -> None:
    from collectors.health.assess import overall, passes

    out.family("perfdeck_health_status", "gauge", "Each health check: 0 ok (healthy or degraded), 1 warning, 2 critical.")
    for r in checks.itertuples(index=False):
        out.sample("perfdeck_health_status", {"component": r.component, "check": r.check,
                                              "service": r.service or "", "subject": r.subject},
                   SEVERITY_VALUE[r.severity])
    out.family("perfdeck_health_ok", "gauge", "1 when the health gate passes (/healthz answers 200), else 0.")
    out.sample("perfdeck_health_ok", {}, int(passes(overall(checks)[0])))
    for check, name, label, help_text in _INGEST:
        out.family(name, "gauge", help_text)
        for r in checks[checks["check"] == check].itertuples(index=False):
            out.sample(name, {label: r.subject}, r.value)
