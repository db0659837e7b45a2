"""`perfdeck export alert-rules`: the health thresholds as Prometheus alerting rules over what the collector
serves at /metrics (collectors.http.metrics), so that a team on Prometheus and Alertmanager is paged at the
same levels the dashboard, `perfdeck health` and perfdeck's own alert engine use: the packaged defaults, the
[alerts] thresholds file with its per-service / per-endpoint / per-cache overrides, the environment.

The /metrics figures are totals and gauges over a recent window, not counters, so no rate(): a ratio is
the quotient of two window totals and a percentile histogram_quantile() over the window's buckets.

    request_p95_ms      histogram_quantile(0.95) of perfdeck_request_duration_seconds_bucket, per endpoint,
                        with at least min_samples requests (the quantile interpolates within /metrics'
                        coarser buckets: exact at a bucket bound, approximate between them)
    error_rate          perfdeck_request_errors / perfdeck_requests (both: the jobs left out, as the
                        collector's job_failure_rate status names them)
    cache_hit_rate      perfdeck_cache_hit_ratio with perfdeck_cache_lookups >= min_samples (app caches);
                        Redis instances through their health status
    sdk_dropped_events, rejected_rows, quarantined_batches   the perfdeck_ingest_* gauges
    every other check   perfdeck_health_status{check="..."}: 1 warning, 2 critical, as the collector judged it

An override becomes a term of its own in the one expression per check and severity, and the series of the
overrides that win over it (more specific, or later among equals, as Threshold.levels_for) are taken out of
it with `unless`, so each series is judged against exactly the levels the health check gives it.

The YAML is written here (no YAML library is a dependency): keys are fixed, and every value that is not a
plain word is single-quoted when it is printable ASCII, else double-quoted with every other character
escaped. Names from the configuration reach PromQL as escaped string literals and the annotations only as
text: a "{{" in them is written as a template that prints it, never run as one.

The direct rules measure /metrics' fixed 5-minute window; the health statuses the collector's [alerts]
window (5 minutes too by default). This module is not named export.py: a submodule of that name would
replace the `export` group as an attribute of collectors.cli; `main`'s package registers the command on it."""
from __future__ import annotations

import math
import re
import sys
from dataclasses import dataclass

import click

from collectors.cli.options import CONTEXT

GROUP = "perfdeck"
QUANTILE_CHECKS = {"request_p95_ms"}


# -- text -----------------------------------------------------------------------------------------------
def promql_string(value: str) -> str:
    """A PromQL double-quoted string literal holding `value` exactly (Go escapes, ASCII only)."""
    out = []
    for ch in value:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\t":
            out.append("\\t")
        elif 0x20 <= code < 0x7F:
            out.append(ch)
        elif 0xD800 <= code <= 0xDFFF:        # a lone surrogate cannot be a label value
            out.append("\\uFFFD")
        elif code <= 0xFFFF:
            out.append(f"\\u{code:04X}")
        else:
            out.append(f"\\U{code:08X}")
    return '"' + "".join(out) + '"'


def template_text(text: str) -> str:
    """Static text for an annotation (a Go template): "{{" printed, never opened as an action."""
    return text.replace("{{", '{{ "{{" }}')


_PLAIN = re.compile(r"[A-Za-z][A-Za-z0-9_.-]*")
_YAML_WORDS = {"true", "false", "yes", "no", "on", "off", "null", "y", "n", "~"}


def yaml_scalar(value) -> str:
    if isinstance(value, bool) or value is None:
        raise TypeError(f"no YAML for {value!r} here")
    if isinstance(value, int | float):
        return number(value)
    text = str(value)
    if _PLAIN.fullmatch(text) and text.lower() not in _YAML_WORDS:
        return text
    if all(0x20 <= ord(ch) < 0x7F for ch in text):
        return "'" + text.replace("'", "''") + "'"
    return promql_string(text)      # a YAML double-quoted scalar reads the same escapes (\u00E9 for é)


def to_yaml(value, indent: int = 0) -> str:
    """Block YAML of dicts (str keys), lists and scalars."""
    pad = " " * indent
    lines = []
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(item, dict | list) and item:
                lines.append(f"{pad}{yaml_scalar(key)}:")
                lines.append(to_yaml(item, indent + 2))
            else:
                lines.append(f"{pad}{yaml_scalar(key)}: {_empty(item) or yaml_scalar(item)}")
    else:
        for item in value:
            if isinstance(item, dict | list) and item:
                body = to_yaml(item, indent + 2)
                lines.append(f"{pad}- {body[indent + 2:]}")
            else:
                lines.append(f"{pad}- {_empty(item) or yaml_scalar(item)}")
    return "\n".join(lines)


def _empty(item) -> str | None:
    if isinstance(item, dict) and not item:
        return "{}"
    if isinstance(item, list) and not item:
        return "[]"
    return None


def number(value: float) -> str:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"not a finite level: {value!r}")
    return str(int(value)) if value == int(value) and abs(value) < 1e15 else format(value, ".12g")


def duration(seconds: float) -> str:
    """A Prometheus duration: 5m, 90s, 1h."""
    s = int(round(seconds))
    for unit, size in (("h", 3600), ("m", 60)):
        if s and s % size == 0:
            return f"{s // size}{unit}"
    return f"{s}s"


# -- rules ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Direct:
    """A check measured straight from /metrics series: `value(m)` its value per series for matchers `m`,
    `base(m)` a series with the same labels (for `unless`), `samples(m)` what min_samples counts."""

    labels: tuple[str, ...]          # the series' labels, for on(...)
    service: str | None              # the label an override's service matches
    subject: str | None              # the label an override's subject matches
    value: str                       # format with {m}
    base: str
    samples: str | None = None
    strict: bool = False             # compare with > / < (a histogram quantile sits on a bucket bound)
    scale: float = 1.0               # level in the threshold's unit -> the series' unit
    shown: str = "{{ $value }}"
    extra: str | None = None         # another term for the subjects /metrics has no series of
    exclude: str | None = None       # series left out (on the labels): the jobs, for the request checks


_REQUEST = ("service", "endpoint")
# /metrics does not tell jobs (method TASK) from endpoints; the collector judges every job with 10 runs in
# the window for job_failure_rate, so its health status names them (request checks need 20 requests).
_JOBS = 'label_replace(perfdeck_health_status{check="job_failure_rate"}, "endpoint", "$1", "subject", "(.*)")'
DIRECT = {
    "request_p95_ms": Direct(
        _REQUEST, "service", "endpoint",
        "histogram_quantile(0.95, sum by (service, endpoint, le) (perfdeck_request_duration_seconds_bucket{m}))",
        "perfdeck_requests{m}", "perfdeck_request_duration_seconds_count{m}", strict=True, scale=0.001,
        shown="{{ $value | humanizeDuration }}", exclude=_JOBS),
    "error_rate": Direct(
        _REQUEST, "service", "endpoint", "perfdeck_request_errors{m} / perfdeck_requests{m}", "perfdeck_requests{m}",
        "perfdeck_requests{m}", shown="{{ $value | humanizePercentage }}", exclude=_JOBS),
    "cache_hit_rate": Direct(
        ("service", "cache"), "service", "cache", "perfdeck_cache_hit_ratio{m}", "perfdeck_cache_lookups{m}",
        "perfdeck_cache_lookups{m}", shown="{{ $value | humanizePercentage }}",
        extra='perfdeck_health_status{check="cache_hit_rate",service=""}'),
    "sdk_dropped_events": Direct(("service",), "service", "service", "perfdeck_ingest_sdk_dropped_events{m}",
                                 "perfdeck_ingest_sdk_dropped_events{m}"),
    "rejected_rows": Direct(("service",), "service", "service", "perfdeck_ingest_rejected_rows{m}",
                            "perfdeck_ingest_rejected_rows{m}"),
    "quarantined_batches": Direct(("source",), None, "source", "perfdeck_ingest_quarantined_batches{m}",
                                  "perfdeck_ingest_quarantined_batches{m}"),
}
SEVERITY_STATUS = {"warning": 1, "critical": 2}


@dataclass(frozen=True)
class _Selector:
    matchers: tuple[tuple[str, str], ...]      # (label, value), sorted
    levels: object                             # thresholds.Levels
    rank: int
    order: int

    def beaten_by(self, other: _Selector) -> bool:
        return (other.rank, other.order) > (self.rank, self.order)

    def overlaps(self, other: _Selector) -> bool:
        mine = dict(self.matchers)
        return all(mine.get(k, v) == v for k, v in other.matchers)

    def covered_by(self, other: _Selector) -> bool:
        """Every series this selects, `other` selects too."""
        return set(other.matchers) <= set(self.matchers)


def _selectors(threshold, direct: Direct) -> list[_Selector]:
    """The threshold's own levels and each override it can express over the series' labels, less those a
    winning override hides entirely."""
    found = [_Selector((), threshold.levels, 0, -1)]
    for i, override in enumerate(threshold.overrides):
        matchers: dict[str, str] = {}
        ok = True
        for label, value in ((direct.service, override.service), (direct.subject, override.subject)):
            if value is None:
                continue
            if label is None or matchers.get(label, value) != value:
                ok = False      # a service on a check without one, or two names for one label: never matches
            else:
                matchers[label] = value
        if ok:
            found.append(_Selector(tuple(sorted(matchers.items())), override.levels,
                                   override.specificity(override.service, override.subject), i))
    return [s for s in found if not any(s.beaten_by(o) and s.covered_by(o) for o in found)]


def _matchers(pairs) -> str:
    return "{" + ",".join(f"{k}={promql_string(v)}" for k, v in pairs) + "}" if pairs else ""


def _direct_expr(threshold, direct: Direct, severity: str) -> str | None:
    """One expression for one severity: a term per selector (its level), the winners taken out of each."""
    selectors = _selectors(threshold, direct)
    above = threshold.bad == "above"
    op = (">" if above else "<") + ("" if direct.strict else "=")
    on = ", ".join(direct.labels)
    terms = []
    for s in selectors:
        level = getattr(s.levels, severity)
        if severity == "warning" and s.levels.warning == s.levels.critical:
            continue        # no warning band: the critical rule says it
        m = _matchers(s.matchers)
        term = f"{direct.value.format(m=m)} {op} {number(level * direct.scale)}"
        if direct.samples and threshold.min_samples > 1:
            term = f"({term}) and on ({on}) {direct.samples.format(m=m)} >= {threshold.min_samples}"
        if direct.exclude:
            term = f"({term}) unless on ({on}) {direct.exclude}"
        for winner in selectors:
            if s.beaten_by(winner) and s.overlaps(winner):
                term = f"({term}) unless on ({on}) {direct.base.format(m=_matchers(winner.matchers))}"
        terms.append(f"({term})" if len(selectors) > 1 or direct.extra else term)
    if direct.extra:
        terms.append(f"({direct.extra} >= {SEVERITY_STATUS[severity]})")
    return " or ".join(terms) or None


def alert_name(check: str) -> str:
    return "Perfdeck" + "".join(part[:1].upper() + part[1:] for part in check.split("_"))


def _levels_text(threshold) -> str:
    lv = threshold.levels
    text = f"Levels ({threshold.unit}): target {lv.target:g}, warning {lv.warning:g}, critical {lv.critical:g}"
    for o in threshold.overrides:
        who = " ".join(x for x in (o.service, o.subject) if x)
        text += (f"; {who}: target {o.levels.target:g}, warning {o.levels.warning:g}, "
                 f"critical {o.levels.critical:g}")
    return text + "."


def alert_rules(thresholds, settings) -> dict:
    """{"groups": [...]} of Prometheus alerting rules for `thresholds` (collectors.health.thresholds) and
    the [alerts] `settings` (collectors.health.settings.AlertSettings): its `for`, and no warning rules
    when its min_severity is critical."""
    severities = ("warning", "critical") if settings.min_severity == "warning" else ("critical",)
    rules = []
    for name, threshold in thresholds.items():
        direct = DIRECT.get(name)
        for_s = threshold.for_s if threshold.for_s is not None else settings.for_s
        for severity in severities:
            if direct is not None:
                expr = _direct_expr(threshold, direct, severity)
                who = " ".join("{{ $labels." + label + " }}" for label in direct.labels)
                if direct.extra:
                    who += "{{ $labels.subject }}"
                shown = direct.shown
            elif severity == "warning" and all(lv.warning == lv.critical for lv in
                                               (threshold.levels, *(o.levels for o in threshold.overrides))):
                continue        # no warning band anywhere: a warning status never comes
            else:
                expr = f"perfdeck_health_status{{check={promql_string(name)}}} >= {SEVERITY_STATUS[severity]}"
                who = "{{ $labels.service }} {{ $labels.subject }}"
                shown = None
            if expr is None:
                continue
            what = template_text(threshold.label).replace("{subject}", who)
            summary = f"{what} is {shown} ({severity})" if shown else f"{what}: {severity}"
            description = template_text(f"{threshold.help}. {_levels_text(threshold)}")
            rules.append({
                "alert": alert_name(name),
                "expr": expr,
                "for": duration(for_s),
                "labels": {"severity": severity, "check": name, "component": threshold.component},
                "annotations": {"summary": summary, "description": description},
            })
    return {"groups": [{"name": GROUP, "rules": rules}]}


def render(config_path: str | None = None) -> str:
    """The rules file for the perfdeck.toml at `config_path` (default $PERFDECK_CONFIG, perfdeck.toml)."""
    from collectors import config
    from collectors.health.settings import alert_settings
    from collectors.health.thresholds import load_thresholds

    settings = alert_settings(config.load(config_path))
    document = alert_rules(load_thresholds(settings.thresholds_file), settings)
    head = ("# Prometheus alerting rules from perfdeck's health thresholds (perfdeck export alert-rules).\n"
            "# Over the series the collector serves at /metrics (perfdeck collect --http); regenerate after\n"
            "# changing thresholds.toml or [alerts].\n")
    return head + to_yaml(document) + "\n"


@click.command("alert-rules", context_settings=CONTEXT)
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="perfdeck.toml with the [alerts] thresholds file and for (default $PERFDECK_CONFIG).")
@click.option("--output", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the rules to this file instead of standard output.")
def alert_rules_command(config_path, output) -> None:
    """Print the health thresholds (defaults, thresholds.toml overrides, environment) as Prometheus
    alerting rules over the collector's /metrics series, for rule_files in prometheus.yml."""
    try:
        text = render(config_path)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    if output is None:
        sys.stdout.write(text)
    else:
        with open(output, "w", encoding="utf-8") as f:
            f.write(text)
