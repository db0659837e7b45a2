"""One advisor run on one database: workload in, recommendations and index findings out.

    report = advise("postgresql://app@db/app")                   # workload from pg_stat_statements
    report = advise("sqlite:///shop.db", store_workload=stmts)    # workload the SDK recorded
    report = advise(url, [Statement("SELECT ... WHERE a = $1", calls=1, total_ms=0)])

The method follows the database: PostgreSQL with hypopg installed -> hypothetical indexes; PostgreSQL
without it -> the statistics heuristic; SQLite -> query plans on an in-memory copy of the schema. On
PostgreSQL the columns come from the statement's plan (`plan.read`: through views, CTEs and
partitions) merged with its text. Every statement gets an `Outcome`: the index it wants, or why none
(reads only catalogues, no table, already cheap, no index cuts it enough), or why it could not be
analysed (unparsable, refused, the plan failed: also in `Report.failed`); one never stops the others.
See the README's "Index advisor" for the steps.
"""
from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from functools import partial
from pathlib import Path

from sqlalchemy.engine import make_url

from collectors.advisor import plan, workload
from collectors.advisor.candidates import Candidate, TableUse, candidates, candidates_for, columns_used, merge_uses, quote
from collectors.advisor.model import (
    DEFAULT_MIN_SHARE,
    MIN_TABLE_ROWS,
    Advice,
    IndexFinding,
    Recommendation,
    Statement,
)
from collectors.advisor.plan import MARK
from collectors.redact import redact
from collectors.store.connection import utcnow

CONNECT_TIMEOUT_S = 5
METHOD_NAMES = {"hypopg": "hypothetical indexes (hypopg)", "heuristic": "statistics heuristic",
                "sqlite-plan": "SQLite query plans"}


@dataclass(frozen=True)
class Settings:
    min_share: float = DEFAULT_MIN_SHARE      # the cost cut a candidate must bring
    min_base_cost: float = 1000.0             # hypopg: planner cost under which a statement is cheap
    min_rows: int = MIN_TABLE_ROWS            # heuristic / SQLite: smaller tables get no index
    min_ms_per_day: float = workload.MIN_MS_PER_DAY
    max_statements: int = workload.MAX_STATEMENTS

    @classmethod
    def from_env(cls, env=os.environ) -> Settings:
        """Defaults, each overridable by PERFDECK_ADVISOR_<NAME> (e.g. PERFDECK_ADVISOR_MIN_SHARE=0.3)."""
        kw = {}
        for name, default in cls.__dataclass_fields__.items():
            raw = env.get(f"PERFDECK_ADVISOR_{name.upper()}")
            if raw is not None:
                try:
                    kw[name] = type(default.default)(float(raw))
                except ValueError:
                    raise ValueError(f"PERFDECK_ADVISOR_{name.upper()}={raw!r} is not a number") from None
        return cls(**kw)


@dataclass(frozen=True)
class Outcome:
    """What the advisor made of one statement of the workload."""
    statement: Statement
    verdict: str               # "create" | "none" | "failed"
    detail: str                # the index wanted, or why none
    base_cost: float | None = None
    best_cost: float | None = None


@dataclass
class Report:
    target: str
    method: str
    statements: int = 0                      # in the workload, after dropping the cheap ones
    analysed: int = 0                        # that had candidates and went through the method
    recommendations: list[Recommendation] = field(default_factory=list)
    findings: list[IndexFinding] = field(default_factory=list)
    failed: list[tuple[str, str]] = field(default_factory=list)   # (statement, reason)
    outcomes: list[Outcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def as_json(self) -> list[dict]:
        """The recommendations, then the unused and duplicate indexes, each with its `kind`."""
        return ([{"kind": "create", **r.as_json()} for r in self.recommendations]
                + [f.as_json() for f in self.findings])


def dialect_of(url: str) -> str:
    backend = make_url(url).get_backend_name()
    if backend not in ("postgresql", "sqlite"):
        raise ValueError(f"the index advisor reads PostgreSQL and SQLite, not {backend}")
    return "postgres" if backend == "postgresql" else "sqlite"


@contextmanager
def connect(url: str) -> Iterator:
    """A psycopg connection (autocommit) or a read-only sqlite3 one, for the advisor's own reads."""
    parsed = make_url(url)
    if dialect_of(url) == "sqlite":
        path = parsed.database
        if not path or path == ":memory:" or not os.path.exists(path):
            raise FileNotFoundError(f"no SQLite database file at {path!r}")
        conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, timeout=CONNECT_TIMEOUT_S)
    else:
        import psycopg
        conninfo = parsed.set(drivername="postgresql").render_as_string(hide_password=False)
        conn = psycopg.connect(conninfo, autocommit=True, connect_timeout=CONNECT_TIMEOUT_S,
                               application_name="perfdeck-advisor")
    try:
        yield conn
    finally:
        conn.close()


def advise(url: str, statements: list[Statement] | None = None, *, store_workload: list[Statement] = (),
           settings: Settings | None = None, target: str | None = None) -> Report:
    """Run the advisor on the database at `url`; `statements` replace the workload when given."""
    settings = settings or Settings.from_env()
    started = time.monotonic()
    dialect = dialect_of(url)
    with connect(url) as conn:
        method = _Method(conn, dialect, settings)
        report = Report(target or redact(url), method.name)
        if statements is None:
            server = workload.from_pg_stat_statements(conn) if dialect == "postgres" else []
            statements = workload.merge(server, list(store_workload), min_ms_per_day=settings.min_ms_per_day,
                                        limit=settings.max_statements)
        report.statements = len(statements)
        if not method.hypothetical and dialect == "postgres":
            report.notes.append("hypopg is not installed in this database: estimates come from column "
                                "statistics (CREATE EXTENSION hypopg for cost-based validation)")
        advice = []
        for statement in statements:
            try:
                text = workload.prepare(statement.text, dialect)
                result, why = method.analyse(text, statement.queryids)
            except Exception as exc:   # one statement's failure never stops the others
                reason = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
                report.failed.append((statement.text, reason))
                report.outcomes.append(Outcome(statement, "failed", reason))
                continue
            report.analysed += result is not None
            if result is not None and result.best is not None:
                advice.append((statement, result))
                best = result.best
                why = f"{best.table} ({', '.join(best.columns)}): {100 * result.reduction:.0f} % cheaper"
            report.outcomes.append(Outcome(statement, "create" if result and result.best else "none", why,
                                           result and result.base_cost, result and result.best_cost))
        report.recommendations = [method.recommendation(*r) for r in _fold(advice)]
        report.findings = method.findings()
    report.seconds = time.monotonic() - started
    return report


def _on_relations(text_uses: list[TableUse], plan_uses: list[TableUse]) -> list[TableUse]:
    """The text's reading of the relations the plan reads, named as the plan names them (schema
    included); what the text names that the plan does not scan (a view, a CTE) is left out."""
    out = []
    for use in text_uses:
        match = next((p for p in plan_uses if p.table == use.table and use.schema in (None, p.schema)), None)
        if match is not None:
            out.append(TableUse(match.table, match.schema, use.equality, use.range, use.join, use.order))
    return out


def _fold(advice: list[tuple[Statement, Advice]]) -> list[tuple[Candidate, str, list[tuple[Statement, float]]]]:
    """Group the statements by the index they want; an index whose columns lead another one's on the
    same table is folded into it (one index on (a, b) serves the statements that want (a) too)."""
    groups: dict[Candidate, list[tuple[Statement, float]]] = {}
    methods: dict[Candidate, str] = {}
    for statement, a in advice:
        groups.setdefault(a.best, []).append((statement, a.reduction))
        methods[a.best] = a.method
    for short in sorted(groups, key=lambda c: len(c.columns)):
        longer = [c for c in groups if c != short and (c.schema, c.table) == (short.schema, short.table)
                  and c.columns[:len(short.columns)] == short.columns]
        if longer:
            groups[max(longer, key=lambda c: len(groups[c]))].extend(groups.pop(short))
    return [(c, methods[c], helped) for c, helped in groups.items()]


def index_name(table: str, columns: tuple[str, ...]) -> str:
    return f"ix_{table}_{'_'.join(columns)}".lower().replace(" ", "_")[:63]


class _Method:
    """The database-specific half: catalogue, validation, findings."""

    def __init__(self, conn, dialect: str, settings: Settings):
        self.conn, self.dialect = conn, dialect
        s = settings
        self.min_share, self.min_base_cost = s.min_share, s.min_rows
        if dialect == "sqlite":
            from collectors.advisor import sqlite_plan
            self.catalog, self.name, self.hypothetical = sqlite_plan, "sqlite-plan", False
            self._validate = partial(sqlite_plan.validate, min_share=s.min_share, min_rows=s.min_rows)
        else:
            from collectors.advisor import heuristic, hypopg, pg_catalog
            self.catalog = pg_catalog
            self.hypothetical = pg_catalog.hypopg_installed(conn)
            self.qualstats = pg_catalog.extension_installed(conn, "pg_qualstats")
            self.name = "hypopg" if self.hypothetical else "heuristic"
            if self.hypothetical:
                self.min_base_cost = s.min_base_cost
            self._validate = (partial(hypopg.validate, min_share=s.min_share, min_base_cost=s.min_base_cost)
                              if self.hypothetical else
                              partial(heuristic.choose, min_share=s.min_share, min_rows=s.min_rows))
        self.existing = self.catalog.existing_indexes(conn)

    def analyse(self, text: str, queryids: tuple[int, ...] = ()) -> tuple[Advice | None, str]:
        """The advice on one prepared statement (None when there was nothing to try) and, when no
        index is advised, why. `queryids`: what pg_qualstats saw the statement run is read too."""
        if self.dialect == "sqlite":
            found = candidates(text, self.dialect, self.existing)
            if not found:
                return None, "already indexed: no column it filters, joins or sorts on lacks an index"
            result = self._validate(self.conn, text, found)
            return result, "" if result.best else self._no_gain(result, [])
        with plan.session(self.conn) as cur:
            reading = plan.read(cur, text, plan.check_select(text))
        if not reading.uses:
            return None, ("reads only system catalogues" if reading.catalogs
                          else "reads no table (no index can help)")
        seen = self.catalog.qualstats_uses(self.conn, queryids) if self.qualstats and queryids else []
        uses = merge_uses(reading.uses, _on_relations(columns_used(text, "postgres") + seen, reading.uses))
        found = candidates_for(uses, self.existing)
        served = f"; the plan uses {', '.join(reading.indexes)}" if reading.indexes else ""
        if not found:
            return None, f"already indexed: no column it filters, joins or sorts on lacks an index{served}"
        result = self._validate(self.conn, text, found, uses=uses, existing=self.existing)
        return result, "" if result.best else self._no_gain(result, reading.indexes)

    def _no_gain(self, result: Advice, indexes: list[str]) -> str:
        served = f"; the plan uses {', '.join(indexes)}" if indexes else ""
        if result.base_cost < self.min_base_cost:
            unit = "rows read" if result.method != "hypopg" else "planner cost"
            return f"already cheap: {result.base_cost:,.0f} {unit}, under {self.min_base_cost:,.0f}{served}"
        best = min(result.trials, key=lambda t: t.cost, default=None)
        if best is None:
            return "no candidate could be tried: " + ", ".join(f"({', '.join(c.columns)})" for c in result.skipped)
        cut = 100 * (1 - best.cost / result.base_cost) if result.base_cost else 0
        return (f"no index cuts its cost by {100 * self.min_share:.0f} %: the best, {best.candidate.table} "
                f"({', '.join(best.candidate.columns)}), by {cut:.0f} %{served}")

    def schema_of(self, c: Candidate) -> str | None:
        """The schema an unqualified table resolves to on the search path (PostgreSQL)."""
        if c.schema or self.dialect == "sqlite":
            return c.schema
        row = self.conn.execute(MARK + "SELECT n.nspname FROM pg_class t JOIN pg_namespace n ON n.oid = t.relnamespace "
                                "WHERE t.oid = to_regclass(%s)", (quote(c.table),)).fetchone()
        return row[0] if row else None

    def _partitioned(self, table: str) -> bool:
        row = self.conn.execute(MARK + "SELECT relkind = 'p' FROM pg_class WHERE oid = to_regclass(%s)",
                                (table,)).fetchone()
        return bool(row and row[0])

    def recommendation(self, c: Candidate, method: str, helped: list[tuple[Statement, float]]) -> Recommendation:
        schema = self.schema_of(c)
        table = f"{quote(schema)}.{quote(c.table)}" if schema else quote(c.table)
        # a partitioned table takes no CONCURRENTLY: its index is built on every partition at once
        concurrently = "CONCURRENTLY " if self.dialect == "postgres" and not self._partitioned(table) else ""
        create = (f"CREATE INDEX {concurrently}{quote(index_name(c.table, c.columns))} ON {table} "
                  f"({', '.join(map(quote, c.columns))})")
        total_per_day = sum(s.total_ms / s.days for s, _ in helped)
        saved = sum(s.total_ms / s.days * cut for s, cut in helped)
        calls = sum(s.calls_per_day for s, _ in helped)
        weighted = saved / total_per_day if total_per_day else sum(cut for _, cut in helped) / len(helped)
        return Recommendation(c.table, schema, c.columns, create, method, 100 * weighted, saved, calls,
                              sum(s.total_ms for s, _ in helped) / max(sum(s.calls for s, _ in helped), 1),
                              [s.key or s.text for s, _ in helped])

    def findings(self) -> list[IndexFinding]:
        """Duplicate indexes, then unused ones that are not also duplicates (SQLite counts no usage)."""
        found = self.catalog.duplicate_indexes(self.conn)
        if self.dialect == "postgres":
            listed = {(f.schema, f.index) for f in found}
            found += [f for f in self.catalog.unused_indexes(self.conn) if (f.schema, f.index) not in listed]
        return found


def sdk_names(url: str, target: str | None = None) -> list[str]:
    """The `database` names the SDK may have recorded this database's statements under: the configured
    name, the URL's database, and for SQLite the file's name without its suffix."""
    database = make_url(url).database or ""
    names = [target, database, os.path.splitext(os.path.basename(database))[0]]
    return list(dict.fromkeys(n for n in names if n))


def store_workload(con, url: str, target: str | None, *, days: float = 7.0) -> list[Statement]:
    """What the SDK recorded for this database over the last `days` (a read connection to the store)."""
    until = utcnow()
    return workload.from_store(con, databases=sdk_names(url, target), since=until - timedelta(days=days), until=until)


def advisor_rows(report: Report, ts) -> list:
    """The store rows of one run: its `advisor_runs` line, its `index_advice` lines and what became of
    each statement (`advisor_statements`)."""
    from collectors.samplers import Rows

    notes = list(report.notes)
    if report.failed:
        notes.append(f"{len(report.failed)} statement(s) could not be analysed, e.g. {report.failed[0][1]}")
    run = (ts, report.target, report.method, report.statements, report.analysed, round(report.seconds, 3), None,
           "; ".join(notes) or None)
    advice = [(ts, report.target, "create", r.schema, r.table, None, list(r.columns), r.create_sql, r.method,
               r.est_improvement_pct, r.time_saved_ms_per_day, r.calls_per_day, r.mean_ms, r.queries, None, None)
              for r in report.recommendations]
    advice += [(ts, report.target, f.kind, f.schema, f.table, f.index, list(f.columns), f.drop_sql, None,
                None, None, None, None, None, f.size_bytes, f.detail) for f in report.findings]
    outcomes = [(ts, report.target, redact(o.statement.key or o.statement.text), o.verdict, redact(o.detail),
                 o.statement.calls_per_day, o.statement.total_ms / o.statement.days, o.base_cost, o.best_cost)
                for o in report.outcomes]
    return [Rows("advisor_runs", [run]), Rows("index_advice", advice), Rows("advisor_statements", outcomes)]
