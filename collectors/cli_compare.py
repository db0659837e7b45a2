"""`perfdeck compare` (a latency regression gate for CI) and `perfdeck deploy` (a deploy marker from a
shell or a release pipeline).

    $ perfdeck deploy v1.9.0 --service shop-api
    $ perfdeck compare --deploy v1.9.0 --span 1h          # exit 1 when an endpoint regressed
    $ perfdeck compare --before -2h..-1h --after -1h..now --json
"""
from __future__ import annotations

import json
import os
import re
from datetime import datetime, timedelta, timezone

import click

from collectors.cli_options import CONTEXT, db_option, parse_span


class CompareError(click.ClickException):
    """Bad windows, no store, no data: exit 2, apart from exit 1 which means "regressed"."""

    exit_code = 2


def parse_time(text: str, now: datetime) -> datetime:
    """'now', '-90m', '-2h', '-1d' (before now) or an ISO datetime (UTC unless it names its zone) ->
    naive UTC."""
    text = text.strip()
    if text.lower() == "now":
        return now
    if text.startswith("-"):
        try:
            return now - parse_span(text[1:])
        except click.BadParameter:
            pass          # said below, with every form a time may take
    try:
        t = datetime.fromisoformat(text)
    except ValueError:
        raise CompareError(f"{text!r} is not a time: use an ISO datetime such as 2026-11-20T10:00 (UTC), "
                           f"'now', or a time before now such as -2h or -90m") from None
    return t.astimezone(timezone.utc).replace(tzinfo=None) if t.tzinfo else t


def parse_window(text: str, name: str, now: datetime) -> tuple[datetime, datetime]:
    """'A..B' -> (A, B), B after A."""
    if text.count("..") != 1:
        raise CompareError(f"--{name} must be START..END, e.g. -2h..-1h or 2026-11-20T10:00..2026-11-20T11:00; "
                           f"got {text!r}")
    start, end = (parse_time(part, now) for part in text.split(".."))
    if end <= start:
        raise CompareError(f"--{name} {text}: the end ({end:%Y-%m-%d %H:%M:%S}) must be after the start "
                           f"({start:%Y-%m-%d %H:%M:%S})")
    return start, end


def positive_span(text: str) -> timedelta:
    span = parse_span(text)
    if span <= timedelta(0):
        raise click.BadParameter("--span must be positive")
    return span


def _deploy(con, version: str, service: str | None, span: timedelta, now: datetime):
    from dashboard.queries.compare import deploy_windows

    found = deploy_windows(con, version=version, service=service, span=span, now=now)
    if found.empty:
        raise CompareError(f"no deploy of {version}" + (f" of {service}" if service else "") + " in the store")
    if found["service"].nunique() > 1:
        raise CompareError(f"{version} was deployed for several services ({', '.join(sorted(found['service']))}): "
                           f"name one with --service")
    return found.iloc[0]


def _table(df) -> str:
    from dashboard.queries.compare import fmt_ms, fmt_p, fmt_ratio

    several = df["service"].nunique() > 1
    head = ["endpoint", "before n", "after n", "p95 before", "p95 after", "p95 ratio [95 % CI]", "p", "verdict"]
    lines = []
    for r in df.itertuples(index=False):
        ci = f" [{fmt_ratio(r.ci_low)}–{fmt_ratio(r.ci_high)}]" if r.ci_low == r.ci_low else ""
        lines.append([f"{r.service} {r.endpoint}" if several else r.endpoint, f"{r.before_n:,}", f"{r.after_n:,}",
                      fmt_ms(r.before_p95_ms), fmt_ms(r.after_p95_ms), fmt_ratio(r.p95_ratio) + ci,
                      fmt_p(r.p_value).removeprefix("p ").removeprefix("= "), r.verdict])
    widths = [max(len(row[i]) for row in [head, *lines]) for i in range(len(head))]
    right = {1, 2, 3, 4}
    return "\n".join("  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
                     for row in [head, *lines])


def summary(df) -> str:
    from dashboard.queries.compare import describe

    bad = df[df["verdict"] == "regression"]
    if bad.empty:
        return f"No significant regression ({len(df)} endpoint{'s' if len(df) != 1 else ''} compared)."
    return (f"{len(bad)} endpoint{'s' if len(bad) != 1 else ''} regressed significantly; worst: "
            f"{describe(bad.iloc[0])}")


@click.command("compare", context_settings=CONTEXT)
@click.option("--before", default=None, metavar="A..B", help="Window before: ISO datetimes (UTC) or -2h..-1h.")
@click.option("--after", default=None, metavar="C..D", help="Window after, e.g. -1h..now.")
@click.option("--deploy", "version", default=None, help="Compare around this deploy instead of windows.")
@click.option("--span", default="1h", show_default=True, callback=lambda _c, _p, v: positive_span(v),
              help="With --deploy: the length of each window (30m, 1h, 6h, ...).")
@click.option("--service", default=None, help="Only this service (with --deploy: the deployed service).")
@click.option("--alpha", default=0.01, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              help="Significance level of the Mann–Whitney test (after slower).")
@click.option("--min-ratio", default=1.10, show_default=True, type=click.FloatRange(1),
              help="Smallest p95 ratio (after / before) that counts as a regression.")
@click.option("--min-requests", default=20, show_default=True, type=click.IntRange(1),
              help="Fewer requests than this in a window: not judged.")
@click.option("--json", "as_json", is_flag=True, help="Print the rows as JSON instead of a table.")
@db_option
def compare(before, after, version, span, service, alpha, min_ratio, min_requests, as_json, db) -> None:
    """Compare per-endpoint latency (p50/p95/p99, p95 ratio with a bootstrap 95 % CI, Mann–Whitney
    p-value) of two windows, or before/after a deploy. Exit 1 when an endpoint regressed
    significantly, 0 when none did, 2 on an error (bad windows, no store, no data)."""
    from collectors.store import StoreLocked, StoreMissing, read, utcnow
    from dashboard.queries.compare import compare_windows

    now = utcnow()
    if version and (before or after):
        raise click.UsageError("give either --deploy or --before and --after, not both")
    if not version and not (before and after):
        raise click.UsageError("give --before and --after (e.g. --before -2h..-1h --after -1h..now), or --deploy")
    try:
        with read(db) as con:
            if version:
                d = _deploy(con, version, service, span, now)
                windows = (d.before_start, d.before_end), (d.after_start, d.after_end)
                service = d.service
                title = f"{d.service} {d.version} deployed {d.ts:%Y-%m-%d %H:%M} UTC"
                if not d.complete:
                    title += f" (the after window is still open: {now - d.ts} of {span})"
            else:
                windows = parse_window(before, "before", now), parse_window(after, "after", now)
                title = service or "all services"
            df = compare_windows(con, before=windows[0], after=windows[1], service=service, min_requests=min_requests,
                                 alpha=alpha, min_ratio=min_ratio, now=now)
    except (StoreMissing, StoreLocked) as exc:
        raise CompareError(str(exc)) from None
    if df.empty:
        raise CompareError("no endpoint has requests in both windows"
                           + (f" for service {service}" if service else "") + ": nothing to compare")
    if as_json:
        # Through pandas' JSON (NaN -> null, numpy numbers) and back, to print it without escaped slashes.
        click.echo(json.dumps(json.loads(df.to_json(orient="records")), indent=1, ensure_ascii=False))
    else:
        (b0, b1), (a0, a1) = windows
        methods = " and ".join(sorted(set(df["method"])))
        click.echo(f"{title}: before {b0:%Y-%m-%d %H:%M:%S} .. {b1:%Y-%m-%d %H:%M:%S}, "
                   f"after {a0:%Y-%m-%d %H:%M:%S} .. {a1:%Y-%m-%d %H:%M:%S} UTC ({methods})")
        click.echo(_table(df))
        click.echo(summary(df))
    if (df["verdict"] == "regression").any():
        click.get_current_context().exit(1)


def _transport(spool: str | None, redis_url: str | None) -> str:
    if spool and redis_url:
        raise click.UsageError("give --spool or --redis, not both")
    if redis_url:
        return redis_url
    if not spool and os.environ.get("PERFDECK_REDIS"):
        return os.environ["PERFDECK_REDIS"]
    return "spool:" + (spool or os.environ.get("PERFDECK_SPOOL") or "data/spool")


@click.command("deploy", context_settings=CONTEXT)
@click.argument("version")
@click.option("--service", default=lambda: os.environ.get("PERFDECK_SERVICE"),
              help="The service deployed (default $PERFDECK_SERVICE).")
@click.option("--spool", default=None, help="Spool directory the collector ingests (default $PERFDECK_SPOOL, "
                                            "else data/spool).")
@click.option("--redis", "redis_url", default=None, help="Redis stream transport URL instead of the spool "
                                                         "(default $PERFDECK_REDIS when no --spool is given).")
def deploy(version, service, spool, redis_url) -> None:
    """Mark a deploy of VERSION now. It goes through the same transport as the SDK's events, so the
    collector records it; it appears on every time chart and in Compare."""
    from collectors import sdk

    if not service:
        raise click.UsageError("name the service deployed: --service NAME (or set $PERFDECK_SERVICE)")
    url = _transport(spool, redis_url)
    sdk.configure(service=service, transport=url, control=False, flush_interval=60.0)
    sdk.mark_deploy(version)
    sent = sdk.flush(timeout=10.0)
    sdk.shutdown(timeout=5.0)
    shown = re.sub(r"://[^@/]*@", "://***@", url)     # no password in a CI log
    if not sent:
        raise click.ClickException(f"could not hand the deploy marker to {shown}: is it reachable?")
    click.echo(f"queued deploy {service} {version} at {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC "
               f"to {shown}; the collector records it on its next tick")
