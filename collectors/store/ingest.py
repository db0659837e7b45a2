"""Decode batches (format: collectors.sdk.batch) and write them, rollups included, in one
transaction.

Every value is checked against the declared schema (collectors.store.schema) here, before the write
transaction, so nothing that reaches it can fail it. A batch that cannot be read as a whole raises
MalformedBatch with the reason; the caller quarantines it. A row that does not fit (NaN or negative
durations, a string where a number goes, numbers past what a column holds, oversized labels or tags,
a time outside the accepted window, a flood of distinct endpoints) is dropped or folded and counted in
`ingest_rejects` by kind and reason; the rest lands. Names are stored as inert text (schema.clean).

Cache sizes keep one row per (minute, service, host, cache): a process's last sample of the minute,
and of several processes on one host (pre-fork workers, each with its own copy of the cache) the
largest, since the size thresholds are about what one process holds. Keeping the largest also makes
the result the same whatever order batches are ingested in."""
from __future__ import annotations

import base64
import binascii
import contextlib
import re
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta

import duckdb
import msgspec
import numpy as np
import orjson
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from collectors.sdk.batch import CLEARED
from collectors.store import llm_rollup, request_costs, schema
from collectors.store.histogram import BUCKET_SQL
from collectors.store.rollups import settle_late
from collectors.store.schema import INT32, MAX_DURATION_MS, MAX_LABEL, MAX_TAGS_BYTES, Limits, clean
from collectors.store.tiers import rolled_until

COST_COLUMNS = ("input_cost_usd", "output_cost_usd", "cost_usd", "saved_usd", "price_version")

MAX_ENDPOINTS_PER_BATCH = 1000  # beyond this, the rarest endpoints fold into OTHER_ENDPOINT
OTHER_ENDPOINT = "(other)"
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
    frames: dict[str, pd.DataFrame] = field(default_factory=dict)   # the other kinds' rows (STORED), when any
    sdk: schema.SdkReport | None = None
    rejects: Counter = field(default_factory=Counter)  # (kind, reason) -> rows

    def __getattr__(self, kind: str) -> pd.DataFrame | None:
        """batch.llm, batch.cache, ...: that kind's rows, None when the batch has none."""
        if kind in STORED:
            return self.frames.get(kind)
        raise AttributeError(kind)

    @property
    def events(self) -> int:
        return (0 if self.requests is None else len(self.requests)) + sum(map(len, self.frames.values()))


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
    return [clean(v) for v in values], codes


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
    if pc.any(pc.match_substring_regex(arr, schema.UNSAFE_PATTERN)).as_py():
        arr = pa.array([None if v is None else clean(v) for v in arr.to_pylist()], pa.string())
    return arr  # empty strings become NULL in the INSERT


def _epoch_to_ts(seconds: np.ndarray) -> np.ndarray:
    return (seconds * 1e6).astype("int64").astype("datetime64[us]")


def _tags(tags, n: int, keep: np.ndarray, batch: Batch) -> pa.Array:
    """Each row's tags as JSON text: an object (or nothing) of at most MAX_TAGS_BYTES; else the row goes."""
    if tags is None:
        return pa.nulls(n, pa.string())
    if not isinstance(tags, list) or len(tags) != n:
        raise MalformedBatch(f"requests.tags: expected a list of {n} values")
    out = []
    for i, t in enumerate(tags):
        text = orjson.dumps(_inert(t)).decode() if isinstance(t, dict) else None
        reason = ("bad_tags" if t is not None and text is None else
                  "tags_too_long" if text is not None and len(text) > MAX_TAGS_BYTES else None)
        if reason:
            if keep[i]:
                batch.rejects["requests", reason] += 1
            keep[i], text = False, None
        out.append(text)
    return pa.array(out, pa.string())


def _inert(value):
    """A tags value with every string in it made inert (schema.clean), keys included."""
    if isinstance(value, str):
        return clean(value)
    if isinstance(value, dict):
        return {clean(str(k)): _inert(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_inert(v) for v in value]
    return value


def _drop(keep: np.ndarray, bad: np.ndarray, batch: Batch, reason: str) -> None:
    """Count the rows still kept that `bad` rejects, then stop keeping them (each row counted once)."""
    batch.rejects["requests", reason] += int((keep & bad).sum())
    keep &= ~bad


def _decode_requests(doc: dict, batch: Batch, lo: float, hi: float) -> None:
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

    keep = np.ones(n, dtype=bool)
    _drop(keep, ~(np.isfinite(duration) & (duration >= 0) & (duration <= MAX_DURATION_MS)), batch, "bad_duration")
    ts_ok = np.isfinite(ts) & (ts >= lo) & (ts <= hi)
    _drop(keep, ~ts_ok, batch, "bad_timestamp")
    _drop(keep, status > 999, batch, "bad_status")          # status is a SMALLINT; HTTP codes have 3 digits
    too_long = np.array([len(v) > MAX_LABEL for v in endpoints], dtype=bool)[endpoint_codes]
    too_long |= np.array([len(v) > MAX_LABEL for v in methods], dtype=bool)[method_codes]
    too_long |= pc.fill_null(pc.greater(pc.utf8_length(request_id), MAX_LABEL), False).to_numpy(zero_copy_only=False)
    _drop(keep, too_long, batch, "label_too_long")
    tags = _tags(req.get("tags"), n, keep, batch)
    endpoints, endpoint_codes = _fold_endpoints(endpoints, endpoint_codes, keep, batch)

    table = pa.table({
        "ts": pa.array(_epoch_to_ts(np.where(ts_ok, ts, lo))),
        "endpoint": pa.DictionaryArray.from_arrays(pa.array(endpoint_codes.astype("int32")), pa.array(endpoints)),
        "method": pa.DictionaryArray.from_arrays(pa.array(method_codes.astype("int32")), pa.array(methods)),
        "status": pa.array(status.astype("int16")),
        "duration_ms": pa.array(duration),
        "request_id": request_id,
        "tags": tags,
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


def _rows(doc: dict, kind: str, batch: Batch, lo: float, hi: float) -> list[tuple]:
    """The rows of a low-volume kind that fit its declared schema and whose time is in [lo, hi], as
    tuples in the schema's field order with their names made inert; the others counted by reason."""
    rows = doc.get(kind)
    if rows is None:
        return []
    if not isinstance(rows, list):
        raise MalformedBatch(f"{kind}: expected a list")
    row_type, time_field = schema.KINDS[kind]
    fields = row_type.__struct_fields__
    good = []
    for raw in rows:
        try:
            row = schema.row(kind, raw)
        except msgspec.ValidationError as exc:
            batch.rejects[kind, schema.reject_reason(exc, time_field)] += 1
            continue
        if not lo <= getattr(row, time_field) <= hi:
            batch.rejects[kind, "bad_timestamp"] += 1
            continue
        good.append(tuple(clean(v) if isinstance(v, str) and f not in ("sample_sql", "fingerprint") else v
                          for f, v in zip(fields, msgspec.structs.astuple(row))))
    return good


def _frame(rows: list[tuple], kind: str) -> pd.DataFrame:
    """Validated rows as a DataFrame; text columns stay Python objects (None, never NaN)."""
    return pd.DataFrame(rows, columns=list(schema.KINDS[kind][0].__struct_fields__))


def _minute(df: pd.DataFrame, col: str = "minute") -> pd.Series:
    return pd.to_datetime(df[col], unit="s").dt.floor("min")


def _header(doc: dict) -> Batch:
    """The batch's identity: id, version, service and host must be sound, or nothing in it can be trusted."""
    if doc.get("v") != 1:
        raise MalformedBatch(f"unsupported batch version {doc.get('v')!r}")
    if not isinstance(doc.get("id"), str) or not _BATCH_ID.match(doc["id"]):
        raise MalformedBatch("missing or invalid batch id")
    if not isinstance(doc.get("service"), str) or not 0 < len(doc["service"]) <= MAX_LABEL:
        raise MalformedBatch("missing or invalid service name")
    host, pid = doc.get("host"), doc.get("pid")
    if host is not None and not (isinstance(host, str) and len(host) <= MAX_LABEL):
        raise MalformedBatch("invalid host name (not text, or over 512 characters)")
    batch = Batch(id=doc["id"], service=clean(doc["service"]), host=None if host is None else clean(host),
                  pid=pid if type(pid) is int and 0 <= pid <= INT32 else None)
    if doc.get("sdk") is not None:
        try:
            batch.sdk = msgspec.convert(doc["sdk"], schema.SdkReport)
        except msgspec.ValidationError:
            batch.rejects["sdk", "bad_self_report"] += 1
    return batch


def decode(payload: bytes, limits: Limits | None = None, now: float | None = None) -> Batch:
    """Parse and validate one batch; times must fall in `limits`' window around `now` (the clock's)."""
    try:
        doc = orjson.loads(payload)
    except orjson.JSONDecodeError as exc:
        raise MalformedBatch(f"not JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise MalformedBatch("not a JSON object")
    batch = _header(doc)
    lo, hi = (limits or Limits()).window(time.time() if now is None else now)
    _decode_requests(doc, batch, lo, hi)

    for kind, stored in STORED.items():
        if rows := _rows(doc, kind, batch, lo, hi):
            batch.frames[kind] = stored.shape(_frame(rows, kind))
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
    # The LLM calls of all batches gather here, then go to llm_calls and its rollups in one statement each.
    llm = any("llm" in b.frames for b in batches)
    if llm:
        con.execute("CREATE OR REPLACE TEMP TABLE _llm_new AS FROM llm_calls LIMIT 0")
    for b in batches:
        _write_small(con, b)
    if llm:
        _write_llm(con)
    _write_request_costs(con, batches)
    # One statement per table for all batches: per-row statements cost ~0.5 ms each.
    _insert(con, "INSERT INTO ingested_batches SELECT *, now()::TIMESTAMP FROM _incoming", pd.DataFrame(
        [(b.id, source, b.service, b.host, b.pid, b.events) for b in batches],
        columns=["batch_id", "source", "service", "host", "pid", "events"]))
    # `rejected` counts events the SDK left out; a value it cleared (sent as null) kept its event.
    health = [(b.service, b.host, b.pid, b.sdk.dropped, b.sdk.send_errors,
               min(sum(n for reason, n in (b.sdk.rejected or {}).items() if reason not in CLEARED), schema.INT64),
               orjson.dumps(b.sdk.rejected).decode() if b.sdk.rejected else None) for b in batches if b.sdk]
    if health:
        _insert(con, "INSERT INTO sdk_health BY NAME SELECT now()::TIMESTAMP AS ts, * FROM _incoming", pd.DataFrame(
            health, columns=["service", "host", "pid", "dropped", "send_errors", "rejected", "rejected_reasons"]))
    return sum(b.events for b in batches)


def _write_llm(con: duckdb.DuckDBPyConnection) -> None:
    """The transaction's LLM calls, and their spend rollups (collectors.store.llm_rollup)."""
    [(calls, first, last)] = con.execute("SELECT count(*), min(ts), max(ts) FROM _llm_new").fetchall()
    if calls:
        con.execute("INSERT INTO llm_calls SELECT * FROM _llm_new")
        llm_rollup.add(con, "_llm_new")
        rolled = rolled_until(con)["hour"]
        if rolled is not None and first < rolled:
            # Calls of hours already rolled: into their hours and days now (see settle_late).
            settle_late(con, (first, last + timedelta(minutes=1)))
    con.execute("DROP TABLE _llm_new")


def _write_request_costs(con: duckdb.DuckDBPyConnection, batches: list[Batch]) -> None:
    """The requests these batches' calls and events belong to, priced (collectors.store.request_costs)."""
    calls = [b.llm.assign(service=b.service) for b in batches if b.llm is not None]
    calls = pd.concat(calls, ignore_index=True).rename(columns={"user": "user_id"}) if calls else None
    times = [] if calls is None else [calls["ts"].min(), calls["ts"].max()]
    for b in batches:
        if b.requests is not None and len(b.requests):
            bounds = pc.min_max(b.requests["ts"])
            times += [pd.Timestamp(bounds["min"].as_py()), pd.Timestamp(bounds["max"].as_py())]
    if times:
        request_costs.add(con, calls, min(times).to_pydatetime(warn=False), max(times).to_pydatetime(warn=False))


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
        _unregister(con, "_incoming_requests")


def _unregister(con: duckdb.DuckDBPyConnection, name: str) -> None:
    """Drop a registered view; after a failed statement the aborted transaction refuses that too, and its
    error would hide the one that says what went wrong."""
    with contextlib.suppress(duckdb.Error):
        con.unregister(name)


def _insert(con: duckdb.DuckDBPyConnection, sql: str, df, params=()) -> None:
    """Run an INSERT ... FROM _incoming with `df` registered under that name."""
    con.register("_incoming", df)
    try:
        con.execute(sql, list(params))
    finally:
        _unregister(con, "_incoming")


def _write_small(con: duckdb.DuckDBPyConnection, b: Batch) -> None:
    for kind, frame in b.frames.items():
        STORED[kind].write(con, b, frame)
    rejects = [(b.id, kind, reason, n) for (kind, reason), n in b.rejects.items() if n]
    if rejects:
        con.executemany("INSERT INTO ingest_rejects VALUES (now()::TIMESTAMP, ?, ?, ?, ?)", rejects)


def _write_cache_sizes(con: duckdb.DuckDBPyConnection, b: Batch, sizes: pd.DataFrame) -> None:
    """Merge into one row per (minute, service, host, cache), the largest (see the module's docs)."""
    key = "s.minute = i.minute AND s.service = ? AND s.host IS NOT DISTINCT FROM ? AND s.cache = i.cache"
    con.register("_incoming", sizes)
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
        _unregister(con, "_incoming")


# -- the low-volume kinds: how each one's validated rows are shaped and written ------------------------

def _shape_minutes(df: pd.DataFrame) -> pd.DataFrame:
    df["minute"] = _minute(df)
    return df


def _shape_llm(df: pd.DataFrame) -> pd.DataFrame:
    df["ts"] = pd.to_datetime(df["ts"], unit="s")
    for col in ("cached_input_tokens", "cache_write_tokens"):   # optional: None is 0 (float is exact to 10^9)
        df[col] = df[col].fillna(0).astype("int64")
    df["cache_hit"] = df["cache_hit"].fillna(False).astype(bool)
    for col in COST_COLUMNS:     # unpriced until the collector prices the batch (collectors.pricing)
        df[col] = pd.Series([None] * len(df), dtype=object)
    return df


def _shape_deploys(df: pd.DataFrame) -> pd.DataFrame:
    df["ts"] = pd.to_datetime(df["ts"], unit="s")
    return df


def _shape_cache_sizes(df: pd.DataFrame) -> pd.DataFrame:
    df["minute"] = _minute(df, "ts")
    # One row per cache and minute: the last sample (a stable sort keeps the later of equal times).
    df = df.sort_values("ts", kind="stable").drop_duplicates(["minute", "cache"], keep="last")
    return df[["minute", "cache", "entries"]].astype({"entries": "int64"}).reset_index(drop=True)


def _inserting(sql: str, service_only: bool = False):
    """A writer running `sql` (INSERT ... FROM _incoming; its ? are the batch's service and host)."""
    def write(con: duckdb.DuckDBPyConnection, b: Batch, df: pd.DataFrame) -> None:
        _insert(con, sql, df, [b.service] if service_only else [b.service, b.host])
    return write


def _write_queries(con: duckdb.DuckDBPyConnection, b: Batch, df: pd.DataFrame) -> None:
    _insert(con, """
        INSERT INTO query_stats
        SELECT minute, ?, database, fingerprint, sample_sql, calls, total_ms, min_ms, max_ms
        FROM _incoming
    """, df.drop(columns="buckets"), [b.service])
    buckets = pd.DataFrame(
        [(m, fp, bucket, n) for m, fp, bs in zip(df["minute"], df["fingerprint"], df["buckets"])
         for bucket, n in bs.items()], columns=["minute", "fingerprint", "bucket", "count"])
    _insert(con, "INSERT INTO query_hist SELECT minute, ?, fingerprint, bucket, count FROM _incoming",
            buckets, [b.service])


# Kinds whose rows are merged at ingest with rows other batches wrote: a request's LLM calls into its cost
# row and call span (whichever batch brings its calls or its event), a cache's size into the largest of its
# minute. On a lake, two writes side by side would each miss the other's rows, so a batch with any of
# these is written alone (Collector._write_ingest); the other kinds only append.
MERGED_KINDS = ("llm", "cache_sizes")


def merges(batch: Batch) -> bool:
    return any(batch.frames.get(kind) is not None for kind in MERGED_KINDS)


@dataclass(frozen=True)
class Stored:
    """How one kind's rows, validated against schema.KINDS, become what its table takes."""
    shape: Callable[[pd.DataFrame], pd.DataFrame]                             # at decode, before pricing
    write: Callable[[duckdb.DuckDBPyConnection, Batch, pd.DataFrame], None]   # in the write transaction


# kind -> how it is stored; with schema.KINDS and collectors.sdk.batch.KINDS, the whole of a kind.
STORED: dict[str, Stored] = {
    "cache": Stored(_shape_minutes, _inserting("""
        INSERT INTO cache_stats
        SELECT minute, ?, ?, cache, namespace, hits, misses, lookups_timed, lookup_ms_sum, lookup_ms_max
        FROM _incoming
    """)),
    "queries": Stored(_shape_minutes, _write_queries),
    "llm": Stored(_shape_llm, _inserting("""
        INSERT INTO _llm_new BY NAME
        SELECT ts, ? AS service, ? AS host, provider, model, input_tokens, output_tokens, cached_input_tokens,
               request_id, endpoint, "user" AS user_id, cache_hit, latency_ms, cache_write_tokens,
               input_cost_usd::DECIMAL(18, 12) AS input_cost_usd,
               output_cost_usd::DECIMAL(18, 12) AS output_cost_usd, cost_usd::DECIMAL(18, 12) AS cost_usd,
               saved_usd::DECIMAL(18, 12) AS saved_usd, price_version::VARCHAR AS price_version,
               CASE WHEN price_version IS NOT NULL THEN now()::TIMESTAMP END AS priced_at
        FROM _incoming
    """)),
    "deploys": Stored(_shape_deploys, _inserting("INSERT INTO deploys SELECT ts, ?, version, ? FROM _incoming")),
    "cache_sizes": Stored(_shape_cache_sizes, _write_cache_sizes),
}
