"""PerfdeckMiddleware on a real Starlette app driven by Starlette's TestClient; the SDK spools to
tmp_path and the test reads the batch files the daemon would ingest."""
from __future__ import annotations

import contextlib

import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx")

from helpers import spooled
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.responses import JSONResponse, PlainTextResponse
from starlette.routing import Mount, Route, WebSocketRoute
from starlette.testclient import TestClient

from collectors import sdk
from collectors.integrations.asgi import PerfdeckMiddleware, current_endpoint, current_request_id


class Boom(RuntimeError):
    pass


seen: dict = {}


async def item(request):
    seen["rid"] = current_request_id()
    seen["state_rid"] = request.state.request_id
    seen["endpoint"] = current_endpoint()
    return JSONResponse({"id": next(iter(request.path_params.values()))})


def sync_item(request):                 # runs in the thread pool: the context must follow it
    seen["sync_rid"] = current_request_id()
    return PlainTextResponse("ok", status_code=201)


async def boom(request):
    raise Boom("handler failed")


async def ws(websocket):
    await websocket.accept()
    await websocket.send_text("hi")
    await websocket.close()


def make_app(wrap: str):
    routes = [
        Route("/items/{item_id}", item),
        Route("/sync/{n:int}", sync_item, methods=["POST"]),
        Route("/boom", boom),
        Mount("/api/v1", routes=[Route("/users/{uid}", item)]),
        WebSocketRoute("/ws", ws),
    ]
    if wrap == "add_middleware":
        return Starlette(routes=routes, middleware=[Middleware(PerfdeckMiddleware)])
    return PerfdeckMiddleware(Starlette(routes=routes))


@pytest.mark.parametrize("wrap", ["add_middleware", "outermost"])
def test_routes_are_recorded_as_templates_with_status_and_request_id(sdk_spool, wrap):
    seen.clear()
    client = TestClient(make_app(wrap), raise_server_exceptions=True)

    r = client.get("/items/42", headers={"x-request-id": "req-abc.1"})
    assert r.status_code == 200 and r.json() == {"id": "42"}
    assert r.headers["x-request-id"] == "req-abc.1"
    assert seen == {"rid": "req-abc.1", "state_rid": "req-abc.1", "endpoint": "/items/{item_id}"}

    r = client.get("/items/43")
    generated = r.headers["x-request-id"]
    assert len(generated) == 32 and int(generated, 16) >= 0

    r = client.get("/items/44", headers={"x-request-id": "bad id with spaces"})
    assert r.headers["x-request-id"] != "bad id with spaces" and len(r.headers["x-request-id"]) == 32

    assert client.post("/sync/7").status_code == 201
    assert seen["sync_rid"] is not None
    assert client.get("/sync/7").status_code == 405
    assert client.get("/nope/1").status_code == 404
    assert client.get("/api/v1/users/9").status_code == 200
    assert client.get("/api/v1/missing").status_code == 404

    with pytest.raises(Boom):
        client.get("/boom", headers={"x-request-id": "r-boom"})

    with client.websocket_connect("/ws") as s:      # not an HTTP request: not recorded
        assert s.receive_text() == "hi"

    got = [(r["endpoint"], r["method"], r["status"]) for r in spooled(sdk_spool, "requests")]
    assert got == [
        ("/items/{item_id}", "GET", 200),
        ("/items/{item_id}", "GET", 200),
        ("/items/{item_id}", "GET", 200),
        ("/sync/{n:int}", "POST", 201),
        ("/sync/{n:int}", "GET", 405),
        ("(unmatched)", "GET", 404),
        ("/api/v1/users/{uid}", "GET", 200),
        ("(unmatched)", "GET", 404),
        ("/boom", "GET", 500),
    ]
    assert current_request_id() is None       # the context does not leak out of the request


def test_request_ids_and_durations_reach_the_batch(sdk_spool):
    client = TestClient(make_app("outermost"))
    client.get("/items/1", headers={"x-request-id": "r-1"})
    with pytest.raises(Boom):
        client.get("/boom", headers={"x-request-id": "r-2"})
    rows = spooled(sdk_spool, "requests")
    assert [r["request_id"] for r in rows] == ["r-1", "r-2"]
    assert all(r["duration_ms"] >= 0 for r in rows)


def test_server_error_response_when_exceptions_are_not_raised(sdk_spool):
    client = TestClient(make_app("outermost"), raise_server_exceptions=False)
    r = client.get("/boom", headers={"x-request-id": "r-500"})
    assert r.status_code == 500
    assert r.headers["x-request-id"] == "r-500"   # ServerErrorMiddleware's response passed through us
    assert [(r["endpoint"], r["status"]) for r in spooled(sdk_spool, "requests")] == [("/boom", 500)]


def test_lifespan_passes_through_and_nothing_is_recorded(sdk_spool):
    events = []

    @contextlib.asynccontextmanager
    async def lifespan(app):
        events.append("up")
        yield
        events.append("down")

    app = PerfdeckMiddleware(Starlette(routes=[Route("/items/{item_id}", item)], lifespan=lifespan))
    with TestClient(app):
        pass
    assert events == ["up", "down"]
    assert spooled(sdk_spool, "requests") == []


def test_a_broken_sdk_never_breaks_the_app(sdk_spool, monkeypatch):
    def explode(*a, **k):
        raise RuntimeError("perfdeck bug")

    monkeypatch.setattr(sdk, "record_request", explode)
    client = TestClient(make_app("outermost"))
    r = client.get("/items/5")
    assert r.status_code == 200 and r.json() == {"id": "5"}
    with pytest.raises(Boom):
        client.get("/boom")


def test_a_mount_with_parameters_is_recorded_as_its_template(sdk_spool):
    # The router leaves the matched mount path raw in root_path ("/t/evil<b>"): its values go back to names.
    app = PerfdeckMiddleware(Starlette(routes=[
        Mount("/t/{tenant}", routes=[Route("/items/{item_id}", item)]),
        Mount("/files/{owner}", app=PlainTextResponse("file")),
    ]))
    client = TestClient(app)
    assert client.get("/t/<img src=x>/items/7").status_code == 200
    assert client.get("/files/![x](http:)/a/b").status_code == 200
    assert [r["endpoint"] for r in spooled(sdk_spool, "requests")] == ["/t/{tenant}/items/{item_id}", "/files/{owner}/{path}"]
