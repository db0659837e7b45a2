"""Decode batches (format: collectors.sdk.batch) and write them, rollups included, in one
transaction.

A batch that cannot be read as a whole raises MalformedBatch with the reason; the caller quarantines
it. Bad rows inside a readable batch (NaN or negative durations, oversized labels, a flood of
distinct endpoints, impossible times, negative or fractional cache sizes) are dropped or folded and
counted in `ingest_rejects`; the rest lands.

Cache sizes keep one row per (minute, service, host, cache): a process's last sample of the minute,
and of several processes on one host (pre-fork workers, each with its own copy of the cache) the
largest, since the size thresholds are about what one process holds. Keeping the largest also makes
the result the same whatever order batches are ingested in."""
from __future__ import annotations

import base64
import binascii
import re
from collections import Counter
from dataclasses import dataclass, field

import duckdb
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa

from collectors.store.histogram import BUCKET_SQL

COST_COLUMNS = ("input_cost_usd", "output_cost_usd", "cost_usd", "saved_usd", "price_version")

MAX_LABEL = 512               # longest endpoint / method / model / cache name kept
MAX_ENDPOINTS_PER_BATCH = 1000  # beyond this, the rarest endpoints fold into OTHER_ENDPOINT
OTHER_ENDPOINT = "(other)"
MAX_DURATION_MS = 86_400_000.0  # a day: anything longer is a clock or unit bug
MAX_EPOCH_S = 4e9               # 2096: later (or at/before 1970) is a clock or unit bug
MAX_ENTRIES = 2**63 - 1         # cache_sizes.entries is a BIGINT
_BATCH_ID = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


class MalformedBatch(ValueError):
    """The batch cannot be read at all; the message is the counted reason."""


@dataclass
class Batch:
    id: str
    service: str
    host: str | None
    pid: int | None
    requests: pa.Table | None = None
    cache: pd.DataFrame | None = None
    queries: pd.DataFrame | None = None
    query_buckets: pd.DataFrame | None = None
    llm: pd.DataFrame | None = None
    deploys: pd.DataFrame | None = None
    cache_sizes: pd.DataFrame | None = None
    sdk: dict = field(default_factory=dict)
    rejects: Counter = field(default_factory=Counter)  # (kind, reason) -> rows

    @property
    def events(self) -> int:
        return sum(0 if x is None else len(x) for x in
                   (self.requests, self.cache, self.queries, self.llm, self.deploys, self.cache_sizes))


def _unpack(text, dtype: str, n: int, name: str) -> np.ndarray:
    try:
        arr = np.frombuffer(base64.b64decode(text, validate=True), dtype=dtype)
    except (TypeError, ValueError, binascii.Error) as exc:
        raise MalformedBatch(f"requests.{name}: not a base64 {dtype} array ({exc})") from None
    if len(arr) != n:
        raise MalformedBatch(f"requests.{name}: {len(arr)} values for n={n}")
    return arr


def _dictionary(col, n: int, name: str) -> tuple[list[str], np.ndarray]:
    """A dictionary-encoded label column: (distinct values, one code per row)."""
    if not isinstance(col, dict) or not isinstance(col.get("values"), list):
        raise MalformedBatch(f"requests.{name}: expected {{values, codes}}")
    values = col["values"]
    if not all(isinstance(v, str) for v in values):
        raise MalformedBatch(f"requests.{name}: values must be strings")
    codes = _unpack(col.get("codes"), "<u4", n, f"{name}.codes")
    if n and int(codes.max()) >= len(values):
        raise MalformedBatch(f"requests.{name}: code out of range")
    return values, codes


def _strings(col, n: int, name: str) -> pa.Array:
    """A packed string column (offsets + UTF-8 data); an empty string stands for a missing value."""
    if col is None:
        return pa.nulls(n, pa.string())
    if not isinstance(col, dict):
        raise MalformedBatch(f"requests.{name}: expected {{offsets, data}}")
    offsets = _unpack(col.get("offsets"), "<i4", n + 1, f"{name}.offsets")
    try:
        data = base64.b64decode(col.get("data") or "", validate=True)
        arr = pa.StringArray.from_buffers(n, pa.py_buffer(offsets.astype("int32").tobytes()), pa.py_buffer(data))
        arr.validate(full=True)
    except (TypeError, ValueError, binascii.Error, pa.ArrowInvalid) as exc:
        raise MalformedBatch(f"requests.{name}: invalid packed strings ({exc})") from None
    return arr  # empty strings become NULL in the INSERT


def _epoch_to_ts(seconds: np.ndarray) -> np.ndarray:
    return (seconds * 1e6).astype("int64").astype("datetime64[us]")


def _decode_requests(doc: dict, batch: Batch) -> None:
    req = doc.get("requests")
    if req is None:
        return
    if not isinstance(req, dict) or not isinstance(req.get("n"), int) or req["n"] < 0:
        raise MalformedBatch("requests: expected an object with an integer n")
    n = req["n"]
    ts = _unpack(req.get("ts"), "<f8", n, "ts")
    duration = _unpack(req.get("duration_ms"), "<f8", n, "duration_ms")
    status = _unpack(req.get("status"), "<u2", n, "status")
    endpoints, endpoint_codes = _dictionary(req.get("endpoint"), n, "endpoint")
    methods, method_codes = _dictionary(req.get("method"), n, "method")
    request_id = _strings(req.get("request_id"), n, "request_id")
    tags = req.get("tags")
    if tags is not None and (not isinstance(tags, list) or len(tags) != n):
        raise MalformedBatch(f"requests.tags: expected a list of {n} values")

    keep = np.isfinite(duration) & (duration >= 0) & (duration <= MAX_DURATION_MS)
    batch.rejects["requests", "bad_duration"] += int(n - keep.sum())
    ts_ok = np.isfinite(ts) & (ts > 0) & (ts < MAX_EPOCH_S)
    batch.rejects["requests", "bad_timestamp"] += int((keep & ~ts_ok).sum())
    keep &= ts_ok
    long_label = np.array([len(v) > MAX_LABEL for v in endpoints], dtype=bool)[endpoint_codes]
    batch.rejects["requests", "label_too_long"] += int((keep & long_label).sum())
    keep &= ~long_label
    endpoints, endpoint_codes = _fold_endpoints(endpoints, endpoint_codes, keep, batch)

    table = pa.table({
        "ts": pa.array(_epoch_to_ts(np.where(ts_ok, ts, 0.0))),
        "endpoint": pa.DictionaryArray.from_arrays(pa.array(endpoint_codes.astype("int32")), pa.array(endpoints)),
        "method": pa.DictionaryArray.from_arrays(pa.array(method_codes.astype("int32")), pa.array(methods)),
        "status": pa.array(status.astype("int16")),
        "duration_ms": pa.array(duration),
        "request_id": request_id,
        "tags": pa.nulls(n, pa.string()) if tags is None else
        pa.array([None if t is None else orjson.dumps(t).decode() for t in tags], pa.string()),
    })
    batch.requests = table if keep.all() else table.filter(pa.array(keep))


def _fold_endpoints(values: list[str], codes: np.ndarray, keep: np.ndarray, batch: Batch):
    """Absurd label cardinality (raw URLs with ids in them) would blow up the rollups: keep the most
    frequent endpoints and fold the rest into one counted label."""
    if len(values) <= MAX_ENDPOINTS_PER_BATCH:
        return values, codes
    counts = np.bincount(codes[keep], minlength=len(values))
    kept = np.argsort(-counts, kind="stable")[:MAX_ENDPOINTS_PER_BATCH]
    remap = np.full(len(values), MAX_ENDPOINTS_PER_BATCH, dtype=codes.dtype)  # default: the OTHER label
    remap[kept] = np.arange(len(kept), dtype=codes.dtype)
    new_codes = remap[codes]
    batch.rejects["requests", "endpoint_cardinality_folded"] += int((keep & (new_codes == MAX_ENDPOINTS_PER_BATCH)).sum())
    return [values[i] for i in kept] + [OTHER_ENDPOINT], new_codes


def _rows(doc: dict, kind: str, required: dict[str, tuple], batch: Batch, time_field: str) -> list[dict]:
    """Keep the rows of a low-volume kind whose required fields have the right types and whose `time_field`
    (epoch seconds) can be a timestamp: one out of range would fail the whole batch's conversion."""
    rows = doc.get(kind)
    if rows is None:
        return []
    if not isinstance(rows, list):
        raise MalformedBatch(f"{kind}: expected a list")
    good = []
    for row in rows:
        if not isinstance(row, dict):
            batch.rejects[kind, "not_an_object"] += 1
            continue
        bad = next((k for k, types in required.items()
                    if not isinstance(row.get(k), types) or isinstance(row.get(k), bool) and bool not in types), None)
        if bad is not None:
            batch.rejects[kind, f"bad_{bad}"] += 1
            continue
        if not 0 < row[time_field] < MAX_EPOCH_S:
            batch.rejects[kind, "bad_timestamp"] += 1
            continue
        if any(isinstance(v, str) and len(v) > MAX_LABEL and k not in ("sample_sql", "fingerprint")
               for k, v in row.items()):
            batch.rejects[kind, "label_too_long"] += 1
            continue
        good.append(row)
    return good


_NUM = (int, float)
_OPT_STR = (str, type(None))


def _minute(df: pd.DataFrame, col: str = "minute") -> pd.Series:
    return pd.to_datetime(df[col], unit="s").dt.floor("min")


def decode(payload: bytes) -> Batch:
    """Parse and validate one batch."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise MalformedBatch(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MalformedBatch("not a JSON object")
    if doc.get("v") != 1:
        raise MalformedBatch(f"unsupported batch version {doc.get('v')!r}")
    if not isinstance(doc.get("id"), str) or not _BATCH_ID.match(doc["id"]):
        raise MalformedBatch("missing or invalid batch id")
    if not isinstance(doc.get("service"), str) or not 0 < len(doc["service"]) <= MAX_LABEL:
        raise MalformedBatch("missing or invalid service name")
    host, pid = doc.get("host"), doc.get("pid")
    batch = Batch(id=doc["id"], service=doc["service"],
                  host=host if isinstance(host, str) else None, pid=pid if isinstance(pid, int) else None,
                  sdk=doc["sdk"] if isinstance(doc.get("sdk"), dict) else {})
    _decode_requests(doc, batch)

    cache = _rows(doc, "cache", {"minute": _NUM, "cache": (str,), "namespace": _OPT_STR, "hits": (int,),
                                 "misses": (int,), "lookups_timed": (int,), "lookup_ms_sum": _NUM}, batch, "minute")
    if cache:
        df = pd.DataFrame(cache, columns=["minute", "cache", "namespace", "hits", "misses", "lookups_timed",
                                          "lookup_ms_sum", "lookup_ms_max"])
        df["minute"] = _minute(df)
        batch.cache = df

    queries = _rows(doc, "queries", {"minute": _NUM, "database": _OPT_STR, "fingerprint": (str,),
                                     "sample_sql": (str,), "calls": (int,), "total_ms": _NUM,
                                     "buckets": (dict,)}, batch, "minute")
    if queries:
        df = pd.DataFrame(queries, columns=["minute", "database", "fingerprint", "sample_sql", "calls",
                                            "total_ms", "min_ms", "max_ms", "buckets"])
        df["minute"] = _minute(df)
        buckets = [(m, fp, int(b), c) for m, fp, bs in zip(df["minute"], df["fingerprint"], df["buckets"])
                   for b, c in bs.items() if str(b).lstrip("-").isdigit() and isinstance(c, int)]
        batch.query_buckets = pd.DataFrame(buckets, columns=["minute", "fingerprint", "bucket", "count"])
        batch.queries = df.drop(columns="buckets")

    llm = _rows(doc, "llm", {"ts": _NUM, "model": (str,), "input_tokens": (int,), "output_tokens": (int,)}, batch, "ts")
    negative = [r for r in llm if r["input_tokens"] < 0 or r["output_tokens"] < 0]
    if negative:
        batch.rejects["llm", "negative_tokens"] += len(negative)
        llm = [r for r in llm if r["input_tokens"] >= 0 and r["output_tokens"] >= 0]
    if llm:
        df = pd.DataFrame(llm, columns=["ts", "provider", "model", "input_tokens", "output_tokens",
                                        "cached_input_tokens", "request_id", "endpoint", "user", "cache_hit",
                                        "latency_ms", "cache_write_tokens"])
        df["ts"] = pd.to_datetime(df["ts"], unit="s")
        for col in ("cached_input_tokens", "cache_write_tokens"):
            df[col] = pd.to_numeric(df[col], errors="coerce").fillna(0).clip(lower=0).astype("int64")
        df["cache_hit"] = df["cache_hit"].fillna(False).astype(bool)
        for col in ("provider", "request_id", "endpoint", "user"):
            # From the raw rows: pandas would turn a missing string into NaN (stored as 'nan').
            df[col] = pd.Series([None if r.get(col) is None else str(r[col])[:MAX_LABEL] for r in llm], dtype=object)
        for col in COST_COLUMNS:     # unpriced until the collector prices the batch (collectors.pricing)
            df[col] = pd.Series([None] * len(df), dtype=object)
        batch.llm = df

    deploys = _rows(doc, "deploys", {"ts": _NUM, "version": (str,)}, batch, "ts")
    if deploys:
        df = pd.DataFrame(deploys, columns=["ts", "version"])
        df["ts"] = pd.to_datetime(df["ts"], unit="s")
        batch.deploys = df

    sizes = _rows(doc, "cache_sizes", {"ts": _NUM, "cache": (str,), "entries": (int,)}, batch, "ts")
    for reason, wrong in (("negative_entries", lambda n: n < 0), ("entries_too_large", lambda n: n > MAX_ENTRIES)):
        batch.rejects["cache_sizes", reason] += sum(wrong(r["entries"]) for r in sizes)
        sizes = [r for r in sizes if not wrong(r["entries"])]
    if sizes:
        df = pd.DataFrame(sizes, columns=["ts", "cache", "entries"])
        df["minute"] = _minute(df, "ts")
        # One row per cache and minute: the last sample (a stable sort keeps the later of equal times).
        df = df.sort_values("ts", kind="stable").drop_duplicates(["minute", "cache"], keep="last")
        batch.cache_sizes = df[["minute", "cache", "entries"]].astype({"entries": "int64"}).reset_index(drop=True)
    return batch


def already_ingested(con: duckdb.DuckDBPyConnection, ids: list[str]) -> set[str]:
    if not ids:
        return set()
    rows = con.execute("SELECT batch_id FROM ingested_batches WHERE batch_id IN (SELECT unnest(?))", [ids])
    return {r[0] for r in rows.fetchall()}


def write_batches(con: duckdb.DuckDBPyConnection, batches: list[Batch], source: str) -> int:
    """Insert decoded batches and their rollups within the caller's transaction; returns the events
    written. Batches whose id is already recorded are skipped, so replays are no-ops."""
    seen = already_ingested(con, [b.id for b in batches])
    fresh: dict[str, Batch] = {}
    for b in batches:
        if b.id not in seen:
            fresh.setdefault(b.id, b)
    batches = list(fresh.values())
    if not batches:
        return 0
    _write_requests(con, [b for b in batches if b.requests is not None and len(b.requests)])
    for b in batches:
        _write_small(con, b)
    # One statement per table for all batches: per-row statements cost ~0.5 ms each.
    _insert(con, "INSERT INTO ingested_batches SELECT *, now()::TIMESTAMP FROM _incoming", pd.DataFrame(
        [(b.id, source, b.service, b.host, b.pid, b.events) for b in batches],
        columns=["batch_id", "source", "service", "host", "pid", "events"]))
    health = [(b.service, b.host, b.pid, b.sdk.get("dropped"), b.sdk.get("send_errors")) for b in batches
              if isinstance(b.sdk.get("dropped"), int) and isinstance(b.sdk.get("send_errors"), int)]
    if health:
        _insert(con, "INSERT INTO sdk_health BY NAME SELECT now()::TIMESTAMP AS ts, * FROM _incoming", pd.DataFrame(
            health, columns=["service", "host", "pid", "dropped", "send_errors"]))
    return sum(b.events for b in batches)


def _write_requests(con: duckdb.DuckDBPyConnection, batches: list[Batch]) -> None:
    if not batches:
        return
    tables = []
    for b in batches:
        # service and host are constant per batch: one-value dictionaries cost nothing per row
        zeros = pa.array(np.zeros(len(b.requests), "int32"))
        tables.append(b.requests
                      .append_column("service", pa.DictionaryArray.from_arrays(zeros, pa.array([b.service])))
                      .append_column("host", pa.DictionaryArray.from_arrays(zeros, pa.array([b.host], pa.string()))))
    con.register("_incoming_requests", pa.concat_tables(tables))
    try:
        con.execute("""
            INSERT INTO request_events
            SELECT ts, service, host, endpoint, method, status, duration_ms, nullif(request_id, ''), tags
            FROM _incoming_requests
        """)
        # One pass over the raw rows into (minute, endpoint, bucket) groups; both rollups come from those.
        con.execute(f"""
            CREATE OR REPLACE TEMP TABLE _incoming_groups AS
            SELECT date_trunc('minute', ts) AS minute, service, endpoint,
                   {BUCKET_SQL.format(col='duration_ms')} AS bucket, count(*) AS requests,
                   count(*) FILTER (WHERE status >= 500) AS errors, sum(duration_ms) AS duration_sum_ms,
                   max(duration_ms) AS duration_max_ms
            FROM _incoming_requests
            GROUP BY ALL
        """)
        con.execute("INSERT INTO latency_hist SELECT minute, service, endpoint, bucket, requests FROM _incoming_groups")
        con.execute("""
            INSERT INTO request_rollup
            SELECT minute, service, endpoint, sum(requests), sum(errors), sum(duration_sum_ms), max(duration_max_ms)
            FROM _incoming_groups
            GROUP BY ALL
        """)
        con.execute("DROP TABLE _incoming_groups")
    finally:
        con.unregister("_incoming_requests")


def _insert(con: duckdb.DuckDBPyConnection, sql: str, df, params=()) -> None:
    """Run an INSERT ... FROM _incoming with `df` registered under that name."""
    con.register("_incoming", df)
    try:
        con.execute(sql, list(params))
    finally:
        con.unregister("_incoming")


def _write_small(con: duckdb.DuckDBPyConnection, b: Batch) -> None:
    svc = (b.service, b.host)
    if b.cache is not None:
        _insert(con, """
            INSERT INTO cache_stats
            SELECT minute, ?, ?, cache, namespace, hits, misses, lookups_timed, lookup_ms_sum, lookup_ms_max
            FROM _incoming
        """, b.cache, svc)
    if b.queries is not None:
        _insert(con, """
            INSERT INTO query_stats
            SELECT minute, ?, database, fingerprint, sample_sql, calls, total_ms, min_ms, max_ms
            FROM _incoming
        """, b.queries, [b.service])
        _insert(con, "INSERT INTO query_hist SELECT minute, ?, fingerprint, bucket, count FROM _incoming",
                b.query_buckets, [b.service])
    if b.llm is not None:
        _insert(con, """
            INSERT INTO llm_calls BY NAME
            SELECT ts, ? AS service, ? AS host, provider, model, input_tokens, output_tokens, cached_input_tokens,
                   request_id, endpoint, "user" AS user_id, cache_hit, latency_ms, cache_write_tokens,
                   input_cost_usd::DECIMAL(18, 12) AS input_cost_usd,
                   output_cost_usd::DECIMAL(18, 12) AS output_cost_usd, cost_usd::DECIMAL(18, 12) AS cost_usd,
                   saved_usd::DECIMAL(18, 12) AS saved_usd, price_version::VARCHAR AS price_version,
                   CASE WHEN price_version IS NOT NULL THEN now()::TIMESTAMP END AS priced_at
            FROM _incoming
        """, b.llm, svc)
    if b.deploys is not None:
        _insert(con, "INSERT INTO deploys SELECT ts, ?, version, ? FROM _incoming", b.deploys, svc)
    if b.cache_sizes is not None:
        _write_cache_sizes(con, b)
    rejects = [(b.id, kind, reason, n) for (kind, reason), n in b.rejects.items() if n]
    if rejects:
        con.executemany("INSERT INTO ingest_rejects VALUES (now()::TIMESTAMP, ?, ?, ?, ?)", rejects)


def _write_cache_sizes(con: duckdb.DuckDBPyConnection, b: Batch) -> None:
    """Merge into one row per (minute, service, host, cache), the largest (see the module's docs)."""
    key = "s.minute = i.minute AND s.service = ? AND s.host IS NOT DISTINCT FROM ? AND s.cache = i.cache"
    con.register("_incoming", b.cache_sizes)
    try:
        con.execute(f"""
            DELETE FROM cache_sizes AS s
            USING _incoming AS i
            WHERE {key}
              AND s.entries < i.entries
        """, [b.service, b.host])
        con.execute(f"""
            INSERT INTO cache_sizes
            SELECT i.minute, ?, ?, i.cache, i.entries
            FROM _incoming AS i
            WHERE NOT EXISTS (SELECT 1 FROM cache_sizes AS s WHERE {key})
        """, [b.service, b.host, b.service, b.host])
    finally:
        con.unregister("_incoming")
