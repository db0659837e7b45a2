"""The background flusher: every `interval` seconds it drains the record buffers, encodes one batch
and hands it to the transport. A failing transport costs the host app nothing: unsent batches wait
in a small bounded backlog, and past it they are dropped and counted. Events whose values the
collector would refuse are left out while encoding (collectors.sdk.batch) and counted in `rejected`.

The same thread polls the control channel (collectors.sdk.control: "clear cache X") once a tick,
after flushing, at least every CONTROL_TICK_S even when batches go out less often, so a broadcast
is picked up within about a second whatever the flush interval.

It also measures the caches registered with a size (collectors.sdk.control.register_cache): once per
minute of the SDK's clock, at the first flush of that minute (every flush, when they are further
apart). A size() never runs on the host's request path, and one that raises or returns something
other than a count is skipped (that minute) and logged once."""
from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections import Counter, deque

from collectors.sdk import api
from collectors.sdk.batch import KINDS, encode
from collectors.sdk.checks import MAX_COUNT, count
from collectors.sdk.control import size_functions

log = logging.getLogger("perfdeck.sdk")
BACKLOG = 16  # encoded batches kept for retry while the transport is down
CONTROL_TICK_S = 1.0  # the control channel is polled at least this often


def _drain(buf: list) -> list:
    n = len(buf)
    items = buf[:n]
    del buf[:n]
    return items


class Flusher:
    def __init__(self, transport, *, service: str, interval: float, control: bool = True):
        self.transport, self.service, self.interval = transport, service, interval
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.control = _listener(transport, service, self.host, self.pid) if control else None
        self.backlog: deque[tuple[str, bytes, int]] = deque()
        self.send_errors = 0
        self.dropped_batches_events = 0
        self.rejected: Counter[str] = Counter()   # "kind:reason" -> events (or values) left out, cumulative
        self._sized: dict[str, int] = {}       # cache -> the clock minute it was last measured
        self._size_warned: set[int] = set()    # ids of registered size() functions already logged
        self._wake = threading.Event()
        self._stop = threading.Event()
        # Passes of flush_once begun and finished: flush() waits for a pass that began after it was
        # called, since one already under way may have drained the buffers before the caller's events.
        self._passes = threading.Condition()
        self._begun = self._finished = 0
        self._thread = threading.Thread(target=self._run, name="perfdeck-flusher", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _run(self) -> None:
        self._poll_control()          # announce ourselves at once: the dashboard counts on presence
        tick = self.interval if self.control is None else min(self.interval, CONTROL_TICK_S)
        next_flush = time.monotonic() + self.interval
        while True:
            woken = self._wake.wait(max(0.0, min(tick, next_flush - time.monotonic())))
            self._wake.clear()
            stopping = self._stop.is_set()
            if woken or stopping or time.monotonic() >= next_flush:
                self._flush_pass()
                next_flush = time.monotonic() + self.interval
            if stopping:
                return
            self._poll_control()

    def _flush_pass(self) -> None:
        with self._passes:
            self._begun += 1
            this_pass = self._begun
        try:
            self.flush_once()
        except Exception:  # never let the thread die: the next tick tries again
            log.exception("perfdeck flusher failed")
        with self._passes:
            self._finished = this_pass
            self._passes.notify_all()

    def _poll_control(self) -> None:
        if self.control is not None:
            self.control.poll()       # never raises; a failing channel backs off on its own

    def flush_once(self) -> None:
        """Drain every buffer into one batch, then send it and any backlog."""
        sizes = self.sample_sizes()
        drained = {kind.key: _drain(getattr(api, kind.buffer)) for kind in KINDS if kind.buffer}
        if any(drained.values()) or sizes or api.dropped:
            while len(self.backlog) >= BACKLOG:    # make room first: the new batch then reports this loss too
                self.dropped_batches_events += self.backlog.popleft()[2]
            try:
                self.backlog.append(encode(
                    service=self.service, host=self.host, pid=self.pid, sent_at=api.clock(), cache_sizes=sizes,
                    dropped=api.dropped + self.dropped_batches_events, send_errors=self.send_errors,
                    rejected=self.rejected, **drained,
                ))
            except Exception:   # encode() isolates each kind and event; should that fail, still count the loss
                log.exception("perfdeck: encoding a batch failed")
                self.rejected["batch:encode_error"] += sum(map(len, drained.values())) + len(sizes)
        while self.backlog:
            batch_id, payload, _ = self.backlog[0]
            try:
                self.transport.send(batch_id, payload)
            except Exception as exc:
                self.send_errors += 1
                log.warning("perfdeck: sending to %r failed (%s); %d batches waiting",
                            self.transport, exc, len(self.backlog))
                return
            self.backlog.popleft()

    def sample_sizes(self) -> list[tuple[float, str, int]]:
        """(ts, cache, entries) of each sized cache not yet measured in this minute of the SDK's clock.
        The sizes of one name's registrations add up; when one of them fails the name is skipped.
        Never raises: it runs before the buffers are drained, and must not stop them going out."""
        try:
            now = float(api.clock())
            minute = now // 60
            registrations = size_functions()
            live = {name for name, _ in registrations}
            self._sized = {name: m for name, m in self._sized.items() if name in live}   # unregistered: forgotten
            self._size_warned &= {id(fn) for _, fns in registrations for fn in fns}
            samples = []
            for name, fns in registrations:
                if self._sized.get(name) == minute:
                    continue
                self._sized[name] = minute
                counts = [self._entries(name, fn) for fn in fns]
                if None not in counts and sum(counts) <= MAX_COUNT:
                    samples.append((now, name, sum(counts)))
            return samples
        except Exception:
            log.exception("perfdeck: measuring cache sizes failed")
            return []

    def _entries(self, name: str, size) -> int | None:
        """What one size() returns, when it is a count; None (logged once per function) otherwise."""
        try:
            value = size()
        except Exception as exc:
            problem = f"raised {type(exc).__name__}: {exc}"
        else:
            n = count(value)       # an int (or numpy integer) in range; not a bool, 3.0 nor "3"
            if n is not None:
                return n
            shown = value if type(value) is int else f"a {type(value).__name__}"   # no str() of app objects
            problem = f"returned {shown}, not a count of entries"
        if id(size) not in self._size_warned:
            self._size_warned.add(id(size))
            log.warning("perfdeck: size() of cache %r %s; skipped (logged once)", name, problem[:300])
        return None

    def flush(self, timeout: float) -> bool:
        """Ask for an immediate flush and wait for it; False when it did not finish in time."""
        if not self._thread.is_alive():
            return False
        with self._passes:
            wanted = self._begun + 1
        self._wake.set()
        with self._passes:
            done = self._passes.wait_for(lambda: self._finished >= wanted, timeout)
        return done and not self.backlog

    def stop(self, timeout: float) -> bool:
        self._stop.set()
        ok = self.flush(timeout)
        self._thread.join(timeout)
        pending = sum(n for _, _, n in self.backlog)
        if api.dropped or pending or self.dropped_batches_events:
            log.warning("perfdeck: at shutdown %d events were dropped and %d could not be sent",
                        api.dropped + self.dropped_batches_events, pending)
        if self.control is not None:
            self.control.close()      # withdraw our presence before the transport's client closes
        try:
            self.transport.close()
        except Exception:
            pass
        return ok


def _listener(transport, service: str, host: str, pid: int):
    """The control listener on the transport's own channel (sharing its Redis client); None if the
    transport is of a kind that has no control channel."""
    from collectors.sdk import control
    from collectors.sdk.transport.redis import RedisChannel, RedisTransport
    from collectors.sdk.transport.spool import SpoolChannel, SpoolTransport

    if isinstance(transport, SpoolTransport):
        channel = SpoolChannel(transport.directory)
    elif isinstance(transport, RedisTransport):
        channel = RedisChannel(transport.url, client=transport.client)
    else:
        return None
    return control.Listener(channel, service=service, host=host, pid=pid)
