"""Time every request a WSGI app (Flask, Django, anything WSGI) serves and hand it to `sdk.record_request`.

    from collectors.integrations.wsgi import instrument_flask, PerfdeckWSGIMiddleware
    instrument_flask(app)                          # Flask: endpoints are the url rules, "/items/<int:item_id>"
    application = PerfdeckWSGIMiddleware(application)   # any WSGI app: endpoints are templated paths

Recorded per request, like collectors.integrations.asgi:
  endpoint    `environ["perfdeck.endpoint"]` when the framework put one there (instrument_flask does, from
              `request.url_rule.rule`, or "(unmatched)" when no rule matched). Otherwise PATH_INFO with every
              segment that looks like an id (all digits, a UUID, 16+ hex chars) or is not a plain word
              (letters, digits, "._~-", at most 64) replaced by "{id}":
              "/orders/123/lines/9f1c...e2" -> "/orders/{id}/lines/{id}"; and "(unmatched)" when the app
              answered 404, i.e. its router matched nothing: a raw path is the client's text, not the app's.
  status      from start_response; an exception escaping the app -> 500, re-raised unchanged.
  duration    from the call into the app until the response body has been iterated to the end or closed,
              whichever comes first; that is when the request is recorded. PEP 3333 servers always
              close the body; a response nobody closes or reads (werkzeug's test client outside a
              `with`) is never recorded.
  request_id  the `X-Request-Id` header when sane, else a uuid4 hex; echoed as an `X-Request-Id`
              response header, stored in `environ["perfdeck.request_id"]`, and returned by
              `collectors.integrations.asgi.current_request_id()` while the app runs.

Nothing in here ever raises into the app: perfdeck's own failures are logged at debug and skipped."""
from __future__ import annotations

import logging
import re
from time import perf_counter

from collectors import sdk
from collectors.integrations.asgi import UNMATCHED, RequestContext, _current, new_request_id

log = logging.getLogger("perfdeck.integrations.wsgi")

ENDPOINT_KEY = "perfdeck.endpoint"
REQUEST_ID_KEY = "perfdeck.request_id"
_ID_SEGMENT = re.compile(
    r"\d+|[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}|[0-9a-fA-F]{16,}")
_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9._~\-]{1,64}")


def template_path(path: str) -> str:
    """PATH_INFO with id-like and not-plain segments replaced by "{id}"."""
    return "/".join("{id}" if seg and (_ID_SEGMENT.fullmatch(seg) or not _PLAIN_SEGMENT.fullmatch(seg)) else seg
                    for seg in (path or "/").split("/")) or "/"


def _endpoint(environ, status: int | None = None) -> str:
    ep = environ.get(ENDPOINT_KEY)
    if isinstance(ep, str) and ep:
        return ep
    if status == 404:       # no framework told us the route, and the app's router matched nothing
        return UNMATCHED
    return template_path(environ.get("SCRIPT_NAME", "") + environ.get("PATH_INFO", ""))


class PerfdeckWSGIMiddleware:
    """WSGI middleware recording one request per call. See the module docstring."""

    def __init__(self, app):
        self.app = app

    def __call__(self, environ, start_response):
        try:
            rid = new_request_id(environ.get("HTTP_X_REQUEST_ID"))
            environ[REQUEST_ID_KEY] = rid
            token = _current.set(RequestContext(rid, lambda: _endpoint_or_none(environ)))
        except Exception:
            log.debug("perfdeck: could not start timing a request", exc_info=True)
            return self.app(environ, start_response)

        status = [500]

        def start_response_wrapper(status_line, headers, exc_info=None):
            try:
                status[0] = int(str(status_line).split(" ", 1)[0])
                if not any(k.lower() == "x-request-id" for k, _ in headers):
                    headers = list(headers) + [("X-Request-Id", rid)]
            except Exception:
                log.debug("perfdeck: could not read the response status", exc_info=True)
            if exc_info is None:
                return start_response(status_line, headers)
            return start_response(status_line, headers, exc_info)

        timing = _Timing(environ, status, rid)
        try:
            result = self.app(environ, start_response_wrapper)
        except Exception:
            timing.finish(500)
            raise
        finally:
            try:
                _current.reset(token)
            except Exception:
                pass
        try:
            return _TimedBody(result, timing)
        except Exception:
            timing.finish()
            return result


def _endpoint_or_none(environ):
    ep = environ.get(ENDPOINT_KEY)
    return ep if isinstance(ep, str) and ep != UNMATCHED else None


class _Timing:
    __slots__ = ("done", "environ", "rid", "status", "t0")

    def __init__(self, environ, status, rid):
        self.environ, self.status, self.rid = environ, status, rid
        self.t0, self.done = perf_counter(), False

    def finish(self, status: int | None = None) -> None:
        if self.done:
            return
        self.done = True
        try:
            elapsed = max(0.0, (perf_counter() - self.t0) * 1000.0)
            status = status or self.status[0]
            sdk.record_request(_endpoint(self.environ, status), elapsed, status,
                               str(self.environ.get("REQUEST_METHOD", "GET")), request_id=self.rid)
        except Exception:
            log.debug("perfdeck: could not record a request", exc_info=True)


class _TimedBody:
    """The app's response iterable, recording the request once it is exhausted, fails or is closed."""

    def __init__(self, result, timing: _Timing):
        self._result, self._timing = result, timing
        self._it = None

    def __iter__(self):
        self._it = iter(self._result)
        return self

    def __next__(self):
        if self._it is None:
            self._it = iter(self._result)
        try:
            return next(self._it)
        except StopIteration:
            self._timing.finish()
            raise
        except Exception:
            self._timing.finish(500)
            raise

    def close(self):
        try:
            close = getattr(self._result, "close", None)
            if close is not None:
                close()
        finally:
            self._timing.finish()


def instrument_flask(app) -> bool:
    """Record every request `app` serves under its url rule ("/items/<int:item_id>"; "(unmatched)" when
    no rule matched). Wraps `app.wsgi_app` in PerfdeckWSGIMiddleware and listens to Flask's
    `request_started` signal, which fires after routing and before any before_request hook.
    Returns False when `app` was already instrumented (or could not be)."""
    try:
        from flask import request, request_started

        if getattr(app, "_perfdeck_instrumented", False):
            return False

        def on_request_started(sender, **extra):
            try:
                rule = request.url_rule
                request.environ[ENDPOINT_KEY] = rule.rule if rule is not None else UNMATCHED
            except Exception:
                log.debug("perfdeck: could not read the url rule", exc_info=True)

        request_started.connect(on_request_started, app, weak=False)
        app.wsgi_app = PerfdeckWSGIMiddleware(app.wsgi_app)
        app._perfdeck_instrumented = on_request_started
        return True
    except Exception:
        log.debug("perfdeck: could not instrument %r", app, exc_info=True)
        return False
