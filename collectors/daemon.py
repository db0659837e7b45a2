"""The collector daemon: the one process that writes the store.

Each tick it takes pending batches from its sources, writes them with their rollups in one short
transaction, closes the file, and only then removes them from the source. On a slower schedule it
compacts the rollups it touched and applies retention, and every [alerts] interval it assesses health
and advances the alerts (notifications go out on the notifier's own thread). Every job is isolated: a
failure is logged and the loop goes on (in --once mode the first error is re-raised at the end)."""
from __future__ import annotations

import logging
import queue
import signal
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

from collectors.pricing import PriceBook
from collectors.samplers import Rows, Sampler, SamplerThread, Status
from collectors.sources import Item, RedisSource, SpoolSource
from collectors.store import connection, migrate, utcnow
from collectors.store.ingest import MalformedBatch, decode, write_batches
from collectors.store.retention import purge
from collectors.store.rollups import compact

if TYPE_CHECKING:
    import pandas as pd

    from collectors.health.alerts import AlertEngine

log = logging.getLogger("perfdeck.daemon")

MAX_BATCHES_PER_TX = 500
MAX_BYTES_PER_TX = 64 * 1024 * 1024
# Tables samplers may write, and how a row is inserted (slowlog entries are stored once).
SAMPLE_TABLES = {"system_metrics": "INSERT INTO", "redis_metrics": "INSERT INTO", "db_metrics": "INSERT INTO",
                 "pg_statements": "INSERT INTO", "query_stats": "INSERT INTO", "redis_slowlog": "INSERT OR IGNORE INTO",
                 "advisor_runs": "INSERT INTO", "index_advice": "INSERT INTO", "alert_notifications": "INSERT INTO"}
NOTIFIER_DRAIN_S = 5.0     # at stop, how long queued alert messages may take
_UPSERT_COMPONENT = """
    INSERT INTO components VALUES (?, ?, ?, ?, ?, ?, ?, ?)
    ON CONFLICT (name) DO UPDATE SET
        kind = excluded.kind,
        target = excluded.target,
        since = CASE WHEN components.status = excluded.status THEN components.since ELSE excluded.since END,
        status = excluded.status,
        last_ok = coalesce(excluded.last_ok, components.last_ok),
        checked_at = excluded.checked_at,
        error = excluded.error
"""


@dataclass
class Report:
    batches: int = 0
    events: int = 0
    quarantined: int = 0


class Collector:
    """Ingest from the spool (and optionally a Redis stream) into the store at `db`."""

    def __init__(self, db: str | Path | None = None, *, spool_dir: str | Path = "data/spool",
                 quarantine_dir: str | Path | None = None, redis_url: str | None = None,
                 interval: float = 1.0, compact_every: float = 60.0, retention_every: float = 3600.0,
                 max_batches_per_tx: int = MAX_BATCHES_PER_TX, samplers: list[Sampler] = (),
                 advise: list[tuple[str, str]] = (), advise_every: float = 3600.0, advise_at_start: bool = True,
                 prices: PriceBook | None = None, alerts: AlertEngine | None = None,
                 health: Callable[[object, datetime], pd.DataFrame] | None = None):
        self.db = connection.db_path(db)
        quarantine_dir = Path(quarantine_dir or Path(spool_dir).parent / "quarantine")
        self.sources: list = [SpoolSource(spool_dir, quarantine_dir)]
        if redis_url:
            self.sources.append(RedisSource(redis_url, quarantine_dir))
        self.interval, self.compact_every, self.retention_every = interval, compact_every, retention_every
        self.max_batches_per_tx = max_batches_per_tx
        self._dirty_minutes: tuple[datetime, datetime] | None = None
        self._last_compact = self._last_retention = 0.0
        self.stop_event = threading.Event()
        self._errors: list[str] = []
        self.samples: queue.Queue = queue.Queue()
        self.sampler_threads = [SamplerThread(s, self.samples, self.stop_event) for s in samplers]
        self.advise, self.advise_every = list(advise), advise_every
        self.prices = prices or PriceBook()
        self._next_advice = time.monotonic() + (0 if advise_at_start else advise_every)
        self._advisor_thread: threading.Thread | None = None
        if (alerts is None) != (health is None):
            raise ValueError("alerts and health go together: the engine evaluates what health(con, now) assesses")
        self.alerts, self.health = alerts, health
        self._next_alerts = 0.0
        if alerts is not None and alerts.notifier is None:
            from collectors.health.notify import Notifier
            alerts.notifier = Notifier(alerts.settings, on_result=self._notification_outcome)
        with connection.write(self.db) as con:
            applied = migrate(con)
        if applied:
            log.info("store %s: applied migrations %s", self.db, ", ".join(applied))

    # -- ingest ----------------------------------------------------------------------------------
    def ingest_source(self, source) -> Report:
        """One transaction's worth of batches from one source."""
        report = Report()
        items: list[Item] = source.fetch(self.max_batches_per_tx, MAX_BYTES_PER_TX)
        if not items:
            return report
        good, bad = [], []
        for item in items:
            try:
                good.append((item, decode(item.payload)))
            except MalformedBatch as exc:
                bad.append((item, str(exc)))
        for _, batch in good:
            self.prices.price_frame(batch.llm)
        with connection.write(self.db) as con:
            report.events = write_batches(con, [b for _, b in good], source.name)
            if bad:
                con.executemany("INSERT INTO quarantine VALUES (now()::TIMESTAMP, ?, ?, ?)",
                                [(source.name, item.name, reason) for item, reason in bad])
        # Committed: now, and only now, the source may forget them.
        source.ack([item for item, _ in good])
        for item, reason in bad:
            log.warning("quarantined %s from %s: %s", item.name, source.name, reason)
            source.quarantine(item, reason)
        report.batches, report.quarantined = len(good), len(bad)
        self._mark_dirty([b for _, b in good])
        return report

    def _mark_dirty(self, batches) -> None:
        lows, highs = [], []
        for b in batches:
            for frame, col in ((b.requests, "ts"), (b.cache, "minute"), (b.queries, "minute")):
                if frame is not None and len(frame):
                    values = frame[col]
                    if hasattr(values, "to_pandas"):
                        values = values.to_pandas()
                    lows.append(values.min())
                    highs.append(values.max())
        if lows:
            lo, hi = min(lows).floor("min").to_pydatetime(), max(highs).to_pydatetime()
            if self._dirty_minutes:
                lo, hi = min(lo, self._dirty_minutes[0]), max(hi, self._dirty_minutes[1])
            self._dirty_minutes = (lo, hi)

    def ingest_pending(self) -> Report:
        """Ingest until every source is empty."""
        total = Report()
        for source in self.sources:
            while True:
                r = self._isolated(f"ingest from {source.name}", self.ingest_source, source, default=None)
                if r is None:
                    break
                total.batches += r.batches
                total.events += r.events
                total.quarantined += r.quarantined
                if r.batches + r.quarantined == 0:
                    break
        return total

    # -- samplers --------------------------------------------------------------------------------
    def write_samples(self) -> int:
        """Write what the sampler threads produced since the last tick, in one transaction."""
        items = []
        while True:
            try:
                items.append(self.samples.get_nowait())
            except queue.Empty:
                break
        if not items:
            return 0
        by_table: dict[str, list[tuple]] = {}
        statuses = []
        for item in items:
            if isinstance(item, Status):
                statuses.append(item)
            elif isinstance(item, Rows) and item.table in SAMPLE_TABLES:
                by_table.setdefault(item.table, []).extend(item.rows)
        with connection.write(self.db) as con:
            for table, rows in by_table.items():
                marks = ", ".join("?" * len(rows[0]))
                con.executemany(f"{SAMPLE_TABLES[table]} {table} VALUES ({marks})", rows)
            for st in statuses:
                con.execute(_UPSERT_COMPONENT, [st.component, st.kind, st.target, "up" if st.up else "down",
                                                st.checked_at, st.checked_at if st.up else None, st.checked_at,
                                                st.error])
        return sum(len(r) for r in by_table.values())

    # -- index advisor ---------------------------------------------------------------------------
    def start_advisor(self, *, wait: bool = False) -> None:
        """Read each database's SDK workload from the store here (this thread owns the store), then
        advise on a thread of its own: EXPLAINs on a big database take a while, ingest goes on."""
        if not self.advise or (self._advisor_thread and self._advisor_thread.is_alive()):
            return
        from collectors.advisor.advise import store_workload
        with connection.read(self.db) as con:
            work = [(name, url, store_workload(con, url, name)) for name, url in self.advise]
        self._advisor_thread = threading.Thread(target=self._advise_all, args=(work,), name="perfdeck-advisor",
                                                daemon=True)
        self._advisor_thread.start()
        if wait:
            self._advisor_thread.join()

    def request_advice(self) -> None:
        """Run the advisor at the next tick (safe from any thread), e.g. once a workload exists."""
        self._next_advice = 0.0

    def _advise_all(self, work) -> None:
        from collectors.advisor.advise import advise, advisor_rows
        for name, url, recorded in work:
            if self.stop_event.is_set():
                return
            started = utcnow()
            try:
                report = advise(url, store_workload=recorded, target=name)
            except Exception as exc:
                log.warning("index advisor on %s failed: %s", name, exc)
                self.samples.put(Rows("advisor_runs", [(started, name, None, None, None, None,
                                                        f"{type(exc).__name__}: {exc}"[:500], None)]))
                continue
            for rows in advisor_rows(report, started):
                self.samples.put(rows)

    # -- alerts ----------------------------------------------------------------------------------
    def evaluate_alerts(self, now: datetime | None = None) -> list:
        """Assess health on a short read connection, then advance the alerts (one short write); the
        notifier sends the messages on its own thread."""
        now = now or utcnow()
        with connection.read(self.db) as con:
            assessed = self.health(con, now)
        return self.alerts.tick(assessed, now)

    def _notification_outcome(self, row: tuple) -> None:
        # Called on the notifier's thread: the row waits for this thread's next write, like samples.
        self.samples.put(Rows("alert_notifications", [row]))

    def _drain_notifier(self) -> None:
        """Give queued alert messages a short while to go out, then store their outcomes."""
        if self.alerts is not None and hasattr(self.alerts.notifier, "stop"):
            self.alerts.notifier.stop(NOTIFIER_DRAIN_S)

    # -- housekeeping ----------------------------------------------------------------------------
    def compact(self) -> int:
        """Merge the rollup rows of the minutes ingested since the last compaction."""
        if not self._dirty_minutes:
            return 0
        lo, hi = self._dirty_minutes
        with connection.write(self.db) as con:
            removed = compact(con, lo, hi + timedelta(minutes=1))
        self._dirty_minutes = None
        return removed

    def retention(self) -> dict[str, int]:
        with connection.write(self.db) as con:
            return purge(con, utcnow())

    def _isolated(self, what: str, fn, *args, default=None, **kwargs):
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            log.exception("%s failed", what)
            self._errors.append(f"{what}: {exc}")
            return default

    # -- schedules -------------------------------------------------------------------------------
    def run_once(self) -> Report:
        """Ingest everything pending, compact, apply retention; raise the first error at the end."""
        self._errors = []
        report = self.ingest_pending()
        for t in self.sampler_threads:
            t.run_once()
        self._isolated("advisor", self.start_advisor, wait=True)
        self._isolated("samples", self.write_samples)
        self._isolated("compaction", self.compact)
        self._isolated("retention", self.retention)
        if self.alerts is not None:
            self._isolated("alerts", self.evaluate_alerts)
            self._drain_notifier()
            self._isolated("samples", self.write_samples)
        if self._errors:
            raise RuntimeError("; ".join(self._errors))
        return report

    def run_forever(self) -> None:
        """Tick until stop() (or SIGTERM/SIGINT when installed), then finish the current unit cleanly."""
        self._errors = []
        log.info("collecting into %s from %s", self.db, ", ".join(s.name for s in self.sources))
        for t in self.sampler_threads:
            t.start()
        if self.alerts is not None and hasattr(self.alerts.notifier, "start"):
            self.alerts.notifier.start()
        while not self.stop_event.is_set():
            started = time.monotonic()
            report = self.ingest_pending()
            self._isolated("samples", self.write_samples)
            if report.batches:
                log.debug("ingested %d batches, %d events", report.batches, report.events)
            now = time.monotonic()
            if now - self._last_compact >= self.compact_every:
                self._isolated("compaction", self.compact)
                self._last_compact = now
            if now - self._last_retention >= self.retention_every:
                self._isolated("retention", self.retention)
                self._last_retention = now
            if self.advise and now >= self._next_advice:
                self._isolated("advisor", self.start_advisor)
                self._next_advice = now + self.advise_every
            if self.alerts is not None and now >= self._next_alerts:
                self._isolated("alerts", self.evaluate_alerts)
                self._next_alerts = now + self.alerts.settings.interval_s
            self._errors.clear()
            self.stop_event.wait(max(0.0, self.interval - (time.monotonic() - started)))
        # Last drain so that what the apps flushed at their own shutdown is not left behind.
        self.ingest_pending()
        for t in self.sampler_threads:
            t.thread.join(timeout=10)
        self._drain_notifier()
        self._isolated("samples", self.write_samples)
        self._isolated("compaction", self.compact)
        for source in self.sources:
            source.close()
        log.info("collector stopped")

    def stop(self, *_args) -> None:
        self.stop_event.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
