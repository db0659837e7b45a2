"""Regressions end to end on real stores: compare_windows finds an injected ×1.5 slowdown with the right
size and leaves an unchanged endpoint alone (raw events and histograms), deploy windows, the health
rows for the alert engine, `perfdeck compare` (table, JSON, exit codes) and `perfdeck deploy` through
a real spool directory and a real Redis stream into the collector."""
from __future__ import annotations

import json
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner
from helpers import query

from collectors.cli.compare import compare, deploy, parse_window
from collectors.daemon import Collector
from collectors.health import ASSESSED_COLUMNS
from collectors.store import read, utcnow, write
from collectors.store.histogram import BUCKET_SQL
from dashboard.queries import compare_windows, deploy_windows, regression_checks
from dashboard.queries.compare import COLUMNS, THRESHOLD, describe, verdict

NOW = utcnow().replace(second=0, microsecond=0)
T0 = NOW - timedelta(hours=3)                     # before: [T0, T0+1h), deploy at T0+1h, after: [T0+1h, T0+2h)
BEFORE, AFTER = (T0, T0 + timedelta(hours=1)), (T0 + timedelta(hours=1), T0 + timedelta(hours=2))
N = 3000


def _events(service: str, endpoint: str, window, durations) -> pd.DataFrame:
    start, end = window
    offsets = np.linspace(0, (end - start).total_seconds(), len(durations), endpoint=False)
    return pd.DataFrame({"ts": [start + timedelta(seconds=float(s)) for s in offsets], "service": service,
                         "endpoint": endpoint, "duration_ms": durations})


def make_events() -> pd.DataFrame:
    """shop /slow: lognormal, ×1.5 after the deploy; catalog /same: the same law on both sides (other
    seeds); shop /rare: 5 requests a side."""
    rng = [np.random.default_rng(seed) for seed in (1, 2, 3, 4)]
    law = {"mean": np.log(80), "sigma": 0.5, "size": N}
    return pd.concat([
        _events("shop", "/slow", BEFORE, rng[0].lognormal(**law)),
        _events("shop", "/slow", AFTER, rng[1].lognormal(**law) * 1.5),
        _events("catalog", "/same", BEFORE, rng[2].lognormal(**law)),
        _events("catalog", "/same", AFTER, rng[3].lognormal(**law)),
        _events("shop", "/rare", BEFORE, [50.0, 60, 70, 80, 90]),
        _events("shop", "/rare", AFTER, [500.0, 600, 700, 800, 900]),
    ], ignore_index=True)


def seed(path, events: pd.DataFrame, *, raw: bool = True, deploys=(("shop", "v2", T0 + timedelta(hours=1)),)):
    """request_events (when `raw`) and latency_hist rows as the collector writes them, and deploys."""
    with write(path) as con:
        from collectors.store import migrate
        migrate(con)
        con.register("seed_events", events)
        if raw:
            con.execute("INSERT INTO request_events (ts, service, host, endpoint, method, status, duration_ms) "
                        "SELECT ts, service, 'web-1', endpoint, 'GET', 200, duration_ms FROM seed_events")
        con.execute(f"INSERT INTO latency_hist SELECT date_trunc('minute', ts), service, endpoint, "
                    f"{BUCKET_SQL.format(col='duration_ms')}, count(*) FROM seed_events GROUP BY ALL")
        con.unregister("seed_events")
        for service, version, ts in deploys:
            con.execute("INSERT INTO deploys VALUES (?, ?, ?, 'web-1')", [ts, service, version])
    return path


@pytest.fixture
def seeded(store):
    return seed(store, make_events())


def by_endpoint(df: pd.DataFrame) -> dict:
    return {r["endpoint"]: r for r in df.to_dict("records")}


def test_injected_regression_is_found_with_its_size_and_the_control_is_not(seeded):
    with read(seeded) as con:
        df = compare_windows(con, before=BEFORE, after=AFTER, now=NOW)
    assert list(df.columns) == COLUMNS
    assert list(df["endpoint"]) == ["/slow", "/rare", "/same"]      # regressions first, then by p95 ratio
    rows = by_endpoint(df)
    slow, same, rare = rows["/slow"], rows["/same"], rows["/rare"]
    assert slow["verdict"] == "regression" and slow["method"] == "raw"
    assert (slow["before_n"], slow["after_n"], slow["service"]) == (N, N, "shop")
    assert slow["p95_ratio"] == pytest.approx(1.5, rel=0.05)
    assert slow["ci_low"] < 1.5 < slow["ci_high"]
    assert slow["p50_ratio"] == pytest.approx(1.5, rel=0.05)
    assert slow["p_value"] < 1e-10
    events = make_events()
    slow_after = events[(events.endpoint == "/slow") & (events.ts >= AFTER[0])].duration_ms
    assert slow["after_p95_ms"] == pytest.approx(np.quantile(slow_after, 0.95))   # every request, exactly
    assert same["verdict"] == "no change" and same["p_value"] > 0.01
    assert same["ci_low"] < 1 < same["ci_high"]
    assert rare["verdict"] == "too few requests" and rare["p95_ratio"] == pytest.approx(10.0, rel=0.05)
    assert np.isnan(rare["p_value"]) and np.isnan(rare["ci_low"])
    assert describe(slow).startswith("/slow p95 ") and "×1.5" in describe(slow) and "p < 0.001" in describe(slow)


def test_swapped_windows_show_an_improvement(seeded):
    with read(seeded) as con:
        df = compare_windows(con, before=AFTER, after=BEFORE, service="shop", now=NOW)
    rows = by_endpoint(df)
    assert set(rows) == {"/slow", "/rare"}
    assert rows["/slow"]["verdict"] == "improvement"
    assert rows["/slow"]["p95_ratio"] == pytest.approx(1 / 1.5, rel=0.05)


def test_same_results_are_reproducible(seeded):
    with read(seeded) as con:
        first = compare_windows(con, before=BEFORE, after=AFTER, now=NOW)
        again = compare_windows(con, before=BEFORE, after=AFTER, now=NOW)
    pd.testing.assert_frame_equal(first, again)


@pytest.mark.parametrize("case", ["no raw events", "past raw retention", "raw events incomplete"])
def test_histogram_fallback(store, case):
    events = make_events()
    seed(store, events, raw=case != "no raw events")
    now = NOW + timedelta(days=30) if case == "past raw retention" else NOW
    if case == "raw events incomplete":      # retention took part of /slow's raw events of the before window
        with write(store) as con:
            con.execute("DELETE FROM request_events WHERE endpoint = '/slow' AND ts < ?", [T0 + timedelta(minutes=30)])
    with read(store) as con:
        rows = by_endpoint(compare_windows(con, before=BEFORE, after=AFTER, now=now))
    slow, same = rows["/slow"], rows["/same"]
    assert slow["method"] == "histogram"
    assert same["method"] == ("raw" if case == "raw events incomplete" else "histogram")
    assert (slow["before_n"], slow["after_n"]) == (N, N)
    assert slow["verdict"] == "regression" and same["verdict"] == "no change"
    assert slow["p95_ratio"] == pytest.approx(1.5, rel=0.05)     # buckets are ~2 % wide
    assert slow["ci_low"] < 1.5 < slow["ci_high"]


def test_bad_windows_and_empty_windows(seeded):
    with read(seeded) as con:
        with pytest.raises(ValueError, match="before window must end after it starts"):
            compare_windows(con, before=(T0, T0), after=AFTER)
        empty = compare_windows(con, before=(T0 - timedelta(days=2), T0 - timedelta(days=1)), after=AFTER, now=NOW)
    assert empty.empty and list(empty.columns) == COLUMNS


def test_deploy_windows_cut_at_neighbours_and_now(store):
    d = T0 + timedelta(hours=1)
    deploys = [("shop", "v1", d - timedelta(minutes=20)), ("shop", "v2", d),
               ("shop", "v2", d + timedelta(seconds=30)),                 # the rollout's second host
               ("shop", "v3", d + timedelta(minutes=40)), ("catalog", "c9", NOW - timedelta(minutes=10))]
    seed(store, make_events().head(0), deploys=deploys)
    with read(store) as con:
        df = deploy_windows(con, span=timedelta(hours=1), now=NOW)
        only = deploy_windows(con, version="v2", now=NOW)
    assert list(df["version"]) == ["c9", "v3", "v2", "v1"]                # newest first, v2 once
    rows = {r["version"]: r for r in df.to_dict("records")}
    assert (rows["v2"]["before_start"], rows["v2"]["before_end"]) == (d - timedelta(minutes=20), d)
    assert (rows["v2"]["after_start"], rows["v2"]["after_end"]) == (d, d + timedelta(minutes=40))
    assert rows["v2"]["complete"]
    assert (rows["v1"]["before_start"], rows["v1"]["after_end"]) == (d - timedelta(minutes=80), d)
    assert rows["c9"]["after_end"] == NOW and not rows["c9"]["complete"]
    assert rows["c9"]["before_start"] == NOW - timedelta(minutes=70)
    assert list(only["version"]) == ["v2"]


def test_regression_checks_rows_for_the_alert_engine(seeded):
    with read(seeded) as con:
        due = regression_checks(con, now=AFTER[1] + timedelta(minutes=5), span=timedelta(hours=1))
        later = regression_checks(con, now=AFTER[1] + timedelta(hours=2), span=3600)
        open_window = regression_checks(con, now=AFTER[1] - timedelta(minutes=5))
    assert list(due.columns) == ASSESSED_COLUMNS
    assert due[["component", "check", "service", "subject", "unit", "severity"]].values.tolist() == [
        ["Regressions", "deploy_regression", "shop", "/slow", "ratio", "warning"]]   # /rare: too few
    assert due.iloc[0]["value"] == pytest.approx(1.5, rel=0.05) and due.iloc[0]["level"] == 1.10
    assert "after shop v2" in due.iloc[0]["message"] and "regression" in due.iloc[0]["message"]
    assert later.empty and open_window.empty


@pytest.mark.parametrize("configured", [True, False])
def test_deploy_regressions_reach_the_alert_engine_only_when_configured(seeded, tmp_path, monkeypatch, configured):
    from dashboard.queries.health import alert_evaluation
    for var in ("PERFDECK_THRESHOLDS", "PERFDECK_ALERT_DEPLOY_REGRESSIONS"):
        monkeypatch.delenv(var, raising=False)
    cfg = {"alerts": {"deploy_regressions": configured}, "_path": str(tmp_path / "perfdeck.toml")}
    health = alert_evaluation(cfg)
    with read(seeded) as con:
        assessed = health(con, AFTER[1] + timedelta(minutes=5))
    rows = assessed[assessed["check"] == "deploy_regression"]
    assert rows[["service", "subject", "severity"]].values.tolist() == (
        [["shop", "/slow", "warning"]] if configured else [])


# --- perfdeck compare -------------------------------------------------------------------------------
def iso(t: datetime) -> str:
    return t.isoformat(timespec="seconds")


def window_arg(w) -> str:
    return f"{iso(w[0])}..{iso(w[1])}"


def test_compare_cli_flags_the_regression_with_exit_1(seeded):
    result = CliRunner().invoke(compare, ["--before", window_arg(BEFORE), "--after", window_arg(AFTER),
                                          "--db", str(seeded)])
    assert result.exit_code == 1, result.output
    lines = result.output.splitlines()
    assert lines[0].startswith("all services: before ") and lines[0].endswith("UTC (raw)")
    assert lines[1].split()[:3] == ["endpoint", "before", "n"]
    assert lines[2].startswith("shop /slow") and lines[2].rstrip().endswith("regression")
    assert "3,000" in lines[2] and "< 0.001" in lines[2]
    assert lines[4].startswith("catalog /same") and lines[4].endswith("no change")
    assert lines[-1].startswith("1 endpoint regressed significantly; worst: /slow p95 ")


def test_compare_cli_no_change_exits_0_and_json(seeded):
    args = ["--before", window_arg(BEFORE), "--after", window_arg(AFTER), "--service", "catalog", "--db", str(seeded)]
    result = CliRunner().invoke(compare, args)
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[-1] == "No significant regression (1 endpoint compared)."
    result = CliRunner().invoke(compare, [*args, "--json"])
    assert result.exit_code == 0
    rows = json.loads(result.output)
    assert [(r["endpoint"], r["verdict"], r["method"], r["before_n"]) for r in rows] == [
        ("/same", "no change", "raw", N)]
    assert set(rows[0]) == set(COLUMNS)


def test_compare_cli_around_a_deploy(seeded):
    result = CliRunner().invoke(compare, ["--deploy", "v2", "--span", "1h", "--json", "--db", str(seeded)])
    assert result.exit_code == 1, result.output
    rows = json.loads(result.output)
    assert [(r["endpoint"], r["verdict"]) for r in rows] == [("/slow", "regression"), ("/rare", "too few requests")]
    assert rows[0]["p95_ratio"] == pytest.approx(1.5, rel=0.05)
    assert rows[0]["p_value"] < 1e-10 and rows[1]["p_value"] is None
    missing = CliRunner().invoke(compare, ["--deploy", "v404", "--db", str(seeded)])
    assert missing.exit_code == 2 and "no deploy of v404" in missing.output


@pytest.mark.parametrize("args, message", [
    (["--before", "-1h..-2h", "--after", "-1h..now"], "must be after the start"),
    (["--before", "yesterday..now", "--after", "-1h..now"], "is not a time"),
    (["--before", "-2h", "--after", "-1h..now"], "must be START..END"),
    (["--before", "-30d..-29d", "--after", "-29d..-28d"], "no endpoint has requests in both windows"),
    (["--before", "-2h..-1h"], "give --before and --after"),
    (["--deploy", "v2", "--after", "-1h..now"], "not both"),
])
def test_compare_cli_errors_exit_2(seeded, args, message):
    result = CliRunner().invoke(compare, [*args, "--db", str(seeded)])
    assert result.exit_code == 2, result.output
    assert message in result.output


def test_compare_cli_missing_store(tmp_path):
    result = CliRunner().invoke(compare, ["--deploy", "v2", "--db", str(tmp_path / "none.duckdb")])
    assert result.exit_code == 2 and "no perfdeck store" in result.output


def test_parse_window_relative_and_iso():
    now = datetime(2026, 11, 20, 12, 0)
    assert parse_window("-2h..-90m", "before", now) == (datetime(2026, 11, 20, 10), datetime(2026, 11, 20, 10, 30))
    assert parse_window("2026-11-20T10:00..now", "after", now) == (datetime(2026, 11, 20, 10), now)
    assert parse_window("2026-11-20T10:00+01:00..2026-11-20T10:00Z", "after", now) == (
        datetime(2026, 11, 20, 9), datetime(2026, 11, 20, 10))


# --- perfdeck deploy ---------------------------------------------------------------------------------
def test_deploy_cli_through_the_spool_into_the_collector(tmp_path, monkeypatch):
    spool, db = tmp_path / "spool", tmp_path / "perfdeck.duckdb"
    monkeypatch.delenv("PERFDECK_REDIS", raising=False)
    before = utcnow()
    result = CliRunner().invoke(deploy, ["v3.1.4", "--service", "shop", "--spool", str(spool)])
    assert result.exit_code == 0, result.output
    assert result.output.startswith("queued deploy shop v3.1.4 at ")
    assert f"to spool:{spool};" in result.output
    assert len(list(spool.glob("*.batch"))) == 1
    report = Collector(db, spool_dir=spool).ingest_pending()
    assert report.batches == 1
    rows = query(db, "SELECT service, version, ts FROM deploys")
    assert [(s, v) for s, v, _ in rows] == [("shop", "v3.1.4")]
    assert before - timedelta(seconds=1) <= rows[0][2] <= utcnow()
    assert not list(spool.glob("*.batch"))


def test_deploy_cli_defaults_and_redis(tmp_path, monkeypatch, redis_url):
    spool, db = tmp_path / "spool", tmp_path / "perfdeck.duckdb"
    monkeypatch.delenv("PERFDECK_SERVICE", raising=False)
    monkeypatch.delenv("PERFDECK_REDIS", raising=False)
    no_service = CliRunner().invoke(deploy, ["v1"])
    assert no_service.exit_code == 2 and "--service" in no_service.output
    both = CliRunner().invoke(deploy, ["v1", "--service", "a", "--spool", str(spool), "--redis", redis_url])
    assert both.exit_code == 2 and "not both" in both.output
    monkeypatch.setenv("PERFDECK_SERVICE", "search")
    monkeypatch.setenv("PERFDECK_REDIS", redis_url)      # the multi-host transport, as `perfdeck collect` reads it
    result = CliRunner().invoke(deploy, ["v7"])
    assert result.exit_code == 0, result.output
    assert "queued deploy search v7" in result.output and "redis://" in result.output
    Collector(db, spool_dir=spool, redis_url=redis_url).ingest_pending()
    assert [r[:2] for r in query(db, "SELECT service, version FROM deploys")] == [("search", "v7")]


# --- The verdict follows the p95, not the body --------------------------------------------------------
def tail_events() -> pd.DataFrame:
    """shop /tail: after the deploy a typical request is 20 % faster but one in ten takes about 900 ms
    (the p95 about 5× higher): Mann–Whitney sees a faster body. catalog /noise: the same law on both
    sides."""
    rng = [np.random.default_rng(seed) for seed in (11, 12, 13, 14, 15)]
    law = {"mean": np.log(80), "sigma": 0.5, "size": N}
    after = rng[1].lognormal(**law) * 0.8
    tail = rng[4].random(N) < 0.10
    after[tail] = rng[4].lognormal(np.log(900), 0.3, tail.sum())
    return pd.concat([
        _events("shop", "/tail", BEFORE, rng[0].lognormal(**law)),
        _events("shop", "/tail", AFTER, after),
        _events("catalog", "/noise", BEFORE, rng[2].lognormal(**law)),
        _events("catalog", "/noise", AFTER, rng[3].lognormal(**law)),
    ], ignore_index=True)


@pytest.fixture
def tail_store(store):
    return seed(store, tail_events())


def test_a_slower_tail_is_a_regression_though_the_body_is_faster(tail_store):
    with read(tail_store) as con:
        rows = by_endpoint(compare_windows(con, before=BEFORE, after=AFTER, now=NOW))
    tail, noise = rows["/tail"], rows["/noise"]
    assert tail["p95_ratio"] == pytest.approx(5, rel=0.2) and tail["ci_low"] > THRESHOLD
    assert tail["p50_ratio"] < 1 and tail["p_value"] > 0.5 and tail["body"] == "faster"
    assert tail["verdict"] == "regression" and not tail["open"]
    assert noise["ci_low"] < 1 < noise["ci_high"] and noise["body"] == "same"
    assert noise["verdict"] == "no change"
    assert "body: faster" in describe(tail) and "so far" not in describe(tail)


@pytest.mark.parametrize("low, high, expected", [
    (1.11, 3.0, "regression"), (1.05, 3.0, "no change"), (0.5, 0.9, "improvement"), (0.5, 0.95, "no change"),
    (float("nan"), float("nan"), "too few requests")])
def test_verdict_is_the_interval_against_the_threshold(low, high, expected):
    assert verdict(low, high) == expected


def test_compare_cli_gates_on_the_tail(tail_store):
    args = ["--before", window_arg(BEFORE), "--after", window_arg(AFTER), "--db", str(tail_store)]
    tail = CliRunner().invoke(compare, [*args, "--service", "shop"])
    assert tail.exit_code == 1, tail.output
    line = tail.output.splitlines()[2]
    assert line.startswith("/tail") and " faster " in line and line.endswith("regression")
    noise = CliRunner().invoke(compare, [*args, "--service", "catalog"])
    assert noise.exit_code == 0, noise.output
    assert noise.output.splitlines()[1].split()[-3:] == ["body", "p", "verdict"]
    row = noise.output.splitlines()[2].split()
    assert row[0] == "/noise" and row[-4] == "same" and row[-2:] == ["no", "change"]


def test_a_deploy_5_minutes_old_is_compared_on_the_data_so_far(store):
    now = utcnow()
    at = now - timedelta(minutes=5)
    rng = np.random.default_rng(7)
    events = pd.concat([_events("shop", "/new", (at - timedelta(hours=1), at), rng.lognormal(np.log(80), 0.5, 3000)),
                        _events("shop", "/new", (at, now - timedelta(seconds=5)), rng.lognormal(np.log(80), 0.5, 300) * 3)],
                       ignore_index=True)
    seed(store, events, deploys=[("shop", "v5", at)])
    with read(store) as con:
        d = deploy_windows(con, version="v5").iloc[0]
        rows = compare_windows(con, before=(d.before_start, d.before_end), after=(d.after_start, d.after_end))
        alert = regression_checks(con, now=utcnow())
    assert not d.complete
    assert rows[["endpoint", "verdict", "open"]].values.tolist() == [["/new", "regression", True]]
    assert describe(rows.iloc[0]).endswith(", so far)")
    assert alert.empty                      # the alert waits for the whole after window
    result = CliRunner().invoke(compare, ["--deploy", "v5", "--db", str(store)])
    assert result.exit_code == 1, result.output
    assert "(the after window is still open: 5 of 60 min)" in result.output.splitlines()[0]   # not a timedelta
    assert "regressed significantly on the data so far" in result.output.splitlines()[-1]


# --- Reports: markdown, html, json ------------------------------------------------------------------
HOSTILE = "/a|b <script>alert(1)</script> [x](https://evil.example/) *bold*"


@pytest.fixture
def hostile_store(store):
    events = make_events()
    slow = events[events.endpoint == "/slow"].assign(endpoint=HOSTILE)
    return seed(store, pd.concat([events, slow], ignore_index=True))


def report(path, fmt: str, *extra) -> tuple[int, str]:
    result = CliRunner().invoke(compare, ["--before", window_arg(BEFORE), "--after", window_arg(AFTER),
                                          "--format", fmt, "--db", str(path), *extra])
    return result.exit_code, result.output


def test_markdown_report_escapes_names(hostile_store):
    code, out = report(hostile_store, "markdown")
    assert code == 1
    lines = out.splitlines()
    assert lines[0].startswith("### perfdeck compare: all services")
    assert lines[2].startswith("**2 endpoints regressed significantly")
    table = [line for line in lines if line.startswith("|")]
    assert len(table) == 2 + 4 and table[1] == "|" + "---|" * 12
    assert all(line.count(" | ") == 11 for line in table[:1] + table[2:])     # no cell broken by a |
    assert "<script>" not in out and "&lt;script&gt;" in out and "](https" not in out
    assert "\\[x\\]\\(https:\u200b//evil" in out and "\\*bold\\*" in out
    assert "regression" in out and "whole 95 % interval" in out


def test_html_report_is_one_self_contained_file(hostile_store, tmp_path):
    path = tmp_path / "compare.html"
    code, out = report(hostile_store, "html", "--output", str(path))
    assert code == 1 and f"written to {path}" in out
    page = path.read_text(encoding="utf-8")
    assert page.startswith("<!DOCTYPE html>") and page.rstrip().endswith("</html>")
    assert "<svg" in page and page.count("<circle") == 4            # the forest plot: one dot per judged ratio
    assert "<script" not in page and "&lt;script&gt;" in page
    import re
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "@import" not in page and "url(" not in page
    assert "2 endpoints regressed significantly" in page


def test_json_format_is_the_json_flag(seeded):
    code, out = report(seeded, "json")
    legacy = CliRunner().invoke(compare, ["--before", window_arg(BEFORE), "--after", window_arg(AFTER), "--json",
                                          "--db", str(seeded)])
    assert code == legacy.exit_code == 1 and out == legacy.output
    rows = json.loads(out)
    assert set(rows[0]) == set(COLUMNS) and rows[0]["body"] == "slower" and rows[0]["open"] is False
    both = CliRunner().invoke(compare, ["--before", "-2h..-1h", "--after", "-1h..now", "--json", "--format", "html",
                                        "--db", str(seeded)])
    assert both.exit_code == 2 and "not both" in both.output
