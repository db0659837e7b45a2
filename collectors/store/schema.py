"""The declared batch schema: what each row of a batch may hold, so that nothing that reaches the write
transaction can fail it (collectors.store.ingest.decode applies it, once, before the transaction).

The low-volume kinds (cache, queries, llm, deploys, cache_sizes, the SDK's self-report) are msgspec
Structs with the types, ranges and lengths their store columns hold: msgspec checks a row in C and
says which field is wrong and how, and `reject_reason` turns that into the counted reason
("bad_latency_ms", "input_tokens_out_of_range", "label_too_long", "bad_timestamp"). Unknown fields are
ignored, so a newer SDK's rows stay readable. Request events are columnar and checked with numpy in
ingest.py against the same limits.

Names are text: control and bidirectional-override characters (NUL, U+202E...) are replaced by their
escaped form, so a name cannot hide, reorder or truncate what is shown around it."""
from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from typing import Annotated

import msgspec
from msgspec import Meta, Struct

MAX_LABEL = 512                 # longest endpoint / method / model / cache / host / version / request id
MAX_SQL = 8192                  # longest sample statement or fingerprint (the SDK sends 4,000 at most)
MAX_TAGS_BYTES = 4096           # a request's tags, as JSON
MAX_DURATION_MS = 86_400_000.0  # a day: anything longer is a clock or unit bug
MAX_EPOCH_S = 4e9               # 2096: any time must at least be a timestamp; the window in Limits is tighter
MAX_TOKENS = 10**9              # per LLM call: far past any context window, and priced within DECIMAL(18, 12)
INT64 = 2**63 - 1
INT32 = 2**31 - 1

Label = Annotated[str, Meta(min_length=1, max_length=MAX_LABEL)]
OptLabel = Annotated[str, Meta(max_length=MAX_LABEL)] | None
Sql = Annotated[str, Meta(max_length=MAX_SQL)]
Count = Annotated[int, Meta(ge=0, le=INT64)]
Tokens = Annotated[int, Meta(ge=0, le=MAX_TOKENS)]
Epoch = Annotated[float, Meta(gt=0, lt=MAX_EPOCH_S)]
Ms = Annotated[float, Meta(ge=0, le=MAX_DURATION_MS)]
FiniteSum = Annotated[float, Meta(ge=0, le=sys.float_info.max)]   # rejects NaN and infinity too
Bucket = Annotated[int, Meta(ge=-INT32 - 1, le=INT32)]            # query_hist.bucket is an INTEGER


class CacheRow(Struct, kw_only=True):
    minute: Epoch
    cache: Label
    namespace: OptLabel = None
    hits: Count
    misses: Count
    lookups_timed: Count = 0
    lookup_ms_sum: FiniteSum = 0.0
    lookup_ms_max: Ms | None = None


class QueryRow(Struct, kw_only=True):
    minute: Epoch
    database: OptLabel = None
    fingerprint: Annotated[str, Meta(min_length=1, max_length=MAX_SQL)]
    sample_sql: Sql
    calls: Count
    total_ms: FiniteSum
    min_ms: Ms | None = None
    max_ms: Ms | None = None
    buckets: dict[Bucket, Count]


class LlmRow(Struct, kw_only=True):
    ts: Epoch
    provider: OptLabel = None
    model: Label
    input_tokens: Tokens
    output_tokens: Tokens
    cached_input_tokens: Tokens | None = 0
    request_id: OptLabel = None
    endpoint: OptLabel = None
    user: OptLabel = None
    cache_hit: bool | None = False
    latency_ms: Ms | None = None
    cache_write_tokens: Tokens | None = 0


class DeployRow(Struct, kw_only=True):
    ts: Epoch
    version: Label


class CacheSizeRow(Struct, kw_only=True):
    ts: Epoch
    cache: Label
    entries: Count


class SdkReport(Struct, kw_only=True):
    dropped: Count
    send_errors: Count
    rejected: dict[Label, Count] | None = None   # {reason: count}, cumulative like the others


KINDS: dict[str, tuple[type[Struct], str]] = {     # kind -> (row schema, its time field)
    "cache": (CacheRow, "minute"),
    "queries": (QueryRow, "minute"),
    "llm": (LlmRow, "ts"),
    "deploys": (DeployRow, "ts"),
    "cache_sizes": (CacheSizeRow, "ts"),
}


@dataclass(frozen=True)
class Limits:
    """How far from the collector's clock an event's time may be. Backfills go through the SDK's clock
    (sdk.configure(clock=...)) and are accepted as far back as the store keeps rollups."""
    max_future_s: float = 300.0             # clocks run a little ahead; a year ahead is a bug
    max_age_s: float = 400 * 86400.0        # older than the rollups are kept: purged at once anyway

    def window(self, now: float) -> tuple[float, float]:
        return now - self.max_age_s, now + self.max_future_s


_FIELD = re.compile(r"`\$\.(\w+)|missing required field `(\w+)`")


def reject_reason(error: msgspec.ValidationError, time_field: str) -> str:
    """The counted reason for a row msgspec refused: which field, and whether its type, range or length."""
    text = str(error)
    m = _FIELD.search(text)
    if not m:
        return "not_an_object"
    name = m.group(1) or m.group(2)
    if "length <=" in text:
        return "label_too_long"
    if "got `" in text or "missing" in text or "length >=" in text:
        return f"bad_{name}"
    return "bad_timestamp" if name == time_field else f"{name}_out_of_range"


def row(kind: str, value) -> Struct:
    """One row of `kind`, validated; raises msgspec.ValidationError."""
    return msgspec.convert(value, KINDS[kind][0], str_keys=True)


# C0 and C1 controls, and the characters that reorder or hide text (bidi embeddings, overrides, isolates,
# marks): each becomes its visible escape, "\u202e".
_UNSAFE = [*range(0x00, 0x20), 0x7F, *range(0x80, 0xA0), 0x061C, 0x200E, 0x200F, *range(0x202A, 0x202F),
           *range(0x2066, 0x206A)]
_ESCAPE = {c: f"\\u{c:04x}" for c in _UNSAFE}
_HAS_UNSAFE = re.compile("[" + "".join(re.escape(chr(c)) for c in _UNSAFE) + "]")
UNSAFE_PATTERN = _HAS_UNSAFE.pattern


def clean(text: str) -> str:
    """A name as inert text: controls and bidi overrides escaped (most names have none: no copy then)."""
    return text.translate(_ESCAPE) if _HAS_UNSAFE.search(text) else text
