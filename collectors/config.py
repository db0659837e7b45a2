"""The collector's configuration: one TOML file (`perfdeck.toml`, or $PERFDECK_CONFIG) naming what
to watch, with environment overrides. Every key is optional:

    [host]                         # on by default
    interval = 10                  # seconds
    processes = ["gunicorn", "pid:4242", "cmd:celery .* worker"]   # name, pid: or cmd: regex

    [[redis]]                      # one table per instance
    name = "cache"
    url = "redis://127.0.0.1:6379/0"
    interval = 10
    namespace_separator = ":"      # prefix = text before the last separator
    sample_keys = 1000             # keys sampled per interval, the SCAN cursor moving on (never KEYS); 0 = off
    top_keys = 20                  # biggest keys kept (MEMORY USAGE, a running top across samples)
    clients = true                 # CLIENT LIST summed up by client name, host and command

    [[database]]
    name = "app"
    url = "postgresql://app@127.0.0.1/app"      # any SQLAlchemy URL; sqlite:///path.db too
    interval = 30
    advise = true                  # run the index advisor on it (PostgreSQL and SQLite)

    [advisor]
    interval = 3600                # seconds between advisor runs; 0 turns it off

    [cost]
    prices_file = "prices.toml"    # price overrides per model (collectors.pricing), beside this file
    daily_budget = 40.0            # USD; budgets and the target are drawn on the Cost page
    monthly_budget = 1000.0
    compute_usd_per_core_hour = 0.04   # adds CPU of the watched processes to the cost of a query

    [transport]                    # where the apps' SDKs send (default: $PERFDECK_TRANSPORT, else data/spool)
    spool = "data/spool"           # the collector reads it, the dashboard broadcasts cache clears to it
    redis = "redis://127.0.0.1:6379/0"   # the Redis stream, when the apps ship through Redis

    [ingest]
    max_future = "5m"              # events timed further ahead of the collector's clock are rejected
    max_age = "400d"               # and so are older ones (default: as long as rollups are kept)

    [store]                        # only for a DuckLake store (--db ducklake:postgres:...; collectors.store.lake)
    lake_data_path = "/mnt/shared/perfdeck/"   # its Parquet files: a folder every collector and dashboard sees, or s3://

    [http]                         # `perfdeck collect` serves /healthz and /metrics (collectors.http)
    listen = "127.0.0.1:9464"      # unset: no listener; --http overrides
    token = "..."                  # bearer token; required on any address but loopback

Environment: PERFDECK_HOST_INTERVAL; PERFDECK_ADVISOR_INTERVAL; PERFDECK_REDIS_URLS and PERFDECK_DATABASE_URLS (comma-separated
URLs, added to the file's lists, each `name=url` or a bare URL named after its host and database);
PERFDECK_PRICES_FILE, PERFDECK_DAILY_BUDGET, PERFDECK_MONTHLY_BUDGET and
PERFDECK_COMPUTE_USD_PER_CORE_HOUR for the [cost] keys (the target per request is the cost_per_query_usd
threshold's); PERFDECK_INGEST_MAX_FUTURE and PERFDECK_INGEST_MAX_AGE; PERFDECK_SPOOL, PERFDECK_REDIS and
PERFDECK_TRANSPORT (the SDK's) for [transport]; PERFDECK_HTTP_LISTEN and PERFDECK_HTTP_TOKEN for [http];
PERFDECK_LAKE_DATA_PATH for [store]."""
from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

DEFAULT_PATH = Path("perfdeck.toml")
DEFAULT_SPOOL = "data/spool"       # the SDK's default (spool:data/spool): apps, collector and dashboard meet there
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def load(path: str | os.PathLike | None = None) -> dict:
    """The parsed config: the file if there is one, then the environment on top."""
    path = Path(path or os.environ.get("PERFDECK_CONFIG") or DEFAULT_PATH)
    config: dict = {}
    if path.exists():
        with open(path, "rb") as f:
            config = tomllib.load(f)
    config.setdefault("host", {})
    if "PERFDECK_HOST_INTERVAL" in os.environ:
        config["host"]["interval"] = float(os.environ["PERFDECK_HOST_INTERVAL"])
    config["_path"] = str(path)
    store = config.get("store", {})
    unknown = set(store) - {"lake_data_path"}
    if unknown:
        raise ValueError(f"[store]: unknown keys {sorted(unknown)}; known: ['lake_data_path']")
    if store.get("lake_data_path") and not os.environ.get("PERFDECK_LAKE_DATA_PATH"):
        # Read from the environment where the lake is opened (collectors.store.lake), in this process
        # and in the dashboard it starts.
        os.environ["PERFDECK_LAKE_DATA_PATH"] = str(store["lake_data_path"])
    config.setdefault("advisor", {})
    if "PERFDECK_ADVISOR_INTERVAL" in os.environ:
        config["advisor"]["interval"] = float(os.environ["PERFDECK_ADVISOR_INTERVAL"])
    for key, env in (("redis", "PERFDECK_REDIS_URLS"), ("database", "PERFDECK_DATABASE_URLS")):
        config.setdefault(key, [])
        for item in filter(None, (u.strip() for u in os.environ.get(env, "").split(","))):
            name, sep, url = item.partition("=")
            if not sep or "://" in name:      # a bare URL (which may itself hold "=" in its query)
                name, url = _name_of(item), item
            config[key].append({"name": name.strip(), "url": url.strip()})
    return config


def _name_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.hostname or parts.path.rsplit('/', 1)[-1]}{parts.path if parts.hostname else ''}"


def build_samplers(config: dict) -> list:
    """Sampler objects for the config. Imports each sampler's library only when it is used."""
    samplers = []
    host = config.get("host", {})
    if host.get("enabled", True):
        from collectors.samplers.system import HostSampler
        samplers.append(HostSampler(interval=float(host.get("interval", 10)), processes=host.get("processes", [])))
    for kind, entry in [("redis", e) for e in config.get("redis", [])] + [("database", e) for e in config.get("database", [])]:
        try:
            if kind == "redis":
                from collectors.samplers.redis import RedisSampler
                samplers.append(RedisSampler(**entry))
            else:
                from collectors.samplers.database import DatabaseSampler
                samplers.append(DatabaseSampler(**{k: v for k, v in entry.items() if k != "advise"}))
        except Exception as exc:   # a URL its library cannot parse: the error quotes it, password and all
            from collectors.redact import redact
            raise ValueError(redact(f"[[{kind}]] {entry.get('name')!r}: {type(exc).__name__}: {exc}",
                                    str(entry.get("url", "")))) from None
    return samplers


ADVISED_DIALECTS = ("postgresql", "sqlite")


def advisor_targets(config: dict) -> list[tuple[str, str]]:
    """(name, url) of the databases the index advisor runs on: PostgreSQL and SQLite ones, unless
    `advise = false`."""
    from sqlalchemy.engine import make_url

    return [(e["name"], e["url"]) for e in config.get("database", [])
            if e.get("advise", True) and make_url(e["url"]).get_backend_name() in ADVISED_DIALECTS]


def advisor_interval(config: dict) -> float:
    return float(config.get("advisor", {}).get("interval", 3600))


def section(config: dict, name: str, env: dict[str, str]) -> dict:
    """Table [name] of a loaded config with its environment variables on top (env: key -> variable);
    a key that is not one of `env`'s is an error naming the known ones."""
    table = dict(config.get(name, {}))
    for key, var in env.items():
        if os.environ.get(var, "").strip():
            table[key] = os.environ[var].strip()
    unknown = set(table) - set(env)
    if unknown:
        raise ValueError(f"[{name}]: unknown keys {sorted(unknown)}; known: {sorted(env)}")
    return table


_COST_ENV = {"prices_file": "PERFDECK_PRICES_FILE", "daily_budget": "PERFDECK_DAILY_BUDGET",
             "monthly_budget": "PERFDECK_MONTHLY_BUDGET",
             "compute_usd_per_core_hour": "PERFDECK_COMPUTE_USD_PER_CORE_HOUR"}
# The target per request is the cost_per_query_usd threshold's (one level, one place): the old key says where.
_MOVED = ("[cost] target_per_query (or PERFDECK_TARGET_PER_QUERY) moved to the health thresholds: set target "
          "under [cost_per_query_usd] in thresholds.toml, or PERFDECK_COST_PER_QUERY_USD_TARGET")


@dataclass(frozen=True)
class CostSettings:
    prices_file: Path                        # price overrides (may not exist: then genai-prices alone)
    daily_budget: float | None = None        # USD; None: no budget
    monthly_budget: float | None = None
    compute_usd_per_core_hour: float | None = None   # None: cost per query is LLM spend alone


def cost_settings(config: dict) -> CostSettings:
    """The [cost] table, environment first. A relative prices_file is beside the config file."""
    if "target_per_query" in config.get("cost", {}) or os.environ.get("PERFDECK_TARGET_PER_QUERY", "").strip():
        raise ValueError(_MOVED)
    cost = section(config, "cost", _COST_ENV)

    def money(key: str) -> float | None:
        if cost.get(key) in (None, ""):
            return None
        try:
            value = float(cost[key])
        except (TypeError, ValueError):
            raise ValueError(f"[cost] {key} must be a number of dollars, got {cost[key]!r}") from None
        if not value >= 0 or value == float("inf"):
            raise ValueError(f"[cost] {key} must be a finite number >= 0, got {cost[key]!r}")
        return value

    prices = Path(cost.get("prices_file") or "prices.toml")
    if not prices.is_absolute():
        prices = Path(config.get("_path") or DEFAULT_PATH).parent / prices
    return CostSettings(prices, money("daily_budget"), money("monthly_budget"), money("compute_usd_per_core_hour"))


_SPAN = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|h|d)?$")
_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400, None: 1}


def span_seconds(value, what: str) -> float:
    """'30s', '5m', '2h', '1d' or a number -> seconds; an error naming `what` ("[ingest] max_age") otherwise."""
    m = _SPAN.match(str(value).strip().lower())
    if not m:
        raise ValueError(f"{what} must be a span like 30s, 5m or 2h, got {value!r}")
    return float(m.group(1)) * _SECONDS[m.group(2)]


_INGEST_ENV = {"max_future": "PERFDECK_INGEST_MAX_FUTURE", "max_age": "PERFDECK_INGEST_MAX_AGE"}


def ingest_limits(config: dict):
    """The [ingest] table as collectors.store.schema.Limits: the window of event times accepted."""
    from collectors.store.retention import retention_days
    from collectors.store.schema import Limits

    raw = section(config, "ingest", _INGEST_ENV)
    future = span_seconds(raw.get("max_future", "5m"), "[ingest] max_future")
    age = span_seconds(raw.get("max_age", f"{retention_days()['rollup']}d"), "[ingest] max_age")
    if age <= 0:
        raise ValueError(f"[ingest] max_age must be positive, got {raw['max_age']!r}")
    return Limits(max_future_s=future, max_age_s=age)


@dataclass(frozen=True)
class Transport:
    """Where the apps' batches arrive and where cache-clear commands go: one answer for what the collector
    reads, where the dashboard broadcasts and where `perfdeck deploy` sends. The spool folder always (a
    process on this machine may spool), the Redis stream when the apps ship through Redis."""

    spool: Path
    redis_url: str | None = None

    def channels(self) -> list[str]:
        return ([self.redis_url] if self.redis_url else []) + [f"spool:{self.spool}"]


def transport(config: dict | None = None, *, spool: str | os.PathLike | None = None,
              redis_url: str | None = None) -> Transport:
    """Resolved once, the first one given wins: the flags; $PERFDECK_SPOOL and $PERFDECK_REDIS; the SDK's
    $PERFDECK_TRANSPORT (spool:DIR or redis://...); [transport] in perfdeck.toml; the SDK's default
    data/spool. The spool path is made absolute."""
    table = dict((config or {}).get("transport", {}))
    unknown = set(table) - {"spool", "redis"}
    if unknown:
        raise ValueError(f"[transport]: unknown keys {sorted(unknown)}; known: ['redis', 'spool']")
    sdk_url = os.environ.get("PERFDECK_TRANSPORT", "").strip()
    sdk_redis = sdk_url if sdk_url.startswith(REDIS_SCHEMES) else None
    sdk_spool = sdk_url.removeprefix("spool:") if sdk_url and not sdk_redis else None
    folder = spool or os.environ.get("PERFDECK_SPOOL", "").strip() or sdk_spool or table.get("spool") or DEFAULT_SPOOL
    url = redis_url or os.environ.get("PERFDECK_REDIS", "").strip() or sdk_redis or table.get("redis") or None
    return Transport(Path(folder).resolve(), url)
