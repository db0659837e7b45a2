"""Health end to end on real stores: measurements of a seeded window, the assessment and its messages,
components and overall status, and `perfdeck health` (exit codes and --json)."""
from __future__ import annotations

import json
import re
from datetime import datetime, timedelta

import pandas as pd
import pytest
from click.testing import CliRunner
from helpers import clear_health_env
from seed_cost import EVENT_COLUMNS, event
from seed_health import EXPECTED, seed_health, spend
from seed_pipeline import seed_pipeline

from collectors.cli.health import health
from collectors.formatting import value as format_value
from collectors.health import ASSESSED_COLUMNS
from collectors.health.assess import assess, components, overall
from collectors.health.thresholds import load_thresholds
from collectors.store import migrate, read, utcnow, write
from dashboard.queries import budget_status, health_checks, health_measurements
from dashboard.queries.health import current_health

NOW = datetime(2025, 3, 14, 12, 0, 30)
SINCE = NOW - timedelta(minutes=5)


@pytest.fixture(autouse=True)
def _no_health_env(monkeypatch, tmp_path):
    """No thresholds, budgets, [alerts] settings or config of whoever runs the tests."""
    clear_health_env(monkeypatch, tmp_path)


@pytest.fixture
def seeded(store):
    seed_health(store, now=NOW)
    return store


def measure(path, **budgets) -> pd.DataFrame:
    with read(path) as con:
        return health_measurements(con, since=SINCE, until=NOW, **budgets)


def test_measurements_of_a_seeded_window(seeded):
    df = measure(seeded)
    assert list(df.columns) == ["check", "service", "subject", "value", "samples"]
    got = [(r.check, None if pd.isna(r.service) else r.service, r.subject, r.samples) for r in df.itertuples()]
    assert got == [(c, s, subj, n) for c, s, subj, _, n in EXPECTED]
    assert df["value"].tolist() == pytest.approx([v for *_, v, _ in EXPECTED], rel=1e-12)


def test_budgets_are_measured_only_when_configured(seeded):
    assert "budget_burn" not in set(measure(seeded)["check"])
    df = measure(seeded, daily_budget=1.0, monthly_budget=10.0)
    budgets = df[df["check"] == "budget_burn"].set_index("subject")["value"]
    assert budgets["today"] == pytest.approx(float(spend(NOW)) / 1.0)        # 1.20 spent of 1.00
    with read(seeded) as con:
        month = budget_status(con, now=NOW, monthly_budget=10.0).iloc[0]
    assert budgets["month"] == pytest.approx(month["forecast_share"])
    only_month = measure(seeded, monthly_budget=10.0)
    assert only_month.loc[only_month["check"] == "budget_burn", "subject"].tolist() == ["month"]


def test_an_empty_window_measures_only_the_components(seeded):
    with read(seeded) as con:
        df = health_measurements(con, since=NOW + timedelta(minutes=10), until=NOW + timedelta(hours=1))
    # Both Redis components were checked within the hour before; the database 3 hours ago is stale.
    assert df["subject"].tolist() == ["redis cache", "redis queue"]
    with read(seeded) as con:
        assert health_measurements(con, since=NOW + timedelta(hours=2), until=NOW + timedelta(hours=3)).empty


# severity, check, service, subject, message — worst first, then component, threshold, service, subject
ASSESSED = [
    ("critical", "job_failure_rate", "worker", "job:daily_report",
     "failure rate of job:daily_report 20 % > 10 % critical"),
    ("critical", "host_disk_percent", None, "web-1:/", "disk use of web-1:/ 96 % > 95 % critical"),
    ("critical", "budget_burn", None, "month", None),
    ("critical", "component_up", None, "redis queue", "redis queue is down"),
    ("warning", "request_p95_ms", "shop-api", "/search", "p95 of /search 740 ms > 500 ms warning"),
    ("warning", "error_rate", "shop-api", "/products/{id}", "error rate of /products/{id} 2 % ≥ 2 % warning"),
    ("warning", "job_wait_s", "worker", "job:send_receipt", "queue wait p95 of job:send_receipt 45 s > 30 s warning"),
    ("warning", "cache_hit_rate", None, "cache", "hit rate of cache 78 % < 80 % warning"),
    ("warning", "cache_hit_rate", "shop-api", "product_lru", "hit rate of product_lru 62 % < 80 % warning"),
    ("warning", "cache_entries", "shop-api", "product_lru",
     "entries of product_lru 12,000 entries > 10,000 entries warning"),
    ("warning", "host_cpu_percent", None, "web-1", "CPU of host web-1 91 % > 85 % warning"),
    ("warning", "budget_burn", None, "today", "LLM budget use (today) 120 % > 100 % warning"),
    ("degraded", "cache_lookup_ms", "shop-api", "product_lru", "lookup time of product_lru 2.5 ms > 1 ms target"),
    ("degraded", "cost_per_query_usd", "shop-api", "/recommendations",
     "cost per request of /recommendations $0.12 > $0.10 target"),
    ("healthy", "request_p95_ms", "shop-api", "/products/{id}", "p95 of /products/{id} 80 ms ≤ 200 ms target"),
    ("healthy", "error_rate", "shop-api", "/search", "error rate of /search 0 % ≤ 1 % target"),
    ("healthy", "job_failure_rate", "worker", "job:send_receipt", "failure rate of job:send_receipt 0 % ≤ 1 % target"),
    ("healthy", "cache_hit_rate", "shop-api", "customer_lru", "hit rate of customer_lru 95 % ≥ 90 % target"),
    ("healthy", "host_memory_percent", None, "web-1", "memory of host web-1 50 % ≤ 80 % target"),
    ("healthy", "component_up", None, "redis cache", "redis cache is up"),
]


def test_assess_end_to_end(seeded):
    with read(seeded) as con:
        df = assess(health_measurements(con, since=SINCE, until=NOW, daily_budget=1.0, monthly_budget=10.0),
                    load_thresholds())
    assert list(df.columns) == ASSESSED_COLUMNS
    got = [(r.severity, r.check, r.service, r.subject, r.message) for r in df.itertuples()]
    assert [g[:4] for g in got] == [a[:4] for a in ASSESSED]
    assert [g[4] for g in got if g[2:4] != (None, "month")] == [a[4] for a in ASSESSED if a[2:4] != (None, "month")]
    # Too few samples: /checkout and /recommendations (10 requests < 20), tiny_lru (10 lookups < 50).
    assert not df[df["subject"].isin(["/checkout", "tiny_lru"])].size
    search = df[df["subject"] == "/search"].set_index("check")
    assert search.loc["request_p95_ms", ["component", "value", "unit", "level"]].tolist() == ["Latency", 740, "ms", 500]
    assert search.loc["error_rate", "level"] == 0.01     # healthy: measured against the target
    hit = df[df["subject"] == "product_lru"].set_index("check").loc["cache_hit_rate"]
    assert (hit["value"], hit["unit"], hit["level"]) == (pytest.approx(0.62), "ratio", 0.8)


def test_overrides_change_the_verdict(seeded, tmp_path):
    path = tmp_path / "thresholds.toml"
    path.write_text("""
[[request_p95_ms.overrides]]
service = "shop-api"
endpoint = "/search"
target = 800
warning = 1500
critical = 3000

[request_p95_ms]
min_samples = 10

[host_disk_percent]
critical = 98
""")
    with read(seeded) as con:
        df = current_health(con, now=NOW, thresholds=load_thresholds(path))
    by = df.set_index(["check", "subject"])
    assert by.loc[("request_p95_ms", "/search"), "message"] == "p95 of /search 740 ms ≤ 800 ms target"
    assert by.loc[("request_p95_ms", "/checkout"), "message"] == "p95 of /checkout 5,000 ms > 1,000 ms critical"
    assert by.loc[("host_disk_percent", "web-1:/"), "message"] == "disk use of web-1:/ 96 % > 90 % warning"


def test_components_and_overall(seeded):
    with read(seeded) as con:
        df = current_health(con, now=NOW)
    per = components(df)
    assert list(per.columns) == ["component", "severity", "checks", "reason"]
    assert per.values.tolist() == [
        ["Latency", "warning", 2, "p95 of /search 740 ms > 500 ms warning"],
        ["Errors", "warning", 2, "error rate of /products/{id} 2 % ≥ 2 % warning"],
        ["Jobs", "critical", 3, "failure rate of job:daily_report 20 % > 10 % critical"],
        ["Caches", "warning", 5, "hit rate of cache 78 % < 80 % warning (+ 2 more warning)"],
        ["Host", "critical", 3, "disk use of web-1:/ 96 % > 95 % critical"],
        ["Cost", "degraded", 1, "cost per request of /recommendations $0.12 > $0.10 target"],
        ["Components", "critical", 2, "redis queue is down"],
    ]
    assert overall(df) == ("critical", ["failure rate of job:daily_report 20 % > 10 % critical",
                                        "disk use of web-1:/ 96 % > 95 % critical", "redis queue is down"])


def test_nothing_to_judge_is_unknown_not_healthy():
    empty = assess(pd.DataFrame(columns=["check", "service", "subject", "value", "samples"]), load_thresholds())
    assert list(empty.columns) == ASSESSED_COLUMNS and empty.empty
    assert overall(empty) == ("unknown", ["nothing had enough data in the window to be judged"])
    assert components(empty).empty


def test_all_healthy_has_no_reasons():
    measured = pd.DataFrame([("request_p95_ms", "api", "/a", 120.0, 30), ("component_up", None, "host web-1", 1.0, 1)],
                            columns=["check", "service", "subject", "value", "samples"])
    df = assess(measured, load_thresholds())
    assert df["message"].tolist() == ["p95 of /a 120 ms ≤ 200 ms target", "host web-1 is up"]
    assert overall(df) == ("healthy", [])
    assert components(df)["reason"].tolist() == ["1 check healthy", "1 check healthy"]


@pytest.mark.parametrize(("value", "unit", "text"), [
    (740.0, "ms", "740 ms"), (1240.4, "ms", "1,240 ms"), (2.25, "ms", "2.25 ms"), (12.34, "s", "12.3 s"),
    (0.62, "ratio", "62 %"), (0.0125, "ratio", "1.25 %"), (91.0, "percent", "91 %"), (0.1, "usd", "$0.10"),
    (0.12345, "usd", "$0.123"), (12.5, "usd", "$12.50"), (12000, "entries", "12,000 entries"), (0, "up", "down"),
])
def test_values_in_messages(value, unit, text):
    assert format_value(value, unit) == text


def test_health_checks_reads_the_config(seeded, tmp_path, monkeypatch):
    (tmp_path / "thresholds.toml").write_text("[cache_entries]\nwarning = 20000\ncritical = 60000\n")
    config = tmp_path / "perfdeck.toml"
    config.write_text("[cost]\ndaily_budget = 2.0\n")
    with read(seeded) as con:
        df = health_checks(con, until=NOW, window_s=300, config_path=str(config))
    by = df.set_index(["check", "subject"])["message"]
    assert by[("cache_entries", "product_lru")] == "entries of product_lru 12,000 entries > 5,000 entries target"
    assert by[("budget_burn", "today")] == "LLM budget use (today) 60 % ≤ 90 % target"
    monkeypatch.setenv("PERFDECK_CONFIG", str(config))
    with read(seeded) as con:
        assert health_checks(con, until=NOW, window_s=300).equals(df)


# -- perfdeck health --------------------------------------------------------------------------------------


def run(*args):
    return CliRunner().invoke(health, list(args), catch_exceptions=False)


def healthy_store(path, now: datetime) -> None:
    rows = [event(now - timedelta(seconds=90 + i), "/search", service="shop-api", duration_ms=100.0) for i in range(30)]
    with write(path) as con:
        migrate(con)
        con.executemany(f"INSERT INTO request_events ({', '.join(EVENT_COLUMNS)}) VALUES "
                        f"({', '.join('?' * len(EVENT_COLUMNS))})", [[r[c] for c in EVENT_COLUMNS] for r in rows])


def test_cli_healthy_exits_0(store):
    healthy_store(store, utcnow())
    result = run("--db", str(store))
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert re.fullmatch(r"HEALTHY: 2 checks over the last 5 min to \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC", lines[0])
    assert lines[1:] == ["", "components:", "  Latency  healthy  1  1 check healthy",
                         "  Errors   healthy  1  1 check healthy"]
    assert run("--db", str(store), "--fail-on", "degraded").exit_code == 0


def test_cli_critical_exits_2_with_reasons_and_a_table(store):
    seed_health(store, now=utcnow())
    result = run("--db", str(store))
    assert result.exit_code == 2, result.output
    out = result.output
    assert out.startswith("CRITICAL: ")
    assert "  failure rate of job:daily_report 20 % > 10 % critical\n" in out
    assert "  Components  critical  2  redis queue is down\n" in out
    assert re.search(r"\n  critical  component_up +redis queue +redis queue is down\n", out)
    assert re.search(r"\n  warning   request_p95_ms +shop-api /search +p95 of /search 740 ms > 500 ms warning\n", out)
    assert "not healthy:" in out and "is up" not in out     # healthy checks are not listed


def test_cli_fail_on_warning(store, tmp_path):
    seed_health(store, now=utcnow(), redis_down=False)
    relaxed = tmp_path / "thresholds.toml"
    relaxed.write_text("[host_disk_percent]\ncritical = 99\n[job_failure_rate]\ncritical = 0.5\n")
    config = tmp_path / "perfdeck.toml"
    config.write_text(f"[alerts]\nthresholds_file = '{relaxed}'\n")
    result = run("--db", str(store), "--config", str(config))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("WARNING: ")
    assert run("--db", str(store), "--config", str(config), "--fail-on", "warning").exit_code == 2


def test_cli_json(store, tmp_path):
    seed_health(store, now=utcnow())
    result = run("--db", str(store), "--json", "--window", "10m")
    assert result.exit_code == 2
    doc = json.loads(result.output)
    assert list(doc) == ["status", "window_s", "at", "reasons", "components", "checks"]
    assert doc["status"] == "critical" and doc["window_s"] == 600.0
    assert datetime.fromisoformat(doc["at"].removesuffix("Z")) <= utcnow()
    assert "redis queue is down" in doc["reasons"]
    assert [c["component"] for c in doc["components"]] == ["Latency", "Errors", "Jobs", "Caches", "Host", "Cost",
                                                           "Components"]
    assert set(doc["components"][0]) == {"component", "severity", "checks", "reason"}
    assert all(list(c) == ASSESSED_COLUMNS for c in doc["checks"])
    redis = next(c for c in doc["checks"] if c["subject"] == "cache" and c["check"] == "cache_hit_rate")
    assert redis["service"] is None and redis["unit"] == "ratio" and redis["severity"] == "warning"


def test_cli_errors_are_one_clear_line(tmp_path):
    result = run("--db", str(tmp_path / "absent.duckdb"))
    assert result.exit_code == 1 and "absent.duckdb" in result.output and "Traceback" not in result.output
    broken = tmp_path / "thresholds.toml"
    broken.write_text("[request_p95_ms]\nwarning = 5000\n")
    config = tmp_path / "perfdeck.toml"
    config.write_text("")
    healthy_store(tmp_path / "s.duckdb", utcnow())
    result = run("--db", str(tmp_path / "s.duckdb"), "--config", str(config))
    assert result.exit_code == 1
    assert f"Error: {broken}: [request_p95_ms]: warning 5000 must lie between" in result.output
    result = run("--db", str(tmp_path / "s.duckdb"), "--window", "soon")
    assert result.exit_code == 1 and "'soon' is not a span like 5m" in result.output


# -- the ingest pipeline: silence, losses, sources ---------------------------------------------------------

# What health_measurements gives for seed_pipeline's window, after everything else (none of it seeded).
INGEST_EXPECTED = [
    ("no_data_s", "shop-api", "shop-api", 10.0), ("no_data_s", "worker", "worker", 1200.0),   # legacy: 2 days, retired
    ("sdk_dropped_events", "shop-api", "shop-api", 24.0),
    ("rejected_rows", "shop-api", "shop-api", 10.0),                 # 3 refused by its SDKs + 7 by the collector
    ("quarantined_batches", None, "redis:perfdeck:batches", 0.0),
    ("quarantined_batches", None, "spool:/mnt/shared/spool", 0.0),
    ("quarantined_batches", None, "spool:data/spool", 2.0),
    ("ingest_lag_s", None, "redis:perfdeck:batches", 2.0),
    ("ingest_lag_s", None, "spool:data/spool", 90.0),              # the unreadable spool has no lag to tell
    ("stream_pending", None, "redis:perfdeck:batches", 2500.0),
    ("ingest_source_up", None, "redis:perfdeck:batches", 1.0),
    ("ingest_source_up", None, "spool:/mnt/shared/spool", 0.0),
    ("ingest_source_up", None, "spool:data/spool", 1.0),
    ("collector_silent_s", None, "collector", 10.0),
]

INGEST_ASSESSED = [
    ("critical", "no data from worker for 20 min (last batch 11:40 UTC)"),
    ("critical", "ingest source spool:/mnt/shared/spool is down"),
    ("warning", "events dropped by the SDK of shop-api 24 > 1 warning"),
    ("warning", "rows rejected from shop-api 10 ≥ 10 warning"),
    ("warning", "batches quarantined from spool:data/spool 2 > 1 warning"),
    ("warning", "ingest lag of spool:data/spool 90 s > 60 s warning"),
    ("warning", "unacknowledged entries of redis:perfdeck:batches 2,500 > 2,000 warning"),
    ("healthy", "shop-api: last batch 10 s ago"),
    ("healthy", "batches quarantined from redis:perfdeck:batches 0 ≤ 0 target"),
    ("healthy", "batches quarantined from spool:/mnt/shared/spool 0 ≤ 0 target"),
    ("healthy", "ingest lag of redis:perfdeck:batches 2 s ≤ 10 s target"),
    ("healthy", "ingest source redis:perfdeck:batches is up"),
    ("healthy", "ingest source spool:data/spool is up"),
    ("healthy", "collector: last report 10 s ago"),
]


@pytest.fixture
def pipeline(store):
    seed_pipeline(store, now=NOW)
    return store


def test_ingest_measurements_of_a_seeded_window(pipeline):
    df = measure(pipeline)
    got = [(r.check, None if pd.isna(r.service) else r.service, r.subject, r.value) for r in df.itertuples()]
    assert got == INGEST_EXPECTED


def test_ingest_checks_and_their_messages(pipeline):
    with read(pipeline) as con:
        df = current_health(con, now=NOW)
    assert set(df["component"]) == {"Ingest"}
    assert [(r.severity, r.message) for r in df.itertuples()] == INGEST_ASSESSED
    assert overall(df) == ("critical", ["no data from worker for 20 min (last batch 11:40 UTC)",
                                        "ingest source spool:/mnt/shared/spool is down"])
    assert components(df).values.tolist() == [
        ["Ingest", "critical", 14, "no data from worker for 20 min (last batch 11:40 UTC) (+ 1 more critical)"]]
    # An alert's target for a service's own check is the service.
    worker = df[df["check"] == "no_data_s"].iloc[0]
    assert (worker["service"], worker["subject"], worker["unit"], worker["level"]) == ("worker", "worker", "age", 300)


def test_a_silent_collector_and_services_go_critical(pipeline):
    later = NOW + timedelta(minutes=6)    # nothing reported since NOW - 10 s
    with read(pipeline) as con:
        df = current_health(con, now=later)
    by = df.set_index(["check", "subject"])
    assert by.loc[("collector_silent_s", "collector"), "message"] == \
        "no report from the collector for 6.2 min (last report 12:00 UTC)"
    assert by.loc[("no_data_s", "shop-api"), "message"] == "no data from shop-api for 6.2 min (last batch 12:00 UTC)"
    assert (df["severity"] == "critical").all()
    # The sources' own checks need a report in the window: none left.
    assert set(df["check"]) == {"no_data_s", "collector_silent_s"}


def test_each_of_several_collectors_is_judged_on_its_own_reports(pipeline):
    """On a lake two collectors report the same stream: the one that went silent is critical by its name,
    though the other still reports."""
    with write(pipeline) as con:
        for name, ago in (("collector-a", 10), ("collector-b", 190)):
            con.execute("INSERT INTO ingest_sources (ts, source, pending, collector) VALUES (?, 'redis:perfdeck:batches', 0, ?)",
                        [NOW - timedelta(seconds=ago), name])
    with read(pipeline) as con:
        df = current_health(con, now=NOW)
    silent = df[df["check"] == "collector_silent_s"].set_index("subject")
    assert silent["severity"].to_dict() == {"collector collector-a": "healthy", "collector collector-b": "critical"}
    assert silent.loc["collector collector-b", "message"] == \
        "no report from the collector collector-b for 3.2 min (last report 11:57 UTC)"


def test_no_data_levels_are_configurable_per_service_and_in_the_environment(pipeline, tmp_path, monkeypatch):
    path = tmp_path / "thresholds.toml"
    path.write_text("[[no_data_s.overrides]]\nservice = 'worker'\nwarning = 1800\ncritical = 7200\n")
    with read(pipeline) as con:
        df = current_health(con, now=NOW, thresholds=load_thresholds(path))
    worker = df[df["subject"] == "worker"].iloc[0]
    assert (worker["severity"], worker["message"]) == ("degraded", "no data from worker for 20 min (last batch 11:40 UTC)")
    monkeypatch.setenv("PERFDECK_NO_DATA_S_WARNING", "900")
    monkeypatch.setenv("PERFDECK_NO_DATA_S_CRITICAL", "3600")
    with read(pipeline) as con:
        df = current_health(con, now=NOW)
    assert df.loc[df["subject"] == "worker", "severity"].tolist() == ["warning"]


@pytest.mark.parametrize(("value", "unit", "text"), [
    (119.0, "age", "119 s"), (490.0, "s", "8.2 min"), (1200.0, "s", "20 min"), (9000.0, "s", "2.5 h"),
    (302400.0, "s", "3.5 d"), (58.4, "age", "58 s"), (1212.0, "age", "20 min"), (2500.0, "count", "2,500"),
])
def test_durations_and_counts_in_messages(value, unit, text):
    assert format_value(value, unit) == text


def silent_store(path, now: datetime, *, minutes_ago: float) -> datetime:
    """A store where `worker` sent batches until `minutes_ago` before `now` and nothing since; returns
    the time of its last batch."""
    last = now - timedelta(minutes=minutes_ago)
    with write(path) as con:
        migrate(con)
        con.executemany("INSERT INTO ingested_batches VALUES (?, 'spool:data/spool', 'worker', 'job-1', 7, 5, ?)",
                        [(f"b-{i}", last - timedelta(seconds=30 * i)) for i in range(10)])
    return last


def test_cli_a_service_silent_for_the_window_fails_the_gate(store):
    last = silent_store(store, utcnow(), minutes_ago=20)     # sent 20 minutes ago, nothing in the last 5
    result = run("--db", str(store))
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("CRITICAL: 1 check over the last 5 min")
    when = f"{last:%H:%M}" if last.date() == utcnow().date() else f"{last:%Y-%m-%d %H:%M}"   # dated past midnight
    assert lines[1] == f"  no data from worker for 20 min (last batch {when} UTC)"
    assert "  Ingest  critical  1  no data from worker for 20 min" in result.output
    assert re.search(r"\n  critical  no_data_s +worker +no data from worker for 20 min", result.output)


def test_cli_a_service_that_just_sent_passes(store):
    silent_store(store, utcnow(), minutes_ago=0)
    result = run("--db", str(store))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("HEALTHY: 2 checks")                  # sent just now, nothing rejected
    assert "  Ingest  healthy  2  all 2 checks healthy" in result.output


def test_cli_nothing_to_judge_is_unknown_and_fails(migrated_store):
    result = run("--db", str(migrated_store))
    assert result.exit_code == 2, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("UNKNOWN: 0 checks over the last 5 min")
    assert lines[1:] == ["  nothing had enough data in the window to be judged"]
    doc = json.loads(run("--db", str(migrated_store), "--json").output)
    assert (doc["status"], doc["reasons"], doc["checks"]) == (
        "unknown", ["nothing had enough data in the window to be judged"], [])
