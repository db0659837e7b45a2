"""AppTest of the Alerts page on a store the alert engine itself filled (a firing alert, a resolved one),
plus a silence and notification outcomes; the silence actions through the action framework."""
from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from helpers import OPERATOR, query, shown_text
from streamlit.testing.v1 import AppTest

from collectors.health import ASSESSED_COLUMNS
from collectors.health.alerts import AlertEngine
from collectors.health.settings import AlertSettings
from collectors.store import utcnow, write
from dashboard.actions import VIEWER, InvalidInput, NotAuthorized, make_preview, run_action
from dashboard.actions.access import SESSION_KEY, hash_password, log_in, operator_config
from dashboard.actions.alert_actions import EndSilence, SilenceAlerts
from dashboard.actions.catalog import AREAS

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "dashboard" / "app_pages" / "alerts.py")
PASSWORD = "correct horse battery"
SECRET = "/services/T000/B000/s3cr3t"


def check(subject: str, severity: str, ms: float) -> dict:
    level = {"healthy": 200, "warning": 500, "critical": 1000}[severity]
    return {"component": "Latency", "check": "request_p95_ms", "service": "shop-api", "subject": subject,
            "value": ms, "unit": "ms", "severity": severity, "level": level,
            "message": f"p95 of {subject} {ms:,.0f} ms {'≤' if severity == 'healthy' else '>'} {level:,} ms {severity}"}


def frame(*rows) -> pd.DataFrame:
    return pd.DataFrame(list(rows), columns=ASSESSED_COLUMNS)


@pytest.fixture
def seeded(migrated_store, monkeypatch):
    """/search fired critical two hours ago and still fires; /cart fired and resolved; a silence on
    cache_hit_rate; one delivered, one dead-letter and one logged notification."""
    t = utcnow().replace(microsecond=0) - timedelta(hours=2)
    engine = AlertEngine(migrated_store, AlertSettings(for_s=0))
    engine.tick(frame(check("/search", "critical", 1240)), t)
    engine.tick(frame(check("/search", "critical", 1300), check("/cart", "warning", 740)), t + timedelta(minutes=1))
    engine.tick(frame(check("/search", "critical", 1100), check("/cart", "healthy", 150)), t + timedelta(minutes=6))
    with write(migrated_store) as con:
        con.execute("""INSERT INTO silences (rule, target, starts_at, ends_at, reason, created_by, created_at)
                       VALUES ('cache_hit_rate', NULL, ?, ?, 'cache warm-up', 'ops', ?)""",
                    [t, t + timedelta(hours=6), t])
        con.executemany("INSERT INTO alert_notifications VALUES (?, ?, ?, ?, ?, ?, ?, ?)", [
            (t, "webhook", "firing", 1, [1], "delivered", 1, None),
            (t + timedelta(minutes=1), "webhook", "firing", 1, [2], "dead_letter", 4, "HTTPError: HTTP Error 500"),
            (t + timedelta(minutes=6), "log", "resolved", 1, [2], "logged", 1, None)])
    return _page_env(migrated_store, monkeypatch)


def _page_env(store, monkeypatch):
    monkeypatch.setenv("PERFDECK_DB", str(store))
    for var in ("PERFDECK_OPERATOR_PASSWORD_HASH", "PERFDECK_OPERATOR_EMAILS", "PERFDECK_CONFIG",
                "PERFDECK_ALERT_WEBHOOK", "PERFDECK_ALERT_FOR"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(store.parent)       # no perfdeck.toml, no .streamlit/secrets.toml here
    return store


def frames(at: AppTest) -> dict[str, pd.DataFrame]:
    """The page's tables by the name of their CSV download (each table is followed by its button)."""
    names = [b.key.removeprefix("csv-") for b in at.get("download_button")]
    return dict(zip(names, (d.value for d in at.dataframe if "severity" in d.value or "rule" in d.value
                            or "outcome" in d.value), strict=False))


def test_the_page_shows_firing_silences_history_and_notifications(seeded, monkeypatch):
    monkeypatch.setenv("PERFDECK_ALERT_WEBHOOK", "https://hooks.slack.com" + SECRET)
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    assert at.title[0].value == "Alerts"
    how = at.caption[0].value
    assert "Every 1 min the collector assesses the last 5 min" in how and "for 5 min" in how
    assert "at most once per 15 min; notifications go to a webhook to hooks.slack.com." in how
    assert all(SECRET not in e.value for e in (*at.caption, *at.markdown))
    tables = frames(at)
    assert list(tables) == ["alerts-firing", "alert-silences", "alert-history", "alert-notifications"]
    firing = tables["alerts-firing"]
    assert firing[["severity", "target", "value", "threshold", "peak_severity", "peak_value"]].values.tolist() == [
        ["critical", "shop-api /search", "1,100 ms", "1,000 ms", "critical", "1,300 ms"]]
    assert firing["firing"].tolist() == ["2 h"]
    assert tables["alert-silences"][["rule", "target", "reason", "firing"]].values.tolist() == [
        ["cache_hit_rate", "(every target)", "cache warm-up", 0]]
    history = tables["alert-history"]
    assert history[["state", "severity", "peak_severity", "target", "duration"]].values.tolist() == [
        ["resolved", "healthy", "warning", "shop-api /cart", "5 min"],
        ["firing", "critical", "critical", "shop-api /search", "6 min"]]     # firing: up to its last evaluation
    assert {m.label: m.value for m in at.metric} == {"Delivered": "1", "Dead letters": "1", "Logged": "1"}
    assert tables["alert-notifications"]["outcome"].tolist() == ["logged", "dead_letter", "delivered"]
    assert not at.success


def test_history_filters(seeded):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert at.selectbox(key="alerts-state").options == ["All", "firing", "resolved"]
    at.selectbox(key="alerts-state").select("resolved").run()
    assert not at.exception, at.exception
    assert frames(at)["alert-history"]["target"].tolist() == ["shop-api /cart"]
    at.selectbox(key="alerts-state").select("All")
    at.selectbox(key="alerts-target").select("shop-api /search").run()
    assert frames(at)["alert-history"]["state"].tolist() == ["firing"]
    at.selectbox(key="alerts-severity").select("warning").run()
    assert not at.exception
    assert "alert-history" not in frames(at) and any(c.value == "No alerts in this range." for c in at.caption)


def test_no_alerts_firing(migrated_store, monkeypatch):
    monkeypatch.setenv("PERFDECK_DB", str(migrated_store))
    monkeypatch.chdir(migrated_store.parent)
    monkeypatch.delenv("PERFDECK_ALERT_WEBHOOK", raising=False)
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    assert at.success[0].value == "No alerts firing."
    assert "notifications go to log lines of the collector" in at.caption[0].value
    assert {m.label: m.value for m in at.metric} == {"Delivered": "0", "Dead letters": "0", "Logged": "0"}


def test_an_operator_silences_a_rule_from_the_page(seeded, monkeypatch):
    password_hash = hash_password(PASSWORD)
    monkeypatch.setenv("PERFDECK_OPERATOR_PASSWORD_HASH", password_hash)
    session: dict = {}
    assert log_in(session, operator_config(secrets={}), "test", PASSWORD).ok
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state[SESSION_KEY] = session[SESSION_KEY]
    at.run()
    at.selectbox(key="alerts-silence:rule").select("request_p95_ms").run()
    at.selectbox(key="alerts-silence:target").select("shop-api /search").run()
    at.text_input(key="alerts-silence:reason").input("rolling back").run()
    next(b for b in at.button if b.key == "alerts-silence:preview").click().run()
    assert not at.exception, at.exception
    preview = shown_text(next(m.value for m in at.markdown if m.value.startswith(":material/preview:")))
    assert preview.startswith(":material/preview: **Preview** · Will mute rule request_p95_ms for target "
                              "shop-api /search until ")
    assert preview.endswith(" UTC (1 alert currently firing would stop notifying).")
    next(b for b in at.button if b.key == "alerts-silence:run").click().run()
    assert not at.exception, at.exception
    assert shown_text(at.success[0].value).startswith("Silence #2: rule request_p95_ms for target shop-api /search muted until")
    [(rule, target, reason, by, hours)] = query(seeded, """
        SELECT rule, target, reason, created_by, date_diff('hour', starts_at, ends_at) FROM silences WHERE id = 2""")
    assert (rule, target, reason, by, hours) == ("request_p95_ms", "shop-api /search", "rolling back", "operator", 2)
    assert query(seeded, "SELECT actor, action, target, outcome FROM action_audit") == [
        ("operator", "alerts.silence", "alerts:request_p95_ms shop-api /search", "done")]
    assert frames(at)["alert-silences"][["id", "firing"]].values.tolist() == [[2, 1], [1, 0]]   # soonest end first


def test_silence_then_end_it_through_the_framework(seeded, operator):
    action = SilenceAlerts(seeded)            # no actor given: the silence names the audit row's actor
    params, preview = make_preview(action, {"rule": "request_p95_ms", "target": "(every target)", "hours": 3,
                                            "reason": None}, actor=OPERATOR)
    assert params == {"rule": "request_p95_ms", "target": None, "hours": 3, "reason": None}
    assert preview.summary.startswith("Will mute rule request_p95_ms for every target until ")
    assert preview.count == 1 and [r["target"] for r in preview.rows] == ["shop-api /search"]
    result = run_action(action, params, preview, actor=operator, db=seeded)
    assert result.figures["silence_id"] == 2 and result.figures["firing"] == 1
    assert query(seeded, "SELECT rule, target, created_by FROM silences WHERE id = 2") == [
        ("request_p95_ms", None, "test-operator")]

    # The engine honours it at its next evaluation: the alert still fires, marked silenced.
    engine = AlertEngine(seeded, AlertSettings(for_s=0))
    [t] = engine.tick(frame(check("/search", "critical", 1150)), utcnow())
    assert (t.kind, t.alert.silenced, t.notify) == ("updated", True, None)

    end = EndSilence(seeded)
    labels = end.fields()[0].options({})
    assert labels[0].startswith("#2 · rule request_p95_ms for every target · until ")
    params, preview = make_preview(end, {"silence": labels[0]}, actor=OPERATOR)
    assert params == {"silence": 2}
    assert preview.summary.startswith("Will end silence #2 (rule request_p95_ms for every target, set by "
                                      "test-operator until ")
    assert "the 1 firing alert it covers would notify again" in preview.summary
    run_action(end, params, preview, actor=operator, db=seeded)
    assert query(seeded, "SELECT cancelled_at IS NOT NULL FROM silences WHERE id = 2") == [(True,)]
    with pytest.raises(InvalidInput, match="silence #2 is not active"):
        make_preview(end, {"silence": 2}, actor=OPERATOR)
    assert query(seeded, "SELECT action, outcome FROM action_audit ORDER BY id") == [
        ("alerts.silence", "done"), ("alerts.unsilence", "done")]


def test_a_viewer_cannot_silence_and_the_refusal_is_audited(seeded):
    action = SilenceAlerts(seeded)
    params, preview = make_preview(action, {"rule": "*", "target": None, "hours": 1}, actor=OPERATOR)
    assert preview.summary.startswith("Will mute every rule for every target until ")
    with pytest.raises(NotAuthorized):
        run_action(action, params, preview, actor=VIEWER, db=seeded)
    assert query(seeded, "SELECT count(*) FROM silences") == [(1,)]
    assert query(seeded, "SELECT actor, action, outcome FROM action_audit") == [("anonymous", "alerts.silence",
                                                                                  "refused")]


@pytest.mark.parametrize("params, error", [
    ({"rule": "drop table;", "hours": 1}, "rule must be a check name"),
    ({"rule": "*", "hours": 0}, "hours must be a whole number from 1 to 720"),
    ({"rule": "*", "hours": True}, "hours must be"),
    ({"rule": "*", "hours": 1, "target": "a\nb"}, "target must be plain text"),
])
def test_bad_silence_parameters_are_refused(seeded, params, error):
    with pytest.raises(InvalidInput, match=error):
        make_preview(SilenceAlerts(seeded), params, actor=OPERATOR)


def test_the_silence_actions_are_on_the_actions_page():
    assert AREAS["Alerts"] == [SilenceAlerts, EndSilence]


def test_the_page_shows_now_and_worst_side_by_side_readably(migrated_store, monkeypatch):
    """An alert that escalated then eased: each table says the current reading (severity, value, threshold
    and message agreeing) beside the worst one; missing numbers read "—", durations "8.2 min"."""
    t = utcnow().replace(microsecond=0) - timedelta(hours=1)
    engine = AlertEngine(migrated_store, AlertSettings(for_s=0))
    engine.tick(frame(check("/search", "warning", 700)), t)
    engine.tick(frame(check("/search", "critical", 1240)), t + timedelta(minutes=2))
    engine.tick(frame(check("/search", "warning", 820)), t + timedelta(minutes=4))
    engine.tick(frame(check("/search", "healthy", 150)), t + timedelta(seconds=492))      # 8.2 min
    no_value = dict(check("/queue", "warning", 0), value=None, message="queue depth unknown: no samples")
    engine.tick(frame(no_value), t + timedelta(minutes=30))
    engine.tick(frame(no_value, check("/cart", "critical", 1500)), t + timedelta(minutes=40))
    engine.tick(frame(no_value, check("/cart", "warning", 640)), t + timedelta(minutes=41))
    _page_env(migrated_store, monkeypatch)
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    columns = ["target", "severity", "value", "threshold", "message", "peak_severity", "peak_value"]
    assert frames(at)["alerts-firing"][columns].values.tolist() == [      # worst now first, then the oldest
        ["shop-api /queue", "warning", "—", "500 ms", "queue depth unknown: no samples", "warning", "—"],
        ["shop-api /cart", "warning", "640 ms", "500 ms", "p95 of /cart 640 ms > 500 ms warning", "critical", "1,500 ms"]]
    history = frames(at)["alert-history"]
    assert history[["state", "duration", *columns]].values.tolist() == [
        ["firing", "60 s", "shop-api /cart", "warning", "640 ms", "500 ms", "p95 of /cart 640 ms > 500 ms warning",
         "critical", "1,500 ms"],
        ["firing", "11 min", "shop-api /queue", "warning", "—", "500 ms", "queue depth unknown: no samples", "warning",
         "—"],
        ["resolved", "8.2 min", "shop-api /search", "healthy", "150 ms", "200 ms", "p95 of /search 150 ms ≤ 200 ms healthy",
         "critical", "1,240 ms"]]
    assert "None" not in history.astype(str).to_numpy().ravel().tolist()
    # Seen in the tour: the level now beside the worst severity, whose level was not shown. Each value has its own.
    assert frames(at)["alerts-firing"][["peak_severity", "peak_value", "peak_level", "severity", "value", "threshold"]
                                       ].values.tolist()[1] == ["critical", "1,500 ms", "1,000 ms", "warning", "640 ms",
                                                                "500 ms"]
    assert history["peak_level"].tolist() == ["1,000 ms", "500 ms", "1,000 ms"]
    firing_table = next(d for d in at.dataframe if "peak_level" in d.value and "resolved_at" not in d.value)
    order = list(firing_table.proto.column_order)
    assert order.index("peak_level") == order.index("peak_value") + 1 and order.index("threshold") == order.index("value") + 1
