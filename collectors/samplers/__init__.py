"""Periodic samplers: the host (psutil), Redis instances, SQL databases.

A sampler is a class with a `name` (the component it watches), a `kind`, an `interval` in seconds and
`collect(now) -> list[Rows]`. It may raise when its target is unreachable: the runner marks the
component down, retries with backoff, and the other samplers and the daemon carry on.

Samplers never touch the store. Each runs on a thread of its own and hands its rows to the daemon,
which writes them in its next short transaction (the single-writer rule)."""
from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from datetime import datetime

from collectors.redact import redact
from collectors.store.connection import utcnow  # noqa: F401 - samplers stamp rows with it

log = logging.getLogger("perfdeck.samplers")
MAX_BACKOFF = 300.0


@dataclass
class Rows:
    """Rows for one store table, in that table's column order. `once`: a row the table holds already (by its
    primary key) is skipped, not an error, as for slowlog entries seen again at the next sample."""
    table: str
    rows: list[tuple]
    once: bool = False


@dataclass
class Status:
    component: str
    kind: str
    target: str
    up: bool
    checked_at: datetime
    error: str | None = None


class Sampler:
    name: str = "sampler"
    kind: str = "sampler"
    target: str = ""
    interval: float = 10.0

    def collect(self, now: datetime) -> list[Rows]:
        raise NotImplementedError

    def close(self) -> None:
        pass


class SamplerThread:
    """Runs one sampler on its interval; failures back off exponentially up to MAX_BACKOFF."""

    def __init__(self, sampler: Sampler, out: queue.Queue, stop: threading.Event):
        self.sampler, self.out, self.stop = sampler, out, stop
        self.failures = 0
        self.thread = threading.Thread(target=self._run, name=f"perfdeck-sampler-{sampler.name}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def run_once(self) -> None:
        s, now = self.sampler, utcnow()
        try:
            rows = s.collect(now)
        except Exception as exc:
            self.failures += 1
            # Driver errors often quote the URL or DSN: redacted, with this target's own secrets too.
            error = redact(f"{type(exc).__name__}: {exc}", getattr(s, "url", None))[:500]
            log.warning("%s %s is down: %s", s.kind, s.name, error)
            self.out.put(Status(s.name, s.kind, redact(s.target), False, now, error))
            return
        self.failures = 0
        self.out.put(Status(s.name, s.kind, redact(s.target), True, now))
        for r in rows:
            if r.rows:
                self.out.put(r)

    def delay(self) -> float:
        if not self.failures:
            return self.sampler.interval
        return min(self.sampler.interval * 2 ** min(self.failures - 1, 10), MAX_BACKOFF)

    def _run(self) -> None:
        while not self.stop.is_set():
            self.run_once()
            self.stop.wait(self.delay())
        try:
            self.sampler.close()
        except Exception:
            pass
