"""Fast-forward backfill: days of history from the real workload in a few seconds.

The SDK is configured with a simulated clock that this module advances request by request, so every
event lands at its simulated time. Arrivals follow a diurnal shape (busy afternoons, quiet nights,
quieter weekends). A deploy marker part-way through switches the shop to VERSION_AFTER, whose /search
really runs a heavier query (see collectors.demo.workload).

How it stays fast and honest: running every simulated request for real would take minutes (a cache
miss on /customers/{id}/orders is a ~10 ms full scan). So each endpoint runs for real on a sample,
spread evenly over the simulated span and paced by a wall-clock budget (cheap endpoints get many real
runs, expensive ones fewer, every endpoint at least a few). Every real run is recorded as it
happened and keeps its trace (queries, cache outcomes, LLM calls, stand-in waits). Every other
simulated request is a replay of one of the recent real traces of the same endpoint (and version, for
the endpoints whose work changes with it: VERSIONED_ENDPOINTS), drawn at random, with a new request
id, user and time: its query and cache events are the real run's
measurements, and its duration is drawn afresh like every request's (collectors.demo.workload.LATENCY
and MISS_COST for its real cache outcomes, its stand-in waits with a little jitter). So cache hit
rates and query times are what the real runs saw here, and no two requests share a duration. The
shop's caches start filled with their most popular keys (Shop.prefill_caches): with only a few
thousand real runs they would otherwise stay far colder than live traffic keeps them."""
from __future__ import annotations

import math
import random
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter

from collectors import sdk
from collectors.demo.workload import (
    PAYMENT_DECLINED,
    VERSION_AFTER,
    VERSION_BEFORE,
    VERSION_ROLLBACK,
    VERSIONED_ENDPOINTS,
    Shop,
    Worker,
    open_database,
    replay,
)

DAY = 86_400.0
MIN_POOL = 12           # real runs per endpoint and version before replays start
POOL_SIZE = 256         # replays draw from the most recent real traces
SHOP_PEAK_RPS = 1.4     # shop-api requests/s at the afternoon peak on a weekday
WORKER_PEAK_RPS = 0.12


def diurnal(ts: float) -> float:
    """Traffic shape in 0.1..1: lowest at 03:00 UTC, highest at 15:00 UTC, weekends at 70 %."""
    hour = (ts % DAY) / 3600.0
    shape = 0.12 + 0.88 * ((1 - math.cos(2 * math.pi * (hour - 3) / 24)) / 2) ** 2
    weekday = time.gmtime(ts).tm_wday
    return shape * (0.7 if weekday >= 5 else 1.0)


def shop_rate(ts: float) -> float:
    return SHOP_PEAK_RPS * diurnal(ts)


def worker_rate(ts: float) -> float:
    return WORKER_PEAK_RPS * (0.5 + 0.5 * diurnal(ts))       # jobs run at night too


class SimClock:
    """The clock handed to sdk.configure(clock=...): returns the simulated now."""

    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


@dataclass
class ServiceReport:
    service: str
    requests: int = 0
    real: int = 0
    events: int = 0                  # request + cache + query + LLM records handed to the SDK
    real_seconds: float = 0.0


@dataclass
class BackfillReport:
    start: float
    end: float
    seconds: float = 0.0
    services: list[ServiceReport] = field(default_factory=list)
    deploy_at: float | None = None
    dropped: int = 0
    interrupted: bool = False

    @property
    def requests(self) -> int:
        return sum(s.requests for s in self.services)

    @property
    def events(self) -> int:
        return sum(s.events for s in self.services)


def _events(trace) -> int:
    return 1 + len(trace.cache) + len(trace.queries) + len(trace.llm)


def backfill_service(app, service: str, rate, *, start: float, end: float, transport: str,
                     real_budget_s: float, deploy_at: float | None = None, first_version: str | None = None,
                     first_marker: str | None = None, progress=print, stop=None, seed: int = 11) -> ServiceReport:
    """Fast-forward `app` from `start` to `end` (epoch seconds) as `service`, running `first_version`
    from the start (marked as a deploy of `first_marker`, default `first_version`)."""
    rng = random.Random(seed)
    clock = SimClock(start)
    sdk.configure(service=service, transport=transport, flush_interval=0.5, max_buffer=2_000_000, clock=clock)
    report = ServiceReport(service)
    names = list(app.endpoints)
    share = real_budget_s / len(names)                 # each endpoint's slice of the wall-clock budget
    spent = dict.fromkeys(names, 0.0)
    pools: dict[tuple[str, str | None], deque] = {}
    if first_version:
        app.version = first_version
        sdk.mark_deploy(first_marker or first_version)
    span = end - start
    t, next_report, wall0 = start, 0.1, perf_counter()
    while True:
        t += rng.expovariate(max(rate(t), 1e-6))
        if t >= end:
            break
        if deploy_at is not None and t >= deploy_at:
            # stamped at the deploy's own time, not at the first request after it (which can fall in
            # the next minute, so the deploy report.deploy_at names and the marker disagreed)
            clock.now = deploy_at
            app.version, deploy_at = VERSION_AFTER, None
            sdk.mark_deploy(VERSION_AFTER)
        clock.now = t
        name = app.pick()
        key = (name, app.version if name in VERSIONED_ENDPOINTS else None)
        pool = pools.get(key)
        if pool is None:
            pool = pools[key] = deque(maxlen=POOL_SIZE)
        done = (t - start) / span
        # Real run: while the pool is tiny, while this endpoint is behind its pace through the budget,
        # or to fill the pool to MIN_POOL as long as that fits in the endpoint's whole share.
        if len(pool) < 3 or spent[name] < share * done or (len(pool) < MIN_POOL and spent[name] < share):
            w0 = perf_counter()
            trace = app.serve(name)
            spent[name] += perf_counter() - w0
            if trace.status != PAYMENT_DECLINED:      # replays draw their declines themselves
                pool.append(trace)
            report.real += 1
        else:
            trace = pool[rng.randrange(len(pool))]
            replay(trace, f"{rng.getrandbits(64):016x}", app.user(), version=app.version, rng=rng)
        report.requests += 1
        report.events += _events(trace)
        if report.requests % 2048 == 0:
            if stop is not None and stop.is_set():
                break
            if done >= next_report:
                progress(f"  backfill {service}: {done:4.0%} of {span / DAY:.1f} days, "
                         f"{report.requests:,} requests ({report.real:,} run for real), "
                         f"{perf_counter() - wall0:.1f} s")
                next_report = math.floor(done * 10 + 1) / 10
    report.real_seconds = sum(spent.values())
    sdk.flush(30.0)
    return report


def backfill(data_dir: Path, *, days: float, end: float | None = None, start: float | None = None,
             with_deploy: bool = True, mark_resume: bool = False, real_budget_s: float | None = None,
             progress=print, stop=None, engine=None) -> BackfillReport:
    """Backfill shop-api and worker history into the spool under `data_dir` (default: the `days`
    before `end`, which defaults to now). With `with_deploy`, the shop starts at VERSION_BEFORE and a
    deploy of VERSION_AFTER happens about a day before the end (or 35 % of the span if shorter); else
    it runs VERSION_AFTER throughout (the gap-fill of a re-run), marked at its start with
    `mark_resume` (a demo stopped while it ran the slow build resumes its history at VERSION_AFTER,
    marked VERSION_ROLLBACK: the demo switch never reaches the backfill). Leaves the SDK configured with the
    simulated clock: the caller reconfigures it (or calls sdk.shutdown())."""
    data_dir = Path(data_dir)
    end = time.time() if end is None else end
    start = end - days * DAY if start is None else start
    span_days = (end - start) / DAY
    if real_budget_s is None:
        real_budget_s = min(5.0, 0.5 + 1.2 * span_days)
    engine = engine or open_database(data_dir / "shop.sqlite")
    transport = f"spool:{data_dir / 'spool'}"
    report = BackfillReport(start, end)
    deploy_at = end - min(30 * 3600.0, 0.35 * (end - start)) if with_deploy else None
    report.deploy_at = deploy_at
    wall0 = perf_counter()
    shop = Shop(engine, version=VERSION_AFTER)
    sdk.shutdown()                   # filling the caches is not traffic
    shop.prefill_caches()
    report.services.append(backfill_service(
        shop, "shop-api", shop_rate, start=start, end=end, transport=transport,
        real_budget_s=real_budget_s * 0.85, deploy_at=deploy_at,
        first_version=VERSION_BEFORE if with_deploy else VERSION_AFTER if mark_resume else None,
        first_marker=VERSION_ROLLBACK if mark_resume and not with_deploy else None,
        progress=progress, stop=stop))
    if not (stop is not None and stop.is_set()):
        worker = Worker(engine)
        report.services.append(backfill_service(
            worker, "worker", worker_rate, start=start, end=end, transport=transport,
            real_budget_s=real_budget_s * 0.15, first_version=worker.version if with_deploy else None,
            progress=progress, stop=stop, seed=12))
    report.interrupted = bool(stop is not None and stop.is_set())
    report.dropped = sdk.stats()["dropped"]
    report.seconds = perf_counter() - wall0
    return report
