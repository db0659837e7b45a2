"""What a dashboard read costs on a fresh read connection against the process's shared (warm) one.

    .venv/bin/python bench/read_connection.py [DAYS] [REPEATS]      defaults: 7 days, 15 repeats

A fresh store (temporary directory) is filled by tests/seed_store.py for DAYS days (~75 k request
events a day, their per-minute histograms and rollups, deploys), the way the collector writes them.
Then, candidates round-robin (repeat r of every row before repeat r+1 of any), each row times one
`with read() as con:` block running dashboard queries as the Overview's load() does:

    fresh     before: every read() opens the file and closes it (on a copy of the store)
    shared    after: read() hands out a cursor of the connection kept open since the previous read

for three blocks: the sidebar's `services()`, `endpoint_percentiles` over 24 h, and the Overview's
whole first group (totals, endpoint_percentiles, endpoint_traffic, traffic_over_time, deploys; 24 h).
Medians of wall time (perf_counter), with min-max.

Last, what reuse costs a writer: a second process runs write() (one INSERT) 10 times, 0.5 s apart,
while this process keeps reading; the writer's median wait for the file is printed with the shared
connection idle between reads, and with reuse off. Nothing is asserted; the numbers are printed."""
from __future__ import annotations

import gc
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from seed_store import seed_store  # noqa: E402

from collectors.store import connection, read, utcnow  # noqa: E402
from dashboard import queries as q  # noqa: E402

DAYS = float(sys.argv[1]) if len(sys.argv) > 1 else 7
REPEATS = int(sys.argv[2]) if len(sys.argv) > 2 else 15
WRITES = 10

WRITER = """
import statistics, sys, time
from collectors.store import write
waits = []
for _ in range(int(sys.argv[2])):
    time.sleep(0.5)
    t = time.perf_counter()
    with write(sys.argv[1]) as con:
        waits.append(time.perf_counter() - t)
        con.execute("INSERT INTO deploys (ts, service, version, host) VALUES (now()::TIMESTAMP, 'bench', 'v', 'h')")
print(statistics.median(waits) * 1000, max(waits) * 1000)
"""


def blocks(now):
    since, until = now - timedelta(hours=24), now
    scope = {"since": since, "until": until, "service": None}
    return {
        "services()": lambda con: q.services(con),
        "endpoint_percentiles 24 h": lambda con: q.endpoint_percentiles(con, since=since, until=until),
        "Overview group, 24 h (5 queries)": lambda con: [
            q.totals(con, **scope), q.endpoint_percentiles(con, **scope), q.endpoint_traffic(con, **scope),
            q.traffic_over_time(con, **scope), q.deploys(con, since=since, until=until, service=None)],
    }


def timed(path, fn, *, shared: bool) -> float:
    """One read() block. `fresh` reads a copy of the store and closes the connection at the end of the
    block (timed), what read() did before reuse."""
    if not shared:
        path = path.with_name("fresh-" + path.name)
    gc.collect()
    t = time.perf_counter()
    with read(path) as con:
        fn(con)
    if not shared:
        connection.close_reads(path)
    return time.perf_counter() - t


def writer_wait(path, *, shared: bool) -> tuple[float, float]:
    """The writer's median and worst wait for the file while this process reads every 0.2 s."""
    os.environ["PERFDECK_READ_KEEP_S"] = "30" if shared else "0"
    connection.close_reads()
    stop = threading.Event()

    def reader():
        while not stop.is_set():
            with read(path) as con:
                q.services(con)
            time.sleep(0.2)

    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    try:
        out = subprocess.run([sys.executable, "-c", WRITER, str(path), str(WRITES)], cwd=ROOT, check=True,
                             capture_output=True, text=True, timeout=600).stdout.split()
    finally:
        stop.set()
        thread.join()
        os.environ.pop("PERFDECK_READ_KEEP_S")
    return float(out[0]), float(out[1])


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "perfdeck.duckdb"
        t = time.perf_counter()
        events = seed_store(path, days=DAYS)
        size = path.stat().st_size
        shutil.copyfile(path, path.with_name("fresh-" + path.name))
        print(f"store: {DAYS:g} days, {len(events):,} request events, {size / 2**20:.0f} MiB, "
              f"seeded in {time.perf_counter() - t:.1f} s; DuckDB {__import__('duckdb').__version__}, "
              f"{platform.python_implementation()} {platform.python_version()}, {os.cpu_count()} cores; "
              f"read settings {connection.read_settings()}")
        now = utcnow()
        rows = blocks(now)
        times = {(name, mode): [] for name in rows for mode in ("fresh", "shared")}
        for _ in range(REPEATS):
            for name, fn in rows.items():
                for mode in ("fresh", "shared"):
                    times[name, mode].append(timed(path, fn, shared=mode == "shared"))
        print(f"\nmedian of {REPEATS} (min-max), ms          fresh (before)           shared (after)      ratio")
        for name in rows:
            fresh, shared = times[name, "fresh"], times[name, "shared"]
            print(f"{name:<36} {ms(fresh):>22} {ms(shared):>22} {statistics.median(fresh) / statistics.median(shared):>8.1f}x")
        print(f"\nwriter in another process, {WRITES} writes 0.5 s apart, this process reading every 0.2 s:")
        for mode in ("fresh", "shared"):
            median, worst = writer_wait(path, shared=mode == "shared")
            print(f"  readers {mode:<7} writer's wait for the file: median {median:6.1f} ms, worst {worst:6.1f} ms")
        connection.close_reads()


def ms(values: list[float]) -> str:
    return f"{statistics.median(values) * 1000:.1f} ({min(values) * 1000:.1f}-{max(values) * 1000:.1f})"


if __name__ == "__main__":
    main()
