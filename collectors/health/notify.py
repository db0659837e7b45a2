"""Sending alert messages without ever holding up the daemon.

`Notifier.send(kind, alerts)` puts one grouped message on a bounded queue and returns at once (a full
queue is a counted dead letter, never a wait). A thread of its own delivers it:
- with [alerts] webhook_url: a Slack-compatible POST ({"text": ..., "blocks": [...]}) with a 5 s timeout,
  retried `webhook_retries` times after the first attempt with exponential backoff (0.5 s, 1 s, 2 s...);
  any 2xx is delivered, the last failure a dead letter;
- without: one log line per alert on the "perfdeck.alerts" logger (WARNING firing, INFO resolved).
Each outcome becomes one alert_notifications row, handed to `on_result` (the daemon queues it for its
writer). The webhook URL is a secret: it is never logged, stored or shown; errors name its host only."""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.request
from collections.abc import Callable
from datetime import datetime
from itertools import groupby
from urllib.parse import urlsplit

from collectors.health import worst
from collectors.health.settings import AlertSettings
from collectors.store import utcnow

log = logging.getLogger("perfdeck.alerts")

LABELS = {"firing": "FIRING", "escalated": "ESCALATED", "resolved": "RESOLVED"}
MAX_SECTION = 2900          # Slack cuts a section's text at 3,000 characters
_STOP = object()


def host_of(url: str | None) -> str:
    """What may be shown of a webhook URL: its host."""
    return (urlsplit(url).hostname or "?") if url else ""


def _hhmm(ts: datetime | None) -> str:
    return f"{ts:%H:%M} UTC" if ts else "?"


def _emoji(kind: str, severity: str) -> str:
    if kind == "resolved":
        return ":large_green_circle:"
    return ":red_circle:" if severity == "critical" else ":large_orange_circle:"


def alert_line(kind: str, alert: dict, *, with_rule: bool = True) -> str:
    """One alert as a message says it: "critical — request_p95_ms shop-api /search: p95 of /search
    1,240 ms > 1,000 ms critical (since 12:04 UTC)"."""
    what = f"{alert['rule']} {alert['target']}" if with_rule else alert["target"]
    if kind == "resolved":
        # Now (the evaluation that resolved it), then the worst it reached: never one mixed with the other.
        worst_ = alert.get("peak_severity") or alert["severity"]
        return (f"{what}: {alert.get('note') or alert['message']} (was {worst_} since "
                f"{_hhmm(alert['started_at'])}, resolved {_hhmm(alert.get('resolved_at'))})")
    return f"{alert['severity']} — {what}: {alert['message']} (since {_hhmm(alert['started_at'])})"


def summary(kind: str, alerts: list[dict]) -> tuple[str, list[tuple[str, list[str]]]]:
    """The headline and, per rule, the alert lines of one grouped message."""
    severity = worst(a["severity"] for a in alerts)
    emoji = _emoji(kind, severity)
    if len(alerts) == 1:
        dash = " —" if kind == "resolved" else ""
        return f"{emoji} {LABELS[kind]}{dash} {alert_line(kind, alerts[0])}", []
    head = f"{emoji} {LABELS[kind]}: {len(alerts)} alerts"
    ordered = sorted(alerts, key=lambda a: (a["rule"], a["target"]))
    return head, [(rule, [alert_line(kind, a, with_rule=False) for a in group])
                  for rule, group in groupby(ordered, key=lambda a: a["rule"])]


def _escape(text: str) -> str:
    # Slack's mrkdwn: only these three are special ("62 % < 80 %" must not open a link).
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_payload(kind: str, alerts: list[dict]) -> dict:
    """{"text": the whole message (the fallback), "blocks": headline + one section per rule}."""
    head, rules = summary(kind, alerts)
    sections = [(f"*{rule}*", "\n".join(f"• {line}" for line in lines)) for rule, lines in rules]
    text = "\n".join([head, *(f"{title}\n{body}" for title, body in sections)])
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": _escape(head)[:MAX_SECTION]}}]
    blocks += [{"type": "section", "text": {"type": "mrkdwn", "text": f"{title}\n{_escape(body)}"[:MAX_SECTION]}}
               for title, body in sections]
    return {"text": _escape(text), "blocks": blocks}


class Notifier:
    """Delivers alert messages on its own thread. `on_result(row)` gets one alert_notifications row
    (ts, channel, kind, alerts, alert_ids, outcome, attempts, error) per message, from that thread.

        notifier = Notifier(settings, on_result=rows.append)
        notifier.start()
        notifier.send("firing", [alert_dict])     # returns at once
        notifier.stop(timeout=5)                  # drains what is queued, one attempt each
    """

    def __init__(self, settings: AlertSettings, *, on_result: Callable[[tuple], None], backoff_s: float = 0.5,
                 timeout_s: float = 5.0, max_queue: int = 100):
        self.url, self.retries = settings.webhook_url, max(0, settings.webhook_retries)
        self.channel = "webhook" if self.url else "log"
        self.on_result, self.backoff_s, self.timeout_s = on_result, backoff_s, timeout_s
        self._queue: queue.Queue = queue.Queue(maxsize=max_queue)
        self._stopping = threading.Event()      # set: no more retries, backoff waits end
        self._thread: threading.Thread | None = None
        self._idle = threading.Condition()
        self._unfinished = 0
        self.counts = {"delivered": 0, "dead_letter": 0, "logged": 0}

    @property
    def destination(self) -> str:
        """Where messages go, as the dashboard says it: "webhook to hooks.slack.com" or "log lines"."""
        return f"webhook to {host_of(self.url)}" if self.url else "log lines"

    def start(self) -> None:
        if self._thread and self._thread.is_alive():
            return
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="perfdeck-notifier", daemon=True)
        self._thread.start()

    def send(self, kind: str, alerts: list[dict]) -> bool:
        """Queue one message; False when the queue is full (then it is a dead letter). Never blocks."""
        if not alerts:
            return True
        if self._thread is None:
            self.start()
        with self._idle:
            self._unfinished += 1
        try:
            self._queue.put_nowait((kind, alerts))
        except queue.Full:
            self._done(self._row(kind, alerts, "dead_letter", 0, "queue full: the notifier is behind"))
            return False
        return True

    def flush(self, timeout: float = 10.0) -> bool:
        """Wait until every queued message has an outcome; False at the timeout."""
        with self._idle:
            return self._idle.wait_for(lambda: self._unfinished == 0, timeout)

    def stop(self, timeout: float = 5.0) -> None:
        """Deliver what is queued (one attempt each, no backoff) for up to `timeout` seconds; what is
        left then is a dead letter."""
        self._stopping.set()
        thread, deadline = self._thread, time.monotonic() + timeout
        if thread and thread.is_alive():
            try:
                self._queue.put(_STOP, timeout=timeout)
            except queue.Full:
                pass
            thread.join(max(0.0, deadline - time.monotonic()))
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is not _STOP:
                self._done(self._row(*item, "dead_letter", 0, "not sent: the collector stopped"))
        self._thread = None

    # -- the thread ------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            kind, alerts = item
            try:
                row = self._webhook(kind, alerts) if self.url else self._log(kind, alerts)
            except Exception as exc:        # a bug here must not kill the thread: count it
                row = self._row(kind, alerts, "dead_letter", 0, f"{type(exc).__name__}: {exc}"[:300])
            self._done(row)

    def _done(self, row: tuple) -> None:
        try:
            self.on_result(row)
        except Exception:
            log.exception("could not record an alert notification outcome")
        with self._idle:
            self.counts[row[5]] = self.counts.get(row[5], 0) + 1
            self._unfinished -= 1
            self._idle.notify_all()

    def _row(self, kind: str, alerts: list[dict], outcome: str, attempts: int, error: str | None) -> tuple:
        ids = [a["id"] for a in alerts if a.get("id") is not None]
        return (utcnow(), self.channel, kind, len(alerts), ids, outcome, attempts, error)

    def _log(self, kind: str, alerts: list[dict]) -> tuple:
        level = logging.INFO if kind == "resolved" else logging.WARNING
        for alert in alerts:
            log.log(level, "%s %s", LABELS[kind], alert_line(kind, alert))
        return self._row(kind, alerts, "logged", 1, None)

    def _webhook(self, kind: str, alerts: list[dict]) -> tuple:
        body = json.dumps(slack_payload(kind, alerts)).encode()
        attempts, error = 0, None
        for attempt in range(self.retries + 1):
            if attempt and self._stopping.wait(self.backoff_s * 2 ** (attempt - 1)):
                break               # stopping: no more retries
            attempts += 1
            try:
                self._post(body)
                return self._row(kind, alerts, "delivered", attempts, None)
            except Exception as exc:
                error = self._safe(exc)
        log.warning("alert webhook to %s gave up after %d attempts: %s", host_of(self.url), attempts, error)
        return self._row(kind, alerts, "dead_letter", attempts, error)

    def _post(self, body: bytes) -> None:
        request = urllib.request.Request(self.url, data=body, method="POST",
                                         headers={"Content-Type": "application/json", "User-Agent": "perfdeck"})
        with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
            response.read()
            if not 200 <= response.status < 300:
                raise OSError(f"HTTP {response.status}")

    def _safe(self, exc: Exception) -> str:
        """The error without the URL (some exceptions quote it), cut to a line."""
        text = f"{type(exc).__name__}: {exc}"
        return text.replace(self.url, f"<webhook {host_of(self.url)}>")[:300]
