"""Alerts: assessed checks in, alert episodes out.

The daemon's alert job hands the engine the assessed checks (collectors.health ASSESSED_COLUMNS) every
[alerts] interval. A rule is a check name, its target `target(service, subject)`; one alert per (rule,
target) at a time. A check "breaches" when its severity is at least `min_severity`.

    breach first seen at t0         -> pending (memory only)
    still breaching at now - t0 >= for -> FIRING: one alerts row, started_at = the time it fired
    stops breaching before that     -> forgotten: a single spike never fires
    FIRING, each evaluation         -> severity, value, threshold, message, updated_at: the current
                                       reading; peak_value, peak_severity: the worst so far (a new worst
                                       severity, warning -> critical, is 'escalated', same row)
    FIRING, assessed below min_severity         -> RESOLVED at once (resolved_at = now)
    FIRING, not assessed at all (no traffic) for `for` -> RESOLVED, message "no data since ...; last: ..."

A row says one thing at a time: `severity`, `value`, `threshold` (the level of that severity) and
`message` always come from the same evaluation, the latest one (once resolved: the one that resolved it,
e.g. healthy, 150 against the 200 ms target). The worst moment has columns of its own: `peak_value` (the
highest value, the lowest for hit rates) and `peak_severity` (the worst severity reached).

Notifications are decided here and sent off-thread by the Notifier (collectors.health.notify):
- throttle: per rule and target, at most one firing or escalated message per throttle window, counted
  from the last message about that rule and target (a resolve included). A re-fire inside the window
  (flapping) is stored as a new row but not sent; if it still fires when the window ends, it is sent then.
- resolve: sent when its firing was sent (people know it ended), never when it was not (throttled or
  silenced), and not while a silence covers it.
- silences: a silenced alert still fires and is stored (silenced = true) but sends nothing; if the
  silence ends while it still fires, its firing is sent then (throttle allowing).
- grouping: one message per kind (firing / escalated / resolved) per evaluation, alerts grouped by rule.

Restart safety: the firing alerts and each rule and target's last notification time are loaded from the
store, so a restarted daemon neither duplicates nor forgets alerts (pending breaches start over).
`evaluate()` is the pure state machine; `tick()` is evaluate + one short write transaction + the hand-off
to the notifier."""
from __future__ import annotations

import copy
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from pathlib import Path

import duckdb
import pandas as pd

from collectors.health import severity_rank, target
from collectors.health.settings import AlertSettings, alert_settings
from collectors.store import connection

NOTIFY_KINDS = ("firing", "escalated", "resolved")


@dataclass
class Alert:
    """One alert episode, as its alerts row holds it."""
    rule: str
    target: str
    service: str | None
    subject: str | None
    severity: str
    value: float | None
    threshold: float | None          # the level of `severity` (crossed, or the target once healthy)
    message: str                     # severity, value, threshold and message: one evaluation, the latest
    started_at: datetime
    updated_at: datetime
    peak_value: float | None = None
    peak_severity: str | None = None  # the worst severity reached
    peak_message: str | None = None  # the message of the worst moment (memory only)
    lower_is_worse: bool = False     # hit rates: the peak is the lowest value
    id: int | None = None
    state: str = "firing"
    resolved_at: datetime | None = None
    silenced: bool = False
    notifications: int = 0
    notified_at: datetime | None = None   # last message that carried it
    missing_since: datetime | None = None
    note: str | None = None          # what the resolve message says (the check as it is now)

    @property
    def key(self) -> tuple[str, str]:
        return self.rule, self.target

    def as_dict(self) -> dict:
        """What a notification carries."""
        return {k: getattr(self, k) for k in ("id", "rule", "target", "service", "subject", "severity", "value",
                                               "threshold", "peak_value", "peak_severity", "message", "started_at",
                                               "resolved_at", "note")}


@dataclass(frozen=True)
class Transition:
    kind: str              # "firing" | "escalated" | "updated" | "resolved"
    alert: Alert           # a snapshot after the transition
    notify: str | None     # the message kind it goes out in; None: throttled, silenced or nothing to say


@dataclass(frozen=True)
class Silence:
    id: int
    rule: str              # a check name, or "*" for every rule
    target: str | None     # None: every target of the rule
    starts_at: datetime
    ends_at: datetime

    def covers(self, rule: str, target_: str, now: datetime) -> bool:
        return (self.rule in ("*", rule) and self.target in (None, target_)
                and self.starts_at <= now < self.ends_at)


ACTIVE_SILENCES_SQL = """
SELECT id, rule, target, starts_at, ends_at
FROM silences
WHERE cancelled_at IS NULL
  AND starts_at <= $now
  AND ends_at > $now
ORDER BY id
"""


def active_silences(con: duckdb.DuckDBPyConnection, now: datetime) -> list[Silence]:
    return [Silence(*row) for row in con.execute(ACTIVE_SILENCES_SQL, {"now": now}).fetchall()]


def _number(x) -> float | None:
    if x is None or isinstance(x, str):
        return None
    x = float(x)
    return None if math.isnan(x) else x


def _text(x) -> str | None:
    return None if x is None or (isinstance(x, float) and math.isnan(x)) else str(x)


class AlertEngine:
    """Rules -> alerts. `for_of(rule)` gives a rule's own "for" in seconds (None: settings.for_s);
    `notifier` (a Notifier, or anything with send(kind, alerts)) gets one call per message."""

    def __init__(self, db, settings: AlertSettings | None = None, *,
                 for_of: Callable[[str], float | None] | None = None, notifier=None):
        settings = settings or AlertSettings()
        self.db, self.settings, self.for_of, self.notifier = db, settings, for_of, notifier
        self.firing: dict[tuple[str, str], Alert] = {}
        self.pending: dict[tuple[str, str], datetime] = {}        # breach first seen, not yet firing
        self.last_notified: dict[tuple[str, str], datetime] = {}
        self._min_rank = severity_rank(settings.min_severity)
        self._loaded = False
        try:
            with connection.read(db) as con:
                self._load(con)
        except (connection.StoreMissing, duckdb.CatalogException, duckdb.BinderException):
            pass            # no store (or not migrated) yet: loaded at the first tick

    # -- restart ---------------------------------------------------------------------------------
    def forget(self) -> None:
        """Drop what this engine remembers; the next tick reads the firing alerts from the store again. For a
        collector taking the duties over on a lake: another one advanced the alerts meanwhile. (Breaches not
        yet firing are not stored: their `for` starts again.)"""
        self.firing, self.pending, self.last_notified = {}, {}, {}
        self._loaded = False

    def _load(self, con: duckdb.DuckDBPyConnection) -> None:
        rows = con.execute("""
            SELECT id, rule, target, service, subject, severity, value, threshold, message, started_at,
                   coalesce(updated_at, started_at), peak_value, coalesce(silenced, false),
                   coalesce(notifications, 0), notified_at, coalesce(peak_severity, severity)
            FROM alerts
            WHERE state = 'firing'
            ORDER BY id
        """).fetchall()
        for (id_, rule, target_, service, subject, severity, value, threshold, message, started_at, updated_at,
             peak, silenced, notifications, notified_at, peak_severity) in rows:
            self.firing[(rule, target_)] = Alert(
                rule, target_, service, subject, severity, value, threshold, message or "", started_at, updated_at,
                peak, peak_severity, message, id=id_,
                lower_is_worse=peak is not None and threshold is not None and peak < threshold, silenced=silenced,
                notifications=notifications, notified_at=notified_at)
        for rule, target_, last in con.execute("""
            SELECT rule, target, max(notified_at)
            FROM alerts
            WHERE notified_at IS NOT NULL
            GROUP BY rule, target
        """).fetchall():
            self.last_notified[(rule, target_)] = max(last, self.last_notified.get((rule, target_), last))
        self._loaded = True

    # -- the state machine -----------------------------------------------------------------------
    def for_s(self, rule: str) -> float:
        own = self.for_of(rule) if self.for_of else None
        return self.settings.for_s if own is None else float(own)

    def evaluate(self, assessed: pd.DataFrame, now: datetime, *, silences: Iterable[Silence] = ()) -> list[Transition]:
        """Advance every rule and target to `now` given the assessed checks; no I/O. Returns the
        transitions, sorted by rule and target: firing, escalated, updated (still firing), resolved."""
        silences = list(silences)
        seen, breaching = self._rows(assessed)
        for key in [k for k in self.pending if k not in breaching]:
            del self.pending[key]          # stopped before its `for`: never fires
        transitions = []
        for key, row in breaching.items():
            if key in self.firing:
                transitions.append(self._update(self.firing[key], row, now, silences))
                continue
            t0 = self.pending.setdefault(key, now)
            if (now - t0).total_seconds() >= self.for_s(key[0]):
                del self.pending[key]
                transitions.append(self._fire(key, row, now, silences))
        for key, alert in list(self.firing.items()):
            if key in breaching:
                continue
            if key in seen:
                self._set_current(alert, seen[key])
                alert.updated_at = now
                transitions.append(self._resolve(alert, now, silences, note=alert.message))
                continue
            alert.missing_since = alert.missing_since or now
            if (now - alert.missing_since).total_seconds() >= self.for_s(alert.rule):
                # No evaluation to take: the row keeps the last one it had, and says so.
                note = f"no data since {alert.missing_since:%H:%M} UTC"
                alert.message = f"{note}; last: {alert.message}"
                transitions.append(self._resolve(alert, now, silences, note=note))
            else:
                transitions.append(self._decide("updated", alert, now, silences))
        return sorted(transitions, key=lambda t: t.alert.key)

    def _rows(self, assessed: pd.DataFrame) -> tuple[dict, dict]:
        """Assessed rows by key (the worst one when a key repeats), and those that breach."""
        seen: dict[tuple[str, str], dict] = {}
        for row in assessed.to_dict("records") if assessed is not None else []:
            service, subject = _text(row.get("service")), _text(row.get("subject")) or ""
            key = (str(row["check"]), target(service, subject))
            row = dict(row, service=service, subject=subject, message=_text(row.get("message")) or "")
            if key not in seen or severity_rank(row["severity"]) > severity_rank(seen[key]["severity"]):
                seen[key] = row
        breaching = {k: r for k, r in seen.items() if severity_rank(r["severity"]) >= self._min_rank}
        return seen, breaching

    def _fire(self, key, row: dict, now: datetime, silences) -> Transition:
        value, level = _number(row["value"]), _number(row["level"])
        alert = Alert(key[0], key[1], row["service"], row["subject"], row["severity"], value, level, row["message"],
                      started_at=now, updated_at=now, peak_value=value, peak_severity=row["severity"],
                      peak_message=row["message"], lower_is_worse=value is not None and level is not None and value < level)
        self.firing[key] = alert
        return self._decide("firing", alert, now, silences)

    @staticmethod
    def _set_current(alert: Alert, row: dict) -> None:
        """The row's current fields, all four from this one assessed row."""
        alert.severity, alert.value, alert.threshold, alert.message = (
            row["severity"], _number(row["value"]), _number(row["level"]), row["message"])

    def _update(self, alert: Alert, row: dict, now: datetime, silences) -> Transition:
        self._set_current(alert, row)
        alert.updated_at, alert.missing_since = now, None
        value = alert.value
        escalated = severity_rank(row["severity"]) > severity_rank(alert.peak_severity or row["severity"])
        if escalated:
            alert.peak_severity = row["severity"]
        if value is not None:
            worse = min if alert.lower_is_worse else max
            peak = value if alert.peak_value is None else worse(alert.peak_value, value)
            if peak != alert.peak_value or escalated:
                alert.peak_value, alert.peak_message = peak, row["message"]
        return self._decide("escalated" if escalated else "updated", alert, now, silences)

    def _resolve(self, alert: Alert, now: datetime, silences, *, note: str) -> Transition:
        alert.state, alert.resolved_at, alert.note = "resolved", now, note
        del self.firing[alert.key]
        return self._decide("resolved", alert, now, silences)

    def _decide(self, kind: str, alert: Alert, now: datetime, silences) -> Transition:
        alert.silenced = any(s.covers(alert.rule, alert.target, now) for s in silences)
        notify = None
        if alert.silenced:
            pass
        elif kind == "resolved":
            notify = "resolved" if alert.notified_at is not None else None
        else:
            last = self.last_notified.get(alert.key)
            if last is None or (now - last).total_seconds() >= self.settings.throttle_s:
                # Its first message (fresh, or held back by the throttle or a silence until now),
                # else an escalation of one already sent.
                notify = "firing" if alert.notified_at is None else "escalated" if kind == "escalated" else None
        if notify:
            alert.notified_at, alert.notifications = now, alert.notifications + 1
            self.last_notified[alert.key] = now
        return Transition(kind, replace(alert), notify)

    # -- store and notifications -----------------------------------------------------------------
    def tick(self, assessed: pd.DataFrame, now: datetime) -> list[Transition]:
        """Evaluate, write the transitions in one short transaction, then hand the messages to the
        notifier. When the write fails, the engine's state is as before (the next tick redoes it)."""
        saved = copy.deepcopy((self.firing, self.pending, self.last_notified, self._loaded))
        try:
            with connection.write(self.db) as con:
                if not self._loaded:
                    self._load(con)
                transitions = self.evaluate(assessed, now, silences=active_silences(con, now))
                self._write(con, transitions)
        except BaseException:
            self.firing, self.pending, self.last_notified, self._loaded = saved
            raise
        if self.notifier is not None:
            for kind, alerts in messages(transitions).items():
                self.notifier.send(kind, alerts)
        return transitions

    def _write(self, con: duckdb.DuckDBPyConnection, transitions: list[Transition]) -> None:
        updates = []
        for t in transitions:
            a = t.alert
            if t.kind == "firing":
                a.id = connection.next_id(con, "alerts")
                con.execute("""
                    INSERT INTO alerts (id, rule, target, severity, state, value, message, started_at, resolved_at,
                                        notified_at, service, subject, threshold, peak_value, updated_at, silenced,
                                        notifications, peak_severity)
                    VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
                """, [a.id, a.rule, a.target, a.severity, a.state, a.value, a.message, a.started_at, a.resolved_at,
                      a.notified_at, a.service, a.subject, a.threshold, a.peak_value, a.updated_at, a.silenced,
                      a.notifications, a.peak_severity])
                self.firing[a.key].id = a.id
            elif a.id is not None:
                updates.append([a.severity, a.state, a.value, a.message, a.resolved_at, a.notified_at, a.threshold,
                                a.peak_value, a.peak_severity, a.updated_at, a.silenced, a.notifications, a.id])
        if updates:
            con.executemany("""
                UPDATE alerts
                SET severity = ?, state = ?, value = ?, message = ?, resolved_at = ?, notified_at = ?,
                    threshold = ?, peak_value = ?, peak_severity = ?, updated_at = ?, silenced = ?,
                    notifications = ?
                WHERE id = ?
            """, updates)


def messages(transitions: Iterable[Transition]) -> dict[str, list[dict]]:
    """The messages of one evaluation: per kind (firing, escalated, resolved), its alerts by rule."""
    out: dict[str, list[dict]] = {}
    for t in sorted((t for t in transitions if t.notify), key=lambda t: t.alert.key):
        out.setdefault(t.notify, []).append(t.alert.as_dict())
    return {kind: out[kind] for kind in NOTIFY_KINDS if kind in out}


def from_config(db, config: dict, *, notifier=None) -> AlertEngine:
    """The engine for the daemon, from a loaded perfdeck.toml: the [alerts] settings and each rule's own
    "for" from the thresholds file. What it judges each tick (`dashboard.queries.health.alert_evaluation`)
    is wired beside it by the command line or the demo: judging here, measuring in the read layer."""
    from collectors.health.thresholds import load_thresholds

    settings = alert_settings(config)
    thresholds = load_thresholds(Path(settings.thresholds_file))

    def for_of(rule: str) -> float | None:
        try:
            return thresholds[rule].for_s
        except (KeyError, AttributeError):
            return None

    return AlertEngine(db, settings, for_of=for_of, notifier=notifier)
