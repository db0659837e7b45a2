"""Where the flusher sends encoded batches, and the control channel beside each (commands from the
dashboard: collectors.sdk.control). `from_url` and `channel_for` pick one:

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


def channel_for(url: str, client=None):
    """The control channel beside a transport URL, as collectors.sdk.transport.from_url reads it."""
    if url.startswith(("redis://", "rediss://", "unix://")):
        from collectors.sdk.transport.redis import RedisChannel
        return RedisChannel(url, client)
    from collectors.sdk.transport.spool import SpoolChannel
    return SpoolChannel(url[len("spool:"):] if url.startswith("spool:") else url or "data/spool")
