"""What there is to look at: services, and deploys to mark on the time charts."""
from __future__ import annotations

from datetime import datetime

import duckdb
import pandas as pd

from dashboard.queries._run import run_query

SERVICES_SQL = """
SELECT DISTINCT service
FROM request_rollup
ORDER BY service
"""


def services(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """[service] of every service that has reported requests, sorted."""
    df, _ = run_query(SERVICES_SQL, con=con)
    return df


DEPLOYS_SQL = """
SELECT ts, service, version, host
FROM deploys
WHERE ts >= $since
  AND ts < $until
  AND ($service IS NULL OR service = $service)
ORDER BY ts
"""


def deploys(
    con: duckdb.DuckDBPyConnection,
    *,
    since: datetime,
    until: datetime,
    service: str | None = None,
) -> pd.DataFrame:
    """[ts, service, version, host] of deploys in [since, until), oldest first."""
    params = {"since": since, "until": until, "service": service}
    df, _ = run_query(DEPLOYS_SQL, params, max_rows=500, con=con)
    return df
