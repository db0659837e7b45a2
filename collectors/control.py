"""The broadcasting side of in-process cache control, as the dashboard uses it.

Running processes that use the perfdeck SDK listen on their transport (a spool directory or a Redis
stream, see collectors.sdk.control for the layout). From here one can see who listens and which caches
they registered, tell them all to clear a cache, and read their acknowledgements:

    for p in listeners("spool:data/spool"): print(p["service"], p["pid"], p["caches"])
    command_id = broadcast_clear("spool:data/spool", "product_lru", namespace="product")
    acks("spool:data/spool", command_id)   # [{"host", "pid", "service", "cleared": {...}, "errors", "at"}]

Every call opens the channel and closes it again, so nothing is held between dashboard reruns.
Errors of the channel (a Redis that is down, an unreadable directory) propagate to the caller.
"""
from __future__ import annotations

import time
import uuid

from collectors.sdk.control import COMMAND_ID, COMMAND_TTL_S, FRESH_S, is_name
from collectors.sdk.transport import channel_for
from collectors.sdk.transport.records import KEEP_S


def listeners(channel_url: str) -> list[dict]:
    """Processes listening on the channel (fresh presence only), by service, host and pid."""
    channel = channel_for(channel_url)
    try:
        entries = channel.listeners()
    finally:
        channel.close()
    cutoff = time.time() - FRESH_S
    fresh = [e for e in entries
             if isinstance(e, dict) and isinstance(e.get("at"), (int, float)) and e["at"] >= cutoff]
    return sorted(fresh, key=lambda e: (str(e.get("service")), str(e.get("host")), e.get("pid") or 0))


def broadcast_clear(channel_url: str, cache: str, namespace: str | None = None) -> str:
    """Tell every listening process to clear `cache` (one namespace, or all of it when None); returns
    the command id to collect acks with. Commands and acks older than an hour are cleaned up first."""
    if not is_name(cache) or not (namespace is None or is_name(namespace)):
        raise ValueError("cache and namespace must be letters, digits and _ - . : / (at most 200)")
    now = time.time()
    command = {"id": uuid.uuid4().hex, "command": "clear_cache", "cache": cache, "namespace": namespace,
               "issued_at": now, "expires_at": now + COMMAND_TTL_S}
    channel = channel_for(channel_url)
    try:
        channel.cleanup(KEEP_S)
        channel.publish(command)
    finally:
        channel.close()
    return command["id"]


def acks(channel_url: str, command_id: str) -> list[dict]:
    """The acknowledgements of a command so far, one per process, by host and pid."""
    if not isinstance(command_id, str) or not COMMAND_ID.fullmatch(command_id):
        raise ValueError("not a command id")
    channel = channel_for(channel_url)
    try:
        found = channel.acks(command_id)
    finally:
        channel.close()
    return sorted(found, key=lambda a: (str(a.get("host")), a.get("pid") or 0))


def cleanup(channel_url: str, max_age_s: float = KEEP_S) -> int:
    """Remove commands, acks and presence entries older than `max_age_s`; returns how many."""
    channel = channel_for(channel_url)
    try:
        return channel.cleanup(max_age_s)
    finally:
        channel.close()
