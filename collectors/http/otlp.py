"""`POST /v1/traces`: OTLP/HTTP traces in, as batches of the SDK's own format (collectors.sdk.batch).

    OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:9464  OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf

The body is an ExportTraceServiceRequest, protobuf (Content-Type application/x-protobuf) or OTLP JSON
(application/json: hex trace and span ids, lowerCamelCase), optionally gzip (Content-Encoding: gzip),
decoded with the official message classes (opentelemetry-proto). Each span is mapped to the event the
SDK's record call would have made (current semantic conventions first, then the older names):

    SERVER span            -> a request: service.name of the resource; endpoint http.route, else the span
                              name with the ids of its path templated ("GET /items/42" -> "/items/{id}");
                              method http.request.method | http.method; status
                              http.response.status_code | http.status_code (none: 200), 500 when the span's
                              status is ERROR and the HTTP status says no error; duration end - start; time:
                              the end; request id: the trace id (hex), so LLM calls of the trace join it
    CLIENT span, db.system | db.system.name
                           -> a query, fingerprinted: db.query.text | db.statement, database
                              db.namespace | db.name (a span without query text is ignored)
    a span with gen_ai.*   -> an LLM call: gen_ai.response.model | gen_ai.request.model, provider
                              gen_ai.provider.name | gen_ai.system, tokens gen_ai.usage.input_tokens |
                              prompt_tokens and output_tokens | completion_tokens, cached input
                              gen_ai.usage.cache_read.input_tokens (| cache_read_input_tokens), cache writes
                              gen_ai.usage.cache_creation.input_tokens; request id the trace id; priced at
                              ingest like every SDK call
    any other span         -> ignored, counted (ingest_rejects kind "otlp", reason "otlp_ignored_spans")
    a service.version not seen before for the service -> a deploy marker, as `perfdeck deploy` makes

Text attributes that are not strings are ignored (the fallback applies); numbers are handed over as
they came, so the SDK's checks refuse a token count or status of the wrong type like an app's, counted
by kind and reason in the batch's self-report. The batch then takes the SDK batches' path: a spool file
the collector's daemon ingests, validated again there (time window, lengths). One batch per service and
host in the body; its id comes from a hash of the decoded request, so a replayed body (or the same spans
as JSON) lands once.

A body that is not OTLP (undecodable protobuf or JSON, bad gzip) is a 400, another content type a 415,
a body over MAX_BODY_BYTES (before or after gzip) a 413, each with a one-line reason and counted in
ingest_rejects (kind "otlp", reason "otlp_undecodable", "otlp_bad_gzip", "otlp_bad_content_type",
"otlp_too_large") through the daemon; a spool that cannot be written a 503 (retried by exporters,
"otlp_spool_unwritable"). A good body gets 200 with an ExportTraceServiceResponse in the
request's encoding; its partial_success says how many spans the checks refused."""
from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import threading
import time
import zlib
from collections import Counter, OrderedDict
from collections.abc import Callable
from pathlib import Path

from google.protobuf import json_format
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status

from collectors.http.server import Request, Response
from collectors.integrations.wsgi import template_path
from collectors.sdk import checks
from collectors.sdk.batch import encode
from collectors.sdk.transport.spool import SpoolTransport
from collectors.store import connection

log = logging.getLogger("perfdeck.otlp")

PATH = "/v1/traces"
MAX_BODY_BYTES = 8 * 1024 * 1024      # of the body as sent and once gunzipped: an exporter's batch is ~100 KB
PROTOBUF, JSON = "application/x-protobuf", "application/json"
NOTE_KIND = "otlp"
UNKNOWN_SERVICE = "unknown_service"   # what the OpenTelemetry SDKs call a service without a name
_RECENT = 4096                        # bodies remembered by hash: a replay is answered without remapping

_ROUTE = ("http.route",)
_METHOD = ("http.request.method", "http.method")
_STATUS = ("http.response.status_code", "http.status_code")
_DB_SYSTEM = ("db.system.name", "db.system")
_DB_TEXT = ("db.query.text", "db.statement")
_DB_NAME = ("db.namespace", "db.name")
_MODEL = ("gen_ai.response.model", "gen_ai.request.model")
_PROVIDER = ("gen_ai.provider.name", "gen_ai.system")
_INPUT = ("gen_ai.usage.input_tokens", "gen_ai.usage.prompt_tokens")
_OUTPUT = ("gen_ai.usage.output_tokens", "gen_ai.usage.completion_tokens")
_CACHED = ("gen_ai.usage.cache_read.input_tokens", "gen_ai.usage.cache_read_input_tokens",
           "gen_ai.usage.cached_tokens")
_WRITTEN = ("gen_ai.usage.cache_creation.input_tokens", "gen_ai.usage.cache_creation_input_tokens")
_USER = ("enduser.id", "user.id")


class Refused(Exception):
    """A body refused whole: (HTTP status, counted reason, one-line message)."""

    def __init__(self, status: int, reason: str, message: str):
        super().__init__(message)
        self.status, self.reason = status, reason


# -- reading the body ----------------------------------------------------------------------------------

def _gunzip(body: bytes) -> bytes:
    inflater = zlib.decompressobj(wbits=31)
    try:
        out = inflater.decompress(body, MAX_BODY_BYTES + 1)
        if len(out) > MAX_BODY_BYTES:
            raise Refused(413, "otlp_too_large", f"a body of at most {MAX_BODY_BYTES} bytes once gunzipped")
        if not inflater.eof or inflater.unused_data:
            raise Refused(400, "otlp_bad_gzip", "not one complete gzip stream")
    except zlib.error as exc:
        raise Refused(400, "otlp_bad_gzip", f"not gzip: {exc}") from None
    return out


def _hex_ids(doc) -> None:
    """OTLP JSON writes trace and span ids as hex; the protobuf JSON mapping reads bytes as base64."""
    for rs in doc.get("resourceSpans") or []:
        for ss in (rs or {}).get("scopeSpans") or []:
            for span in (ss or {}).get("spans") or []:
                for holder in [span, *(span.get("links") or [])]:
                    for key in ("traceId", "spanId", "parentSpanId"):
                        value = holder.get(key) if isinstance(holder, dict) else None
                        if isinstance(value, str) and value:
                            holder[key] = base64.b64encode(bytes.fromhex(value)).decode()


def parse(body: bytes, content_type: str, content_encoding: str = "") -> tuple[ExportTraceServiceRequest, bool]:
    """The request, and whether it came as JSON; Refused when it cannot be read."""
    kind = content_type.split(";")[0].strip().lower()
    if kind not in (PROTOBUF, JSON):
        raise Refused(415, "otlp_bad_content_type",
                      f"Content-Type must be {PROTOBUF} or {JSON}, not {kind[:100] or 'none'!r}")
    if len(body) > MAX_BODY_BYTES:
        raise Refused(413, "otlp_too_large", f"a body of at most {MAX_BODY_BYTES} bytes")
    encoding = content_encoding.strip().lower()
    if encoding == "gzip":
        body = _gunzip(body)
    elif encoding not in ("", "identity"):
        raise Refused(415, "otlp_bad_content_type", f"Content-Encoding must be gzip or none, not {encoding[:100]!r}")
    message = ExportTraceServiceRequest()
    try:
        if kind == JSON:
            doc = json.loads(body)
            if not isinstance(doc, dict):
                raise ValueError("not a JSON object")
            _hex_ids(doc)
            json_format.ParseDict(doc, message, ignore_unknown_fields=True)
        else:
            message.ParseFromString(body)
    except (DecodeError, json_format.ParseError, ValueError, TypeError, AttributeError, RecursionError) as exc:
        what = "JSON" if kind == JSON else "protobuf"
        why = str(exc).splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        raise Refused(400, "otlp_undecodable", f"not an OTLP ExportTraceServiceRequest in {what}: {why}") from None
    return message, kind == JSON


# -- mapping -------------------------------------------------------------------------------------------

def _value(any_value):
    which = any_value.WhichOneof("value")
    if which is None:
        return None
    if which == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in any_value.kvlist_value.values}
    return getattr(any_value, which)


def attributes(key_values) -> dict:
    """{key: AnyValue}: a value is made Python (_value) only when a mapping asks for it."""
    return {kv.key: kv.value for kv in key_values}


def _first(attrs: dict, names: tuple, default=None):
    """The value of the first name present (the current convention first), as it came."""
    for name in names:
        if name in attrs:
            return _value(attrs[name])
    return default


def _text(attrs: dict, names: tuple) -> str | None:
    """The first of `names` holding a non-empty string; values of other types are ignored."""
    for name in names:
        value = attrs.get(name)
        if value is not None and value.WhichOneof("value") == "string_value" and value.string_value:
            return value.string_value
    return None


def _seconds(ns: int) -> float:
    return ns / 1e9


class Mapped:
    """The SDK events of one (service, host): the tuples its record calls would have made."""

    def __init__(self):
        self.requests: list = []
        self.queries: list = []
        self.llm: list = []
        self.deploys: list = []
        self.versions: set[str] = set()
        self.first_ns: int | None = None

    def events(self) -> dict:
        return {k: v for k, v in (("requests", self.requests), ("queries", self.queries), ("llm", self.llm),
                                  ("deploys", self.deploys)) if v}


def _status(attrs: dict, span) -> object:
    status = _first(attrs, _STATUS)
    if span.status.code == Status.STATUS_CODE_ERROR and (
            status is None or type(status) is int and status < 500):
        return 500                       # what the store counts as an error
    return 200 if status is None else status


def _endpoint(attrs: dict, name: str) -> str:
    """`http.route`; else the span name, whose raw path (a plain ASGI or WSGI instrumentation names a
    span "GET /items/42") has its id-like segments templated as the SDK's WSGI integration does
    ("/items/{id}"), so each id does not become an endpoint of its own."""
    route = _text(attrs, _ROUTE)
    if route:
        return route
    method, _, path = name.partition(" ")
    if path.startswith("/") and method.isalpha() and method.isupper():
        return template_path(path)
    return template_path(name) if name.startswith("/") else name


def map_request(message: ExportTraceServiceRequest) -> tuple[dict[tuple[str, str | None], Mapped], int]:
    """{(service, host): Mapped}, and the number of spans ignored (no kind perfdeck records)."""
    out: dict[tuple[str, str | None], Mapped] = {}
    ignored = 0
    for rs in message.resource_spans:
        resource = attributes(rs.resource.attributes)
        service = (_text(resource, ("service.name",)) or UNKNOWN_SERVICE)[:checks.MAX_LABEL]
        host = (_text(resource, ("host.name",)) or "")[:checks.MAX_LABEL] or None
        mapped = out.get((service, host))
        if mapped is None:
            mapped = out[service, host] = Mapped()
        version = _text(resource, ("service.version",))
        if version:
            mapped.versions.add(version)
        routes: dict[bytes, str] = {}
        later = []
        for ss in rs.scope_spans:
            for span in ss.spans:
                attrs = attributes(span.attributes)
                end, start = span.end_time_unix_nano, span.start_time_unix_nano
                duration_ms = (end - start) / 1e6
                if version and start and (mapped.first_ns is None or start < mapped.first_ns):
                    mapped.first_ns = start
                if span.kind == Span.SPAN_KIND_SERVER:
                    route = _endpoint(attrs, span.name)
                    routes.setdefault(span.trace_id, route)
                    mapped.requests.append((_seconds(end), route, duration_ms, _status(attrs, span),
                                            _text(attrs, _METHOD) or "", span.trace_id.hex() or None, None))
                elif span.kind == Span.SPAN_KIND_CLIENT and _first(attrs, _DB_SYSTEM) is not None \
                        and _text(attrs, _DB_TEXT):
                    mapped.queries.append((_seconds(end), _text(attrs, _DB_TEXT), duration_ms, _text(attrs, _DB_NAME)))
                elif any(key.startswith("gen_ai.") for key in attrs):
                    later.append((span, attrs, duration_ms))
                else:
                    ignored += 1
        for span, attrs, duration_ms in later:    # after the server spans: the endpoint of its trace
            mapped.llm.append((_seconds(span.end_time_unix_nano), _text(attrs, _PROVIDER), _text(attrs, _MODEL),
                               _first(attrs, _INPUT), _first(attrs, _OUTPUT), _first(attrs, _CACHED, 0),
                               span.trace_id.hex() or None, routes.get(span.trace_id), _text(attrs, _USER), False,
                               duration_ms, _first(attrs, _WRITTEN, 0)))
    return out, ignored


# -- the receiver --------------------------------------------------------------------------------------

class Receiver:
    """Turns OTLP bodies into spool files for the daemon. `note(kind, reason, n)` counts a refusal in
    ingest_rejects through the daemon (collectors.daemon.Collector.note); `db` is read (short read
    connections) to know which versions of a service were marked already.

    Why a spool file and not a write: the daemon is the store's one writer, and the spool is the path
    SDK batches take to it: durable before the 200 goes out (a collector that dies after answering
    loses nothing), validated and deduplicated by batch id in the daemon's transaction. A spool that
    cannot be written answers 503, which exporters retry.

    The batches carry the SDK's self-report, cumulative per (service, host) as an SDK process's is, under
    this collector's pid: the receiver is the process that checked the events and counted what it left out."""

    def __init__(self, spool_dir: str | os.PathLike, note: Callable[[str, str, int], None] | None = None,
                 db: str | os.PathLike | None = None):
        self.spool = SpoolTransport(spool_dir)
        self.note, self.db = note, None if db is None else Path(db)
        self.pid = os.getpid()
        self._lock = threading.Lock()
        self._rejected: dict[tuple[str, str | None], Counter] = {}   # cumulative, like an SDK process's
        self._versions: set[tuple[str, str]] = set()                 # (service, version) marked or found
        self._recent: OrderedDict[str, None] = OrderedDict()

    def _count(self, reason: str, n: int = 1) -> None:
        if self.note is not None and n:
            self.note(NOTE_KIND, reason, n)

    def too_large(self) -> None:
        """A body the listener refused unread for its size (over collectors.http.server.MAX_BODY_BYTES)."""
        self._count("otlp_too_large")

    def handle(self, request: Request) -> Response:
        try:
            message, as_json = parse(request.body, request.headers.get("content-type", ""),
                                     request.headers.get("content-encoding", ""))
            rejected = self.accept(message)
        except Refused as exc:
            self._count(exc.reason)
            log.warning("POST %s refused: %s", PATH, exc)
            return Response.text(exc.status, str(exc))
        response = ExportTraceServiceResponse()
        if rejected:
            response.partial_success.rejected_spans = rejected
            response.partial_success.error_message = f"{rejected} spans had values perfdeck does not accept"
        if as_json:
            return Response(200, json_format.MessageToJson(response, indent=None), JSON)
        return Response(200, response.SerializeToString(), PROTOBUF)

    def accept(self, message: ExportTraceServiceRequest) -> int:
        """Spool the batches of one decoded request; the number of events the checks refused."""
        digest = hashlib.sha256(message.SerializeToString(deterministic=True)).hexdigest()[:40]
        with self._lock:
            if digest in self._recent:
                return 0                 # a replay: its batches are spooled (or ingested) already
        groups, ignored = map_request(message)
        self._count("otlp_ignored_spans", ignored)
        refused = 0
        with self._lock:     # one body at a time: the cumulative counters and the versions stay consistent
            if digest in self._recent:
                return 0
            now = time.time()
            ordered = sorted(groups.items(), key=lambda kv: (kv[0][0], kv[0][1] or ""))
            for i, ((service, host), mapped) in enumerate(ordered):
                for version in sorted(mapped.versions):
                    if self._new_version(service, version):
                        first = checks.epoch(None if mapped.first_ns is None else _seconds(mapped.first_ns))
                        mapped.deploys.append((first or now, version))
                events = mapped.events()
                if not events:
                    continue
                counter = self._rejected.setdefault((service, host), Counter())
                before = sum(counter.values())
                _, payload, n = encode(service=service, host=host, pid=self.pid, sent_at=now, rejected=counter,
                                       batch_id=f"otlp-{digest}-{i}", **events)
                refused += sum(counter.values()) - before
                try:
                    self.spool.send(f"otlp-{digest}-{i}", payload)
                except OSError as exc:    # a full disk: 503 is one the exporters retry (the same ids again)
                    raise Refused(503, "otlp_spool_unwritable",
                                  f"cannot hand the spans to the collector's spool: {exc.strerror or exc}") from None
                self._versions.update((service, v) for v in mapped.versions)
            self._recent[digest] = None
            while len(self._recent) > _RECENT:
                self._recent.popitem(last=False)
        return refused

    def _new_version(self, service: str, version: str) -> bool:
        """Whether (service, version) has no deploy marker yet: remembered here, else asked of the store."""
        if (service, version) in self._versions:
            return False
        if self.db is not None:
            try:
                with connection.read(self.db, timeout=5.0) as con:
                    found = con.execute("SELECT 1 FROM deploys WHERE service = ? AND version = ? LIMIT 1",
                                        [service, version]).fetchone()
            except Exception as exc:       # the store busy or gone: better a marker twice than none
                log.warning("could not ask the store about %s %s: %s", service, version, exc)
                found = None
            if found:
                self._versions.add((service, version))
                return False
        return True

