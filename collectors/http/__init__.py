"""The collector's HTTP listener: `/healthz` and Prometheus `/metrics` (and, later, OTLP traces in).

    listener = Listener(settings, db, health=..., window_s=300)   # settings: collectors.http.server.HttpSettings
    listener.start()       # a ThreadingHTTPServer on a daemon thread of the collector's process
    listener.stop()

Every route is one entry of the listener's route table ((method, path) -> handler), so another one
(POST /v1/traces) is one `listener.route(...)` more. Each request reads the store on a short read
connection of its own and closes it; a failing request answers 500 with a one-line reason and is
logged, and nothing a request does reaches ingest."""
from collectors.http.server import HttpSettings, Listener, Response, http_settings

__all__ = ["HttpSettings", "Listener", "Response", "http_settings"]
