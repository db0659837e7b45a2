"""Silence alerts and end a silence: rows in the store's `silences` table, read by the alert engine at
every evaluation (collectors.health.alerts).

A silence mutes notifications only: alerts still fire and are recorded (marked silenced), so the
history stays whole. Neither action is destructive (a silence can be ended at once), so a click on Run
after the preview is the confirmation; both need the operator role and leave an audit row like every
action. Each is one short write transaction, the store's discipline for the dashboard's rare writes."""
from __future__ import annotations

import re
from datetime import datetime, timedelta

from collectors.store import next_id, read, utcnow, write
from dashboard.actions.framework import ActionError, Field, InvalidInput, Preview, Progress, Result
from dashboard.actions.store_actions import _StoreAction
from dashboard.queries.alerts import active_alerts, active_silences, alert_facets, alert_targets

MAX_HOURS = 24 * 30
EVERY_RULE, EVERY_TARGET = "*", "(every target)"
_RULE = re.compile(r"^[A-Za-z0-9_.:-]{1,100}$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
_SILENCE_ID = re.compile(r"^#?(\d{1,18})\b")


def _when(ts: datetime, now: datetime) -> str:
    return f"{ts:%H:%M} UTC" if ts - now < timedelta(hours=20) else f"{ts:%Y-%m-%d %H:%M} UTC"


def _scope(rule: str, target: str | None) -> str:
    what = "every rule" if rule == EVERY_RULE else f"rule {rule}"
    return f"{what} for " + ("every target" if target is None else f"target {target}")


def _plain(value, name: str, limit: int) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    if not isinstance(value, str) or len(value) > limit or _CONTROL.search(value):
        raise InvalidInput(f"{name} must be plain text of at most {limit} characters, not {str(value)[:60]!r}")
    return value.strip()


class _AlertAction(_StoreAction):
    """Silences are rows of perfdeck's own store, written with its short-write discipline."""
    kind = "alerts"

class SilenceAlerts(_AlertAction):
    name = "alerts.silence"
    title = "Silence alerts"
    touches = "alert notifications of one rule (or every rule), for one target or all (alerts are still recorded)"

    def fields(self) -> list[Field]:
        def rules(_params: dict) -> list[str]:
            with read(self.db) as con:
                facets = alert_facets(con)
            return [EVERY_RULE, *facets.loc[facets["facet"] == "rule", "value"]]

        def targets(params: dict) -> list[str]:
            with read(self.db) as con:
                return [EVERY_TARGET, *alert_targets(con, rule=params.get("rule") or EVERY_RULE)]

        return [
            Field("rule", "Rule", kind="choice", options=rules, help="* mutes every rule"),
            Field("target", "Target", kind="choice", options=targets, default=EVERY_TARGET,
                  help="A service and endpoint, cache or host the rule has alerted on, or every target"),
            Field("hours", "For how many hours", kind="int", default=2, help=f"1 to {MAX_HOURS}"),
            Field("reason", "Reason", help="Shown beside the silence, e.g. 'planned migration'"),
        ]

    def target_of(self, params: dict) -> str:
        target = params.get("target")
        return f"alerts:{params.get('rule')}" + (f" {target}" if target and target != EVERY_TARGET else "")

    def check(self, params: dict) -> dict:
        rule = params.get("rule")
        if rule != EVERY_RULE and not (isinstance(rule, str) and _RULE.match(rule)):
            raise InvalidInput(f"rule must be a check name (letters, digits, _ . : -) or *, not {str(rule)[:60]!r}")
        target = params.get("target")
        target = None if target == EVERY_TARGET else _plain(target, "target", 300)
        hours = params.get("hours")
        if isinstance(hours, bool) or not isinstance(hours, int) or not 1 <= hours <= MAX_HOURS:
            raise InvalidInput(f"hours must be a whole number from 1 to {MAX_HOURS}, not {str(hours)[:40]!r}")
        return {"rule": rule, "target": target, "hours": hours, "reason": _plain(params.get("reason"), "reason", 200)}

    def preview(self, params: dict) -> Preview:
        now = utcnow().replace(microsecond=0)
        ends = now + timedelta(hours=params["hours"])
        with read(self.db) as con:
            firing = active_alerts(con, now=now)
        if params["rule"] != EVERY_RULE:
            firing = firing[firing["rule"] == params["rule"]]
        if params["target"] is not None:
            firing = firing[firing["target"] == params["target"]]
        n = len(firing)
        return Preview(
            summary=f"Will mute {_scope(params['rule'], params['target'])} until {_when(ends, now)} "
                    f"({n} alert{'' if n == 1 else 's'} currently firing would stop notifying).",
            rows=[{"severity": r.severity, "rule": r.rule, "target": r.target, "since": f"{r.started_at:%H:%M} UTC",
                   "message": r.message} for r in firing.itertuples(index=False)],
            count=n, data={"starts_at": now.isoformat(), "ends_at": ends.isoformat()})

    def execute(self, params: dict, preview: Preview, progress: Progress) -> Result:
        starts, ends = (datetime.fromisoformat(preview.data[k]) for k in ("starts_at", "ends_at"))
        created_by = progress.actor.name if progress.actor else "unknown"
        with write(self.db) as con:
            silence_id = next_id(con, "silences")
            con.execute("""
                INSERT INTO silences (id, rule, target, starts_at, ends_at, reason, created_by, created_at)
                VALUES (?, ?, ?, ?, ?, ?, ?, ?)
            """, [silence_id, params["rule"], params["target"], starts, ends, params["reason"], created_by, utcnow()])
        return Result(f"Silence #{silence_id}: {_scope(params['rule'], params['target'])} muted until "
                      f"{_when(ends, starts)}.", {"silence_id": silence_id, "ends_at": ends.isoformat(),
                                                  "firing": preview.count})


class EndSilence(_AlertAction):
    name = "alerts.unsilence"
    title = "End a silence"
    touches = "one active silence: the alerts it muted notify again (throttle allowing)"

    def fields(self) -> list[Field]:
        def silences(_params: dict) -> list[str]:
            now = utcnow()
            with read(self.db) as con:
                found = active_silences(con, now=now)
            return [f"#{s.id} · {_scope(s.rule, s.target if isinstance(s.target, str) else None)} · until "
                    f"{_when(s.ends_at, now)}" for s in found.itertuples(index=False)]

        return [Field("silence", "Silence", kind="choice", options=silences, help="Silences not ended yet")]

    def check(self, params: dict) -> dict:
        value = params.get("silence")
        match = _SILENCE_ID.match(value) if isinstance(value, str) else None
        if isinstance(value, int) and not isinstance(value, bool) and value > 0:
            return {"silence": value}
        if not match:
            raise InvalidInput(f"pick a silence by its number (#12), not {str(value)[:60]!r}")
        return {"silence": int(match.group(1))}

    def _active(self, silence_id: int, now: datetime):
        with read(self.db) as con:
            found = active_silences(con, now=now)
        found = found[found["id"] == silence_id]
        if found.empty:
            raise InvalidInput(f"silence #{silence_id} is not active: it ended, was ended, or does not exist")
        return found.iloc[0]

    def preview(self, params: dict) -> Preview:
        now = utcnow()
        s = self._active(params["silence"], now)
        target = s.target if isinstance(s.target, str) else None
        return Preview(
            summary=f"Will end silence #{s.id} ({_scope(s.rule, target)}, set by {s.created_by} until "
                    f"{_when(s.ends_at, now)}) now: the {s.firing} firing alert{'' if s.firing == 1 else 's'} "
                    f"it covers would notify again (throttle allowing).",
            rows=[{"rule": s.rule, "target": target or EVERY_TARGET, "reason": s.reason, "by": s.created_by}],
            count=int(s.firing))

    def execute(self, params: dict, preview: Preview, progress: Progress) -> Result:
        now = utcnow()
        active = "id = ? AND cancelled_at IS NULL AND ends_at > ?"
        with write(self.db) as con:       # counted first: the lake takes no UPDATE ... RETURNING
            ended = con.execute(f"SELECT count(*) FROM silences WHERE {active}", [params["silence"], now]).fetchone()[0]
            con.execute(f"UPDATE silences SET cancelled_at = ? WHERE {active}", [now, params["silence"], now])
        if not ended:
            raise ActionError(f"silence #{params['silence']} had already ended")
        return Result(f"Silence #{params['silence']} ended at {now:%H:%M} UTC.", {"silence_id": params["silence"]})


ACTIONS = [SilenceAlerts, EndSilence]
