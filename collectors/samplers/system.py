"""The host sampler: CPU, load, memory, swap, disks, network and watched processes, via psutil.

Rows go to `system_metrics(ts, host, name, labels, value)` in long format, one row per metric and
label set. Everything that is a rate or a percentage of time (CPU, disk and network throughput, a
process's CPU) comes from the delta between two samples of this sampler, so the first sample has no
such row at all — never a made-up zero. Counters that go down (a NIC reset, a disk removed) start a
new baseline instead of giving a negative rate.

Watched processes are given as "pid:N", "cmd:<regex searched in the command line>" or a plain name
(matched against the process name or the basename of argv[0]). The collector's own process is always
watched. A process that vanishes is skipped; a metric psutil is not allowed to read (AccessDenied) is
left out; neither ever raises.

Labels are comma-separated key=value pairs: "cpu=0", "mount=/", "proc=gunicorn,pid=123".
"""
from __future__ import annotations

import os
import re
import socket
import time
from datetime import datetime

import psutil

from collectors.samplers import Rows, Sampler

# The metric names this sampler writes (the dashboard's Host page reads these). Name: (unit, labels, meaning)
METRICS: dict[str, tuple[str, str, str]] = {
    "cpu.percent": ("%", "", "all cores busy, 0-100, over the last interval"),
    "cpu.core_percent": ("%", "cpu=N", "one core busy, 0-100, over the last interval"),
    "cpu.count": ("cores", "", "logical cores"),
    "load.1m": ("", "", "load average over 1 minute"),
    "load.5m": ("", "", "load average over 5 minutes"),
    "load.15m": ("", "", "load average over 15 minutes"),
    "mem.total_bytes": ("B", "", "physical memory"),
    "mem.used_bytes": ("B", "", "memory used (psutil's definition)"),
    "mem.available_bytes": ("B", "", "memory available to new processes without swapping"),
    "mem.percent": ("%", "", "(total - available) / total"),
    "swap.total_bytes": ("B", "", "swap size"),
    "swap.used_bytes": ("B", "", "swap in use"),
    "swap.percent": ("%", "", "swap in use / swap size"),
    "disk.total_bytes": ("B", "mount=/path", "size of a mounted filesystem"),
    "disk.used_bytes": ("B", "mount=/path", "space used on it"),
    "disk.used_percent": ("%", "mount=/path", "space used, as df shows it"),
    "disk.read_bps": ("B/s", "", "bytes read from all disks per second over the last interval"),
    "disk.write_bps": ("B/s", "", "bytes written to all disks per second over the last interval"),
    "net.sent_bps": ("B/s", "", "bytes sent on all interfaces per second over the last interval"),
    "net.recv_bps": ("B/s", "", "bytes received on all interfaces per second over the last interval"),
    "proc.cpu_percent": ("%", "proc=name,pid=N", "CPU of one process over the last interval (100 = one core)"),
    "proc.rss_bytes": ("B", "proc=name,pid=N", "resident memory of one process"),
    "proc.threads": ("", "proc=name,pid=N", "threads of one process"),
    "proc.open_files": ("", "proc=name,pid=N", "open file descriptors (handles on Windows) of one process"),
}

# Filesystems that hold no user data (psutil's all=False already drops most "nodev" ones).
PSEUDO_FS = frozenset({
    "proc", "sysfs", "devtmpfs", "devpts", "tmpfs", "cgroup", "cgroup2", "pstore", "securityfs", "debugfs",
    "tracefs", "configfs", "fusectl", "mqueue", "hugetlbfs", "bpf", "autofs", "binfmt_misc", "rpc_pipefs",
    "nsfs", "ramfs", "squashfs", "efivarfs", "fuse.lxcfs", "fuse.portal", "iso9660",
})


def mounted_disks():
    """(mount point, psutil usage) of each real disk mounted once (no pseudo file systems, no snaps)."""
    seen = set()
    for part in psutil.disk_partitions(all=False):
        if part.fstype in PSEUDO_FS or part.mountpoint in seen or part.mountpoint.startswith("/snap/"):
            continue
        seen.add(part.mountpoint)
        try:
            yield part.mountpoint, psutil.disk_usage(part.mountpoint)
        except OSError:
            continue


def _label(value: object) -> str:
    """A label value that cannot break the "k=v,k=v" format."""
    return str(value).replace(",", "_").replace("=", "_")


def _busy_total(t) -> tuple[float, float]:
    """Busy and total CPU seconds of a psutil cpu_times() entry (guest time is already in user/nice)."""
    total = sum(t) - getattr(t, "guest", 0.0) - getattr(t, "guest_nice", 0.0)
    idle = t.idle + getattr(t, "iowait", 0.0)
    return total - idle, total


def _cpu_percent(before, after) -> float | None:
    b0, t0 = _busy_total(before)
    b1, t1 = _busy_total(after)
    if t1 <= t0:
        return None  # no time accounted between the samples: no rate
    # Kernel counters (iowait notably) can step backwards a little; clamp like psutil does.
    return max(0.0, min(100.0, 100.0 * max(0.0, b1 - b0) / (t1 - t0)))


class _Watch:
    """A process being watched: its psutil handle keeps the CPU times cpu_percent() diffs against."""

    def __init__(self, proc: psutil.Process, label: str):
        self.proc, self.label, self.primed = proc, label, False


class HostSampler(Sampler):
    kind = "host"

    def __init__(self, interval: float = 10.0, processes: list[str] = ()):
        self.interval = float(interval)
        self.name = self.target = socket.gethostname()
        self.pids: set[int] = {os.getpid()}
        self.names: set[str] = set()
        self.patterns: list[re.Pattern] = []
        for spec in processes or ():
            spec = spec.strip()
            if spec.startswith("pid:"):
                self.pids.add(int(spec[4:]))
            elif spec.startswith("cmd:"):
                self.patterns.append(re.compile(spec[4:]))
            elif spec:
                self.names.add(spec)
        self._watched: dict[int, _Watch] = {}
        self._cpu = None          # (total, per core) cpu_times of the previous sample
        self._io: dict[str, tuple[float, tuple[int, int]]] = {}   # what -> (monotonic, counters)

    # -- host-wide -------------------------------------------------------------------------------
    def _cpu_rows(self, row) -> None:
        now = (psutil.cpu_times(), psutil.cpu_times(percpu=True))
        before, self._cpu = self._cpu, now
        row("cpu.count", len(now[1]))
        if before is None:
            return
        total = _cpu_percent(before[0], now[0])
        if total is not None:
            row("cpu.percent", total)
        if len(before[1]) == len(now[1]):
            for i, (b, a) in enumerate(zip(before[1], now[1])):
                p = _cpu_percent(b, a)
                if p is not None:
                    row("cpu.core_percent", p, f"cpu={i}")

    def _rate_rows(self, row, what: str, counters: tuple[int, int] | None, names: tuple[str, str]) -> None:
        """Per-second rates of two monotonically increasing counters, from the previous sample."""
        if counters is None:
            self._io.pop(what, None)
            return
        now = time.monotonic()
        before, self._io[what] = self._io.get(what), (now, counters)
        if before is None:
            return
        elapsed = now - before[0]
        deltas = [a - b for a, b in zip(counters, before[1])]
        if elapsed <= 0 or any(d < 0 for d in deltas):
            return  # counters reset: this sample is the new baseline
        for name, d in zip(names, deltas):
            row(name, d / elapsed)

    def _disk_rows(self, row) -> None:
        for mountpoint, usage in mounted_disks():
            label = f"mount={_label(mountpoint)}"
            row("disk.total_bytes", usage.total, label)
            row("disk.used_bytes", usage.used, label)
            row("disk.used_percent", usage.percent, label)
        try:
            io = psutil.disk_io_counters(perdisk=False)
        except (OSError, RuntimeError):
            io = None
        self._rate_rows(row, "disk", (io.read_bytes, io.write_bytes) if io else None,
                        ("disk.read_bps", "disk.write_bps"))
        try:
            net = psutil.net_io_counters(pernic=False)
        except (OSError, RuntimeError):
            net = None
        self._rate_rows(row, "net", (net.bytes_sent, net.bytes_recv) if net else None,
                        ("net.sent_bps", "net.recv_bps"))

    # -- processes -------------------------------------------------------------------------------
    def _matches(self, info: dict) -> bool:
        name = info.get("name") or ""
        cmdline = info.get("cmdline") or []
        if self.names and (name in self.names or (cmdline and os.path.basename(cmdline[0]) in self.names)):
            return True
        if self.patterns and cmdline:
            text = " ".join(cmdline)
            return any(p.search(text) for p in self.patterns)
        return False

    def _watch(self, proc: psutil.Process, name: str | None = None) -> None:
        if proc.pid in self._watched:
            return
        try:
            if proc.status() == psutil.STATUS_ZOMBIE:
                return  # exited, not reaped yet: nothing left to measure
            name = name or proc.name()
        except (psutil.NoSuchProcess, psutil.ZombieProcess):
            return
        except psutil.AccessDenied:
            name = "?"
        self._watched[proc.pid] = _Watch(proc, f"proc={_label(name)},pid={proc.pid}")

    def _refresh_watched(self) -> None:
        # Forget processes that ended (or whose pid was reused: is_running() compares create times).
        for pid, w in list(self._watched.items()):
            try:
                alive = w.proc.is_running() and w.proc.status() != psutil.STATUS_ZOMBIE
            except (psutil.Error, OSError):
                alive = False
            if not alive:
                del self._watched[pid]
        for pid in self.pids:
            if pid not in self._watched:
                try:
                    self._watch(psutil.Process(pid))
                except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
                    pass  # not there (yet): looked for again next sample
        if self.names or self.patterns:
            for proc in psutil.process_iter(["name", "cmdline"]):
                try:
                    if proc.pid not in self._watched and self._matches(proc.info):
                        self._watch(proc, proc.info.get("name"))
                except (psutil.Error, OSError):
                    continue

    def _process_rows(self, row) -> None:
        self._refresh_watched()
        for pid, w in list(self._watched.items()):
            p = w.proc
            try:
                with p.oneshot():
                    for metric, read in (("proc.cpu_percent", lambda p=p: p.cpu_percent(interval=None)),
                                         ("proc.rss_bytes", lambda p=p: p.memory_info().rss),
                                         ("proc.threads", p.num_threads),
                                         ("proc.open_files", p.num_fds if hasattr(p, "num_fds") else p.num_handles)):
                        try:
                            value = read()
                        except psutil.AccessDenied:
                            continue
                        if metric == "proc.cpu_percent" and not w.primed:
                            w.primed = True  # psutil's first reading compares against nothing
                            continue
                        row(metric, value, w.label)
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                del self._watched[pid]  # vanished between two calls: skipped, and its partial rows stay

    # -- the sampler -----------------------------------------------------------------------------
    def collect(self, now: datetime) -> list[Rows]:
        rows: list[tuple] = []

        def row(name: str, value, labels: str = "") -> None:
            rows.append((now, self.name, name, labels, float(value)))

        self._cpu_rows(row)
        try:
            for name, value in zip(("load.1m", "load.5m", "load.15m"), psutil.getloadavg()):
                row(name, value)
        except (OSError, AttributeError):
            pass
        vm = psutil.virtual_memory()
        row("mem.total_bytes", vm.total)
        row("mem.used_bytes", vm.used)
        row("mem.available_bytes", vm.available)
        row("mem.percent", vm.percent)
        try:
            sw = psutil.swap_memory()
            row("swap.total_bytes", sw.total)
            row("swap.used_bytes", sw.used)
            row("swap.percent", sw.percent)
        except (OSError, RuntimeError):
            pass
        self._disk_rows(row)
        self._process_rows(row)
        return [Rows("system_metrics", rows)]
