"""The collector's HTTP listener on real stores and real sockets: `perfdeck collect --http` serving /healthz
and /metrics (parsed with prometheus_client's own parser and checked against the store), the health gate's
200/503, the bearer token, the refusal to listen beyond loopback without one, the cap on endpoints, label
escaping (Hypothesis), and a request that fails inside answering 500 while the listener serves on."""
from __future__ import annotations

import json
import socket
import urllib.error
import urllib.request
from datetime import timedelta

import pandas as pd
import pytest
from click.testing import CliRunner
from helpers import clear_listener_env, query, running_collector, wait_for
from hypothesis import given, settings
from hypothesis import strategies as st
from prometheus_client.parser import text_string_to_metric_families
from seed_cost import seed_cost
from seed_health import seed_health, seed_healthy, spend
from seed_store import store_events

from collectors.cli import main
from collectors.cli.health import assessment, health
from collectors.http import HttpSettings, Listener, http_settings
from collectors.http.metrics import LE_BOUNDS, MAX_ENDPOINTS, OTHER, Exposition
from collectors.store import migrate, utcnow, write
from collectors.store.histogram import bucket_of, value_of

TOKEN = "s3cret-token"


@pytest.fixture(autouse=True)
def _no_env(monkeypatch, tmp_path):
    clear_listener_env(monkeypatch, tmp_path)


def get(port: int, path: str, token: str | None = None) -> tuple[int, dict, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, dict(r.headers), r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read().decode()


def families(text: str) -> dict:
    return {f.name: f for f in text_string_to_metric_families(text)}


def samples(family, name: str | None = None) -> dict[tuple, float]:
    """{label items sorted: value} of one family's samples named `name` (default: the family's)."""
    return {tuple(sorted(s.labels.items())): s.value for s in family.samples if s.name == (name or family.name)}


@pytest.fixture
def serve():
    """serve(db, token=None, health=...) -> a started in-process Listener on a free loopback port."""
    started = []

    def start(db, *, token=None, health="default"):
        window_s, assess = assessment({})
        listener = Listener(HttpSettings("127.0.0.1", 0, token), db, window_s=window_s,
                            health=assess if health == "default" else health).start()
        started.append(listener)
        return listener.address[1]

    yield start
    for listener in started:
        listener.stop()


# -- perfdeck collect --http, end to end ---------------------------------------------------------------------

@pytest.fixture
def collector(store, tmp_path):
    """`perfdeck collect --http 127.0.0.1:<port>` on a store seeded with seed_health; (port, seeded now)."""
    now = utcnow()
    seed_health(store, now=now)
    with running_collector(store, tmp_path) as port:
        yield port, now


def test_collect_serves_metrics_that_match_the_store(collector, store):
    port, now = collector
    status, headers, text = get(port, "/metrics")
    assert status == 200 and headers["Content-Type"] == "text/plain; version=0.0.4; charset=utf-8"
    fams = families(text)
    for name in ("perfdeck_requests", "perfdeck_request_errors", "perfdeck_request_duration_seconds",
                 "perfdeck_cache_hit_ratio", "perfdeck_llm_cost_usd", "perfdeck_llm_tokens", "perfdeck_health_status",
                 "perfdeck_ingest_rejected_rows"):
        assert name in fams, name
    assert "# HELP perfdeck_requests " in text and "# TYPE perfdeck_request_duration_seconds histogram" in text

    # The seeded events of the window: all but one 10 minutes before `now` (the one at `now` is in it).
    raw = query(store, "SELECT service, endpoint, status, duration_ms FROM request_events WHERE ts > ?",
                [now - timedelta(minutes=4)])
    events = pd.DataFrame(raw, columns=["service", "endpoint", "status", "duration_ms"])
    expected = events.groupby(["service", "endpoint"]).size()
    requests = samples(fams["perfdeck_requests"])
    assert requests == {(("endpoint", e), ("service", s)): float(n) for (s, e), n in expected.items()}
    errors = samples(fams["perfdeck_request_errors"])
    assert errors[(("endpoint", "job:daily_report"), ("service", "worker"))] == 2
    assert errors[(("endpoint", "/products/{id}"), ("service", "shop-api"))] == 1

    hist = fams["perfdeck_request_duration_seconds"]
    for (service, endpoint), group in events.groupby(["service", "endpoint"]):
        key = (("endpoint", endpoint), ("service", service))
        buckets = {dict(k)["le"]: v for k, v in samples(hist, hist.name + "_bucket").items()
                   if (("endpoint", endpoint), ("service", service)) == tuple(p for p in k if p[0] != "le")}
        represented = [value_of(bucket_of(ms)) / 1000 for ms in group["duration_ms"]]
        for bound in LE_BOUNDS:
            assert buckets[repr(bound)] == sum(v <= bound for v in represented), (endpoint, bound)
        assert buckets["+Inf"] == len(group)
        assert samples(hist, hist.name + "_count")[key] == len(group)
        assert samples(hist, hist.name + "_sum")[key] == pytest.approx(group["duration_ms"].sum() / 1000)

    ratios = samples(fams["perfdeck_cache_hit_ratio"])
    assert ratios == pytest.approx({(("cache", "product_lru"), ("service", "shop-api")): 62 / 100,
                                    (("cache", "customer_lru"), ("service", "shop-api")): 95 / 100,
                                    (("cache", "tiny_lru"), ("service", "shop-api")): 5 / 10})
    assert samples(fams["perfdeck_llm_cost_usd"]) == {(("model", "gpt-4o"),): pytest.approx(float(spend(now)))}
    assert samples(fams["perfdeck_llm_calls"]) == {(("model", "gpt-4o"),): 10}
    assert samples(fams["perfdeck_llm_tokens"]) == {(("kind", "input"), ("model", "gpt-4o")): 10_000,
                                                    (("kind", "output"), ("model", "gpt-4o")): 1_000}
    health_status = {(dict(k)["check"], dict(k)["subject"]): v for k, v in samples(fams["perfdeck_health_status"]).items()}
    assert health_status[("job_failure_rate", "job:daily_report")] == 2          # critical
    assert health_status[("request_p95_ms", "/search")] == 1                    # warning
    assert health_status[("cost_per_query_usd", "/recommendations")] == 0       # degraded counts as ok
    assert samples(fams["perfdeck_health_ok"]) == {(): 0}


def test_collect_healthz_is_the_health_document_with_503_when_the_gate_fails(collector, store):
    port, _ = collector

    def ticked():      # the collector's first tick records its spool source, which health then checks
        status, headers, body = get(port, "/healthz")
        doc = json.loads(body)
        return (status, headers, doc) if "Ingest" in {c["component"] for c in doc["components"]} else None

    status, headers, doc = wait_for(ticked, timeout=30)
    assert status == 503 and headers["Content-Type"].startswith("application/json")
    cli = json.loads(CliRunner().invoke(health, ["--db", str(store), "--json"]).output)
    assert list(doc) == list(cli) == ["status", "window_s", "at", "reasons", "components", "checks"]
    assert {k: v for k, v in doc.items() if k != "at"} == {k: v for k, v in cli.items() if k != "at"}
    assert doc["status"] == "critical" and "redis queue is down" in doc["reasons"]
    assert get(port, "/nothing")[0] == 404


def test_ingest_goes_on_while_the_listener_is_scraped(collector, tmp_path):
    """Requests from an instrumented app reach /metrics within a few ticks while it is being scraped."""
    from collectors import sdk

    port, _ = collector
    sdk.configure(service="live-app", transport=f"spool:{tmp_path / 'spool'}", flush_interval=60)
    for i in range(25):
        sdk.record_request("/live", 10.0 + i)
    assert sdk.flush(10)

    def seen():
        assert get(port, "/healthz")[0] == 503                 # scraped all the while
        fams = families(get(port, "/metrics")[2])
        return samples(fams["perfdeck_requests"]).get((("endpoint", "/live"), ("service", "live-app")))

    assert wait_for(seen, timeout=30) == 25


def test_healthz_is_200_when_the_gate_passes(store, serve):
    seed_healthy(store, now=utcnow())
    status, _, body = get(serve(store), "/healthz")
    assert status == 200 and json.loads(body)["status"] == "healthy"


def test_healthz_of_a_store_with_nothing_to_judge_is_503(migrated_store, serve):
    status, _, body = get(serve(migrated_store), "/healthz")
    assert status == 503 and json.loads(body)["status"] == "unknown"      # as `perfdeck health` exits 2


# -- the token ----------------------------------------------------------------------------------------------

def test_a_token_is_required_when_set(store, serve):
    seed_healthy(store, now=utcnow())
    port = serve(store, token=TOKEN)
    for path in ("/healthz", "/metrics", "/nothing"):
        status, headers, body = get(port, path)
        assert status == 401 and headers["WWW-Authenticate"].startswith("Bearer") and TOKEN not in body
        assert get(port, path, token="wrong")[0] == 401
        assert get(port, path, token=TOKEN + "x")[0] == 401
    assert get(port, "/healthz", token=TOKEN)[0] == 200
    assert get(port, "/metrics", token=TOKEN)[0] == 200


def test_non_loopback_needs_a_token(monkeypatch):
    with pytest.raises(ValueError, match="not a loopback address: set a bearer token"):
        http_settings({"http": {"listen": "0.0.0.0:9464"}})
    with pytest.raises(ValueError, match="not a loopback"):
        http_settings({}, ":9464")                      # every interface
    assert http_settings({"http": {"listen": "0.0.0.0:9464", "token": TOKEN}}).token == TOKEN
    assert http_settings({}, "127.0.0.1:9464") == HttpSettings("127.0.0.1", 9464)
    assert http_settings({}, "[::1]:9464").loopback and http_settings({}, "localhost:1").loopback
    assert http_settings({}) is None
    monkeypatch.setenv("PERFDECK_HTTP_LISTEN", "10.1.2.3:9000")
    monkeypatch.setenv("PERFDECK_HTTP_TOKEN", TOKEN)
    assert http_settings({"http": {"listen": "127.0.0.1:1"}}) == HttpSettings("10.1.2.3", 9000, TOKEN)
    assert TOKEN not in repr(http_settings({}))
    with pytest.raises(ValueError, match="unknown keys"):
        http_settings({"http": {"port": 1}})


def test_collect_refuses_a_non_loopback_address_without_a_token(tmp_path):
    config = tmp_path / "perfdeck.toml"
    config.write_text("[http]\nlisten = \"0.0.0.0:9464\"\n")
    result = CliRunner().invoke(main, ["collect", "--db", str(tmp_path / "s.duckdb"), "--config", str(config)])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --http 0.0.0.0:9464 is not a loopback address")
    assert not (tmp_path / "s.duckdb").exists()      # refused before anything started


def test_collect_says_in_one_line_when_the_port_is_taken(tmp_path):
    config = tmp_path / "perfdeck.toml"
    config.write_text("[host]\nenabled = false\n")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = CliRunner().invoke(main, ["collect", "--db", str(tmp_path / "s.duckdb"), "--config", str(config),
                                           "--spool", str(tmp_path / "spool"), "--http", f"127.0.0.1:{port}"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    assert result.output.strip() == f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"


# -- failures -------------------------------------------------------------------------------------------------

def test_a_failing_request_is_a_500_and_the_listener_serves_on(store, serve, caplog):
    port = serve(store)                                  # no store file yet
    for path in ("/metrics", "/healthz"):
        status, _, body = get(port, path)
        assert status == 500 and body.startswith("StoreMissing: no perfdeck store at") and body.count("\n") == 1
    assert "GET /metrics failed: StoreMissing" in caplog.text
    seed_healthy(store, now=utcnow())
    assert get(port, "/healthz")[0] == 200
    assert get(port, "/metrics")[0] == 200


def test_an_assessment_that_raises_is_a_500(store, serve):
    seed_healthy(store, now=utcnow())

    def broken(con, now):
        raise RuntimeError("thresholds went away\nsecond line")

    port = serve(store, health=broken)
    assert get(port, "/healthz")[:3:2] == (500, "RuntimeError: thresholds went away\n")
    assert get(port, "/metrics")[0] == 500
    assert get(port, "/nothing")[0] == 404


# -- cardinality and escaping --------------------------------------------------------------------------------

def test_endpoints_beyond_the_cap_are_summed_under_other(store, serve):
    now = utcnow() - timedelta(seconds=30)
    n = MAX_ENDPOINTS + 7
    # endpoint i gets i + 1 requests: the 7 least busy (0..6) go to (other); the small service is untouched
    rows = [(now, "big", f"/e{i:03d}", 500 if j == 0 else 200, 10.0 * (i + 1)) for i in range(n) for j in range(i + 1)]
    rows += [(now, "small", "/only", 200, 5.0)]
    with write(store) as con:
        migrate(con)
        store_events(con, pd.DataFrame(rows, columns=["ts", "service", "endpoint", "status", "duration_ms"]))
    port = serve(store)
    fams = families(get(port, "/metrics")[2])
    requests = samples(fams["perfdeck_requests"])
    big = {dict(k)["endpoint"]: v for k, v in requests.items() if dict(k)["service"] == "big"}
    assert len(big) == MAX_ENDPOINTS + 1
    assert big[OTHER] == sum(range(1, 8)) and big["/e007"] == 8 and "/e006" not in big
    assert requests[(("endpoint", "/only"), ("service", "small"))] == 1
    errors = {dict(k)["endpoint"]: v for k, v in samples(fams["perfdeck_request_errors"]).items()}
    assert errors[OTHER] == 7
    hist = fams["perfdeck_request_duration_seconds"]
    counts = {dict(k)["endpoint"]: v for k, v in samples(hist, hist.name + "_count").items()
              if dict(k)["service"] == "big"}
    assert counts == big
    sums = {dict(k)["endpoint"]: v for k, v in samples(hist, hist.name + "_sum").items()}
    assert sums[OTHER] == pytest.approx(sum(10.0 * (i + 1) * (i + 1) for i in range(7)) / 1000)


NASTY = ['quote " in it', "back\\slash", "new\nline", "**bold** [link](http://x) <b>html</b>", "trailing \\",
         'all \\" \n of them', "ünïcödé ☃"]


def test_label_values_are_escaped_and_parse_back(store, serve):
    now = utcnow() - timedelta(seconds=30)
    seed_cost(store, events=[{"ts": now, "service": 'svc "x"', "host": "h", "endpoint": name, "method": "GET",
                              "status": 200, "duration_ms": 12.0, "request_id": None, "tags": None} for name in NASTY])
    text = get(serve(store), "/metrics")[2]
    fams = families(text)
    got = {(dict(k)["service"], dict(k)["endpoint"]) for k in samples(fams["perfdeck_requests"])}
    assert got == {('svc "x"', name) for name in NASTY}
    hist = fams["perfdeck_request_duration_seconds"]
    assert {dict(k)["endpoint"] for k in samples(hist, hist.name + "_count")} == set(NASTY)
    assert 'endpoint="new\\nline"' in text and 'service="svc \\"x\\""' in text


label_text = st.text(st.characters(blacklist_categories=("Cs",)), max_size=40)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(label_text, label_text), min_size=1, max_size=5, unique_by=lambda t: t))
def test_any_label_value_parses_back(pairs):
    out = Exposition()
    out.family("perfdeck_x", "gauge", "A help text with \\ and\nnewline.")
    for i, (service, endpoint) in enumerate(pairs):
        out.sample("perfdeck_x", {"service": service, "endpoint": endpoint}, i)
    parsed = list(text_string_to_metric_families(out.text()))
    assert len(parsed) == 1
    assert [(s.labels["service"], s.labels["endpoint"], s.value) for s in parsed[0].samples] == \
        [(service, endpoint, float(i)) for i, (service, endpoint) in enumerate(pairs)]
