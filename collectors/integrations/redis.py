"""Redis caching with hit/miss accounting, and hit/miss accounting for a redis-py client you already use.

    from collectors.integrations.redis import cached, bump_cache_version, instrument_redis

    r = redis.Redis.from_url("redis://cache:6379/0")

    @cached("products", ttl=300, client=r)
    def product_page(product_id, lang="en"): ...

    bump_cache_version(r, "products")        # every process misses "products" within ~2 s

    instrument_redis(r, cache="sessions")    # r.get / r.mget now count hits and misses

`cached(cache, ttl, client=...)`:
  key          f"{cache}:v{version}:{namespace or fn.__qualname__}:{hash of the arguments}". The hash is a
               blake2b of a canonical form of the arguments (dicts and sets sorted, types kept apart, so
               1, 1.0, True and "1" differ), stable across processes for values built from None, bool,
               numbers, str, bytes, lists, tuples, dicts and sets. Anything else goes in by repr(), which
               for objects without a __repr__ includes a memory address: pass `key=` (a callable taking
               the function's arguments and returning a str) for those, and for methods (`self`).
  version      an integer kept in Redis at f"perfdeck:cache_version:{cache}" (missing = 0), re-read at most
               every `version_ttl` seconds (2 s) per process and client. bump_cache_version() INCRs it, so
               every process starts missing within version_ttl; the old entries expire by their ttl.
  values       serialized with pickle unless `serializer=` (any object with dumps/loads) says otherwise.
               None is cached like any value. A value that fails to load is a miss.
  accounting   one sdk.record_cache(cache, hit, lookup_ms, namespace) per call, namespace being
               `namespace or fn.__qualname__`; lookup_ms is the GET round trip.
  Redis down   the function is called and its result returned, the call counted as a miss without a
               lookup time, and no Redis error reaches the app. After a failure the client is left alone
               for `retry_after` seconds (1 s), so an unreachable Redis costs one failed connection per
               second, not one per call. Exceptions raised by the function itself pass through unchanged
               and nothing is cached.
  async        an `async def` function works with redis.asyncio clients (and with sync ones).

`instrument_redis(client, cache="redis", namespace=None)` wraps the client instance's execute_command,
so GET and MGET issued through it (client.get, client.mget) each record one lookup per key: a hit when
the value is not None. An MGET's round trip is split evenly between its keys. `namespace` is a str or
a callable key -> str. Errors, return values and every other command are untouched; pipelines are not
counted. Lookups made by a cached() function through an instrumented client are counted once, by cached().

Nothing here ever raises a perfdeck error into the app: those are logged at debug and skipped."""
from __future__ import annotations

import contextvars
import functools
import hashlib
import inspect
import logging
import pickle
import threading
import time
from time import perf_counter

from collectors import sdk

log = logging.getLogger("perfdeck.integrations.redis")

VERSION_TTL = 2.0
RETRY_AFTER = 1.0

_versions: dict = {}        # (id(client), cache) -> (client, version, read_at)
_down: dict = {}            # id(client) -> (client, monotonic time until which it is left alone)
_lock = threading.Lock()
_in_cached = contextvars.ContextVar("perfdeck_in_cached", default=False)
_MISSING = object()


def version_key(cache: str) -> str:
    """The Redis key holding `cache`'s version number."""
    return f"perfdeck:cache_version:{cache}"


def bump_cache_version(client, cache: str) -> int:
    """Invalidate every entry of `cache` in every process (within their version_ttl) by INCRing its
    version; returns the new version. This one does raise Redis errors: the caller asked for a write.
    For a redis.asyncio client use `await client.incr(version_key(cache))`."""
    version = int(client.incr(version_key(cache)))
    with _lock:
        for k in [k for k in _versions if k[1] == cache]:
            del _versions[k]
    return version


def stable_hash(args: tuple, kwargs: dict) -> str:
    """A hex digest of the arguments that is the same in every process (see the module docstring)."""
    canon = repr((_canon(args), _canon(kwargs)))
    return hashlib.blake2b(canon.encode("utf-8", "backslashreplace"), digest_size=16).hexdigest()


def _canon(x):
    if x is None or isinstance(x, (bool, int, float, complex, str, bytes)):
        return (type(x).__name__, x)
    if isinstance(x, (list, tuple)):
        return (type(x).__name__, [_canon(v) for v in x])
    if isinstance(x, dict):
        return ("dict", sorted(((_canon(k), _canon(v)) for k, v in x.items()), key=repr))
    if isinstance(x, (set, frozenset)):
        return (type(x).__name__, sorted((_canon(v) for v in x), key=repr))
    return (type(x).__qualname__, repr(x))


def _is_down(client) -> bool:
    entry = _down.get(id(client))
    if entry is None or entry[0] is not client:
        return False
    if time.monotonic() < entry[1]:
        return True
    _down.pop(id(client), None)
    return False


def _mark_down(client, retry_after: float) -> None:
    _down[id(client)] = (client, time.monotonic() + retry_after)


def _failed(client, retry_after: float, exc: BaseException) -> None:
    """Leave the client alone for a while when the failure was Redis's (not, say, a key= callable's)."""
    if isinstance(exc, OSError) or type(exc).__module__.split(".")[0] == "redis":
        _mark_down(client, retry_after)


def _cached_version(client, cache: str, version_ttl: float):
    entry = _versions.get((id(client), cache))
    if entry is not None and entry[0] is client and time.monotonic() - entry[2] < version_ttl:
        return entry[1]
    return None


def _store_version(client, cache: str, raw) -> int:
    version = int(raw) if raw is not None else 0
    _versions[(id(client), cache)] = (client, version, time.monotonic())
    return version


def cached(cache: str, ttl: float | None = 60, *, client, namespace: str | None = None, key=None,
           serializer=pickle, version_ttl: float = VERSION_TTL, retry_after: float = RETRY_AFTER):
    """Cache a function's results in Redis under `cache` for `ttl` seconds (None: no expiry).
    See the module docstring for keys, versions and what happens when Redis is down."""
    if client is None:
        raise TypeError("cached() needs client=, a redis-py client")

    def decorate(fn):
        ns = namespace or fn.__qualname__
        expire = None if ttl is None else max(1, round(ttl))

        # The steps of a call, written once: generators that yield each Redis call (a thunk) and get its
        # result back, run by _blocking() for a plain function and by _awaiting() for an async one.
        def version():
            v = _cached_version(client, cache, version_ttl)
            if v is None:
                v = _store_version(client, cache, (yield lambda: client.get(version_key(cache))))
            return v

        def make_key(v, args, kwargs) -> str:
            suffix = key(*args, **kwargs) if key is not None else stable_hash(args, kwargs)
            return f"{cache}:v{v}:{ns}:{suffix}"

        def lookup(args, kwargs):
            """(the key to store a miss under or None, the value or _MISSING); one record_cache either way."""
            if _is_down(client):
                sdk.record_cache(cache, False, None, ns)
                return None, _MISSING
            token = _in_cached.set(True)
            try:
                k = make_key((yield from version()), args, kwargs)
                t0 = perf_counter()
                raw = yield lambda: client.get(k)
                return k, _loaded(raw, (perf_counter() - t0) * 1000.0)
            except Exception as exc:
                _failed(client, retry_after, exc)
                log.debug("perfdeck: cache %s lookup failed; calling %s uncached", cache, ns, exc_info=exc)
                sdk.record_cache(cache, False, None, ns)
                return None, _MISSING
            finally:
                _in_cached.reset(token)

        def _loaded(raw, ms):
            """The value GET returned, or _MISSING (a miss, or a value that does not load); never raises."""
            value = _MISSING
            if raw is not None:
                try:
                    value = serializer.loads(raw)
                except Exception:
                    log.debug("perfdeck: cache %s: could not load a value for %s", cache, ns, exc_info=True)
            sdk.record_cache(cache, value is not _MISSING, ms, ns)
            return value

        def store(k, value):
            token = _in_cached.set(True)
            try:
                yield lambda: client.set(k, serializer.dumps(value), ex=expire)
            except Exception:
                log.debug("perfdeck: cache %s: could not store a value for %s", cache, ns, exc_info=True)
            finally:
                _in_cached.reset(token)

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args, **kwargs):
                k, value = await _awaiting(lookup(args, kwargs))
                if value is _MISSING:
                    value = await fn(*args, **kwargs)
                    if k is not None:
                        await _awaiting(store(k, value))
                return value

            async def acache_key(*args, **kwargs) -> str:
                return make_key(await _awaiting(version()), args, kwargs)

            async_wrapper.cache_key, async_wrapper.uncached = acache_key, fn
            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            k, value = _blocking(lookup(args, kwargs))
            if value is _MISSING:
                value = fn(*args, **kwargs)
                if k is not None:
                    _blocking(store(k, value))
            return value

        def cache_key(*args, **kwargs) -> str:
            """The Redis key a call with these arguments reads now (reads the version if due)."""
            return make_key(_blocking(version()), args, kwargs)

        wrapper.cache_key, wrapper.uncached = cache_key, fn
        return wrapper

    return decorate


def _blocking(steps):
    """Run a generator of Redis calls (see cached) with each call made as it comes; its return value."""
    result, error = None, None
    while True:
        try:
            call = steps.throw(error) if error is not None else steps.send(result)
        except StopIteration as done:
            return done.value
        try:
            result, error = call(), None
        except Exception as exc:
            result, error = None, exc


async def _awaiting(steps):
    """The same for an async function: a call's result is awaited when it is awaitable (redis.asyncio)."""
    result, error = None, None
    while True:
        try:
            call = steps.throw(error) if error is not None else steps.send(result)
        except StopIteration as done:
            return done.value
        try:
            result, error = await _maybe_await(call()), None
        except Exception as exc:
            result, error = None, exc


async def _maybe_await(x):
    return await x if inspect.isawaitable(x) else x


# ---------------------------------------------------------------- instrument_redis

_ORIGINAL = "_perfdeck_original_execute_command"


def instrument_redis(client, cache: str = "redis", namespace=None) -> bool:
    """Count GET/MGET hits and misses made through `client` (sync or redis.asyncio) as lookups of
    `cache`. Returns False when it was already instrumented (or could not be)."""
    try:
        if _ORIGINAL in vars(client):
            return False
        original = client.execute_command

        def ns_of(k):
            if namespace is None or isinstance(namespace, str):
                return namespace
            try:
                return namespace(k.decode("utf-8", "replace") if isinstance(k, bytes) else str(k))
            except Exception:
                return None

        def account(args, result, ms):
            try:
                cmd = str(args[0]).upper() if not isinstance(args[0], bytes) else args[0].decode().upper()
                if cmd == "GET" and len(args) >= 2:
                    sdk.record_cache(cache, result is not None, ms, ns_of(args[1]))
                elif cmd == "MGET" and isinstance(result, (list, tuple)) and result:
                    keys = args[1:]
                    if len(keys) == 1 and isinstance(keys[0], (list, tuple)):
                        keys = keys[0]
                    per_key = ms / len(result)
                    for k, v in zip(keys, result):
                        sdk.record_cache(cache, v is not None, per_key, ns_of(k))
            except Exception:
                log.debug("perfdeck: could not account a redis lookup", exc_info=True)

        def wanted(args) -> bool:
            try:
                return (bool(args) and not _in_cached.get()
                        and str(args[0] if not isinstance(args[0], bytes) else args[0].decode()).upper()
                        in ("GET", "MGET"))
            except Exception:
                return False

        if inspect.iscoroutinefunction(original):
            @functools.wraps(original)
            async def execute_command(*args, **options):
                if not wanted(args):
                    return await original(*args, **options)
                t0 = perf_counter()
                result = await original(*args, **options)
                account(args, result, (perf_counter() - t0) * 1000.0)
                return result
        else:
            @functools.wraps(original)
            def execute_command(*args, **options):
                if not wanted(args):
                    return original(*args, **options)
                t0 = perf_counter()
                result = original(*args, **options)
                account(args, result, (perf_counter() - t0) * 1000.0)
                return result

        setattr(client, _ORIGINAL, original)
        client.execute_command = execute_command
        return True
    except Exception:
        log.debug("perfdeck: could not instrument %r", client, exc_info=True)
        return False


def uninstrument_redis(client) -> bool:
    """Undo instrument_redis(); False when `client` was not instrumented."""
    try:
        if _ORIGINAL not in vars(client):
            return False
        delattr(client, _ORIGINAL)
        del client.execute_command
        return True
    except Exception:
        log.debug("perfdeck: could not uninstrument %r", client, exc_info=True)
        return False
