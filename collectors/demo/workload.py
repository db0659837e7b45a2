"""The demo's workload: a small shop whose requests do real work, instrumented with the perfdeck SDK.

- SQLite through SQLAlchemy (instrumented with collectors.integrations.sqlalchemy): customers,
  products, and an `orders` table of a quarter of a million rows with deliberately NO index on
  orders.customer_id or orders.product_id, so "orders of a customer" is a real full scan — the slow
  query the index advisor should find — next to sub-millisecond primary-key lookups.
- In-process LRU caches (OrderedDict, fixed capacity) in front of product and customer lookups, hit by
  Zipf-distributed keys; every lookup is reported with sdk.record_cache and its measured time.
- A stand-in LLM client (FakeLLMClient) returning realistic token counts and a realistic latency, with
  a response cache in front of it.

What is real and what is drawn: every SQL statement, cache lookup and Python step runs on this machine,
and the query and cache events record their measured times. A request's recorded *duration* is drawn
(seeded): its own time (web server, Python, database round trips) from the per-endpoint, per-version
distribution of LATENCY, plus MISS_COST for each cache miss it really had (a miss does the slow work
behind the cache), plus its stand-in waits (`Trace.external_ms`): the LLM provider's latency
(FakeLLMClient), a payment provider's or an SMTP server's, and the slow build's wait for a database
connection (VERSION_SLOW). Drawing the own time keeps the demo's latencies the same on a fast laptop
and a slow VM (measured, v1.8.0's /search alone took 60 ms on one machine and 300 ms on another) and
gives every request its own duration, so percentiles spread (p50 < p95 < p99) as in production. The
time a worker job waited in its queue is drawn too (there is no real queue; its `wait_ms` tag).

Each served request also returns a `Trace` of the events it recorded, which the fast-forward backfill
(collectors.demo.backfill) replays to fill days of history without re-running every query.

One module on purpose, past 600 lines: the shop and the worker, their data, caches, stand-ins and the one
table of their latencies are one workload, read and tuned together (a change to LATENCY is checked against
the endpoints that draw from it and the thresholds in demo/thresholds.toml)."""
from __future__ import annotations

import bisect
import itertools
import math
import random
import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from time import perf_counter

import numpy as np
from sqlalchemy import bindparam, create_engine, event, text

from collectors import sdk
from collectors.integrations.sqlalchemy import CONTEXT_ATTR, instrument_sqlalchemy

N_CUSTOMERS = 20_000
N_PRODUCTS = 5_000
N_ORDERS = 250_000
N_USERS = 500
CATEGORIES = ["books", "garden", "kitchen", "toys", "audio", "office", "sports", "beauty", "tools", "pets"]
REGIONS = ["eu-west", "eu-central", "us-east", "us-west", "ap-south"]

# Versions of the shop: v1.8.0 ships a "popularity" ranking for /search that aggregates over the
# whole orders table per request — the regression the deploy view should reveal.
VERSION_BEFORE, VERSION_AFTER = "v1.7.3", "v1.8.0"
# The slow build the dashboard's demo switch deploys (never the backfill): v1.9.0 leaks connections in
# /search, so each minute a search waits longer for one, up to SLOW_SEARCH_MAX_MS after SLOW_RAMP_MINUTES.
# That wait is simulated (no pool, no sleep): added to the recorded duration like the LLM latency.
VERSION_SLOW = "v1.9.0"
# A rollback from the slow build runs VERSION_AFTER again, but its deploy marker says so: a second
# plain "v1.8.0" marker would become the one `perfdeck compare --deploy v1.8.0` and the Compare page
# pick (the newest of a version), hiding the deploy that brought the regression.
VERSION_ROLLBACK = f"{VERSION_AFTER}-rollback"
SLOW_SEARCH_MAX_MS = 1600.0
SLOW_RAMP_MINUTES = 4.0

# The endpoints whose work depends on the shop's version (only /search's query changes at v1.8.0):
# the backfill keeps their traces apart per version; the others' traces serve every version.
VERSIONED_ENDPOINTS = frozenset({"search"})
PAYMENT_DECLINED = 502        # the stand-in payment provider declines a checkout ...
PAYMENT_DECLINE_RATE = 0.03   # ... this often, before any database work

# endpoint name -> (path pattern recorded, method, share of traffic)
SHOP_ENDPOINTS = {
    "product": ("/products/{id}", "GET", 0.46),
    "customer_orders": ("/customers/{id}/orders", "GET", 0.14),
    "search": ("/search", "GET", 0.20),
    "recommendations": ("/recommendations", "GET", 0.10),
    "checkout": ("/checkout", "POST", 0.06),
    "health": ("/healthz", "GET", 0.04),
}
WORKER_ENDPOINTS = {
    "send_receipt": ("job:send_receipt", "TASK", 0.73),
    "summarize_reviews": ("job:summarize_reviews", "TASK", 0.25),
    "daily_sales_report": ("job:daily_sales_report", "TASK", 0.02),
}


def running_version(marker: str | None) -> str | None:
    """The version a shop runs after the deploy marker `marker` (a rollback runs VERSION_AFTER)."""
    return VERSION_AFTER if marker == VERSION_ROLLBACK else marker


def slow_search_delay_ms(minutes_on: float) -> float:
    """The slow build's connection wait in /search, before jitter: 0 when deployed, rising linearly
    to SLOW_SEARCH_MAX_MS at SLOW_RAMP_MINUTES and staying there."""
    return SLOW_SEARCH_MAX_MS * min(1.0, max(0.0, minutes_on) / SLOW_RAMP_MINUTES)


# -- request durations ----------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Latency:
    """A request's own time, in ms: a lognormal body (median, sigma) and, with probability `tail`, a
    slow one `tail_x` times as long (itself lognormal, sigma 0.35): a GC pause, a cold connection."""
    median: float
    sigma: float
    tail: float = 0.01
    tail_x: float = 3.0

    def draw(self, rng: random.Random) -> float:
        ms = rng.lognormvariate(math.log(self.median), self.sigma)
        if rng.random() < self.tail:
            ms *= rng.lognormvariate(math.log(self.tail_x), 0.35)
        return ms


# (endpoint name, version) -> the request's own time; version None: any version not listed. The one
# table of the demo's latencies (the stand-in waits and the cache misses come on top, see MISS_COST).
# /search at v1.8.0 must stay under the default p95 target (200 ms) in 3-minute windows: its p95 is
# ~105 ms, a window's p95 over 200 ms about once in 700. v1.7.3's cheap search is ~3.5x faster.
LATENCY: dict[tuple[str, str | None], Latency] = {
    ("product", None): Latency(7.0, 0.40),
    ("customer_orders", None): Latency(12.0, 0.40),
    ("search", VERSION_BEFORE): Latency(16.0, 0.35),
    ("search", None): Latency(56.0, 0.35, tail=0.005, tail_x=2.5),
    ("recommendations", None): Latency(30.0, 0.40),       # + its LLM calls
    ("checkout", None): Latency(35.0, 0.35),              # + the payment provider
    ("health", None): Latency(1.5, 0.30, tail=0.005),
    ("send_receipt", None): Latency(12.0, 0.40),          # + the SMTP hand-off
    ("summarize_reviews", None): Latency(20.0, 0.40),     # + its LLM call
    ("daily_sales_report", None): Latency(210.0, 0.25, tail=0.02, tail_x=2.0),
}
# (cache, namespace) -> (median ms, sigma) a miss adds: the work behind the cache (orders: a full scan).
MISS_COST: dict[tuple[str, str], tuple[float, float]] = {
    ("product_lru", "product"): (3.0, 0.40),
    ("customer_lru", "profile"): (2.0, 0.40),
    ("customer_lru", "orders"): (45.0, 0.35),
}


def latency_for(name: str, version: str) -> Latency:
    return LATENCY.get((name, version)) or LATENCY[name, None]


def own_ms(name: str, version: str, cache: list, rng: random.Random) -> float:
    """A request's drawn own time: its endpoint's body, plus the cost of each of its cache misses."""
    ms = latency_for(name, version).draw(rng)
    for cache_name, hit, _lookup_ms, namespace in cache:
        if not hit and (cost := MISS_COST.get((cache_name, namespace))):
            ms += rng.lognormvariate(math.log(cost[0]), cost[1])
    return ms


# Simulated queue wait of a worker job before it starts, lognormal (median ms, sigma): receipts and
# summaries wait ~0.3 s (p95 ~1.5 s); the nightly report queues behind the batch jobs.
QUEUE_WAIT = {"send_receipt": (300.0, 0.98), "summarize_reviews": (300.0, 0.98), "daily_sales_report": (1200.0, 0.6)}


# -- building blocks -----------------------------------------------------------------------------
class ZipfKeys:
    """Keys 0..n-1 drawn from a bounded Zipf law (rank r has weight 1/r**s), with ranks shuffled so
    the popular keys are not simply 0, 1, 2. Draws are made in blocks for speed."""

    def __init__(self, n: int, s: float, rng: np.random.Generator, block: int = 4096):
        weights = 1.0 / np.arange(1, n + 1) ** s
        self._cdf = np.cumsum(weights / weights.sum())
        self._perm = rng.permutation(n)
        self._rng, self._block, self._buf = rng, block, []

    def __call__(self) -> int:
        if not self._buf:
            ranks = np.searchsorted(self._cdf, self._rng.random(self._block), side="right")
            self._buf = self._perm[np.minimum(ranks, len(self._perm) - 1)].tolist()
        return self._buf.pop()


class LRUCache:
    """A fixed-capacity LRU in an OrderedDict; each lookup is timed and reported to perfdeck.

    A lock guards the dict: a live process registers `clear` with sdk.register_cache, and the
    dashboard's clear then runs on the SDK's thread while requests use the cache."""

    def __init__(self, name: str, capacity: int):
        self.name, self.capacity = name, capacity
        self._data: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, namespace: str, key, trace: Trace):
        t0 = perf_counter()
        k = (namespace, key)
        with self._lock:
            value = self._data.get(k, _MISS)
            if value is not _MISS:
                self._data.move_to_end(k)
        ms = (perf_counter() - t0) * 1000.0
        hit = value is not _MISS
        sdk.record_cache(self.name, hit, ms, namespace=namespace)
        trace.cache.append((self.name, hit, ms, namespace))
        return value if hit else None, hit

    def put(self, namespace: str, key, value) -> None:
        with self._lock:
            self._data[(namespace, key)] = value
            self._data.move_to_end((namespace, key))
            while len(self._data) > self.capacity:
                self._data.popitem(last=False)

    def clear(self, namespace: str | None = None) -> int:
        """Drop one namespace's entries (None: all of them); returns how many were dropped."""
        with self._lock:
            if namespace is None:
                n = len(self._data)
                self._data.clear()
                return n
            doomed = [k for k in self._data if k[0] == namespace]
            for k in doomed:
                del self._data[k]
            return len(doomed)

    def __len__(self) -> int:
        return len(self._data)

    def register(self) -> Callable[[], None]:
        """Make this cache clearable from the dashboard, and its size measured (live processes only);
        returns the unregister."""
        return sdk.register_cache(self.name, self.clear, size=self.__len__)


_MISS = object()


@dataclass(slots=True)
class Trace:
    """Everything one request recorded, so the backfill can replay it."""
    endpoint: str
    method: str
    name: str = ""                                     # the endpoint's key in SHOP_ENDPOINTS / WORKER_ENDPOINTS
    status: int = 200
    duration_ms: float = 0.0                           # drawn own time + external_ms
    real_ms: float = 0.0                               # how long its real work took here (not recorded)
    external_ms: float = 0.0                           # its stand-in waits: LLM, payment, SMTP, slow build
    queries: list = field(default_factory=list)        # (sql, ms)
    cache: list = field(default_factory=list)          # (cache, hit, lookup_ms, namespace)
    llm: list = field(default_factory=list)            # kwargs of sdk.record_llm_call minus ids/user
    tags: dict = field(default_factory=dict)           # extra tags of the request, e.g. a job's wait_ms


def replay(trace: Trace, request_id: str, user: str | None, *, version: str, rng: random.Random) -> float:
    """Record `trace` again as a new request (new id and user; the clock gives the new time): the same
    cache, query and LLM events, a new own time drawn for `version`, and its stand-in waits scaled by a
    small jitter, each LLM call's latency drawn again for its model, tokens and cache outcome. A checkout
    is declined by the payment provider at its own rate, drawn here like a duration (the pool holds only
    checkouts that went through: a few real runs would make the decline rate a matter of luck). Returns
    the duration recorded."""
    if trace.name == "checkout" and rng.random() < PAYMENT_DECLINE_RATE:
        duration = own_ms(trace.name, version, [], rng) + trace.external_ms * rng.lognormvariate(0.0, 0.2)
        sdk.record_request(trace.endpoint, duration, PAYMENT_DECLINED, trace.method,
                           request_id=request_id, user=user, **trace.tags)
        return duration
    for cache, hit, ms, namespace in trace.cache:
        sdk.record_cache(cache, hit, ms, namespace=namespace)
    for sql, ms in trace.queries:
        sdk.record_query(sql, ms, database="shop")
    external = trace.external_ms
    if external:
        llm = [call | {"latency_ms": llm_latency_ms(call["model"], call["output_tokens"], call["cache_hit"], rng)}
               for call in trace.llm]
        rest = max(0.0, external - sum(call["latency_ms"] for call in trace.llm))     # payment, SMTP
        external = rest * rng.lognormvariate(0.0, 0.2) + sum(call["latency_ms"] for call in llm)
    else:
        llm = trace.llm
    for call in llm:
        sdk.record_llm_call(request_id=request_id, user=user, **call)
    duration = own_ms(trace.name, version, trace.cache, rng) + external
    sdk.record_request(trace.endpoint, duration, trace.status, trace.method,
                       request_id=request_id, user=user, **trace.tags)
    return duration


# -- the stand-in LLM ----------------------------------------------------------------------------
# model -> (provider, median latency ms at ~500 output tokens)
MODELS = {
    "gpt-4o-mini": ("openai", 650.0),
    "gpt-4o": ("openai", 1400.0),
    "claude-3-5-haiku": ("anthropic", 800.0),
    "claude-sonnet-4": ("anthropic", 1900.0),
    "acme-local-7b": (None, 450.0),          # self-hosted, unknown to any price list
}


def llm_latency_ms(model: str, output_tokens: int, cache_hit: bool, rng: random.Random) -> float:
    """The stand-in provider's latency: lognormal around the model's median scaled by the output
    length; an answer from our own response cache takes ~1.5 ms."""
    if cache_hit:
        return rng.lognormvariate(math.log(1.5), 0.4)
    return rng.lognormvariate(math.log(MODELS[model][1] * (0.4 + output_tokens / 500)), 0.35)


class FakeLLMClient:
    """Answers like an LLM API would, without one: token counts from lognormals (input 300-3000,
    output 50-600, a share of input served from the provider's prompt cache) and a latency that grows
    with the output, also lognormal. It never sleeps: the caller adds `latency_ms` to the request's
    duration as its one simulated part. A response cache (LRU) answers repeated prompts."""

    def __init__(self, rng: random.Random, cache_capacity: int = 400):
        self.rng = rng
        self.cache = LRUCache("llm_responses", cache_capacity)

    def warm(self, models: list[str], prompts: Callable[[], int], n: int) -> None:
        """Answer `n` prompts into the response cache without recording them: the cache of a service
        that has been up a while (the backfill runs few real LLM requests, all on a cold cache else)."""
        for _ in range(n):
            self.cache.put(self.rng.choice(models), prompts(), (int(self.rng.lognormvariate(math.log(900), 0.55)),
                                                                int(self.rng.lognormvariate(math.log(180), 0.6))))

    def complete(self, model: str, prompt_key, trace: Trace, *, endpoint: str) -> float:
        """One completion; records it and returns the (simulated) latency in ms."""
        rng = self.rng
        cached, hit = self.cache.get(model, prompt_key, trace)
        provider = MODELS[model][0]
        if hit:
            input_tokens, output_tokens = cached
            latency = llm_latency_ms(model, output_tokens, True, rng)     # answered from our own cache
            call = dict(model=model, provider=provider, input_tokens=input_tokens, output_tokens=output_tokens,
                        cached_input_tokens=0, endpoint=endpoint, cache_hit=True, latency_ms=latency)
        else:
            input_tokens = int(min(3000, max(300, rng.lognormvariate(math.log(900), 0.55))))
            output_tokens = int(min(600, max(50, rng.lognormvariate(math.log(180), 0.6))))
            cached_input = int(input_tokens * rng.choice((0.0, 0.0, 0.25, 0.5, 0.8)))
            latency = llm_latency_ms(model, output_tokens, False, rng)
            self.cache.put(model, prompt_key, (input_tokens, output_tokens))
            call = dict(model=model, provider=provider, input_tokens=input_tokens, output_tokens=output_tokens,
                        cached_input_tokens=cached_input, endpoint=endpoint, cache_hit=False, latency_ms=latency)
        trace.llm.append(call)
        return latency


# -- the database --------------------------------------------------------------------------------
SCHEMA = [
    ("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT NOT NULL, email TEXT NOT NULL,"
     " region TEXT NOT NULL, created_at TEXT NOT NULL)"),
    ("CREATE TABLE products (id INTEGER PRIMARY KEY, name TEXT NOT NULL, category TEXT NOT NULL,"
     " price REAL NOT NULL, stock INTEGER NOT NULL)"),
    # No index on customer_id or product_id: on purpose (see module docstring).
    ("CREATE TABLE orders (id INTEGER PRIMARY KEY, customer_id INTEGER NOT NULL, product_id INTEGER NOT NULL,"
     " quantity INTEGER NOT NULL, amount REAL NOT NULL, status TEXT NOT NULL, created_at TEXT NOT NULL)"),
]


def open_database(path: Path, *, seed: int = 7):
    """Create (once) and open the shop's SQLite database; returns an instrumented engine."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    engine = create_engine(f"sqlite:///{path}", connect_args={"timeout": 30, "check_same_thread": False})

    @event.listens_for(engine, "connect")
    def _pragmas(dbapi_conn, _record):
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")      # the live worker reads while the shop writes
        cur.execute("PRAGMA synchronous=NORMAL")
        cur.close()

    with engine.begin() as conn:
        have = {r[0] for r in conn.exec_driver_sql("SELECT name FROM sqlite_master WHERE type='table'")}
        if not {"customers", "products", "orders"} <= have:
            _create(conn, seed)
    instrument_sqlalchemy(engine, database="shop")   # after seeding: the seed is not app traffic
    return engine


def _create(conn, seed: int) -> None:
    for table in ("orders", "products", "customers"):
        conn.exec_driver_sql(f"DROP TABLE IF EXISTS {table}")
    for ddl in SCHEMA:
        conn.exec_driver_sql(ddl)
    rng = np.random.default_rng(seed)
    ids = np.arange(1, N_CUSTOMERS + 1)
    regions = rng.integers(0, len(REGIONS), N_CUSTOMERS)
    conn.exec_driver_sql("INSERT INTO customers VALUES (?, ?, ?, ?, ?)", [
        (int(i), f"Customer {i}", f"c{i}@example.com", REGIONS[r], f"2023-{1 + i % 12:02d}-{1 + i % 28:02d}")
        for i, r in zip(ids, regions)])
    pids = np.arange(1, N_PRODUCTS + 1)
    cats = rng.integers(0, len(CATEGORIES), N_PRODUCTS)
    prices = np.round(rng.lognormal(math.log(25), 0.8, N_PRODUCTS), 2)
    conn.exec_driver_sql("INSERT INTO products VALUES (?, ?, ?, ?, ?)", [
        (int(i), f"Product {i}", CATEGORIES[c], float(p), int(i * 7 % 300))
        for i, c, p in zip(pids, cats, prices)])
    # Orders: heavy customers order more (Zipf-ish), popular products sell more.
    cust = ZipfKeys(N_CUSTOMERS, 0.8, rng, block=N_ORDERS)
    prod = ZipfKeys(N_PRODUCTS, 1.0, rng, block=N_ORDERS)
    qty = rng.integers(1, 4, N_ORDERS)
    days = rng.integers(0, 700, N_ORDERS)
    rows = [(i + 1, cust() + 1, (p := prod() + 1), int(q), round(float(prices[p - 1]) * int(q), 2),
             "shipped" if d > 3 else "paid", f"2024-{1 + d % 12:02d}-{1 + d % 28:02d}")
            for i, (q, d) in enumerate(zip(qty.tolist(), days.tolist()))]
    conn.exec_driver_sql("INSERT INTO orders VALUES (?, ?, ?, ?, ?, ?, ?)", rows)
    conn.exec_driver_sql("ANALYZE")


# -- optional real servers: `perfdeck demo --postgres URL --redis URL` ---------------------------------
PG_SCHEMA = "perfdeck_demo"          # the demo's tables on a PostgreSQL it is pointed at, nothing else touched
PG_DATABASE = "demo-pg"              # its name in the SDK's query events, the sampler and the advisor
REDIS_NAME = "demo-redis"            # the Redis instance's name for its sampler
REDIS_CACHE = "demo_products"        # the product cache kept in that Redis (keys "demo_products:v<N>:...")
PG_ORDERS = 100_000


def sqlalchemy_url(url: str) -> str:
    """A PostgreSQL URL as SQLAlchemy should open it here: with the psycopg (3) driver."""
    for prefix in ("postgresql://", "postgres://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix):]
    return url


def open_postgres(url: str):
    """Create (once) the shop's order history in schema PG_SCHEMA of the PostgreSQL at `url`, without
    an index on orders.customer_id (as on SQLite), and return an engine instrumented as PG_DATABASE."""
    engine = create_engine(sqlalchemy_url(url), pool_size=2, max_overflow=2, pool_pre_ping=True,
                           connect_args={"connect_timeout": 5, "application_name": "perfdeck-demo"})
    with engine.begin() as conn:
        have = conn.execute(text("SELECT to_regclass(:t)"), {"t": f"{PG_SCHEMA}.orders"}).scalar()
        if have is None:
            conn.execute(text(f"CREATE SCHEMA IF NOT EXISTS {PG_SCHEMA}"))
            conn.execute(text(f"CREATE TABLE {PG_SCHEMA}.orders (id integer PRIMARY KEY, customer_id integer NOT NULL,"
                              " product_id integer NOT NULL, quantity integer NOT NULL, amount numeric(10, 2) NOT NULL,"
                              " status text NOT NULL, created_at timestamptz NOT NULL)"))
            # Heavy customers order more (a skewed draw), as in the SQLite shop.
            conn.execute(text(f"""INSERT INTO {PG_SCHEMA}.orders
                SELECT g, 1 + floor(power(random(), 3) * {N_CUSTOMERS})::int, 1 + floor(power(random(), 2) * {N_PRODUCTS})::int,
                       1 + floor(random() * 3)::int, round((5 + random() * 120)::numeric, 2),
                       CASE WHEN random() < 0.95 THEN 'shipped' ELSE 'paid' END,
                       now() - random() * interval '700 days'
                FROM generate_series(1, {PG_ORDERS}) g"""))
            conn.execute(text(f"ANALYZE {PG_SCHEMA}.orders"))
    instrument_sqlalchemy(engine, database=PG_DATABASE)      # after seeding: the seed is not app traffic
    return engine


def open_redis(url: str):
    """A redis-py client for the demo's product cache (short timeouts: a Redis down slows no request)."""
    import redis

    return redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)


# -- the apps ------------------------------------------------------------------------------------
class App:
    """Common part of the shop and the worker: timing, simulated overheads, traces."""

    endpoints: dict = {}

    def __init__(self, engine, *, seed: int = 1, version: str = VERSION_BEFORE, clock=time.time):
        self.engine = engine
        self.rng = random.Random(seed)
        self.np_rng = np.random.default_rng(seed)
        self.version = version
        self.clock = clock                    # what simulated parts that change over time read
        names = list(self.endpoints)
        self._names = names
        self._cum = list(itertools.accumulate(self.endpoints[n][2] for n in names))
        self.users = ZipfKeys(N_USERS, 1.1, self.np_rng)

    def pick(self) -> str:
        return self._names[bisect.bisect(self._cum, self.rng.random() * self._cum[-1])]

    def user(self) -> str:
        return f"u-{self.users() + 1}"

    def _q(self, conn, sql: str, params: dict, trace: Trace) -> list:
        result = conn.execute(text(sql), params)
        rows = result.fetchall() if result.returns_rows else []
        ms = getattr(result.context, CONTEXT_ATTR, None)
        if ms is not None:                    # the integration already recorded it; keep it for replay
            trace.queries.append((str(result.context.statement), ms))
        return rows

    def queue_wait_ms(self, name: str) -> float | None:
        """How long the request waited before it started (jobs only); None: not queued."""
        return None

    def serve(self, name: str, *, user: str | None = None, request_id: str | None = None) -> Trace:
        """Run one request for real, record it, and return its trace."""
        path, method, _ = self.endpoints[name]
        trace = Trace(path, method, name=name)
        wait_ms = self.queue_wait_ms(name)
        if wait_ms is not None:
            trace.tags["wait_ms"] = round(wait_ms, 1)
        user = user or self.user()
        request_id = request_id or f"{self.rng.getrandbits(64):016x}"
        t0 = perf_counter()
        try:
            trace.external_ms = getattr(self, "do_" + name)(trace, user)
        except Exception:
            trace.external_ms, trace.status = 0.0, 500
        trace.real_ms = (perf_counter() - t0) * 1000.0
        trace.duration_ms = own_ms(name, self.version, trace.cache, self.rng) + trace.external_ms
        for call in trace.llm:
            sdk.record_llm_call(request_id=request_id, user=user, **call)
        sdk.record_request(path, trace.duration_ms, trace.status, method, request_id=request_id, user=user,
                           **trace.tags)
        return trace


class Shop(App):
    """The customer-facing API ("shop-api")."""

    endpoints = SHOP_ENDPOINTS

    def __init__(self, engine, *, seed: int = 1, version: str = VERSION_BEFORE, clock=time.time,
                 postgres=None, redis=None):
        super().__init__(engine, seed=seed, version=version, clock=clock)
        self.slow_since: float | None = None     # when VERSION_SLOW was deployed (by the demo switch)
        # Optional real servers (live traffic only): an engine from open_postgres, a client from open_redis.
        self.postgres = postgres
        self._redis_product = None
        if redis is not None:
            from collectors.integrations.redis import cached

            @cached(REDIS_CACHE, ttl=300, client=redis, namespace="product", key=lambda pid, trace: str(pid))
            def product_row(pid: int, trace: Trace):
                with self.engine.connect() as conn:
                    rows = self._q(conn, "SELECT id, name, category, price, stock FROM products WHERE id = :id",
                                   {"id": pid}, trace)
                return tuple(rows[0]) if rows else ()

            self._redis_product = product_row
        self.products = ZipfKeys(N_PRODUCTS + 60, 1.05, self.np_rng)    # ids past N_PRODUCTS: real 404s
        self.customers = ZipfKeys(N_CUSTOMERS, 1.15, self.np_rng)   # support looks at busy accounts
        self.prompts = ZipfKeys(3000, 1.0, self.np_rng)
        self.product_cache = LRUCache("product_lru", 400)
        self.customer_cache = LRUCache("customer_lru", 250)
        self.llm = FakeLLMClient(self.rng)
        self.llm.warm(["gpt-4o-mini"] * 4 + ["claude-3-5-haiku"] * 2 + ["gpt-4o", "claude-sonnet-4"], self.prompts, 600)

    def warm_caches(self, requests: int = 1000) -> int:
        """Serve the cache-reading share of `requests` arrivals (products, customers' orders,
        recommendations), so a new live shop starts with the caches of one that has been up a while
        instead of minutes of cold-cache hit rates. Call it with the SDK off (sdk.shutdown()): warming
        is not traffic. Returns the requests served."""
        served = 0
        for _ in range(requests):
            name = self.pick()
            if name in ("product", "customer_orders", "recommendations"):
                self.serve(name)
                served += 1
        return served

    def prefill_caches(self) -> int:
        """Fill the product and customer caches with their most popular keys' real rows, in three
        queries (one full scan of orders): the caches of a shop that has been up a while, for the
        backfill, whose few real runs would otherwise see caches far colder than live traffic keeps
        them. Call it with the SDK off: it is not traffic. Returns the entries put."""
        top_products = [int(i) + 1 for i in self.products._perm[:self.product_cache.capacity]]
        top_customers = [int(i) + 1 for i in self.customers._perm[:self.customer_cache.capacity // 2]]
        put = 0
        with self.engine.connect() as conn:
            found = {r[0]: tuple(r) for r in conn.execute(text(
                "SELECT id, name, category, price, stock FROM products WHERE id IN :ids").bindparams(
                bindparam("ids", expanding=True)), {"ids": top_products})}
            profiles = {r[0]: tuple(r) for r in conn.execute(text(
                "SELECT id, name, email, region FROM customers WHERE id IN :ids").bindparams(
                bindparam("ids", expanding=True)), {"ids": top_customers})}
            orders: dict[int, list] = {}
            for r in conn.execute(text(
                    "SELECT customer_id, id, product_id, quantity, amount, status, created_at FROM orders"
                    " WHERE customer_id IN :ids ORDER BY created_at DESC").bindparams(
                    bindparam("ids", expanding=True)), {"ids": top_customers}):
                orders.setdefault(r[0], []).append(tuple(r[1:]))
        for pid in reversed(top_products):               # the most popular put last: the freshest in the LRU
            self.product_cache.put("product", pid, found.get(pid, ()))
            put += 1
        for cid in reversed(top_customers):
            self.customer_cache.put("profile", cid, profiles.get(cid, ()))
            self.customer_cache.put("orders", cid, orders.get(cid, [])[:50])
            put += 2
        return put

    def _product(self, conn, pid: int, trace: Trace):
        row, hit = self.product_cache.get("product", pid, trace)
        if not hit:
            if self._redis_product is not None:      # the second tier, in Redis (records its own lookups)
                row = self._redis_product(pid, trace)
            else:
                rows = self._q(conn, "SELECT id, name, category, price, stock FROM products WHERE id = :id",
                               {"id": pid}, trace)
                row = tuple(rows[0]) if rows else ()
            self.product_cache.put("product", pid, row)
        return row

    def _customer_orders(self, conn, cid: int, trace: Trace):
        rows, hit = self.customer_cache.get("orders", cid, trace)
        if not hit:
            # Full scan of orders: there is no index on customer_id.
            rows = self._q(conn, "SELECT id, product_id, quantity, amount, status, created_at FROM orders"
                                 " WHERE customer_id = :cid ORDER BY created_at DESC", {"cid": cid}, trace)
            rows = [tuple(r) for r in rows[:50]]
            self.customer_cache.put("orders", cid, rows)
            if self.postgres is not None:
                self._pg_order_history(cid)
        return rows

    def _pg_order_history(self, cid: int) -> None:
        """The order history's copy on PostgreSQL, read like the SQLite one (a full scan there too: no
        index on customer_id). A PostgreSQL that fails costs this request nothing but the attempt."""
        try:
            with self.postgres.connect() as conn:
                conn.execute(text(f"SELECT id, product_id, quantity, amount, status, created_at FROM {PG_SCHEMA}.orders"
                                  " WHERE customer_id = :cid ORDER BY created_at DESC LIMIT 50"), {"cid": cid}).fetchall()
        except Exception:   # noqa: BLE001 - the demo's optional server must not break its shop
            pass

    def do_product(self, trace: Trace, user: str) -> float:
        with self.engine.connect() as conn:
            row = self._product(conn, self.products() + 1, trace)
        if not row:
            trace.status = 404
        return 0.0

    def do_customer_orders(self, trace: Trace, user: str) -> float:
        cid = self.customers() + 1
        with self.engine.connect() as conn:
            row, hit = self.customer_cache.get("profile", cid, trace)
            if not hit:
                rows = self._q(conn, "SELECT id, name, email, region FROM customers WHERE id = :id",
                               {"id": cid}, trace)
                row = tuple(rows[0]) if rows else ()
                self.customer_cache.put("profile", cid, row)
            self._customer_orders(conn, cid, trace)
        return 0.0

    def do_search(self, trace: Trace, user: str) -> float:
        category = CATEGORIES[self.rng.randrange(len(CATEGORIES))]
        with self.engine.connect() as conn:
            if self.version == VERSION_BEFORE:
                self._q(conn, "SELECT id, name, price FROM products WHERE category = :cat AND stock > 0"
                              " ORDER BY price LIMIT 20", {"cat": category}, trace)
            else:
                # v1.8.0's "popular first" ranking: aggregates the whole orders table per search.
                self._q(conn, "SELECT p.id, p.name, p.price, count(o.id) AS sold FROM products p"
                              " JOIN orders o ON o.product_id = p.id WHERE p.category = :cat AND p.stock > 0"
                              " GROUP BY p.id ORDER BY sold DESC LIMIT 20", {"cat": category}, trace)
        if self.version == VERSION_SLOW and self.slow_since is not None:
            # Simulated: v1.9.0's wait for a leaked-away connection, with a little jitter.
            minutes_on = (self.clock() - self.slow_since) / 60.0
            return slow_search_delay_ms(minutes_on) * self.rng.lognormvariate(0.0, 0.15)
        return 0.0

    def do_recommendations(self, trace: Trace, user: str) -> float:
        cid = int(user[2:]) * 37 % N_CUSTOMERS + 1          # the user's own customer record
        with self.engine.connect() as conn:
            orders = self._customer_orders(conn, cid, trace)
            for _, pid, *_ in orders[:3]:
                self._product(conn, pid, trace)
        # About a third of the requests first ask a small model what the shopper is after.
        intent_ms = (self.llm.complete("gpt-4o-mini", ("intent", self.prompts()), trace, endpoint="/recommendations")
                     if self.rng.random() < 0.35 else 0.0)
        r = self.rng.random()
        model = ("gpt-4o-mini" if r < 0.50 else "claude-3-5-haiku" if r < 0.72 else "gpt-4o" if r < 0.85
                 else "claude-sonnet-4" if r < 0.97 else "acme-local-7b")
        # LLM latency is the simulated part of this request.
        return intent_ms + self.llm.complete(model, self.prompts(), trace, endpoint="/recommendations")

    def do_checkout(self, trace: Trace, user: str) -> float:
        cid = int(user[2:]) * 37 % N_CUSTOMERS + 1
        pid = self.products() % N_PRODUCTS + 1
        qty = self.rng.randint(1, 3)
        # Stand-in payment provider: its latency is simulated, and it fails now and then.
        payment_ms = self.rng.lognormvariate(math.log(180), 0.45)
        if self.rng.random() < PAYMENT_DECLINE_RATE:
            trace.status = PAYMENT_DECLINED
            return payment_ms
        with self.engine.begin() as conn:
            row = self._product(conn, pid, trace)
            price = row[3] if row else 10.0
            self._q(conn, "INSERT INTO orders (customer_id, product_id, quantity, amount, status, created_at)"
                          " VALUES (:cid, :pid, :qty, :amount, 'paid', datetime('now'))",
                    {"cid": cid, "pid": pid, "qty": qty, "amount": round(price * qty, 2)}, trace)
            self._q(conn, "UPDATE products SET stock = max(stock - :qty, 0) WHERE id = :pid",
                    {"qty": qty, "pid": pid}, trace)
        return payment_ms

    def do_health(self, trace: Trace, user: str) -> float:
        with self.engine.connect() as conn:
            self._q(conn, "SELECT 1", {}, trace)
        return 0.0


class Worker(App):
    """Background jobs ("worker")."""

    endpoints = WORKER_ENDPOINTS

    def __init__(self, engine, *, seed: int = 2, version: str = "w-2.3.1"):
        super().__init__(engine, seed=seed, version=version)
        self.llm = FakeLLMClient(self.rng, cache_capacity=150)
        self.prompts = ZipfKeys(2000, 0.9, self.np_rng)
        self.llm.warm(["claude-3-5-haiku"] * 4 + ["acme-local-7b"], self.prompts, 200)

    def queue_wait_ms(self, name: str) -> float:
        """Simulated: how long the job sat in the queue before a worker picked it up."""
        median, sigma = QUEUE_WAIT[name]
        return self.rng.lognormvariate(math.log(median), sigma)

    def do_send_receipt(self, trace: Trace, user: str) -> float:
        with self.engine.connect() as conn:
            rows = self._q(conn, "SELECT id, customer_id, amount FROM orders WHERE id = :id",
                           {"id": self.rng.randint(1, N_ORDERS)}, trace)
            if rows:
                self._q(conn, "SELECT email FROM customers WHERE id = :id", {"id": rows[0][1]}, trace)
        return self.rng.lognormvariate(math.log(90), 0.5)       # simulated SMTP hand-off

    def do_summarize_reviews(self, trace: Trace, user: str) -> float:
        model = "claude-3-5-haiku" if self.rng.random() < 0.8 else "acme-local-7b"
        return self.llm.complete(model, self.prompts(), trace, endpoint="job:summarize_reviews")

    def do_daily_sales_report(self, trace: Trace, user: str) -> float:
        with self.engine.connect() as conn:
            self._q(conn, "SELECT p.category, count(*), sum(o.amount) FROM orders o JOIN products p"
                          " ON p.id = o.product_id GROUP BY p.category", {}, trace)
        return 0.0
