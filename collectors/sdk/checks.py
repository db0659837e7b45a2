"""What the collector accepts, checked on the flusher thread while a batch is encoded (never on the
record call's path). The limits are the collector's declared schema (collectors.store.schema, which
imports msgspec and so is not imported here); a test keeps the two equal.

Each function takes one value as the app recorded it and returns it in the form the batch carries
(a float, an int, a bool, a str), or None when it does not fit. They never call bool() or compare
arbitrary objects; str() and float() of an app's object may still raise, and the encoder turns that
into a counted `encode_error` for that event alone."""
from __future__ import annotations

import math
import operator
import re

MAX_LABEL = 512                 # endpoint, method, model, cache, namespace, version, request id...
MAX_SQL = 8192                  # a query's fingerprint (the sample statement is cut at 4,000)
MAX_TAGS_CHARS = 4096           # a request's tags, as JSON text
MAX_DURATION_MS = 86_400_000.0  # a day: longer is a clock or unit bug
MAX_EPOCH_S = 4e9               # 2096: any time must at least be a timestamp
MAX_TOKENS = 10**9              # per LLM call: far past any context window
MAX_COUNT = 2**63 - 1           # the store's BIGINT
MAX_STATUS = 999                # HTTP codes have three digits
MIN_INT = -(2**63)              # ints in tags: the collector's JSON parser keeps int64 exact
TAG_DEPTH = 32                  # nesting of lists and objects in tags
_NOT_NUMBERS = (str, bytes, bytearray, bool)   # float() would parse "12" and take True as 1
# What the collector stores as a visible 6-character escape ("\u202e"), beyond the controls JSON escapes
# anyway: DEL, C1 controls, bidirectional marks, embeddings, overrides and isolates.
ESCAPED = re.compile("[\x7f-\x9f\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def _real(value) -> float | None:
    """A number as a float; None for text, flags and what float() refuses."""
    if isinstance(value, _NOT_NUMBERS):
        return None
    try:
        return float(value)
    except (TypeError, ValueError, OverflowError):
        return None


def ms(value) -> float | None:
    """A duration in milliseconds: a real number in 0..MAX_DURATION_MS (NaN and infinities are not)."""
    value = _real(value)
    return value if value is not None and 0.0 <= value <= MAX_DURATION_MS else None


def epoch(value) -> float | None:
    """A time in epoch seconds, after 1970 and before MAX_EPOCH_S."""
    value = _real(value)
    return value if value is not None and 0.0 < value < MAX_EPOCH_S else None


def minute(value) -> int | None:
    """The epoch second a valid time's UTC minute starts (itself a valid time: not minute 0)."""
    value = epoch(value)
    start = None if value is None else int(value // 60 * 60)
    return start or None


def count(value, top: int = MAX_COUNT) -> int | None:
    """A count: an int (or numpy integer) in 0..top; not a bool, 3.0 nor "3"."""
    if isinstance(value, bool):
        return None
    try:
        value = operator.index(value)
    except TypeError:
        return None
    return value if 0 <= value <= top else None


def flag(value) -> bool | None:
    """A yes/no: a bool, or the ints 0 and 1."""
    if value is True or value is False:
        return value
    return bool(value) if type(value) is int and value in (0, 1) else None


def text(value) -> str | None:
    """A label as text (str() of anything else); None stays None."""
    return value if value is None or isinstance(value, str) else str(value)


def too_long(*labels: str | None) -> bool:
    return any(label is not None and len(label) > MAX_LABEL for label in labels)


def json_chars(text: str) -> int:
    """The length the collector gives a JSON text it stores (its escapes included)."""
    if text.isascii() and "\x7f" not in text:
        return len(text)
    return len(text) + 5 * len(ESCAPED.findall(text))


def plain(value, depth: int = 0) -> bool:
    """Whether tags read back as they were written: ints within int64, nesting within TAG_DEPTH. (JSON
    encoding refuses NaN and infinities itself; other objects are sent as their str().)"""
    if isinstance(value, int):
        return isinstance(value, bool) or MIN_INT <= value <= MAX_COUNT
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, dict):
        items = value.values()
    elif isinstance(value, (list, tuple)):
        items = value
    else:
        return True
    return depth < TAG_DEPTH and all(plain(v, depth + 1) for v in items)
