"""Maintenance actions on a configured Redis: delete keys by pattern, flush a database, bump a cache version.

Each action names its Redis by configured name (params["target"]) and opens a short-lived client with
short timeouts; a Redis that cannot be reached, or goes away mid-way, becomes TargetUnavailable naming
it by name and redacted URL, any other Redis error one ActionError line.

- DeleteKeys walks the keyspace with SCAN MATCH (never KEYS, which blocks the server) and removes the
  matches in batches of at most BATCH keys: one pipeline of MEMORY USAGE (what the batch frees) then
  UNLINK (freed off the main thread). progress.step() runs before every batch, so an Abort asked for
  during a batch lands after it: only whole batches are ever removed. Patterns need a literal prefix
  (a pattern matching everything is Flush database's job, with its own confirmation) and may not reach
  perfdeck's own keys (perfdeck:*).
- FlushDatabase is FLUSHDB ASYNC on the URL's database, confirmed by typing the target's name. When
  perfdeck's transport stream lives there, the preview says how many batches wait in it unread: the
  flush loses them (the collector recreates the stream and its group afterwards).
- BumpCacheVersion INCRs the version key the SDK's cached() reads (collectors.integrations.redis):
  every process re-reads it within ~2 s and from then on reads and writes keys of the new version.
"""
from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from contextlib import contextmanager

import redis

from collectors import formatting as fmt
from collectors.integrations.redis import bump_cache_version, version_key
from collectors.redact import redact
from collectors.sdk.transport.redis import STREAM
from dashboard.actions import targets
from dashboard.actions.framework import (
    Action,
    ActionError,
    Field,
    InvalidInput,
    Preview,
    Progress,
    Result,
    TargetUnavailable,
)

SCAN_COUNT = 1000          # keys examined per SCAN call: few round trips, each one short for the server
BATCH = 500                # keys per MEMORY USAGE + UNLINK pipeline, and between two Abort checks
SAMPLE_KEYS = 20           # sample keys shown in a delete preview
MAX_PATTERN = 200
OWN_PREFIX = "perfdeck:"   # the SDK's stream and the cache version keys live here
HELP_SCAN_CALLS = 20       # bounds the SCAN behind the cache field's help (it runs on every page render)
_CACHE_NAME = re.compile(r"[A-Za-z0-9_.:\-]{1,200}")
_WILDCARDS = "*?["


def _one_line(exc: BaseException, url: str | None = None) -> str:
    return redact(" ".join(str(exc).split()), url) or type(exc).__name__


@contextmanager
def _client(name: str) -> Iterator[redis.Redis]:
    """A client of the configured Redis `name`; Redis errors leave as one-line ActionErrors."""
    target = targets.get("redis", name)
    client = redis.Redis.from_url(target.url, socket_timeout=5, socket_connect_timeout=2,
                                  client_name="perfdeck-actions")   # marked in CLIENT LIST
    try:
        yield client
    except (redis.ConnectionError, redis.TimeoutError, OSError) as exc:
        raise TargetUnavailable(f"Redis {name!r} ({target.shown}) is unavailable: {_one_line(exc, target.url)}") \
            from exc
    except redis.RedisError as exc:
        raise ActionError(f"Redis {name!r} ({target.shown}) refused: {_one_line(exc, target.url)}") from exc
    except (TypeError, ValueError) as exc:     # an option in the URL the client does not take ("?Password=")
        raise ActionError(f"Redis {name!r} ({target.shown}): its URL cannot be used: "
                          f"{_one_line(exc, target.url)}") from exc
    finally:
        client.close()


def _db_of(client: redis.Redis) -> int:
    return int(client.connection_pool.connection_kwargs.get("db", 0))


def _key_text(key: bytes) -> str:
    return key.decode("utf-8", "backslashreplace")



def _target_field() -> Field:
    return Field("target", "Redis", kind="choice", options=lambda params: list(targets.configured("redis")))


class _RedisAction(Action):
    kind = "redis"

    def available(self) -> str | None:
        if targets.configured("redis"):
            return None
        return "No Redis configured: add a [[redis]] entry to perfdeck.toml or set PERFDECK_REDIS_URLS"


def literal_prefix(pattern: str) -> tuple[str, bool]:
    """(the literal text before the first unescaped wildcard, whether there is a wildcard at all).
    Redis globs: * ? [..] are wildcards, a backslash makes the next character literal."""
    out, i = [], 0
    while i < len(pattern):
        c = pattern[i]
        if c == "\\" and i + 1 < len(pattern):
            out.append(pattern[i + 1])
            i += 2
            continue
        if c in _WILDCARDS:
            return "".join(out), True
        out.append(c)
        i += 1
    return "".join(out), False


def check_pattern(pattern) -> str:
    """The pattern if DeleteKeys may use it, else InvalidInput saying why."""
    if not isinstance(pattern, str) or not pattern:
        raise InvalidInput("give a key pattern, e.g. sessions:*")
    if len(pattern) > MAX_PATTERN:
        raise InvalidInput(f"the pattern is {len(pattern)} characters long; at most {MAX_PATTERN} are allowed")
    if any(c.isspace() or unicodedata.category(c).startswith("C") for c in pattern):
        raise InvalidInput("the pattern may not contain spaces or control characters")
    prefix, wild = literal_prefix(pattern)
    if wild and not prefix:
        raise InvalidInput(f"{pattern!r} has no literal prefix before its first wildcard; "
                           "use Flush database to remove every key")
    # A prefix that "perfdeck:" starts with ("perf*") could still reach perfdeck's keys through the wildcard.
    if prefix.startswith(OWN_PREFIX) or (wild and OWN_PREFIX.startswith(prefix)):
        raise InvalidInput(f"{pattern!r} could match perfdeck's own keys ({OWN_PREFIX}*); "
                           "give a longer prefix that is not perfdeck's")
    return pattern


class DeleteKeys(_RedisAction):
    name = "redis.delete_keys"
    title = "Delete keys by pattern"
    touches = "keys of one Redis database matching a SCAN pattern"
    destructive = True
    batched = True

    def fields(self) -> list[Field]:
        return [_target_field(),
                Field("pattern", "Key pattern", help="a Redis glob with a literal prefix, e.g. sessions:* "
                      "(* any text, ? one character, [abc] one of; \\ makes the next character literal)")]

    def check(self, params: dict) -> dict:
        target = targets.get("redis", params.get("target")).name
        return {"target": target, "pattern": check_pattern(params.get("pattern"))}

    def preview(self, params: dict) -> Preview:
        target, pattern = params["target"], params["pattern"]
        with _client(target) as client:
            count, sample = 0, []
            for key in client.scan_iter(match=pattern, count=SCAN_COUNT):
                count += 1
                if len(sample) < SAMPLE_KEYS:
                    sample.append(key)
            pipe = client.pipeline(transaction=False)
            for key in sample:
                pipe.type(key).pttl(key).memory_usage(key)
            replies = pipe.execute()
            db = _db_of(client)
        rows = []
        for i, key in enumerate(sample):
            kind, pttl, size = replies[3 * i: 3 * i + 3]
            if pttl == -2:             # gone since the SCAN
                continue
            rows.append({"key": _key_text(key), "type": _key_text(kind),
                         "ttl_s": None if pttl < 0 else round(pttl / 1000.0, 1), "bytes": size or 0})
        sizes = [r["bytes"] for r in rows]
        estimate = round(sum(sizes) / len(sizes) * count) if sizes else 0
        summary = (f"Delete {count:,} keys matching {pattern!r} from {target} (db {db}), "
                   f"about {fmt.size(estimate)} (estimated from {len(sizes)} sampled keys)"
                   if count else f"No keys match {pattern!r} in {target} (db {db}); nothing to delete")
        return Preview(
            summary=summary,
            statements=[f"SCAN <cursor> MATCH {pattern} COUNT {SCAN_COUNT}  (until the cursor is back at 0)",
                        f"per batch of up to {BATCH} keys: MEMORY USAGE <key> for each, then UNLINK <keys>"],
            rows=rows, count=count, confirm=pattern, data={"estimated_bytes": estimate, "db": db})

    def execute(self, params: dict, preview: Preview, progress: Progress) -> Result:
        target, pattern = params["target"], params["pattern"]
        removed = freed = 0
        with _client(target) as client:
            for batch in self._batches(client, pattern):
                progress.step(removed, preview.count, f"{removed:,} keys removed")
                pipe = client.pipeline(transaction=False)
                for key in batch:
                    pipe.memory_usage(key)
                pipe.unlink(*batch)
                *sizes, unlinked = pipe.execute()
                removed += int(unlinked)
                freed += sum(s for s in sizes if s)
        return Result(f"Removed {removed:,} keys matching {pattern!r} from {target} (~{fmt.size(freed)} freed)",
                      {"keys_removed": removed, "bytes_freed": freed})

    @staticmethod
    def _batches(client: redis.Redis, pattern: str) -> Iterator[list[bytes]]:
        # Deleting keys SCAN already returned does not make SCAN skip the others.
        batch: list[bytes] = []
        for key in client.scan_iter(match=pattern, count=SCAN_COUNT):
            batch.append(key)
            if len(batch) == BATCH:
                yield batch
                batch = []
        if batch:
            yield batch


def _stream_warning(unread: int) -> str:
    if not unread:
        return (f"this database holds perfdeck's transport stream {STREAM}; no batch waits in it now "
                "(the collector recreates it after the flush)")
    batches, them = ("1 batch waits", "it") if unread == 1 else (f"{unread:,} batches wait", "them")
    return (f"this database holds perfdeck's transport stream {STREAM}: {batches} in it unread by the collector; "
            f"flushing loses {them}")


class FlushDatabase(_RedisAction):
    name = "redis.flush_db"
    title = "Flush database"
    touches = "every key of one Redis database (the database number in the target's URL)"
    destructive = True

    def fields(self) -> list[Field]:
        return [_target_field()]

    def check(self, params: dict) -> dict:
        return {"target": targets.get("redis", params.get("target")).name}

    def preview(self, params: dict) -> Preview:
        target = params["target"]
        with _client(target) as client:
            keys, used, db = client.dbsize(), client.info("memory")["used_memory"], _db_of(client)
            # Acknowledged batches are deleted from the stream: its length is what the collector has not ingested.
            unread = client.xlen(STREAM) if client.type(STREAM) == b"stream" else None
        warnings = [] if unread is None else [_stream_warning(unread)]
        return Preview(
            summary=f"Remove all {keys:,} keys of database {db} of {target} (the server uses {fmt.size(used)} in all)",
            statements=["FLUSHDB ASYNC"], rows=[{"db": db, "keys": keys, "used_memory": used}], count=keys,
            confirm=target, warnings=warnings, data={"db": db})

    def execute(self, params: dict, preview: Preview, progress: Progress) -> Result:
        target = params["target"]
        with _client(target) as client:
            keys, before, db = client.dbsize(), client.info("memory")["used_memory"], _db_of(client)
            client.flushdb(asynchronous=True)
            after = client.info("memory")["used_memory"]
        return Result(f"Flushed database {db} of {target}: {keys:,} keys removed "
                      f"(used memory {fmt.size(before)} -> {fmt.size(after)}; large values are freed in the background)",
                      {"keys_removed": keys, "used_memory_before": before, "used_memory_after": after})


def known_caches(client: redis.Redis, max_calls: int = HELP_SCAN_CALLS) -> tuple[list[str], bool]:
    """(caches that have a version key, whether the SCAN finished within `max_calls` calls)."""
    found, cursor = set(), 0
    for _ in range(max_calls):
        cursor, keys = client.scan(cursor, match=version_key("*"), count=SCAN_COUNT)
        found.update(_key_text(k)[len(version_key("")):] for k in keys)
        if cursor == 0:
            return sorted(found), True
    return sorted(found), False


class BumpCacheVersion(_RedisAction):
    name = "redis.bump_cache_version"
    title = "Bump cache version"
    touches = "one version key (perfdeck:cache_version:<cache>); entries of the old version become unreachable"

    def fields(self) -> list[Field]:
        return [_target_field(), Field("cache", "Cache", help=self._cache_help())]

    @staticmethod
    def _cache_help() -> str:
        """Text, not a choice: a cache never bumped has no version key yet. The help lists those that do
        (a bounded SCAN per configured Redis; one that does not answer is skipped)."""
        parts = []
        for name in targets.configured("redis"):
            try:
                with _client(name) as client:
                    caches, complete = known_caches(client)
            except ActionError:
                parts.append(f"{name}: not reachable")
                continue
            listed = ", ".join(caches[:30]) or "none yet"
            parts.append(f"{name}: {listed}" + ("" if complete and len(caches) <= 30 else ", ..."))
        return ("the name passed to cached('<name>', ...). Caches bumped before: " + "; ".join(parts)
                if parts else "the name passed to cached('<name>', ...)")

    def check(self, params: dict) -> dict:
        target = targets.get("redis", params.get("target")).name
        cache = params.get("cache")
        if not isinstance(cache, str) or not _CACHE_NAME.fullmatch(cache):
            raise InvalidInput("give the cache's name as passed to cached(): up to 200 letters, digits, "
                               "and _ - . :")
        return {"target": target, "cache": cache}

    def preview(self, params: dict) -> Preview:
        target, cache = params["target"], params["cache"]
        with _client(target) as client:
            raw = client.get(version_key(cache))
            current = self._version(raw, cache)
            # Only the cache's names reach the pattern: check() allowed no glob characters in them.
            entries = sum(1 for _ in client.scan_iter(match=f"{cache}:v{current}:*", count=SCAN_COUNT))
        warnings = []
        if raw is None and entries == 0:
            warnings.append(f"no version key and no entries for {cache!r}: is it the name passed to cached()?")
        return Preview(
            summary=(f"{cache}: version {current} -> {current + 1}. Every process using cached({cache!r}) misses "
                     f"within ~2 s; old entries expire by their ttl"),
            statements=[f"INCR {version_key(cache)}"],
            rows=[{"cache": cache, "current_version": current, "new_version": current + 1,
                   "entries_made_unreachable": entries}],
            count=entries, warnings=warnings, data={"old_version": current})

    @staticmethod
    def _version(raw, cache: str) -> int:
        try:
            return int(raw) if raw is not None else 0
        except ValueError:
            raise ActionError(f"{version_key(cache)} holds {raw[:40]!r}, not a version number") from None

    def execute(self, params: dict, preview: Preview, progress: Progress) -> Result:
        target, cache = params["target"], params["cache"]
        with _client(target) as client:
            new = bump_cache_version(client, cache)
        # INCR is atomic, so new - 1 is the version it replaced even if someone bumped since the preview.
        return Result(f"{cache}: version {new - 1} -> {new}", {"old_version": new - 1, "new_version": new})


ACTIONS = [DeleteKeys, FlushDatabase, BumpCacheVersion]
