"""The collector's HTTP listener: `/healthz`, Prometheus `/metrics`, and OTLP traces in at `/v1/traces`
(collectors.http.otlp, routed by the command line: it hands batches to the daemon's spool).

    listener = Listener(settings, db, health=..., window_s=300)   # settings: collectors.http.server.HttpSettings
    listener.start()       # a ThreadingHTTPServer on a daemon thread of the collector's process
    listener.stop()

Every route is one entry of the listener's route table ((method, path) -> handler); POST /v1/traces is
one `listener.route(...)` more. Each request reads the store on a short read connection of its own and
closes it; a failing request answers 500 with a one-line reason and is logged. No request writes the
store: /v1/traces leaves spool files, which the daemon ingests like any SDK batch."""
from collectors.http.server import HttpSettings, Listener, Response, http_settings

__all__ = ["HttpSettings", "Listener", "Response", "http_settings"]
