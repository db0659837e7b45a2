"""What pricing LLM calls costs: PriceBook throughput, and what it adds to collector ingest.

    .venv/bin/python bench/pricing.py [ROWS] [BATCHES]     defaults: 10,000 rows, 10 batches

The collector prices every LLM call as it ingests it (Collector.ingest_source calls
PriceBook.price_frame on each decoded batch's `llm` frame before the write transaction). This
script measures, in one run:

1. Pricing throughput. ROWS realistic calls (gpt-4o-mini, gpt-4o on openai; claude-3-5-haiku,
   claude-sonnet-4 on anthropic; an unknown acme-local-7b with no provider; lognormal token counts,
   a third with provider-cached input tokens, some Anthropic cache writes, 8 % answered from the
   app's own cache) priced by PriceBook().price_rows(rows), in calls/s. The same rows again with a
   PriceBook loaded from an override TOML file that prices acme-local-7b (the reference: overrides
   should cost nothing extra). Then each model alone (ROWS / 5 calls), to show where the time goes.

2. The ingest cost it adds. BATCHES spool batches, each 10,000 request events and 2,000 LLM calls
   (1 call per 5 requests, 4 services), encoded with collectors.sdk.batch.encode and written with
   SpoolTransport.send (untimed). Each repeat starts from a fresh copy of that spool and a fresh
   DuckDB file (migrated by the Collector constructor, untimed), then times
   Collector(db, spool_dir=..., prices=...).ingest_pending() with
       unpriced   a PriceBook whose price_frame returns at once: the ingest floor, the reference
       priced     the default PriceBook(), as the daemon runs
   and checks the stored llm_calls (all of them; priced ones have a cost, the no-op leaves none).

Every timing is the best of REPEATS runs (candidates round-robin, gc.collect() before each); wall
time from perf_counter, CPU from process_time (all threads: DuckDB uses every core). Stores and
spools live in a temporary directory removed at the end. Nothing is asserted beyond the row counts;
the numbers are printed."""
from __future__ import annotations

import gc
import math
import os
import platform
import random
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import duckdb
import pandas as pd

from collectors.daemon import Collector
from collectors.pricing import GENAI_PRICES, PriceBook
from collectors.sdk.batch import encode
from collectors.sdk.transport.spool import SpoolTransport
from collectors.store import connection

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
BATCHES = int(sys.argv[2]) if len(sys.argv) > 2 else 10
REQUESTS_PER_BATCH = 10_000
LLM_PER_BATCH = REQUESTS_PER_BATCH // 5
REPEATS = 3

MODELS = [  # (model, provider, share of calls)
    ("gpt-4o-mini", "openai", 40),
    ("gpt-4o", "openai", 15),
    ("claude-3-5-haiku", "anthropic", 20),
    ("claude-sonnet-4", "anthropic", 15),
    ("acme-local-7b", None, 10),
]
OVERRIDES = """\
[models."acme-local-7b"]
input = 0.20
output = 0.40
cache_read = 0.05
"""
ENDPOINTS = ["/api/search", "/api/recommendations", "/api/chat", "/api/orders", "/health", "/api/summary",
             "/login", "/api/items/{id}"]
LLM_ENDPOINTS = ["/api/search", "/api/recommendations", "/api/chat", "/api/summary"]
SERVICES = ["api", "worker", "billing", "search"]


class NoPricing(PriceBook):
    """The reference: the collector with pricing switched off."""

    def price_frame(self, df) -> None:
        return


def llm_call(rnd: random.Random, ts: float, model: str, provider: str | None, request_id: str | None) -> tuple:
    """One call as the SDK buffers it, in collectors.sdk.batch._LLM_FIELDS order."""
    inp = min(200_000, 1 + int(rnd.lognormvariate(math.log(900), 1.0)))
    out = min(16_000, 1 + int(rnd.lognormvariate(math.log(180), 0.9)))
    cached = written = 0
    if provider and rnd.random() < 0.35:                  # a prompt prefix read from the provider's cache
        cached = int(inp * rnd.uniform(0.3, 0.9))
    if provider == "anthropic" and rnd.random() < 0.10:   # ... or written to it
        written = int((inp - cached) * rnd.uniform(0.1, 0.5))
    hit = rnd.random() < 0.08                              # answered from the app's own result cache
    return (ts, provider, model, inp, out, cached, request_id, rnd.choice(LLM_ENDPOINTS),
            f"u-{rnd.randrange(5_000)}", hit, rnd.lognormvariate(math.log(600), 0.7), written)


def pick_model(rnd: random.Random) -> tuple[str, str | None]:
    model, provider, _ = rnd.choices(MODELS, [w for *_, w in MODELS])[0]
    return model, provider


def price_row(call: tuple) -> tuple:
    """An SDK call as price_rows takes it: (ts, provider, model, input, output, cached, written, hit),
    ts a naive UTC datetime as in a decoded frame."""
    ts, provider, model, inp, out, cached, _, _, _, hit, _, written = call
    return (datetime.fromtimestamp(ts, UTC).replace(tzinfo=None), provider, model, inp, out, cached, written, hit)


def best(fn, repeats: int = REPEATS):
    """Best wall time of `repeats` runs, the CPU time of that run, and the last result."""
    runs = []
    out = None
    for _ in range(repeats):
        gc.collect()
        c, t = time.process_time(), time.perf_counter()
        out = fn()
        runs.append((time.perf_counter() - t, time.process_time() - c))
    return min(runs) + (out,)


# -- 1. PriceBook throughput -------------------------------------------------------------------------
def bench_price_rows(root: Path) -> None:
    rnd = random.Random(11)
    now = time.time()
    rows = [price_row(llm_call(rnd, now - rnd.uniform(0, 86_400), *pick_model(rnd), None)) for _ in range(ROWS)]
    override_file = root / "prices.toml"
    override_file.write_text(OVERRIDES)
    books = {"PriceBook()": PriceBook(), "PriceBook.load(prices.toml)": PriceBook.load(override_file)}
    for book in books.values():   # warm-up: genai-prices' first lookups build its caches
        book.price_rows(rows[:200])

    print(f"1. PriceBook.price_rows, {ROWS:,} calls "
          f"({', '.join(f'{m} {w}%' for m, _, w in MODELS)}), best of {REPEATS}")
    print(f"   {'book':34s} {'seconds':>8s} {'cpu s':>6s} {'calls/s':>9s} {'µs/call':>8s} {'priced':>7s} {'time x default':>14s}")
    ref = None
    for name, book in books.items():
        # round-robin is overkill here: a run is a pure-Python loop on one thread
        wall, cpu, out = best(lambda book=book: book.price_rows(rows))
        priced = sum(1 for r in out if r[2] is not None)
        ref = ref or wall
        print(f"   {name:34s} {wall:8.3f} {cpu:6.2f} {ROWS / wall:9,.0f} {wall / ROWS * 1e6:8.1f} "
              f"{priced / ROWS:6.0%} {wall / ref:14.2f}")

    print(f"   by model, PriceBook() unless noted, {ROWS // 5:,} calls each from the same mix:")
    by_model = {(m, p): [r for r in rows if r[2] == m] for m, p, _ in MODELS}
    cases = [(f"{m} / {p}", books["PriceBook()"], by_model[m, p]) for m, p, _ in MODELS]
    cases.append(("acme-local-7b, override", books["PriceBook.load(prices.toml)"], by_model["acme-local-7b", None]))
    for label, book, model_rows in cases:
        sample = (model_rows * (ROWS // 5 // max(1, len(model_rows)) + 1))[:ROWS // 5]
        wall, cpu, out = best(lambda book=book, sample=sample: book.price_rows(sample))
        priced = sum(1 for r in out if r[2] is not None)
        print(f"   {label:34s} {wall:8.3f} {cpu:6.2f} {len(sample) / wall:9,.0f} {wall / len(sample) * 1e6:8.1f} "
              f"{priced / len(sample):6.0%}")


# -- 2. what pricing adds to ingest -----------------------------------------------------------------
def make_spool(root: Path) -> tuple[Path, int, int, int]:
    spool = root / "master-spool"
    transport = SpoolTransport(spool)
    rnd = random.Random(7)
    start = time.time() - 1800
    requests = calls = size = 0
    for i in range(BATCHES):
        service = SERVICES[i % len(SERVICES)]
        t0 = start + 1800 * i / BATCHES
        events = [(t0 + k * 1e-3, rnd.choice(ENDPOINTS), rnd.lognormvariate(3.0, 1.0),
                   rnd.choices((200, 201, 404, 500), (88, 5, 5, 2))[0], "POST" if rnd.random() < 0.25 else "GET",
                   f"{rnd.getrandbits(64):016x}", None) for k in range(REQUESTS_PER_BATCH)]
        llm = [llm_call(rnd, ev[0] + 0.001, *pick_model(rnd), ev[5])
               for ev in rnd.sample(events, LLM_PER_BATCH)]
        batch_id, payload, _ = encode(service=service, host=f"{service}-1", pid=1000 + i, sent_at=t0,
                                      requests=events, llm=llm)
        transport.send(batch_id, payload)
        requests += len(events)
        calls += len(llm)
        size += len(payload)
    return spool, requests, calls, size


def fresh_copy(master: Path, dest: Path) -> None:
    if dest.exists():
        shutil.rmtree(dest)
    shutil.copytree(master, dest)
    os.sync()


def ingest_once(root: Path, master: Path, kind: str, book: PriceBook) -> tuple[float, float, int, int, int]:
    db, spool = root / f"{kind}.duckdb", root / "spool"
    if db.exists():
        db.unlink()
    fresh_copy(master, spool)
    c = Collector(db, spool_dir=spool, quarantine_dir=root / "quarantine", prices=book)
    os.sync()
    gc.collect()
    cpu, t = time.process_time(), time.perf_counter()
    report = c.ingest_pending()
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    with connection.read(db) as con:
        calls, priced = con.execute("SELECT count(*), count(cost_usd) FROM llm_calls").fetchone()
    return wall, cpu, report.events, calls, priced


def bench_ingest(root: Path) -> None:
    t = time.perf_counter()
    master, requests, calls, size = make_spool(root)
    print(f"\n2. Collector.ingest_pending(), {BATCHES} spool batches of {REQUESTS_PER_BATCH:,} requests + "
          f"{LLM_PER_BATCH:,} LLM calls = {requests:,} requests + {calls:,} calls, {size / 2**20:.1f} MiB "
          f"(set-up {time.perf_counter() - t:.1f} s, untimed); best of {REPEATS}, round-robin")
    books = {"unpriced (no-op price_frame)": NoPricing(), "priced (default PriceBook)": PriceBook()}
    books["priced (default PriceBook)"].price_rows([price_row(llm_call(random.Random(1), time.time(), m, p, None))
                                                    for m, p, _ in MODELS])   # warm-up, as a running daemon is
    runs: dict[str, list] = {k: [] for k in books}
    for _ in range(REPEATS):
        for kind, book in books.items():
            runs[kind].append(ingest_once(root, master, kind.split()[0], book))
    print(f"   {'collector':30s} {'seconds':>8s} {'cpu s':>6s} {'events/s':>10s} {'LLM calls/s':>12s} "
          f"{'priced':>7s} {'x unpriced time':>15s}")
    best_runs = {k: min(v) for k, v in runs.items()}
    ref = best_runs["unpriced (no-op price_frame)"][0]
    for kind, (wall, cpu, events, stored, priced) in best_runs.items():
        assert events == requests + calls and stored == calls, (kind, events, stored)
        print(f"   {kind:30s} {wall:8.3f} {cpu:6.2f} {events / wall:10,.0f} {calls / wall:12,.0f} "
              f"{priced / calls:6.0%} {wall / ref:15.2f}")
    extra = best_runs["priced (default PriceBook)"][0] - ref
    print(f"   pricing adds {extra:.2f} s to ingesting {calls:,} calls: {extra / calls * 1e6:.0f} µs per call, "
          f"{calls / extra:,.0f} calls/s priced in ingest; at 1 call per 5 requests, "
          f"{extra / (requests + calls) * 1e6:.1f} µs per ingested event")


def main() -> None:
    print(f"perfdeck pricing  {time.strftime('%Y-%m-%d %H:%M')}  Python {platform.python_version()}  "
          f"{GENAI_PRICES}  duckdb {duckdb.__version__}  pandas {pd.__version__}  {os.cpu_count()} CPUs\n")
    root = Path(tempfile.mkdtemp(prefix="perfdeck-bench-pricing-"))
    try:
        t = time.perf_counter()
        bench_price_rows(root)
        bench_ingest(root)
        print(f"\ntotal {time.perf_counter() - t:.0f} s")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
