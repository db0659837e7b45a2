"""The demo's live traffic: the same workload, on the real clock, at the rate the backfill's diurnal
shape gives for the current time (so live traffic continues the history without a step).

The shop runs inside `perfdeck demo` itself; the worker runs as its own process, because the SDK
reports one service per process:

    python -m collectors.demo.live worker DATA_DIR [--parent-pid PID]

It stops on SIGINT or SIGTERM, or when its parent process goes away, and flushes before exiting.

While it serves, the app's in-process caches are registered with sdk.register_cache, so the
dashboard's "Clear an in-process cache" action reaches them (the backfill's throwaway apps are not).

The live shop also follows the dashboard's demo switch (SlowSwitch): "Deploy a slow build" deploys
VERSION_SLOW, switching it off rolls back to VERSION_AFTER, each with a deploy marker (the rollback's
labelled VERSION_ROLLBACK).

Live shop traffic never drops below LIVE_MIN_SHOP_RPS, even at night: the health checks assess an
endpoint only with enough requests in their 3-minute window (min_samples), and the demo's switch must
show on /search at any hour. At night, live traffic therefore steps up from the history's rate."""
from __future__ import annotations

import argparse
import os
import random
import signal
import threading
import time
from collections.abc import Callable
from pathlib import Path

from collectors import sdk
from dashboard.demo_switch import read_switch

LIVE_MIN_SHOP_RPS = 1.0     # ~36 /search requests per 3-minute window, never under min_samples = 20
POLL_S = 1.0                # the switch file is checked at most this often


def live_shop_rate(ts: float) -> float:
    from collectors.demo.backfill import shop_rate

    return max(shop_rate(ts), LIVE_MIN_SHOP_RPS)


class SlowSwitch:
    """Applies the dashboard's demo switch (dashboard.demo_switch: a JSON file) to the live shop.

    On: the shop runs VERSION_SLOW from now on (its /search wait ramps up from `slow_since`), with a
    deploy marker. Off: back to VERSION_AFTER, with a VERSION_ROLLBACK marker (the rollback: a plain
    VERSION_AFTER marker would stand for the original deploy in Compare). At start the file's state
    is applied too; it is marked, as a new deploy, only when it differs from the version the store's
    history ends with (`history_version`, a deploy marker; None: unknown, never marked). A restarted
    demo thus keeps a slow build and its ramp without a second marker."""

    def __init__(self, path: Path, shop, *, history_version: str | None = None):
        from collectors.demo.workload import VERSION_AFTER, VERSION_SLOW, running_version

        self.path, self.shop = Path(path), shop
        history_version = running_version(history_version)
        self.slow = False
        self._checked = time.monotonic()
        self._stamp = self._stat()
        state = read_switch(self.path)
        version = VERSION_SLOW if state["slow"] else VERSION_AFTER
        if history_version is not None and history_version != version:
            self._apply(state["slow"], since=shop.clock())
        elif state["slow"]:
            self._apply(True, since=state["changed_at"], mark=False)

    def _stat(self) -> tuple | None:
        try:
            st = os.stat(self.path)
        except OSError:
            return None
        return st.st_mtime_ns, st.st_size

    def poll(self, *, force: bool = False) -> bool:
        """Look at the file (at most once per POLL_S unless `force`); True when it changed the shop."""
        if not force and time.monotonic() - self._checked < POLL_S:
            return False
        self._checked = time.monotonic()
        stamp = self._stat()
        if stamp == self._stamp:
            return False
        self._stamp = stamp
        slow = read_switch(self.path)["slow"]
        if slow == self.slow:
            return False
        self._apply(slow, since=self.shop.clock())
        return True

    def _apply(self, slow: bool, *, since: float, mark: bool = True) -> None:
        from collectors.demo.workload import VERSION_AFTER, VERSION_ROLLBACK, VERSION_SLOW

        self.slow = slow
        self.shop.version = VERSION_SLOW if slow else VERSION_AFTER
        self.shop.slow_since = since if slow else None
        if mark:
            sdk.mark_deploy(VERSION_SLOW if slow else VERSION_ROLLBACK)


def live_caches(app) -> list:
    """The app's LRU caches: its own (the shop's product and customer caches) and its LLM client's."""
    from collectors.demo.workload import LRUCache

    found = [v for v in vars(app).values() if isinstance(v, LRUCache)]
    llm = getattr(app, "llm", None)
    return found + ([llm.cache] if llm is not None else [])


def _wait(stop: threading.Event, seconds: float, poll: Callable[[], object] | None) -> bool:
    """Wait `seconds`, calling `poll` at least once a second meanwhile; True when `stop` was set."""
    if poll is None:
        return stop.wait(seconds)
    deadline = time.monotonic() + seconds
    while True:
        poll()
        left = deadline - time.monotonic()
        if left <= 0:
            return stop.is_set()
        if stop.wait(min(left, POLL_S)):
            return True


def run_live(app, stop: threading.Event, rate, *, parent_pid: int | None = None, min_rate: float = 0.05,
             seed: int | None = None, poll: Callable[[], object] | None = None) -> int:
    """Serve Poisson arrivals at rate(now) requests/s until `stop` is set, with the app's caches
    registered for clearing from the dashboard, calling `poll` (e.g. SlowSwitch.poll) between
    requests and at least once a second. Returns requests served."""
    rng = random.Random(seed)
    served = 0
    unregister = [cache.register() for cache in live_caches(app)]
    try:
        while not stop.is_set():
            if _wait(stop, rng.expovariate(max(rate(time.time()), min_rate)), poll):
                break
            if parent_pid is not None and os.getppid() != parent_pid:
                break                              # orphaned: the demo that started us is gone
            app.serve(app.pick())
            served += 1
    finally:
        for undo in unregister:
            undo()
    return served


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m collectors.demo.live")
    parser.add_argument("service", choices=["worker"])
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--parent-pid", type=int, default=None)
    args = parser.parse_args(argv)

    from collectors.demo.backfill import worker_rate
    from collectors.demo.workload import Worker, open_database

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    engine = open_database(args.data_dir / "shop.sqlite")
    sdk.configure(service="worker", transport=f"spool:{args.data_dir / 'spool'}")
    try:
        run_live(Worker(engine, seed=int(time.time())), stop, worker_rate, parent_pid=args.parent_pid)
    finally:
        sdk.shutdown()
        engine.dispose()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
