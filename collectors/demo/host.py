"""Host samples for the demo's backfilled history, so the Host page's charts cover the same days as the
requests instead of only the minutes since the demo started.

There is no way to sample the past, so these are made up, and marked as such: every row carries the
label `demo=backfill` (next to the sampler's own labels, e.g. "mount=/,demo=backfill"), which a query
can filter on and which `perfdeck export` shows. They are derived, not random: each series starts from
this host's reading now (the sampler's own metric names, host name, mounts, total memory, cores, the
demo's own processes by name and pid), so the history meets the live samples where they begin, and
follows the backfilled traffic back in time (busier afternoons, quiet nights, weekends) with a little
autocorrelated noise. One sample a minute (the sampler takes one every 10 s): enough for any range
the Host page draws from a day up, ~30 rows a minute in all.

They go to the `system_metrics` table the host sampler writes, in one short write transaction of
their own (the store's write discipline; ~130,000 rows for 4 days in well under a second, where the
daemon's row-by-row sample insert would hold the store for half a minute)."""
from __future__ import annotations

import math
import os
from datetime import datetime, timezone

import numpy as np
import psutil

from collectors.samplers.system import _label, mounted_disks

MARK = "demo=backfill"
STEP_S = 60.0


def _labels(labels: str = "") -> str:
    return f"{labels},{MARK}" if labels else MARK


def _now_reading(pids: list[int]) -> dict:
    """What the host looks like now: the anchors of the made-up history."""
    vm = psutil.virtual_memory()
    try:
        sw = psutil.swap_memory()
        swap = (sw.total, sw.used)
    except (OSError, RuntimeError):
        swap = None
    mounts = [(mountpoint, usage.total, usage.used) for mountpoint, usage in mounted_disks()]
    procs = []
    for pid in pids:
        try:
            p = psutil.Process(pid)
            procs.append((p.name(), pid, p.memory_info().rss, p.num_threads()))
        except (psutil.Error, OSError):
            continue
    return {"cores": psutil.cpu_count() or 1, "mem": (vm.total, vm.used),
            "swap": swap, "mounts": mounts, "procs": procs}


def host_history(host: str, start: float, end: float, *, pids: list[int] | None = None, seed: int = 17,
                 reading: dict | None = None) -> list[tuple]:
    """`system_metrics` rows (ts, host, name, labels, value), one sample a minute from `start` to
    `end` (epoch seconds), every row labelled MARK. `pids`: the processes to give a history (default
    this one, the demo's shop and collector); `reading`: the anchors (default: this host now)."""
    from collectors.demo.backfill import diurnal

    reading = reading or _now_reading(pids or [os.getpid()])
    times = np.arange(math.ceil(start / STEP_S) * STEP_S, end, STEP_S)
    if len(times) == 0:
        return []
    rng = np.random.default_rng(seed)
    busy = np.array([diurnal(t) for t in times])          # 0.1..1, the traffic's shape
    busy_now = max(diurnal(end), 0.1)
    cores = reading["cores"]

    def noise(sigma: float, keep: float = 0.97) -> np.ndarray:   # AR(1): wanders, does not flicker
        out, x = np.empty(len(times)), 0.0
        for i, e in enumerate(rng.normal(0.0, sigma * math.sqrt(1 - keep * keep), len(times))):
            x = keep * x + e
            out[i] = x
        return out

    # CPU: a modest box following the traffic (not the reading now: the backfill itself keeps a core busy).
    cpu = np.clip((4.0 + 22.0 * busy) * np.exp(noise(0.15)) + rng.normal(0, 0.6, len(times)), 0.3, 100)
    load = cores * cpu / 100 * np.exp(noise(0.1))
    total, used_now = reading["mem"]
    mem_used = np.clip(used_now * (0.94 + 0.06 * busy / busy_now) * np.exp(noise(0.02, 0.995)), 0, total)
    traffic = busy * (1 + noise(0.1))
    series: list[tuple[str, str, np.ndarray]] = [
        ("cpu.count", "", np.full(len(times), float(cores))),
        ("cpu.percent", "", cpu),
        ("load.1m", "", load),
        ("load.5m", "", load * 0.97),
        ("load.15m", "", load * 0.94),
        ("mem.total_bytes", "", np.full(len(times), float(total))),
        ("mem.used_bytes", "", mem_used),
        ("mem.available_bytes", "", total - mem_used),
        ("mem.percent", "", 100 * mem_used / total),
        ("disk.read_bps", "", np.clip(40e3 + 250e3 * traffic, 0, None)),
        ("disk.write_bps", "", np.clip(120e3 + 900e3 * traffic, 0, None)),     # the spool and the store
        ("net.recv_bps", "", np.clip(15e3 + 180e3 * traffic, 0, None)),
        ("net.sent_bps", "", np.clip(20e3 + 420e3 * traffic, 0, None)),
    ]
    if reading["swap"] is not None:
        swap_total, swap_used = reading["swap"]
        series += [("swap.total_bytes", "", np.full(len(times), float(swap_total))),
                   ("swap.used_bytes", "", np.full(len(times), float(swap_used))),
                   ("swap.percent", "", np.full(len(times), 100.0 * swap_used / swap_total if swap_total else 0.0))]
    # Disks fill slowly towards their size now (the store and the spool grow with the history).
    growth = (times - end) / 86_400.0 * 2e8                                       # ~200 MB a day
    for mount, size, used in reading["mounts"]:
        u = np.clip(used + growth, 0, size)
        label = f"mount={_label(mount)}"
        series += [("disk.total_bytes", label, np.full(len(times), float(size))), ("disk.used_bytes", label, u),
                   ("disk.used_percent", label, 100 * u / size)]
    for i, (name, pid, rss, threads) in enumerate(reading["procs"]):
        label = f"proc={_label(name)},pid={pid}"
        share = 0.55 if i == 0 else 0.1                                       # the shop does the work
        series += [("proc.cpu_percent", label, np.clip(cpu * cores * share * np.clip(traffic, 0, None), 0, None)),
                   ("proc.rss_bytes", label, rss * (0.9 + 0.1 * busy / busy_now) * np.exp(noise(0.02, 0.995))),
                   ("proc.threads", label, np.full(len(times), float(threads))),
                   ("proc.open_files", label, np.full(len(times), 12.0 if i else 40.0))]
    stamps = [datetime.fromtimestamp(t, timezone.utc).replace(tzinfo=None) for t in times]
    return [(ts, host, name, _labels(labels), float(v))
            for name, labels, values in series for ts, v in zip(stamps, values.tolist())]


def backfill_host(collector, start: float, end: float, *, pids: list[int] | None = None) -> int:
    """Write the host history from `start` to `end` into `collector`'s store, as its host sampler's
    host; returns the rows written (0 when the collector samples no host)."""
    import pandas as pd

    from collectors.samplers.system import HostSampler
    from collectors.store import connection

    host = next((t.sampler.name for t in collector.sampler_threads if isinstance(t.sampler, HostSampler)), None)
    if host is None:
        return 0
    rows = host_history(host, start, end, pids=pids)
    if not rows:
        return 0
    frame = pd.DataFrame(rows, columns=["ts", "host", "name", "labels", "value"])
    with connection.write(collector.db) as con:
        con.register("demo_host_history", frame)
        con.execute("INSERT INTO system_metrics SELECT ts, host, name, labels, value FROM demo_host_history")
        con.unregister("demo_host_history")
    return len(rows)
