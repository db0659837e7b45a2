"""instrument_flask and PerfdeckWSGIMiddleware on a real Flask app driven by Flask's test client; the
SDK spools to tmp_path and the test reads the batch files the daemon would ingest."""
from __future__ import annotations

import pytest

pytest.importorskip("flask")

from flask import Flask, Response, abort, jsonify, request
from helpers import spooled

from collectors import sdk
from collectors.integrations.asgi import current_endpoint, current_request_id
from collectors.integrations.wsgi import PerfdeckWSGIMiddleware, instrument_flask, template_path


class Boom(RuntimeError):
    pass


seen: dict = {}


def make_app() -> Flask:
    app = Flask("wsgi-test")
    app.testing = True                       # exceptions propagate to the test client

    @app.get("/items/<int:item_id>")
    def item(item_id):
        seen.update(rid=current_request_id(), environ_rid=request.environ["perfdeck.request_id"],
                    endpoint=current_endpoint())
        return jsonify(id=item_id)

    @app.post("/items")
    def create():
        return jsonify(ok=True), 201

    @app.get("/forbidden")
    def forbidden():
        abort(403)

    @app.get("/boom")
    def boom():
        raise Boom("handler failed")

    @app.get("/stream")
    def stream():
        return Response((c for c in ["a", "b", "c"]), mimetype="text/plain")

    return app


def test_flask_routes_are_recorded_as_url_rules(sdk_spool):
    seen.clear()
    app = make_app()
    assert instrument_flask(app) is True
    assert instrument_flask(app) is False              # idempotent: no double counting
    client = app.test_client()

    r = client.get("/items/42", headers={"X-Request-Id": "req-42"})
    assert r.status_code == 200 and r.get_json() == {"id": 42}
    assert r.headers["X-Request-Id"] == "req-42"
    assert seen == {"rid": "req-42", "environ_rid": "req-42", "endpoint": "/items/<int:item_id>"}

    # A WSGI server closes every response (PEP 3333) and the request is recorded then; the test
    # client only does so when the response is used as a context manager.
    with client.get("/items/43") as r:
        generated = r.headers["X-Request-Id"]
    assert len(generated) == 32 and int(generated, 16) >= 0
    for method, path, status in [("post", "/items", 201), ("get", "/forbidden", 403),
                                 ("get", "/nope/123", 404), ("delete", "/items/1", 405)]:
        with getattr(client, method)(path) as r:
            assert r.status_code == status
    assert client.get("/stream").get_data(as_text=True) == "abc"
    with pytest.raises(Boom):
        client.get("/boom", headers={"X-Request-Id": "r-boom"})
    assert current_request_id() is None                # nothing leaks out of the request

    rows = spooled(sdk_spool, "requests")
    assert [(r["endpoint"], r["method"], r["status"]) for r in rows] == [
        ("/items/<int:item_id>", "GET", 200),
        ("/items/<int:item_id>", "GET", 200),
        ("/items", "POST", 201),
        ("/forbidden", "GET", 403),
        ("(unmatched)", "GET", 404),
        ("(unmatched)", "DELETE", 405),
        ("/stream", "GET", 200),
        ("/boom", "GET", 500),
    ]
    assert rows[0]["request_id"] == "req-42" and rows[-1]["request_id"] == "r-boom"
    assert all(r["duration_ms"] >= 0 for r in rows)


def test_flask_error_handler_response_is_a_500(sdk_spool):
    app = make_app()
    app.testing = False                                # Flask turns the exception into a 500 page
    instrument_flask(app)
    with app.test_client().get("/boom", headers={"X-Request-Id": "r-500"}) as r:
        assert r.status_code == 500 and r.headers["X-Request-Id"] == "r-500"
    assert [(r["endpoint"], r["status"]) for r in spooled(sdk_spool, "requests")] == [("/boom", 500)]


def test_generic_middleware_templates_raw_paths(sdk_spool):
    app = make_app()
    app.wsgi_app = PerfdeckWSGIMiddleware(app.wsgi_app)   # no Flask hook: falls back to PATH_INFO
    client = app.test_client()
    with client.get("/items/42") as r:
        assert r.status_code == 200
    with pytest.raises(Boom):
        client.get("/boom")
    assert [(r["endpoint"], r["status"]) for r in spooled(sdk_spool, "requests")] == [("/items/{id}", 200), ("/boom", 500)]


@pytest.mark.parametrize("path, expected", [
    ("/", "/"),
    ("", "/"),
    ("/orders/123/lines/7", "/orders/{id}/lines/{id}"),
    ("/u/6f1c2a9e-3b4d-4c5e-8f90-a1b2c3d4e5f6", "/u/{id}"),
    ("/u/6f1c2a9e3b4d4c5e8f90a1b2c3d4e5f6/x", "/u/{id}/x"),
    ("/blob/deadbeefdeadbeef", "/blob/{id}"),
    ("/v2/search", "/v2/search"),
    ("/cafe", "/cafe"),
    ("/a/![x](http:", "/a/{id}"),                          # not a plain word: the client's text
    ("/a/<img src=x>/b", "/a/{id}/b"),
    ("/static/app.min.js", "/static/app.min.js"),
])
def test_template_path(path, expected):
    assert template_path(path) == expected


def test_plain_wsgi_app_and_a_broken_sdk(sdk_spool, monkeypatch):
    def app(environ, start_response):
        start_response("204 No Content", [("X-Request-Id", "set-by-app")])
        return [b""]

    from werkzeug.test import Client
    client = Client(PerfdeckWSGIMiddleware(app))
    with client.get("/ping/9", headers={"X-Request-Id": "ignored-app-wins"}) as r:
        assert r.status_code == 204 and r.headers.getlist("X-Request-Id") == ["set-by-app"]

    def explode(*a, **k):
        raise RuntimeError("perfdeck bug")

    monkeypatch.setattr(sdk, "record_request", explode)
    with client.get("/ping/10") as r:
        assert r.status_code == 204
    monkeypatch.undo()
    assert [(r["endpoint"], r["status"]) for r in spooled(sdk_spool, "requests")] == [("/ping/{id}", 204)]


def test_generic_middleware_never_records_a_path_the_app_did_not_match(sdk_spool):
    # Behind the plain middleware a client picks the path: a 404 is "(unmatched)", whatever it said.
    app = make_app()
    app.wsgi_app = PerfdeckWSGIMiddleware(app.wsgi_app)
    client = app.test_client()
    for path in ("/![x](http://evil.example/p.png)", "/nope/about", "/items/abc"):
        with client.get(path) as r:
            assert r.status_code == 404
    assert [(r["endpoint"], r["status"]) for r in spooled(sdk_spool, "requests")] == [("(unmatched)", 404)] * 3
