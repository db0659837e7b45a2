"""`perfdeck export alert-rules`: the health thresholds as Prometheus alerting rules. Checked with the real
promtool (`check rules`, and `test rules` with series named as /metrics names them: the latency and hit-rate
alerts fire at the configured levels and stay silent below), against a real /metrics rendering of a seeded
store (every series an expression reads exists there), and, without promtool, read back structurally."""
from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest
from click.testing import CliRunner
from helpers import clear_health_env
from prometheus_client.parser import text_string_to_metric_families
from seed_health import seed_health

from collectors.cli import main
from collectors.cli.alert_rules import DIRECT, alert_rules, promql_string, to_yaml, yaml_scalar
from collectors.health.settings import AlertSettings
from collectors.health.thresholds import load_thresholds

PROMTOOL = shutil.which("promtool")
needs_promtool = pytest.mark.skipif(PROMTOOL is None, reason="promtool not installed (Debian package prometheus)")

WEIRD = 'we"ird\ncache **bold** {{ .x }} é 😀'
OVERRIDES = f"""
[request_p95_ms]
warning = 600

[[request_p95_ms.overrides]]
service = "shop-api"
endpoint = "/search"
warning = 250
critical = 2500

[[cache_hit_rate.overrides]]
cache = {promql_string(WEIRD)}
warning = 0.6
critical = 0.3
"""


@pytest.fixture(autouse=True)
def _no_env(monkeypatch, tmp_path):
    clear_health_env(monkeypatch, tmp_path)


def export(tmp_path, config: Path | None = None) -> str:
    """The rules for perfdeck.toml `config`, or for the defaults (an empty perfdeck.toml on its own)."""
    if config is None:
        (tmp_path / "defaults").mkdir(exist_ok=True)
        config = tmp_path / "defaults" / "perfdeck.toml"
        config.write_text("")
    out = tmp_path / "rules.yml"
    args = ["export", "alert-rules", "--output", str(out), "--config", str(config)]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    return out.read_text()


@pytest.fixture
def configured(tmp_path) -> Path:
    (tmp_path / "thresholds.toml").write_text(OVERRIDES)
    config = tmp_path / "perfdeck.toml"
    config.write_text('[alerts]\nfor = "1m"\n')
    return config


def rules_of(document: dict) -> dict[tuple[str, str], dict]:
    (group,) = document["groups"]
    return {(r["labels"]["check"], r["labels"]["severity"]): r for r in group["rules"]}


# -- what the rules say ----------------------------------------------------------------------------------
def test_default_levels_land_in_the_expressions():
    rules = rules_of(alert_rules(load_thresholds(None), AlertSettings()))
    assert "> 0.5)" in rules["request_p95_ms", "warning"]["expr"]          # 500 ms, in seconds
    assert "> 1)" in rules["request_p95_ms", "critical"]["expr"]
    assert "histogram_quantile(0.95, sum by (service, endpoint, le) (perfdeck_request_duration_seconds_bucket))" \
        in rules["request_p95_ms", "warning"]["expr"]
    assert "perfdeck_request_errors / perfdeck_requests >= 0.05" in rules["error_rate", "critical"]["expr"]
    assert "perfdeck_cache_hit_ratio <= 0.8)" in rules["cache_hit_rate", "warning"]["expr"]
    assert "perfdeck_cache_lookups >= 50" in rules["cache_hit_rate", "warning"]["expr"]
    assert rules["job_wait_s", "critical"]["expr"] == 'perfdeck_health_status{check="job_wait_s"} >= 2'
    # no_data_s has no warning band (warning = critical): only its critical rule
    assert ("no_data_s", "critical") in rules and ("no_data_s", "warning") not in rules
    assert {r["for"] for r in rules.values()} == {"5m"}
    for (check, severity), rule in rules.items():
        assert rule["alert"].startswith("Perfdeck") and rule["labels"]["severity"] == severity
        assert set(rule["annotations"]) == {"summary", "description"}


def test_overrides_from_perfdeck_toml_land_in_the_expressions(tmp_path, configured):
    from collectors import config
    from collectors.health.settings import alert_settings

    settings = alert_settings(config.load(configured))
    rules = rules_of(alert_rules(load_thresholds(settings.thresholds_file), settings))
    p95 = rules["request_p95_ms", "warning"]["expr"]
    assert "perfdeck_request_duration_seconds_bucket)) > 0.6)" in p95        # the file's own level
    assert 'perfdeck_request_duration_seconds_bucket{endpoint="/search",service="shop-api"})) > 0.25)' in p95
    # the default term leaves the overridden endpoint out
    assert 'unless on (service, endpoint) perfdeck_requests{endpoint="/search",service="shop-api"}' in p95
    assert "> 2.5)" in rules["request_p95_ms", "critical"]["expr"]
    hit = rules["cache_hit_rate", "warning"]["expr"]
    weird = promql_string(WEIRD)
    assert f"perfdeck_cache_hit_ratio{{cache={weird}}} <= 0.6)" in hit and "perfdeck_cache_hit_ratio <= 0.8)" in hit
    assert f"perfdeck_cache_hit_ratio{{cache={weird}}} <= 0.3)" in rules["cache_hit_rate", "critical"]["expr"]
    assert {r["for"] for r in rules.values()} == {"1m"}
    # the names reach the description as text: no template action opens in them
    description = rules["cache_hit_rate", "warning"]["annotations"]["description"]
    assert 'cache **bold** {{ "{{" }} .x }}' in description
    assert "{{ .x" not in description.replace('{{ "{{" }} .x', "")


def test_min_severity_critical_leaves_the_warnings_out():
    rules = rules_of(alert_rules(load_thresholds(None), AlertSettings(min_severity="critical")))
    assert rules and {severity for _, severity in rules} == {"critical"}


def test_yaml_quoting():
    assert yaml_scalar("warning") == "warning"
    assert yaml_scalar("yes") == "'yes'" and yaml_scalar("5m") == "'5m'"
    assert yaml_scalar("it's {x}: #1") == "'it''s {x}: #1'"
    assert yaml_scalar('a"b\nc é 😀\u2028') == '"a\\"b\\nc \\u00E9 \\U0001F600\\u2028"'   # as PromQL writes it
    assert promql_string('a"b\\c\nd é') == '"a\\"b\\\\c\\nd \\u00E9"'


# -- read back -------------------------------------------------------------------------------------------
_KEY = re.compile(r"^(\s*)(- )?([a-z_]+):(?: (.*))?$")


def read_back(text: str) -> dict:
    """A reader for what to_yaml writes (block maps and lists, quoted scalars), strict about the rest:
    enough to check the structure with no YAML library installed. promtool checks it for real."""
    def scalar(raw: str):
        if raw.startswith("'"):
            assert raw.endswith("'") and "'" not in raw[1:-1].replace("''", ""), raw
            return raw[1:-1].replace("''", "'")
        if raw.startswith('"'):
            return raw[1:-1].encode("ascii").decode("unicode_escape")
        assert re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", raw), raw
        return int(raw) if raw.isdigit() else raw

    tokens = []                     # ("item", indent) | ("key", indent, key, raw value or None)
    for line in text.splitlines():
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        m = _KEY.match(line)
        assert m, f"not a line to_yaml writes: {line!r}"
        indent = len(m.group(1))
        if m.group(2):
            tokens.append(("item", indent))
            indent += 2
        tokens.append(("key", indent, m.group(3), m.group(4)))

    def block(i: int, indent: int):
        if tokens[i][0] == "item":
            items = []
            while i < len(tokens) and tokens[i] == ("item", indent):
                value, i = block(i + 1, indent + 2)
                items.append(value)
            return items, i
        mapping: dict = {}
        while i < len(tokens) and tokens[i][0] == "key" and tokens[i][1] == indent:
            _, _, key, raw = tokens[i]
            assert key not in mapping, f"duplicate key {key}"
            if raw is None:
                assert tokens[i + 1][1] > indent, tokens[i + 1]
                mapping[key], i = block(i + 1, tokens[i + 1][1])
            else:
                mapping[key], i = scalar(raw), i + 1
        return mapping, i

    root, end = block(0, 0)
    assert end == len(tokens), tokens[end]
    return root


def test_the_file_reads_back_as_its_document(tmp_path, configured):
    from collectors import config
    from collectors.health.settings import alert_settings

    settings = alert_settings(config.load(configured))
    document = alert_rules(load_thresholds(settings.thresholds_file), settings)
    text = export(tmp_path, configured)
    assert read_back(text) == document
    assert read_back(export(tmp_path)) == alert_rules(load_thresholds(None), AlertSettings())
    (group,) = document["groups"]
    assert group["name"] == "perfdeck"
    for rule in group["rules"]:
        assert list(rule) == ["alert", "expr", "for", "labels", "annotations"]
        assert rule["labels"]["severity"] in ("warning", "critical")
        assert re.fullmatch(r"[a-zA-Z_:][a-zA-Z0-9_:]*", rule["alert"]), rule["alert"]


def test_stdout_is_the_default(tmp_path, configured):
    result = CliRunner().invoke(main, ["export", "alert-rules", "--config", str(configured)])
    assert result.exit_code == 0 and result.output == export(tmp_path, configured)


def test_a_broken_thresholds_file_is_one_line(tmp_path):
    (tmp_path / "thresholds.toml").write_text("[request_p95_ms]\nwarning = 5000\n")
    (tmp_path / "perfdeck.toml").write_text("")
    result = CliRunner().invoke(main, ["export", "alert-rules", "--config", str(tmp_path / "perfdeck.toml")])
    assert result.exit_code == 1 and "warning 5000 must lie between" in result.output


# -- the series exist ------------------------------------------------------------------------------------
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')


def test_every_series_in_an_expression_is_served_at_metrics(tmp_path, store, configured):
    from collectors.cli.health import assessment
    from collectors.http.metrics import render
    from collectors.store import read, utcnow

    now = utcnow()
    seed_health(store, now=now)
    _, assess = assessment({})
    with read(store) as con:
        text = render(con, now=now, checks=assess(con, now))
    served = set()
    for family in text_string_to_metric_families(text):
        served.add(family.name)
        served |= {s.name for s in family.samples}
    declared = set(re.findall(r"^# TYPE (\S+)", text, re.M))
    used = set()
    for config in (None, configured):
        for rule in read_back(export(tmp_path, config))["groups"][0]["rules"]:
            used |= set(re.findall(r"\bperfdeck_[a-z_]+\b", _STRING.sub('""', rule["expr"])))
    assert used >= {"perfdeck_request_duration_seconds_bucket", "perfdeck_request_duration_seconds_count",
                    "perfdeck_requests", "perfdeck_request_errors", "perfdeck_cache_hit_ratio",
                    "perfdeck_cache_lookups", "perfdeck_health_status", "perfdeck_ingest_rejected_rows"}
    histogram = {"perfdeck_request_duration_seconds_bucket", "perfdeck_request_duration_seconds_count"}
    for name in used:
        assert name in served or name in declared or (name in histogram and
                                                      "perfdeck_request_duration_seconds" in declared), name
    # the seeded store gives the request, cache and health series samples, with the labels the rules use
    for name in ("perfdeck_request_duration_seconds_bucket", "perfdeck_requests", "perfdeck_cache_hit_ratio",
                 "perfdeck_health_status"):
        assert re.search(rf"^{name}{{", text, re.M), name
    assert re.search(r'^perfdeck_health_status\{[^}]*check="job_failure_rate"', text, re.M)
    assert set(DIRECT) <= set(load_thresholds(None))


# -- promtool ---------------------------------------------------------------------------------------------
@needs_promtool
@pytest.mark.parametrize("with_overrides", [False, True])
def test_promtool_check_rules(tmp_path, configured, with_overrides):
    rules = tmp_path / "rules.yml"
    rules.write_text(export(tmp_path, configured if with_overrides else None))
    done = subprocess.run([PROMTOOL, "check", "rules", str(rules)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout and "duplicate" not in (done.stdout + done.stderr).lower()


def _buckets(service: str, endpoint: str, cumulative: dict[str, int]) -> list[dict]:
    """input_series of one endpoint's histogram: counts per `le` up to +Inf, flat over the test."""
    labels = f'service={promql_string(service)},endpoint={promql_string(endpoint)}'
    bounds = ["0.005", "0.01", "0.025", "0.05", "0.1", "0.25", "0.5", "1.0", "2.5", "5.0", "10.0", "25.0", "60.0",
              "+Inf"]
    series, count = [], 0
    for le in bounds:
        count = cumulative.get(le, count)
        series.append({"series": f'perfdeck_request_duration_seconds_bucket{{{labels},le="{le}"}}',
                       "values": f"{count}x10"})
    series.append({"series": f"perfdeck_request_duration_seconds_count{{{labels}}}", "values": f"{count}x10"})
    series.append({"series": f"perfdeck_requests{{{labels}}}", "values": f"{count}x10"})
    return series


def _cache(service: str, cache: str, ratio: float, lookups: int) -> list[dict]:
    labels = f"service={promql_string(service)},cache={promql_string(cache)}"
    return [{"series": f"perfdeck_cache_hit_ratio{{{labels}}}", "values": f"{ratio}x10"},
            {"series": f"perfdeck_cache_lookups{{{labels}}}", "values": f"{lookups}x10"}]


def _alert(name: str, check: str, component: str, severity: str, **labels) -> dict:
    return {"exp_labels": {"severity": severity, "check": check, "component": component, **labels}}


@needs_promtool
def test_promtool_unit_test_fires_at_the_configured_levels(tmp_path, configured):
    """p95 of 0.4375 s (80 of 100 requests within 0.25 s, all within 0.5 s) fires at shop-api /search's
    250 ms and not at the 600 ms of the others; 0.95 s fires 600 ms, not 2.5 s; a job and an endpoint of 10
    requests stay silent. Hit rate 0.55 of the odd cache fires its 0.6, 0.7 does not; 0.75 of a plain
    cache fires 0.8, 0.85 does not, 0.4 is critical; 10 lookups are too few."""
    document = read_back(export(tmp_path, configured))
    for rule in document["groups"][0]["rules"]:
        rule.pop("annotations")      # expanded per alert; `check rules` parses them
    (tmp_path / "rules_only.yml").write_text(to_yaml(document) + "\n")

    quick = {"0.1": 50, "0.25": 80, "0.5": 100}
    slow = {"0.5": 50, "1.0": 100}
    series = (_buckets("shop-api", "/search", quick) + _buckets("shop-api", "/home", quick)
              + _buckets("other-api", "/search", quick) + _buckets("shop-api", "/slow", slow)
              + _buckets("shop-api", "/rare", {"10.0": 10}) + _buckets("worker", "job:nightly", {"60.0": 100})
              + [{"series": 'perfdeck_health_status{component="Jobs",check="job_failure_rate",service="worker",'
                            'subject="job:nightly"}', "values": "0x10"}]
              + _cache("a", WEIRD, 0.7, 100) + _cache("b", WEIRD, 0.55, 100) + _cache("a", "plain", 0.75, 100)
              + _cache("a", "fine", 0.85, 100) + _cache("a", "dead", 0.4, 100) + _cache("a", "few", 0.1, 10))
    p95 = ("request_p95_ms", "Latency")
    hit = ("cache_hit_rate", "Caches")
    tests = {"rule_files": ["rules_only.yml"], "evaluation_interval": "1m", "tests": [{
        "interval": "1m",
        "input_series": series,
        "alert_rule_test": [
            {"eval_time": "5m", "alertname": "PerfdeckRequestP95Ms", "exp_alerts": [
                _alert("", *p95, "warning", service="shop-api", endpoint="/search"),
                _alert("", *p95, "warning", service="shop-api", endpoint="/slow")]},
            {"eval_time": "5m", "alertname": "PerfdeckCacheHitRate", "exp_alerts": [
                _alert("", *hit, "warning", service="b", cache=WEIRD),
                _alert("", *hit, "warning", service="a", cache="plain"),
                _alert("", *hit, "warning", service="a", cache="dead"),
                _alert("", *hit, "critical", service="a", cache="dead")]},
            # `for` is 1m: nothing yet at the first evaluation
            {"eval_time": "0m", "alertname": "PerfdeckRequestP95Ms", "exp_alerts": []},
            {"eval_time": "0m", "alertname": "PerfdeckCacheHitRate", "exp_alerts": []},
        ]}]}
    (tmp_path / "tests.yml").write_text(to_yaml(tests) + "\n")
    done = subprocess.run([PROMTOOL, "test", "rules", "tests.yml"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout
