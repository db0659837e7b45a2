"""Once-per-period work among the collectors of one lake: compaction, retention, alerts, the advisor and
the lake's own maintenance are done by one collector at a time, the holder of the duties lease, kept in
the lake's catalog database (PostgreSQL), where its rows are checked and changed atomically.

- The holder renews the lease every tick; when it stops cleanly it lets go at once, and when it dies
  the lease expires after TTL_S (PERFDECK_LEASE_TTL_S) and the next collector to ask takes it.
- Each job's period is claimed in the same database (`due`): a job runs when its last run is a period
  old, whoever holds the lease now, so a hand-over neither skips nor repeats a period. Every run is
  logged in perfdeck.duty_runs (job, holder, started_at).
- What the collectors ingested is noted as a range of minutes (`note_ingested`), which the holder's
  compaction takes (`take_ingested`), so it merges the rows every collector wrote, not only its own.

On the DuckDB file there is one collector and none of this applies (the daemon keeps its own clocks)."""
from __future__ import annotations

import os
from datetime import datetime

from collectors.store import lake as lake_backend

TTL_S = 30.0
DUTIES = "duties"
_DDL = """
CREATE SCHEMA IF NOT EXISTS perfdeck;
CREATE TABLE IF NOT EXISTS perfdeck.leases (
    name text PRIMARY KEY, holder text NOT NULL, expires_at timestamptz NOT NULL);
CREATE TABLE IF NOT EXISTS perfdeck.jobs (job text PRIMARY KEY, last_run timestamptz NOT NULL);
CREATE TABLE IF NOT EXISTS perfdeck.duty_runs (job text NOT NULL, holder text NOT NULL, started_at timestamptz NOT NULL);
CREATE TABLE IF NOT EXISTS perfdeck.ingested (name text PRIMARY KEY, first_minute timestamp, last_minute timestamp);
"""


def holder_name() -> str:
    from collectors.sources import collector_name
    return f"{collector_name()}:{os.getpid()}"


class Lease:
    def __init__(self, lake: lake_backend.Lake, holder: str | None = None, ttl_s: float | None = None):
        self.lake, self.holder = lake, holder or holder_name()
        self.ttl_s = ttl_s if ttl_s is not None else float(os.environ.get("PERFDECK_LEASE_TTL_S") or TTL_S)
        con = lake_backend.session(lake)
        with con.transaction():
            con.execute("SELECT pg_advisory_xact_lock(%s)", [lake_backend.LOCK_KEY + 2])   # one CREATE at a time
            con.execute(_DDL)

    def renew(self) -> bool:
        """Take the lease if it is free or expired, renew it if ours; whether we hold it now."""
        row = lake_backend.session(self.lake).execute("""
            INSERT INTO perfdeck.leases AS l VALUES (%s, %s, now() + make_interval(secs => %s))
            ON CONFLICT (name) DO UPDATE SET holder = excluded.holder, expires_at = excluded.expires_at
            WHERE l.holder = excluded.holder OR l.expires_at < now()
            RETURNING holder
        """, [DUTIES, self.holder, self.ttl_s]).fetchone()
        return row is not None

    def release(self) -> None:
        lake_backend.session(self.lake).execute(
            "DELETE FROM perfdeck.leases WHERE name = %s AND holder = %s", [DUTIES, self.holder])

    def due(self, job: str, every_s: float) -> bool:
        """Claim this period of `job` (for the lease holder): True once per period across the collectors."""
        con = lake_backend.session(self.lake)
        with con.transaction():
            row = con.execute("""
                INSERT INTO perfdeck.jobs AS j VALUES (%s, now())
                ON CONFLICT (job) DO UPDATE SET last_run = now()
                WHERE j.last_run <= now() - make_interval(secs => %s)
                RETURNING job
            """, [job, every_s]).fetchone()
            if row is not None:
                con.execute("INSERT INTO perfdeck.duty_runs VALUES (%s, %s, now())", [job, self.holder])
        return row is not None

    def note_ingested(self, first: datetime, last: datetime) -> None:
        lake_backend.session(self.lake).execute("""
            INSERT INTO perfdeck.ingested AS i VALUES ('minutes', %s, %s)
            ON CONFLICT (name) DO UPDATE SET first_minute = least(i.first_minute, excluded.first_minute),
                                             last_minute = greatest(i.last_minute, excluded.last_minute)
        """, [first, last])

    def take_ingested(self) -> tuple[datetime, datetime] | None:
        row = lake_backend.session(self.lake).execute("""
            DELETE FROM perfdeck.ingested WHERE name = 'minutes' RETURNING first_minute, last_minute
        """).fetchone()
        return (row[0], row[1]) if row and row[0] is not None else None
