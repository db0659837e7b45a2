"""Spool transport: one file per batch in a directory the collector daemon watches.

The file is written as `.tmp-<id>` and then renamed to `<ns>-<id>.batch`, so the daemon never sees a
partial batch, and the time prefix makes name order arrival order. A write that fails (disk full, no
permission) removes its temporary file and raises: the flusher keeps the batch and tries again."""
from __future__ import annotations

import contextlib
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
