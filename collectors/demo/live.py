"""The demo's live traffic: the same workload, on the real clock, at the rate the backfill's diurnal
shape gives for the current time (so live traffic continues the history without a step).

The shop runs inside `perfdeck demo` itself; the worker runs as its own process, because the SDK
reports one service per process:

    python -m collectors.demo.live worker DATA_DIR [--parent-pid PID]

It stops on SIGINT or SIGTERM, or when its parent process goes away, and flushes before exiting.

While it serves, the app's in-process caches are registered with sdk.register_cache, so the
dashboard's "Clear an in-process cache" action reaches them (the backfill's throwaway apps are not)."""
from __future__ import annotations

import argparse
import os
import random
import signal
import threading
import time
from pathlib import Path

from collectors import sdk


def live_caches(app) -> list:
    """The app's LRU caches: its own (the shop's product and customer caches) and its LLM client's."""
    from collectors.demo.workload import LRUCache

    found = [v for v in vars(app).values() if isinstance(v, LRUCache)]
    llm = getattr(app, "llm", None)
    return found + ([llm.cache] if llm is not None else [])


def run_live(app, stop: threading.Event, rate, *, parent_pid: int | None = None, min_rate: float = 0.05,
             seed: int | None = None) -> int:
    """Serve Poisson arrivals at rate(now) requests/s until `stop` is set, with the app's caches
    registered for clearing from the dashboard. Returns requests served."""
    rng = random.Random(seed)
    served = 0
    unregister = [cache.register() for cache in live_caches(app)]
    try:
        while not stop.is_set():
            if stop.wait(rng.expovariate(max(rate(time.time()), min_rate))):
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
