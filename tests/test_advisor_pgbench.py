"""The README's pgbench workload: pgbench's tables without their primary keys, the built-in TPC-B-like
script and a lookup of an account's latest history rows. The advisor must find exactly the two missing
indexes, with hypopg and with the statistics heuristic alike."""
from __future__ import annotations

import os
import pwd
import re

import pytest

from collectors.advisor.advise import Settings, advise
from tests.pg import pg_cluster  # noqa: F401  (the session fixture)

HISTORY_SCRIPT = """\\set aid random(1, 100000 * :scale)
SELECT mtime, delta FROM pgbench_history WHERE aid = :aid ORDER BY mtime DESC LIMIT 10;
"""
# a day of history, as the TPC-B-like script would have written it
HISTORY = ("INSERT INTO pgbench_history (tid, bid, aid, delta, mtime) SELECT 1 + g % 20, 1 + g % 2, "
           "1 + g % 200000, g % 1000 - 500, now() - g * interval '1 second' FROM generate_series(1, 200000) g")


@pytest.fixture(scope="module", params=["hypopg", "heuristic"])
def pgbench_db(request, pg_cluster):  # noqa: F811
    name = f"pgbench_{request.param}"
    url = pg_cluster.create_database(name)
    pg_cluster.pgbench("-i", "-s", "2", "-I", "dtgv", "-q", dbname=name)     # no "p": no primary keys
    script = pg_cluster.base / "history.sql"
    script.write_text(HISTORY_SCRIPT)
    if os.geteuid() == 0:
        pw = pwd.getpwnam("postgres")
        os.chown(script, pw.pw_uid, pw.pw_gid)
    with pg_cluster.connect(name) as con:
        con.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        if request.param == "hypopg":
            con.execute("CREATE EXTENSION hypopg")
        if pg_cluster.has_library("pg_qualstats"):    # its predicates are read beside the plan's
            con.execute("CREATE EXTENSION pg_qualstats")
        con.execute(HISTORY)
        con.execute("ANALYZE")
        con.execute("SELECT pg_stat_statements_reset()")
    # -n: no vacuum before the run, which would also truncate pgbench_history
    pg_cluster.pgbench("-n", "-c", "2", "-t", "30", "-b", "tpcb-like", "-f", str(script), dbname=name)
    return request.param, url


def test_pgbench_gets_its_two_missing_indexes(pgbench_db):
    method, url = pgbench_db
    report = advise(url, settings=Settings(min_ms_per_day=0))
    assert report.method == method and not report.failed
    assert sorted(r.create_sql for r in report.recommendations) == [
        'CREATE INDEX CONCURRENTLY "ix_pgbench_accounts_aid" ON "public"."pgbench_accounts" ("aid")',
        'CREATE INDEX CONCURRENTLY "ix_pgbench_history_aid" ON "public"."pgbench_history" ("aid")',
    ]
    accounts = next(r for r in report.recommendations if r.table == "pgbench_accounts")
    # the SELECT and the UPDATE of the TPC-B-like script both look an account up by aid
    assert sorted(q.split()[0] for q in accounts.queries) == ["SELECT", "UPDATE"]
    # the tellers (20 rows) and branches (2 rows) are read whole, which is cheap: no index, and a reason
    tellers = [o for o in report.outcomes if "pgbench_tellers" in o.statement.text]
    assert tellers and all(o.verdict == "none" and o.detail.startswith("already cheap") for o in tellers)


def test_the_advisors_own_statements_carry_its_mark(pgbench_db, pg_cluster):  # noqa: F811
    """So that the sampler leaves them out of what it reports about the database (pg_stat_statements
    keeps the comment at the start of a statement's text)."""
    method, url = pgbench_db
    dbname = url.rsplit("/", 1)[1]
    with pg_cluster.connect(dbname) as con:
        given = [s for s in advise(url, settings=Settings(min_ms_per_day=0)).outcomes]
        con.execute("SELECT pg_stat_statements_reset()")
        advise(url, [o.statement for o in given], settings=Settings(min_ms_per_day=0))
        texts = [q for (q,) in con.execute("SELECT query FROM pg_stat_statements WHERE dbid = "
                                           "(SELECT oid FROM pg_database WHERE datname = current_database())")]
    ours = [q for q in texts if q.startswith("/* perfdeck advisor */")]
    assert len(ours) > 10
    # the rest: the driver's transaction control, which carries no text of ours, and this test's reset
    rest = set(texts) - set(ours) - {"SELECT pg_stat_statements_reset()"}
    assert {"BEGIN", "ROLLBACK"} <= rest
    assert all(re.fullmatch(r'BEGIN|ROLLBACK|(SAVEPOINT|RELEASE) "_pg3_\d+"', q) for q in rest), rest
