"""The SQL database sampler: catalogue and statistics views of a PostgreSQL or SQLite database.

    sampler = DatabaseSampler(name="app", url="postgresql+psycopg://app@127.0.0.1/app", interval=30)
    rows = sampler.collect(utcnow())      # [Rows("db_metrics", ...), Rows("pg_statements", ...)]
    sampler.capabilities()                # {"dialect": "postgresql", "pg_stat_statements": {...}}

It only runs its own catalogue/statistics queries (never SQL captured from the apps), through an
engine of one pooled connection with connect and statement timeouts. When the database is
unreachable `collect` raises and the daemon marks the component down. A missing optional feature
(pg_stat_statements not preloaded or not created, no dbstat in SQLite) degrades: the rest is still
sampled and `capabilities()` / the metric `pg_stat_statements.enabled` say what is missing.
Other dialects (MySQL/MariaDB: performance_schema digests are not done yet) are only checked for
reachability, so their component still goes up and down.

`db_metrics` rows are `(ts, target, name, labels, value)` where target is the sampler's name and
labels are `k=v` pairs joined by commas. The metric names, the dashboard's Database page reads these:

PostgreSQL
    pg_stat_statements.enabled   1 when the view is readable, else 0 (see pg_stat_statements_hint())
    database.size_bytes          pg_database_size of the current database          database=<db>
    cache.hit_ratio              blks_hit / (blks_hit + blks_read) since the stats reset   database=<db>
    cache.hit_ratio.interval     the same over the last interval (from the second sample on)  database=<db>
    connections                  client backends of the server by state (active, idle, ...)  state=<state>
    connections.max              max_connections
    table.seq_scan, table.seq_tup_read, table.idx_scan, table.n_live_tup, table.n_dead_tup
    table.n_mod_since_analyze    rows changed since the last analyze               table=<schema.name>
    table.idx_tup_fetch          live rows fetched by index scans (beside seq_tup_read: rows read by seq scans)
    table.size_bytes             pg_total_relation_size (heap + indexes + toast)
    table.heap_bytes             pg_relation_size of the heap alone
    table.bloat_bytes            estimated heap bytes beyond what the live rows need (NULL before ANALYZE)
    table.xid_age                age(relfrozenxid) of the table or its toast, the older (wraparound)
    table.last_vacuum, table.last_autovacuum, table.last_analyze, table.last_autoanalyze
                                 epoch seconds, NULL when never                    table=<schema.name>
    index.idx_scan, index.size_bytes       table=<schema.name>,index=<name>,unique=0|1,primary=0|1
    database.xid_age             age(datfrozenxid) of every database of the server   database=<db>
    setting.autovacuum_freeze_max_age     the server's setting (where anti-wraparound vacuums start)
    replication.standby          1 on a standby (in recovery), 0 on a primary
    replication.replicas         rows of pg_stat_replication (primary only)
    replication.lag_bytes, replication.replay_lag_s    per replica (primary)       replica=<name>
    replication.replay_delay_s   standby: seconds since the last replayed transaction, 0 when caught up
    pg_stat_statements.covered_s seconds this sample's pg_statements deltas cover: the interval since the
                                 last sample, or since pg_stat_statements_info.stats_reset (PG 14+) when
                                 it was reset in between; absent on the baseline sample
SQLite
    sqlite.file_size_bytes, sqlite.wal_size_bytes, sqlite.page_count, sqlite.page_size,
    sqlite.freelist_count
    table.rows                   exact COUNT(*), only for tables under COUNT_MAX_BYTES   table=<name>
    table.rows_estimate          from sqlite_stat1 (ANALYZE), for the tables too big to count
    table.size_bytes             from dbstat when SQLite has it and the file is under DBSTAT_MAX_BYTES
    index.info                   1 per index   table=<name>,index=<name>,unique=0|1,primary=0|1
    index.size_bytes             from dbstat, same labels as index.info

`pg_statements` rows are the deltas of pg_stat_statements between two samples for the current
database, summed per queryid over users: the first sample only sets the baseline; an entry that is
new, was reset or was evicted and re-created counts from zero (never a negative delta); only entries
with calls in the interval are written, the top TOP_STATEMENTS by total time. perfdeck's own
statements are left out: any text starting with "/* perfdeck" (the sampler's, the advisor's and the
dashboard's marks), and the few statements its drivers send on their own, which cannot carry a mark
(DRIVER_STATEMENTS: SQLAlchemy's first-connect checks, psycopg's type lookup).

`pg_activity` rows (PostgreSQL) are a snapshot of the live backends each sample: see
collectors.samplers.pg_depth."""
from __future__ import annotations

import os
from datetime import datetime

from sqlalchemy import create_engine, text
from sqlalchemy.engine import Connection, Engine, make_url
from sqlalchemy.exc import SQLAlchemyError

from collectors.redact import redact
from collectors.samplers import Rows, Sampler, pg_depth

METRICS = (
    "pg_stat_statements.enabled", "database.size_bytes", "cache.hit_ratio", "cache.hit_ratio.interval",
    "connections", "connections.max",
    "table.seq_scan", "table.seq_tup_read", "table.idx_scan", "table.n_live_tup", "table.n_dead_tup",
    "table.size_bytes", "table.last_vacuum", "table.last_autovacuum", "table.last_analyze",
    "table.last_autoanalyze", "index.idx_scan", "index.size_bytes",
    "sqlite.file_size_bytes", "sqlite.wal_size_bytes", "sqlite.page_count", "sqlite.page_size",
    "sqlite.freelist_count", "table.rows", "table.rows_estimate", "index.info",
    "table.n_mod_since_analyze", "table.idx_tup_fetch", "table.heap_bytes", "table.bloat_bytes", "table.xid_age",
    "database.xid_age",
    "setting.autovacuum_freeze_max_age", "replication.standby", "replication.replicas", "replication.lag_bytes",
    "replication.replay_lag_s", "replication.replay_delay_s", "pg_stat_statements.covered_s",
)
TOP_STATEMENTS = 200          # pg_statements rows per sample, by total time in the interval
MAX_TABLES = 1000             # largest tables (and their indexes) sampled per database
COUNT_MAX_BYTES = 64 << 20    # SQLite: COUNT(*) only tables up to this size
DBSTAT_MAX_BYTES = 1 << 30    # SQLite: dbstat reads every page, so only on files up to this size
CONNECT_TIMEOUT = 5           # seconds
STATEMENT_TIMEOUT_MS = 10_000
CONNECTION_STATES = ("active", "idle", "idle in transaction", "idle in transaction (aborted)")
_MARK = pg_depth.MARK  # on every statement we run, so ours are left out of pg_statements
_sql = pg_depth.marked
OWN_PREFIX = "/* perfdeck"         # the sampler's, the advisor's and the dashboard's marks
# What perfdeck's drivers send by themselves, with no way to mark it (seen in pg_stat_statements of a
# real server): SQLAlchemy's checks on a new engine's first connection and psycopg's type lookup.
DRIVER_STATEMENTS = frozenset({
    "select pg_catalog.version()", "select current_schema()", "show standard_conforming_strings",
    "show transaction isolation level",
})
_DRIVER_PREFIXES = ("SELECT typname AS name, oid, typarray AS array_oid, oid::regtype::text AS regtype",)
_TABLE_STATS = ("seq_scan", "seq_tup_read", "idx_scan", "n_live_tup", "n_dead_tup", "n_mod_since_analyze",
                "idx_tup_fetch")
_TABLE_TIMES = ("last_vacuum", "last_autovacuum", "last_analyze", "last_autoanalyze")


def pg_stat_statements_hint() -> str:
    """How to enable pg_stat_statements, as the dashboard shows it."""
    return ("enable pg_stat_statements like this: add shared_preload_libraries = 'pg_stat_statements' "
            "to postgresql.conf, restart, then CREATE EXTENSION pg_stat_statements;")


def perfdecks_own(query: str | None) -> bool:
    """Is this pg_stat_statements text one of perfdeck's own statements (see the module doc)?"""
    if query is None:
        return False
    query = query.lstrip()
    return query.startswith(OWN_PREFIX) or query in DRIVER_STATEMENTS or query.startswith(_DRIVER_PREFIXES)


def _labels(**kv) -> str:
    return ",".join(f"{k}={v}" for k, v in kv.items())


class DatabaseSampler(Sampler):
    kind = "database"

    def __init__(self, name: str, url: str, interval: float = 30, *, engine: Engine | None = None,
                 top_statements: int = TOP_STATEMENTS, max_tables: int = MAX_TABLES):
        self.name, self.interval = name, float(interval)
        self.url = make_url(url)
        self.target = redact(self.url)   # SQLAlchemy's hide_password leaves ?password=... in the query
        self.top_statements, self.max_tables = top_statements, max_tables
        self._own_engine = engine is None
        self.engine = engine or self._make_engine()
        self._caps: dict = {"dialect": self.url.get_backend_name()}
        self._pgss_base: dict | None = None        # (userid, queryid, toplevel) -> counters
        self._pgss_reset = None                     # pg_stat_statements_info.stats_reset at the baseline
        self._pgss_ts: datetime | None = None       # when the baseline counters were read
        self._texts: dict[int, str] = {}
        self._blks: tuple[int, int] | None = None   # (blks_hit, blks_read) at the last sample

    def _make_engine(self) -> Engine:
        backend = self.url.get_backend_name()
        kw: dict = {"pool_size": 1, "max_overflow": 0, "pool_pre_ping": True, "pool_recycle": 3600}
        if backend == "postgresql":
            args = {"connect_timeout": CONNECT_TIMEOUT, "application_name": "perfdeck-sampler",
                    "options": f"-c statement_timeout={STATEMENT_TIMEOUT_MS} -c lock_timeout=1000"}
            if self.url.get_driver_name() in ("psycopg2", "psycopg"):
                kw["connect_args"] = args
        elif backend in ("mysql", "mariadb"):
            kw["connect_args"] = {"connect_timeout": CONNECT_TIMEOUT}
        elif backend == "sqlite":
            path = self.url.database
            if not path or path == ":memory:":
                raise ValueError(f"database sampler {self.name}: needs a SQLite file, not {self.target}")
            import sqlite3
            # Read-only, and never create the file: a missing file is a down target.
            kw["creator"] = lambda: sqlite3.connect(f"file:{path}?mode=ro", uri=True,
                                                    timeout=CONNECT_TIMEOUT, check_same_thread=False)
        return create_engine(self.url, **kw)

    def close(self) -> None:
        if self._own_engine:
            self.engine.dispose()

    def capabilities(self) -> dict:
        """What this sampler can see, as of the last sample (`pg_stat_statements`: enabled, reason, hint)."""
        return dict(self._caps)

    def collect(self, now: datetime) -> list[Rows]:
        backend = self.engine.dialect.name
        if backend == "sqlite":
            return self._collect_sqlite(now)
        with self.engine.connect() as con:
            try:
                if backend == "postgresql":
                    return self._collect_postgresql(con, now)
                # Other dialects: reachability only (up/down), no statistics yet.
                con.execute(text("SELECT 1")).scalar()
                self._caps["statistics"] = f"no statistics for {backend} yet: only up/down is sampled"
                return []
            finally:
                con.rollback()

    # -- PostgreSQL ------------------------------------------------------------------------------
    def _collect_postgresql(self, con: Connection, now: datetime) -> list[Rows]:
        metrics: list[tuple] = []

        def add(name, labels, value):
            metrics.append((now, self.name, name, labels, None if value is None else float(value)))

        db, size, hit, read, max_conn = con.execute(_sql("""
            SELECT d.datname, pg_database_size(d.datname), d.blks_hit, d.blks_read,
                   current_setting('max_connections')::int
            FROM pg_stat_database d
            WHERE d.datname = current_database()
        """)).one()
        dbl = _labels(database=db)
        add("database.size_bytes", dbl, size)
        if hit + read > 0:
            add("cache.hit_ratio", dbl, hit / (hit + read))
        if self._blks is not None:
            dh, dr = hit - self._blks[0], read - self._blks[1]
            if dh >= 0 and dr >= 0 and dh + dr > 0:
                add("cache.hit_ratio.interval", dbl, dh / (dh + dr))
        self._blks = (hit, read)

        states = dict.fromkeys(CONNECTION_STATES, 0)
        for state, n in con.execute(_sql("""
            SELECT coalesce(state, 'unknown'), count(*)
            FROM pg_stat_activity
            WHERE backend_type = 'client backend'
            GROUP BY 1
        """)):
            states[state] = n
        for state, n in states.items():
            add("connections", _labels(state=state), n)
        add("connections.max", None, max_conn)

        cols = ", ".join(f"s.{c}" for c in _TABLE_STATS)
        times = ", ".join(f"extract(epoch FROM s.{c})" for c in _TABLE_TIMES)
        tables = con.execute(_sql(f"""
            SELECT s.relid, s.schemaname, s.relname, pg_total_relation_size(s.relid), {cols}, {times}
            FROM pg_stat_user_tables s
            ORDER BY pg_total_relation_size(s.relid) DESC
            LIMIT :n
        """), {"n": self.max_tables}).all()
        for relid, schema, rel, tsize, *values in tables:
            tl = _labels(table=f"{schema}.{rel}")
            add("table.size_bytes", tl, tsize)
            for col, v in zip(_TABLE_STATS + _TABLE_TIMES, values):
                add(f"table.{col}", tl, v)
        for schema, rel, idx, scans, isize, unique, primary in con.execute(_sql("""
            SELECT s.schemaname, s.relname, s.indexrelname, s.idx_scan, pg_relation_size(s.indexrelid),
                   i.indisunique, i.indisprimary
            FROM pg_stat_user_indexes s
            JOIN pg_index i ON i.indexrelid = s.indexrelid
            WHERE s.relid = ANY(:relids)
            ORDER BY s.schemaname, s.relname, s.indexrelname
        """), {"relids": [t[0] for t in tables]}):
            il = _labels(table=f"{schema}.{rel}", index=idx, unique=int(unique), primary=int(primary))
            add("index.idx_scan", il, scans)
            add("index.size_bytes", il, isize)

        self._guarded(con, "maintenance", lambda: pg_depth.maintenance(con, add, [t[0] for t in tables]))
        statements, covered = self._pg_statements(con, now)
        add("pg_stat_statements.enabled", None, int(statements is not None))
        if covered is not None:
            add("pg_stat_statements.covered_s", None, covered)
        activity = self._guarded(con, "activity", lambda: pg_depth.activity(con, now, self.name)) or []
        out = [Rows("db_metrics", metrics)]
        if statements:
            out.append(Rows("pg_statements", statements))
        if activity:
            out.append(Rows("pg_activity", activity))
        return out

    def _guarded(self, con: Connection, what: str, fn):
        """fn() in a savepoint: an error there (a permission, an old version) leaves the rest of the sample,
        and capabilities()[what] says why it is missing; None then."""
        con.execute(_sql(f"SAVEPOINT perfdeck_{what}"))
        try:
            out = fn()
            con.execute(_sql(f"RELEASE SAVEPOINT perfdeck_{what}"))
        except SQLAlchemyError as exc:
            con.execute(_sql(f"ROLLBACK TO SAVEPOINT perfdeck_{what}"))
            self._caps[what] = redact(f"not sampled: {type(exc).__name__}: {exc}", self.url).strip()[:300]
            return None
        self._caps.pop(what, None)
        return out

    def _pgss_capability(self, con: Connection) -> str | None:
        """None when pg_stat_statements is usable, else why not."""
        preload, ext = con.execute(_sql("""
            SELECT current_setting('shared_preload_libraries'),
                   (SELECT extversion FROM pg_extension WHERE extname = 'pg_stat_statements')
        """)).one()
        if "pg_stat_statements" not in [p.strip().strip('"') for p in preload.split(",")]:
            return "pg_stat_statements is not in shared_preload_libraries"
        if ext is None:
            return "the pg_stat_statements extension is not created in this database"
        return None

    def _pg_statements(self, con: Connection, now: datetime) -> tuple[list[tuple] | None, float | None]:
        """pg_statements rows for this interval ([] on the baseline sample), None when unavailable; and the
        seconds those rows cover (None on the baseline)."""
        reason = self._pgss_capability(con)
        rows = reset = None
        if reason is None:
            # A savepoint, so that an error here (permissions, an old version) spares the rest. Ours, with
            # the mark: SQLAlchemy's begin_nested() sends SAVEPOINT sa_savepoint_1 unmarked.
            con.execute(_sql("SAVEPOINT perfdeck_pgss"))
            try:
                new = con.dialect.server_version_info >= (13,)
                total = "total_exec_time" if new else "total_time"
                rows = con.execute(_sql(f"""
                    SELECT userid, queryid, {'toplevel' if new and con.dialect.server_version_info >= (14,)
                                             else 'true'}, calls, {total}, rows,
                           shared_blks_hit, shared_blks_read
                    FROM pg_stat_statements(false)
                    WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                      AND queryid IS NOT NULL
                """)).all()
                if con.dialect.server_version_info >= (14,):
                    reset = con.execute(_sql("SELECT stats_reset FROM pg_stat_statements_info")).scalar()
                con.execute(_sql("RELEASE SAVEPOINT perfdeck_pgss"))
            except SQLAlchemyError as exc:
                con.execute(_sql("ROLLBACK TO SAVEPOINT perfdeck_pgss"))
                reason = redact(f"pg_stat_statements is not readable: {type(exc).__name__}: {exc}", self.url).strip()[:300]
        self._caps["pg_stat_statements"] = {"enabled": reason is None, "reason": reason,
                                            "hint": None if reason is None else pg_stat_statements_hint()}
        if reason is not None:
            self._pgss_base = None
            return None, None
        current = {(u, q, t): (c, ms, r, h, rd) for u, q, t, c, ms, r, h, rd in rows}
        base, self._pgss_base = self._pgss_base, current
        was_reset, self._pgss_reset = base is not None and reset != self._pgss_reset, reset
        since, self._pgss_ts = self._pgss_ts, now
        if base is None:
            return [], None
        # What the deltas cover: since the last sample, or since the reset when there was one in between
        # (what ran before it in this interval is gone with it).
        start = since
        if was_reset and reset is not None:
            start = min(max(pg_depth._naive_utc(reset), since), now)
        covered = max(0.0, (now - start).total_seconds())
        deltas: dict[int, list] = {}
        for key, cur in current.items():
            prev = base.get(key)
            if was_reset or prev is None or cur[0] < prev[0]:
                prev = (0, 0.0, 0, 0, 0)            # new since the last sample, or reset/evicted since
            d = [c - p for c, p in zip(cur, prev)]
            if d[0] <= 0:
                continue
            acc = deltas.setdefault(key[1], [0, 0.0, 0, 0, 0])
            for i, v in enumerate(d):
                acc[i] += max(v, 0)
        top = sorted(deltas.items(), key=lambda kv: kv[1][1], reverse=True)
        texts = self._query_texts(con, [q for q, _ in top[:self.top_statements * 2]])
        out = []
        for qid, (calls, ms, nrows, hit, read) in top:
            query = texts.get(qid)
            if perfdecks_own(query):
                continue
            out.append((now, self.name, qid, query, calls, ms, nrows, hit, read))
            if len(out) >= self.top_statements:
                break
        return out, covered

    def _query_texts(self, con: Connection, queryids: list[int]) -> dict[int, str]:
        missing = [q for q in queryids if q not in self._texts]
        if missing:
            if len(self._texts) > 20_000:
                self._texts.clear()
            self._texts.update(con.execute(_sql("""
                SELECT DISTINCT ON (queryid) queryid, query
                FROM pg_stat_statements(true)
                WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                  AND queryid = ANY(:ids)
            """), {"ids": missing}).all())
        return {q: self._texts.get(q) for q in queryids}

    # -- SQLite ----------------------------------------------------------------------------------
    def _collect_sqlite(self, now: datetime) -> list[Rows]:
        path = self.url.database
        if not os.path.exists(path):
            raise FileNotFoundError(f"SQLite database {path} does not exist")
        metrics: list[tuple] = []

        def add(name, labels, value):
            metrics.append((now, self.name, name, labels, None if value is None else float(value)))

        file_size = os.path.getsize(path)
        add("sqlite.file_size_bytes", None, file_size)
        if os.path.exists(f"{path}-wal"):
            add("sqlite.wal_size_bytes", None, os.path.getsize(f"{path}-wal"))
        with self.engine.connect() as con:
            for pragma in ("page_count", "page_size", "freelist_count"):
                add(f"sqlite.{pragma}", None, con.execute(text(f"PRAGMA {pragma}")).scalar())
            tables = [r[0] for r in con.execute(text(
                "SELECT name FROM sqlite_schema WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name"))]
            sizes = self._sqlite_sizes(con, file_size)
            estimates = self._sqlite_estimates(con)
            for table in tables[:self.max_tables]:
                tl = _labels(table=table)
                size = sizes.get(table)
                if table in sizes:
                    add("table.size_bytes", tl, size)
                if (size is not None and size <= COUNT_MAX_BYTES) or (not sizes and file_size <= COUNT_MAX_BYTES):
                    quoted = '"' + table.replace('"', '""') + '"'
                    add("table.rows", tl, con.execute(text(f"SELECT count(*) FROM {quoted}")).scalar())
                elif table in estimates:
                    add("table.rows_estimate", tl, estimates[table])
                for _seq, index, unique, origin, _partial in con.execute(
                        text("SELECT * FROM pragma_index_list(:t) ORDER BY name"), {"t": table}):
                    il = _labels(table=table, index=index, unique=int(unique), primary=int(origin == "pk"))
                    add("index.info", il, 1)
                    if index in sizes:
                        add("index.size_bytes", il, sizes[index])
            con.rollback()
        self._caps["dbstat"] = bool(sizes)
        return [Rows("db_metrics", metrics)]

    @staticmethod
    def _sqlite_sizes(con: Connection, file_size: int) -> dict[str, int]:
        """Bytes per table and index from dbstat, or {} without dbstat or on a large file."""
        if file_size > DBSTAT_MAX_BYTES:
            return {}
        try:
            return dict(con.execute(text("SELECT name, sum(pgsize) FROM dbstat GROUP BY name")).all())
        except SQLAlchemyError:
            return {}

    @staticmethod
    def _sqlite_estimates(con: Connection) -> dict[str, int]:
        """Row estimates from sqlite_stat1 (written by ANALYZE): the first number of a table's stat."""
        try:
            rows = con.execute(text("SELECT tbl, stat FROM sqlite_stat1")).all()
        except SQLAlchemyError:
            return {}
        out = {}
        for tbl, stat in rows:
            first = (stat or "").split(" ", 1)[0]
            if first.isdigit():
                out[tbl] = max(out.get(tbl, 0), int(first))
        return out
