"""Where the collector daemon picks batches up: the spool directory and the Redis stream. Both give
the daemon (name, payload) items and are told afterwards which were committed (then removed) and
which were unreadable (then quarantined)."""
from __future__ import annotations

import logging
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from collectors.sdk.transport.redis import STREAM
from collectors.sdk.transport.spool import SUFFIX

log = logging.getLogger("perfdeck.daemon")


@dataclass
class Item:
    name: str      # file name or stream entry id
    payload: bytes


def _write_quarantine(folder: Path, name: str, payload: bytes, reason: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / name).write_bytes(payload)
    (folder / f"{name}.reason.txt").write_text(reason + "\n")


class SpoolSource:
    """Batch files in a directory; deleted after commit, moved to `quarantine_dir` when unreadable."""

    def __init__(self, directory: str | os.PathLike, quarantine_dir: str | os.PathLike):
        self.directory, self.quarantine_dir = Path(directory), Path(quarantine_dir)
        self.name = f"spool:{self.directory}"

    def fetch(self, max_items: int, max_bytes: int) -> list[Item]:
        if not self.directory.is_dir():
            return []
        items, size = [], 0
        for path in sorted(self.directory.glob(f"*{SUFFIX}"))[:max_items]:
            try:
                payload = path.read_bytes()
            except FileNotFoundError:  # another daemon took it
                continue
            items.append(Item(path.name, payload))
            size += len(payload)
            if size >= max_bytes:
                break
        return items

    def ack(self, items: list[Item]) -> None:
        for item in items:
            (self.directory / item.name).unlink(missing_ok=True)

    def quarantine(self, item: Item, reason: str) -> None:
        _write_quarantine(self.quarantine_dir, item.name, item.payload, reason)
        (self.directory / item.name).unlink(missing_ok=True)

    def pending(self) -> int:
        return len(list(self.directory.glob(f"*{SUFFIX}"))) if self.directory.is_dir() else 0

    def close(self) -> None:
        pass


class RedisSource:
    """The batch stream, read through a consumer group. Entries are acknowledged (and deleted) only
    after the DuckDB commit, so a daemon killed mid-ingest finds them again as pending."""

    GROUP = "perfdeck-collector"
    CLAIM_IDLE_MS = 60_000  # pending entries of a consumer silent this long are taken over

    def __init__(self, url: str, quarantine_dir: str | os.PathLike, *, stream: str = STREAM,
                 consumer: str | None = None, block_ms: int = 0):
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2)
        self.stream, self.quarantine_dir, self.block_ms = stream, Path(quarantine_dir), block_ms
        self.consumer = consumer or socket.gethostname()
        self.name = f"redis:{stream}"
        self._own_pending_done = False
        self._ensure_group()

    def _ensure_group(self) -> None:
        import redis

        try:
            self.client.xgroup_create(self.stream, self.GROUP, id="0", mkstream=True)
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def fetch(self, max_items: int, max_bytes: int) -> list[Item]:
        entries = []
        if not self._own_pending_done:
            # What this consumer read before a crash and never acknowledged comes first.
            entries = self._read("0", max_items)
            self._own_pending_done = not entries
        if not entries:
            _, claimed, *_ = self.client.xautoclaim(self.stream, self.GROUP, self.consumer,
                                                    min_idle_time=self.CLAIM_IDLE_MS, count=max_items)
            entries = [e for e in claimed if e[1]]
        if not entries:
            entries = self._read(">", max_items, block=self.block_ms or None)
        items, size = [], 0
        for entry_id, fields in entries:
            payload = fields.get(b"b", b"")
            items.append(Item(entry_id.decode() if isinstance(entry_id, bytes) else entry_id, payload))
            size += len(payload)
            if size >= max_bytes:
                # The rest were delivered to this consumer already: re-read them from its pending list.
                self._own_pending_done = False
                break
        return items

    def _read(self, start: str, count: int, block: int | None = None) -> list:
        reply = self.client.xreadgroup(self.GROUP, self.consumer, {self.stream: start}, count=count, block=block)
        return reply[0][1] if reply else []

    def ack(self, items: list[Item]) -> None:
        if items:
            ids = [i.name for i in items]
            pipe = self.client.pipeline()
            pipe.xack(self.stream, self.GROUP, *ids)
            pipe.xdel(self.stream, *ids)
            pipe.execute()

    def quarantine(self, item: Item, reason: str) -> None:
        _write_quarantine(self.quarantine_dir, f"redis-{item.name}{SUFFIX}", item.payload, reason)
        self.ack([item])

    def pending(self) -> int:
        return int(self.client.xlen(self.stream))

    def close(self) -> None:
        self.client.close()

