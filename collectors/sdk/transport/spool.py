"""Spool transport: one file per batch in a directory the collector daemon watches.

The file is written as `.tmp-<id>` and then renamed to `<ns>-<id>.batch`, so the daemon never sees a
partial batch, and the time prefix makes name order arrival order. A write that fails (disk full, no
permission) removes its temporary file and raises: the flusher keeps the batch and tries again."""
from __future__ import annotations

import contextlib
import json
import logging
import os
import time
from pathlib import Path

from collectors.sdk.transport.records import read_jsons, write_json

log = logging.getLogger("perfdeck.sdk")

SUFFIX = ".batch"


class SpoolTransport:
    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def send(self, batch_id: str, payload: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".tmp-{batch_id}"
        try:
            with open(tmp, "wb") as f:
                f.write(payload)
            os.replace(tmp, self.directory / f"{time.time_ns():020d}-{batch_id}{SUFFIX}")
        except BaseException:
            with contextlib.suppress(OSError):
                tmp.unlink(missing_ok=True)
            raise

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"spool:{self.directory}"


class SpoolChannel:
    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)
        self.root = self.directory / "control"
        self._since_ns, self._seen, self._mtime = 0, set(), 0

    def __repr__(self) -> str:
        return f"spool:{self.directory}"

    # listener side
    def start(self) -> None:
        self._since_ns = time.time_ns()

    def poll(self) -> list[dict]:
        # A folder whose entries did not change keeps its mtime: one stat instead of a listing. Only
        # trusted once that mtime is a few seconds old, for filesystems with coarse timestamps.
        try:
            mtime = os.stat(self.root).st_mtime_ns
        except FileNotFoundError:
            return []                      # nothing was ever broadcast here
        if mtime == self._mtime and mtime < time.time_ns() - 3 * 10**9:
            return []
        self._mtime = mtime
        try:
            with os.scandir(self.root) as entries:
                names = {e.name for e in entries if e.name.endswith(".json")}
        except FileNotFoundError:
            return []                      # nothing was ever broadcast here
        self._seen &= names                # forget what cleanup removed
        commands = []
        for name in sorted(names - self._seen):
            self._seen.add(name)
            stamp = name.partition("-")[0]
            if not stamp.isdigit() or int(stamp) < self._since_ns:
                continue                   # issued before we started: not ours to replay
            try:
                commands.append(json.loads((self.root / name).read_bytes()))
            except (OSError, ValueError):
                log.warning("perfdeck: unreadable control command %s skipped", name)
        return commands

    def ack(self, command_id: str, key: str, ack: dict) -> None:
        write_json(self.root / "acks" / command_id / f"{key}.json", ack)

    def announce(self, key: str, presence: dict) -> None:
        write_json(self.root / "listeners" / f"{key}.json", presence)

    def withdraw(self, key: str) -> None:
        (self.root / "listeners" / f"{key}.json").unlink(missing_ok=True)

    # broadcaster side
    def publish(self, command: dict) -> None:
        stamp = round(command["issued_at"] * 1e9)   # name order is issue order
        write_json(self.root / f"{stamp:020d}-{command['id']}.json", command)

    def listeners(self) -> list[dict]:
        return read_jsons(self.root / "listeners")

    def acks(self, command_id: str) -> list[dict]:
        return read_jsons(self.root / "acks" / command_id)

    def cleanup(self, max_age_s: float) -> int:
        cutoff, removed = time.time() - max_age_s, 0
        for path in [*self.root.glob("*.json"), *self.root.glob("listeners/*.json")]:
            stamp = path.name.partition("-")[0]
            born = int(stamp) / 1e9 if path.parent == self.root and stamp.isdigit() else _mtime(path)
            if born < cutoff:
                path.unlink(missing_ok=True)
                removed += 1
        for folder in self.root.glob("acks/*"):
            if _mtime(folder) < cutoff:
                try:
                    for path in folder.iterdir():
                        path.unlink(missing_ok=True)
                    folder.rmdir()
                    removed += 1
                except OSError:            # a late ack landing right now: next time
                    continue
        return removed

    def close(self) -> None:
        pass


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except FileNotFoundError:
        return float("inf")
