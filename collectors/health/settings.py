"""The [alerts] settings of perfdeck.toml, environment first. Defaults come from the seeds: rules are
evaluated every minute over a 5-minute window and must hold 5 minutes before firing (seed 004's
`for: 5m`), and the same rule and target notify at most once per 15 minutes (seed 000's throttle).

    [alerts]
    interval = "1m"          # between evaluations                      $PERFDECK_ALERT_INTERVAL
    window = "5m"            # what each evaluation measures             $PERFDECK_ALERT_WINDOW
    for = "5m"               # how long a breach must last to fire       $PERFDECK_ALERT_FOR
    throttle = "15m"         # one notification per rule and target      $PERFDECK_ALERT_THROTTLE
    min_severity = "warning" # what fires: warning or critical           $PERFDECK_ALERT_MIN_SEVERITY
    webhook_url = ""         # Slack-compatible incoming webhook         $PERFDECK_ALERT_WEBHOOK
    webhook_retries = 3      # attempts after the first, with backoff    $PERFDECK_ALERT_WEBHOOK_RETRIES
    thresholds_file = "thresholds.toml"   # overrides, beside perfdeck.toml  $PERFDECK_THRESHOLDS
    deploy_regressions = false  # alert on a significant p95 regression     $PERFDECK_ALERT_DEPLOY_REGRESSIONS
                                # after a deploy (the Compare view's test), over `regression_span`
    regression_span = "1h"      # windows compared before/after each deploy $PERFDECK_ALERT_REGRESSION_SPAN

Spans are "30s", "5m", "2h" or a number of seconds. The webhook URL is a secret: keep it in the
environment, never in a file in the repository; it is never shown in the dashboard."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from collectors.config import section, span_seconds
from collectors.health import SEVERITIES

_ENV = {"interval": "PERFDECK_ALERT_INTERVAL", "window": "PERFDECK_ALERT_WINDOW", "for": "PERFDECK_ALERT_FOR",
        "throttle": "PERFDECK_ALERT_THROTTLE", "min_severity": "PERFDECK_ALERT_MIN_SEVERITY",
        "webhook_url": "PERFDECK_ALERT_WEBHOOK", "webhook_retries": "PERFDECK_ALERT_WEBHOOK_RETRIES",
        "thresholds_file": "PERFDECK_THRESHOLDS", "deploy_regressions": "PERFDECK_ALERT_DEPLOY_REGRESSIONS",
        "regression_span": "PERFDECK_ALERT_REGRESSION_SPAN"}


def seconds(value, key: str = "span") -> float:
    """'30s', '5m', '2h', '1d' or a number -> seconds; a clear error otherwise."""
    return span_seconds(value, f"[alerts] {key}")


@dataclass(frozen=True)
class AlertSettings:
    interval_s: float = 60.0
    window_s: float = 300.0
    for_s: float = 300.0
    throttle_s: float = 900.0
    min_severity: str = "warning"
    webhook_url: str | None = None
    webhook_retries: int = 3
    thresholds_file: Path = Path("thresholds.toml")
    deploy_regressions: bool = False
    regression_span_s: float = 3600.0


def alert_settings(config: dict) -> AlertSettings:
    """The [alerts] table of a loaded config (collectors.config.load), environment first."""
    raw = section(config, "alerts", _ENV)
    spans = {k: seconds(raw[k], k) for k in ("interval", "window", "for", "throttle", "regression_span") if k in raw}
    if any(v <= 0 for k, v in spans.items() if k != "for") or spans.get("for", 0) < 0:
        raise ValueError(f"[alerts] spans must be positive (for may be 0), got {spans}")
    severity = str(raw.get("min_severity", "warning"))
    if severity not in SEVERITIES[2:]:
        raise ValueError(f"[alerts] min_severity must be warning or critical, got {severity!r}")
    try:
        retries = int(raw.get("webhook_retries", 3))
    except ValueError:
        raise ValueError(f"[alerts] webhook_retries must be a whole number, got {raw['webhook_retries']!r}") from None
    regressions = raw.get("deploy_regressions", False)
    if isinstance(regressions, str):
        if regressions.strip().lower() not in ("true", "false", "1", "0", "yes", "no", "on", "off"):
            raise ValueError(f"[alerts] deploy_regressions must be true or false, got {regressions!r}")
        regressions = regressions.strip().lower() in ("true", "1", "yes", "on")
    thresholds = Path(raw.get("thresholds_file") or "thresholds.toml")
    if not thresholds.is_absolute():
        thresholds = Path(config.get("_path") or "perfdeck.toml").parent / thresholds
    defaults = AlertSettings()
    return AlertSettings(
        interval_s=spans.get("interval", defaults.interval_s), window_s=spans.get("window", defaults.window_s),
        for_s=spans.get("for", defaults.for_s), throttle_s=spans.get("throttle", defaults.throttle_s),
        min_severity=severity, webhook_url=str(raw.get("webhook_url") or "").strip() or None,
        webhook_retries=max(0, retries), thresholds_file=thresholds, deploy_regressions=bool(regressions),
        regression_span_s=spans.get("regression_span", defaults.regression_span_s))


def configured_thresholds(config_path: str | None = None):
    """The thresholds in force for the config at `config_path` (default $PERFDECK_CONFIG or perfdeck.toml):
    the packaged defaults, the [alerts] thresholds_file, the environment. What checks and charts share."""
    from collectors import config
    from collectors.health.thresholds import load_thresholds

    return load_thresholds(alert_settings(config.load(config_path)).thresholds_file)
