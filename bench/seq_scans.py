"""The Database page's `seq_scan_tables` against the SQL it had before (a lag() window over every sample).

    .venv/bin/python bench/seq_scans.py [TABLES] [DAYS] [EVERY_S]
                                        defaults: 60 tables, 7 days, a sample every 60 s (3.6 M rows)

Untimed set-up, in a temporary directory: a migrated store gets DAYS days, ending now, of the six
PostgreSQL table statistics the query reads (`table.seq_scan`, `idx_scan`, `seq_tup_read`,
`n_live_tup`, `n_dead_tup`, `size_bytes`) for TABLES tables, one sample each EVERY_S seconds, in time
order as the sampler writes them; every tenth table's counters are reset once mid-range.

Timed on one read-only connection, ranges of 1 h, 24 h and DAYS ending now, the median of 3 runs after
one untimed: `seq_scan_tables` as the page calls it, and the previous SQL (kept below) as the
reference. Printed: milliseconds, the ratio, and whether both give the same rows."""
from __future__ import annotations

import statistics
import sys
import tempfile
import time
from datetime import timedelta
from pathlib import Path

import duckdb
import pandas as pd

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from collectors.store import migrate, read, utcnow, write  # noqa: E402
from dashboard.queries import seq_scan_tables  # noqa: E402
from dashboard.queries.database import SEQ_SCAN_MIN_ROWS  # noqa: E402
from dashboard.queries.samplers import label_sql  # noqa: E402

# dashboard.queries.database.SEQ_SCANS_SQL as it was
PREVIOUS_SQL = f"""
WITH samples AS (
    SELECT target,
           {label_sql("table")} AS "table",
           name,
           ts,
           value,
           lag(value) OVER (PARTITION BY target, labels, name ORDER BY ts) AS previous
    FROM db_metrics
    WHERE ts >= $since
      AND ts < $until
      AND name IN ('table.seq_scan', 'table.idx_scan', 'table.seq_tup_read', 'table.n_live_tup',
                   'table.n_dead_tup', 'table.size_bytes')
),
-- Counter growth over the range: the sum of the rises between samples; a counter that went down
-- was reset (pg_stat_reset), so it grew by its new value in that interval.
g AS (
    SELECT target,
           "table",
           name,
           arg_max(value, ts) AS last,
           sum(CASE WHEN previous IS NULL THEN 0 WHEN value >= previous THEN value - previous ELSE value END)
               AS growth
    FROM samples
    GROUP BY target, "table", name
),
w AS (
    SELECT target,
           "table",
           CAST(max(growth) FILTER (WHERE name = 'table.seq_scan') AS BIGINT) AS seq_scans,
           CAST(coalesce(max(growth) FILTER (WHERE name = 'table.idx_scan'), 0) AS BIGINT) AS idx_scans,
           CAST(max(growth) FILTER (WHERE name = 'table.seq_tup_read') AS BIGINT) AS seq_rows_read,
           CAST(max(last) FILTER (WHERE name = 'table.n_live_tup') AS BIGINT) AS live_rows,
           CAST(max(last) FILTER (WHERE name = 'table.n_dead_tup') AS BIGINT) AS dead_rows,
           max(last) FILTER (WHERE name = 'table.size_bytes') AS size_bytes
    FROM g
    GROUP BY target, "table"
)
SELECT target,
       "table",
       seq_scans,
       idx_scans,
       seq_scans / nullif(seq_scans + idx_scans, 0) AS seq_share,
       seq_rows_read,
       live_rows,
       dead_rows,
       size_bytes,
       seq_scans > idx_scans AND coalesce(live_rows, 0) >= $min_rows AS flagged
FROM w
WHERE seq_scans > 0
ORDER BY flagged DESC, seq_rows_read DESC NULLS LAST, seq_scans DESC, target, "table"
"""


def build(path: Path, tables: int, days: int, every_s: int) -> int:
    until = utcnow().replace(microsecond=0)
    with write(path) as con:
        migrate(con)
        con.execute("""
            INSERT INTO db_metrics
            SELECT ts, 'pg', m.name, 'table=public.t' || t.i,
                   -- counters grow with time; every tenth table's counters restart halfway
                   CASE WHEN m.counter AND t.i % 10 = 0 AND ts >= $mid THEN epoch(ts) - epoch($mid)
                        WHEN m.counter THEN epoch(ts) - epoch($since)
                        ELSE 1000 * (t.i + 1) END * (t.i + 1) / 60
            FROM range($since, $until, to_seconds($every)) AS r(ts), range($tables) AS t(i),
                 (VALUES ('table.seq_scan', true), ('table.idx_scan', true), ('table.seq_tup_read', true),
                         ('table.n_live_tup', false), ('table.n_dead_tup', false), ('table.size_bytes', false))
                     AS m(name, counter)
            ORDER BY ts
        """, {"since": until - timedelta(days=days), "until": until, "mid": until - timedelta(days=days / 2),
              "every": every_s, "tables": tables})
        return con.execute("SELECT count(*) FROM db_metrics").fetchone()[0]


def timed(fn) -> tuple[float, pd.DataFrame]:
    fn()
    times, out = [], None
    for _ in range(3):
        start = time.perf_counter()
        out = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000, out


def main() -> None:
    tables, days, every_s = (int(a) for a in (sys.argv[1:] + ["60", "7", "60"][len(sys.argv) - 1:])[:3])
    with tempfile.TemporaryDirectory(prefix="perfdeck-bench-") as tmp:
        path = Path(tmp) / "perfdeck.duckdb"
        rows = build(path, tables, days, every_s)
        print(f"db_metrics: {rows:,} rows ({tables} tables, {days} days, a sample every {every_s} s)")
        print(f"{'range':>6} | {'seq_scan_tables ms':>18} | {'previous SQL ms':>15} | {'ratio':>6} | same rows")
        now = utcnow()
        with read(path) as con:
            for span in (timedelta(hours=1), timedelta(hours=24), timedelta(days=days)):
                params = {"since": now - span, "until": now}
                shipped_ms, shipped = timed(lambda p=params: seq_scan_tables(con, **p, max_rows=10_000))
                previous_ms, previous = timed(
                    lambda p=params: con.execute(PREVIOUS_SQL, p | {"min_rows": SEQ_SCAN_MIN_ROWS}).df())
                same = shipped.equals(previous.astype(shipped.dtypes.to_dict()))
                label = f"{span.days} d" if span.days else f"{span.seconds // 3600} h"
                print(f"{label:>6} | {shipped_ms:>18.0f} | {previous_ms:>15.0f} | {previous_ms / shipped_ms:>5.1f}x | "
                      f"{same}")


if __name__ == "__main__":
    duckdb.execute("SELECT 1")
    main()
