"""The `perfdeck` command, and the composition root: the only place (with the demo) that joins
collectors/ to dashboard/. Here: `main` and the commands that fit in a screen (collect, export, reprice,
advise, operator-hash, demo); compare/deploy, dashboard and health in their own modules; options.py what
they share; wiring.py the collector as perfdeck.toml describes it."""
from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

import click

from collectors import formatting as fmt
from collectors.cli.options import CONTEXT, db_option, format_option, parse_span, reading, since_option

__all__ = ["main", "parse_span"]

@click.group(context_settings=CONTEXT)
@click.option("-v", "--verbose", is_flag=True, help="Log debug messages.")
def main(verbose: bool) -> None:
    """perfdeck: latency, caches, cost and database health of your Python services, self-hosted."""
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")


@main.command(context_settings=CONTEXT)
@db_option
@click.option("--spool", "spool_dir", default=None,
              help="Spool directory to ingest (default $PERFDECK_SPOOL, the SDK's $PERFDECK_TRANSPORT, [transport] "
                   "in perfdeck.toml, else data/spool).")
@click.option("--redis", "redis_url", default=None,
              help="Also read the Redis stream transport at this URL (default $PERFDECK_REDIS, or the SDK's "
                   "$PERFDECK_TRANSPORT when it is a redis:// URL).")
@click.option("--consumer", default=None, envvar="PERFDECK_CONSUMER", metavar="NAME",
              help="This collector's name in the Redis stream's consumer group (default: the host name). Give "
                   "each collector sharing a stream its own, the same across its restarts.")
@click.option("--once", is_flag=True, help="Ingest everything pending, run rollups and retention, then exit.")
@click.option("--interval", default=1.0, show_default=True, help="Seconds between ingest ticks.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="What to watch: perfdeck.toml by default, or $PERFDECK_CONFIG.")
@click.option("--http", "http_listen", default=None, metavar="HOST:PORT",
              help="Serve GET /healthz, GET /metrics (Prometheus) and POST /v1/traces (OTLP/HTTP) on this address, "
                   "e.g. 127.0.0.1:9464 "
                   "(default $PERFDECK_HTTP_LISTEN, [http] listen in perfdeck.toml, else no listener). Any "
                   "address but loopback needs a bearer token: [http] token or $PERFDECK_HTTP_TOKEN.")
def collect(db, spool_dir, redis_url, consumer, once, interval, config_path, http_listen) -> None:
    """Run the collector daemon: the single writer of the store. It ingests what instrumented apps
    send, samples the host, Redis instances and databases named in perfdeck.toml, runs the index
    advisor on those databases hourly, and evaluates the alert rules every [alerts] interval. With
    --http it also answers /healthz (as `perfdeck health --json`) and /metrics for Prometheus, and takes
    OpenTelemetry traces (OTLP/HTTP) at /v1/traces."""
    from collectors import config
    from collectors.cli.health import assessment
    from collectors.cli.wiring import build_collector
    from collectors.http import Listener, http_settings
    from collectors.http.otlp import PATH, Receiver
    from collectors.pricing import PriceFileError
    from collectors.store import StoreLocked
    from collectors.store.lake import LakeUnavailable

    if consumer:
        os.environ["PERFDECK_CONSUMER"] = consumer       # read where the Redis source is made
    try:   # a broken prices, thresholds or [http] table stops the start with one clear line
        cfg = config.load(config_path)
        listen = http_settings(cfg, http_listen)
        window_s, assess = assessment(cfg) if listen else (None, None)
        collector = build_collector(cfg, db, sources=config.transport(cfg, spool=spool_dir, redis_url=redis_url),
                                    interval=interval)
    except (ValueError, PriceFileError, LakeUnavailable, StoreLocked) as exc:   # StoreUnavailable too
        raise click.ClickException(str(exc)) from None
    if once:
        try:
            report = collector.run_once()
        except RuntimeError as exc:
            raise click.ClickException(str(exc)) from None
        click.echo(f"ingested {report.batches} batches ({report.events} events), "
                   f"quarantined {report.quarantined}")
        return
    listener = None
    if listen:
        try:
            listener = Listener(listen, collector.db, health=assess, window_s=window_s)
            # OTLP traces become spool files the daemon ingests: it stays the store's one writer.
            receiver = Receiver(collector.sources[0].directory, collector.note, collector.db)
            listener.route("POST", PATH, receiver.handle, too_large=receiver.too_large)
            listener.start()
        except OSError as exc:
            raise click.ClickException(f"cannot listen on {listen.host}:{listen.port}: {exc.strerror or exc}") from None
    collector.install_signal_handlers()
    try:
        collector.run_forever()
    finally:
        if listener is not None:
            listener.stop()


EXPORTABLE = {
    "request_events": "ts", "latency_hist": "minute", "request_rollup": "minute", "cache_stats": "minute",
    "llm_calls": "ts", "llm_requests": "ts", "query_stats": "minute", "system_metrics": "ts", "redis_metrics": "ts",
    "deploys": "ts", "alerts": "started_at", "alert_notifications": "ts", "silences": "created_at",
    "cache_sizes": "minute", "action_audit": "ts", "quarantine": "ts",
    "ingest_rejects": "ts", "ingested_batches": "ingested_at", "sdk_health": "ts",
    "ingest_sources": "ts",
}


class _ExportGroup(click.Group):
    """`perfdeck export latency` is a computed report; any other name is a raw store table."""

    def list_commands(self, ctx):
        return super().list_commands(ctx) + sorted(EXPORTABLE)

    def get_command(self, ctx, name):
        return super().get_command(ctx, name) or (_table_command(name) if name in EXPORTABLE else None)


@main.group(cls=_ExportGroup, context_settings=CONTEXT)
def export() -> None:
    """Print store data as CSV or JSON: `latency`, `cost`, or any raw table by name."""


def _emit(df, fmt: str) -> None:
    if fmt == "json":
        click.echo(df.to_json(orient="records", date_format="iso", indent=1))
    else:
        click.echo(df.to_csv(index=False), nl=False)


@export.command("latency", context_settings=CONTEXT)
@db_option
@since_option
@click.option("--service", default=None, help="Only this service.")
@format_option
def export_latency(db, since, service, fmt) -> None:
    """Per-endpoint request count and p50/p95/p99 (ms) over a range, from the rollups."""
    from collectors.store import utcnow
    from dashboard.queries.latency import endpoint_percentiles

    until = utcnow()
    with reading(db) as con:
        df = endpoint_percentiles(con, since=until - since, until=until, service=service)
    _emit(df, fmt)




@export.command("cost", context_settings=CONTEXT)
@db_option
@click.option("--since", default="30d", show_default=True, callback=lambda _c, _p, v: parse_span(v),
              help="How far back: 24h, 7d, 30d, ...")
@click.option("--by", type=click.Choice(["endpoint", "model", "user", "day"]), default="endpoint",
              show_default=True, help="One row per endpoint, model, user or UTC day.")
@format_option
def export_cost(db, since, by, fmt) -> None:
    """LLM calls, tokens, spend and savings (USD) over a range, by endpoint, model, user or day.
    Unpriced calls are counted, never priced at zero."""
    from collectors.store import utcnow
    from dashboard.queries.cost import cost_export

    until = utcnow()
    with reading(db) as con:
        df = cost_export(con, since=until - since, until=until, by=by)
    _emit(df, fmt)


def _table_command(table: str) -> click.Command:
    @click.command(table, context_settings=CONTEXT)
    @db_option
    @since_option
    @click.option("--limit", default=100_000, show_default=True, help="At most this many rows.")
    @format_option
    def export_table(db, since, limit, fmt) -> None:
        from collectors.store import utcnow

        col = EXPORTABLE[table]  # table and column come from the allow-list, never from input
        with reading(db) as con:
            df = con.execute(f'SELECT * FROM "{table}" WHERE "{col}" >= ? ORDER BY "{col}" DESC LIMIT ?',
                             [utcnow() - since, limit]).df()
        _emit(df, fmt)

    export_table.help = f"Raw rows of the {table} table, newest first."
    return export_table


@main.command(context_settings=CONTEXT)
@db_option
@since_option
@click.option("--until", "until_ago", default="0s", show_default=True, callback=lambda _c, _p, v: parse_span(v),
              help="Up to this long ago.")
@click.option("--model", default=None, help="Only the calls of this model.")
@click.option("--config", "config_path", type=click.Path(dir_okay=False), default=None,
              help="perfdeck.toml whose [cost] names the price overrides file (default $PERFDECK_CONFIG).")
@click.option("--yes", is_flag=True, help="Apply without asking (the preview is still printed).")
def reprice(db, since, until_ago, model, config_path, yes) -> None:
    """Price the LLM calls of a range again with today's prices and overrides. Costs keep the price
    version they were computed with, so they never change on their own: run this after adding a model
    to the overrides file, or to move old calls to new prices. Prints a preview, asks, then writes the
    new costs and an audit row in one transaction."""
    import getpass
    import json
    import time

    from collectors import config
    from collectors.pricing import PriceBook, PriceFileError, apply_reprice, plan_reprice
    from collectors.store import StoreLocked, next_id, utcnow, write

    try:
        settings = config.cost_settings(config.load(config_path))
        book = PriceBook.load(settings.prices_file)
    except (ValueError, PriceFileError) as exc:
        raise click.ClickException(str(exc)) from None
    now = utcnow()
    start, end = now - since, now - until_ago
    with reading(db) as con:
        preview = plan_reprice(con, book, since=start, until=end, model=model)
    click.echo(f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"
               f"{f' ({model})' if model else ''}: {preview.summary()}")
    if not preview.changed:
        click.echo("nothing to change")
        return
    if not yes and not click.confirm("apply?", default=False):
        raise click.Abort()
    t0 = time.perf_counter()
    try:
        with write(db) as con:            # planned again inside the transaction: exactly what is written
            plan = plan_reprice(con, book, since=start, until=end, model=model)
            apply_reprice(con, plan)
            con.execute("""
                INSERT INTO action_audit (id, ts, actor, action, target, params, preview, outcome, duration_ms, result,
                                          figures)
                VALUES (?, ?, ?, 'reprice', 'store', ?, ?, 'ok', ?, ?, ?)
            """, [next_id(con, "action_audit"), utcnow(), f"cli:{getpass.getuser()}",
                  json.dumps({"since": str(start), "until": str(end), "model": model,
                              "prices_file": str(settings.prices_file)}),
                  preview.summary(), (time.perf_counter() - t0) * 1000, plan.summary(),
                  json.dumps({"calls": plan.calls, "changed": plan.changed,
                              "spend_before": str(plan.spend_before), "spend_after": str(plan.spend_after),
                              "unpriced_before": plan.unpriced_before, "unpriced_after": plan.unpriced_after})])
    except StoreLocked as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(f"repriced: {plan.summary()}")


def _advise_target(database: str) -> tuple[str, str | None]:
    """(url, configured name): `database` is a URL, or the name of a [[database]] in perfdeck.toml."""
    if "://" in database:
        return database, None
    from collectors import config

    for entry in config.load().get("database", []):
        if entry.get("name") == database:
            return entry["url"], database
    raise click.BadParameter(f"{database!r} is neither a URL nor a configured database name", param_hint="--db")


def _queries_from_file(stream, dialect: str) -> list[str]:
    import sqlglot

    try:
        return [s.sql(dialect=dialect) for s in sqlglot.parse(stream.read(), read=dialect) if s is not None]
    except sqlglot.errors.ParseError as exc:
        raise click.ClickException(f"{stream.name}: cannot parse: {str(exc).splitlines()[0]}") from None


def _print_report(report) -> None:
    from collectors.advisor.advise import METHOD_NAMES

    click.echo(f"{report.target}: {report.statements} statements, {report.analysed} with index candidates, "
               f"checked with {METHOD_NAMES[report.method]} in {report.seconds:.1f} s")
    for note in report.notes:
        click.echo(f"note: {note}")
    if not report.recommendations:
        click.echo("No index is worth creating.")
    for r in report.recommendations:
        click.echo(f"\n{r.create_sql};\n  estimated {r.est_improvement_pct:.0f} % cheaper, saves "
                   f"{fmt.duration(r.time_saved_ms_per_day / 1000)}/day over {fmt.count(r.calls_per_day)} calls/day, "
                   f"for {len(r.queries)} statement{'s' if len(r.queries) != 1 else ''}:")
        for q in r.queries:
            click.echo(f"    {q[:160]}")
    for f in report.findings:
        size = fmt.size(f.size_bytes) if f.size_bytes is not None else "size unknown"
        click.echo(f"\n{f.kind} index {f.index} on {f.table} ({', '.join(f.columns)}), {size}: {f.detail}\n  {f.drop_sql};")
    skipped = [o for o in report.outcomes if o.verdict == "none"]
    if skipped:
        click.echo(f"\nNo index for {len(skipped)} statement{'s' if len(skipped) != 1 else ''}:")
    for o in skipped:
        click.echo(f"    {o.statement.text[:100]}\n      {o.detail}")
    for text, reason in report.failed:
        click.echo(f"\nnot analysed ({reason}): {text[:160]}", err=True)


@main.command(context_settings=CONTEXT)
@click.option("--db", "database", required=True,
              help="The database to advise: a SQLAlchemy URL (postgresql://..., sqlite:///...) or a configured name.")
@click.option("--query", "queries", multiple=True, help="Advise on this statement instead of the workload (repeatable).")
@click.option("--queries-file", type=click.File(), default=None, help="Advise on the statements of this SQL file.")
@click.option("--store", type=click.Path(dir_okay=False), default=None,
              help="Also read what the SDK recorded in this store (default $PERFDECK_DB or data/perfdeck.duckdb).")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON list: recommendations, then unused and duplicate indexes.")
def advise(database, queries, queries_file, store, as_json) -> None:
    """Recommend indexes for a database's slow statements, validated with hypothetical indexes (hypopg),
    column statistics or SQLite query plans; list unused and duplicate indexes. Read-only."""
    import json

    from collectors.advisor.advise import Settings, dialect_of, store_workload
    from collectors.advisor.advise import advise as run_advisor
    from collectors.advisor.model import Statement
    from collectors.store import db_path
    from collectors.store.lake import LakeUnavailable

    url, target = _advise_target(database)
    try:
        dialect = dialect_of(url)
        settings = Settings.from_env()
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    texts = list(queries) + (_queries_from_file(queries_file, dialect) if queries_file else [])
    statements = [Statement(t, 1, 0.0, "given", key=t) for t in texts] or None
    recorded = []
    try:
        recorded_too = statements is None and db_path(store).exists()
    except LakeUnavailable as exc:        # a lake without its data path: one line, not a traceback
        raise click.ClickException(str(exc)) from None
    if recorded_too:
        with reading(store) as con:
            recorded = store_workload(con, url, target)
    try:
        report = run_advisor(url, statements, store_workload=recorded, settings=settings, target=target)
    except Exception as exc:   # unreachable database, missing file: one line, not a traceback
        raise click.ClickException(f"cannot advise on {target or database}: {str(exc).splitlines()[0]}") from None
    if as_json:
        click.echo(json.dumps(report.as_json(), indent=1))
    else:
        _print_report(report)


@main.command("operator-hash", context_settings=CONTEXT)
@click.option("--password-stdin", is_flag=True, help="Read the password from standard input instead of a prompt.")
def operator_hash(password_stdin) -> None:
    """Print the scrypt hash of an operator password, for PERFDECK_OPERATOR_PASSWORD_HASH or
    `operator_password_hash` under [perfdeck] in .streamlit/secrets.toml."""
    from dashboard.actions.access import hash_password

    if password_stdin:
        password = sys.stdin.readline().rstrip("\r\n")
    else:
        password = click.prompt("Operator password", hide_input=True, confirmation_prompt=True)
    if len(password) < 8:
        raise click.ClickException("use at least 8 characters")
    click.echo(hash_password(password))


@main.command(context_settings=CONTEXT)
@click.option("--data-dir", default="data/demo", show_default=True, type=click.Path(file_okay=False),
              help="Where the demo keeps its store, spool and SQLite database (never mixed with real data).")
@click.option("--port", type=int, default=None, help="Dashboard port (default $STREAMLIT_SERVER_PORT or 8501).")
@click.option("--days", default=4.0, show_default=True, help="Days of history to backfill in fast-forward.")
@click.option("--no-dashboard", is_flag=True, help="Run the workload and the collector only.")
@click.option("--no-auth", is_flag=True,
              help="With $STREAMLIT_SERVER_ADDRESS set to a non-loopback address: serve it with no viewer login.")
@click.option("--redis", "redis_url", default=None, metavar="URL",
              help="Also cache the shop's products in this Redis (keys demo_products:*) and sample it.")
@click.option("--postgres", "postgres_url", default=None, metavar="URL",
              help="Also read order histories from this PostgreSQL (schema perfdeck_demo), sample and advise it.")
@click.option("--db", "store", default=None, metavar="LAKE",
              help="Keep the demo's store here instead of in the data dir: a lake, ducklake:postgres:<conninfo> "
                   "with $PERFDECK_LAKE_DATA_PATH (see When one machine is not enough).")
def demo(data_dir, port, days, no_dashboard, no_auth, redis_url, postgres_url, store) -> None:
    """Backfill days of history from a real instrumented workload, keep it running live, collect it,
    and serve the dashboard on it (on 127.0.0.1; $STREAMLIT_SERVER_ADDRESS for other machines, which
    needs viewer login or --no-auth). Ctrl-C stops everything."""
    from collectors.cli.dashboard import exposure, resolve_address
    from collectors.demo.runner import run

    if not no_dashboard:       # refused before the backfill, not after it
        warning = exposure(resolve_address(None), no_auth)
        if warning:
            click.echo(f"perfdeck demo: {warning}", err=True)
    sys.exit(run(Path(data_dir), port=port, backfill_days=days, dashboard=not no_dashboard,
                 redis_url=redis_url, postgres_url=postgres_url, store=store))


# The dashboard's launch, health, alerts and regressions live in modules of their own; they import the
# shared options above.
from collectors.cli.alert_rules import alert_rules_command  # noqa: E402
from collectors.cli.compare import compare, deploy  # noqa: E402
from collectors.cli.dashboard import dashboard  # noqa: E402
from collectors.cli.health import health  # noqa: E402

for command in (dashboard, health, compare, deploy):
    main.add_command(command)
export.add_command(alert_rules_command)
