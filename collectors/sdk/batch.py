"""The batch format shared by every transport (encoded here, decoded by collectors.store.ingest).

A batch is one UTF-8 JSON object:

    {"v": 1, "id": "<32 hex>", "service": "api", "host": "web-1", "pid": 4242, "sent_at": <epoch s>,
     "requests": {"n": N,
                  "ts": <base64 float64 LE>, "duration_ms": <base64 float64 LE>, "status": <base64 uint16 LE>,
                  "endpoint": {"values": [str], "codes": <base64 uint32 LE>},     # dictionary-encoded
                  "method":   {"values": [str], "codes": <base64 uint32 LE>},
                  "request_id": {"offsets": <base64 int32 LE, n+1>, "data": <base64 UTF-8>} | null,
                  "tags": [object|null] | null},
     "cache":   [{"minute", "cache", "namespace", "hits", "misses", "lookups_timed", "lookup_ms_sum", "lookup_ms_max"}],
     "queries": [{"minute", "database", "fingerprint", "sample_sql", "calls", "total_ms", "min_ms", "max_ms",
                  "buckets": {"<log bucket>": count}}],
     "llm":     [{"ts", "provider", "model", "input_tokens", "output_tokens", "cached_input_tokens",
                  "request_id", "endpoint", "user", "cache_hit", "latency_ms", "cache_write_tokens"}],
     "deploys": [{"ts", "version"}],
     "cache_sizes": [{"ts", "cache", "entries"}],          # sampled sizes of registered caches
     "sdk": {"dropped": int, "send_errors": int}}

Request events are columnar: numbers packed as little-endian arrays, labels as a dictionary of
distinct values plus packed codes, request ids as one UTF-8 buffer with offsets (an empty id means
none). Encoding costs a fraction of a microsecond per event, and the daemon hands the columns to
Arrow without a Python loop. Times are UTC epoch
seconds; `minute` is the epoch second a UTC minute starts. Every kind is optional, so a key added later
(like "cache_sizes") leaves older batches valid, and older collectors ignore it."""
from __future__ import annotations

import base64
import json
import math
import sys
import uuid
from array import array
from itertools import accumulate

from collectors.sdk.fingerprint import fingerprint

VERSION = 1
_LN_GAMMA = math.log(1.02)  # same buckets as collectors.store.histogram
_fingerprints: dict[str, str] = {}


def pack(typecode: str, values) -> str:
    arr = array(typecode, values)
    if sys.byteorder == "big":
        arr.byteswap()
    return base64.b64encode(arr.tobytes()).decode("ascii")


def _number(x, default=0.0) -> float:
    try:
        x = float(x)
    except (TypeError, ValueError):
        return default
    return x


def _statuses(values) -> str:
    try:
        return pack("H", values)
    except (TypeError, ValueError, OverflowError):
        cleaned = []
        for v in values:
            try:
                v = int(v)
            except (TypeError, ValueError):
                v = 0
            cleaned.append(v if 0 <= v < 65536 else 0)
        return pack("H", cleaned)


def pack_labels(values) -> dict:
    """Dictionary-encode a column of labels: the distinct values once, then one code per row."""
    index: dict = {}
    codes = [index.setdefault(v, len(index)) for v in values]
    return {"values": [v if isinstance(v, str) else str(v) for v in index], "codes": pack("I", codes)}


def pack_strings(values) -> dict | None:
    """Many distinct strings as one UTF-8 buffer plus offsets; None (all missing) when empty."""
    strings = ["" if v is None else v if isinstance(v, str) else str(v) for v in values]
    text = "".join(strings)
    if not text:
        return None
    if text.isascii():
        data, lengths = text.encode("ascii"), map(len, strings)
    else:
        encoded = [x.encode("utf-8", "replace") for x in strings]
        data, lengths = b"".join(encoded), map(len, encoded)
    offsets = array("i", [0])
    offsets.extend(accumulate(lengths))
    if sys.byteorder == "big":
        offsets.byteswap()
    return {"offsets": base64.b64encode(offsets.tobytes()).decode("ascii"),
            "data": base64.b64encode(data).decode("ascii")}


def encode_requests(events: list) -> dict:
    ts, endpoint, duration, status, method, request_ids, tags = zip(*events)
    try:
        duration_packed = pack("d", duration)
    except TypeError:
        duration_packed = pack("d", [_number(d, math.nan) for d in duration])
    return {
        "n": len(events),
        "ts": pack("d", ts),
        "duration_ms": duration_packed,
        "status": _statuses(status),
        "endpoint": pack_labels(endpoint),
        "method": pack_labels(method),
        "request_id": pack_strings(request_ids),
        "tags": tags if any(tags) else None,
    }


def aggregate_cache(events: list) -> list[dict]:
    rows: dict[tuple, list] = {}
    for ts, cache, namespace, hit, lookup_ms in events:
        key = (int(ts // 60 * 60), str(cache), None if namespace is None else str(namespace))
        row = rows.get(key)
        if row is None:
            row = rows[key] = [0, 0, 0, 0.0, None]
        row[0 if hit else 1] += 1
        if lookup_ms is not None:
            ms = _number(lookup_ms, -1.0)
            if ms >= 0:
                row[2] += 1
                row[3] += ms
                row[4] = ms if row[4] is None else max(row[4], ms)
    return [{"minute": k[0], "cache": k[1], "namespace": k[2], "hits": r[0], "misses": r[1],
             "lookups_timed": r[2], "lookup_ms_sum": r[3], "lookup_ms_max": r[4]} for k, r in rows.items()]


def _fingerprint(sql: str) -> str:
    fp = _fingerprints.get(sql)
    if fp is None:
        if len(_fingerprints) > 10_000:
            _fingerprints.clear()
        fp = _fingerprints[sql] = fingerprint(sql)
    return fp


def aggregate_queries(events: list) -> list[dict]:
    rows: dict[tuple, dict] = {}
    for ts, sql, duration_ms, database in events:
        ms = _number(duration_ms, -1.0)
        if not ms >= 0:
            continue
        sql = str(sql)
        key = (int(ts // 60 * 60), None if database is None else str(database), _fingerprint(sql))
        row = rows.get(key)
        if row is None:
            row = rows[key] = {"minute": key[0], "database": key[1], "fingerprint": key[2],
                               "sample_sql": sql[:4000], "calls": 0, "total_ms": 0.0,
                               "min_ms": ms, "max_ms": ms, "buckets": {}}
        row["calls"] += 1
        row["total_ms"] += ms
        row["min_ms"] = min(row["min_ms"], ms)
        row["max_ms"] = max(row["max_ms"], ms)
        b = str(math.ceil(math.log(max(ms, 1e-3)) / _LN_GAMMA))
        row["buckets"][b] = row["buckets"].get(b, 0) + 1
    return list(rows.values())


_LLM_FIELDS = ("ts", "provider", "model", "input_tokens", "output_tokens", "cached_input_tokens",
               "request_id", "endpoint", "user", "cache_hit", "latency_ms", "cache_write_tokens")


def encode(*, service: str, host: str, pid: int, sent_at: float, requests=(), cache=(), llm=(),
           queries=(), deploys=(), cache_sizes=(), dropped: int = 0, send_errors: int = 0) -> tuple[str, bytes, int]:
    """Build one batch from drained buffers. Returns (batch id, payload, number of events)."""
    batch_id = uuid.uuid4().hex
    doc: dict = {"v": VERSION, "id": batch_id, "service": service, "host": host, "pid": pid,
                 "sent_at": sent_at, "sdk": {"dropped": dropped, "send_errors": send_errors}}
    if requests:
        doc["requests"] = encode_requests(requests)
    if cache:
        doc["cache"] = aggregate_cache(cache)
    if queries:
        doc["queries"] = aggregate_queries(queries)
    if llm:
        doc["llm"] = [dict(zip(_LLM_FIELDS, row)) for row in llm]
    if deploys:
        doc["deploys"] = [{"ts": ts, "version": version} for ts, version in deploys]
    if cache_sizes:
        doc["cache_sizes"] = [{"ts": ts, "cache": cache, "entries": entries} for ts, cache, entries in cache_sizes]
    payload = json.dumps(doc, separators=(",", ":"), default=str, allow_nan=True).encode()
    return batch_id, payload, len(requests) + len(cache) + len(llm) + len(queries) + len(deploys) + len(cache_sizes)
