"""The Redis instances and databases actions may touch: exactly those named in perfdeck.toml or in
$PERFDECK_REDIS_URLS / $PERFDECK_DATABASE_URLS (see collectors.config), looked up by name. An action's
params carry the name, never the URL, so neither the audit log nor the page ever shows a password."""
from __future__ import annotations

from dataclasses import dataclass

from collectors import config
from collectors.redact import redact
from dashboard.actions.framework import InvalidInput


@dataclass(frozen=True)
class Target:
    name: str
    kind: str          # "redis" | "database"
    url: str           # secret: never shown, never audited
    shown: str         # the URL without its password


def _redact(kind: str, url: str) -> str:
    try:
        return redact(url)
    except Exception:           # one bad URL must not hide the other targets; connecting will say why
        return "(a URL that could not be parsed)"


def configured(kind: str) -> dict[str, Target]:
    """name -> Target for "redis" or "database", in config order (the file, then the environment)."""
    out: dict[str, Target] = {}
    for entry in config.load().get(kind, []):
        if entry.get("name") and entry.get("url") and entry["name"] not in out:
            out[entry["name"]] = Target(entry["name"], kind, entry["url"], _redact(kind, entry["url"]))
    return out


def get(kind: str, name) -> Target:
    """The configured target called `name`, or InvalidInput naming the ones there are."""
    targets = configured(kind)
    if isinstance(name, str) and name in targets:
        return targets[name]
    known = ", ".join(sorted(targets)) or "none (add one to perfdeck.toml)"
    label = "Redis" if kind == "redis" else "database"
    raise InvalidInput(f"no {label} named {str(name)[:80]!r} is configured; configured: {known}")
