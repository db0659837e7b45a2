"""Spool transport: one file per batch in a directory the collector daemon watches.

The file is written as `.tmp-<id>` and then renamed to `<ns>-<id>.batch`, so the daemon never sees a
partial batch, and the time prefix makes name order arrival order."""
from __future__ import annotations

import os
import time
from pathlib import Path

SUFFIX = ".batch"


class SpoolTransport:
    def __init__(self, directory: str | os.PathLike):
        self.directory = Path(directory)

    def send(self, batch_id: str, payload: bytes) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        tmp = self.directory / f".tmp-{batch_id}"
        with open(tmp, "wb") as f:
            f.write(payload)
        os.replace(tmp, self.directory / f"{time.time_ns():020d}-{batch_id}{SUFFIX}")

    def close(self) -> None:
        pass

    def __repr__(self) -> str:
        return f"spool:{self.directory}"
