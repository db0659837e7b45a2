"""Time every HTTP request an ASGI app (Starlette, FastAPI) serves and hand it to `sdk.record_request`.

    from collectors.integrations.asgi import PerfdeckMiddleware
    app = PerfdeckMiddleware(app)              # or: app.add_middleware(PerfdeckMiddleware)

What is recorded, per HTTP request (lifespan and websocket scopes pass straight through):
  endpoint    the route TEMPLATE, e.g. "/items/{item_id}", read from `scope["route"]` which Starlette's
              router sets on the shared scope; a route under a Mount is prefixed with the mount's
              matched path. No route matched (a 404) -> "(unmatched)". Not a Starlette app and no
              route -> "(unmatched)" too, so raw paths never blow up the endpoint cardinality.
  method      scope["method"]
  status      from the `http.response.start` message; an exception escaping the app -> 500, and the
              exception is re-raised unchanged. Cancellation (the client went away) is not a server
              error: the status sent so far, or 499 when no response had started.
  duration    from the call into the app until it returns (the whole body has been sent by then).
  request_id  the incoming `x-request-id` header when it looks sane (1-128 chars of [A-Za-z0-9._:-]),
              else a fresh uuid4 hex. It is echoed on the response as `x-request-id`, stored in
              `scope["state"]["request_id"]` (`request.state.request_id` in Starlette), and available
              to code running inside the request through `current_request_id()`: the LLM integration
              uses it to link LLM calls to the request that made them.

The request context (`current_request_id()`, `current_endpoint()`) lives here because both web
integrations (this one and collectors.integrations.wsgi) set it, and the LLM integration reads it.
Nothing in here ever raises into the app: perfdeck's own failures are logged at debug and skipped."""
from __future__ import annotations

import contextvars
import logging
import re
import uuid
from time import perf_counter

from collectors import sdk

log = logging.getLogger("perfdeck.integrations.asgi")

UNMATCHED = "(unmatched)"
CLIENT_CLOSED = 499         # cancelled before a response started (nginx's "client closed request")
HEADER = "x-request-id"
_HEADER_B = HEADER.encode()
_SANE_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}")


class RequestContext:
    """What code running inside a request can ask about it. `endpoint` is resolved lazily: the
    router picks the route only after the middleware has started the request."""

    __slots__ = ("_endpoint", "request_id")

    def __init__(self, request_id: str, endpoint=None):
        self.request_id = request_id
        self._endpoint = endpoint          # a str, a zero-argument callable, or None

    @property
    def endpoint(self) -> str | None:
        ep = self._endpoint
        if callable(ep):
            try:
                return ep()
            except Exception:
                return None
        return ep


_current: contextvars.ContextVar[RequestContext | None] = contextvars.ContextVar("perfdeck_request", default=None)


def current_request_id() -> str | None:
    """The id of the request being served in this context (thread / task), or None outside one."""
    ctx = _current.get()
    return ctx.request_id if ctx is not None else None


def current_endpoint() -> str | None:
    """The route template of the request being served, when already known, else None."""
    ctx = _current.get()
    return ctx.endpoint if ctx is not None else None


def new_request_id(incoming: str | None = None) -> str:
    """`incoming` when it is a sane request id, else a fresh uuid4 hex."""
    if incoming and _SANE_ID.fullmatch(incoming):
        return incoming
    return uuid.uuid4().hex


def route_template(scope: dict, root_path: str = "") -> str:
    """The route template Starlette matched for `scope`, or "(unmatched)". `root_path` is the
    scope's root_path before the app ran: whatever the router appended to it is a mount prefix."""
    route = scope.get("route")
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return UNMATCHED
    prefix = scope.get("root_path", "") or ""
    prefix = _templated(prefix[len(root_path):] if prefix.startswith(root_path) else "", scope)
    if hasattr(route, "app") and not hasattr(route, "endpoint"):
        # A Mount. Under a router that matched nothing the Mount is still the last route set: a 404.
        if getattr(route, "routes", None):
            return UNMATCHED
        # Its app is not a router (StaticFiles, a plain ASGI app): the mount itself is the endpoint,
        # and its matched prefix is already in root_path.
        return (prefix or path).rstrip("/") + "/{path}"
    return (prefix.rstrip("/") + path) or "/"


def _templated(prefix: str, scope: dict) -> str:
    """A mount prefix as matched ("/users/42") with its parameters' values put back as "{name}": the
    router leaves only the raw path in root_path, and a raw path is the client's text."""
    params = scope.get("path_params")
    if not prefix or not isinstance(params, dict) or not params:
        return prefix
    names = {str(v): k for k, v in params.items() if str(v)}
    return "/".join(f"{{{names[seg]}}}" if seg in names else seg for seg in prefix.split("/"))


class PerfdeckMiddleware:
    """Pure ASGI middleware recording one request per HTTP scope. See the module docstring."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope.get("type") != "http":
            await self.app(scope, receive, send)
            return
        try:
            rid = new_request_id(_header(scope, _HEADER_B))
            root_path = scope.get("root_path", "") or ""
            state = scope.get("state")
            if state is None:
                state = scope["state"] = {}
            if isinstance(state, dict):
                state["request_id"] = rid
            token = _current.set(RequestContext(rid, lambda: _endpoint_or_none(scope, root_path)))
        except Exception:
            log.debug("perfdeck: could not start timing a request", exc_info=True)
            await self.app(scope, receive, send)
            return

        status, started = [500], [False]

        async def send_wrapper(message):
            try:
                if message.get("type") == "http.response.start":
                    status[0], started[0] = int(message.get("status", 500)), True
                    headers = list(message.get("headers") or [])
                    if not any(k.lower() == _HEADER_B for k, _ in headers):
                        headers.append((_HEADER_B, rid.encode("latin-1")))
                        message = {**message, "headers": headers}
            except Exception:
                log.debug("perfdeck: could not read the response start", exc_info=True)
            await send(message)

        t0 = perf_counter()
        status_override = None
        try:
            await self.app(scope, receive, send_wrapper)
        except Exception:
            status_override = 500
            raise
        except BaseException:          # cancelled, e.g. the client went away: not a server error
            status_override = status[0] if started[0] else CLIENT_CLOSED
            raise
        finally:
            try:
                elapsed = max(0.0, (perf_counter() - t0) * 1000.0)
                sdk.record_request(route_template(scope, root_path), elapsed, status_override or status[0],
                                   str(scope.get("method", "GET")), request_id=rid)
            except Exception:
                log.debug("perfdeck: could not record a request", exc_info=True)
            try:
                _current.reset(token)
            except Exception:
                pass


def _endpoint_or_none(scope, root_path):
    ep = route_template(scope, root_path)
    return None if ep == UNMATCHED else ep


def _header(scope, name: bytes) -> str | None:
    for k, v in scope.get("headers") or ():
        if k.lower() == name:
            try:
                return v.decode("latin-1")
            except Exception:
                return None
    return None
