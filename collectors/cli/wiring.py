"""The composition root's one assembly: a collector as perfdeck.toml says, with the read layer's alert
evaluation wired in. `perfdeck collect` and `perfdeck demo` both run what build_collector returns; nothing
outside the command line and the demo joins collectors/ to dashboard/ (tests/test_import_rule.py)."""
from __future__ import annotations

import os

from collectors import config
from collectors.daemon import Collector
from collectors.health.alerts import from_config
from collectors.pricing import PriceBook
from collectors.store import connection
from dashboard.queries.health import alert_evaluation


def build_collector(cfg: dict, db: str | os.PathLike | None = None, *, sources: config.Transport | None = None,
                    interval: float = 1.0, advise_at_start: bool = True) -> Collector:
    """The collector for a loaded perfdeck.toml: its sources (default: collectors.config.transport), samplers,
    advisor targets, prices, ingest limits, and the alert engine with what it judges each tick. A broken
    prices, thresholds or [transport] table raises (ValueError, PriceFileError) before anything starts."""
    advise_every = config.advisor_interval(cfg)
    sources = sources or config.transport(cfg)
    return Collector(db, spool_dir=sources.spool, redis_url=sources.redis_url, interval=interval,
                     samplers=config.build_samplers(cfg), advise_every=advise_every,
                     advise=config.advisor_targets(cfg) if advise_every > 0 else [], advise_at_start=advise_at_start,
                     prices=PriceBook.load(config.cost_settings(cfg).prices_file),
                     alerts=from_config(connection.db_path(db), cfg), health=alert_evaluation(cfg),
                     limits=config.ingest_limits(cfg))
