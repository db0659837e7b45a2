"""What every `perfdeck` command shares: help flags, spans, the --db/--format/--since options and the
read-only store with its errors as one line. The command modules (health, compare, dashboard) import it;
the package (collectors/cli/__init__.py) holds `main` and registers them."""
from __future__ import annotations

import re
from contextlib import contextmanager
from datetime import timedelta

import click

CONTEXT = {"help_option_names": ["-h", "--help"]}
_SPAN = re.compile(r"^(\d+(?:\.\d+)?)\s*(s|m|min|h|d|w)$")
_UNITS = {"s": "seconds", "m": "minutes", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def parse_span(text: str) -> timedelta:
    """'15m', '24h', '7d' -> timedelta."""
    m = _SPAN.match(text.strip().lower())
    if not m:
        raise click.BadParameter(f"{text!r} is not a span like 15m, 24h or 7d")
    return timedelta(**{_UNITS[m.group(2)]: float(m.group(1))})


db_option = click.option("--db", type=click.Path(dir_okay=False), default=None,
                         help="Store file (default $PERFDECK_DB or data/perfdeck.duckdb), or a DuckLake: "
                              "ducklake:postgres:<libpq conninfo> with $PERFDECK_LAKE_DATA_PATH.")
format_option = click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv",
                             show_default=True, help="Output format.")
since_option = click.option("--since", default="24h", show_default=True, callback=lambda _c, _p, v: parse_span(v),
                            help="How far back: 15m, 24h, 7d, ...")


@contextmanager
def reading(db):
    """The store, read-only, with its errors as one clear line instead of a traceback."""
    from collectors.store import StoreLocked, StoreMissing, read
    from collectors.store.lake import LakeUnavailable

    try:
        with read(db) as con:
            yield con
    except (StoreMissing, StoreLocked, LakeUnavailable) as exc:
        raise click.ClickException(str(exc)) from None
