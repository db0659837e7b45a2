"""The notifier against real local HTTP servers: Slack-compatible JSON, retries with backoff, dead letters,
a hanging server that never holds up send(), and log lines when no webhook is configured."""
from __future__ import annotations

import json
import logging
import socket
import threading
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from collectors.health.notify import Notifier, host_of, slack_payload
from collectors.health.settings import AlertSettings

SECRET_PATH = "/services/T000/B000/s3cr3t-token"


def alert(id_=7, rule="request_p95_ms", target="shop-api /search", severity="critical", value=1240.0,
          message="p95 of /search 1,240 ms > 1,000 ms critical", **extra) -> dict:
    return {"id": id_, "rule": rule, "target": target, "service": "shop-api", "subject": target.split()[-1],
            "severity": severity, "value": value, "threshold": 1000.0, "peak_value": value, "message": message,
            "started_at": datetime(2025, 3, 1, 12, 4), "resolved_at": None, "note": None} | extra


class Hook:
    """A webhook receiver on 127.0.0.1:<free port>: answers `statuses` in turn (the last one repeats);
    with `hang`, holds every request until `release` is set."""

    def __init__(self, statuses=(200,), hang: bool = False):
        self.statuses, self.hang = list(statuses), hang
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.arrived = threading.Event()
        self.release = threading.Event()
        hook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):
                body = self.rfile.read(int(self.headers["Content-Length"]))
                hook.bodies.append(json.loads(body))
                hook.headers.append(dict(self.headers))
                hook.arrived.set()
                if hook.hang:
                    hook.release.wait(30)
                status = hook.statuses[min(len(hook.bodies), len(hook.statuses)) - 1]
                try:
                    self.send_response(status)
                    self.end_headers()
                    self.wfile.write(b"ok" if status == 200 else b"no")
                except OSError:         # the client gave up waiting (the hanging case)
                    pass

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}{SECRET_PATH}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self):
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def hooks():
    made = []

    def make(*args, **kwargs) -> Hook:
        made.append(Hook(*args, **kwargs))
        return made[-1]
    yield make
    for hook in made:
        hook.close()


def notifier(url, rows, *, retries=3, **kwargs) -> Notifier:
    n = Notifier(AlertSettings(webhook_url=url, webhook_retries=retries), on_result=rows.append, backoff_s=0.01,
                 **kwargs)
    n.start()
    return n


def outcome(row: tuple) -> tuple:
    """A row without its timestamp."""
    assert isinstance(row[0], datetime)
    return row[1:]


def test_a_firing_alert_reaches_the_webhook_as_slack_json(hooks):
    hook, rows = hooks(), []
    n = notifier(hook.url, rows)
    assert n.send("firing", [alert()])
    assert n.flush(10)
    text = (":red_circle: FIRING critical — request_p95_ms shop-api /search: p95 of /search 1,240 ms &gt; "
            "1,000 ms critical (since 12:04 UTC)")
    assert hook.bodies == [{"text": text, "blocks": [{"type": "section", "text": {"type": "mrkdwn", "text": text}}]}]
    assert hook.headers[0]["Content-Type"] == "application/json"
    assert [outcome(r) for r in rows] == [("webhook", "firing", 1, [7], "delivered", 1, None)]
    n.stop()


def test_a_grouped_message_lists_its_alerts_by_rule(hooks):
    hook, rows = hooks(), []
    n = notifier(hook.url, rows)
    n.send("firing", [alert(1), alert(2, target="shop-api /cart", severity="warning",
                                      message="p95 of /cart 740 ms > 500 ms warning"),
                      alert(3, rule="cache_hit_rate", target="shop-api product_lru", severity="warning",
                            message="hit rate of product_lru 62 % < 80 % warning")])
    assert n.flush(10)
    assert hook.bodies[0]["text"] == (
        ":red_circle: FIRING: 3 alerts\n"
        "*cache_hit_rate*\n"
        "• warning — shop-api product_lru: hit rate of product_lru 62 % &lt; 80 % warning (since 12:04 UTC)\n"
        "*request_p95_ms*\n"
        "• warning — shop-api /cart: p95 of /cart 740 ms &gt; 500 ms warning (since 12:04 UTC)\n"
        "• critical — shop-api /search: p95 of /search 1,240 ms &gt; 1,000 ms critical (since 12:04 UTC)")
    assert [b["text"]["text"].split("\n")[0] for b in hook.bodies[0]["blocks"]] == [
        ":red_circle: FIRING: 3 alerts", "*cache_hit_rate*", "*request_p95_ms*"]
    assert [outcome(r) for r in rows] == [("webhook", "firing", 3, [1, 2, 3], "delivered", 1, None)]
    n.stop()


def test_a_resolve_says_what_it_is_now_and_when_it_started():
    resolved = alert(note="p95 of /search 180 ms ≤ 200 ms target", resolved_at=datetime(2025, 3, 1, 12, 31))
    assert slack_payload("resolved", [resolved])["text"] == (
        ":large_green_circle: RESOLVED — request_p95_ms shop-api /search: p95 of /search 180 ms ≤ 200 ms target "
        "(was critical since 12:04 UTC, resolved 12:31 UTC)")


def test_two_failures_then_success_is_delivered_after_three_attempts(hooks):
    hook, rows = hooks([500, 500, 200]), []
    n = notifier(hook.url, rows)
    n.send("firing", [alert()])
    assert n.flush(10)
    assert len(hook.bodies) == 3 and hook.bodies[0] == hook.bodies[2]
    assert [outcome(r) for r in rows] == [("webhook", "firing", 1, [7], "delivered", 3, None)]
    n.stop()


def test_a_webhook_that_always_fails_is_a_dead_letter_after_retries_plus_one(hooks, caplog):
    hook, rows = hooks([500]), []
    n = notifier(hook.url, rows, retries=2)
    n.send("resolved", [alert()])
    assert n.flush(10)
    assert len(hook.bodies) == 3
    assert [outcome(r) for r in rows] == [("webhook", "resolved", 1, [7], "dead_letter", 3,
                                           "HTTPError: HTTP Error 500: Internal Server Error")]
    assert n.counts["dead_letter"] == 1
    assert "gave up after 3 attempts" in caplog.text and SECRET_PATH not in caplog.text
    n.stop()


def test_connection_refused_is_a_dead_letter_that_does_not_show_the_url(caplog):
    with socket.socket() as s:              # a port nobody listens on any more
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rows = []
    n = notifier(f"http://127.0.0.1:{port}{SECRET_PATH}", rows, retries=1)
    n.send("firing", [alert()])
    assert n.flush(10)
    [row] = rows
    assert outcome(row)[:6] == ("webhook", "firing", 1, [7], "dead_letter", 2)
    assert "Connection refused" in row[7] and SECRET_PATH not in row[7]
    assert SECRET_PATH not in caplog.text
    n.stop()


def test_send_never_blocks_on_a_hanging_server_and_a_full_queue_is_a_dead_letter(hooks):
    hook, rows = hooks(hang=True), []
    n = notifier(hook.url, rows, retries=0, timeout_s=0.5, max_queue=1)
    assert n.send("firing", [alert(1)])
    assert hook.arrived.wait(10)           # the thread is stuck in the POST of message 1...
    assert n.send("firing", [alert(2)])    # ...and send() still returns: message 2 waits in the queue,
    assert not n.send("firing", [alert(3)])   # message 3 finds it full
    assert not hook.release.is_set() and [outcome(r) for r in rows] == [
        ("webhook", "firing", 1, [3], "dead_letter", 0, "queue full: the notifier is behind")]
    assert n.flush(20)
    assert [outcome(r)[3:6] for r in rows[1:]] == [([1], "dead_letter", 1), ([2], "dead_letter", 1)]
    assert all("timed out" in r[7] for r in rows[1:])
    n.stop()


def test_stop_gives_queued_messages_one_attempt_and_no_backoff(hooks):
    hook, rows = hooks([500]), []
    n = Notifier(AlertSettings(webhook_url=hook.url, webhook_retries=5), on_result=rows.append, backoff_s=60)
    n.start()
    n.send("firing", [alert()])
    n.stop(timeout=10)
    assert [outcome(r)[4:6] for r in rows] == [("dead_letter", 1)]


def test_without_a_webhook_each_alert_is_a_log_line(caplog):
    rows = []
    n = Notifier(AlertSettings(), on_result=rows.append)
    caplog.set_level(logging.INFO, logger="perfdeck.alerts")
    n.send("firing", [alert(1), alert(2, target="shop-api /cart")])
    n.send("resolved", [alert(1, note="p95 of /search 90 ms ≤ 200 ms target", resolved_at=datetime(2025, 3, 1, 13))])
    assert n.flush(10)
    assert [(r.levelname, r.getMessage()) for r in caplog.records if r.name == "perfdeck.alerts"] == [
        ("WARNING", "FIRING critical — request_p95_ms shop-api /search: p95 of /search 1,240 ms > 1,000 ms critical "
                    "(since 12:04 UTC)"),
        ("WARNING", "FIRING critical — request_p95_ms shop-api /cart: p95 of /search 1,240 ms > 1,000 ms critical "
                    "(since 12:04 UTC)"),
        ("INFO", "RESOLVED request_p95_ms shop-api /search: p95 of /search 90 ms ≤ 200 ms target (was critical "
                 "since 12:04 UTC, resolved 13:00 UTC)")]
    assert [outcome(r) for r in rows] == [("log", "firing", 2, [1, 2], "logged", 1, None),
                                          ("log", "resolved", 1, [1], "logged", 1, None)]
    assert n.destination == "log lines"
    n.stop()


def test_only_the_host_of_the_webhook_is_shown():
    n = Notifier(AlertSettings(webhook_url="https://hooks.slack.com" + SECRET_PATH), on_result=print)
    assert n.destination == "webhook to hooks.slack.com" and n.channel == "webhook"
    assert host_of(None) == ""
