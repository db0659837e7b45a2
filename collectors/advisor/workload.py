"""The advisor's workload: which statements cost the database time, and the text to analyse for each.

Two sources, merged by SDK fingerprint (the same statement from both counts once, the server's figures
first because they cover every client):

- `from_pg_stat_statements`: the target's own view, normalized text ($1), calls and total execution
  time since the view was last reset (PostgreSQL 14+ says when; before that, since the server started);
- `from_store`: what the SDK's SQLAlchemy hook recorded in `query_stats` for that database, with the
  text as the driver received it (placeholders, or literals).

`prepare()` turns a captured text into what the parser and EXPLAIN accept: driver placeholders
(`%(name)s`, `%s`, `:name`, `?`, `$1`) rewritten to the dialect's own, and the WHERE of an UPDATE or
DELETE lifted into `SELECT 1 FROM table WHERE ...` (its parameters renumbered from $1), so that only a
SELECT is ever explained.
"""
from __future__ import annotations

import re
from dataclasses import replace
from datetime import datetime, timedelta

from sqlglot import exp

from collectors.advisor.candidates import parse
from collectors.advisor.model import Statement
from collectors.advisor.plan import MARK
from collectors.sdk.fingerprint import fingerprint

MAX_STATEMENTS = 100          # the most expensive ones; past that the tail is cheap anyway
MIN_MS_PER_DAY = 1000.0       # statements costing less than a second a day are not worth an index
# The shortest span calls are counted over: the time since a reset really covered (an hour's floor
# understated calls/day tenfold six minutes after a pg_stat_statements reset), never below a minute
MIN_DAYS = 1 / (24 * 60)
_STRING = re.compile(r"('(?:[^']|'')*')")
_PLACEHOLDER = re.compile(r"%\([A-Za-z_]\w*\)s|%s|\$\d+|\?\d*|(?<![:\w]):[A-Za-z_]\w*")
_ANALYSABLE = re.compile(r"^\s*(\(\s*)*(select|with|update|delete)\b", re.I)


def _rewrite_placeholders(text: str, dialect: str, *, renumber: bool = False) -> str:
    """Every driver placeholder as $1, $2, ... (postgres) or ? (sqlite); string literals untouched.
    `$n` ones are kept as they are, or numbered 1, 2, ... in order of appearance with `renumber`."""
    numbers: dict[str, int] = {}

    def one(m: re.Match) -> str:
        if dialect == "sqlite":
            return "?"
        token = m.group(0)
        if token.startswith("$") and not renumber:
            return token
        key = token if token not in ("%s", "?") else f"#{len(numbers)}"   # each bare one is a new parameter
        return f"${numbers.setdefault(key, len(numbers) + 1)}"

    parts = _STRING.split(text)   # odd items are string literals
    return "".join(p if i % 2 else _PLACEHOLDER.sub(one, p) for i, p in enumerate(parts))


def prepare(text: str, dialect: str) -> str:
    """The text to analyse: placeholders in the dialect's form, UPDATE/DELETE turned into the SELECT
    of their WHERE. ValueError when it is not one SELECT, UPDATE or DELETE the parser can read."""
    text = _rewrite_placeholders(text, dialect)
    tree = parse(text, "postgres" if dialect == "postgres" else "sqlite")
    if isinstance(tree, exp.Query):
        return text
    if not isinstance(tree, (exp.Update, exp.Delete)):
        raise ValueError(f"not a SELECT, UPDATE or DELETE: {type(tree).__name__}")
    where = tree.args.get("where")
    if where is None or tree.args.get("from_") or tree.args.get("from") or tree.args.get("using"):
        raise ValueError("an UPDATE/DELETE without WHERE, or joining other tables, has nothing one index answers")
    out = "postgres" if dialect == "postgres" else "sqlite"
    # the WHERE lifted out of `UPDATE t SET a = a + $1 WHERE id = $2` keeps only $2, and PREPARE cannot
    # tell the type of a $1 it never sees: its parameters are numbered again from $1
    return _rewrite_placeholders(exp.select("1").from_(tree.this).where(where.this).sql(dialect=out), dialect,
                                 renumber=True)



def from_pg_stat_statements(conn, *, limit: int = MAX_STATEMENTS, min_days: float = MIN_DAYS) -> list[Statement]:
    """The current database's most expensive SELECT/UPDATE/DELETE statements (a psycopg connection)."""
    with conn.cursor() as cur:
        cur.execute(MARK + "SELECT to_regclass('pg_stat_statements') IS NOT NULL")
        if not cur.fetchone()[0]:
            return []
        cur.execute(MARK + "SELECT to_regclass('pg_stat_statements_info') IS NOT NULL")   # PostgreSQL 14+
        cur.execute(MARK + "SELECT coalesce((SELECT stats_reset FROM pg_stat_statements_info), pg_postmaster_start_time())"
                    if cur.fetchone()[0] else MARK + "SELECT pg_postmaster_start_time()")
        since = cur.fetchone()[0]
        cur.execute(MARK + "SELECT now() - %s", (since,))
        days = max(cur.fetchone()[0] / timedelta(days=1), min_days)
        cur.execute(MARK + """
            SELECT query, sum(calls)::bigint, sum(total_exec_time), array_agg(DISTINCT queryid)
            FROM pg_stat_statements
            WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
              AND query ~* '^\\s*\\(*\\s*(select|with|update|delete)\\M'
              AND query !~* '\\m(pg_[a-z_]+|information_schema|hypopg[a-z_]*)\\M'   -- catalogues: no index to add
            GROUP BY query ORDER BY 3 DESC LIMIT %s
        """, (limit,))
        return [Statement(q, int(calls), float(ms), "pg_stat_statements", days, q, tuple(ids))
                for q, calls, ms, ids in cur]


def from_store(con, *, databases: list[str], since: datetime, until: datetime,
               limit: int = MAX_STATEMENTS) -> list[Statement]:
    """What the SDK recorded for these database names (a DuckDB connection to the store)."""
    rows = con.execute("""
        SELECT fingerprint, arg_max(sample_sql, minute), sum(calls), sum(total_ms), min(minute)
        FROM query_stats
        WHERE database IN (SELECT unnest(?)) AND minute >= ? AND minute < ?
        GROUP BY fingerprint ORDER BY 4 DESC LIMIT ?
    """, [databases, since, until, limit]).fetchall()
    out = []
    for key, sample, calls, total_ms, first in rows:
        if not _ANALYSABLE.match(sample or key):
            continue
        days = max((until - max(first, since)) / timedelta(days=1), MIN_DAYS)
        out.append(Statement(sample or key, int(calls), float(total_ms), "sdk", days, key))
    return out


def merge(*sources: list[Statement], min_ms_per_day: float = MIN_MS_PER_DAY,
          limit: int = MAX_STATEMENTS) -> list[Statement]:
    """One entry per fingerprint, the cheap ones dropped, most expensive first. The first source's
    figures win; a later source's text replaces a normalized one ($1), since the literals an app
    writes inline ('pending') tell the planner more than a generic parameter."""
    seen: dict[str, Statement] = {}
    for source in sources:
        for s in source:
            first = seen.setdefault(fingerprint(s.text), s)
            if first is not s and first.source == "pg_stat_statements" and s.source == "sdk":
                seen[fingerprint(s.text)] = replace(first, text=s.text)
    worth = [s for s in seen.values() if s.total_ms / s.days >= min_ms_per_day]
    return sorted(worth, key=lambda s: s.total_ms / s.days, reverse=True)[:limit]
