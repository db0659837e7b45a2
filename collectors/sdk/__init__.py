"""The perfdeck SDK: record what your service does, cheaply, without ever breaking it.

    from collectors import sdk

    sdk.configure(service="api")                      # spool:data/spool by default
    sdk.record_request("/search", 12.5, status=200)
    with sdk.timed("/report"):
        build_report()
    sdk.record_cache("users", hit=True, lookup_ms=0.2)
    sdk.record_llm_call("gpt-4o-mini", input_tokens=812, output_tokens=95, request_id="r-1")
    sdk.record_query("SELECT * FROM users WHERE id = 7", 3.1, database="app")
    sdk.mark_deploy("v1.4.2")
    sdk.register_cache("prices", lambda namespace: prices.cache_clear())   # clearable from the dashboard
    sdk.register_cache("sessions", size=sessions.__len__)                  # its entries, once a minute

Only the standard library is imported here. Record calls append to bounded in-memory buffers; a
background thread ships them every second to the transport (a spool directory or a Redis stream),
measures the registered caches' sizes once a minute, and listens on the transport for the
dashboard's "clear cache" broadcasts (collectors.sdk.control).
"""
from collectors.sdk.api import (
    mark_deploy,
    record_cache,
    record_llm_call,
    record_query,
    record_request,
    timed,
)
from collectors.sdk.client import configure, flush, shutdown, stats
from collectors.sdk.control import register_cache

__all__ = [
    "configure", "flush", "mark_deploy", "record_cache", "record_llm_call", "record_query",
    "record_request", "register_cache", "shutdown", "stats", "timed",
]
