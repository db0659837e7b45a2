"""OTLP/HTTP traces into a real `perfdeck collect --http`: spans from the real OpenTelemetry SDK and OTLP
exporter (a Starlette app under OpenTelemetryMiddleware, instrumented with perfdeck's own ASGI middleware
too) land as the same requests perfdeck's SDK records; db spans become fingerprinted queries, gen_ai spans
priced LLM calls of their request, a new service.version a deploy; JSON and gzip bodies land, a replayed
body counts once, bad bodies are refused with a counted reason and ingest goes on. Hypothesis: any
attribute values map to a batch the collector reads, never an exception."""
from __future__ import annotations

import gzip
import json
import socket
import time
import urllib.error
import urllib.request
from datetime import timedelta

import pytest
from google.protobuf import json_format
from helpers import clear_listener_env, query, running_collector, wait_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import SpanKind
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from collectors import sdk
from collectors.http.otlp import MAX_BODY_BYTES, map_request
from collectors.integrations.asgi import PerfdeckMiddleware
from collectors.sdk.batch import encode
from collectors.sdk.fingerprint import fingerprint
from collectors.store import connection, utcnow
from collectors.store.ingest import decode
from dashboard.queries.compare import deploy_windows
from dashboard.queries.latency import endpoint_percentiles


@pytest.fixture(autouse=True)
def _no_env(monkeypatch, tmp_path):
    clear_listener_env(monkeypatch, tmp_path)


def post(port: int, body: bytes, content_type: str = "application/x-protobuf", **headers) -> tuple[int, dict, bytes]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}/v1/traces", data=body, method="POST",
                                     headers={"Content-Type": content_type, **headers})
    try:
        with urllib.request.urlopen(request, timeout=30) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


@pytest.fixture
def collector(store, tmp_path):
    """`perfdeck collect --http 127.0.0.1:<port>`: (port, spool directory)."""
    with running_collector(store, tmp_path, "--interval", "0.2", drop_env=("PERFDECK_", "OTEL_")) as port:
        yield port, tmp_path / "spool"


def rows(store, sql: str, params=()) -> list[tuple]:
    try:
        return query(store, sql, params)
    except Exception:            # the writer holds the file this instant: ask again
        return []


# -- the same traffic through OpenTelemetry and through perfdeck's SDK ----------------------------------------

DELAYS = {"/items/{item_id}": [0.004, 0.012, 0.02, 0.03, 0.045], "/health": [0.002], "/chat": [0.008]}


def _route(request) -> None:
    """What the Starlette instrumentation adds to the server span: the route template."""
    trace.get_current_span().set_attribute("http.route", request.scope["route"].path)


async def item(request):
    _route(request)
    n = int(request.path_params["item_id"])
    tracer = trace.get_tracer("shop.db")
    with tracer.start_as_current_span("SELECT items", kind=SpanKind.CLIENT,
                                      attributes={"db.system": "postgresql", "db.namespace": "shop",
                                                  "db.query.text": f"SELECT * FROM items WHERE id = {n}"}):
        time.sleep(DELAYS["/items/{item_id}"][n % 5])
    if n % 7 == 6:
        return PlainTextResponse("gone", status_code=503)
    return PlainTextResponse("ok")


async def health(request):
    _route(request)
    return PlainTextResponse("ok")


async def chat(request):
    _route(request)
    tracer = trace.get_tracer("shop.llm")
    with tracer.start_as_current_span("chat gpt-4o", kind=SpanKind.CLIENT, attributes={
            "gen_ai.system": "openai", "gen_ai.request.model": "gpt-4o", "gen_ai.response.model": "gpt-4o-2024-08-06",
            "gen_ai.usage.input_tokens": 1200, "gen_ai.usage.output_tokens": 300}):
        time.sleep(DELAYS["/chat"][0])
    return PlainTextResponse("answer")


def test_otlp_traffic_lands_as_perfdeck_records_it(collector, store):
    port, spool = collector
    provider = TracerProvider(resource=Resource.create({"service.name": "shop-otel", "service.version": "1.0.0",
                                                        "host.name": "web-1"}))
    processor = BatchSpanProcessor(OTLPSpanExporter(endpoint=f"http://127.0.0.1:{port}/v1/traces"))
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    sdk.configure(service="shop-sdk", transport=f"spool:{spool}", flush_interval=60)
    app = Starlette(routes=[Route("/items/{item_id}", item), Route("/health", health), Route("/chat", chat)])
    app = OpenTelemetryMiddleware(PerfdeckMiddleware(app), tracer_provider=provider)
    since = utcnow() - timedelta(minutes=1)
    with TestClient(app) as client:
        for i in range(70):
            assert client.get(f"/items/{i}").status_code == (503 if i % 7 == 6 else 200)
        for _ in range(15):
            client.get("/health")
        for _ in range(3):
            client.get("/chat")
    assert sdk.flush(10)
    assert processor.force_flush(30_000)

    def landed():
        got = rows(store, "SELECT service, count(*) FROM request_events GROUP BY ALL")
        return dict(got) if dict(got).get("shop-otel") == 88 and dict(got).get("shop-sdk") == 88 else None
    assert wait_for(landed, timeout=60), rows(store, "SELECT service, count(*) FROM request_events GROUP BY ALL")

    with connection.read(store) as con:
        df = endpoint_percentiles(con, since=since, until=utcnow() + timedelta(minutes=1))
    by = {s: g.set_index("endpoint") for s, g in df.groupby("service")}
    otel, own = by["shop-otel"], by["shop-sdk"]
    assert set(otel.index) == set(own.index) == {"/items/{item_id}", "/health", "/chat"}
    for endpoint in own.index:
        assert otel.loc[endpoint, "requests"] == own.loc[endpoint, "requests"], endpoint
        # the OpenTelemetry span wraps perfdeck's timing: the same within a log bucket or two (2 % each)
        assert otel.loc[endpoint, "p95_ms"] == pytest.approx(own.loc[endpoint, "p95_ms"], rel=0.05, abs=0.5), endpoint
    errors = dict(rows(store, "SELECT service, count(*) FROM request_events WHERE status >= 500 GROUP BY ALL"))
    assert errors == {"shop-otel": 10, "shop-sdk": 10}
    methods = rows(store, "SELECT DISTINCT method, host FROM request_events WHERE service = 'shop-otel'")
    assert methods == [("GET", "web-1")]

    # db spans: fingerprinted queries of the service
    def queries():
        return rows(store, "SELECT database, fingerprint, sum(calls) FROM query_stats WHERE service = 'shop-otel' "
                           "GROUP BY ALL") or None
    assert wait_for(queries, timeout=30) == [("shop", fingerprint("SELECT * FROM items WHERE id = 1"), 70)]

    # gen_ai spans: LLM calls priced at ingest, joined to their request by the trace id
    calls = rows(store, "SELECT model, provider, input_tokens, output_tokens, cost_usd, request_id, endpoint "
                        "FROM llm_calls WHERE service = 'shop-otel'")
    assert len(calls) == 3
    for model, system, inp, out, cost, request_id, endpoint in calls:
        assert (model, system, inp, out, endpoint) == ("gpt-4o-2024-08-06", "openai", 1200, 300, "/chat")
        assert cost is not None and cost > 0
        assert rows(store, "SELECT endpoint FROM request_events WHERE request_id = ?", [request_id]) == [("/chat",)]

    # the resource's service.version: one deploy, however many bodies carried it
    assert rows(store, "SELECT service, version FROM deploys") == [("shop-otel", "1.0.0")]
    ignored = rows(store, "SELECT sum(count) FROM ingest_rejects WHERE kind = 'otlp' AND reason = 'otlp_ignored_spans'")
    assert ignored[0][0] > 0           # the middleware's internal send spans
    provider.shutdown()


# -- bodies as any exporter may send them ------------------------------------------------------------------

def _kv(key, value) -> KeyValue:
    v = AnyValue()
    if isinstance(value, bool):
        v.bool_value = value
    elif isinstance(value, int):
        v.int_value = value
    elif isinstance(value, float):
        v.double_value = value
    elif isinstance(value, str):
        v.string_value = value
    elif isinstance(value, bytes):
        v.bytes_value = value
    elif isinstance(value, list):
        for item in value:
            v.array_value.values.append(_kv("", item).value)
    return KeyValue(key=key, value=v)


def body(service: str, route: str, n: int = 1, version: str | None = None, status: int = 200,
         seed: int = 0) -> ExportTraceServiceRequest:
    """n server spans of `route`, 10 ms each, ending now."""
    message = ExportTraceServiceRequest()
    rs = message.resource_spans.add()
    rs.resource.attributes.append(_kv("service.name", service))
    if version:
        rs.resource.attributes.append(_kv("service.version", version))
    spans = rs.scope_spans.add()
    end = time.time_ns()
    for i in range(n):
        span = spans.spans.add(trace_id=(seed * 1000 + i + 1).to_bytes(16, "big"), span_id=(i + 1).to_bytes(8, "big"),
                               name=f"GET {route}", kind=Span.SPAN_KIND_SERVER,
                               start_time_unix_nano=end - 10_000_000, end_time_unix_nano=end)
        span.attributes.extend([_kv("http.route", route), _kv("http.method", "GET"), _kv("http.status_code", status)])
    return message


@pytest.mark.parametrize("name, attrs, endpoint", [
    ("GET /items/42", [], "/items/{id}"),               # a plain ASGI instrumentation: no http.route
    ("POST /orders/9f1c2e7a-aa41-4c4e-9d7e-1f0d2c3b4a5e/lines", [], "/orders/{id}/lines"),
    ("GET /items/42", [("http.route", "/items/{item_id}")], "/items/{item_id}"),
    ("/health", [], "/health"),
    ("checkout", [], "checkout"),
])
def test_a_server_span_without_a_route_is_named_by_its_templated_path(name, attrs, endpoint):
    """Found by hand: opentelemetry-instrumentation-asgi on a plain Starlette app sets no http.route and
    names the span by the raw path, so every id became an endpoint of its own."""
    message = body("shop", "/x")
    span = message.resource_spans[0].scope_spans[0].spans[0]
    span.name = name
    del span.attributes[:]
    span.attributes.extend([_kv(k, v) for k, v in attrs])
    mapped, _ = map_request(message)
    assert [r[1] for r in mapped["shop", None].requests] == [endpoint]


def otlp_json(message: ExportTraceServiceRequest) -> bytes:
    """The OTLP JSON encoding: the protobuf JSON mapping with hex ids."""
    doc = json_format.MessageToDict(message)
    for rs in doc["resourceSpans"]:
        for ss in rs["scopeSpans"]:
            for span in ss["spans"]:
                for key in ("traceId", "spanId"):
                    span[key] = __import__("base64").b64decode(span[key]).hex()
    return json.dumps(doc).encode()


def landed(store, service: str, route: str) -> int:
    got = rows(store, "SELECT count(*) FROM request_events WHERE service = ? AND endpoint = ?", [service, route])
    return got[0][0] if got else 0


def test_json_gzip_replays_bad_bodies_and_versions(collector, store):
    port, _ = collector
    # JSON, answered in JSON
    status, headers, answer = post(port, otlp_json(body("api", "/json", 3, seed=1)), "application/json")
    assert status == 200 and headers["Content-Type"] == "application/json"
    assert json.loads(answer) == {}
    # gzip protobuf, answered in protobuf
    status, headers, answer = post(port, gzip.compress(body("api", "/gzip", 4, seed=2).SerializeToString()),
                                   **{"Content-Encoding": "gzip"})
    assert status == 200 and headers["Content-Type"] == "application/x-protobuf"
    ExportTraceServiceResponse().ParseFromString(answer)
    # the same body twice, and the same spans once more as JSON: counted once
    twice = body("api", "/twice", 5, seed=3)
    for payload, kind in ((twice.SerializeToString(), "application/x-protobuf"),
                          (twice.SerializeToString(), "application/x-protobuf"), (otlp_json(twice), "application/json")):
        assert post(port, payload, kind)[0] == 200
    # bad bodies: one line each, counted, and the next good one lands
    for payload, kind, extra, code in ((b"\xff\xfe not protobuf", "application/x-protobuf", {}, 400),
                                       (b"{not json", "application/json", {}, 400),
                                       (b'{"resourceSpans": [{"scopeSpans": [{"spans": [{"traceId": "zz"}]}]}]}',
                                        "application/json", {}, 400),
                                       (b"not gzip", "application/x-protobuf", {"Content-Encoding": "gzip"}, 400),
                                       (b"x", "text/plain", {}, 415),
                                       (b"\0" * (MAX_BODY_BYTES + 1), "application/x-protobuf", {}, 413),
                                       (gzip.compress(b"\0" * (MAX_BODY_BYTES + 1)), "application/x-protobuf",
                                        {"Content-Encoding": "gzip"}, 413)):
        status, _, answer = post(port, payload, kind, **extra)
        assert status == code and answer.count(b"\n") == 1, (status, answer)
    with socket.create_connection(("127.0.0.1", port), timeout=30) as raw:     # past the listener's own cap
        raw.sendall(b"POST /v1/traces HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-protobuf\r\n"
                    b"Content-Length: 20000000\r\n\r\n")
        assert raw.makefile("rb").readline().split()[1] == b"413"
    assert post(port, body("api", "/after", 2, seed=4).SerializeToString())[0] == 200
    # versions: each new one a deploy, once
    for version, seed in (("2.0", 5), ("2.0", 6), ("2.1", 7), ("2.0", 8)):
        assert post(port, body("api", "/v", 1, version=version, seed=seed).SerializeToString())[0] == 200

    assert wait_for(lambda: landed(store, "api", "/after") == 2 and landed(store, "api", "/v") == 4, timeout=60)
    assert wait_for(lambda: landed(store, "api", "/json") == 3, timeout=10)
    assert landed(store, "api", "/gzip") == 4
    assert landed(store, "api", "/twice") == 5
    assert sorted(rows(store, "SELECT version FROM deploys WHERE service = 'api'")) == [("2.0",), ("2.1",)]
    with connection.read(store) as con:          # what Compare reads around a deploy
        windows = deploy_windows(con, version="2.1", service="api")
    assert len(windows) == 1 and windows["before_start"].iloc[0] < windows["ts"].iloc[0]

    def refusals():
        got = dict(rows(store, "SELECT reason, sum(count)::INT FROM ingest_rejects WHERE kind = 'otlp' "
                               "AND batch_id IS NULL GROUP BY reason"))
        return got if got.get("otlp_too_large") == 3 else None
    assert wait_for(refusals, timeout=30) == {"otlp_undecodable": 3, "otlp_bad_gzip": 1, "otlp_bad_content_type": 1,
                                              "otlp_too_large": 3}


# -- any attribute values: mapped, checked, read by the collector, never an exception -----------------------

scalar = st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**63), max_value=2**63 - 1),
                   st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=30), st.binary(max_size=10))
value = st.one_of(scalar, st.lists(scalar, max_size=3))
KEYS = ["http.route", "http.request.method", "http.method", "http.response.status_code", "http.status_code",
        "db.system", "db.system.name", "db.query.text", "db.statement", "db.namespace", "db.name",
        "gen_ai.system", "gen_ai.provider.name", "gen_ai.request.model", "gen_ai.response.model",
        "gen_ai.usage.input_tokens", "gen_ai.usage.output_tokens", "gen_ai.usage.prompt_tokens",
        "gen_ai.usage.completion_tokens", "gen_ai.usage.cache_read.input_tokens", "enduser.id"]
span_strategy = st.tuples(st.sampled_from([Span.SPAN_KIND_SERVER, Span.SPAN_KIND_CLIENT, Span.SPAN_KIND_INTERNAL]),
                          st.dictionaries(st.sampled_from(KEYS), value, max_size=8),
                          st.integers(min_value=0, max_value=2**64 - 1), st.integers(min_value=0, max_value=2**64 - 1),
                          st.sampled_from([Status.STATUS_CODE_UNSET, Status.STATUS_CODE_ERROR]))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.dictionaries(st.sampled_from(["service.name", "service.version", "host.name"]), value, max_size=3),
       st.lists(span_strategy, max_size=6))
def test_any_attribute_values_map_to_a_batch_the_collector_reads(resource, spans):
    message = ExportTraceServiceRequest()
    rs = message.resource_spans.add()
    rs.resource.attributes.extend(_kv(k, v) for k, v in resource.items())
    scope = rs.scope_spans.add()
    for kind, attrs, start, end, code in spans:
        span = scope.spans.add(name="s", kind=kind, start_time_unix_nano=start, end_time_unix_nano=end,
                               trace_id=b"\1" * 16, span_id=b"\2" * 8)
        span.status.code = code
        span.attributes.extend(_kv(k, v) for k, v in attrs.items())
    message.ParseFromString(message.SerializeToString())        # as received
    groups, ignored = map_request(message)
    assert ignored + sum(len(m.requests) + len(m.queries) + len(m.llm) for m in groups.values()) <= len(spans)
    for (service, host), mapped in groups.items():
        from collections import Counter
        rejected = Counter()
        _, payload, n = encode(service=service[:512], host=host and host[:512], pid=1, sent_at=time.time(),
                               rejected=rejected, batch_id="otlp-test-0", **mapped.events())
        batch = decode(payload)                  # raises MalformedBatch if the collector could not read it
        assert batch.id == "otlp-test-0" and batch.events <= n
        assert n + sum(rejected.values()) >= len(mapped.requests) + len(mapped.llm)


# -- in process: a spool that cannot be written, and values the checks refuse --------------------------------

def _listener(spool, notes):
    from collectors.http import HttpSettings, Listener
    from collectors.http.otlp import PATH, Receiver

    receiver = Receiver(spool, lambda *note: notes.append(note))
    listener = Listener(HttpSettings("127.0.0.1", 0), spool.parent / "none.duckdb")
    listener.route("POST", PATH, receiver.handle, too_large=receiver.too_large)
    return listener.start()


def test_an_unwritable_spool_is_a_503_the_exporter_retries(tmp_path):
    (tmp_path / "spool").write_text("a file where the spool folder goes")
    notes = []
    listener = _listener(tmp_path / "spool", notes)
    try:
        status, _, answer = post(listener.address[1], body("api", "/x", 2).SerializeToString())
        assert status == 503 and answer.startswith(b"cannot hand the spans to the collector's spool") \
            and answer.count(b"\n") == 1
        assert notes == [("otlp", "otlp_spool_unwritable", 1)]
        (tmp_path / "spool").unlink()                       # fixed: the retry of the same body lands
        assert post(listener.address[1], body("api", "/x", 2).SerializeToString())[0] == 200
        assert len(list((tmp_path / "spool").glob("*.batch"))) == 1
    finally:
        listener.stop()


def test_values_the_checks_refuse_are_counted_and_reported_back(tmp_path):
    notes = []
    listener = _listener(tmp_path / "spool", notes)
    message = body("api", "/x", 3, status=200)
    spans = message.resource_spans[0].scope_spans[0].spans
    spans[0].end_time_unix_nano = spans[0].start_time_unix_nano - 1          # negative duration
    spans[1].attributes.append(_kv("http.response.status_code", "teapot"))   # a status that is no number
    try:
        status, _, answer = post(listener.address[1], message.SerializeToString())
    finally:
        listener.stop()
    response = ExportTraceServiceResponse()
    response.ParseFromString(answer)
    assert status == 200 and response.partial_success.rejected_spans == 2
    [path] = (tmp_path / "spool").glob("*.batch")
    batch = decode(path.read_bytes())
    assert len(batch.requests) == 1 and batch.sdk.rejected == {"requests:bad_duration": 1, "requests:bad_status": 1}


json_value = st.recursive(st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=20)),
                          lambda inner: st.one_of(st.lists(inner, max_size=3),
                                                  st.dictionaries(st.sampled_from(
                                                      ["resourceSpans", "scopeSpans", "spans", "traceId", "spanId",
                                                       "links", "attributes", "kind", "x"]), inner, max_size=3)),
                          max_leaves=12)


@settings(max_examples=300, deadline=None)
@given(st.one_of(st.binary(max_size=200), json_value.map(lambda v: json.dumps(v).encode())),
       st.sampled_from(["application/x-protobuf", "application/json"]), st.booleans())
def test_any_body_is_read_or_refused_with_a_reason(payload, content_type, zipped):
    from collectors.http.otlp import Refused, parse

    try:
        message, as_json = parse(gzip.compress(payload) if zipped else payload, content_type, "gzip" if zipped else "")
    except Refused as exc:
        assert exc.status == 400 and exc.reason == "otlp_undecodable" and "\n" not in str(exc)
        return
    assert as_json == (content_type == "application/json")
    map_request(message)


def test_the_token_guards_v1_traces(tmp_path):
    from collectors.http import HttpSettings, Listener
    from collectors.http.otlp import PATH, Receiver

    receiver = Receiver(tmp_path / "spool")
    listener = Listener(HttpSettings("127.0.0.1", 0, "s3cret"), tmp_path / "none.duckdb")
    listener.route("POST", PATH, receiver.handle, too_large=receiver.too_large)
    listener.start()
    try:
        payload = body("api", "/x", 1).SerializeToString()
        assert post(listener.address[1], payload)[0] == 401
        assert post(listener.address[1], payload, Authorization="Bearer s3cret")[0] == 200
    finally:
        listener.stop()
    assert len(list((tmp_path / "spool").glob("*.batch"))) == 1
