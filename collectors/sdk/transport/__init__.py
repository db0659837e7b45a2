"""Where the flusher sends encoded batches. `from_url` picks one:

    spool:data/spool          files in a directory, written under a temporary name then renamed
    redis://host:6379/0       XADD to the stream `perfdeck:batches` (the multi-host path)
"""
from __future__ import annotations


def from_url(url: str):
    if url.startswith(("redis://", "rediss://", "unix://")):
        from collectors.sdk.transport.redis import RedisTransport
        return RedisTransport(url)
    if url.startswith("spool:"):
        url = url[len("spool:"):]
    from collectors.sdk.transport.spool import SpoolTransport
    return SpoolTransport(url or "data/spool")
