"""Redis Stream transport: XADD each batch to `perfdeck:batches`; the daemon reads it through a
consumer group and acknowledges only after its DuckDB commit. redis-py is imported here, when this
transport is chosen, never when the SDK is imported.

The stream is capped, never trimmed: trimming would delete batches no collector has read, counted
nowhere. When it already holds `maxlen` entries (XLEN: unread plus read and not yet acknowledged,
since the collector deletes what it acknowledged) the batch is not added and send() raises StreamFull,
so the flusher keeps it in its bounded backlog and, past that, drops it and counts it in `dropped`.
Check and add are one Lua script: one round trip, and no other writer slips in between."""
from __future__ import annotations

import json
import logging
import re
import time

from collectors.sdk.transport.records import KEEP_S, loads

log = logging.getLogger("perfdeck.sdk")

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
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2,
                                           client_name="perfdeck-sdk")   # marked in CLIENT LIST
        self._add = self.client.register_script(_ADD_UNLESS_FULL)

    def send(self, batch_id: str, payload: bytes) -> None:
        if self._add(keys=[self.stream], args=[self.maxlen, batch_id, payload]) is None:
            raise StreamFull(f"{self.stream} holds {self.maxlen} batches no collector has acknowledged")

    def close(self) -> None:
        self.client.close()

    def __repr__(self) -> str:
        return f"redis:{self.url}"


class RedisChannel:
    STREAM, ACKS, LISTENERS = "perfdeck:control", "perfdeck:control:acks:", "perfdeck:control:listeners"
    MAXLEN = 1000

    def __init__(self, url: str, client=None):
        self.url, self._client, self._owned = url, client, client is None
        self._last: bytes | str = "0-0"

    def __repr__(self) -> str:
        return re.sub(r"(//[^:@/]*):[^@/]*@", r"\1:***@", self.url)   # no password in logs

    @property
    def client(self):
        if self._client is None:
            import redis  # noqa: PLC0415 - optional dependency, only for this channel
            self._client = redis.Redis.from_url(self.url, socket_timeout=2, socket_connect_timeout=2,
                                                client_name="perfdeck-control")
        return self._client

    # listener side
    def start(self) -> None:
        newest = self.client.xrevrange(self.STREAM, count=1)   # commands after this one are ours
        self._last = newest[0][0] if newest else "0-0"

    def poll(self) -> list[dict]:
        reply = self.client.xread({self.STREAM: self._last}, count=100)
        commands = []
        for entry_id, fields in (reply[0][1] if reply else []):
            self._last = entry_id
            try:
                commands.append(json.loads(fields[b"c"]))
            except (KeyError, ValueError):
                log.warning("perfdeck: unreadable control command %r skipped", entry_id)
        return commands

    def ack(self, command_id: str, key: str, ack: dict) -> None:
        pipe = self.client.pipeline()
        pipe.hset(self.ACKS + command_id, key, json.dumps(ack))
        pipe.expire(self.ACKS + command_id, int(KEEP_S))
        pipe.execute()

    def announce(self, key: str, presence: dict) -> None:
        self.client.hset(self.LISTENERS, key, json.dumps(presence))

    def withdraw(self, key: str) -> None:
        self.client.hdel(self.LISTENERS, key)

    # broadcaster side
    def publish(self, command: dict) -> None:
        self.client.xadd(self.STREAM, {"c": json.dumps(command)}, maxlen=self.MAXLEN, approximate=True)

    def listeners(self) -> list[dict]:
        return [v for v in map(loads, self.client.hgetall(self.LISTENERS).values()) if v is not None]

    def acks(self, command_id: str) -> list[dict]:
        return [v for v in map(loads, self.client.hgetall(self.ACKS + command_id).values()) if v is not None]

    def cleanup(self, max_age_s: float) -> int:
        cutoff = time.time() - max_age_s

        def is_stale(raw) -> bool:
            at = (loads(raw) or {}).get("at")
            return not isinstance(at, (int, float)) or at < cutoff

        stale = [k for k, v in self.client.hgetall(self.LISTENERS).items() if is_stale(v)]
        if stale:
            self.client.hdel(self.LISTENERS, *stale)
        trimmed = self.client.xtrim(self.STREAM, minid=f"{int(cutoff * 1000)}-0", approximate=False)
        return len(stale) + int(trimmed or 0)

    def close(self) -> None:
        if self._owned and self._client is not None:
            self._client.close()
