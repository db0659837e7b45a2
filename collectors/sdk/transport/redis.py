"""Redis Stream transport: XADD each batch to `perfdeck:batches`; the daemon reads it through a
consumer group and acknowledges only after its DuckDB commit. redis-py is imported here, when this
transport is chosen, never when the SDK is imported."""
from __future__ import annotations

STREAM = "perfdeck:batches"
MAXLEN = 10_000  # batches kept while no collector reads; approximate trimming keeps XADD O(1)


class RedisTransport:
    def __init__(self, url: str, stream: str = STREAM, maxlen: int = MAXLEN):
        import redis  # noqa: PLC0415 - optional dependency, only for this transport

        self.url, self.stream, self.maxlen = url, stream, maxlen
        self.client = redis.Redis.from_url(url, socket_timeout=2, socket_connect_timeout=2)

    def send(self, batch_id: str, payload: bytes) -> None:
        self.client.xadd(self.stream, {"id": batch_id, "b": payload}, maxlen=self.maxlen, approximate=True)

    def close(self) -> None:
        self.client.close()

    def __repr__(self) -> str:
        return f"redis:{self.url}"
