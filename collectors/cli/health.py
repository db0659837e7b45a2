"""`perfdeck health`: the current health in a terminal, and a performance gate for CI/CD (exit code 2
when a check is at or beyond --fail-on, or when nothing could be judged)."""
from __future__ import annotations

import json

import click

from collectors.cli.options import CONTEXT, db_option, reading
from collectors.health import SEVERITIES, target

EXIT_FAIL = 2
SHOWN_REASONS = 3


def _rows(lines: list[tuple], indent: str = "  ") -> list[str]:
    """Left-aligned columns; numbers (ints) right-aligned."""
    widths = [max(len(str(row[i])) for row in lines) for i in range(len(lines[0]))]
    out = []
    for row in lines:
        cells = [str(c).rjust(w) if isinstance(c, int) else str(c).ljust(w) for c, w in zip(row, widths)]
        out.append(indent + "  ".join(cells).rstrip())
    return out


def _window_seconds(_ctx, _param, value):
    from collectors.health.settings import seconds

    if value is None:
        return None
    try:
        return seconds(value, "window")
    except ValueError:   # not a usage error: exit code 2 is the gate's "failed"
        raise click.ClickException(f"--window: {value!r} is not a span like 5m, 15m or 1h") from None


def assessment(cfg: dict, window_s: float | None = None):
    """(window_s, assess): what `perfdeck health` and the collector's `/healthz` judge, from a loaded
    perfdeck.toml: the current health over `window_s` (default [alerts] window) with the [alerts]
    thresholds file and the [cost] budgets; assess(con, now) -> the assessed checks. A broken thresholds,
    [alerts] or [cost] table raises ValueError."""
    from collectors import config
    from collectors.health.settings import alert_settings
    from collectors.health.thresholds import load_thresholds
    from dashboard.queries.health import current_health

    settings = alert_settings(cfg)
    thresholds = load_thresholds(settings.thresholds_file)
    cost = config.cost_settings(cfg)
    window_s = window_s or settings.window_s

    def assess(con, now):
        return current_health(con, now=now, window_s=window_s, thresholds=thresholds, cost=cost)

    return window_s, assess


@click.command(context_settings=CONTEXT)
@db_option
@click.option("--window", default=None, callback=_window_seconds,
              help="How far back each check measures: 5m, 15m, 1h... (default [alerts] window, 5m).")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="perfdeck.toml with the [alerts] thresholds file and [cost] budgets (default $PERFDECK_CONFIG).")
@click.option("--json", "as_json", is_flag=True,
              help="Print {status, window_s, at, reasons, components, checks} as JSON.")
@click.option("--fail-on", type=click.Choice(SEVERITIES[1:]), default="critical", show_default=True,
              help="Exit with code 2 when any check is at least this severe.")
def health(db, window, config_path, as_json, fail_on) -> None:
    """Health of every measured thing (endpoints, jobs, caches, hosts, cost, components, ingest) over the
    last window, against the thresholds (packaged defaults, thresholds.toml, PERFDECK_<NAME>_<LEVEL>).
    Prints the overall status, each component's, then the checks that are not healthy. Exits 2 when a
    check is at or beyond --fail-on (critical by default), so it can gate a deploy; also when nothing
    could be judged (UNKNOWN): a gate that sees no data cannot vouch for anything."""
    import duckdb

    from collectors import config
    from collectors.health.assess import components, document, overall, passes
    from collectors.store import utcnow

    try:
        window_s, assess = assessment(config.load(config_path), window)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    now = utcnow().replace(microsecond=0)
    with reading(db) as con:
        try:
            checks = assess(con, now)
        except duckdb.CatalogException:
            raise click.ClickException("the store has not been initialised (run `perfdeck collect` once)") from None
    status, reasons = overall(checks)
    per_component = components(checks)

    if as_json:
        click.echo(json.dumps(document(checks, window_s=window_s, at=now), indent=1, ensure_ascii=False))
    else:
        minutes = f"{window_s / 60:g} min" if window_s >= 60 else f"{window_s:g} s"
        counted = f"{len(checks)} check" + ("" if len(checks) == 1 else "s")
        click.echo(f"{status.upper()}: {counted} over the last {minutes} to {now:%Y-%m-%d %H:%M:%S} UTC")
        for reason in reasons[:SHOWN_REASONS]:
            click.echo(f"  {reason}")
        if len(reasons) > SHOWN_REASONS:
            click.echo(f"  and {len(reasons) - SHOWN_REASONS} more")
        if not per_component.empty:
            click.echo("\ncomponents:")
            click.echo("\n".join(_rows([(r.component, r.severity, r.checks, r.reason)
                                        for r in per_component.itertuples()])))
        unhealthy = checks[checks["severity"] != "healthy"]
        if not unhealthy.empty:
            click.echo("\nnot healthy:")
            click.echo("\n".join(_rows([(r.severity, r.check, target(r.service, r.subject), r.message)
                                        for r in unhealthy.itertuples()])))
    if not passes(status, fail_on):
        click.get_current_context().exit(EXIT_FAIL)
