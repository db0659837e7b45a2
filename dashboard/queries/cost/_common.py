"""What every cost query shares: the range filter, tokens per second, the request join margin."""
from __future__ import annotations

from datetime import datetime, timedelta

# How far either side of the range a request's calls and its event are looked for. The event is
# recorded when the request ends, after its calls: a call at 11:59:59.9 belongs to the request
# whose event is at 12:00:00.2, and that request belongs to the range holding 12:00:00.2.
JOIN_MARGIN = timedelta(minutes=15)

RANGE = """ts >= $since
      AND ts < $until
      AND ($service IS NULL OR service = $service)"""

# Output tokens per second of generation: cache hits generate nothing, calls without a latency
# measured nothing.
TOKENS_PER_S = """sum(output_tokens) FILTER (WHERE NOT cache_hit AND latency_ms > 0)
           / nullif(sum(latency_ms) FILTER (WHERE NOT cache_hit AND latency_ms > 0) / 1000, 0)"""


def _params(since: datetime, until: datetime, service: str | None) -> dict:
    return {"since": since, "until": until, "service": service}


