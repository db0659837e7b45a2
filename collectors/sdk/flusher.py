"""The background flusher: every `interval` seconds it drains the record buffers, encodes one batch
and hands it to the transport. A failing transport costs the host app nothing: unsent batches wait
in a small bounded backlog, and past it they are dropped and counted."""
from __future__ import annotations

import logging
import os
import socket
import threading
from collections import deque

from collectors.sdk import api
from collectors.sdk.batch import encode

log = logging.getLogger("perfdeck.sdk")
BACKLOG = 16  # encoded batches kept for retry while the transport is down


def _drain(buf: list) -> list:
    n = len(buf)
    items = buf[:n]
    del buf[:n]
    return items


class Flusher:
    def __init__(self, transport, *, service: str, interval: float):
        self.transport, self.service, self.interval = transport, service, interval
        self.host, self.pid = socket.gethostname(), os.getpid()
        self.backlog: deque[tuple[str, bytes, int]] = deque()
        self.send_errors = 0
        self.dropped_batches_events = 0
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
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            stopping = self._stop.is_set()
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
            if stopping:
                return

    def flush_once(self) -> None:
        """Drain every buffer into one batch, then send it and any backlog."""
        drained = {name: _drain(getattr(api, name)) for name in
                   ("requests", "cache_lookups", "llm_calls", "queries", "deploys")}
        if any(drained.values()) or api.dropped:
            self.backlog.append(encode(
                service=self.service, host=self.host, pid=self.pid, sent_at=api.clock(),
                requests=drained["requests"], cache=drained["cache_lookups"], llm=drained["llm_calls"],
                queries=drained["queries"], deploys=drained["deploys"],
                dropped=api.dropped + self.dropped_batches_events, send_errors=self.send_errors,
            ))
        while len(self.backlog) > BACKLOG:
            self.dropped_batches_events += self.backlog.popleft()[2]
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
        try:
            self.transport.close()
        except Exception:
            pass
        return ok
