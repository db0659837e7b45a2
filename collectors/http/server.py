"""The listener itself: settings ([http] in perfdeck.toml, $PERFDECK_HTTP_LISTEN / $PERFDECK_HTTP_TOKEN, the
--http flag), the bearer-token rule, and a route table served by the standard library's
ThreadingHTTPServer on a daemon thread of the collector process.

Secure by default: loopback unless told otherwise; a listener on any other address refuses to start
without a token, and with a token set (on any address) a request without `Authorization: Bearer <token>`
gets 401. A handler that raises answers 500 with a one-line reason (secrets redacted) and is logged;
the listener serves on. Requests run on threads of their own and read the store through
collectors.store.read (short, read-only, closed at the end), so they never hold ingest up for longer
than one read."""
from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from socket import AF_INET6
from urllib.parse import urlsplit

from collectors.redact import redact
from collectors.store import connection

log = logging.getLogger("perfdeck.http")

DEFAULT_PORT = 9464            # the port Prometheus's exporter list gives the OpenTelemetry exporters
READ_TIMEOUT_S = 5.0           # how long a request waits for the store before it answers 500
REQUEST_TIMEOUT_S = 10.0       # a client that sends nothing for this long is dropped
MAX_BODY_BYTES = 16 * 1024 * 1024
_ENV = {"listen": "PERFDECK_HTTP_LISTEN", "token": "PERFDECK_HTTP_TOKEN"}


@dataclass(frozen=True)
class HttpSettings:
    host: str
    port: int
    token: str | None = None

    @property
    def loopback(self) -> bool:
        return is_loopback(self.host)

    def __repr__(self) -> str:          # never the token
        return f"HttpSettings({self.host!r}, {self.port}, token={'set' if self.token else None})"


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False          # a host name (or "" for every interface): it cannot be vouched for


def parse_listen(text: str) -> tuple[str, int]:
    """'127.0.0.1:9464', '[::1]:9464', ':9464' (every interface) or a bare port (loopback) -> (host, port)."""
    text = str(text).strip()
    if text.isdigit():
        host, port = "127.0.0.1", text
    else:
        host, sep, port = text.rpartition(":")
        if not sep:
            raise ValueError(f"[http] listen must be host:port such as 127.0.0.1:{DEFAULT_PORT}, got {text!r}")
        host = host.removeprefix("[").removesuffix("]")
    if not port.isdigit() or not 0 <= int(port) <= 65535:
        raise ValueError(f"[http] listen: {port!r} is not a port number (in {text!r})")
    return host or "0.0.0.0", int(port)


def http_settings(config: dict, listen: str | None = None) -> HttpSettings | None:
    """The listener of a loaded perfdeck.toml: `listen` (the --http flag) first, then $PERFDECK_HTTP_LISTEN,
    then [http] listen; None when none says to listen. The token: $PERFDECK_HTTP_TOKEN, else [http] token.
    A non-loopback address without a token raises ValueError (one line, no token quoted)."""
    from collectors.config import section

    table = section(config, "http", _ENV)
    where = listen or table.get("listen")
    if not where:
        return None
    host, port = parse_listen(where)
    token = str(table.get("token") or "").strip() or None
    settings = HttpSettings(host, port, token)
    if not settings.loopback and not token:
        raise ValueError(f"--http {host}:{port} is not a loopback address: set a bearer token ([http] token in "
                         f"perfdeck.toml or $PERFDECK_HTTP_TOKEN), or listen on 127.0.0.1")
    return settings


@dataclass
class Request:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes = b""


@dataclass
class Response:
    status: int
    body: bytes | str = b""
    content_type: str = "text/plain; charset=utf-8"
    headers: dict[str, str] = field(default_factory=dict)

    @classmethod
    def text(cls, status: int, text: str, **headers: str) -> Response:
        return cls(status, text if text.endswith("\n") else text + "\n", headers=headers)

    @classmethod
    def json(cls, status: int, doc) -> Response:
        return cls(status, json.dumps(doc, indent=1, ensure_ascii=False) + "\n", "application/json; charset=utf-8")


Handler = Callable[[Request], Response]


class Listener:
    """GET /healthz and GET /metrics for the store at `db`. `health(con, now)` is what `perfdeck health`
    assesses (collectors.cli.health.assessment: it reads the dashboard's queries, which collectors/ may
    not import, so the command line hands it in) over `window_s`; without it both routes say 500."""

    def __init__(self, settings: HttpSettings, db: str | Path | None = None, *,
                 health: Callable | None = None, window_s: float = 300.0):
        self.settings, self.db = settings, connection.db_path(db)
        self.health, self.window_s = health, window_s
        self.routes: dict[tuple[str, str], Handler] = {}
        self._too_large: dict[tuple[str, str], Callable[[], None]] = {}   # told of a 413 before its handler
        self.route("GET", "/healthz", self.healthz)
        self.route("GET", "/metrics", self.metrics)
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    def route(self, method: str, path: str, handler: Handler, *, too_large: Callable[[], None] | None = None) -> None:
        """Serve `method path` with handler(Request) -> Response (behind the token, and the 500 rule).
        `too_large()` is called when a body over MAX_BODY_BYTES is refused unread (413), so it can be counted."""
        self.routes[(method.upper(), path)] = handler
        if too_large is not None:
            self._too_large[(method.upper(), path)] = too_large

    def refuse_too_large(self, method: str, path: str, headers: dict[str, str]) -> Response:
        """413 for a body not read; the route's too_large() hears of it (once authorised)."""
        hook = self._too_large.get((method, path))
        if hook is not None and self.authorised(headers):
            try:
                hook()
            except Exception:
                log.exception("%s %s: counting a refused body failed", method, path)
        return Response.text(413, f"a body of at most {MAX_BODY_BYTES} bytes")

    # -- the routes --------------------------------------------------------------------------------
    def _assess(self, con, now: datetime):
        if self.health is None:
            raise RuntimeError("this collector was started without a health assessment")
        return self.health(con, now)

    def healthz(self, _request: Request) -> Response:
        """The document of `perfdeck health --json`; 200 when its gate passes, else 503."""
        from collectors.health.assess import document, passes

        now = connection.utcnow().replace(microsecond=0)
        with connection.read(self.db, timeout=READ_TIMEOUT_S) as con:
            doc = document(self._assess(con, now), window_s=self.window_s, at=now)
        return Response.json(200 if passes(doc["status"]) else 503, doc)

    def metrics(self, _request: Request) -> Response:
        """Prometheus text format 0.0.4 of the last few minutes (collectors.http.metrics)."""
        from collectors.http.metrics import CONTENT_TYPE, render

        now = connection.utcnow()
        with connection.read(self.db, timeout=READ_TIMEOUT_S) as con:
            checks = self._assess(con, now.replace(microsecond=0))
            text = render(con, now=now, checks=checks)
        return Response(200, text, CONTENT_TYPE)

    # -- serving -----------------------------------------------------------------------------------
    def authorised(self, headers: dict[str, str]) -> bool:
        if not self.settings.token:
            return True
        scheme, _, given = headers.get("authorization", "").partition(" ")
        return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), self.settings.token.encode())

    def answer(self, request: Request) -> Response:
        """The response to one request: 401, 404, 405, the handler's, or 500 with a one-line reason."""
        if not self.authorised(request.headers):
            return Response.text(401, "a bearer token is required", **{"WWW-Authenticate": 'Bearer realm="perfdeck"'})
        handler = self.routes.get((request.method, request.path))
        if handler is None:
            allowed = sorted(m for m, p in self.routes if p == request.path)
            if allowed:
                return Response.text(405, f"{request.method} not allowed", Allow=", ".join(allowed))
            return Response.text(404, f"no such path: {request.path}")
        try:
            return handler(request)
        except Exception as exc:
            reason = redact(f"{type(exc).__name__}: {exc}").splitlines()[0][:500] if str(exc) else type(exc).__name__
            log.error("%s %s failed: %s", request.method, request.path, reason)
            return Response.text(500, reason)

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) bound: the port chosen when the settings asked for port 0."""
        if self._server is None:
            return self.settings.host, self.settings.port
        return self.settings.host, self._server.server_address[1]

    def start(self) -> Listener:
        """Bind (an OSError says why it cannot) and serve on a daemon thread."""
        listener = self

        class _Handler(_RequestHandler):
            owner = listener

        server_class = _Server6 if ":" in self.settings.host else _Server
        self._server = server_class((self.settings.host, self.settings.port), _Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.2},
                                        name="perfdeck-http", daemon=True)
        self._thread.start()
        host, port = self.address
        served = ", ".join(f"{method} {path}" for method, path in self.routes)
        log.info("serving %s on http://%s:%d%s", served, f"[{host}]" if ":" in host else host, port,
                 " (bearer token required)" if self.settings.token else "")
        return self

    def stop(self) -> None:
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._thread.join(timeout=5)
            self._server = self._thread = None


class _Server(ThreadingHTTPServer):
    daemon_threads = True       # a slow client never holds the collector's exit


class _Server6(_Server):
    address_family = AF_INET6


class _RequestHandler(BaseHTTPRequestHandler):
    owner: Listener
    timeout = REQUEST_TIMEOUT_S
    server_version = "perfdeck"
    sys_version = ""

    def _serve(self) -> None:
        try:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            headers = {k.lower(): v for k, v in self.headers.items()}
            if length > MAX_BODY_BYTES:
                response = self.owner.refuse_too_large(self.command, parts.path, headers)
            else:
                body = self.rfile.read(length) if length > 0 else b""
                response = self.owner.answer(Request(self.command, parts.path, parts.query, headers, body))
        except Exception as exc:        # a malformed request line or header: still one line, never a traceback
            log.error("%s %s failed: %s", self.command, self.path, f"{type(exc).__name__}: {exc}".splitlines()[0])
            response = Response.text(400, "bad request")
        body = response.body.encode() if isinstance(response.body, str) else response.body
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in response.headers.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    do_GET = do_POST = do_PUT = do_DELETE = _serve

    def log_message(self, format, *args) -> None:   # noqa: A002 - the standard library's signature
        log.debug("%s %s", self.address_string(), format % args)
