"""Health thresholds as data: the packaged defaults (thresholds.toml beside this module), a user file
over them, the environment over both.

    thresholds = load_thresholds("thresholds.toml")       # a missing user file is fine
    p95 = thresholds["request_p95_ms"]
    levels = p95.levels_for("shop-api", "/search")        # the most specific override, else the levels
    p95.severity(740, levels)                             # "warning"

A user file uses the packaged table names with only level keys, and overrides per service and/or
subject (the endpoint, cache, host or instance measured):

    [request_p95_ms]
    warning = 400

    [[request_p95_ms.overrides]]
    service = "shop-api"            # optional
    endpoint = "/recommendations"   # optional; aliases: subject, cache, host, instance
    target = 800
    warning = 1500
    critical = 3000

The most specific override wins: service and subject > subject > service > the threshold's levels.
Levels an override leaves out are the threshold's. The environment sets a threshold's own levels:
PERFDECK_<NAME>_TARGET / _WARNING / _CRITICAL / _MIN_SAMPLES / _FOR, e.g. PERFDECK_REQUEST_P95_MS_WARNING=400.
A broken file or variable is a ThresholdsError (a ValueError) naming the file, the key and why."""
from __future__ import annotations

import math
import os
import tomllib
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from collectors.health.settings import seconds

DEFAULTS_FILE = Path(__file__).with_name("thresholds.toml")

LEVEL_KEYS = ("target", "warning", "critical")
COMPONENTS = ("Latency", "Errors", "Jobs", "Caches", "Host", "Cost", "Components", "Ingest")
UNITS = ("ms", "s", "ratio", "percent", "usd", "entries", "up", "count", "age")
SUBJECT_KEYS = ("subject", "endpoint", "cache", "host", "instance")
USER_KEYS = (*LEVEL_KEYS, "min_samples", "for", "overrides")
PACKAGED_KEYS = (*LEVEL_KEYS, "min_samples", "for", "component", "help", "unit", "label", "last", "bad")


class ThresholdsError(ValueError):
    """A thresholds file or environment variable that cannot be used; says where and why."""


@dataclass(frozen=True)
class Levels:
    target: float
    warning: float
    critical: float


@dataclass(frozen=True)
class Override:
    """Levels for one service, one subject, or one subject of one service."""

    service: str | None
    subject: str | None
    levels: Levels

    def specificity(self, service: str | None, subject: str | None) -> int:
        """How specifically this override matches (3: service and subject, 2: subject, 1: service);
        0 when it does not match."""
        if self.service is not None and self.service != service:
            return 0
        if self.subject is not None and self.subject != subject:
            return 0
        return 3 if self.service and self.subject else 2 if self.subject else 1


@dataclass(frozen=True)
class Threshold:
    name: str
    component: str
    help: str
    unit: str
    bad: str                      # "above" | "below": the direction that is worse
    levels: Levels
    min_samples: int
    for_s: float | None           # None: [alerts] for
    env: str                      # "PERFDECK_REQUEST_P95_MS"; levels: env + "_TARGET" / "_WARNING" / "_CRITICAL"
    overrides: tuple[Override, ...] = ()
    label: str = "{subject}"      # how a message names the thing measured
    last: str | None = None       # unit "age": what was last seen ("batch"), named in the message

    def levels_for(self, service: str | None, subject: str | None) -> Levels:
        """The levels of the most specific matching override (the last one defined among equals),
        else the threshold's own."""
        best, rank = self.levels, 0
        for override in self.overrides:
            r = override.specificity(service, subject)
            if r and r >= rank:
                best, rank = override.levels, r
        return best

    def lines_for(self, pairs) -> tuple[tuple[str, float], ...]:
        """A chart's threshold lines for the (service, subject) pairs it draws: (name, level) for target,
        warning and critical when they all resolve to the same levels; none when they differ (one set of
        lines would be wrong for some of them)."""
        found = {self.levels_for(service, subject) for service, subject in pairs}
        if len(found) != 1:
            return ()
        (lv,) = found
        return ("target", lv.target), ("warning", lv.warning), ("critical", lv.critical)

    def severity(self, value: float, levels: Levels | None = None) -> str:
        """critical at or beyond the critical level, warning at or beyond the warning level,
        degraded beyond the target, else healthy ("beyond": above, or below when bad = below)."""
        lv = levels or self.levels
        worse = (lambda a, b: a >= b) if self.bad == "above" else (lambda a, b: a <= b)
        if worse(value, lv.critical):
            return "critical"
        if worse(value, lv.warning):
            return "warning"
        if worse(value, lv.target) and value != lv.target:
            return "degraded"
        return "healthy"

    def level_of(self, severity: str, levels: Levels | None = None) -> float:
        """The level a severity is measured against: the one crossed, or the target."""
        lv = levels or self.levels
        return {"critical": lv.critical, "warning": lv.warning}.get(severity, lv.target)


class Thresholds(Mapping):
    """Threshold name -> Threshold, in the packaged file's order. `files` are the files read."""

    def __init__(self, items: dict[str, Threshold], files: tuple[Path, ...] = ()):
        self._items = dict(items)
        self.files = files

    def __getitem__(self, name: str) -> Threshold:
        try:
            return self._items[name]
        except KeyError:
            raise KeyError(f"no threshold named {name!r}; known: {', '.join(self._items)}") from None

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)


@dataclass
class _Draft:
    """A threshold while files and the environment are applied; frozen by `_freeze`."""

    name: str
    info: dict
    levels: dict
    min_samples: int
    for_s: float | None
    overrides: list[tuple[str, dict]] = field(default_factory=list)   # (where, raw override)


def load_thresholds(path: str | os.PathLike | None = None) -> Thresholds:
    """The packaged defaults, then the user file at `path` (default $PERFDECK_THRESHOLDS) if it exists,
    then PERFDECK_<NAME>_<LEVEL> from the environment."""
    drafts = _packaged(DEFAULTS_FILE)
    files = [DEFAULTS_FILE]
    path = path or os.environ.get("PERFDECK_THRESHOLDS", "").strip() or None
    if path is not None and Path(path).is_file():
        _apply_user_file(drafts, Path(path))
        files.append(Path(path))
    _apply_env(drafts)
    return Thresholds({name: _freeze(d) for name, d in drafts.items()}, tuple(files))


def _read(path: Path) -> dict:
    try:
        with open(path, "rb") as f:
            return tomllib.load(f)
    except tomllib.TOMLDecodeError as exc:
        raise ThresholdsError(f"{path}: not valid TOML: {exc}") from None


def _number(value, where: str) -> float:
    if isinstance(value, str):
        try:
            value = float(value.strip())
        except ValueError:
            raise ThresholdsError(f"{where} must be a number, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise ThresholdsError(f"{where} must be a finite number, got {value!r}")
    return float(value)


def _count(value, where: str) -> int:
    number = _number(value, where)
    if number < 0 or number != int(number):
        raise ThresholdsError(f"{where} must be a whole number >= 0, got {value!r}")
    return int(number)


def _span(value, where: str) -> float:
    try:
        span = seconds(value, where)
    except ValueError:
        raise ThresholdsError(f"{where} must be a span like 30s, 5m or 2h, got {value!r}") from None
    return span


def _levels(table: dict, where: str) -> dict:
    return {k: _number(table[k], f"{where} {k}") for k in LEVEL_KEYS if k in table}


def _packaged(path: Path) -> dict[str, _Draft]:
    drafts = {}
    for name, table in _read(path).items():
        where = f"{path}: [{name}]"
        unknown = set(table) - set(PACKAGED_KEYS)
        missing = {"component", "help", "unit", "bad", *LEVEL_KEYS} - set(table)
        if unknown or missing:
            raise ThresholdsError(f"{where}: unknown keys {sorted(unknown)}, missing keys {sorted(missing)}")
        if table["bad"] not in ("above", "below") or table["unit"] not in UNITS or table["component"] not in COMPONENTS:
            raise ThresholdsError(f"{where}: bad must be above or below, unit one of {UNITS}, component one of "
                                  f"{COMPONENTS}")
        info = {k: str(table[k]) for k in ("component", "help", "unit", "bad")}
        info["label"] = str(table.get("label", "{subject}"))
        info["last"] = str(table["last"]) if "last" in table else None
        for_s = _span(table["for"], f"{where} for") if "for" in table else None
        min_samples = _count(table.get("min_samples", 1), f"{where} min_samples")
        drafts[name] = _Draft(name, info, _levels(table, where), min_samples, for_s)
        _check_order(drafts[name], drafts[name].levels, where)
    return drafts


def _apply_user_file(drafts: dict[str, _Draft], path: Path) -> None:
    for name, table in _read(path).items():
        if name not in drafts:
            raise ThresholdsError(f"{path}: [{name}] is not a threshold; known: {', '.join(drafts)}")
        where = f"{path}: [{name}]"
        if not isinstance(table, dict):
            raise ThresholdsError(f"{where} must be a table")
        unknown = set(table) - set(USER_KEYS)
        if unknown:
            raise ThresholdsError(f"{where}: unknown keys {sorted(unknown)}; known: {', '.join(USER_KEYS)}")
        draft = drafts[name]
        draft.levels |= _levels(table, where)
        if "min_samples" in table:
            draft.min_samples = _count(table["min_samples"], f"{where} min_samples")
        if "for" in table:
            draft.for_s = _span(table["for"], f"{where} for")
        _check_order(draft, draft.levels, where)
        overrides = table.get("overrides", [])
        if not isinstance(overrides, list) or not all(isinstance(o, dict) for o in overrides):
            raise ThresholdsError(f"{where} overrides must be [[{name}.overrides]] tables")
        draft.overrides += [(f"{path}: [[{name}.overrides]] #{i + 1}", o) for i, o in enumerate(overrides)]


def _apply_env(drafts: dict[str, _Draft]) -> None:
    for name, draft in drafts.items():
        env = f"PERFDECK_{name.upper()}"
        levels_set = []
        for key in (*LEVEL_KEYS, "min_samples", "for"):
            var = f"{env}_{key.upper()}"
            value = os.environ.get(var, "").strip()
            if not value:
                continue
            if key in LEVEL_KEYS:
                draft.levels[key] = _number(value, f"${var}")
                levels_set.append(f"${var}")
            elif key == "min_samples":
                draft.min_samples = _count(value, f"${var}")
            else:
                draft.for_s = _span(value, f"${var}")
        if levels_set:   # checked once all are set: raising two levels one by one may pass through disorder
            _check_order(draft, draft.levels, f"{', '.join(levels_set)} (over [{name}])")


def _check_order(draft: _Draft, levels: dict, where: str) -> None:
    t, w, c = (levels[k] for k in LEVEL_KEYS)
    ordered = t <= w <= c if draft.info["bad"] == "above" else t >= w >= c
    if not ordered:
        direction = "higher" if draft.info["bad"] == "above" else "lower"
        raise ThresholdsError(f"{where}: warning {w:g} must lie between target {t:g} and critical {c:g} "
                              f"({direction} is worse for {draft.name})")


def _override(draft: _Draft, where: str, raw: dict) -> Override:
    unknown = set(raw) - {"service", *SUBJECT_KEYS, *LEVEL_KEYS}
    if unknown:
        raise ThresholdsError(f"{where}: unknown keys {sorted(unknown)}; known: service, "
                              f"{' | '.join(SUBJECT_KEYS)}, {', '.join(LEVEL_KEYS)}")
    subjects = [k for k in SUBJECT_KEYS if k in raw]
    if len(subjects) > 1:
        raise ThresholdsError(f"{where}: give one of {', '.join(subjects)}, not several (they all name the subject)")
    service = raw.get("service")
    subject = raw[subjects[0]] if subjects else None
    if service is None and subject is None:
        raise ThresholdsError(f"{where}: needs a service or a subject ({' | '.join(SUBJECT_KEYS)})")
    for key, value in (("service", service), (subjects[0] if subjects else "subject", subject)):
        if value is not None and not (isinstance(value, str) and value):
            raise ThresholdsError(f"{where} {key} must be a non-empty string, got {value!r}")
    own = _levels(raw, where)
    if not own:
        raise ThresholdsError(f"{where}: sets no level ({', '.join(LEVEL_KEYS)})")
    merged = draft.levels | own
    _check_order(draft, merged, where)
    return Override(service, subject, Levels(**merged))


def _freeze(draft: _Draft) -> Threshold:
    return Threshold(
        name=draft.name, component=draft.info["component"], help=draft.info["help"], unit=draft.info["unit"],
        bad=draft.info["bad"], levels=Levels(**draft.levels), min_samples=draft.min_samples, for_s=draft.for_s,
        env=f"PERFDECK_{draft.name.upper()}", overrides=tuple(_override(draft, w, o) for w, o in draft.overrides),
        label=draft.info["label"], last=draft.info["last"])
