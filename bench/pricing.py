"""What pricing LLM calls costs: call by call (as before) against a batch at once, and what each
adds to collector ingest.

    .venv/bin/python bench/pricing.py [ROWS] [BATCHES]     defaults: 10,000 rows, 10 batches

The collector prices every LLM call as it ingests it (Collector.ingest_source calls
PriceBook.price_frame on each decoded batch's `llm` frame before the write transaction). Two ways
of pricing, measured in the same run:
    call by call  PriceBook.price() per call, i.e. genai_prices.calc_price per call (twice for a
                  call with cached tokens): how every call was priced before; RowByRow below
    batch         PriceBook.price_rows / price_frame: rates looked up once per (provider, model,
                  price period), applied to the batch's columns in integer arithmetic

1. Pricing throughput. ROWS realistic calls (gpt-4o-mini, gpt-4o on openai; claude-3-5-haiku,
   claude-sonnet-4 on anthropic; an unknown acme-local-7b with no provider; lognormal token counts,
   a third with provider-cached input tokens, some Anthropic cache writes, 8 % answered from the
   app's own cache) priced call by call and as a batch, in calls/s, and the two results compared
   (they must be equal, string for string). The same rows through a PriceBook loaded from an
   override TOML file that prices acme-local-7b. Then each model alone (ROWS / 5 calls).

2. The ingest cost it adds. BATCHES spool batches, each 10,000 request events and 2,000 LLM calls
   (1 call per 5 requests, 4 services), encoded with collectors.sdk.batch.encode and written with
   SpoolTransport.send (untimed), as bench/ingest.py builds its spool. Each repeat starts from a fresh
   copy of that spool and a fresh DuckDB file (migrated by the Collector constructor, untimed), then
   times Collector(db, spool_dir=..., prices=...).ingest_pending() with
       unpriced      a PriceBook whose price_frame returns at once: the ingest floor, the reference
       call by call  RowByRow: the way calls were priced before
       batch         the default PriceBook(), as the daemon runs
   and checks the stored llm_calls (all of them; priced ones have a cost, the no-op leaves none) and
   that both priced stores hold the same costs.

Every timing is the best of REPEATS runs (INGEST_REPEATS for the two fast ingest candidates;
candidates round-robin, gc.collect() before each); wall
time from perf_counter, CPU from process_time (all threads: DuckDB uses every core). On a shared
machine the wall times move with other work; the "(by cpu s)" column compares the least CPU time of
each candidate's runs instead. Stores and
spools live in a temporary directory removed at the end. The numbers are printed; nothing about
them is asserted."""
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
from collectors.pricing import GENAI_PRICES, PRICE_INPUTS, PriceBook
from collectors.sdk.batch import encode
from collectors.sdk.transport.spool import SpoolTransport
from collectors.store import connection
from collectors.store.ingest import COST_COLUMNS

ROWS = int(sys.argv[1]) if len(sys.argv) > 1 else 10_000
BATCHES = int(sys.argv[2]) if len(sys.argv) > 2 else 10
REQUESTS_PER_BATCH = 10_000
LLM_PER_BATCH = REQUESTS_PER_BATCH // 5
REPEATS = 3
INGEST_REPEATS = 7   # ingest runs are short and a shared machine's noise is not: more of them

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


class Timed(PriceBook):
    """The default PriceBook, with the time spent in price_frame kept (wall, CPU), to tell pricing's own
    cost from the rest of ingest when a shared machine makes the whole-ingest figures move."""
    spent = (0.0, 0.0)

    def price_frame(self, df) -> None:
        c, t = time.process_time(), time.perf_counter()
        super().price_frame(df)
        wall, cpu = self.spent
        self.spent = (wall + time.perf_counter() - t, cpu + time.process_time() - c)


class RowByRow(PriceBook):
    """Pricing as it was done before batches: PriceBook.price() (calc_price) for each call."""

    def price_frame(self, df) -> None:
        if df is None:
            return
        self.refresh()
        priced = self.price_rows(df[list(PRICE_INPUTS)].itertuples(index=False, name=None))
        for i, col in enumerate(COST_COLUMNS):
            df[col] = [row[i] for row in priced]

    def price_rows(self, rows) -> list[tuple]:
        return [self._price_row(row) for row in rows]


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
    books = {"call by call: PriceBook()": RowByRow(), "batch: PriceBook()": PriceBook(),
             "call by call: load(prices.toml)": RowByRow.load(override_file),
             "batch: load(prices.toml)": PriceBook.load(override_file)}
    for book in books.values():   # warm-up: genai-prices' first lookups build its caches, as do ours
        book.price_rows(rows[:200])

    print(f"1. PriceBook.price_rows, {ROWS:,} calls "
          f"({', '.join(f'{m} {w}%' for m, _, w in MODELS)}), best of {REPEATS}")
    print(f"   {'book':34s} {'seconds':>8s} {'cpu s':>6s} {'calls/s':>10s} {'µs/call':>8s} {'priced':>7s} "
          f"{'x call by call':>14s}")
    results, ref = {}, {}
    for name, book in books.items():
        # round-robin is overkill here: a run is one thread, mostly Python
        wall, cpu, out = best(lambda book=book: book.price_rows(rows))
        results[name] = out
        priced = sum(1 for r in out if r[2] is not None)
        file = name.split(": ")[1]
        ref.setdefault(file, wall)
        print(f"   {name:34s} {wall:8.3f} {cpu:6.2f} {ROWS / wall:10,.0f} {wall / ROWS * 1e6:8.2f} "
              f"{priced / ROWS:6.0%} {ref[file] / wall:13.1f}x")
    for file in ("PriceBook()", "load(prices.toml)"):
        same = results[f"call by call: {file}"] == results[f"batch: {file}"]
        print(f"   {file}: batch and call-by-call results {'identical, string for string' if same else 'DIFFER'}")

    print(f"   by model, {ROWS // 5:,} calls each from the same mix, µs per call:")
    print(f"   {'':34s} {'call by call':>12s} {'batch':>8s}")
    by_model = {(m, p): [r for r in rows if r[2] == m] for m, p, _ in MODELS}
    cases = [(f"{m} / {p}", "PriceBook()", by_model[m, p]) for m, p, _ in MODELS]
    cases.append(("acme-local-7b, override", "load(prices.toml)", by_model["acme-local-7b", None]))
    for label, file, model_rows in cases:
        sample = (model_rows * (ROWS // 5 // max(1, len(model_rows)) + 1))[:ROWS // 5]
        walls = [best(lambda book=books[f"{how}: {file}"], sample=sample: book.price_rows(sample))[0]
                 for how in ("call by call", "batch")]
        print(f"   {label:34s} {walls[0] / len(sample) * 1e6:12.1f} {walls[1] / len(sample) * 1e6:8.2f}")


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


def ingest_once(root: Path, master: Path, kind: str, book: PriceBook) -> tuple:
    db, spool = root / f"{kind}.duckdb", root / "spool"
    if db.exists():
        db.unlink()
    fresh_copy(master, spool)
    c = Collector(db, spool_dir=spool, quarantine_dir=root / "quarantine", prices=book)
    book.spent = (0.0, 0.0)
    os.sync()
    gc.collect()
    cpu, t = time.process_time(), time.perf_counter()
    report = c.ingest_pending()
    wall, cpu = time.perf_counter() - t, time.process_time() - cpu
    with connection.read(db) as con:
        calls, priced, costs = con.execute("""
            SELECT count(*), count(cost_usd),
                   sum(hash(request_id, cost_usd, saved_usd, input_cost_usd, price_version)) FILTER (WHERE cost_usd IS NOT NULL)
            FROM llm_calls""").fetchone()
    return wall, cpu, report.events, calls, priced, costs, book.spent


def bench_ingest(root: Path) -> None:
    t = time.perf_counter()
    master, requests, calls, size = make_spool(root)
    print(f"\n2. Collector.ingest_pending(), {BATCHES} spool batches of {REQUESTS_PER_BATCH:,} requests + "
          f"{LLM_PER_BATCH:,} LLM calls = {requests:,} requests + {calls:,} calls, {size / 2**20:.1f} MiB "
          f"(set-up {time.perf_counter() - t:.1f} s, untimed); best of {INGEST_REPEATS} "
          f"({REPEATS} call by call), round-robin")
    books = {"unpriced (no-op price_frame)": NoPricing(), "call by call (before)": RowByRow(),
             "batch (default PriceBook)": Timed()}
    warm = [price_row(llm_call(random.Random(1), time.time(), m, p, None)) for m, p, _ in MODELS]
    for book in books.values():    # warm-up, as a running daemon is
        book.price_rows(warm)
    runs: dict[str, list] = {k: [] for k in books}
    for i in range(INGEST_REPEATS):
        for kind, book in books.items():
            if i < REPEATS or not isinstance(book, RowByRow):     # the slow one: REPEATS runs are plenty
                runs[kind].append(ingest_once(root, master, kind.split()[0], book))
    print(f"   {'collector':30s} {'seconds':>8s} {'cpu s':>6s} {'events/s':>10s} {'LLM calls/s':>12s} "
          f"{'priced':>7s} {'x unpriced time':>15s} {'% of unpriced events/s':>22s} {'(by cpu s)':>10s}")
    best_runs = {k: min(v) for k, v in runs.items()}
    ref = best_runs["unpriced (no-op price_frame)"][0]
    ref_cpu = min(r[1] for r in runs["unpriced (no-op price_frame)"])
    for kind, (wall, cpu, events, stored, priced, *_) in best_runs.items():
        assert events == requests + calls and stored == calls, (kind, events, stored)
        least_cpu = min(r[1] for r in runs[kind])
        print(f"   {kind:30s} {wall:8.3f} {cpu:6.2f} {events / wall:10,.0f} {calls / wall:12,.0f} "
              f"{priced / calls:6.0%} {wall / ref:15.2f} {ref / wall:21.1%} {ref_cpu / least_cpu:10.1%}")
    same = best_runs["call by call (before)"][3:6] == best_runs["batch (default PriceBook)"][3:6]
    print(f"   stored costs, call by call vs batch: {'identical' if same else 'DIFFER'}")
    for kind in ("call by call (before)", "batch (default PriceBook)"):
        extra = best_runs[kind][0] - ref
        print(f"   {kind}: pricing adds {extra:.3f} s to ingesting {calls:,} calls: {extra / calls * 1e6:.1f} µs per "
              f"call; at 1 call per 5 requests, {extra / (requests + calls) * 1e6:.2f} µs per ingested event")
    print("   (the batch's extra time includes DuckDB casting the cost text to DECIMAL(18, 12) on insert,\n"
          "    which the unpriced reference, with NULL costs, does not do)")
    spent = min((r[6] for r in runs["batch (default PriceBook)"]), key=lambda s: s[1])
    print(f"   price_frame itself, batch (least CPU of {INGEST_REPEATS} runs): {spent[0]:.3f} s wall, {spent[1]:.3f} s CPU "
          f"for {calls:,} calls, {spent[1] / calls * 1e6:.2f} µs CPU per call, {spent[1] / BATCHES * 1e3:.2f} ms per "
          f"batch; against the unpriced ingest's {ref_cpu:.3f} s CPU that is "
          f"{ref_cpu / (ref_cpu + spent[1]):.1%} of unpriced throughput")


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
