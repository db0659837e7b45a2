"""What the batch-id duplicate check costs by how many ids the store keeps: why ids are kept for the
raw window only (at 16 processes flushing every second, 7 days hold ~9.7 M ids; 400 days held ~553 M).

    .venv/bin/python bench/idempotency.py [ROWS ...]        default: 1,000,000 and 10,000,000

Set-up (untimed): a fresh DuckDB file migrated by collectors.store.migrations, then ROWS rows of
`ingested_batches` spread evenly over the last 7 days (the raw window the ids are kept for), in
time order as the collector appends them: inserted by one INSERT ... SELECT over range(), since
writing millions of real batches would take the set-up minutes for no difference in the table.

Timed (median of REPEATS, wall and process CPU): one transaction's check of 500 new batch ids
(collectors.store.ingest.already_ingested), on a connection opened for it as the collector's write()
opens one (the first query of a connection reads what it needs from disk), and on a warm one. Nothing
is asserted."""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from pathlib import Path

import duckdb

from collectors.store import migrations
from collectors.store.ingest import already_ingested

REPEATS = 7


def build(path: Path, rows: int) -> None:
    con = duckdb.connect(str(path))
    con.begin()
    migrations.migrate(con)
    con.commit()
    con.execute(f"""
        INSERT INTO ingested_batches
        SELECT md5(i::VARCHAR), 'spool:data/spool', 'svc-' || (i % 16), 'host-' || (i % 4), 1000 + i % 16, 500,
               now()::TIMESTAMP - INTERVAL 7 DAY + to_microseconds(CAST(i * (7 * 86400e6 / {rows}) AS BIGINT))
        FROM range({rows}) AS t(i)
    """)
    con.execute("CHECKPOINT")
    con.close()


def fresh(path: Path, check) -> None:
    """`check` on a connection opened for it, as each write transaction of the collector has."""
    with duckdb.connect(str(path)) as con:
        con.begin()
        check(con)
        con.rollback()


def timed(fn) -> tuple[float, float]:
    walls, cpus = [], []
    for _ in range(REPEATS):
        w, c = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w)
        cpus.append(time.process_time() - c)
    return statistics.median(walls) * 1000, statistics.median(cpus) * 1000


def measure(path: Path, rows: int) -> None:
    build(path, rows)
    ids = [f"new{i:029d}" for i in range(500)]

    def check(con):
        return already_ingested(con, ids)

    fresh_ms = timed(lambda: fresh(path, check))
    with duckdb.connect(str(path)) as con:
        warm_ms = timed(lambda: check(con))
    print(f"{rows:>12,}  {fresh_ms[0]:>8.1f} ({fresh_ms[1]:>5.1f})  {warm_ms[0]:>8.1f} ({warm_ms[1]:>5.1f})")


def main() -> None:
    sizes = [int(x) for x in sys.argv[1:]] or [1_000_000, 10_000_000]
    print("one check of 500 new ids; median ms, wall (process CPU)")
    print(f"{'ids kept':>12}  {'fresh connection':>16}  {'warm':>14}")
    for rows in sizes:
        with tempfile.TemporaryDirectory() as tmp:
            measure(Path(tmp) / "store.duckdb", rows)


if __name__ == "__main__":
    main()
