"""Clearing in-process caches from the dashboard: a broadcast every instrumented process picks up.

An app says what can be cleared:

    prices = functools.lru_cache(maxsize=4096)(load_price)
    sdk.register_cache("prices", lambda namespace: prices.cache_clear())

`clear(namespace)` gets a namespace, or None for the whole cache, and returns the number of entries
it removed (None when it cannot tell). It runs on perfdeck's background thread, not on the thread
that serves requests, so it must be thread-safe (lru_cache's cache_clear is; a dict needs a lock).

`size=` also reports how many entries the cache holds: the flusher calls it about once a minute and
ships the count in its batches (table cache_sizes). A cache registered with a size only is measured
but not announced as clearable:

    sdk.register_cache("prices", lambda namespace: prices.cache_clear(),
                       size=lambda: prices.cache_info().currsize)
    sdk.register_cache("sessions", size=sessions.__len__)

The channel is the transport the SDK already ships batches over, so nothing new is configured:

    spool:DIR  DIR/control/<time_ns>-<id>.json         a command, written atomically (tmp + rename)
               DIR/control/acks/<id>/<host>-<pid>.json  one acknowledgement per process
               DIR/control/listeners/<host>-<pid>.json  presence: service and caches, every 10 s
               (the collector daemon reads only DIR/*.batch, so it never sees these)
    redis://   stream perfdeck:control (XADD MAXLEN ~1000) read with non-blocking XREAD from the
               last id seen; acks in hash perfdeck:control:acks:<id> (expires after an hour);
               presence in hash perfdeck:control:listeners, field <host>-<pid>

The flusher thread calls Listener.poll() about once a second: one scandir or one XREAD. Only commands
issued after the listener started run (a restarted process does not replay old clears), each once,
and every process acknowledges, with {} when it has no such cache. Nothing raises into the app: a
handler's exception is logged and reported in the ack, and a failing channel (Redis down, unwritable
directory) is logged once and retried every 30 s.

The channels serve both sides and live beside their transports (collectors.sdk.transport.spool and
.redis); the broadcasting API the dashboard uses (listeners(), broadcast_clear(), acks(), cleanup()) is
collectors.control. Only the standard library is imported here; redis-py only for a redis:// channel.
"""
from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Callable

from collectors.sdk.transport.records import process_key

log = logging.getLogger("perfdeck.sdk")

NAME = re.compile(r"[A-Za-z0-9_\-.:/]{1,200}")   # cache names and namespaces: plain names only
COMMAND_ID = re.compile(r"[0-9a-f]{32}")          # ids become file and key names: never a path
ANNOUNCE_S = 10.0       # presence is rewritten this often...
FRESH_S = 30.0          # ...and readers ignore entries older than this
RETRY_S = 30.0          # a failing channel is tried again after this long
COMMAND_TTL_S = 60.0    # a process that sees a command later than this ignores it

# -- what the app registered -----------------------------------------------------------------------
_lock = threading.Lock()
_handlers: dict[str, list[Callable]] = {}          # name -> clear(namespace) functions
_sizes: dict[str, list[Callable[[], int]]] = {}    # name -> size() functions, sampled by the flusher
_version = 0            # bumped on every change, so the listener re-announces its caches at once


def _new_lock_in_child() -> None:
    # fork() may copy the lock held by the parent's flusher thread, which does not exist in the child.
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)


def is_name(value) -> bool:
    return isinstance(value, str) and NAME.fullmatch(value) is not None


def register_cache(name: str, clear: Callable[[str | None], int | None] | None = None,
                   size: Callable[[], int] | None = None) -> Callable[[], None]:
    """Let the dashboard clear cache `name`: `clear(namespace)` empties one namespace (None: all)
    and returns the entries removed or None. `size()`, optional, returns the entries the cache holds
    now; it is sampled about once a minute. Either may be None, not both. Several registrations per
    name are all called (their sizes add up). Both run on perfdeck's background thread, so they must
    be thread-safe. Returns a function that unregisters.

    >>> sdk.register_cache("prices", lambda namespace: prices.cache_clear())
    >>> sdk.register_cache("sessions", size=sessions.__len__)     # measured, not clearable
    """
    global _version
    if (not is_name(name) or (clear is None and size is None) or not (clear is None or callable(clear))
            or not (size is None or callable(size))):
        log.warning("perfdeck: register_cache(%r) ignored: the name must be letters, digits and _-.:/ "
                    "(at most 200), clear and size callables or None, not both None", name)
        return lambda: None
    with _lock:
        if clear is not None:
            _handlers.setdefault(name, []).append(clear)
            _version += 1
        if size is not None:
            _sizes.setdefault(name, []).append(size)

    def unregister() -> None:
        global _version
        with _lock:
            if clear is not None and _remove(_handlers, name, clear):
                _version += 1
            if size is not None:
                _remove(_sizes, name, size)

    return unregister


def _remove(registry: dict[str, list], name: str, fn) -> bool:
    """Drop one registration of `fn` (by identity) under `name`; True when there was one."""
    fns = registry.get(name, [])
    for i, f in enumerate(fns):
        if f is fn:
            del fns[i]
            if not fns:
                del registry[name]
            return True
    return False


def registered() -> tuple[int, list[str]]:
    """(version, names of the caches that can be cleared): what the presence announces."""
    with _lock:
        return _version, sorted(_handlers)


def size_functions() -> list[tuple[str, list[Callable[[], int]]]]:
    """(name, its size() functions) for every cache registered with a size."""
    with _lock:
        return [(name, list(fns)) for name, fns in _sizes.items()]


def clear_cache(cache: str, namespace: str | None) -> tuple[dict, list[str]]:
    """Run every handler of `cache`. Returns ({cache: entries or None}, errors); {} without handlers."""
    with _lock:
        handlers = list(_handlers.get(cache, ()))
    ran, total, errors = 0, 0, []
    for clear in handlers:
        try:
            n = clear(namespace)
        except Exception as exc:
            log.exception("perfdeck: clearing cache %r failed", cache)
            errors.append(f"{cache}: {type(exc).__name__}: {exc}"[:300])
            continue
        ran += 1
        known = isinstance(n, int) and not isinstance(n, bool) and n >= 0
        total = total + n if known and total is not None else None   # one unknown count: total unknown
    return ({cache: total} if ran else {}), errors


# -- the process side: run by the flusher thread -----------------------------------------------------
class Listener:
    def __init__(self, channel, *, service: str, host: str, pid: int):
        self.channel, self.service, self.host, self.pid = channel, service, host, pid
        self.key = process_key(host, pid)
        self.commands_run = 0
        self._started = self._failing = False
        self._announced_at, self._announced_version, self._retry_at = 0.0, -1, 0.0

    def poll(self) -> int:
        """Start and announce when due, then run new commands; returns how many ran. Never raises."""
        now = time.monotonic()
        if now < self._retry_at:
            return 0
        try:
            if not self._started:
                self.channel.start()
                self._started = True
            version, caches = registered()
            if version != self._announced_version or now - self._announced_at >= ANNOUNCE_S:
                self.channel.announce(self.key, {"service": self.service, "host": self.host, "pid": self.pid,
                                                 "caches": caches, "at": time.time()})
                self._announced_at, self._announced_version = now, version
            ran = sum(self._run(command) for command in self.channel.poll())
        except Exception as exc:
            if not self._failing:
                log.warning("perfdeck: control channel %r failed (%s); retrying every %.0f s",
                            self.channel, exc, RETRY_S)
            self._failing, self._retry_at = True, now + RETRY_S
            return 0
        if self._failing:
            log.info("perfdeck: control channel %r works again", self.channel)
            self._failing = False
        self.commands_run += ran
        return ran

    def _run(self, command) -> int:
        if not isinstance(command, dict) or command.get("command") != "clear_cache":
            return 0
        cid, cache, namespace = command.get("id"), command.get("cache"), command.get("namespace")
        if not (isinstance(cid, str) and COMMAND_ID.fullmatch(cid) and is_name(cache)
                and (namespace is None or is_name(namespace))):
            log.warning("perfdeck: malformed control command ignored")
            return 0
        if not isinstance(command.get("expires_at"), (int, float)) or command["expires_at"] < time.time():
            return 0
        cleared, errors = clear_cache(cache, namespace)
        self.channel.ack(cid, self.key, {"host": self.host, "pid": self.pid, "service": self.service,
                                         "cleared": cleared, "errors": errors, "at": time.time()})
        return 1

    def close(self) -> None:
        """Withdraw our presence (at shutdown); the dashboard stops counting on us."""
        try:
            if self._started:
                self.channel.withdraw(self.key)
        except Exception:
            pass
        try:
            self.channel.close()
        except Exception:
            pass
