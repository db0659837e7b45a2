"""Every page of the dashboard rendered in Chromium at 24 h, 7 d and 30 d, cold and cached, with the
dashboard's memory.

    nice .venv/bin/python bench/pages.py [--events N] [--days D] [--series S] [--store FILE] [--keep]
                                         [--port P] [--pages Overview,Cost] [--restart]

defaults: 1,000,000 raw events over the last 7 days and 30 days of per-minute history before them, 30
endpoints x 4 services, built with bench/scale.py's builders (through the store's own write path; see
its docstring). --store reuses a store built before (with --keep) instead of building one.

`perfdeck dashboard --db FILE --port P` is started headless in its own process group (stopped with it
at the end, on an error or on Ctrl-C). For each page of the sidebar navigation and each range
(`?range=Last+24+hours` ...) one Chromium page loads the URL twice:
- cold: the first visit of that page and range since the dashboard started (nothing of it in
  Streamlit's cache; with --restart the dashboard is restarted before every cold visit, so nothing at
  all is cached, not even the sidebar's service list or the process's read connection);
- cached: the same URL again right after, a new session served from the cache shared across sessions.
  The cache keeps an entry 10 s (CACHE_TTL_S) and relative ranges end at "now" rounded down to 10 s,
  so a cached visit that starts in a later 10-s slot than the cold one is marked `*` (it may have
  missed the cache).
Each visit is timed from `goto` until the page has settled: the app's script state is `notRunning`
(the attribute Streamlit's own tests read on `stApp`), a title is shown, no spinner, and every Plotly
chart has drawn its SVG, all held for QUIET_S (not counted). The dashboard's process tree (psutil, RSS
summed) is sampled every 50 ms: the peak during both visits and the RSS once the cached one settled.
Exceptions shown on a page (`stException`) and "too slow" panels are flagged. Nothing is asserted."""
from __future__ import annotations

import argparse
import contextlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from datetime import UTC, datetime
from pathlib import Path

import psutil

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(BENCH))

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
RANGES = {"24 h": "Last 24 hours", "7 d": "Last 7 days", "30 d": "Last 30 days"}   # dashboard.widgets.RANGES labels
QUIET_S = 1.0
PAGE_TIMEOUT_S = 300
CACHE_SLOT_S = 10       # dashboard.widgets.NOW_GRANULARITY_S
# One look at the page: is a script running, is anything still loading, what does it show.
PROBE = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  const charts = [...document.querySelectorAll('[data-testid="stPlotlyChart"]')];
  return {
    state: app ? app.getAttribute('data-test-script-state') : null,
    title: document.querySelectorAll('[data-testid="stMain"] h1').length > 0,
    busy: document.querySelectorAll('[data-testid="stSpinner"], [data-testid="stSkeleton"]').length
          + charts.filter(c => !c.querySelector('.main-svg')).length,
    exceptions: document.querySelectorAll('[data-testid="stException"]').length,
    too_slow: [...document.querySelectorAll('[data-testid="stAlertContentWarning"]')]
              .filter(a => a.innerText.includes('Too slow')).length,
  };
}"""


# ---- store --------------------------------------------------------------------------------------

def build_store(path: Path, events: int, days: int, n_series: int) -> None:
    """bench/scale.py's store: raw events over its 7-day raw window, `days` of per-minute history
    before it, migrated and written through collectors.store."""
    import scale

    from collectors.store import connection, migrate

    keys = scale.series(n_series)
    t0 = time.perf_counter()
    with connection.write(path) as con:
        migrate(con)
    scale.build_raw(path, events, keys, time.time())
    scale.build_history(path, days, keys, scale.utcnow())
    print(f"store: {events:,} raw events over {scale.RAW_DAYS} days, {days} days of history before them, "
          f"{len(keys)} series; {path.stat().st_size / 2**30:.2f} GiB; built in {time.perf_counter() - t0:.0f} s",
          flush=True)


@contextlib.contextmanager
def store_for(args):
    """The store to serve: --store as given, or a fresh one in a temporary folder (removed unless --keep)."""
    if args.store:
        yield args.store
        return
    folder = Path(tempfile.mkdtemp(prefix="perfdeck-bench-"))
    path = folder / "perfdeck.duckdb"
    try:
        build_store(path, args.events, args.days, args.series)
        yield path
    finally:
        if args.keep:
            print(f"kept: {path}")
        else:
            for f in folder.iterdir():
                f.unlink()
            folder.rmdir()


def store_options(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--events", type=int, default=1_000_000, help="raw request events (last 7 days)")
    ap.add_argument("--days", type=int, default=30, help="days of per-minute history before the raw window")
    ap.add_argument("--series", type=int, default=30, help="endpoints, spread over 4 services")
    ap.add_argument("--store", type=Path, help="a store built before: serve it as it is")
    ap.add_argument("--keep", action="store_true", help="keep the built store and print its path")
    ap.add_argument("--port", type=int, default=0, help="dashboard port (default: a free one)")


# ---- the dashboard ------------------------------------------------------------------------------

def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Dashboard:
    """`perfdeck dashboard` on `store` in its own process group; `stop()` ends the whole group."""

    def __init__(self, store: Path, port: int, log: Path):
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        cli = ROOT / ".venv" / "bin" / "perfdeck"
        env = {**os.environ, "STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false"}
        with log.open("w") as out:
            self.proc = subprocess.Popen([str(cli), "dashboard", "--db", str(store), "--port", str(self.port),
                                          "--server.headless", "true"], cwd=ROOT, env=env, stdout=out,
                                         stderr=subprocess.STDOUT, start_new_session=True)
        deadline = time.monotonic() + 90
        while True:
            try:
                with urllib.request.urlopen(f"{self.url}/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"dashboard did not start:\n{log.read_text()}")
            time.sleep(0.3)
        self.psutil = psutil.Process(self.proc.pid)

    def tree(self) -> list[psutil.Process]:
        try:
            return [self.psutil, *self.psutil.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def rss(self) -> int:
        total = 0
        for p in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return total

    def cpu_s(self) -> float:
        total = 0.0
        for p in self.tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def stop(self) -> None:
        """SIGTERM the group, wait for every member, SIGKILL what is left after 15 s."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            self.proc.poll()
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


@contextlib.contextmanager
def serving(store: Path, port: int, log: Path):
    dash = Dashboard(store, port, log)
    try:
        yield dash
    finally:
        dash.stop()


class RssSampler(threading.Thread):
    """The dashboard tree's RSS every `every` s; `mark()` starts a new peak."""

    def __init__(self, dash: Dashboard, every: float = 0.05):
        super().__init__(daemon=True)
        self.dash, self.every, self.peak, self.last = dash, every, 0, 0
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            self.last = self.dash.rss()
            self.peak = max(self.peak, self.last)
            self.done.wait(self.every)

    def mark(self) -> None:
        self.peak = self.last = self.dash.rss()


@contextlib.contextmanager
def interrupts_as_exceptions():
    """SIGTERM ends the run like Ctrl-C does, through the `finally` blocks that stop the dashboard."""
    def raise_interrupt(*_):
        raise KeyboardInterrupt
    previous = signal.signal(signal.SIGTERM, raise_interrupt)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


# ---- the browser --------------------------------------------------------------------------------

def settle(page, t0: float) -> tuple[float, dict]:
    """Seconds from t0 until the page settled (see the module docstring), and the last probe."""
    deadline = t0 + PAGE_TIMEOUT_S
    quiet_since = None
    while True:
        probe = page.evaluate(PROBE)
        now = time.perf_counter()
        if probe["state"] == "notRunning" and probe["title"] and not probe["busy"]:
            quiet_since = quiet_since or now
            if now - quiet_since >= QUIET_S:
                return quiet_since - t0, probe
        else:
            quiet_since = None
        if now > deadline:
            return float("nan"), probe
        page.wait_for_timeout(50)


def visit(page, url: str) -> tuple[float, dict]:
    t0 = time.perf_counter()
    page.goto(url, wait_until="commit", timeout=PAGE_TIMEOUT_S * 1000)
    return settle(page, t0)


def nav_pages(page, base: str) -> list[tuple[str, str]]:
    """(title, URL path) of every page in the sidebar navigation, in its order."""
    visit(page, base)
    links = page.locator('[data-testid="stSidebarNavLink"]')
    found = []
    for i in range(links.count()):
        link = links.nth(i)
        title = link.inner_text().split("\n")[-1].strip()
        found.append((title, urllib.parse.urlparse(link.get_attribute("href")).path))
    return found


def wait_for_slot_start() -> None:
    """Start just after a 10-s boundary, so a quick cold visit and the cached one share a cache slot."""
    time.sleep((CACHE_SLOT_S - time.time() % CACHE_SLOT_S) + 0.1)


def measure(store: Path, args) -> list[dict]:
    from playwright.sync_api import sync_playwright

    rows = []
    with tempfile.TemporaryDirectory(prefix="perfdeck-bench-log-") as tmp, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        context = browser.new_context(viewport={"width": 1500, "height": 1200})
        page = context.new_page()
        log = Path(tmp) / "server.log"
        dash = Dashboard(store, args.port, log)
        try:
            titles = nav_pages(page, dash.url)
            wanted = args.pages.split(",") if args.pages else [t for t, _ in titles]
            titles = [(t, p) for t, p in titles if t in wanted]
            print(f"pages: {', '.join(t for t, _ in titles)}", flush=True)
            if not args.restart:            # the look at the navigation filled the cache: start again
                dash.stop()
                dash = Dashboard(store, args.port, log)
            sampler = RssSampler(dash)
            sampler.start()
            for title, path in titles:
                for short, label in RANGES.items():
                    if args.restart:
                        sampler.done.set()
                        dash.stop()
                        dash = Dashboard(store, args.port, log)
                        sampler = RssSampler(dash)
                        sampler.start()
                    url = f"{dash.url}{path}?{urllib.parse.urlencode({'range': label})}"
                    page.goto("about:blank")
                    wait_for_slot_start()
                    sampler.mark()
                    slot = int(time.time() // CACHE_SLOT_S)
                    cold, probe_cold = visit(page, url)
                    page.goto("about:blank")
                    same_slot = int(time.time() // CACHE_SLOT_S) == slot
                    cached, probe_cached = visit(page, url)
                    row = {"page": title, "range": short, "cold": cold, "cached": cached, "same_slot": same_slot,
                           "peak": sampler.peak, "after": dash.rss(),
                           "exceptions": max(probe_cold["exceptions"], probe_cached["exceptions"]),
                           "too_slow": max(probe_cold["too_slow"], probe_cached["too_slow"])}
                    rows.append(row)
                    print(line(row), flush=True)
            sampler.done.set()
        finally:
            dash.stop()
            browser.close()
    return rows


HEADER = f"{'page':<10} {'range':>5} {'cold s':>8} {'cached s':>9} {'RSS MiB peak':>13} {'after':>7}  flags"


def line(row: dict) -> str:
    flags = []
    if row["exceptions"]:
        flags.append(f"EXCEPTION x{row['exceptions']}")
    if row["too_slow"]:
        flags.append(f"too slow x{row['too_slow']}")
    cached = f"{row['cached']:.2f}" + ("" if row["same_slot"] else "*")
    return (f"{row['page']:<10} {row['range']:>5} {row['cold']:>8.2f} {cached:>9} {row['peak'] / 2**20:>13.0f} "
            f"{row['after'] / 2**20:>7.0f}  {' '.join(flags)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    store_options(ap)
    ap.add_argument("--pages", help="comma-separated page titles (default: every page in the navigation)")
    ap.add_argument("--restart", action="store_true", help="restart the dashboard before every cold visit")
    args = ap.parse_args()
    if not Path(CHROMIUM).exists():
        sys.exit(f"needs Debian's chromium at {CHROMIUM}")
    with interrupts_as_exceptions(), store_for(args) as store:
        print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
              f"times to settled in Chromium; RSS of the dashboard's process tree", flush=True)
        print(HEADER, flush=True)
        rows = measure(store, args)
        print(f"\n{HEADER}")
        for row in rows:
            print(line(row))
        print("* the cached visit began in a later 10-s slot than the cold one: it may have missed the cache")


if __name__ == "__main__":
    main()
