"""The batch format shared by every transport (encoded here, decoded by collectors.store.ingest).

A batch is one UTF-8 JSON object:

    {"v": 1, "id": "<32 hex>", "service": "api", "host": "web-1", "pid": 4242, "sent_at": <epoch s> | null,
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
     "sdk": {"dropped": int, "send_errors": int, "rejected": {"<kind>:<reason>": int}}}

Request events are columnar: numbers packed as little-endian arrays, labels as a dictionary of
distinct values plus packed codes, request ids as one UTF-8 buffer with offsets (an empty id means
none). Encoding costs a fraction of a microsecond per event, and the daemon hands the columns to
Arrow without a Python loop. Times are UTC epoch
seconds; `minute` is the epoch second a UTC minute starts. Every kind is optional, so a key added later
(like "cache_sizes") leaves older batches valid, and older collectors ignore it.

Everything the flusher sends fits what the collector accepts (the limits are in collectors.sdk.checks;
only the collector knows how far from its own clock a time may be). The events are checked here, on
the flusher's thread, never on the record call's path: an event with a value that does not fit (a
NaN, negative or day-long duration, tokens that are not an int in 0..10**9, a label over 512
characters, a time that is no timestamp...) is left out and counted in "rejected" by kind and reason
("queries:bad_duration", "llm:bad_input_tokens", "requests:label_too_long"). An optional value that
does not fit (an LLM call's latency_ms, a cache lookup's lookup_ms) is sent as null and counted
("llm:bad_latency_ms"), and its event is kept: those reasons, in CLEARED, count values, not events.
An event that cannot be encoded at all (an object whose str() raises) costs only itself:
"<kind>:encode_error". dropped, send_errors and rejected are cumulative per process. The JSON never
holds NaN or Infinity, and text that is not valid Unicode (lone surrogates) is sent with "?" in their
place."""
from __future__ import annotations

import base64
import json
import logging
import math
import sys
import uuid
from array import array
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from itertools import accumulate

from collectors.sdk import checks
from collectors.sdk.checks import MAX_DURATION_MS, MAX_EPOCH_S, MAX_LABEL, MAX_SQL, MAX_STATUS, MAX_TOKENS
from collectors.sdk.fingerprint import fingerprint

log = logging.getLogger("perfdeck.sdk")
VERSION = 1
CLEARED = frozenset({"llm:bad_latency_ms", "cache:bad_lookup_ms"})   # a value sent as null, its event kept
_LN_GAMMA = math.log(1.02)  # same buckets as collectors.store.histogram
_fingerprints: dict[str, str] = {}
_warned: set[str] = set()   # kinds whose encoding failure has been logged


def _dumps(value) -> str:
    # allow_nan=False: the collector's JSON parser refuses NaN and Infinity, and with them the whole batch.
    return json.dumps(value, separators=(",", ":"), default=str, allow_nan=False, ensure_ascii=False)


def _b64(arr: array) -> str:
    if sys.byteorder == "big":
        arr.byteswap()
    return base64.b64encode(arr.tobytes()).decode("ascii")


def pack(typecode: str, values) -> str:
    return _b64(array(typecode, values))


def pack_labels(values, check: bool = False) -> dict | None:
    """Dictionary-encode a column of labels: the distinct values once, then one code per row. With
    `check`, None when a label is missing or too long."""
    index: dict = {}
    codes = [index.setdefault(v, len(index)) for v in values]
    labels = [v if isinstance(v, str) else str(v) for v in index]
    if check and (None in index or checks.too_long(*labels)):
        return None
    return {"values": labels, "codes": pack("I", codes)}


def pack_strings(strings: list[str], lengths: list[int] | None = None) -> dict | None:
    """Many distinct strings as one UTF-8 buffer plus offsets; None (all missing) when empty.
    `lengths`: each string's len(), when the caller has them already."""
    text = "".join(strings)
    if not text:
        return None
    if text.isascii():
        data, lengths = text.encode("ascii"), map(len, strings) if lengths is None else lengths
    else:
        encoded = [x.encode("utf-8", "replace") for x in strings]
        data, lengths = b"".join(encoded), map(len, encoded)
    offsets = array("i", [0])
    offsets.extend(accumulate(lengths))
    return {"offsets": _b64(offsets), "data": base64.b64encode(data).decode("ascii")}


# -- requests: columnar, checked a column at a time; one event at a time only when a column fails ------

def _columns_fit(ts: tuple, duration: tuple, status: tuple) -> bool:
    """Every time, duration and status in range. Checked on the recorded values, before packing: a pass
    over them makes no new objects, and anything odd in them (a string, an object) means False."""
    try:
        total = sum(ts) + sum(duration)     # one NaN or infinity makes the sum NaN or infinite
        return (total - total == 0.0 and min(ts) > 0.0 and max(ts) < MAX_EPOCH_S and min(duration) >= 0.0
                and max(duration) <= MAX_DURATION_MS and min(status) >= 0 and max(status) <= MAX_STATUS)
    except Exception:
        return False


def _tags_json(tags, check: bool) -> str | None:
    """One request's tags as JSON ("null" for none); with `check`, None for tags the collector would
    not read back as written (not an object, huge ints, deep nesting, NaN, a str() that raises)."""
    if tags is None:
        return "null"
    if not check:
        return _dumps(tags)
    if not isinstance(tags, dict) or not checks.plain(tags):
        return None
    try:
        return _dumps(tags)
    except Exception:
        return None


def _requests_json(events: list, check: bool) -> str | None:
    """The requests object as JSON; with `check`, None when some value does not fit."""
    ts, endpoint, duration, status, method, request_ids, tags = zip(*events)
    if check and not _columns_fit(ts, duration, status):
        return None
    try:
        ts, duration, status = array("d", ts), array("d", duration), array("H", status)
    except (TypeError, ValueError, OverflowError):
        if check:      # in range yet not a number array() takes (200.0 as a status)
            return None
        raise
    endpoints, methods = pack_labels(endpoint, check), pack_labels(method, check)
    ids = ["" if v is None else v if isinstance(v, str) else str(v) for v in request_ids]
    lengths = list(map(len, ids))
    if endpoints is None or methods is None or check and max(lengths) > MAX_LABEL:
        return None
    texts = None
    if any(tags):        # each one's JSON made (and measured) alone, then spliced in
        texts = [_tags_json(t, check) for t in tags]
        if None in texts or check and any(checks.json_chars(t) > checks.MAX_TAGS_CHARS for t in texts):
            return None
    doc = {"n": len(events), "ts": _b64(ts), "duration_ms": _b64(duration), "status": _b64(status),
           "endpoint": endpoints, "method": methods, "request_id": pack_strings(ids, lengths), "tags": None}
    text = _dumps(doc)           # "tags" is its last key: a null, replaced by the list when there are tags
    return text if texts is None else "".join([text[:-len('null}')], "[", ",".join(texts), "]}"])


def _fitting_requests(events: list, counts: Counter) -> list:
    """The events that fit, their values converted; each other one counted by its first problem."""
    kept = []
    for ts, endpoint, duration, status, method, request_id, tags in events:
        duration, ts, status = checks.ms(duration), checks.epoch(ts), checks.count(status, MAX_STATUS)
        endpoint, method, request_id = checks.text(endpoint), checks.text(method), checks.text(request_id)
        tags_json = _tags_json(tags, True)
        reason = ("bad_duration" if duration is None else "bad_timestamp" if ts is None else
                  "bad_status" if status is None else "bad_endpoint" if endpoint is None else
                  "bad_method" if method is None else
                  "label_too_long" if checks.too_long(endpoint, method, request_id) else
                  "bad_tags" if tags_json is None else
                  "tags_too_long" if checks.json_chars(tags_json) > checks.MAX_TAGS_CHARS else None)
        if reason:
            counts[reason] += 1
        else:
            kept.append((ts, endpoint, duration, status, method, request_id, tags))
    return kept


def encode_requests(events: list, counts: Counter, check: bool) -> tuple[str, int] | None:
    text = _requests_json(events, check)
    if text is None:
        events = _fitting_requests(events, counts)
        if not events:
            return None
        text = _requests_json(events, check)
        if text is None:
            raise ValueError("request events still out of range after checking each")
    return text, len(events)


# -- the low-volume kinds: aggregated or sent row by row, each event checked -----------------------------

def aggregate_cache(events: list, counts: Counter, check: bool) -> tuple[str, int] | None:
    rows: dict[tuple, list] = {}
    n = 0
    for ts, cache, namespace, hit, lookup_ms in events:
        minute, hit, cache, namespace = checks.minute(ts), checks.flag(hit), checks.text(cache), checks.text(namespace)
        reason = ("bad_timestamp" if minute is None else "bad_hit" if hit is None else "bad_cache" if not cache
                  else "label_too_long" if checks.too_long(cache, namespace) else None)
        if reason:
            counts[reason] += 1
            continue
        ms = None if lookup_ms is None else checks.ms(lookup_ms)
        if ms is None and lookup_ms is not None:
            counts["bad_lookup_ms"] += 1      # still a hit or a miss, only not timed
        row = rows.get((minute, cache, namespace))
        if row is None:
            row = rows[minute, cache, namespace] = [0, 0, 0, 0.0, None]
        row[0 if hit else 1] += 1
        if ms is not None:
            row[2] += 1
            row[3] += ms
            row[4] = ms if row[4] is None else max(row[4], ms)
        n += 1
    if not rows:
        return None
    return _dumps([{"minute": k[0], "cache": k[1], "namespace": k[2], "hits": r[0], "misses": r[1],
                    "lookups_timed": r[2], "lookup_ms_sum": r[3], "lookup_ms_max": r[4]}
                   for k, r in rows.items()]), n


def _fingerprint(sql: str) -> str:
    fp = _fingerprints.get(sql)
    if fp is None:
        if len(_fingerprints) > 10_000:
            _fingerprints.clear()
        fp = _fingerprints[sql] = fingerprint(sql)[:MAX_SQL]
    return fp


def aggregate_queries(events: list, counts: Counter, check: bool) -> tuple[str, int] | None:
    rows: dict[tuple, dict] = {}
    n = 0
    for ts, sql, duration_ms, database in events:
        minute, ms, sql, database = checks.minute(ts), checks.ms(duration_ms), checks.text(sql), checks.text(database)
        fp = _fingerprint(sql) if sql else ""
        reason = ("bad_timestamp" if minute is None else "bad_duration" if ms is None else "bad_sql" if not fp
                  else "label_too_long" if checks.too_long(database) else None)
        if reason:
            counts[reason] += 1
            continue
        row = rows.get((minute, database, fp))
        if row is None:
            row = rows[minute, database, fp] = {"minute": minute, "database": database, "fingerprint": fp,
                                                "sample_sql": sql[:4000], "calls": 0, "total_ms": 0.0,
                                                "min_ms": ms, "max_ms": ms, "buckets": {}}
        row["calls"] += 1
        row["total_ms"] += ms
        row["min_ms"] = min(row["min_ms"], ms)
        row["max_ms"] = max(row["max_ms"], ms)
        b = str(math.ceil(math.log(max(ms, 1e-3)) / _LN_GAMMA))
        row["buckets"][b] = row["buckets"].get(b, 0) + 1
        n += 1
    return (_dumps(list(rows.values())), n) if rows else None


_LLM_FIELDS = ("ts", "provider", "model", "input_tokens", "output_tokens", "cached_input_tokens",
               "request_id", "endpoint", "user", "cache_hit", "latency_ms", "cache_write_tokens")
_LLM_REQUIRED = ("model", "input_tokens", "output_tokens", "cached_input_tokens", "cache_hit", "cache_write_tokens")


def _llm_row(event: tuple, counts: Counter) -> dict | None:
    ts, provider, model, inp, out, cached, request_id, endpoint, user, cache_hit, latency_ms, written = event
    row = {"ts": checks.epoch(ts), "provider": checks.text(provider), "model": checks.text(model) or None,
           "input_tokens": checks.count(inp, MAX_TOKENS), "output_tokens": checks.count(out, MAX_TOKENS),
           "cached_input_tokens": checks.count(0 if cached is None else cached, MAX_TOKENS),
           "request_id": checks.text(request_id), "endpoint": checks.text(endpoint), "user": checks.text(user),
           "cache_hit": checks.flag(False if cache_hit is None else cache_hit),
           "latency_ms": None if latency_ms is None else checks.ms(latency_ms),
           "cache_write_tokens": checks.count(0 if written is None else written, MAX_TOKENS)}
    bad = next((field for field in _LLM_REQUIRED if row[field] is None), None)
    reason = ("bad_timestamp" if row["ts"] is None else f"bad_{bad}" if bad else "label_too_long"
              if checks.too_long(row["provider"], row["model"], row["request_id"], row["endpoint"], row["user"])
              else None)
    if reason:
        counts[reason] += 1
        return None
    if row["latency_ms"] is None and latency_ms is not None:
        counts["bad_latency_ms"] += 1         # the call and its tokens still count, untimed
    return row


def encode_llm(events: list, counts: Counter, check: bool) -> tuple[str, int] | None:
    if check:
        rows = [row for row in (_llm_row(e, counts) for e in events) if row is not None]
    else:
        rows = [dict(zip(_LLM_FIELDS, e)) for e in events]
    return (_dumps(rows), len(rows)) if rows else None


def encode_deploys(events: list, counts: Counter, check: bool) -> tuple[str, int] | None:
    rows = []
    for ts, version in events:
        if check:
            ts, version = checks.epoch(ts), checks.text(version)
            reason = ("bad_timestamp" if ts is None else "bad_version" if not version
                      else "label_too_long" if checks.too_long(version) else None)
            if reason:
                counts[reason] += 1
                continue
        rows.append({"ts": ts, "version": version})
    return (_dumps(rows), len(rows)) if rows else None


def encode_cache_sizes(events: list, counts: Counter, check: bool) -> tuple[str, int] | None:
    rows = []
    for ts, cache, entries in events:
        if check:
            ts, cache, entries = checks.epoch(ts), checks.text(cache), checks.count(entries)
            reason = ("bad_timestamp" if ts is None else "bad_cache" if not cache
                      else "label_too_long" if checks.too_long(cache) else "bad_entries" if entries is None else None)
            if reason:
                counts[reason] += 1
                continue
        rows.append({"ts": ts, "cache": cache, "entries": entries})
    return (_dumps(rows), len(rows)) if rows else None


# -- one batch -------------------------------------------------------------------------------------------

def _encode_kind(kind: str, encoder, events: list, rejected: Counter, check: bool) -> tuple[str, int] | None:
    """One kind's JSON and number of events, its refusals counted in `rejected`. When encoding fails,
    each event is tried alone: only those that fail alone are lost, counted as encode_error."""
    counts: Counter = Counter()
    try:
        return _counted(kind, encoder(events, counts, check), counts, rejected)
    except Exception:
        if kind not in _warned:
            _warned.add(kind)
            log.warning("perfdeck: some %s events could not be encoded; they are counted as "
                        "rejected %s:encode_error and the others sent (logged once)", kind, kind, exc_info=True)
    kept = [e for e in events if _encodes(encoder, e, check)]
    rejected[f"{kind}:encode_error"] += len(events) - len(kept)
    counts = Counter()
    try:
        return _counted(kind, encoder(kept, counts, check), counts, rejected) if kept else None
    except Exception:          # events that encode alone but not together: nothing is left to try
        rejected[f"{kind}:encode_error"] += len(kept)
        return None


def _encodes(encoder, event, check: bool) -> bool:
    try:
        encoder([event], Counter(), check)
    except Exception:
        return False
    return True


def _counted(kind: str, result, counts: Counter, rejected: Counter):
    for reason, n in counts.items():
        rejected[f"{kind}:{reason}"] += n
    return result


@dataclass(frozen=True, slots=True)
class Kind:
    """One kind of event in a batch: its key in the batch, the collectors.sdk.api buffer its record
    call appends to (None: the flusher samples it itself), and its encoder, which checks and packs a
    list of events into (JSON, events kept). The collector's side of each kind is declared in
    collectors.store.schema.KINDS (row schema) and collectors.store.ingest.STORED (how it is written)."""
    key: str
    buffer: str | None
    encoder: Callable[[list, Counter, bool], tuple[str, int] | None]


# The one list of event kinds, in batch order.
KINDS = (Kind("requests", "requests", encode_requests), Kind("cache", "cache_lookups", aggregate_cache),
         Kind("queries", "queries", aggregate_queries), Kind("llm", "llm_calls", encode_llm),
         Kind("deploys", "deploys", encode_deploys), Kind("cache_sizes", None, encode_cache_sizes))
BUFFERS = tuple(kind.buffer for kind in KINDS if kind.buffer)     # what the record calls fill


def encode(*, service: str, host: str, pid: int, sent_at: float, dropped: int = 0, send_errors: int = 0,
           rejected: Counter | None = None, batch_id: str | None = None, **events) -> tuple[str, bytes, int]:
    """Build one batch from drained buffers, given by kind (requests=[...], llm=[...], see KINDS).
    Returns (batch id, payload, number of events in it).

    `rejected` is the flusher's cumulative counter: given it, every event is checked (see the module's
    docs), what does not fit is counted there, and the batch reports it. Without it, requests, LLM
    calls, deploys and cache sizes are encoded as given, which is how tests build batches for the
    collector to refuse. Either way an event that cannot be encoded costs only itself. `batch_id`: a
    deterministic id (the OTLP receiver's, from a hash of its body), else a random one."""
    unknown = events.keys() - {kind.key for kind in KINDS}
    if unknown:
        raise TypeError(f"encode() got events of unknown kinds: {', '.join(sorted(unknown))}")
    check = rejected is not None
    counter = Counter() if rejected is None else rejected
    batch_id = batch_id or uuid.uuid4().hex
    parts, n = [], 0
    for kind in KINDS:
        items = events.get(kind.key)
        encoded = _encode_kind(kind.key, kind.encoder, items, counter, check) if items else None
        if encoded is not None:
            parts += (f',"{kind.key}":', encoded[0])
            n += encoded[1]
    head = _dumps({"v": VERSION, "id": batch_id, "service": service, "host": host, "pid": pid,
                   "sent_at": checks.epoch(sent_at),
                   "sdk": {"dropped": dropped, "send_errors": send_errors, "rejected": dict(rejected or {})}})
    payload = "".join([head[:-1], *parts, "}"])      # one copy of what may be megabytes
    return batch_id, payload.encode("utf-8", "replace"), n
