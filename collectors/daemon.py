"""The collector daemon: the one process that writes the store.

Each tick it takes pending batches from its sources, writes them with their rollups in one short
transaction, closes the file, and only then removes them from the source. On a slower schedule it
compacts the rollups it touched and applies retention, and every [alerts] interval it assesses health
and advances the alerts (notifications go out on the notifier's own thread). Every job is isolated: a
failure is logged and the loop goes on (in --once mode the first error is re-raised at the end).

Nothing stops ingest for good: decode validates every value before the transaction, and should a write
still fail, the batches are written one per transaction and one that fails alone MAX_WRITE_TRIES times
is quarantined (a full disk or a locked file is waited out, never quarantined). Sampler rows wait in a
queue until written: a failed write is retried, and rows that fail alone are dropped and counted
without losing the others'. Each source's backlog and lag are recorded every STATUS_EVERY_S seconds."""
from __future__ import annotations

import logging
import os
import queue
import random
import signal
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb

from collectors.pricing import PriceBook
from collectors.redact import redact
from collectors.samplers import Rows, Sampler, SamplerThread, Status
from collectors.sources import Item, RedisSource, SpoolSource
from collectors.store import connection, lake, migrate, utcnow
from collectors.store.ingest import MalformedBatch, decode, merges, write_batches
from collectors.store.retention import purge
from collectors.store.rollups import compact, roll_tiers
from collectors.store.schema import Limits

if TYPE_CHECKING:
    import pandas as pd

    from collectors.health.alerts import AlertEngine

log = logging.getLogger("perfdeck.daemon")

MAX_BATCHES_PER_TX = 500
MAX_BYTES_PER_TX = 64 * 1024 * 1024
NOTIFIER_DRAIN_S = 5.0     # at stop, how long queued alert messages may take
MAX_WRITE_TRIES = 3        # a batch whose write fails alone this often is quarantined
STATUS_EVERY_S = 10.0      # between two rows of each source's backlog in ingest_sources
# The store, not what is written, failing: locked, busy, not answering, a full disk, a lake misconfigured
# (a changed password). Waited out, the rows kept; never counted toward quarantining them.
STORE_AWAY = (connection.StoreLocked, duckdb.IOException, OSError, lake.LakeUnavailable)
BUSY_TRIES = 5             # on a lake, a write that lost to another collector's commit is run again this often
# DuckLake's CHECKPOINT: each ingest commit writes a small file per table (their number doubled in 5 minutes
# of the demo's live traffic), merged here; old snapshots and unreferenced files removed.
LAKE_MAINTENANCE_EVERY_S = 600.0
_UPSERT_COMPONENT = """
    MERGE INTO components AS c
    USING (SELECT ?::VARCHAR AS name, ?::VARCHAR AS kind, ?::VARCHAR AS target, ?::VARCHAR AS status,
                  ?::TIMESTAMP AS since, ?::TIMESTAMP AS last_ok, ?::TIMESTAMP AS checked_at, ?::VARCHAR AS error) AS x
    ON c.name = x.name
    WHEN MATCHED THEN UPDATE SET
        kind = x.kind,
        target = x.target,
        since = CASE WHEN c.status = x.status THEN c.since ELSE x.since END,
        status = x.status,
        last_ok = coalesce(x.last_ok, c.last_ok),
        checked_at = x.checked_at,
        error = x.error
    WHEN NOT MATCHED THEN INSERT BY NAME
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
                 health: Callable[[object, datetime], pd.DataFrame] | None = None, limits: Limits | None = None):
        self.db = connection.db_path(db)
        quarantine_dir = Path(quarantine_dir or Path(spool_dir).parent / "quarantine")
        self.sources: list = [SpoolSource(spool_dir, quarantine_dir)]
        if redis_url:
            self.sources.append(RedisSource(redis_url, quarantine_dir))
        self.interval, self.compact_every, self.retention_every = interval, compact_every, retention_every
        self.max_batches_per_tx = max_batches_per_tx
        self.limits = limits or Limits()
        self._write_failures: dict[tuple[str, str], int] = {}   # (source, item) -> writes failed alone
        self._split: dict[str, int] = {}    # source -> batches of a failed write still to write one at a time
        self._next_status = 0.0
        self._pending_samples: list = []    # taken from the samplers' queue, not yet written
        self._notes: dict[str, Counter] = {}  # source -> what it skipped or repaired, not yet written
        self._outside_notes: Counter = Counter()   # note(): counted on other threads, not yet written
        self._outside_lock = threading.Lock()
        self._last_failure: dict[str, str] = {}   # job -> its last error, while it keeps failing
        self._dirty_minutes: tuple[datetime, datetime] | None = None
        self._last_run: dict[str, float] = {}   # job -> when this collector last ran it (DuckDB file)
        # In its sources' reports only when given a name (--consumer, which several collectors need): a host
        # name can change at every restart of a container, and each old one would be a collector gone silent.
        self.name = os.environ.get("PERFDECK_CONSUMER") or None
        # On a lake, the duties lease decides who runs compaction, retention, alerts, the advisor and
        # maintenance, and when (collectors.store.lease).
        self.lease = None
        self._holding = False
        if isinstance(self.db, lake.Lake):
            from collectors.store.lease import Lease
            self.lease = Lease(self.db)
        self.stop_event = threading.Event()
        self._errors: list[str] = []
        self.samples: queue.Queue = queue.Queue()
        self._store_tables: set[str] | None = None     # what sample rows may name (see _write_sample_items)
        self.sampler_threads = [SamplerThread(s, self.samples, self.stop_event) for s in samplers]
        self.advise, self.advise_every = list(advise), advise_every
        self.prices = prices or PriceBook()
        self._next_advice = time.monotonic() + (0 if advise_at_start else advise_every)
        self._advisor_thread: threading.Thread | None = None
        if (alerts is None) != (health is None):
            raise ValueError("alerts and health go together: the engine evaluates what health(con, now) assesses")
        self.alerts, self.health = alerts, health
        if alerts is not None and alerts.notifier is None:
            from collectors.health.notify import Notifier
            alerts.notifier = Notifier(alerts.settings, on_result=self._notification_outcome)
        with connection.write(self.db) as con:
            applied = migrate(con)
        if applied:
            log.info("store %s: applied migrations %s", self.db, ", ".join(applied))

    # -- ingest ----------------------------------------------------------------------------------
    def ingest_source(self, source) -> Report:
        """One transaction's worth of batches from one source (one batch, after a failed write)."""
        report = Report()
        items: list[Item] = source.fetch(1 if self._split.get(source.name) else self.max_batches_per_tx,
                                         MAX_BYTES_PER_TX)
        notes = self._notes.setdefault(source.name, Counter())
        notes.update(source.take_notes() if hasattr(source, "take_notes") else {})
        if not items and not notes:
            return report
        now = time.time()
        good, bad = [], []
        for item in items:
            try:
                good.append((item, decode(item.payload, self.limits, now)))
            except MalformedBatch as exc:
                bad.append((item, str(exc)))
        for _, batch in good:
            self.prices.price_frame(batch.llm)
        try:
            report.events = self._write_ingest(source, good, bad, notes)
        except Exception as exc:
            if isinstance(exc, STORE_AWAY):
                raise                            # the store or the disk, not the batches: wait it out
            if len(good) != 1:
                self._split[source.name] = len(items)   # the source hands them again, oldest first
                raise
            return self._write_failed(source, good[0][0], exc)
        # Committed: now, and only now, the source may forget them.
        notes.clear()
        source.ack([item for item, _ in good])
        for item, reason in bad:
            log.warning("quarantined %s from %s: %s", item.name, source.name, reason)
            source.quarantine(item, reason)
        for item, _ in good:
            self._write_failures.pop((source.name, item.name), None)
        if self._split.get(source.name):
            self._split[source.name] -= len(items)
        report.batches, report.quarantined = len(good), len(bad)
        self._mark_dirty([b for _, b in good])
        return report

    def _write_ingest(self, source, good: list, bad: list, notes: Counter) -> int:
        """One ingest transaction. On a lake it runs beside other collectors' (a shared write) unless a batch
        has rows merged with other batches' (ingest.merges), and is run again when another's commit
        conflicted with it (StoreBusy: nothing of it was written)."""
        taken = False
        alone = any(merges(batch) for _, batch in good)
        for attempt in range(1, BUSY_TRIES + 1):
            try:
                with connection.write(self.db, exclusive=alone) as con:
                    events = write_batches(con, [b for _, b in good], source.name)
                    if bad:
                        con.executemany("INSERT INTO quarantine VALUES (now()::TIMESTAMP, ?, ?, ?)",
                                        [(source.name, item.name, reason) for item, reason in bad])
                    if notes:
                        con.executemany("INSERT INTO ingest_rejects VALUES (now()::TIMESTAMP, NULL, ?, ?, ?)",
                                        [(kind, reason, n) for (kind, reason), n in notes.items()])
                    if hasattr(source, "still_ours") and not source.still_ours([item for item, _ in good]):
                        # Claimed by another collector meanwhile (this write outlasted the claim time): it
                        # ingests them, so not tried again here.
                        taken = True
                        raise connection.StoreBusy(f"batches from {source.name} were claimed by another "
                                                   f"collector before this write committed")
                return events
            except connection.StoreBusy:
                if attempt == BUSY_TRIES or taken:
                    raise
                log.debug("ingest from %s lost to another collector's commit; again (%d)", source.name, attempt)
                time.sleep(random.uniform(0.01, 0.1 * attempt))
        raise AssertionError("unreachable")

    def _write_failed(self, source, item: Item, exc: Exception) -> Report:
        """A batch whose write failed on its own: tried again next tick, quarantined after MAX_WRITE_TRIES
        (what validation let through and the store refuses must not stop what comes after it)."""
        key = (source.name, item.name)
        self._write_failures[key] = tries = self._write_failures.get(key, 0) + 1
        if tries < MAX_WRITE_TRIES:
            raise RuntimeError(f"writing batch {item.name} failed ({tries} of {MAX_WRITE_TRIES} tries): {exc}") from exc
        reason = f"write failed {tries} times: {type(exc).__name__}: {exc}"[:2000]
        with connection.write(self.db) as con:
            con.execute("INSERT INTO quarantine VALUES (now()::TIMESTAMP, ?, ?, ?)", [source.name, item.name, reason])
        log.error("quarantined %s from %s: %s", item.name, source.name, reason)
        source.quarantine(item, reason)
        del self._write_failures[key]
        if self._split.get(source.name):
            self._split[source.name] -= 1
        return Report(quarantined=1)

    def _mark_dirty(self, batches) -> None:
        lows, highs = [], []
        for b in batches:
            for frame, col in ((b.requests, "ts"), (b.llm, "ts"), (b.cache, "minute"), (b.queries, "minute")):
                if frame is not None and len(frame):
                    values = frame[col]
                    if hasattr(values, "to_pandas"):
                        values = values.to_pandas()
                    lows.append(values.min())
                    highs.append(values.max())
        if lows:
            lo, hi = min(lows).floor("min").to_pydatetime(), max(highs).ceil("us").to_pydatetime()
            if self.lease is not None:        # compacted by whichever collector holds the duties
                self._isolated("noting ingested minutes", self.lease.note_ingested, lo, hi)
                return
            if self._dirty_minutes:
                lo, hi = min(lo, self._dirty_minutes[0]), max(hi, self._dirty_minutes[1])
            self._dirty_minutes = (lo, hi)

    def note(self, kind: str, reason: str, n: int = 1) -> None:
        """Count something refused outside the sources (the HTTP listener's OTLP bodies that are no OTLP) in
        ingest_rejects, like a source's notes. Safe from any thread: written by this one at its next tick."""
        with self._outside_lock:
            self._outside_notes[kind, reason] += n

    def write_notes(self) -> int:
        """Write what note() counted since the last tick; kept for the next one when the write fails."""
        with self._outside_lock:
            notes, self._outside_notes = self._outside_notes, Counter()
        if not notes:
            return 0
        try:
            with connection.write(self.db, exclusive=False) as con:
                con.executemany("INSERT INTO ingest_rejects VALUES (now()::TIMESTAMP, NULL, ?, ?, ?)",
                                [(kind, reason, n) for (kind, reason), n in notes.items()])
        except Exception:
            with self._outside_lock:
                self._outside_notes.update(notes)
            raise
        return sum(notes.values())

    def ingest_pending(self) -> Report:
        """Ingest until every source is empty."""
        total = Report()
        self._isolated("notes", self.write_notes)
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
        """Write what the sampler threads produced since the last tick, in one transaction. The rows wait
        until written: a failed write is retried at the next tick (a sampler's baseline has moved on
        already, its deltas exist only here); rows that fail alone are dropped and counted, so one
        sampler's bad rows cannot lose another's."""
        while True:
            try:
                item = self.samples.get_nowait()
            except queue.Empty:
                break
            if isinstance(item, Status) or isinstance(item, Rows) and item.rows:
                self._pending_samples.append(item)
        if not self._pending_samples:
            return 0
        items, self._pending_samples = self._pending_samples, []
        try:
            return self._write_sample_items(items)
        except STORE_AWAY:
            self._pending_samples = items + self._pending_samples      # the store, not the rows: retry all
            raise
        except Exception:
            log.exception("writing %d sample items failed; writing them one by one", len(items))
        written, failed = 0, Counter()
        for item in items:
            try:
                written += self._write_sample_items([item])
            except STORE_AWAY:
                self._pending_samples.append(item)
            except Exception:
                log.exception("dropped rows for %s that the store refused", getattr(item, "table", "components"))
                failed[getattr(item, "table", "components")] += len(getattr(item, "rows", [item]))
        if failed:
            with connection.write(self.db) as con:
                con.executemany("INSERT INTO ingest_rejects VALUES (now()::TIMESTAMP, NULL, 'samples', ?, ?)",
                                [(f"{table}_write_failed", n) for table, n in failed.items()])
        return written

    def _write_sample_items(self, items: list) -> int:
        """Rows go to the store table they name, in the way they say (Rows.once: INSERT OR IGNORE); a
        table the store does not have is counted in ingest_rejects, never silently dropped."""
        by_table: dict[tuple[str, bool], list[tuple]] = {}
        statuses, unknown = [], Counter()
        with connection.write(self.db) as con:
            if self._store_tables is None:      # the schema is migrated at start: read once
                self._store_tables = {name for (name,) in con.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'").fetchall()}
            tables = self._store_tables
            for item in items:
                if isinstance(item, Status):
                    statuses.append(item)
                elif item.table in tables:
                    by_table.setdefault((item.table, item.once), []).extend(item.rows)
                else:
                    unknown[item.table] += len(item.rows)
            on_lake = isinstance(self.db, lake.Lake)
            for (table, once), rows in by_table.items():
                marks = ", ".join("?" * len(rows[0]))
                if once and on_lake:      # no keys there: a row equal to one stored is the same row
                    con.execute(f'CREATE OR REPLACE TEMP TABLE _once AS FROM "{table}" LIMIT 0')
                    con.executemany(f"INSERT INTO _once VALUES ({marks})", rows)
                    con.execute(f'INSERT INTO "{table}" FROM _once EXCEPT FROM "{table}"')
                    con.execute("DROP TABLE _once")
                    continue
                verb = "INSERT OR IGNORE INTO" if once else "INSERT INTO"
                con.executemany(f'{verb} "{table}" VALUES ({marks})', rows)
            for st in statuses:
                con.execute(_UPSERT_COMPONENT, [st.component, st.kind, st.target, "up" if st.up else "down",
                                                st.checked_at, st.checked_at if st.up else None, st.checked_at,
                                                st.error])
            if unknown:
                log.error("samplers produced rows for tables the store does not have: %s", dict(unknown))
                con.executemany("INSERT INTO ingest_rejects VALUES (now()::TIMESTAMP, NULL, 'samples', ?, ?)",
                                [(f"unknown_table:{table}", n) for table, n in unknown.items()])
        return sum(len(r) for r in by_table.values())

    def record_source_status(self) -> None:
        """Each source's backlog and lag, and by the row itself that this collector is alive."""
        rows = []
        for source in self.sources:
            status = source.status() if hasattr(source, "status") else {}
            rows.append((source.name, *(status.get(k) for k in ("pending", "oldest_pending_s", "stream_length",
                                                                 "stream_pending", "error"))))
        with connection.write(self.db, exclusive=False) as con:
            con.executemany("""
                INSERT INTO ingest_sources (ts, source, pending, oldest_pending_s, stream_length, stream_pending, error,
                                            collector)
                VALUES (now()::TIMESTAMP, ?, ?, ?, ?, ?, ?, ?)
            """, [(*row, self.name) for row in rows])

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
        """Merge the rollup rows of the minutes ingested since the last compaction, and roll complete
        hours and days (and late minutes) into the request rollups' tiers."""
        if self.lease is not None:
            self._dirty_minutes = self.lease.take_ingested()
        if not self._dirty_minutes:
            return 0
        lo, hi = self._dirty_minutes
        try:
            with connection.write(self.db) as con:
                removed = compact(con, lo, hi + timedelta(minutes=1))
                roll_tiers(con, utcnow(), touched=(lo, hi + timedelta(minutes=1)))
        except Exception:
            if self.lease is not None:        # kept for the next compaction, whoever runs it
                self.lease.note_ingested(lo, hi)
            raise
        self._dirty_minutes = None
        return removed

    def maintain_lake(self) -> None:
        """DuckLake's CHECKPOINT (collectors.store.connection.checkpoint); nothing to do on the file."""
        if self.lease is not None:
            connection.checkpoint(self.db)

    def retention(self) -> dict[str, int]:
        with connection.write(self.db) as con:
            return purge(con, utcnow())

    def _isolated(self, what: str, fn, *args, default=None, **kwargs):
        try:
            result = fn(*args, **kwargs)
        except Exception as exc:
            # A target that stays down fails the same way every tick: one traceback, then one line each.
            # Errors quote URLs and DSNs (a Redis or database target's): no secret reaches a log line.
            text = redact(str(exc))
            if self._last_failure.get(what) == text:
                log.warning("%s failed again: %s", what, text)
            else:
                log.error("%s failed: %s", what, redact("".join(traceback.format_exception(exc)).rstrip()))
            self._last_failure[what] = text
            self._errors.append(f"{what}: {text}")
            return default
        self._last_failure.pop(what, None)
        return result

    # -- schedules -------------------------------------------------------------------------------
    def run_once(self) -> Report:
        """Ingest everything pending, compact, apply retention; raise the first error at the end."""
        self._errors = []
        report = self.ingest_pending()
        for t in self.sampler_threads:
            t.run_once()
        self._isolated("advisor", self.start_advisor, wait=True)
        self._isolated("samples", self.write_samples)
        self._isolated("source status", self.record_source_status)
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
            if now >= self._next_status:
                self._isolated("source status", self.record_source_status)
                self._next_status = now + STATUS_EVERY_S
            if self.lease is not None:
                holding = bool(self._isolated("duties lease", self.lease.renew, default=False))
                if holding != self._holding:
                    log.info("%s the duties (compaction, retention, alerts, advisor, maintenance) as %s",
                             "took" if holding else "lost", self.lease.holder)
                if holding and not self._holding and self.alerts is not None:
                    self.alerts.forget()        # another collector may have advanced them since we held them
                self._holding = holding
            if self._due("compaction", self.compact_every, now):
                self._isolated("compaction", self.compact)
            if self._due("retention", self.retention_every, now):
                self._isolated("retention", self.retention)
            if self.advise and self._due("advisor", self.advise_every, now, first=self._next_advice):
                self._isolated("advisor", self.start_advisor)
                self._next_advice = now + self.advise_every
            if self.alerts is not None and self._due("alerts", self.alerts.settings.interval_s, now):
                self._isolated("alerts", self.evaluate_alerts)
            if self.lease is not None and self._due("lake maintenance", LAKE_MAINTENANCE_EVERY_S, now):
                self._isolated("lake maintenance", self.maintain_lake)
            self._errors.clear()
            self.stop_event.wait(max(0.0, self.interval - (time.monotonic() - started)))
        # Last drain so that what the apps flushed at their own shutdown is not left behind.
        self.ingest_pending()
        for t in self.sampler_threads:
            t.thread.join(timeout=10)
        self._drain_notifier()
        self._isolated("samples", self.write_samples)
        if self.lease is None or self._holding:
            self._isolated("compaction", self.compact)
        if self.lease is not None and self._holding:
            self._isolated("duties lease", self.lease.release)    # another collector takes them at once
        for source in self.sources:
            source.close()
        log.info("collector stopped")

    def _due(self, job: str, every: float, now: float, first: float | None = None) -> bool:
        """Whether `job` runs this tick. On the file: every `every` seconds of this collector's clock (from
        `first` when given). On a lake: when this collector holds the duties and claims the job's period."""
        if self.lease is not None:
            return self._holding and bool(self._isolated(f"{job} schedule", self.lease.due, job, every, default=False))
        if first is not None:
            return now >= first
        if now - self._last_run.get(job, float("-inf")) < every:
            return False
        self._last_run[job] = now
        return True

    def stop(self, *_args) -> None:
        self.stop_event.set()

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self.stop)
        signal.signal(signal.SIGINT, self.stop)
