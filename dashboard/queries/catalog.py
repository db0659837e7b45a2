"""What there is to look at: services, and deploys to mark on the time charts."""
from __future__ import annotations

from datetime import datetime

import duckdb
import pandas as pd

from dashboard.queries._run import run_query
from dashboard.queries.tiers import ROLLUP_ROWS, tier_params

SERVICES_SQL = f"""
SELECT DISTINCT service
FROM ({ROLLUP_ROWS})
ORDER BY service
"""
_ALL_TIME = (datetime(1970, 1, 1), datetime(9999, 1, 1))


def services(con: duckdb.DuckDBPyConnection) -> pd.DataFrame:
    """[service] of every service that has reported requests, sorted. Reads the day tier, and the
    hours and minutes not rolled into it yet: a few rows per service, not every minute."""
    since, until = _ALL_TIME
    df, _ = run_query(SERVICES_SQL, {"since": since, "until": until} | tier_params(con, since, until), con=con)
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
