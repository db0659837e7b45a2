"""What both control channels (spool and Redis) keep: JSON records of commands, acknowledgements and
presence, and the names they are kept under. Standard library only."""
from __future__ import annotations

import json
import os
import re
import uuid
from pathlib import Path

KEEP_S = 3600.0         # commands, acks and stale presence older than this are cleaned up


def process_key(host: str, pid: int) -> str:
    return re.sub(r"[^A-Za-z0-9_.\-]", "_", f"{host}-{pid}")


def write_json(path: Path, value: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f".tmp-{uuid.uuid4().hex}"
    tmp.write_text(json.dumps(value))
    os.replace(tmp, path)


def loads(raw) -> dict | None:
    try:
        value = json.loads(raw)
    except ValueError:                     # written by something else: not ours to trust
        return None
    return value if isinstance(value, dict) else None


def read_jsons(folder: Path) -> list[dict]:
    out = []
    for path in folder.glob("*.json"):
        try:
            value = loads(path.read_bytes())
        except OSError:                    # removed meanwhile
            continue
        if value is not None:
            out.append(value)
    return out
