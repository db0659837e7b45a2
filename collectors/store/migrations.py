"""Named, recorded schema migrations. Each runs in the caller's transaction and is recorded in
`_migrations`; `migrate()` applies the ones not yet recorded, in order. Applied by the daemon and
the CLI, never by a dashboard page.

Conventions: timestamps are UTC `TIMESTAMP`s; `minute` columns hold the start of a UTC minute;
latency histograms hold log buckets (see collectors.store.histogram)."""
from __future__ import annotations

from collections.abc import Callable

import duckdb

from collectors.store import lake, llm_rollup, request_costs
from collectors.store.connection import utcnow
from collectors.store.rollups import roll_tiers


def m001_initial(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""
        CREATE TABLE request_events (
            ts TIMESTAMP NOT NULL,
            service VARCHAR NOT NULL,
            host VARCHAR,
            endpoint VARCHAR NOT NULL,
            method VARCHAR,
            status SMALLINT,
            duration_ms DOUBLE NOT NULL,
            request_id VARCHAR,
            tags JSON
        );
        -- Per-minute log-bucket histogram of request durations: percentiles over any range by summing.
        CREATE TABLE latency_hist (
            minute TIMESTAMP NOT NULL,
            service VARCHAR NOT NULL,
            endpoint VARCHAR NOT NULL,
            bucket INTEGER NOT NULL,
            count BIGINT NOT NULL
        );
        -- Per-minute request counters: rate, error rate and mean without touching raw events.
        CREATE TABLE request_rollup (
            minute TIMESTAMP NOT NULL,
            service VARCHAR NOT NULL,
            endpoint VARCHAR NOT NULL,
            requests BIGINT NOT NULL,
            errors BIGINT NOT NULL,
            duration_sum_ms DOUBLE NOT NULL,
            duration_max_ms DOUBLE NOT NULL
        );
        CREATE TABLE cache_stats (
            minute TIMESTAMP NOT NULL,
            service VARCHAR NOT NULL,
            host VARCHAR,
            cache VARCHAR NOT NULL,
            namespace VARCHAR,
            hits BIGINT NOT NULL,
            misses BIGINT NOT NULL,
            lookups_timed BIGINT NOT NULL,
            lookup_ms_sum DOUBLE NOT NULL,
            lookup_ms_max DOUBLE
        );
        CREATE TABLE llm_calls (
            ts TIMESTAMP NOT NULL,
            service VARCHAR NOT NULL,
            host VARCHAR,
            provider VARCHAR,
            model VARCHAR NOT NULL,
            input_tokens BIGINT NOT NULL,
            output_tokens BIGINT NOT NULL,
            cached_input_tokens BIGINT NOT NULL,
            request_id VARCHAR,
            endpoint VARCHAR,
            user_id VARCHAR,
            cache_hit BOOLEAN NOT NULL,
            latency_ms DOUBLE
        );
        CREATE TABLE query_stats (
            minute TIMESTAMP NOT NULL,
            service VARCHAR NOT NULL,
            database VARCHAR,
            fingerprint VARCHAR NOT NULL,
            sample_sql VARCHAR,
            calls BIGINT NOT NULL,
            total_ms DOUBLE NOT NULL,
            min_ms DOUBLE,
            max_ms DOUBLE
        );
        CREATE TABLE query_hist (
            minute TIMESTAMP NOT NULL,
            service VARCHAR NOT NULL,
            fingerprint VARCHAR NOT NULL,
            bucket INTEGER NOT NULL,
            count BIGINT NOT NULL
        );
        -- Long format so new samplers add metrics without migrations.
        CREATE TABLE system_metrics (
            ts TIMESTAMP NOT NULL,
            host VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            labels VARCHAR,
            value DOUBLE
        );
        CREATE TABLE redis_metrics (
            ts TIMESTAMP NOT NULL,
            instance VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            labels VARCHAR,
            value DOUBLE
        );
        CREATE TABLE ingested_batches (
            batch_id VARCHAR PRIMARY KEY,
            source VARCHAR NOT NULL,
            service VARCHAR,
            host VARCHAR,
            pid INTEGER,
            events BIGINT NOT NULL,
            ingested_at TIMESTAMP NOT NULL
        );
        CREATE TABLE deploys (
            ts TIMESTAMP NOT NULL,
            service VARCHAR NOT NULL,
            version VARCHAR NOT NULL,
            host VARCHAR
        );
        CREATE SEQUENCE alerts_id;
        CREATE TABLE alerts (
            id BIGINT PRIMARY KEY DEFAULT nextval('alerts_id'),
            rule VARCHAR NOT NULL,
            target VARCHAR NOT NULL,
            severity VARCHAR NOT NULL,
            state VARCHAR NOT NULL,
            value DOUBLE,
            message VARCHAR,
            started_at TIMESTAMP NOT NULL,
            resolved_at TIMESTAMP,
            notified_at TIMESTAMP
        );
        CREATE SEQUENCE action_audit_id;
        CREATE TABLE action_audit (
            id BIGINT PRIMARY KEY DEFAULT nextval('action_audit_id'),
            ts TIMESTAMP NOT NULL,
            actor VARCHAR NOT NULL,
            action VARCHAR NOT NULL,
            params JSON,
            preview VARCHAR,
            outcome VARCHAR NOT NULL,
            duration_ms DOUBLE,
            error VARCHAR
        );
        -- Whole batches that could not be read (the file itself goes to the quarantine folder).
        CREATE TABLE quarantine (
            ts TIMESTAMP NOT NULL,
            source VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            reason VARCHAR NOT NULL
        );
        -- Rows dropped from otherwise good batches, counted by reason.
        CREATE TABLE ingest_rejects (
            ts TIMESTAMP NOT NULL,
            batch_id VARCHAR,
            kind VARCHAR NOT NULL,
            reason VARCHAR NOT NULL,
            count BIGINT NOT NULL
        );
        -- What each instrumented process reports about itself (buffer drops, transport errors).
        CREATE TABLE sdk_health (
            ts TIMESTAMP NOT NULL,
            service VARCHAR NOT NULL,
            host VARCHAR,
            pid INTEGER,
            dropped BIGINT NOT NULL,
            send_errors BIGINT NOT NULL
        );
    """)


def m002_samplers(con: duckdb.DuckDBPyConnection) -> None:
    con.execute("""
        -- One row per watched component (a Redis, a database, the host): is it answering?
        CREATE TABLE components (
            name VARCHAR PRIMARY KEY,
            kind VARCHAR NOT NULL,
            target VARCHAR,
            status VARCHAR NOT NULL,
            since TIMESTAMP NOT NULL,
            last_ok TIMESTAMP,
            checked_at TIMESTAMP NOT NULL,
            error VARCHAR
        );
        CREATE TABLE redis_slowlog (
            instance VARCHAR NOT NULL,
            entry_id BIGINT NOT NULL,
            ts TIMESTAMP NOT NULL,
            duration_us BIGINT NOT NULL,
            command VARCHAR,
            client VARCHAR,
            PRIMARY KEY (instance, entry_id, ts)  -- ids restart from 0 when Redis restarts
        );
        -- Database samples in long format: table and index stats, connections, cache ratios.
        CREATE TABLE db_metrics (
            ts TIMESTAMP NOT NULL,
            target VARCHAR NOT NULL,
            name VARCHAR NOT NULL,
            labels VARCHAR,
            value DOUBLE
        );
        -- pg_stat_statements deltas between two samples.
        CREATE TABLE pg_statements (
            ts TIMESTAMP NOT NULL,
            target VARCHAR NOT NULL,
            queryid BIGINT,
            query VARCHAR,
            calls BIGINT NOT NULL,
            total_ms DOUBLE NOT NULL,
            rows BIGINT,
            shared_blks_hit BIGINT,
            shared_blks_read BIGINT
        );
    """)


def m003_action_results(con: duckdb.DuckDBPyConnection) -> None:
    # An action's target ("redis:cache", "database:shop", "store") and what it did, for the audit log.
    con.execute("""
        ALTER TABLE action_audit ADD COLUMN target VARCHAR;
        ALTER TABLE action_audit ADD COLUMN result VARCHAR;
        ALTER TABLE action_audit ADD COLUMN figures JSON;
    """)


def m004_index_advice(con: duckdb.DuckDBPyConnection) -> None:
    # What each advisor run found for one database: indexes to create, unused and duplicate ones.
    con.execute("""
        CREATE TABLE advisor_runs (
            ts TIMESTAMP NOT NULL,
            target VARCHAR NOT NULL,
            method VARCHAR,             -- hypopg | heuristic | sqlite-plan
            statements INTEGER,         -- in the workload
            analysed INTEGER,           -- worth a look (not cheap, parsable, a SELECT/UPDATE/DELETE)
            seconds DOUBLE,
            error VARCHAR,
            notes VARCHAR
        );
        CREATE TABLE index_advice (
            ts TIMESTAMP NOT NULL,      -- the run (advisor_runs.ts)
            target VARCHAR NOT NULL,
            kind VARCHAR NOT NULL,      -- create | unused | duplicate
            table_schema VARCHAR,
            table_name VARCHAR NOT NULL,
            index_name VARCHAR,         -- the existing index (unused, duplicate)
            columns VARCHAR[] NOT NULL,
            statement VARCHAR NOT NULL, -- CREATE INDEX ... / DROP INDEX ...
            method VARCHAR,
            est_improvement_pct DOUBLE,
            time_saved_ms_day DOUBLE,
            calls_day DOUBLE,
            mean_ms DOUBLE,
            queries VARCHAR[],          -- keys of the statements it helps (query_stats.fingerprint, pg_statements.query)
            size_bytes BIGINT,
            detail VARCHAR
        );
    """)


def m005_llm_costs(con: duckdb.DuckDBPyConnection) -> None:
    # Each LLM call is priced once, on ingest, and keeps the price version it was priced with, so
    # old costs never change when prices update (`perfdeck reprice` recomputes a range on purpose).
    # Money is DECIMAL: sums of millions of sub-cent costs stay exact.
    con.execute("""
        ALTER TABLE llm_calls ADD COLUMN cache_write_tokens BIGINT DEFAULT 0; -- part of input_tokens, like cached ones
        ALTER TABLE llm_calls ADD COLUMN input_cost_usd DECIMAL(18, 12);   -- what was paid; 0 for a cache hit
        ALTER TABLE llm_calls ADD COLUMN output_cost_usd DECIMAL(18, 12);
        ALTER TABLE llm_calls ADD COLUMN cost_usd DECIMAL(18, 12);         -- NULL: unpriced (unknown model)
        ALTER TABLE llm_calls ADD COLUMN saved_usd DECIMAL(18, 12);        -- what caching saved on this call
        ALTER TABLE llm_calls ADD COLUMN price_version VARCHAR;            -- "genai-prices 0.2.3", "override ..."
        ALTER TABLE llm_calls ADD COLUMN priced_at TIMESTAMP;
    """)


def m006_alerting(con: duckdb.DuckDBPyConnection) -> None:
    # An alert is one row from firing to resolved, whatever its severity did in between: `severity`
    # is the highest it reached. Notifications and silences keep the history Alertmanager does not.
    con.execute("""
        ALTER TABLE alerts ADD COLUMN service VARCHAR;           -- the target's service, when it has one
        ALTER TABLE alerts ADD COLUMN subject VARCHAR;           -- endpoint, cache, host, budget...
        ALTER TABLE alerts ADD COLUMN threshold DOUBLE;          -- the level crossed when it fired
        ALTER TABLE alerts ADD COLUMN peak_value DOUBLE;         -- worst value seen while firing
        ALTER TABLE alerts ADD COLUMN updated_at TIMESTAMP;      -- last evaluation that saw it
        ALTER TABLE alerts ADD COLUMN silenced BOOLEAN DEFAULT false;
        ALTER TABLE alerts ADD COLUMN notifications INTEGER DEFAULT 0;
        CREATE SEQUENCE silences_id;
        CREATE TABLE silences (
            id BIGINT PRIMARY KEY DEFAULT nextval('silences_id'),
            rule VARCHAR NOT NULL,          -- a check name, or '*' for every rule
            target VARCHAR,                 -- NULL: every target of the rule
            starts_at TIMESTAMP NOT NULL,
            ends_at TIMESTAMP NOT NULL,
            reason VARCHAR,
            created_by VARCHAR NOT NULL,
            created_at TIMESTAMP NOT NULL,
            cancelled_at TIMESTAMP
        );
        -- One row per notification sent (or given up on): a dead letter is outcome 'dead_letter'.
        CREATE TABLE alert_notifications (
            ts TIMESTAMP NOT NULL,
            channel VARCHAR NOT NULL,       -- webhook | log
            kind VARCHAR NOT NULL,          -- firing | escalated | resolved
            alerts INTEGER NOT NULL,        -- how many alerts the (grouped) message carried
            alert_ids BIGINT[],
            outcome VARCHAR NOT NULL,       -- delivered | dead_letter | logged
            attempts INTEGER NOT NULL,
            error VARCHAR
        );
        -- Entries held by an app's in-process caches (sdk.register_cache(..., size=len)), per minute.
        CREATE TABLE cache_sizes (
            minute TIMESTAMP NOT NULL,
            service VARCHAR NOT NULL,
            host VARCHAR,
            cache VARCHAR NOT NULL,
            entries BIGINT NOT NULL
        );
    """)


def m007_pipeline_health(con: duckdb.DuckDBPyConnection) -> None:
    # Every loss between an app and the store is visible: what each SDK refused at record time (by
    # reason, cumulative per process like dropped), and what each source holds and how old it is.
    con.execute("""
        ALTER TABLE sdk_health ADD COLUMN rejected BIGINT DEFAULT 0;   -- events the SDK refused (non-finite...)
        ALTER TABLE sdk_health ADD COLUMN rejected_reasons JSON;       -- {"queries:non_finite_duration": 3}
        -- One row per source every few seconds, from the collector: its backlog, and that it is alive.
        CREATE TABLE ingest_sources (
            ts TIMESTAMP NOT NULL,
            source VARCHAR NOT NULL,        -- spool:<dir> | redis:<stream>
            pending BIGINT,                 -- batches waiting (spool files; stream entries not yet read)
            oldest_pending_s DOUBLE,        -- age of the oldest waiting batch: the ingest lag
            stream_length BIGINT,           -- Redis: XLEN of the stream
            stream_pending BIGINT,          -- Redis: delivered to a collector, not yet acknowledged
            error VARCHAR                   -- why the source could not be read, when it could not
        );
    """)


def m008_alert_peak_severity(con: duckdb.DuckDBPyConnection) -> None:
    # An alert row says one thing: severity, value, threshold and message are the latest evaluation's,
    # and the worst moment has columns of its own. Until now `severity` held the highest reached, so it
    # is the peak of the rows written before.
    con.execute("""
        ALTER TABLE alerts ADD COLUMN peak_severity VARCHAR;     -- worst severity reached while firing
        UPDATE alerts SET peak_severity = severity;
    """)


def m009_rollup_tiers(con: duckdb.DuckDBPyConnection) -> None:
    # Hourly and daily merges of the per-minute request rollups, so a long range reads a few rows per
    # series (collectors.store.tiers). Same columns as the minute tables, keyed by the period's start;
    # the backfill merges the complete hours and days of the minutes already stored.
    con.execute("""
        CREATE TABLE latency_hist_hour (
            hour TIMESTAMP NOT NULL,
            service VARCHAR NOT NULL,
            endpoint VARCHAR NOT NULL,
            bucket INTEGER NOT NULL,
            count BIGINT NOT NULL
        );
        CREATE TABLE latency_hist_day (
            day TIMESTAMP NOT NULL,
            service VARCHAR NOT NULL,
            endpoint VARCHAR NOT NULL,
            bucket INTEGER NOT NULL,
            count BIGINT NOT NULL
        );
        CREATE TABLE request_rollup_hour (
            hour TIMESTAMP NOT NULL,
            service VARCHAR NOT NULL,
            endpoint VARCHAR NOT NULL,
            requests BIGINT NOT NULL,
            errors BIGINT NOT NULL,
            duration_sum_ms DOUBLE NOT NULL,
            duration_max_ms DOUBLE NOT NULL
        );
        CREATE TABLE request_rollup_day (
            day TIMESTAMP NOT NULL,
            service VARCHAR NOT NULL,
            endpoint VARCHAR NOT NULL,
            requests BIGINT NOT NULL,
            errors BIGINT NOT NULL,
            duration_sum_ms DOUBLE NOT NULL,
            duration_max_ms DOUBLE NOT NULL
        );
        -- "hour"/"day": the tier holds every period before ts; "minute_purge": minutes before ts were purged.
        CREATE TABLE rollup_watermarks (
            name VARCHAR PRIMARY KEY,
            ts TIMESTAMP NOT NULL
        );
    """)
    # The backfill (roll_tiers) runs in m012, once every table of the tiers exists.


def m010_llm_requests(con: duckdb.DuckDBPyConnection) -> None:
    # Per-request LLM cost kept at ingest (collectors.store.request_costs), so the Cost page does not
    # join raw events to calls over a range; filled from the calls already stored.
    con.execute("""
        CREATE TABLE llm_requests (
            request_id VARCHAR PRIMARY KEY,
            ts TIMESTAMP NOT NULL,              -- its request event's time, else its first call's
            first_call_ts TIMESTAMP NOT NULL,
            service VARCHAR,                    -- the event's, else the first call's (endpoint too)
            endpoint VARCHAR,
            host VARCHAR,                       -- the event's: NULL until it is stored
            user_id VARCHAR,
            duration_ms DOUBLE,
            calls INTEGER NOT NULL,
            models VARCHAR[] NOT NULL,          -- distinct, sorted
            input_tokens BIGINT NOT NULL,
            output_tokens BIGINT NOT NULL,
            llm_usd DECIMAL(38, 12) NOT NULL,   -- the sum of its calls' cost_usd (unpriced ones add 0)
            has_event BOOLEAN NOT NULL
        );
    """)
    request_costs.rebuild(con)


def m011_ingest_rollup(con: duckdb.DuckDBPyConnection) -> None:
    # Batch ids are kept for the raw window only (a replay comes within it); what the Ingest page
    # counts of older batches is kept per minute when their ids go (retention.KEPT_ON_PURGE).
    con.execute("""
        CREATE TABLE ingest_rollup (
            minute TIMESTAMP NOT NULL,
            source VARCHAR NOT NULL,
            service VARCHAR,
            batches BIGINT NOT NULL,
            events BIGINT NOT NULL,
            last_ingested_at TIMESTAMP NOT NULL
        );
    """)


def m012_llm_rollup(con: duckdb.DuckDBPyConnection) -> None:
    # LLM spend per minute (with hour and day tiers), per user and day, and each request's span of
    # calls, kept at ingest (collectors.store.llm_rollup), so the Cost page's spend queries read a few
    # rows per period instead of every call; filled from the calls already stored.
    con.execute(llm_rollup.DDL)
    llm_rollup.rebuild(con, spans=True)
    roll_tiers(con, utcnow())     # the tiers of stores older than them (m009), LLM spend's too


def m013_postgres_depth(con: duckdb.DuckDBPyConnection) -> None:
    # Snapshots of a PostgreSQL target's live backends, one row per backend per sample
    # (collectors.samplers.pg_depth): what runs, waits, blocks, and the locks involved.
    con.execute("""
        CREATE TABLE pg_activity (
            ts TIMESTAMP NOT NULL,
            target VARCHAR NOT NULL,
            pid INTEGER NOT NULL,
            backend_start TIMESTAMP,        -- with pid, names one backend: a pid is reused
            usename VARCHAR,
            application_name VARCHAR,
            client_addr VARCHAR,
            state VARCHAR,                  -- active, idle in transaction, ... (pg_stat_activity.state)
            wait_event_type VARCHAR,
            wait_event VARCHAR,
            query_start TIMESTAMP,
            xact_start TIMESTAMP,
            query_s DOUBLE,                 -- how long its current (or last) statement has run
            xact_s DOUBLE,                  -- how old its transaction is
            blocked_by INTEGER[],           -- pg_blocking_pids()
            locks VARCHAR[],                -- "holds RowExclusiveLock on public.t", "waits for ShareLock on ..."
            query VARCHAR                   -- redacted, cut at 2,000 characters
        );
    """)


def m014_advisor_statements(con: duckdb.DuckDBPyConnection) -> None:
    # What the index advisor made of each statement of a run: the index it wants, or why none (reads only
    # catalogues, already cheap, no index cuts it enough), or why it could not be analysed.
    con.execute("""
        CREATE TABLE advisor_statements (
            ts TIMESTAMP NOT NULL,      -- the run (advisor_runs.ts)
            target VARCHAR NOT NULL,
            query VARCHAR NOT NULL,     -- its key: SDK fingerprint or pg_stat_statements text
            verdict VARCHAR NOT NULL,   -- create | none | failed
            detail VARCHAR,             -- "orders (customer_id): 96 % cheaper" / the reason
            calls_day DOUBLE,
            ms_day DOUBLE,
            base_cost DOUBLE,           -- in the method's unit (planner cost, or rows read)
            best_cost DOUBLE
        );
    """)



def m015_source_reporter(con: duckdb.DuckDBPyConnection) -> None:
    # Several collectors report the same Redis stream (on a lake): each report says whose it is (its
    # --consumer name; NULL for a collector not given one), so one gone silent shows beside another.
    con.execute("ALTER TABLE ingest_sources ADD COLUMN collector VARCHAR")


MIGRATIONS: list[Callable[[duckdb.DuckDBPyConnection], None]] = [m001_initial, m002_samplers, m003_action_results,
                                                                  m004_index_advice, m005_llm_costs, m006_alerting,
                                                                  m007_pipeline_health, m008_alert_peak_severity,
                                                                  m009_rollup_tiers, m010_llm_requests,
                                                                  m011_ingest_rollup, m012_llm_rollup,
                                                                  m013_postgres_depth, m014_advisor_statements,
                                                                  m015_source_reporter]


def applied(con: duckdb.DuckDBPyConnection) -> list[str]:
    con.execute("CREATE TABLE IF NOT EXISTS _migrations (name VARCHAR PRIMARY KEY, applied_at TIMESTAMP)")
    return [r[0] for r in con.execute("SELECT name FROM _migrations ORDER BY applied_at, name").fetchall()]


def migrate(con: duckdb.DuckDBPyConnection) -> list[str]:
    """Apply pending migrations inside the caller's transaction; return the names applied. On a lake their
    DDL is adapted to what DuckLake takes (collectors.store.lake.adapt_ddl)."""
    if lake.is_lake_connection(con):
        con = lake.AdaptingConnection(con)
    done = set(applied(con))
    new = []
    for migration in MIGRATIONS:
        if migration.__name__ in done:
            continue
        migration(con)
        con.execute("INSERT INTO _migrations VALUES (?, now()::TIMESTAMP)", [migration.__name__])
        new.append(migration.__name__)
    return new
