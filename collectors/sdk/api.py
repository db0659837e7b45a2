"""The record calls. They run on the host program's hot path: no I/O, no locks, no logging, and no
exception ever escapes. Each appends one tuple to a bounded list; the flusher thread
(collectors.sdk.flusher) drains, aggregates and ships them.

Draining takes `buf[:n]` then `del buf[:n]`, each atomic under the GIL, so an append that races a
drain lands in the next batch instead of being lost.

Values are stored as given, not checked: the flusher checks them while encoding (collectors.sdk.batch)
and counts what the collector would refuse in stats()["rejected"]."""
from __future__ import annotations

import functools
import inspect
import time
from time import perf_counter

# Buffers, one per kind of event. Rebound only by configure()/fork handling, never on the hot path.
requests: list = []
cache_lookups: list = []
llm_calls: list = []
queries: list = []
deploys: list = []

max_buffer = 0          # 0 until configure(): every record call is then a counted no-op
dropped = 0             # events refused because a buffer was full (approximate under races)
clock = time.time       # swapped by configure(clock=...) e.g. for the demo's fast-forward backfill


def _drop() -> None:
    global dropped
    if max_buffer:
        dropped += 1


def record_request(endpoint: str, duration_ms: float, status: int = 200, method: str = "GET",
                   request_id: str | None = None, **tags) -> None:
    """Record one served request. `request_id` links it to the LLM calls it made; other keyword
    arguments are kept as tags.

    >>> record_request("/search", 12.5, status=200, method="GET", request_id="r-1")
    """
    try:
        if len(requests) < max_buffer:
            # Only atomic values (tags is usually empty -> None): the garbage collector then stops
            # tracking the tuple, instead of rescanning every buffered event on each pass.
            requests.append((clock(), endpoint, duration_ms, status, method, request_id, tags or None))
        else:
            _drop()
    except Exception:
        pass


def record_cache(cache: str, hit: bool, lookup_ms: float | None = None, namespace: str | None = None) -> None:
    """Record one cache lookup; the flusher aggregates lookups per minute, cache and namespace."""
    try:
        if len(cache_lookups) < max_buffer:
            cache_lookups.append((clock(), cache, namespace, hit, lookup_ms))
        else:
            _drop()
    except Exception:
        pass


def record_llm_call(model: str, input_tokens: int, output_tokens: int, provider: str | None = None,
                    cached_input_tokens: int = 0, request_id: str | None = None, endpoint: str | None = None,
                    user: str | None = None, cache_hit: bool = False, latency_ms: float | None = None,
                    cache_write_tokens: int = 0) -> None:
    """Record one LLM call (or one answered from a cache, with cache_hit=True). `input_tokens` is the
    whole prompt; `cached_input_tokens` (read from the provider's prompt cache) and `cache_write_tokens`
    are parts of it, priced at their own rates."""
    try:
        if len(llm_calls) < max_buffer:
            llm_calls.append((clock(), provider, model, input_tokens, output_tokens, cached_input_tokens,
                              request_id, endpoint, user, cache_hit, latency_ms, cache_write_tokens))
        else:
            _drop()
    except Exception:
        pass


def record_query(sql: str, duration_ms: float, database: str | None = None) -> None:
    """Record one SQL statement's run time; the flusher fingerprints and aggregates per minute."""
    try:
        if len(queries) < max_buffer:
            queries.append((clock(), sql, duration_ms, database))
        else:
            _drop()
    except Exception:
        pass


def mark_deploy(version: str) -> None:
    """Mark that this service now runs `version`; drawn on every time chart."""
    try:
        deploys.append((clock(), version))    # made text on the flusher: a str() that raises is counted there
    except Exception:
        pass


class timed:
    """Time a block or a function as one request to `endpoint`. An exception that escapes counts
    as status 500 and is re-raised unchanged.

    >>> with timed("/report"):
    ...     build_report()
    >>> @timed("/search", method="POST")
    ... def search(q): ...
    """

    __slots__ = ("endpoint", "method", "tags", "_t0")

    def __init__(self, endpoint: str, method: str = "GET", **tags):
        self.endpoint, self.method, self.tags = endpoint, method, tags

    def __enter__(self):
        self._t0 = perf_counter()
        return self

    def __exit__(self, exc_type, exc, tb) -> bool:
        elapsed = max(0.0, (perf_counter() - self._t0) * 1000.0)
        record_request(self.endpoint, elapsed, 500 if exc_type else 200, self.method, **self.tags)
        return False

    def __call__(self, fn):
        endpoint, method, tags = self.endpoint, self.method, self.tags
        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args, **kwargs):
                with timed(endpoint, method, **tags):
                    return await fn(*args, **kwargs)
            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with timed(endpoint, method, **tags):
                return fn(*args, **kwargs)
        return wrapper
