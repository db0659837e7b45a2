"""Clear an in-process cache in every running instrumented process.

Processes that use the perfdeck SDK and called `sdk.register_cache(name, clear)` listen on their
transport for commands (collectors.sdk.control) and announce themselves there every 10 s with the
caches they registered. This action lists those announcements, broadcasts "clear cache X
[namespace Y]" and waits up to WAIT_S for the acknowledgements, which say how many entries each
process dropped.

The dashboard broadcasts where the collector reads (see channels(), collectors.config.transport):
$PERFDECK_TRANSPORT, the variable the SDK reads, and the spool directory. A cache clear loses nothing the app cannot rebuild,
so the action is not destructive: a click on Run after the preview is the confirmation. Cache and
namespace travel as data inside a JSON command and are checked to be plain names on both sides.
"""
from __future__ import annotations

import time
from pathlib import Path

from redis import RedisError

from collectors import config, control
from collectors.redact import redact
from collectors.sdk.control import is_name
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

WAIT_S = 5.0      # processes poll about once a second; five seconds covers a busy one
POLL_S = 0.25
REDIS_SCHEMES = config.REDIS_SCHEMES


def channels() -> list[str]:
    """Where to broadcast: where the collector reads (collectors.config.transport: the Redis stream when the
    apps ship through Redis, and the spool folder), so the SDKs that send there hear it."""
    try:
        found = config.load()
    except ValueError:      # a broken perfdeck.toml: the environment and the default still say where
        found = {}
    return config.transport(found).channels()


def shown(url: str) -> str:
    """A channel as the page and the audit log show it: no password."""
    return redact(url) if url.startswith(REDIS_SCHEMES) else url


def _unreachable(url: str, exc: Exception) -> TargetUnavailable:
    return TargetUnavailable(redact(f"control channel {shown(url)} is unreachable: {type(exc).__name__}: {exc}", url))


def fresh_listeners() -> list[dict]:
    """The processes announced on every channel in the last 30 s, each with its `channel`."""
    out = []
    for url in channels():
        try:
            out += [dict(entry, channel=url) for entry in control.listeners(url)]
        except (OSError, ValueError, RedisError) as exc:
            raise _unreachable(url, exc) from exc
    return out


def _has(listener: dict, cache: str) -> bool:
    caches = listener.get("caches")
    return isinstance(caches, list) and cache in caches


def _who(process: dict) -> tuple:
    return process.get("channel"), str(process.get("host")), process.get("pid")


def _what(cache: str, namespace: str | None) -> str:
    return f"{cache!r} " + (f"namespace {namespace!r}" if namespace else "(whole cache)")


class ClearAppCache(Action):
    name = "app_cache.clear"
    kind = "app-cache"
    title = "Clear an in-process cache"
    touches = "an in-memory cache inside every running process that registered it with the perfdeck SDK"
    destructive = False
    batched = False

    def fields(self) -> list[Field]:
        def caches(_params: dict) -> list[str]:
            return sorted({c for p in fresh_listeners() for c in p.get("caches") or [] if is_name(c)})

        return [
            Field("target", "Cache", kind="choice", options=caches,
                  help="Caches registered with sdk.register_cache by processes running now"),
            Field("namespace", "Namespace", kind="text", default="",
                  help="Only this namespace; empty clears the whole cache"),
        ]

    def available(self) -> str | None:
        urls = channels()
        if any(u.startswith(REDIS_SCHEMES) for u in urls):
            return None
        if any((Path(u.removeprefix("spool:")) / "control").is_dir() for u in urls):
            return None
        where = ", ".join(u.removeprefix("spool:") + "/control" for u in urls)
        return (f"no instrumented process has announced itself ({where} does not exist): set $PERFDECK_SPOOL "
                "or $PERFDECK_TRANSPORT to the transport your services' perfdeck SDK uses")

    def check(self, params: dict) -> dict:
        cache, namespace = params.get("target"), params.get("namespace")
        cache = cache.strip() if isinstance(cache, str) else cache
        namespace = namespace.strip() if isinstance(namespace, str) else namespace
        if not is_name(cache):
            raise InvalidInput(f"cache name {str(cache)[:80]!r} refused: use letters, digits and _ - . : / "
                               "(at most 200 characters)")
        if namespace in ("", None):
            namespace = None
        elif not is_name(namespace):
            raise InvalidInput(f"namespace {str(namespace)[:80]!r} refused: use letters, digits and _ - . : / "
                               "(at most 200 characters), or leave it empty for the whole cache")
        return {"target": cache, "namespace": namespace}

    def preview(self, params: dict) -> Preview:
        cache, namespace = params["target"], params["namespace"]
        everyone = fresh_listeners()
        holders = [p for p in everyone if _has(p, cache)]
        services = sorted({str(p.get("service")) for p in holders})
        rows = [{"service": p.get("service"), "host": p.get("host"), "pid": p.get("pid"),
                 "caches": ", ".join(p.get("caches") or []), "channel": shown(p["channel"])} for p in holders]
        scope = f"namespace {namespace!r}" if namespace else "the whole cache"
        one = len(holders) == 1
        summary = (f"{len(holders)} process{'' if one else 'es'} (service{'' if len(services) == 1 else 's'} "
                   f"{', '.join(services)}) {'has' if one else 'have'} cache {cache!r} registered; "
                   f"{'it' if one else 'they'} will clear {scope}")
        warnings = []
        if not holders:
            summary = f"No running process has cache {cache!r} registered; nothing will be cleared"
            warnings.append(f"none of the {len(everyone)} listening processes registered {cache!r}"
                            if everyone else "no instrumented process is listening on " +
                            ", ".join(shown(u) for u in channels()))
        statements = [f"broadcast clear_cache cache={cache!r} namespace={namespace!r} on {shown(url)}"
                      for url in dict.fromkeys(p["channel"] for p in holders)]
        return Preview(summary, statements=statements, rows=rows, count=len(holders), warnings=warnings,
                       data={"cache": cache, "namespace": namespace})

    def execute(self, params: dict, preview: Preview, progress: Progress) -> Result:
        cache, namespace = preview.data["cache"], preview.data["namespace"]
        # Who has the cache now (not at preview time): a process that stopped since would never answer.
        expected = {_who(p): p for p in fresh_listeners() if _has(p, cache)}
        if not expected:
            return Result(f"No running process has cache {cache!r} registered; nothing was cleared",
                          {"acknowledged": 0, "expected": 0, "entries_cleared": 0, "errors": 0})
        commands = {}
        for url in dict.fromkeys(who[0] for who in expected):
            try:
                commands[url] = control.broadcast_clear(url, cache, namespace)
            except (OSError, RedisError) as exc:
                raise _unreachable(url, exc) from exc
        answers = self._wait(commands, expected, progress)
        return self._result(cache, namespace, expected, answers)

    def _wait(self, commands: dict, expected: dict, progress: Progress) -> dict:
        deadline = time.monotonic() + WAIT_S
        while True:
            answers = {}
            for url, command_id in commands.items():
                try:
                    found = control.acks(url, command_id)
                except (OSError, ValueError, RedisError) as exc:
                    raise _unreachable(url, exc) from exc
                answers.update({_who(dict(a, channel=url)): a for a in found})
            answers = {who: a for who, a in answers.items() if who in expected}
            progress.step(len(answers), len(expected), note="processes acknowledged")
            if len(answers) == len(expected) or time.monotonic() >= deadline:
                return answers
            time.sleep(POLL_S)

    def _result(self, cache: str, namespace: str | None, expected: dict, answers: dict) -> Result:
        processes = "process" if len(expected) == 1 else "processes"
        if not answers:
            raise ActionError(f"none of the {len(expected)} {processes} with cache {cache!r} answered within "
                              f"{WAIT_S:g} s (busy or stopped?); the broadcast stays valid for a minute")
        # Per process: entries dropped, None when its handler cannot count; absent when its handler failed.
        cleared = [a["cleared"][cache] for a in answers.values()
                   if isinstance(a.get("cleared"), dict) and cache in a["cleared"]]
        counted = [n for n in cleared if isinstance(n, int)]
        entries, uncounted = sum(counted), len(cleared) - len(counted)
        errors = [f"{a.get('service')} pid {a.get('pid')}: {e}" for a in answers.values() for e in a.get("errors") or []]
        summary = f"{len(cleared)} of {len(expected)} {processes} cleared {_what(cache, namespace)}"
        if counted or not uncounted:
            summary += f": {entries:,} entries"
        if uncounted:
            summary += f"{',' if counted else ';'} {uncounted} without an entry count"
        if len(answers) < len(expected):
            summary += f"; {len(expected) - len(answers)} did not answer within {WAIT_S:g} s"
        if errors:
            summary += f"; {len(errors)} error{'s' if len(errors) > 1 else ''}: " + "; ".join(errors[:3])
        return Result(summary, {"acknowledged": len(answers), "expected": len(expected),
                                "entries_cleared": entries, "errors": len(errors)})


__all__ = ["ClearAppCache", "channels", "fresh_listeners"]
