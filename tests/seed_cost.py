"""Build a cost store by hand: LLM calls with explicit prices, request events, process CPU samples.

    seed_cost(path, calls=[call(at, "gpt-4o", cost="0.0045", request_id="r1", endpoint="/chat")],
              events=[event(at, "/chat", "r1")], cpu=[cpu(at, "h1", "api", 1, 50.0)])

Rows are dicts / tuples in plain Python (money as Decimal strings), so tests can compute every
expected figure from the same rows without going through SQL."""
from __future__ import annotations

from datetime import datetime
from decimal import Decimal

import pandas as pd

from collectors.store import llm_rollup, migrate, request_costs, write
from collectors.store.histogram import BUCKET_SQL

PRICE_VERSION = "genai-prices 0.2.3"

CALL_COLUMNS = ("ts", "service", "host", "provider", "model", "input_tokens", "output_tokens", "cached_input_tokens",
                "cache_write_tokens", "request_id", "endpoint", "user_id", "cache_hit", "latency_ms", "input_cost_usd",
                "output_cost_usd", "cost_usd", "saved_usd", "price_version", "priced_at")
EVENT_COLUMNS = ("ts", "service", "host", "endpoint", "method", "status", "duration_ms", "request_id", "tags")


def call(ts: datetime, model: str = "gpt-4o", *, cost: str | None = "0.001", saved: str | None = "0",
         provider: str | None = "openai", service: str = "api", host: str | None = "h1", request_id: str | None = None,
         endpoint: str | None = None, user_id: str | None = None, input_tokens: int = 1000, output_tokens: int = 100,
         cached_input_tokens: int = 0, cache_write_tokens: int = 0, cache_hit: bool = False,
         latency_ms: float | None = 1000.0, price_version: str | None = PRICE_VERSION) -> dict:
    """One llm_calls row. cost=None makes it unpriced (no saving, no price version), as ingest does
    for a model the price list does not know."""
    unpriced = cost is None
    return {
        "ts": ts, "service": service, "host": host, "provider": provider, "model": model,
        "input_tokens": input_tokens, "output_tokens": output_tokens, "cached_input_tokens": cached_input_tokens,
        "cache_write_tokens": cache_write_tokens, "request_id": request_id, "endpoint": endpoint, "user_id": user_id,
        "cache_hit": cache_hit, "latency_ms": latency_ms,
        "input_cost_usd": None if unpriced else Decimal(cost), "output_cost_usd": None if unpriced else Decimal(0),
        "cost_usd": None if unpriced else Decimal(cost), "saved_usd": None if unpriced else Decimal(saved),
        "price_version": None if unpriced else price_version, "priced_at": None if unpriced else ts,
    }


def event(ts: datetime, endpoint: str, request_id: str | None = None, *, service: str = "api", host: str | None = "h1",
          duration_ms: float = 100.0, status: int = 200, method: str = "GET") -> dict:
    """One request_events row."""
    return {"ts": ts, "service": service, "host": host, "endpoint": endpoint, "method": method, "status": status,
            "duration_ms": duration_ms, "request_id": request_id, "tags": None}


def cpu(ts: datetime, host: str, proc: str, pid: int, percent: float) -> tuple:
    """One proc.cpu_percent sample as the host sampler writes it (100 = one full core)."""
    return (ts, host, "proc.cpu_percent", f"proc={proc},pid={pid}", percent)


def store_rollups(con, events: str = "request_events") -> None:
    """The rollups ingest derives from request events written by hand: those of the table `events`
    (a test's constant; by default every event of the store, for a store seeded once)."""
    con.execute(f"""
        INSERT INTO latency_hist
        SELECT date_trunc('minute', ts), service, endpoint, {BUCKET_SQL.format(col="duration_ms")}, count(*)
        FROM {events}
        GROUP BY ALL
    """)
    con.execute(f"""
        INSERT INTO request_rollup
        SELECT date_trunc('minute', ts), service, endpoint, count(*), count(*) FILTER (WHERE status >= 500),
               sum(duration_ms), max(duration_ms)
        FROM {events}
        GROUP BY ALL
    """)


def seed_cost(path, *, calls=(), events=(), cpu_samples=(), events_first: bool = False) -> None:
    """Write the rows into the store at `path` (migrated first if new). Calls and events go in separate
    transactions, in the order asked, like two SDK batches ingested one after the other; each writes
    what ingest writes beside them (request rollups, per-request costs, spend rollups). Events are written once."""
    def insert(table: str, columns: tuple[str, ...], rows) -> None:
        if not rows:
            return
        with write(path) as con:
            # Through a table of their own, so what ingest adds beside raw events (their rollups) is
            # added for these rows only: the store may hold events seeded before.
            con.execute(f"CREATE TEMP TABLE _seeded AS SELECT {', '.join(columns)} FROM {table} LIMIT 0")
            con.executemany(f"INSERT INTO _seeded VALUES ({', '.join('?' * len(columns))})",
                            [[row[c] for c in columns] for row in rows])
            con.execute(f"INSERT INTO {table} ({', '.join(columns)}) SELECT * FROM _seeded")
            if table == "request_events":
                store_rollups(con, "_seeded")
            if table == "llm_calls":
                llm_rollup.add(con, "_seeded")      # the spend rollups ingest keeps beside the calls
            con.execute("DROP TABLE _seeded")
            # and the per-request costs, as the write transaction keeps them
            calls = pd.DataFrame(rows, columns=list(columns)) if table == "llm_calls" else None
            request_costs.add(con, calls, min(r["ts"] for r in rows), max(r["ts"] for r in rows))

    with write(path) as con:
        migrate(con)
        if cpu_samples:
            con.executemany("INSERT INTO system_metrics VALUES (?, ?, ?, ?, ?)", list(cpu_samples))
    steps = [("llm_calls", CALL_COLUMNS, calls), ("request_events", EVENT_COLUMNS, events)]
    for table, columns, rows in (reversed(steps) if events_first else steps):
        insert(table, columns, list(rows))
