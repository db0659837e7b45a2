"""`perfdeck compare` (a latency regression gate for CI) and `perfdeck deploy` (a deploy marker from a
shell or a release pipeline).

    $ perfdeck deploy v1.9.0 --service shop-api
    $ perfdeck compare --deploy v1.9.0 --span 1h          # exit 1 when an endpoint regressed
    $ perfdeck compare --before -2h..-1h --after -1h..now --json
    $ perfdeck compare --deploy v1.9.0 --format html --output compare.html   # a CI artifact

The verdict is the compare module's (dashboard.queries.compare): a regression when the whole 95 % CI
of an endpoint's p95 ratio lies above --min-ratio (×1.10).
"""
from __future__ import annotations

import html
import json
import math
import os
import re
from datetime import datetime, timedelta, timezone

import click

from collectors import formatting as fmt
from collectors.cli.options import CONTEXT, db_option, parse_span


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
    several = df["service"].nunique() > 1
    head = ["endpoint", "before n", "after n", "p95 before", "p95 after", "p95 ratio [95 % CI]", "body", "p",
            "verdict"]
    lines = []
    for r in df.itertuples(index=False):
        ci = "" if fmt.missing(r.ci_low) else f" [{fmt.ratio_range(r.ci_low, r.ci_high)}]"
        lines.append([f"{r.service} {r.endpoint}" if several else r.endpoint, fmt.count(r.before_n),
                      fmt.count(r.after_n), fmt.ms(r.before_p95_ms), fmt.ms(r.after_p95_ms), fmt.ratio(r.p95_ratio) + ci,
                      r.body if isinstance(r.body, str) else fmt.MISSING,
                      fmt.p_value(r.p_value).removeprefix("p ").removeprefix("= "), r.verdict])
    widths = [max(len(row[i]) for row in [head, *lines]) for i in range(len(head))]
    right = {1, 2, 3, 4}
    return "\n".join("  ".join(cell.rjust(w) if i in right else cell.ljust(w)
                               for i, (cell, w) in enumerate(zip(row, widths))).rstrip()
                     for row in [head, *lines])


def summary(df) -> str:
    from dashboard.queries.compare import describe

    bad = df[df["verdict"] == "regression"]
    so_far = " on the data so far (a window is still open)" if df["open"].any() else ""
    if bad.empty:
        return f"No significant regression{so_far} ({len(df)} endpoint{'s' if len(df) != 1 else ''} compared)."
    return (f"{len(bad)} endpoint{'s' if len(bad) != 1 else ''} regressed significantly{so_far}; worst: "
            f"{describe(bad.iloc[0])}")


# --- Reports: one self-contained file for a PR comment or a CI artifact ------------------------------
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|~])")


def md_text(text) -> str:
    """Text from the data as literal Markdown: specials backslash-escaped, <, > and & as entities, a
    zero-width space after a colon something follows (no autolinked URL), one line: no HTML, no
    links, no table breaks."""
    text = _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))
    text = text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
    return re.sub(r":(?=\S)", ":\u200b", text)


def _cells(df) -> tuple[list[str], list[list[str]]]:
    head = ["Service", "Endpoint", "Requests before", "Requests after", "p95 before", "p95 after", "p99 before",
            "p99 after", "p95 ratio", "95 % CI", "Body (Mann–Whitney)", "Verdict"]
    rows = [[r["service"], r["endpoint"], fmt.count(r["before_n"]), fmt.count(r["after_n"]),
             fmt.ms(r["before_p95_ms"]), fmt.ms(r["after_p95_ms"]), fmt.ms(r["before_p99_ms"]), fmt.ms(r["after_p99_ms"]),
             fmt.ratio(r["p95_ratio"]), fmt.ratio_range(r["ci_low"], r["ci_high"]),
             f"{r['body']}, {fmt.p_value(r['p_value'])}" if isinstance(r["body"], str) else fmt.MISSING, r["verdict"]]
            for r in df.to_dict("records")]
    return head, rows


def markdown_report(df, title: str, windows: str) -> str:
    from dashboard.queries.compare import RULE

    head, rows = _cells(df)
    lines = [f"### perfdeck compare: {md_text(title)}", "", f"**{md_text(summary(df))}**", "",
             windows, "",
             "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(md_text(c) for c in row) + " |" for row in rows]
    return "\n".join([*lines, "", RULE, ""])


VERDICT_COLOURS = {"regression": "#C73E1D", "improvement": "#3B8B3B", "no change": "#6C757D",
                   "too few requests": "#ADB5BD"}


def forest_svg(df, threshold: float) -> str:
    """An inline SVG forest plot: per endpoint its p95 ratio (dot) and 95 % CI (bar) on a log axis, the
    worst at the top, with lines at ×1 and at the threshold."""
    shown = df[df["p95_ratio"].notna() & (df["p95_ratio"] > 0)]
    label_w, plot_w, row_h, top = 260, 520, 26, 30
    height = top + row_h * max(len(shown), 1) + 40
    ends = [v for v in [*shown["p95_ratio"], *shown["ci_low"], *shown["ci_high"], 1.0, threshold]
            if v == v and v > 0]
    lo, hi = math.log(min(ends) / 1.15), math.log(max(ends) * 1.15)

    def x(v: float) -> float:
        return label_w + plot_w * (math.log(v) - lo) / (hi - lo)

    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{label_w + plot_w + 20}" height="{height}" '
             f'role="img" aria-label="p95 ratio with its 95 % confidence interval per endpoint" '
             f'font-family="sans-serif" font-size="12">']
    for v, dash in ((1.0, "2,3"), (threshold, "6,3")):
        parts.append(f'<line x1="{x(v):.1f}" x2="{x(v):.1f}" y1="{top - 10}" y2="{height - 30}" stroke="#555" '
                     f'stroke-dasharray="{dash}"/><text x="{x(v):.1f}" y="{height - 14}" text-anchor="middle">'
                     f'×{v:g}</text>')
    several = shown["service"].nunique() > 1
    for i, r in enumerate(shown.to_dict("records")):
        y = top + row_h * i + row_h / 2
        colour = VERDICT_COLOURS.get(r["verdict"], "#6C757D")
        name = f"{r['service']} {r['endpoint']}" if several else r["endpoint"]
        parts.append(f'<text x="{label_w - 8}" y="{y + 4:.1f}" text-anchor="end">{html.escape(name)}</text>')
        if r["ci_low"] == r["ci_low"] and r["ci_high"] == r["ci_high"]:
            parts.append(f'<line x1="{x(r["ci_low"]):.1f}" x2="{x(r["ci_high"]):.1f}" y1="{y:.1f}" y2="{y:.1f}" '
                         f'stroke="{colour}" stroke-width="3"/>')
        parts.append(f'<circle cx="{x(r["p95_ratio"]):.1f}" cy="{y:.1f}" r="5" fill="{colour}">'
                     f'<title>{html.escape(name)}: ×{r["p95_ratio"]:.2f} ({html.escape(r["verdict"])})</title>'
                     f'</circle>')
    parts.append("</svg>")
    return "".join(parts)


def html_report(df, title: str, windows: str, threshold: float) -> str:
    from dashboard.queries.compare import RULE

    head, rows = _cells(df)
    table = ("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr></thead><tbody>"
             + "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows)
             + "</tbody></table>")
    rule = html.escape(RULE).replace("**", "")
    bad = (df["verdict"] == "regression").any()
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>perfdeck compare: {html.escape(title)}</title><style>"
            "body{font-family:sans-serif;margin:1.5em;color:#222}table{border-collapse:collapse}"
            "td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}.bad{color:#C73E1D}.ok{color:#3B8B3B}"
            f"</style></head><body><h1>perfdeck compare: {html.escape(title)}</h1>"
            f'<p class="{"bad" if bad else "ok"}"><strong>{html.escape(summary(df))}</strong></p>'
            f"<p>{html.escape(windows)}</p>{forest_svg(df, threshold)}{table}<p>{rule}</p></body></html>\n")


def json_report(df) -> str:
    # Through pandas' JSON (NaN -> null, numpy numbers) and back, to print it without escaped slashes.
    return json.dumps(json.loads(df.to_json(orient="records")), indent=1, ensure_ascii=False)


@click.command("compare", context_settings=CONTEXT)
@click.option("--before", default=None, metavar="A..B", help="Window before: ISO datetimes (UTC) or -2h..-1h.")
@click.option("--after", default=None, metavar="C..D", help="Window after, e.g. -1h..now.")
@click.option("--deploy", "version", default=None, help="Compare around this deploy instead of windows.")
@click.option("--span", default="1h", show_default=True, callback=lambda _c, _p, v: positive_span(v),
              help="With --deploy: the length of each window (30m, 1h, 6h, ...).")
@click.option("--service", default=None, help="Only this service (with --deploy: the deployed service).")
@click.option("--alpha", default=0.01, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              help="Level of the Mann–Whitney test shown as the body column (it does not decide the verdict).")
@click.option("--min-ratio", default=1.10, show_default=True, type=click.FloatRange(1, min_open=True),
              help="Regression threshold: the whole 95 % CI of the p95 ratio (after / before) above it.")
@click.option("--min-requests", default=20, show_default=True, type=click.IntRange(1),
              help="Fewer requests than this in a window: not judged.")
@click.option("--format", "fmt", type=click.Choice(["text", "markdown", "html", "json"]), default=None,
              help="text (default), markdown (a PR comment), html (one self-contained file with a forest plot), "
                   "or json.")
@click.option("--json", "as_json", is_flag=True, help="The same as --format json.")
@click.option("--output", "-o", type=click.Path(dir_okay=False, writable=True), default=None,
              help="Write the report to this file instead of standard output (the exit code is the same).")
@db_option
def compare(before, after, version, span, service, alpha, min_ratio, min_requests, fmt, as_json, output,
            db) -> None:
    """Compare per-endpoint latency of two windows, or before/after a deploy: p50/p95/p99, the p95
    ratio with a bootstrap 95 % CI, and a Mann–Whitney test of the body. An endpoint regressed when
    the whole CI lies above --min-ratio (×1.10). Exit 1 when an endpoint regressed, 0 when none did,
    2 on an error (bad windows, no store, no data). A window still open is judged on the data so far."""
    from collectors.store import StoreLocked, StoreMissing, read, utcnow
    from collectors.store.lake import LakeUnavailable
    from dashboard.queries.compare import compare_windows

    now = utcnow()
    if as_json and fmt not in (None, "json"):
        raise click.UsageError(f"--json is --format json: not both it and --format {fmt}")
    fmt = "json" if as_json else fmt or "text"
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
                    title += (f" (the after window is still open: {(now - d.ts).total_seconds() / 60:.0f} of "
                              f"{span.total_seconds() / 60:.0f} min)")
            else:
                windows = parse_window(before, "before", now), parse_window(after, "after", now)
                title = service or "all services"
            df = compare_windows(con, before=windows[0], after=windows[1], service=service, min_requests=min_requests,
                                 alpha=alpha, min_ratio=min_ratio, now=now)
    except (StoreMissing, StoreLocked, LakeUnavailable) as exc:
        raise CompareError(str(exc)) from None
    if df.empty:
        raise CompareError("no endpoint has requests in both windows"
                           + (f" for service {service}" if service else "") + ": nothing to compare")
    (b0, b1), (a0, a1) = windows
    methods = " and ".join(sorted(set(df["method"])))
    span_text = (f"before {b0:%Y-%m-%d %H:%M:%S} .. {b1:%Y-%m-%d %H:%M:%S}, "
                 f"after {a0:%Y-%m-%d %H:%M:%S} .. {a1:%Y-%m-%d %H:%M:%S} UTC ({methods})")
    if fmt == "json":
        report = json_report(df)
    elif fmt == "markdown":
        report = markdown_report(df, title, span_text)
    elif fmt == "html":
        report = html_report(df, title, span_text, min_ratio)
    else:
        report = "\n".join([f"{title}: {span_text}", _table(df), summary(df)])
    if output:
        with open(output, "w", encoding="utf-8") as f:
            f.write(report if report.endswith("\n") else report + "\n")
        click.echo(f"{summary(df)} Report ({fmt}) written to {output}.", err=True)
    else:
        click.echo(report.rstrip("\n"))
    if (df["verdict"] == "regression").any():
        click.get_current_context().exit(1)


def _transport(spool: str | None, redis_url: str | None) -> str:
    """Where the collector reads (collectors.config.transport): its Redis stream when there is one."""
    from collectors import config

    if spool and redis_url:
        raise click.UsageError("give --spool or --redis, not both")
    found = config.transport(spool=spool, redis_url=redis_url)
    return found.redis_url if found.redis_url and not spool else f"spool:{found.spool}"


@click.command("deploy", context_settings=CONTEXT)
@click.argument("version")
@click.option("--service", default=lambda: os.environ.get("PERFDECK_SERVICE"),
              help="The service deployed (default $PERFDECK_SERVICE).")
@click.option("--spool", default=None, help="Spool directory the collector ingests (default: as `perfdeck collect` "
                                            "finds it).")
@click.option("--redis", "redis_url", default=None, help="Redis stream transport URL instead of the spool "
                                                         "(default: the collector's, when no --spool is given).")
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
