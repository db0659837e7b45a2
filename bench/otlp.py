"""OTLP/HTTP trace ingest throughput beside the SDK's batch ingest of the same requests, in one run.

    .venv/bin/python bench/otlp.py [SPANS] [PER_BODY]      defaults: 50,000 server spans, 512 per body

Untimed set-up: SPANS SERVER spans (8 routes x 4 services, the attributes an ASGI instrumentation puts
on a span: route, method, status, scheme, target, user agent, peer address...) are built as
ExportTraceServiceRequest bodies of PER_BODY spans (the OpenTelemetry SDK's default export batch is 512),
serialized to protobuf. The reference is the same requests as the SDK's flusher would encode them
(collectors.sdk.batch.encode, PER_BODY events a batch), written to a spool directory.

Timed, each from a fresh store (migrated, untimed), median of REPEATS:

    otlp receive   POST every body to a real listener (collectors.http, in this process) serving
                   /v1/traces: HTTP, protobuf decode, mapping, SDK encode, spool file
    otlp ingest    Collector.ingest_pending() of those spool files: the daemon's decode, validation and
                   transaction, rollups included
    otlp total     the two
    sdk ingest     Collector.ingest_pending() of the SDK's batches of the same requests (the reference:
                   what the collector spends on requests that arrive through perfdeck's own SDK)

Printed: median seconds and spans (requests) per second. Nothing is asserted."""
from __future__ import annotations

import http.client
import random
import shutil
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from collectors.daemon import Collector
from collectors.http import HttpSettings, Listener
from collectors.http.otlp import PATH, Receiver
from collectors.sdk.batch import encode
from collectors.sdk.transport.spool import SpoolTransport
from collectors.store import connection, migrate

REPEATS = 3
SERVICES = [f"svc-{i}" for i in range(4)]
ROUTES = ["/", "/items/{item_id}", "/users/{uid}", "/search", "/cart", "/checkout", "/login", "/health"]


def _kv(key: str, value) -> KeyValue:
    v = AnyValue()
    if isinstance(value, int):
        v.int_value = value
    else:
        v.string_value = value
    return KeyValue(key=key, value=v)


def build(spans: int, per_body: int, now_ns: int) -> tuple[list[bytes], list[tuple[str, list]]]:
    """(protobuf bodies, [(service, SDK request events)] batches) of the same requests."""
    rng = random.Random(7)
    bodies, batches = [], []
    done = 0
    while done < spans:
        n = min(per_body, spans - done)
        service = SERVICES[len(bodies) % len(SERVICES)]
        message = ExportTraceServiceRequest()
        rs = message.resource_spans.add()
        rs.resource.attributes.extend([_kv("service.name", service), _kv("host.name", "web-1"),
                                       _kv("telemetry.sdk.language", "python"), _kv("service.version", "1.0")])
        scope = rs.scope_spans.add()
        scope.scope.name = "opentelemetry.instrumentation.asgi"
        events = []
        for i in range(n):
            route = ROUTES[rng.randrange(len(ROUTES))]
            status = 500 if rng.random() < 0.02 else 200
            duration_ns = int(rng.lognormvariate(3, 0.8) * 1e6)
            end = now_ns - rng.randrange(600) * 10**9
            trace_id = rng.getrandbits(128).to_bytes(16, "big")
            span = scope.spans.add(trace_id=trace_id, span_id=rng.getrandbits(64).to_bytes(8, "big"),
                                   name=f"GET {route}", kind=Span.SPAN_KIND_SERVER,
                                   start_time_unix_nano=end - duration_ns, end_time_unix_nano=end)
            span.attributes.extend([_kv("http.route", route), _kv("http.request.method", "GET"),
                                    _kv("http.response.status_code", status), _kv("url.scheme", "http"),
                                    _kv("url.path", route.replace("{", "").replace("}", "")),
                                    _kv("server.address", "127.0.0.1"), _kv("network.protocol.version", "1.1"),
                                    _kv("user_agent.original", "python-httpx/0.27"),
                                    _kv("client.address", "10.0.0.7")])
            events.append((end / 1e9, route, duration_ns / 1e6, status, "GET", trace_id.hex(), None))
        bodies.append(message.SerializeToString())
        batches.append((service, events))
        done += n
    return bodies, batches


def fresh(folder: Path) -> Path:
    db = folder / "perfdeck.duckdb"
    with connection.write(db) as con:
        migrate(con)
    return db


def run_otlp(bodies: list[bytes], folder: Path) -> tuple[float, float]:
    db, spool = fresh(folder), folder / "spool"
    collector = Collector(db, spool_dir=spool)
    listener = Listener(HttpSettings("127.0.0.1", 0), db)
    listener.route("POST", PATH, Receiver(spool, collector.note, db).handle)
    listener.start()
    try:
        conn = http.client.HTTPConnection("127.0.0.1", listener.address[1], timeout=60)
        t0 = time.perf_counter()
        for body in bodies:
            conn.request("POST", PATH, body, {"Content-Type": "application/x-protobuf"})
            response = conn.getresponse()
            response.read()
            assert response.status == 200, response.status
        receive = time.perf_counter() - t0
        conn.close()
    finally:
        listener.stop()
    t0 = time.perf_counter()
    collector.ingest_pending()
    ingest = time.perf_counter() - t0
    return receive, ingest


def run_sdk(batches: list[tuple[str, list]], folder: Path) -> float:
    db, spool = fresh(folder), folder / "spool"
    transport = SpoolTransport(spool)
    for service, events in batches:     # the app's flusher's work, untimed
        batch_id, payload, _ = encode(service=service, host="web-1", pid=1, sent_at=time.time(), rejected=Counter(),
                                      requests=events)
        transport.send(batch_id, payload)
    collector = Collector(db, spool_dir=spool)
    t0 = time.perf_counter()
    collector.ingest_pending()
    return time.perf_counter() - t0


def count(folder: Path) -> int:
    with connection.read(folder / "perfdeck.duckdb") as con:
        return con.execute("SELECT count(*) FROM request_events").fetchone()[0]


def main() -> None:
    spans = int(sys.argv[1]) if len(sys.argv) > 1 else 50_000
    per_body = int(sys.argv[2]) if len(sys.argv) > 2 else 512
    bodies, batches = build(spans, per_body, time.time_ns())
    print(f"{spans:,} server spans in {len(bodies)} bodies of <= {per_body} "
          f"({sum(map(len, bodies)) / len(bodies) / 1024:.0f} KiB each), median of {REPEATS}")
    receive, ingest, reference = [], [], []
    for _ in range(REPEATS):
        work = Path(tempfile.mkdtemp(prefix="perfdeck-otlp-"))
        try:
            r, i = run_otlp(bodies, work / "otlp")
            assert count(work / "otlp") == spans
            s = run_sdk(batches, work / "sdk")
            assert count(work / "sdk") == spans
        finally:
            shutil.rmtree(work, ignore_errors=True)
        receive.append(r)
        ingest.append(i)
        reference.append(s)
    total = [r + i for r, i in zip(receive, ingest)]
    rows = [("otlp receive (HTTP, decode, map, spool)", receive), ("otlp ingest (daemon)", ingest),
            ("otlp total", total), ("sdk ingest (reference)", reference)]
    for name, times in rows:
        median = statistics.median(times)
        print(f"  {name:42s} {median:7.3f} s  {spans / median:12,.0f} spans/s")
    print(f"  otlp total / sdk ingest: {statistics.median(total) / statistics.median(reference):.1f}x the time")


if __name__ == "__main__":
    main()
