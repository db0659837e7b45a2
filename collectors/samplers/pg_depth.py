"""What a DBA compares with pghero, sampled by the database sampler on PostgreSQL each interval:
live activity (running, idle in transaction, waiting, who blocks whom and the locks involved), and
vacuum, freezing (transaction-ID wraparound), bloat and replication figures.

    rows = activity(con, now, target)          # pg_activity rows, perfdeck's own backends left out
    maintenance(con, add, relids)              # db_metrics through the sampler's add(name, labels, value)

Activity: client backends of the current database that are not idle, plus any idle one that blocks
another (a session advisory lock, say); never perfdeck's own (application_name starting "perfdeck").
Each row has its query duration and transaction age in seconds, `pg_blocking_pids()`, and the locks
that matter, in words: the ones it waits for, and the relation/advisory locks it holds on user
objects ("holds RowExclusiveLock on public.accounts", "waits for ShareLock on transaction 812").
Query texts are redacted (collectors.redact) and cut at MAX_QUERY characters. At most MAX_BACKENDS
rows per sample, the oldest transactions first.

Every statement carries the sampler's mark, so pg_stat_statements can tell them from the apps'."""
from __future__ import annotations

from datetime import datetime, timezone

from sqlalchemy import text
from sqlalchemy.engine import Connection

from collectors.redact import redact

MARK = "/* perfdeck sampler */"
MAX_BACKENDS = 200
MAX_QUERY = 2000
MAX_LOCKS = 20          # lock descriptions kept per backend
OWN_APP_PREFIX = "perfdeck"


def marked(body: str):
    """`body` as a SQLAlchemy text() that carries the sampler's mark."""
    return text(f"{MARK}\n{body}")


def _naive_utc(ts: datetime | None) -> datetime | None:
    if ts is None or ts.tzinfo is None:
        return ts
    return ts.astimezone(timezone.utc).replace(tzinfo=None)


def _labels(**kv) -> str:
    return ",".join(f"{k}={v}" for k, v in kv.items())


ACTIVITY_SQL = """
WITH a AS (
    SELECT pid, backend_start, usename::text AS usename, application_name, client_addr::text AS client_addr,
           state, wait_event_type, wait_event, query_start, xact_start,
           extract(epoch FROM clock_timestamp() - query_start) AS query_s,
           extract(epoch FROM clock_timestamp() - xact_start) AS xact_s,
           pg_blocking_pids(pid) AS blocked_by, query
    FROM pg_stat_activity
    WHERE datname = current_database()
      AND backend_type = 'client backend'
      AND pid <> pg_backend_pid()
      AND coalesce(application_name, '') NOT LIKE :own
)
SELECT pid, backend_start, usename, application_name, client_addr, state, wait_event_type, wait_event,
       query_start, xact_start, query_s, xact_s, blocked_by, query
FROM a
WHERE state IS DISTINCT FROM 'idle'
   OR pid IN (SELECT unnest(blocked_by) FROM a)
ORDER BY coalesce(xact_start, query_start) NULLS LAST, pid
LIMIT :n
"""

LOCKS_SQL = """
SELECT l.pid, l.granted, l.mode, l.locktype,
       CASE WHEN c.oid IS NOT NULL THEN quote_ident(n.nspname) || '.' || quote_ident(c.relname)
            WHEN l.locktype = 'transactionid' THEN 'transaction ' || l.transactionid::text
            WHEN l.locktype = 'advisory'
                 THEN 'advisory key ' || coalesce(l.classid::text, '') || '/' || coalesce(l.objid::text, '')
            ELSE l.locktype END AS what
FROM pg_locks l
LEFT JOIN pg_class c ON c.oid = l.relation
LEFT JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE l.pid = ANY(:pids)
  AND (NOT l.granted
       OR l.locktype = 'advisory'
       OR (l.locktype IN ('relation', 'tuple') AND n.nspname NOT IN ('pg_catalog', 'information_schema')
           AND n.nspname NOT LIKE 'pg\\_toast%'))
ORDER BY l.pid, l.granted, c.relname, l.mode
"""


def activity(con: Connection, now: datetime, target: str, *, limit: int = MAX_BACKENDS) -> list[tuple]:
    """pg_activity rows: (ts, target, pid, backend_start, usename, application_name, client_addr, state,
    wait_event_type, wait_event, query_start, xact_start, query_s, xact_s, blocked_by, locks, query)."""
    rows = con.execute(marked(ACTIVITY_SQL), {"own": OWN_APP_PREFIX + "%", "n": limit}).all()
    if not rows:
        return []
    locks: dict[int, list[str]] = {}
    for pid, granted, mode, _locktype, what in con.execute(marked(LOCKS_SQL), {"pids": [r[0] for r in rows]}):
        held = locks.setdefault(pid, [])
        if len(held) < MAX_LOCKS:
            held.append(f"{'holds' if granted else 'waits for'} {mode} on {what}")
    out = []
    for (pid, backend_start, user, app, client, state, wtype, wevent, qstart, xstart, query_s, xact_s,
         blocked_by, query) in rows:
        shown = None if query is None else redact(query)[:MAX_QUERY]
        out.append((now, target, pid, _naive_utc(backend_start), user, redact(app or "")[:200] or None, client,
                    state, wtype, wevent, _naive_utc(qstart), _naive_utc(xstart),
                    None if query_s is None else float(query_s), None if xact_s is None else float(xact_s),
                    list(blocked_by or []), locks.get(pid, []), shown))
    return out


# Heap bloat estimate, the way the common "table bloat" queries do it (ioguix): the pages the live rows
# need (a 24-byte tuple header, the mean width of the columns from pg_stats rounded up to 8 bytes, a
# 4-byte line pointer; pages of block_size - 24 bytes filled to the fillfactor) against the pages the
# table has. NULL until the table was analysed (no pg_stats, reltuples -1). An estimate: +-20 % is usual.
TABLES_SQL = """
WITH w AS (
    SELECT s.schemaname, s.tablename, sum((1 - s.null_frac) * s.avg_width) AS width
    FROM pg_stats s
    GROUP BY s.schemaname, s.tablename
), t AS (
    SELECT c.oid, n.nspname, c.relname, c.reltuples, c.relpages,
           greatest(age(c.relfrozenxid), age(x.relfrozenxid)) AS xid_age,
           pg_relation_size(c.oid) AS heap_bytes,
           current_setting('block_size')::int AS bs,
           coalesce((SELECT substring(o FROM 'fillfactor=(\\d+)')::int FROM unnest(c.reloptions) o
                     WHERE o LIKE 'fillfactor=%'), 100) AS ff,
           w.width
    FROM pg_class c
    JOIN pg_namespace n ON n.oid = c.relnamespace
    LEFT JOIN pg_class x ON x.oid = c.reltoastrelid
    LEFT JOIN w ON w.schemaname = n.nspname AND w.tablename = c.relname
    WHERE c.oid = ANY(:relids)
)
SELECT nspname, relname, xid_age, heap_bytes,
       CASE WHEN width IS NULL OR reltuples < 0 THEN NULL
            ELSE greatest(0, heap_bytes - bs * ceil(reltuples / greatest(1, floor((bs - 24) * ff / 100.0
                                                   / (24 + 8 * ceil(width / 8.0) + 4)))))::bigint
       END AS bloat_bytes
FROM t
"""

# pghero's dashboard flags a table once fewer than 1.5 billion transactions are left before the
# shutdown limit of 2^31 - 1,000,000 (2,146,483,648): an age of 646,483,648. That is the critical level;
# the warning starts at autovacuum_freeze_max_age (200 million by default), where PostgreSQL itself
# starts an anti-wraparound autovacuum (see dashboard.queries.pg_depth).
DATABASES_SQL = """
SELECT datname, age(datfrozenxid), current_setting('autovacuum_freeze_max_age')::bigint
FROM pg_database
WHERE datallowconn
ORDER BY datname
"""

REPLICATION_SQL = """
SELECT coalesce(nullif(application_name, ''), client_addr::text, 'pid ' || pid::text) AS replica,
       state,
       pg_wal_lsn_diff(pg_current_wal_lsn(), replay_lsn) AS lag_bytes,
       extract(epoch FROM replay_lag) AS replay_lag_s
FROM pg_stat_replication
ORDER BY 1
"""

# pghero's replica lag: 0 while the standby has replayed all it received, else the age of the last
# replayed transaction.
STANDBY_SQL = """
SELECT CASE WHEN pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn() THEN 0
            ELSE extract(epoch FROM clock_timestamp() - pg_last_xact_replay_timestamp()) END
"""


def maintenance(con: Connection, add, relids: list[int]) -> None:
    """Freezing, bloat and replication metrics through `add(name, labels, value)` (see the sampler's doc)."""
    for schema, rel, xid_age, heap, bloat in con.execute(marked(TABLES_SQL), {"relids": relids}):
        tl = _labels(table=f"{schema}.{rel}")
        add("table.xid_age", tl, xid_age)
        add("table.heap_bytes", tl, heap)
        add("table.bloat_bytes", tl, bloat)
    freeze_max = None
    for db, age, freeze_max in con.execute(marked(DATABASES_SQL)):
        add("database.xid_age", _labels(database=db), age)
    if freeze_max is not None:
        add("setting.autovacuum_freeze_max_age", None, freeze_max)
    standby = bool(con.execute(marked("SELECT pg_is_in_recovery()")).scalar())
    add("replication.standby", None, int(standby))
    if standby:
        add("replication.replay_delay_s", None, con.execute(marked(STANDBY_SQL)).scalar())
        return
    replicas = con.execute(marked(REPLICATION_SQL)).all()
    add("replication.replicas", None, len(replicas))
    for name, _state, lag_bytes, lag_s in replicas:
        rl = _labels(replica=str(name).replace(",", " ").replace("=", " "))
        add("replication.lag_bytes", rl, lag_bytes)
        add("replication.replay_lag_s", rl, lag_s)
