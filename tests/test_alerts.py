"""The alert engine on synthetic assessed series with known answers: "for" durations, escalation,
resolve, throttling of flapping, silences, grouping, the store rows, restart, and the daemon's job."""
from __future__ import annotations

import logging
import threading
from datetime import datetime, timedelta

import pandas as pd
import pytest
from helpers import query, wait_for

from collectors.daemon import Collector
from collectors.health import ASSESSED_COLUMNS
from collectors.health.alerts import AlertEngine, Silence, messages
from collectors.health.settings import AlertSettings
from collectors.store import write

T0 = datetime(2025, 3, 1, 12, 0)
MIN = timedelta(minutes=1)
LEVELS = {"healthy": 200, "degraded": 200, "warning": 500, "critical": 1000}
SETTINGS = AlertSettings()          # for 5 min, throttle 15 min, min severity warning


def p95(ms: float, severity: str, subject: str = "/search", service: str | None = "shop-api") -> dict:
    level = LEVELS[severity]
    sign, word = ("≤", "target") if severity == "healthy" else (">", severity)
    return {"component": "Latency", "check": "request_p95_ms", "service": service, "subject": subject,
            "value": ms, "unit": "ms", "severity": severity, "level": level,
            "message": f"p95 of {subject} {ms:,.0f} ms {sign} {level:,} ms {word}"}


def hit_rate(rate: float, severity: str, cache: str = "product_lru") -> dict:
    level = {"healthy": 0.9, "degraded": 0.9, "warning": 0.8, "critical": 0.5}[severity]
    return {"component": "Caches", "check": "cache_hit_rate", "service": "shop-api", "subject": cache,
            "value": rate, "unit": "ratio", "severity": severity, "level": level,
            "message": f"hit rate of {cache} {rate:.0%} < {level:.0%} {severity}"}


def frame(*rows: dict) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=ASSESSED_COLUMNS)


def engine(tmp_path, **settings) -> AlertEngine:
    """A pure engine: its store does not exist, so nothing is loaded and evaluate() does no I/O."""
    return AlertEngine(tmp_path / "none.duckdb", AlertSettings(**settings))


def run(eng: AlertEngine, series: list[pd.DataFrame], *, start: datetime = T0, step: timedelta = MIN,
        silences=()) -> list[list]:
    """Evaluate one frame per tick; the transitions of each tick."""
    return [eng.evaluate(f, start + i * step, silences=silences) for i, f in enumerate(series)]


def kinds(ticks: list[list]) -> list[list[tuple]]:
    return [[(t.kind, t.notify) for t in tick] for tick in ticks]


def test_a_breach_shorter_than_for_never_fires(tmp_path):
    eng = engine(tmp_path)
    ticks = run(eng, [frame(p95(120, "healthy"))] + [frame(p95(800, "warning"))] * 3
                + [frame(p95(150, "healthy"))] * 5)
    assert kinds(ticks) == [[]] * 9
    assert eng.firing == {} and eng.pending == {}


def test_a_breach_lasting_past_for_fires_once_when_it_has_lasted_for(tmp_path):
    eng = engine(tmp_path)
    ticks = run(eng, [frame(p95(120, "healthy"))] + [frame(p95(800, "warning"))] * 7)
    # The breach starts at 12:01; 12:06 is the first tick with now - t0 >= 5 min.
    assert kinds(ticks) == [[], [], [], [], [], [], [("firing", "firing")], [("updated", None)]]
    alert = ticks[6][0].alert
    assert (alert.started_at, alert.severity, alert.value, alert.threshold, alert.state) == (
        T0 + 6 * MIN, "warning", 800, 500, "firing")
    assert alert.message == "p95 of /search 800 ms > 500 ms warning"
    assert (alert.notified_at, alert.notifications) == (T0 + 6 * MIN, 1)


def test_escalation_keeps_one_alert_and_the_throttle_holds_its_message(tmp_path):
    eng = engine(tmp_path, for_s=0)
    ticks = run(eng, [frame(p95(700, "warning")), frame(p95(1240, "critical")), frame(p95(1100, "critical")),
                      frame(p95(900, "warning"))])
    assert kinds(ticks) == [[("firing", "firing")], [("escalated", None)], [("updated", None)], [("updated", None)]]
    last = ticks[-1][0].alert
    # Severity, threshold and value are the latest reading; the peak fields keep the worst.
    assert (last.severity, last.threshold, last.value) == ("warning", 500, 900)
    assert (last.peak_severity, last.peak_value) == ("critical", 1240)
    assert len(eng.firing) == 1 and last.started_at == T0


def test_an_escalation_after_the_throttle_window_is_sent(tmp_path):
    eng = engine(tmp_path, for_s=0, throttle_s=600)
    ticks = run(eng, [frame(p95(700, "warning"))] * 10 + [frame(p95(1240, "critical"))])
    assert kinds(ticks)[-1] == [("escalated", "escalated")]
    assert ticks[-1][0].alert.notifications == 2


def test_it_resolves_at_the_first_tick_below_min_severity(tmp_path):
    eng = engine(tmp_path, for_s=120)
    ticks = run(eng, [frame(p95(800, "warning"))] * 3 + [frame(p95(300, "degraded")), frame(p95(900, "warning"))])
    assert kinds(ticks) == [[], [], [("firing", "firing")], [("resolved", "resolved")], []]
    resolved = ticks[3][0].alert
    assert (resolved.state, resolved.started_at, resolved.resolved_at) == ("resolved", T0 + 2 * MIN, T0 + 3 * MIN)
    assert resolved.note == "p95 of /search 300 ms > 200 ms degraded" and resolved.value == 300
    # The row says what resolved it; what was wrong is in the peak fields.
    assert (resolved.severity, resolved.threshold, resolved.message) == (
        "degraded", 200, "p95 of /search 300 ms > 200 ms degraded")
    assert (resolved.peak_severity, resolved.peak_value) == ("warning", 800)
    assert eng.firing == {} and list(eng.pending) == [("request_p95_ms", "shop-api /search")]


def test_flapping_within_the_throttle_makes_two_alerts_and_one_firing_message(tmp_path):
    eng = engine(tmp_path, for_s=0)
    bad, good = frame(p95(800, "warning")), frame(p95(100, "healthy"))
    ticks = run(eng, [bad, good, good, bad, good])
    assert kinds(ticks) == [[("firing", "firing")], [("resolved", "resolved")], [], [("firing", None)],
                            [("resolved", None)]]
    firings = [t for tick in ticks for t in tick if t.kind == "firing"]
    assert len(firings) == 2 and sum(1 for t in firings if t.notify) == 1


def test_after_the_throttle_window_a_re_fire_is_sent_again(tmp_path):
    eng = engine(tmp_path, for_s=0)
    bad, good = frame(p95(800, "warning")), frame(p95(100, "healthy"))
    ticks = run(eng, [bad, good] + [good] * 15 + [bad])
    # The last message (the resolve) went out at 12:01: 12:17 is past the 15-minute window.
    assert kinds(ticks)[-1] == [("firing", "firing")]


def test_a_held_back_re_fire_that_keeps_firing_is_sent_when_the_window_ends(tmp_path):
    eng = engine(tmp_path, for_s=0)
    bad, good = frame(p95(800, "warning")), frame(p95(100, "healthy"))
    ticks = run(eng, [bad, good, bad] + [bad] * 14)
    assert kinds(ticks)[2] == [("firing", None)]
    sent = [(i, t.kind, t.notify) for i, tick in enumerate(ticks) for t in tick if t.notify]
    assert sent == [(0, "firing", "firing"), (1, "resolved", "resolved"), (16, "updated", "firing")]


def test_a_silenced_alert_fires_and_is_stored_but_sends_nothing(tmp_path):
    eng = engine(tmp_path, for_s=0)
    silence = Silence(1, "request_p95_ms", "shop-api /search", T0, T0 + timedelta(hours=2))
    ticks = run(eng, [frame(p95(800, "warning"), p95(900, "warning", "/cart")),
                      frame(p95(100, "healthy"), p95(100, "healthy", "/cart"))], silences=[silence])
    assert [(t.alert.target, t.kind, t.notify, t.alert.silenced) for t in ticks[0]] == [
        ("shop-api /cart", "firing", "firing", False), ("shop-api /search", "firing", None, True)]
    assert [(t.alert.target, t.notify) for t in ticks[1]] == [("shop-api /cart", "resolved"),
                                                              ("shop-api /search", None)]


def test_a_silence_of_every_rule_and_its_end(tmp_path):
    eng = engine(tmp_path, for_s=0)
    silence = Silence(1, "*", None, T0, T0 + 3 * MIN)
    ticks = run(eng, [frame(p95(800, "warning"), hit_rate(0.6, "warning"))] * 4, silences=[silence])
    assert kinds(ticks[:3]) == [[("firing", None), ("firing", None)], [("updated", None)] * 2,
                                [("updated", None)] * 2]
    # The silence ended at 12:03 with both still firing: their firings go out now, in one message.
    assert kinds(ticks[3:]) == [[("updated", "firing"), ("updated", "firing")]]
    assert [a["target"] for a in messages(ticks[3])["firing"]] == ["shop-api product_lru", "shop-api /search"]


def test_one_message_per_kind_per_tick_grouped_by_rule(tmp_path):
    eng = engine(tmp_path, for_s=0)
    run(eng, [frame(hit_rate(0.6, "warning", "customer_lru"))])
    ticks = run(eng, [frame(p95(800, "warning", "/search"), p95(1300, "critical", "/cart"),
                            hit_rate(0.4, "critical", "llm_responses"))], start=T0 + MIN)
    grouped = messages(ticks[0])
    assert list(grouped) == ["firing", "resolved"]
    assert [(a["rule"], a["target"], a["severity"]) for a in grouped["firing"]] == [
        ("cache_hit_rate", "shop-api llm_responses", "critical"), ("request_p95_ms", "shop-api /cart", "critical"),
        ("request_p95_ms", "shop-api /search", "warning")]
    assert [a["target"] for a in grouped["resolved"]] == ["shop-api customer_lru"]


def test_a_missing_check_resolves_after_for_with_no_data(tmp_path):
    eng = engine(tmp_path, for_s=120)
    ticks = run(eng, [frame(p95(800, "warning"))] * 3 + [frame()] * 3)
    assert kinds(ticks) == [[], [], [("firing", "firing")], [("updated", None)], [("updated", None)],
                            [("resolved", "resolved")]]
    alert = ticks[-1][0].alert
    assert alert.note == "no data since 12:03 UTC" and alert.resolved_at == T0 + 5 * MIN
    # No evaluation resolved it: the row keeps its last reading, and says there was no data since.
    assert alert.message == "no data since 12:03 UTC; last: p95 of /search 800 ms > 500 ms warning"
    assert (alert.severity, alert.value, alert.threshold) == ("warning", 800, 500)
    assert alert.updated_at == T0 + 2 * MIN       # the last evaluation that saw it


def test_per_rule_for_and_min_severity(tmp_path):
    eng = AlertEngine(tmp_path / "none.duckdb", AlertSettings(min_severity="critical"),
                      for_of=lambda rule: 0 if rule == "cache_hit_rate" else None)
    ticks = run(eng, [frame(p95(1200, "critical"), hit_rate(0.4, "critical"), p95(800, "warning", "/cart"))] * 6)
    fired = [(i, t.alert.rule, t.alert.target) for i, tick in enumerate(ticks) for t in tick if t.kind == "firing"]
    assert fired == [(0, "cache_hit_rate", "shop-api product_lru"), (5, "request_p95_ms", "shop-api /search")]
    hit = eng.firing[("cache_hit_rate", "shop-api product_lru")]
    assert hit.lower_is_worse and hit.peak_value == 0.4


def test_tick_writes_the_exact_rows(migrated_store):
    eng = AlertEngine(migrated_store, AlertSettings(for_s=60))
    series = [p95(700, "warning"), p95(750, "warning"), p95(1240, "critical"), p95(1100, "critical"),
              p95(120, "healthy")]
    for i, row in enumerate(series):
        eng.tick(frame(row, hit_rate(0.95, "healthy")), T0 + i * MIN)
    rows = query(migrated_store, """
        SELECT rule, target, service, subject, state, severity, value, threshold, peak_value, peak_severity,
               started_at, resolved_at, updated_at, notified_at, notifications, silenced, message
        FROM alerts""")
    # Now: the evaluation that resolved it; the worst moment: the peak columns.
    assert rows == [("request_p95_ms", "shop-api /search", "shop-api", "/search", "resolved", "healthy", 120.0,
                     200.0, 1240.0, "critical", T0 + MIN, T0 + 4 * MIN, T0 + 4 * MIN, T0 + 4 * MIN, 2, False,
                     "p95 of /search 120 ms ≤ 200 ms target")]


def test_a_restarted_engine_neither_duplicates_nor_forgets(migrated_store):
    first = AlertEngine(migrated_store, AlertSettings(for_s=0))
    first.tick(frame(p95(800, "warning")), T0)
    first.tick(frame(p95(800, "warning"), p95(900, "warning", "/cart")), T0 + MIN)
    with write(migrated_store) as con:                 # /cart resolved and re-fired within the throttle
        con.execute("UPDATE alerts SET state = 'resolved', resolved_at = ? WHERE target = 'shop-api /cart'",
                    [T0 + 2 * MIN])
    restarted = AlertEngine(migrated_store, AlertSettings(for_s=0))
    assert sorted(restarted.firing) == [("request_p95_ms", "shop-api /search")]
    ticks = restarted.tick(frame(p95(1200, "critical"), p95(900, "warning", "/cart")), T0 + 3 * MIN)
    assert [(t.alert.target, t.kind, t.notify) for t in ticks] == [
        ("shop-api /cart", "firing", None), ("shop-api /search", "escalated", None)]
    assert query(migrated_store, "SELECT target, state, severity FROM alerts ORDER BY id") == [
        ("shop-api /search", "firing", "critical"), ("shop-api /cart", "resolved", "warning"),
        ("shop-api /cart", "firing", "warning")]


def test_silences_are_read_from_the_store_at_each_tick(migrated_store):
    with write(migrated_store) as con:
        con.execute("""INSERT INTO silences (rule, target, starts_at, ends_at, reason, created_by, created_at)
                       VALUES ('request_p95_ms', NULL, ?, ?, 'deploying', 'op', ?)""",
                    [T0, T0 + timedelta(hours=1), T0])
    eng = AlertEngine(migrated_store, AlertSettings(for_s=0))
    [t] = eng.tick(frame(p95(800, "warning")), T0 + MIN)
    assert (t.notify, t.alert.silenced) == (None, True)
    assert query(migrated_store, "SELECT silenced, notifications, notified_at FROM alerts") == [(True, 0, None)]


def test_a_failed_write_leaves_the_engine_as_it_was(migrated_store):
    eng = AlertEngine(migrated_store, AlertSettings(for_s=0))
    eng.tick(frame(p95(800, "warning")), T0)
    with write(migrated_store) as con:
        con.execute("DROP TABLE silences")
    with pytest.raises(Exception, match="silences"):
        eng.tick(frame(p95(100, "healthy"), p95(900, "warning", "/cart")), T0 + MIN)
    assert list(eng.firing) == [("request_p95_ms", "shop-api /search")] and eng.pending == {}


class Scripted:
    """A `health(con, now)` callable that plays a series, one frame per call, then repeats the last."""

    def __init__(self, series):
        self.series, self.calls = series, 0

    def __call__(self, con, now):
        assert con.execute("SELECT count(*) FROM alerts").fetchone()[0] >= 0     # a real open connection
        frame_ = self.series[min(self.calls, len(self.series) - 1)]
        self.calls += 1
        return frame_


def test_the_daemon_runs_the_job_and_writes_outcomes_through_its_writer(store, spool, caplog):
    series = [frame(p95(800, "warning"))] * 6 + [frame(p95(100, "healthy"))]
    eng = AlertEngine(store, AlertSettings(for_s=300))
    collector = Collector(store, spool_dir=spool, alerts=eng, health=Scripted(series))
    caplog.set_level(logging.INFO, logger="perfdeck.alerts")
    for i in range(7):
        collector.evaluate_alerts(T0 + i * MIN)
    assert eng.notifier.flush(10)
    assert collector.write_samples() == 2
    assert query(store, "SELECT state, started_at, resolved_at, notifications FROM alerts") == [
        ("resolved", T0 + 5 * MIN, T0 + 6 * MIN, 2)]
    alert_id = query(store, "SELECT id FROM alerts")[0][0]
    assert query(store, "SELECT channel, kind, alerts, alert_ids, outcome, attempts, error FROM alert_notifications"
                        " ORDER BY ts") == [("log", "firing", 1, [alert_id], "logged", 1, None),
                                            ("log", "resolved", 1, [alert_id], "logged", 1, None)]
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "perfdeck.alerts"] == [
        ("WARNING", "FIRING warning — request_p95_ms shop-api /search: p95 of /search 800 ms > 500 ms warning "
                    "(since 12:05 UTC)"),
        ("INFO", "RESOLVED request_p95_ms shop-api /search: p95 of /search 100 ms ≤ 200 ms target (was warning "
                 "since 12:05 UTC, resolved 12:06 UTC)")]


def test_run_once_evaluates_and_stores_the_notification(store, spool):
    eng = AlertEngine(store, AlertSettings(for_s=0))
    collector = Collector(store, spool_dir=spool, alerts=eng, health=Scripted([frame(p95(1300, "critical"))]))
    collector.run_once()
    assert query(store, "SELECT state, severity FROM alerts") == [("firing", "critical")]
    assert query(store, "SELECT kind, outcome FROM alert_notifications") == [("firing", "logged")]


def test_run_forever_alerts_once_however_many_ticks(store, spool):
    eng = AlertEngine(store, AlertSettings(for_s=0, interval_s=0.05))
    health = Scripted([frame(p95(1300, "critical"))])
    collector = Collector(store, spool_dir=spool, interval=0.02, alerts=eng, health=health)
    thread = threading.Thread(target=collector.run_forever)
    thread.start()
    try:
        # Watched in memory: this process cannot open the file while the daemon thread writes it.
        assert wait_for(lambda: health.calls >= 5 and eng.notifier.counts["logged"] >= 1)
    finally:
        collector.stop()
        thread.join(30)
    assert query(store, "SELECT count(*), sum(notifications) FROM alerts") == [(1, 1)]
    assert query(store, "SELECT kind, outcome FROM alert_notifications") == [("firing", "logged")]


def test_a_failing_health_check_is_isolated(store, spool):
    def broken(con, now):
        raise RuntimeError("assessment exploded")
    collector = Collector(store, spool_dir=spool, alerts=AlertEngine(store, SETTINGS), health=broken)
    with pytest.raises(RuntimeError, match="alerts: assessment exploded"):
        collector.run_once()


def test_alerts_and_health_go_together(store, spool):
    with pytest.raises(ValueError, match="go together"):
        Collector(store, spool_dir=spool, alerts=AlertEngine(store, SETTINGS))


def test_from_config_wires_the_assessment_and_each_rules_own_for(store, spool, tmp_path, monkeypatch):
    from collectors.health.alerts import from_config
    from dashboard.queries.health import alert_evaluation
    for var in ("PERFDECK_THRESHOLDS", "PERFDECK_ALERT_FOR", "PERFDECK_REQUEST_P95_MS_FOR"):
        monkeypatch.delenv(var, raising=False)
    (tmp_path / "thresholds.toml").write_text('[request_p95_ms]\nfor = "2m"\n')
    cfg = {"alerts": {"for": "10m"}, "_path": str(tmp_path / "perfdeck.toml")}
    eng, health = from_config(store, cfg), alert_evaluation(cfg)
    assert (eng.for_s("request_p95_ms"), eng.for_s("cache_hit_rate")) == (120.0, 600.0)
    collector = Collector(store, spool_dir=spool, alerts=eng, health=health)
    assert collector.evaluate_alerts(T0) == []           # an empty store: nothing assessed breaches


def test_the_demo_slow_build_gives_one_alert_that_escalates_then_resolves(migrated_store):
    """The demo's timing (evaluated every 30 s, for 1 min): /search's p95 ramps up past warning and critical,
    holds, then falls after the switch is turned off. One alert row, one firing and one resolved message."""
    ramp = [150, 320, 540, 610, 820, 1050, 1300, 1600] + [1650] * 20 + [1400, 900, 480, 260, 180] + [150] * 10

    def severity(ms):
        return "critical" if ms >= 1000 else "warning" if ms >= 500 else "degraded" if ms > 200 else "healthy"
    sent = []
    eng = AlertEngine(migrated_store, AlertSettings(interval_s=30, window_s=180, for_s=60))
    eng.notifier = type("Sink", (), {"send": lambda self, kind, alerts: sent.append((kind, len(alerts)))})()
    for i, ms in enumerate(ramp):
        eng.tick(frame(p95(ms, severity(ms))), T0 + i * timedelta(seconds=30))
    assert sent == [("firing", 1), ("resolved", 1)]
    assert query(migrated_store, "SELECT peak_severity, peak_value, started_at, resolved_at FROM alerts") == [
        ("critical", 1650.0, T0 + timedelta(seconds=120), T0 + timedelta(seconds=30 * 30))]


def test_each_row_says_one_reading_while_it_escalates_then_eases(migrated_store):
    """warning -> critical -> warning -> resolved through the real engine on a DuckDB file: at every step the
    row's severity, value, threshold and message come from the same evaluation, and the peak columns keep
    the worst; the escalated and resolved messages say the same."""
    sent = []
    eng = AlertEngine(migrated_store, AlertSettings(for_s=0, throttle_s=0))
    eng.notifier = type("Sink", (), {"send": lambda self, kind, alerts: sent.append((kind, alerts))})()
    columns = "state, severity, value, threshold, message, peak_severity, peak_value"
    steps = [(p95(800, "warning"), ("firing", "warning", 800.0, 500.0, "p95 of /search 800 ms > 500 ms warning",
                                    "warning", 800.0)),
             (p95(1240, "critical"), ("firing", "critical", 1240.0, 1000.0,
                                      "p95 of /search 1,240 ms > 1,000 ms critical", "critical", 1240.0)),
             (p95(918.7, "warning"), ("firing", "warning", 918.7, 500.0, "p95 of /search 919 ms > 500 ms warning",
                                      "critical", 1240.0)),
             (p95(150, "healthy"), ("resolved", "healthy", 150.0, 200.0, "p95 of /search 150 ms ≤ 200 ms target",
                                    "critical", 1240.0))]
    for i, (row, expected) in enumerate(steps):
        eng.tick(frame(row), T0 + i * MIN)
        assert query(migrated_store, f"SELECT {columns} FROM alerts") == [expected], f"step {i}"
    assert [kind for kind, _ in sent] == ["firing", "escalated", "resolved"]
    from collectors.health.notify import alert_line
    escalated, resolved = sent[1][1][0], sent[2][1][0]
    assert alert_line("escalated", escalated) == (
        "critical — request_p95_ms shop-api /search: p95 of /search 1,240 ms > 1,000 ms critical (since 12:00 UTC)")
    assert alert_line("resolved", resolved) == (
        "request_p95_ms shop-api /search: p95 of /search 150 ms ≤ 200 ms target (was critical since 12:00 UTC, "
        "resolved 12:03 UTC)")
    assert (resolved["severity"], resolved["value"], resolved["threshold"], resolved["peak_severity"],
            resolved["peak_value"]) == ("healthy", 150, 200, "critical", 1240)


def test_a_restarted_engine_keeps_the_peak_severity_after_easing(migrated_store):
    first = AlertEngine(migrated_store, AlertSettings(for_s=0))
    first.tick(frame(p95(1240, "critical")), T0)
    first.tick(frame(p95(800, "warning")), T0 + MIN)
    restarted = AlertEngine(migrated_store, AlertSettings(for_s=0))
    [t] = restarted.tick(frame(p95(1100, "critical")), T0 + 2 * MIN)
    assert t.kind == "updated"              # critical again, not a new worst: no second escalation
    assert query(migrated_store, "SELECT severity, value, threshold, peak_severity, peak_value FROM alerts") == [
        ("critical", 1100.0, 1000.0, "critical", 1240.0)]


def test_the_migration_takes_the_peak_severity_of_old_rows_from_severity(store):
    from collectors.store.migrations import MIGRATIONS, m008_alert_peak_severity
    with write(store) as con:
        for migration in MIGRATIONS[:MIGRATIONS.index(m008_alert_peak_severity)]:
            migration(con)
        con.execute("""INSERT INTO alerts (rule, target, severity, state, value, started_at)
                       VALUES ('request_p95_ms', 'shop-api /search', 'critical', 'resolved', 120, ?)""", [T0])
        m008_alert_peak_severity(con)
    assert query(store, "SELECT severity, peak_severity FROM alerts") == [("critical", "critical")]


def test_duties_passed_between_two_collectors_keep_one_alert_row(migrated_store):
    """On a lake the collector holding the duties runs the alerts; one that takes them over forgets what it
    remembered (AlertEngine.forget) and reads the firing alerts from the store, which the other advanced."""
    a = AlertEngine(migrated_store, AlertSettings(for_s=0))
    b = AlertEngine(migrated_store, AlertSettings(for_s=0))      # started beside it: nothing stored yet
    a.tick(frame(p95(800, "warning")), T0)
    b.forget()                                                   # b takes the duties over
    [escalated] = b.tick(frame(p95(1200, "critical")), T0 + MIN)
    assert escalated.kind == "escalated"
    a.forget()                                                   # and a takes them back
    [resolved] = a.tick(frame(p95(120, "healthy")), T0 + 2 * MIN)
    assert resolved.kind == "resolved"
    assert query(migrated_store, "SELECT state, severity, peak_severity FROM alerts") == [
        ("resolved", "healthy", "critical")]
