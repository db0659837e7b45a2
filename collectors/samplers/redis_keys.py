"""What the Redis sampler learns from the keys and the connections: the keyspace sample (memory by
namespace and by data type, the biggest keys) and the connected clients.

The keyspace sample: a SCAN cursor kept between samples, so each sample reads the next part of the
keyspace and every key is seen over successive samples (the cursor wraps around at 0); never KEYS.
A sample takes whole SCAN batches until it holds `sample_keys` keys (a batch is never cut: its tail
would be skipped at every pass) or the cursor wraps. MEMORY USAGE, TYPE and PTTL are pipelined.
Estimates scale the sampled bytes by DBSIZE / sampled keys; the sample also says what share of the
keys (sampled / DBSIZE) and of the dataset's memory (sampled bytes / INFO used_memory_dataset) it saw.
Each sample names the pass of the cursor it belongs to (`redis.scan_pass`, the pass's start time) and
the one that ends a pass says so (`redis.scan_wrapped`): the pages sum a whole pass, so every key counts.

The biggest keys are a running top-N by bytes across samples: each sample measures the previous top
entries again with the new keys, so a key deleted since drops out and one that shrank moves down.

Labels of keys and clients hold recorded names (text, never redacted, capped at KEY_CHARS): written
with `labels()`, which escapes "%", "," and "=" in values as %25, %2C and %3D, and read back with
`parse_labels()`. Namespace labels ("ns=<prefix>") are written as they are (read with rest=True).
"""
from __future__ import annotations

import re
import time
from collections import Counter

KEY_CHARS = 200           # a key or client name longer than this is cut and ends with "…"
MAX_NAMESPACES = 50
MAX_CLIENT_GROUPS = 50
TOP_KEYS = 20
SAMPLER_CLIENT_NAME = "perfdeck-sampler"

_ESCAPES = {"%": "%25", ",": "%2C", "=": "%3D"}
_UNESCAPE = re.compile(r"%(25|2C|3D)")
_UNESCAPED = {"25": "%", "2C": ",", "3D": "="}


def escape(value: str) -> str:
    """A label value with the characters that separate labels escaped (reversible: `unescape`)."""
    return "".join(_ESCAPES.get(ch, ch) for ch in value)


def unescape(value: str) -> str:
    return _UNESCAPE.sub(lambda m: _UNESCAPED[m[1]], value)


def labels(**pairs: str) -> str:
    """"k=v,k2=v2" with every value escaped; keys are code constants."""
    return ",".join(f"{k}={escape(str(v))}" for k, v in pairs.items())


def parse_labels(text: str | None) -> dict[str, str]:
    """The pairs `labels()` wrote, values unescaped."""
    out: dict[str, str] = {}
    for part in (text or "").split(","):
        k, sep, v = part.partition("=")
        if sep:
            out[k] = unescape(v)
    return out


def as_name(raw: bytes | str | None, limit: int = KEY_CHARS) -> str:
    """A key or client name as recorded: text (bytes that are not UTF-8 shown as \\x escapes), capped."""
    if raw is None:
        return ""
    text = raw.decode("utf-8", "backslashreplace") if isinstance(raw, bytes) else str(raw)
    return text if len(text) <= limit else text[:limit - 1] + "…"


def _text(value) -> str:
    return value.decode("utf-8", "backslashreplace") if isinstance(value, bytes) else str(value)


class KeyspaceSample:
    """The state a sampler keeps between keyspace samples: the SCAN cursor and the running top keys."""

    def __init__(self, sample_keys: int = 1000, separator: str = ":", top_keys: int = TOP_KEYS):
        self.sample_keys, self.separator, self.top_keys = int(sample_keys), separator, int(top_keys)
        self.cursor = 0
        self.pass_started = time.time()              # names the current pass of the cursor over the keyspace
        self.wrapped = False                         # the last SCAN of this sample came back to 0
        self.top: dict[bytes, tuple[int, str]] = {}  # key -> (bytes, type) of the running top-N

    def prefix(self, key: bytes) -> str:
        text = key.decode("utf-8", "backslashreplace")
        head, sep, _ = text.rpartition(self.separator) if self.separator else ("", "", text)
        return head if sep else "(none)"

    def _scan(self, client, own: Counter) -> list[bytes]:
        keys: list[bytes] = []
        seen: set[bytes] = set()
        while len(keys) < self.sample_keys:
            self.cursor, batch = client.scan(self.cursor, count=min(max(self.sample_keys - len(keys), 10), 1000))
            own["scan"] += 1
            for key in batch:          # SCAN may return a key twice (rehashing)
                if key not in seen:
                    seen.add(key)
                    keys.append(key)
            if self.cursor == 0:
                self.wrapped = True
                break
        return keys

    def collect(self, client, own: Counter, row, dataset_bytes: float | None) -> bool:
        """Sample the next part of the keyspace and write its rows; True when any key was read."""
        if self.sample_keys <= 0:
            return False
        this_pass, self.wrapped = self.pass_started, False
        keys = self._scan(client, own)
        if self.wrapped:
            self.pass_started = max(time.time(), this_pass + 0.001)
        dbsize = client.dbsize()
        own["dbsize"] += 1
        row("redis.dbsize", dbsize)
        in_sample = set(keys)
        again = [k for k in self.top if k not in in_sample]
        measured: dict[bytes, tuple[int, str, int]] = {}   # key -> (bytes, type, pttl) of the keys still there
        if keys or again:
            pipe = client.pipeline(transaction=False)
            for key in keys:
                pipe.memory_usage(key)
                pipe.type(key)
                pipe.pttl(key)
            for key in again:
                pipe.memory_usage(key)
                pipe.type(key)
                pipe.pttl(key)
            replies = pipe.execute(raise_on_error=False)
            own.update({"memory|usage": len(keys) + len(again), "type": len(keys) + len(again),
                        "pttl": len(keys) + len(again)})
            for i, key in enumerate(keys + again):
                size, kind, pttl = replies[3 * i:3 * i + 3]
                kind = _text(kind) if isinstance(kind, (bytes, str)) else None
                if not isinstance(size, int) or not isinstance(pttl, int) or pttl == -2 or kind in (None, "none"):
                    continue  # gone since the SCAN, or since it was last seen
                measured[key] = (size, kind, pttl)
        sampled = {k: measured[k] for k in keys if k in measured}
        self._namespace_rows(sampled, dbsize, row)
        self._type_rows(sampled, dbsize, row)
        self._top_rows(measured, row)
        n, total = len(sampled), sum(v[0] for v in sampled.values())
        row("redis.sample_keys", n)
        row("redis.sample_bytes", total)
        if dbsize:
            row("redis.sample_key_share", min(1.0, n / dbsize))
        if dataset_bytes:
            row("redis.sample_memory_share", min(1.0, total / dataset_bytes))
        row("redis.scan_pass", this_pass)
        if self.wrapped:
            row("redis.scan_wrapped", 1)
        return bool(keys or again)

    def _namespace_rows(self, sampled: dict, dbsize: int, row) -> None:
        stats: dict[str, list] = {}   # prefix -> [keys, bytes, with ttl, ttl seconds sum]
        for key, (size, _kind, pttl) in sampled.items():
            s = stats.setdefault(self.prefix(key), [0, 0, 0, 0.0])
            s[0] += 1
            s[1] += size
            if pttl >= 0:
                s[2] += 1
                s[3] += pttl / 1000.0
        if len(stats) > MAX_NAMESPACES:
            ranked = sorted(stats.items(), key=lambda kv: kv[1][1], reverse=True)
            stats = dict(ranked[:MAX_NAMESPACES - 1])
            other = [0, 0, 0, 0.0]
            for _, s in ranked[MAX_NAMESPACES - 1:]:
                other = [a + b for a, b in zip(other, s)]
            stats["(other)"] = other
        scale = dbsize / len(sampled) if sampled else 0.0
        for prefix, (n, size, with_ttl, ttl_sum) in sorted(stats.items()):
            label = f"ns={prefix}"
            row("redis.ns_sampled_keys", n, label)
            row("redis.ns_sampled_bytes", size, label)
            row("redis.ns_estimated_bytes", size * scale, label)
            row("redis.ns_ttl_share", with_ttl / n, label)
            if with_ttl:
                row("redis.ns_mean_ttl_sec", ttl_sum / with_ttl, label)

    def _type_rows(self, sampled: dict, dbsize: int, row) -> None:
        by_type: dict[str, list[int]] = {}
        for size, kind, _pttl in sampled.values():
            s = by_type.setdefault(as_name(kind, 40), [0, 0])
            s[0] += 1
            s[1] += size
        scale = dbsize / len(sampled) if sampled else 0.0
        for kind, (n, size) in sorted(by_type.items()):
            label = labels(type=kind)
            row("redis.type_sampled_keys", n, label)
            row("redis.type_sampled_bytes", size, label)
            row("redis.type_estimated_bytes", size * scale, label)

    def _top_rows(self, measured: dict, row) -> None:
        ranked = sorted(measured.items(), key=lambda kv: (-kv[1][0], kv[0]))[:self.top_keys]
        self.top = {key: (size, kind) for key, (size, kind, _pttl) in ranked}
        for key, (size, kind) in self.top.items():
            row("redis.key_bytes", size, labels(key=as_name(key), type=as_name(kind, 40)))


def client_rows(client, own: Counter, row) -> None:
    """CLIENT LIST summed up by client name, address host and current command: connections, oldest
    age, least and most idle. perfdeck's own connections are named "perfdeck-…" and kept (marked by
    the page), so a count here agrees with INFO connected_clients."""
    groups: dict[tuple[str, str, str], list] = {}
    entries = client.client_list()
    own["client|list"] += 1
    for c in entries:
        name = as_name(c.get("name") or "") or "(no name)"
        host = as_name(str(c.get("addr", "")).rpartition(":")[0] or str(c.get("addr", "")), 100)
        cmd = as_name(c.get("cmd") or "", 60) or "(none)"
        age, idle = int(c.get("age", 0) or 0), int(c.get("idle", 0) or 0)
        g = groups.setdefault((name, host, cmd), [0, 0, idle, idle])
        g[0] += 1
        g[1] = max(g[1], age)
        g[2] = min(g[2], idle)
        g[3] = max(g[3], idle)
    if len(groups) > MAX_CLIENT_GROUPS:
        ranked = sorted(groups.items(), key=lambda kv: (-kv[1][0], kv[0]))
        groups = dict(ranked[:MAX_CLIENT_GROUPS - 1])
        rest = [g for _, g in ranked[MAX_CLIENT_GROUPS - 1:]]
        groups[("(other)", "(other)", "(other)")] = [sum(g[0] for g in rest), max(g[1] for g in rest),
                                                     min(g[2] for g in rest), max(g[3] for g in rest)]
    for (name, host, cmd), (n, oldest, idle_min, idle_max) in sorted(groups.items()):
        label = labels(name=name, host=host, cmd=cmd)
        row("redis.clients", n, label)
        row("redis.clients_oldest_sec", oldest, label)
        row("redis.clients_idle_min_sec", idle_min, label)
        row("redis.clients_idle_max_sec", idle_max, label)
