"""Thresholds as data: the packaged defaults, severities at and around every level, user files with
overrides, the environment, and clear errors for broken files."""
from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from collectors.health import SEVERITIES
from collectors.health.thresholds import (
    COMPONENTS,
    DEFAULTS_FILE,
    UNITS,
    Levels,
    ThresholdsError,
    load_thresholds,
)

# name: (component, unit, bad, target, warning, critical), from the seeds (000, 002, 003) and the issue.
DEFAULTS = {
    "request_p95_ms": ("Latency", "ms", "above", 200, 500, 1000),
    "error_rate": ("Errors", "ratio", "above", 0.01, 0.02, 0.05),
    "job_wait_s": ("Jobs", "s", "above", 5, 30, 60),
    "job_failure_rate": ("Jobs", "ratio", "above", 0.01, 0.05, 0.10),
    "cache_hit_rate": ("Caches", "ratio", "below", 0.90, 0.80, 0.50),
    "cache_lookup_ms": ("Caches", "ms", "above", 1, 5, 10),
    "cache_entries": ("Caches", "entries", "above", 5000, 10000, 50000),
    "host_cpu_percent": ("Host", "percent", "above", 70, 85, 95),
    "host_memory_percent": ("Host", "percent", "above", 80, 90, 95),
    "host_disk_percent": ("Host", "percent", "above", 80, 90, 95),
    "cost_per_query_usd": ("Cost", "usd", "above", 0.10, 0.15, 0.25),
    "budget_burn": ("Cost", "ratio", "above", 0.9, 1.0, 1.25),
    "component_up": ("Components", "up", "below", 1, 0, 0),
    # The pipeline: no seed names these; they follow from 1 s flushes, 10 s source reports, the 5 min window.
    "no_data_s": ("Ingest", "age", "above", 60, 300, 300),
    "sdk_dropped_events": ("Ingest", "count", "above", 0, 1, 1000),
    "rejected_rows": ("Ingest", "count", "above", 0, 10, 1000),
    "quarantined_batches": ("Ingest", "count", "above", 0, 1, 10),
    "ingest_lag_s": ("Ingest", "s", "above", 10, 60, 300),
    "stream_pending": ("Ingest", "count", "above", 500, 2000, 10000),
    "ingest_source_up": ("Ingest", "up", "below", 1, 0, 0),
    "collector_silent_s": ("Ingest", "age", "above", 30, 60, 120),
}


@pytest.fixture(autouse=True)
def _no_threshold_env(monkeypatch):
    """Thresholds from the environment of whoever runs the tests must not leak in."""
    for var in list(os.environ):
        if var == "PERFDECK_THRESHOLDS" or re.match(r"PERFDECK_.*_(TARGET|WARNING|CRITICAL|MIN_SAMPLES|FOR)$", var):
            monkeypatch.delenv(var)


def user_file(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "thresholds.toml"
    path.write_text(text)
    return path


def test_packaged_defaults_are_the_seeds():
    thresholds = load_thresholds()
    assert list(thresholds) == list(DEFAULTS)
    assert len(thresholds) == 21
    for name, (component, unit, bad, *levels) in DEFAULTS.items():
        t = thresholds[name]
        assert (t.component, t.unit, t.bad, t.levels) == (component, unit, bad, Levels(*levels)), name
        assert t.env == f"PERFDECK_{name.upper()}"
        assert t.for_s is None and t.overrides == ()
    assert thresholds.files == (DEFAULTS_FILE,)


@pytest.mark.parametrize("name", list(DEFAULTS))
def test_every_packaged_threshold_is_documented_and_ordered(name):
    t = load_thresholds()[name]
    assert t.component in COMPONENTS and t.unit in UNITS and len(t.help) > 30
    assert "{subject}" in t.label and t.min_samples >= 1
    lv = t.levels
    assert lv.target <= lv.warning <= lv.critical if t.bad == "above" else lv.target >= lv.warning >= lv.critical


def test_unknown_threshold_name_says_which_exist():
    with pytest.raises(KeyError, match="no threshold named 'p99'; known: request_p95_ms, error_rate"):
        load_thresholds()["p99"]
    assert load_thresholds().get("p99") is None


@pytest.mark.parametrize(("value", "severity"), [
    (0, "healthy"), (200, "healthy"), (200.01, "degraded"), (499.99, "degraded"), (500, "warning"),
    (999.99, "warning"), (1000, "critical"), (60_000, "critical"),
])
def test_severity_when_higher_is_worse(value, severity):
    p95 = load_thresholds()["request_p95_ms"]
    assert p95.severity(value, p95.levels) == severity
    assert p95.level_of(severity) == {"healthy": 200, "degraded": 200, "warning": 500, "critical": 1000}[severity]


@pytest.mark.parametrize(("value", "severity"), [
    (1.0, "healthy"), (0.9, "healthy"), (0.8999, "degraded"), (0.8001, "degraded"), (0.8, "warning"),
    (0.5001, "warning"), (0.5, "critical"), (0.0, "critical"),
])
def test_severity_when_lower_is_worse(value, severity):
    hit_rate = load_thresholds()["cache_hit_rate"]
    assert hit_rate.severity(value) == severity


def test_a_component_is_healthy_up_and_critical_down():
    up = load_thresholds()["component_up"]
    assert (up.severity(1), up.severity(0)) == ("healthy", "critical")


def test_severities_are_the_contract_ones():
    p95 = load_thresholds()["request_p95_ms"]
    assert {p95.severity(v) for v in (1, 300, 600, 2000)} == set(SEVERITIES)


OVERRIDES = """
[request_p95_ms]
warning = 400

[[request_p95_ms.overrides]]
service = "shop-api"
critical = 900

[[request_p95_ms.overrides]]
endpoint = "/recommendations"
target = 800
warning = 1500
critical = 3000

[[request_p95_ms.overrides]]
service = "shop-api"
subject = "/recommendations"
target = 1000
warning = 2000
critical = 4000

[[cache_hit_rate.overrides]]
cache = "customer_lru"
target = 0.30
warning = 0.20
critical = 0.10
"""


@pytest.mark.parametrize(("service", "subject", "levels"), [
    ("shop-api", "/recommendations", (1000, 2000, 4000)),    # service and subject
    ("admin", "/recommendations", (800, 1500, 3000)),        # subject
    (None, "/recommendations", (800, 1500, 3000)),
    ("shop-api", "/search", (200, 400, 900)),                # service: only critical, the rest global
    ("admin", "/search", (200, 400, 1000)),                  # global, warning from the file
    (None, None, (200, 400, 1000)),
])
def test_the_most_specific_override_wins(tmp_path, service, subject, levels):
    thresholds = load_thresholds(user_file(tmp_path, OVERRIDES))
    p95 = thresholds["request_p95_ms"]
    assert p95.levels_for(service, subject) == Levels(*levels)
    assert thresholds.files == (DEFAULTS_FILE, tmp_path / "thresholds.toml")


def test_overrides_judge_their_subject_only(tmp_path):
    thresholds = load_thresholds(user_file(tmp_path, OVERRIDES))
    hit_rate = thresholds["cache_hit_rate"]
    assert hit_rate.severity(0.35, hit_rate.levels_for("shop-api", "customer_lru")) == "healthy"
    assert hit_rate.severity(0.35, hit_rate.levels_for("shop-api", "product_lru")) == "critical"
    p95 = thresholds["request_p95_ms"]
    assert p95.severity(1200, p95.levels_for("shop-api", "/recommendations")) == "degraded"
    assert p95.severity(1200, p95.levels_for("shop-api", "/search")) == "critical"


def test_the_later_of_two_equal_overrides_wins(tmp_path):
    path = user_file(tmp_path, """
[[error_rate.overrides]]
endpoint = "/login"
warning = 0.03
[[error_rate.overrides]]
endpoint = "/login"
warning = 0.04
""")
    assert load_thresholds(path)["error_rate"].levels_for("api", "/login") == Levels(0.01, 0.04, 0.05)


def test_environment_sets_levels_min_samples_and_for(tmp_path, monkeypatch):
    monkeypatch.setenv("PERFDECK_REQUEST_P95_MS_WARNING", "400")
    monkeypatch.setenv("PERFDECK_REQUEST_P95_MS_MIN_SAMPLES", "50")
    monkeypatch.setenv("PERFDECK_REQUEST_P95_MS_FOR", "2m")
    monkeypatch.setenv("PERFDECK_CACHE_HIT_RATE_CRITICAL", " 0.25 ")
    path = user_file(tmp_path, "[request_p95_ms]\nwarning = 300\ncritical = 700\nmin_samples = 10\nfor = '10m'\n"
                               "[[request_p95_ms.overrides]]\nendpoint = '/slow'\ntarget = 300\n")
    thresholds = load_thresholds(path)
    p95 = thresholds["request_p95_ms"]
    assert (p95.levels, p95.min_samples, p95.for_s) == (Levels(200, 400, 700), 50, 120.0)   # env over file
    assert p95.levels_for(None, "/slow") == Levels(300, 400, 700)
    assert thresholds["cache_hit_rate"].levels == Levels(0.9, 0.8, 0.25)


def test_environment_levels_are_checked_together(monkeypatch):
    monkeypatch.setenv("PERFDECK_HOST_CPU_PERCENT_WARNING", "100")     # above the packaged critical 95...
    monkeypatch.setenv("PERFDECK_HOST_CPU_PERCENT_CRITICAL", "101")    # ...fine once this is set too
    assert load_thresholds()["host_cpu_percent"].levels == Levels(70, 100, 101)
    monkeypatch.setenv("PERFDECK_HOST_CPU_PERCENT_TARGET", "100.5")
    message = (r"^\$PERFDECK_HOST_CPU_PERCENT_TARGET, \$PERFDECK_HOST_CPU_PERCENT_WARNING, "
               r"\$PERFDECK_HOST_CPU_PERCENT_CRITICAL \(over \[host_cpu_percent\]\): "
               r"warning 100 must lie between target 100.5 and critical 101")
    with pytest.raises(ThresholdsError, match=message):
        load_thresholds()


def test_an_override_inherits_the_final_levels(tmp_path, monkeypatch):
    monkeypatch.setenv("PERFDECK_REQUEST_P95_MS_CRITICAL", "5000")
    path = user_file(tmp_path, "[[request_p95_ms.overrides]]\nendpoint = '/slow'\ntarget = 800\nwarning = 2000\n")
    assert load_thresholds(path)["request_p95_ms"].levels_for("api", "/slow") == Levels(800, 2000, 5000)


def test_user_file_from_environment_and_missing_file(tmp_path, monkeypatch):
    assert load_thresholds(tmp_path / "absent.toml").files == (DEFAULTS_FILE,)
    path = user_file(tmp_path, "[job_wait_s]\nwarning = 20\n")
    monkeypatch.setenv("PERFDECK_THRESHOLDS", str(path))
    assert load_thresholds()["job_wait_s"].levels == Levels(5, 20, 60)


@pytest.mark.parametrize(("text", "message"), [
    ("[p99_ms]\nwarning = 1\n", r"\[p99_ms\] is not a threshold; known: request_p95_ms"),
    ("[request_p95_ms]\nwarn = 1\n", r"\[request_p95_ms\]: unknown keys \['warn'\]"),
    ("[request_p95_ms]\nwarning = '5OO'\n", r"\[request_p95_ms\] warning must be a number, got '5OO'"),
    ("[request_p95_ms]\nwarning = true\n", r"\[request_p95_ms\] warning must be a finite number, got True"),
    ("[request_p95_ms]\nwarning = 1500\n",
     r"\[request_p95_ms\]: warning 1500 must lie between target 200 and critical 1000 \(higher is worse"),
    ("[cache_hit_rate]\nwarning = 0.95\n",
     r"\[cache_hit_rate\]: warning 0.95 must lie between target 0.9 and critical 0.5 \(lower is worse"),
    ("[request_p95_ms]\nmin_samples = 2.5\n", r"min_samples must be a whole number >= 0, got 2.5"),
    ("[request_p95_ms]\nfor = 'soon'\n", r"\[request_p95_ms\] for must be a span like 30s, 5m or 2h, got 'soon'"),
    ("[[request_p95_ms.overrides]]\nendpoint = '/x'\nwarnin = 3\n",
     r"\[\[request_p95_ms.overrides\]\] #1: unknown keys \['warnin'\]"),
    ("[[request_p95_ms.overrides]]\nendpoint = '/x'\ncritical = 300\n",
     r"\[\[request_p95_ms.overrides\]\] #1: warning 500 must lie between target 200 and critical 300"),
    ("[[request_p95_ms.overrides]]\nwarning = 600\n", r"#1: needs a service or a subject"),
    ("[[request_p95_ms.overrides]]\nservice = 'a'\n", r"#1: sets no level"),
    ("[[cache_hit_rate.overrides]]\ncache = 'a'\nsubject = 'b'\nwarning = 0.7\n", r"give one of subject, cache"),
    ("[request_p95_ms]\nwarning = \n", r"not valid TOML"),
])
def test_broken_files_name_the_file_the_key_and_why(tmp_path, text, message):
    path = user_file(tmp_path, text)
    with pytest.raises(ThresholdsError, match=message) as info:
        load_thresholds(path)
    assert str(info.value).startswith(str(path))
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize(("var", "value", "message"), [
    ("PERFDECK_REQUEST_P95_MS_WARNING", "fast", r"\$PERFDECK_REQUEST_P95_MS_WARNING must be a number, got 'fast'"),
    ("PERFDECK_REQUEST_P95_MS_TARGET", "700",
     r"\$PERFDECK_REQUEST_P95_MS_TARGET \(over \[request_p95_ms\]\): warning 500 must lie between target 700"),
    ("PERFDECK_ERROR_RATE_FOR", "-1m", r"\$PERFDECK_ERROR_RATE_FOR must be a span"),
])
def test_broken_environment_names_the_variable(monkeypatch, var, value, message):
    monkeypatch.setenv(var, value)
    with pytest.raises(ThresholdsError, match=message):
        load_thresholds()


DEMO_FILE = Path(__file__).resolve().parent.parent / "collectors" / "demo" / "thresholds.toml"


@pytest.mark.skipif(not DEMO_FILE.exists(), reason="the demo ships no thresholds file")
def test_the_demos_thresholds_load():
    assert load_thresholds(DEMO_FILE).files == (DEFAULTS_FILE, DEMO_FILE)


@pytest.mark.parametrize(("value", "severity"), [
    (0, "healthy"), (60, "healthy"), (61, "degraded"), (299, "degraded"), (300, "critical"), (1200, "critical"),
])
def test_no_data_is_critical_once_silent_for_the_window(value, severity):
    no_data = load_thresholds()["no_data_s"]
    assert no_data.severity(value) == severity


def test_no_data_per_service_and_from_the_environment(tmp_path, monkeypatch):
    path = user_file(tmp_path, "[[no_data_s.overrides]]\nservice = 'nightly-report'\nwarning = 90000\n"
                               "critical = 180000\n")
    no_data = load_thresholds(path)["no_data_s"]
    assert no_data.severity(3600, no_data.levels_for("nightly-report", "nightly-report")) == "degraded"
    assert no_data.severity(3600, no_data.levels_for("shop-api", "shop-api")) == "critical"
    monkeypatch.setenv("PERFDECK_NO_DATA_S_WARNING", "600")
    monkeypatch.setenv("PERFDECK_NO_DATA_S_CRITICAL", "1800")
    no_data = load_thresholds()["no_data_s"]
    assert no_data.severity(900) == "warning" and no_data.env == "PERFDECK_NO_DATA_S"


def test_what_an_age_last_saw_is_packaged_only(tmp_path):
    assert (load_thresholds()["no_data_s"].last, load_thresholds()["collector_silent_s"].last) == ("batch", "report")
    with pytest.raises(ThresholdsError, match=r"unknown keys \['last'\]"):
        load_thresholds(user_file(tmp_path, "[no_data_s]\nlast = 'event'\n"))
