"""Where the collector daemon picks batches up: the spool directory and the Redis stream. Both give
the daemon (name, payload) items and are told afterwards which were committed (then removed) and
which were unreadable (then quarantined).

Both also answer two questions the daemon records: `take_notes()`, what the source did on its own since
the last call ((kind, reason) -> count: odd spool entries moved aside, stale temp files removed, a
vanished Redis group recreated), and `status()`, how much waits and for how long. status() never raises."""
from __future__ import annotations

import errno
import logging
import os
import socket
import stat
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from collectors.sdk.transport.redis import STREAM
from collectors.sdk.transport.spool import SUFFIX

log = logging.getLogger("perfdeck.daemon")

TMP_PREFIX = ".tmp-"       # what the spool transport writes before its rename
STALE_TMP_S = 300          # a live write takes milliseconds; a temp file this old belongs to a writer that died
TMP_SWEEP_EVERY_S = 60     # how often the spool is checked for such files
_OPEN_FLAGS = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC   # a FIFO must not block, a link not lead away
_PRIVATE = 0o600


@dataclass
class Item:
    name: str      # file name or stream entry id
    payload: bytes


def _status(pending=None, oldest_pending_s=None, stream_length=None, stream_pending=None, error=None) -> dict:
    return {"pending": pending, "oldest_pending_s": oldest_pending_s, "stream_length": stream_length,
            "stream_pending": stream_pending, "error": error}


def _write_private(path: Path, data: bytes) -> None:
    # Batches hold request ids, users and endpoints: only the collector's user may read the copies.
    fd = os.open(path, os.O_CREAT | os.O_WRONLY | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, _PRIVATE)
    try:
        os.fchmod(fd, _PRIVATE)     # a file left by an older version keeps its mode through O_TRUNC
        os.write(fd, data)
    finally:
        os.close(fd)


def _write_quarantine(folder: Path, name: str, payload: bytes, reason: str) -> None:
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    _write_private(folder / name, payload)
    _write_private(folder / f"{name}.reason.txt", (reason + "\n").encode())


def _kind(mode: int) -> str:
    """The reason an entry that is not a regular file is moved aside."""
    if stat.S_ISDIR(mode):
        return "directory"
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISLNK(mode):
        return "symlink"
    if stat.S_ISSOCK(mode):
        return "socket"
    return "not_a_regular_file"


class SpoolSource:
    """Batch files in a directory; deleted after commit, moved to `quarantine_dir` when unreadable.

    Only regular files are read. Anything else named *.batch (a directory, a FIFO, a symlink, a socket)
    is renamed into the quarantine folder unread, the link itself and never its target; what cannot be
    moved is skipped from then on. Temp files of writes that never finished are removed."""

    def __init__(self, directory: str | os.PathLike, quarantine_dir: str | os.PathLike):
        self.directory, self.quarantine_dir = Path(directory), Path(quarantine_dir)
        self.name = f"spool:{self.directory}"
        self._notes: Counter = Counter()
        self._unmovable: set[str] = set()     # odd entries that could not be moved aside: not retried
        self._next_tmp_sweep = 0.0

    def _scan(self) -> list[os.DirEntry]:
        try:
            with os.scandir(self.directory) as entries:
                return list(entries)
        except FileNotFoundError:         # no app has written yet
            return []

    def _batch_entries(self, entries: list[os.DirEntry]) -> list[os.DirEntry]:
        return sorted((e for e in entries if e.name.endswith(SUFFIX) and e.name not in self._unmovable),
                      key=lambda e: e.name)

    def fetch(self, max_items: int, max_bytes: int) -> list[Item]:
        entries = self._scan()
        if time.monotonic() >= self._next_tmp_sweep:
            self._remove_stale_tmp(entries)
        items, size = [], 0
        for entry in self._batch_entries(entries):
            if len(items) >= max_items or size >= max_bytes:
                break
            payload = self._read(entry)
            if payload is not None:
                items.append(Item(entry.name, payload))
                size += len(payload)
        return items

    def _read(self, entry: os.DirEntry) -> bytes | None:
        """The file's bytes, or None when it is gone or was moved aside. The type is checked on the open
        descriptor, so nothing can be swapped in between the check and the read."""
        if not entry.is_file(follow_symlinks=False):      # a first look from the scan: odd entries are never opened
            self._move_aside(entry.name)
            return None
        try:
            fd = os.open(entry.path, _OPEN_FLAGS)
        except FileNotFoundError:         # another daemon took it
            return None
        except OSError as exc:            # ELOOP: a symlink swapped in since the scan; ENXIO: a socket
            self._move_aside(entry.name, None if exc.errno in (errno.ELOOP, errno.ENXIO) else "unreadable")
            return None
        try:
            mode = os.fstat(fd).st_mode
            if not stat.S_ISREG(mode):
                self._move_aside(entry.name, _kind(mode))
                return None
            chunks = []
            while chunk := os.read(fd, 1 << 20):
                chunks.append(chunk)
            return b"".join(chunks)
        except OSError:                   # an I/O error: move it aside rather than fail on it every tick
            self._move_aside(entry.name, "unreadable")
            return None
        finally:
            os.close(fd)

    def _move_aside(self, name: str, reason: str | None = None) -> None:
        """Rename the entry (never what a link points to) into the quarantine folder, with a reason file;
        counted by reason. `reason` None: named after the entry's type."""
        source = self.directory / name
        try:
            reason = reason or _kind(os.lstat(source).st_mode)
        except OSError:                   # gone meanwhile
            return
        target = self.quarantine_dir / name
        try:
            self.quarantine_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
            if os.path.lexists(target):
                target = self.quarantine_dir / f"{name}.{time.time_ns()}"
            os.rename(source, target)
        except FileNotFoundError:
            return
        except OSError as exc:            # e.g. the quarantine folder is on another filesystem
            self._unmovable.add(name)
            log.warning("spool entry %s is not a readable batch file (%s) and could not be moved aside (%s); "
                        "skipping it", name, reason, exc)
        else:
            log.warning("spool entry %s is not a readable batch file (%s); moved to %s unread", name, reason, target)
            try:
                _write_private(target.with_name(target.name + ".reason.txt"), f"{reason}: moved aside unread\n".encode())
            except OSError as exc:
                log.warning("could not write the reason beside %s: %s", target, exc)
        self._notes["spool", reason] += 1

    def _remove_stale_tmp(self, entries: list[os.DirEntry]) -> None:
        self._next_tmp_sweep = time.monotonic() + TMP_SWEEP_EVERY_S
        cutoff = time.time() - STALE_TMP_S
        for entry in entries:
            if not entry.name.startswith(TMP_PREFIX):
                continue
            try:
                if entry.is_dir(follow_symlinks=False) or entry.stat(follow_symlinks=False).st_mtime > cutoff:
                    continue
                os.unlink(entry.path)
            except OSError:
                continue                  # gone meanwhile, or not ours to remove
            log.info("removed %s from the spool: a write that never finished", entry.name)
            self._notes["spool", "stale_tmp_removed"] += 1

    def ack(self, items: list[Item]) -> None:
        for item in items:
            (self.directory / item.name).unlink(missing_ok=True)

    def quarantine(self, item: Item, reason: str) -> None:
        _write_quarantine(self.quarantine_dir, item.name, item.payload, reason)
        (self.directory / item.name).unlink(missing_ok=True)

    def take_notes(self) -> Counter:
        notes, self._notes = self._notes, Counter()
        return notes

    def status(self) -> dict:
        """Batch files waiting, and the age of the oldest (from its name's time prefix, else its mtime)."""
        try:
            waiting = self._batch_entries(self._scan())
            oldest = None
            for entry in waiting:
                prefix = entry.name.split("-", 1)[0]
                try:
                    written = (int(prefix) / 1e9 if len(prefix) == 20 and prefix.isascii() and prefix.isdigit()
                               else entry.stat(follow_symlinks=False).st_mtime)
                except FileNotFoundError:
                    continue
                oldest = written if oldest is None else min(oldest, written)
            age = None if oldest is None else max(0.0, time.time() - oldest)
            return _status(len(waiting), age)
        except Exception as exc:          # a status must never stop the daemon
            return _status(error=f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        pass


# KEYS[1] the stream; ARGV: group, consumer, entry ids. 1 when every entry is pending to the consumer, which then
# holds them afresh (XCLAIM resets their idle time; JUSTID leaves their delivery count); else 0. One script:
# no other collector's XAUTOCLAIM comes between the check and the claim.
_RENEW_IF_OURS = """
for i = 3, #ARGV do
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
    if #p == 0 or p[1][2] ~= ARGV[2] then
        return 0
    end
end
for first = 3, #ARGV, 100 do
    local args = {'XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0}
    for i = first, math.min(first + 99, #ARGV) do
        args[#args + 1] = ARGV[i]
    end
    args[#args + 1] = 'JUSTID'
    redis.call(unpack(args))
end
return 1
"""


def collector_name() -> str:
    """This collector's name: its --consumer ($PERFDECK_CONSUMER), else its host. Its consumer in the Redis
    group, and the holder of the duties on a lake (with its pid)."""
    return os.environ.get("PERFDECK_CONSUMER") or socket.gethostname()


class RedisSource:
    """The batch stream, read through a consumer group. Entries are acknowledged (and deleted) only
    after the DuckDB commit, so a daemon killed mid-ingest finds them again as pending.

    A Redis restarted without persistence, or flushed, takes the stream and the group with it: the next
    fetch recreates both and goes on reading (what the SDK sent since is read from the start)."""

    GROUP = "perfdeck-collector"
    CLAIM_IDLE_MS = 60_000  # pending entries of a consumer silent this long are taken over ($PERFDECK_CLAIM_IDLE_S)

    def __init__(self, url: str, quarantine_dir: str | os.PathLike, *, stream: str = STREAM,
                 consumer: str | None = None, block_ms: int = 0):
        import redis

        self.client = redis.Redis.from_url(url, socket_timeout=5, socket_connect_timeout=2,
                                           client_name="perfdeck-collector")   # marked in CLIENT LIST
        self.stream, self.quarantine_dir, self.block_ms = stream, Path(quarantine_dir), block_ms
        # Collectors sharing the group need names of their own (perfdeck collect --consumer); a restarted
        # collector under its old name reads what it had pending at once, others claim it after CLAIM_IDLE_MS.
        self.consumer = consumer or collector_name()
        claim_s = os.environ.get("PERFDECK_CLAIM_IDLE_S")
        self.claim_idle_ms = int(float(claim_s) * 1000) if claim_s else self.CLAIM_IDLE_MS
        self.name = f"redis:{stream}"
        self._own_pending_done = False
        self._handed: set[str] = set()        # entry ids fetched and not acknowledged yet
        self._notes: Counter = Counter()
        try:
            self._ensure_group()
        except redis.ConnectionError as exc:   # the spool and the samplers go on; fetch creates it later
            log.warning("Redis for %s is not answering (%s); will keep trying", self.stream, exc)

    def _ensure_group(self) -> bool:
        """Create the group (and the stream) unless it exists; whether this call created it."""
        import redis

        try:
            # From id 0: whatever the SDK added to a recreated stream before the group was back is read too.
            self.client.xgroup_create(self.stream, self.GROUP, id="0", mkstream=True)
            return True
        except redis.ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
            return False

    def fetch(self, max_items: int, max_bytes: int) -> list[Item]:
        import redis

        if self._handed:
            # What the last fetch handed out was not all acknowledged (its write failed): it comes again
            # first, oldest first, as the daemon expects (else it waited CLAIM_IDLE_MS for XAUTOCLAIM).
            self._own_pending_done = False
            self._handed.clear()
        try:
            entries = self._next_entries(max_items)
        except redis.ResponseError as exc:
            if not str(exc).startswith("NOGROUP"):
                raise
            self._recreate_group()
            entries = self._next_entries(max_items)
        items, size, gone = [], 0, []
        for entry_id, fields in entries:
            name = entry_id.decode() if isinstance(entry_id, bytes) else entry_id
            if not fields:                # deleted (trimmed) after delivery: only its id is left
                gone.append(name)
                continue
            payload = fields.get(b"b", b"")
            items.append(Item(name, payload))
            self._handed.add(name)
            size += len(payload)
            if size >= max_bytes:
                # The rest were delivered to this consumer already: re-read them from its pending list.
                self._own_pending_done = False
                break
        if gone:
            log.warning("%d entries of %s were deleted from the stream before they were ingested", len(gone), self.stream)
            self.client.xack(self.stream, self.GROUP, *gone)
            self._notes["stream", "deleted_before_ingest"] += len(gone)
        return items

    def _next_entries(self, max_items: int) -> list:
        entries = []
        if not self._own_pending_done:
            # What this consumer read before a crash and never acknowledged comes first.
            entries = self._read("0", max_items)
            self._own_pending_done = not entries
        if not entries:
            _, claimed, *_ = self.client.xautoclaim(self.stream, self.GROUP, self.consumer,
                                                    min_idle_time=self.claim_idle_ms, count=max_items)
            entries = [e for e in claimed if e[1]]
            if entries:
                log.info("claimed %d entries of %s that a silent collector had read and not acknowledged",
                         len(entries), self.stream)
        if not entries:
            entries = self._read(">", max_items, block=self.block_ms or None)
        return entries

    def _recreate_group(self) -> None:
        if self._ensure_group():          # False: another collector recreated it first
            self._notes["stream", "group_recreated"] += 1
            log.warning("Redis stream %s and its consumer group were gone (Redis restarted empty or flushed): "
                        "recreated them; batches that were unread in the old stream are lost", self.stream)
        self._own_pending_done = False

    def _read(self, start: str, count: int, block: int | None = None) -> list:
        reply = self.client.xreadgroup(self.GROUP, self.consumer, {self.stream: start}, count=count, block=block)
        return reply[0][1] if reply else []

    def still_ours(self, items: list[Item]) -> bool:
        """Just before the commit of their write: whether these entries are still pending to us, and if so
        held afresh (their idle time reset, as by a new delivery), so no other collector claims them for
        the next claim time, in which the commit ends. False when another collector claimed them (we were
        slower than the claim time: it ingests them) or Redis cannot say: the write must not commit.
        (Timing the hold from the delivery instead livelocked: a write slower than that never committed.)"""
        import redis

        ids = [i.name for i in items]
        if not ids:
            return True
        try:
            return bool(self.client.eval(_RENEW_IF_OURS, 1, self.stream, self.GROUP, self.consumer, *ids))
        except redis.ResponseError as exc:
            if "NOGROUP" in str(exc):     # Redis flushed or restarted empty: nobody can claim them, or read them again
                return True
            log.warning("cannot check that %d entries of %s are still ours: %s", len(ids), self.stream, exc)
            return False
        except redis.RedisError as exc:
            log.warning("cannot check that %d entries of %s are still ours: %s", len(ids), self.stream, exc)
            return False

    def ack(self, items: list[Item]) -> None:
        if items:
            ids = [i.name for i in items]
            self._handed.difference_update(ids)
            pipe = self.client.pipeline()
            pipe.xack(self.stream, self.GROUP, *ids)
            pipe.xdel(self.stream, *ids)
            pipe.execute()

    def quarantine(self, item: Item, reason: str) -> None:
        _write_quarantine(self.quarantine_dir, f"redis-{item.name}{SUFFIX}", item.payload, reason)
        self.ack([item])

    def take_notes(self) -> Counter:
        notes, self._notes = self._notes, Counter()
        return notes

    def status(self) -> dict:
        """One round trip. Acknowledged entries are deleted, so the stream holds exactly what waits and
        its first entry is the oldest; its age is measured on the server's clock, which made the id."""
        try:
            pipe = self.client.pipeline(transaction=False)
            pipe.time().xlen(self.stream).xpending(self.stream, self.GROUP).xrange(self.stream, count=1)
            (secs, micros), length, pel, first = pipe.execute(raise_on_error=False)
            for reply in (length, first):
                if isinstance(reply, Exception):
                    raise reply
            if isinstance(pel, Exception):
                if not str(pel).startswith("NOGROUP"):
                    raise pel
                pel = {"pending": 0}      # the group is gone: the next fetch recreates it
            age = None
            if first:
                first_ms = int(first[0][0].split(b"-")[0])
                age = max(0.0, secs + micros / 1e6 - first_ms / 1000)
            return _status(int(length), age, int(length), int(pel["pending"]))
        except Exception as exc:          # Redis down or refusing: say so, never stop the daemon
            return _status(error=f"{type(exc).__name__}: {exc}")

    def close(self) -> None:
        self.client.close()
