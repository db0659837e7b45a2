"""Redis Stream transport: XADD each batch to `perfdeck:batches`; the daemon reads it through a
consumer group and acknowledges only after its DuckDB commit. redis-py is imported here, when this
transport is chosen, never when the SDK is imported.

The stream is capped, never trimmed: trimming would delete batches no collector has read, counted
nowhere. When it already holds `maxlen` entries (XLEN: unread plus read and not yet acknowledged,
since the collector deletes what it acknowledged) the batch is not added and send() raises StreamFull,
so the flusher keeps it in its bounded backlog and, past that, drops it and counts it in `dropped`.
Check and add are one Lua script: one round trip, and no other writer slips in between."""
from __future__ import annotations

STREAM = "perfdeck:batches"
MAXLEN = 10_000  # batches the stream may hold while no collector reads it

# KEYS[1] stream; ARGV: cap, batch id, payload. Returns the entry id, or nil when the stream is full.
_ADD_UNLESS_FULL = """
if redis.call('XLEN', KEYS[1]) >= tonumber(ARGV[1]) then
    return nil
end
return redis.call('XADD', KEYS[1], '*', 'id', ARGV[2], 'b', ARGV[3])
"""


class StreamFull(RuntimeError):
    """The stream holds its cap of unread batches: no collector is reading it."""


class RedisTransport:
    def __init__(self, url: str, stream: str = STREAM, maxlen: int = MAXLEN):
        import redis  # noqa: PLC0415 - optional dependency, only for this transport

        self.url, self.stream, self.maxlen = url, stream, maxlen
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)
        self._add = self.client.register_script(_ADD_UNLESS_FULL)

    def send(self, batch_id: str, payload: bytes) -> None:
        if self._add(keys=[self.stream], args=[self.maxlen, batch_id, payload]) is None:
            raise StreamFull(f"{self.stream} holds {self.maxlen} batches no collector has acknowledged")

    def close(self) -> None:
        self.client.close()

    def __repr__(self) -> str:
        return f"redis:{self.url}"
