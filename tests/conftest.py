"""Shared fixtures. Everything here is real: DuckDB files in tmp_path, a Redis server on
127.0.0.1:6379 (started if none answers), the SDK writing to a real spool directory."""
from __future__ import annotations

import os
import shutil
import subprocess
import time

import pytest

from collectors import sdk
from collectors.sdk import api

# Modules that start servers, browsers or the demo, run pages through AppTest, or search widely with
# Hypothesis: `pytest -m "not slow"` leaves them out and runs the rest in well under a minute.
SLOW_MODULES = {
    "test_action_app_cache", "test_action_database", "test_action_pg_backends", "test_action_redis",
    "test_actions", "test_advise", "test_advisor_pg", "test_advisor_pgbench", "test_advisor_sqlite",
    "test_advisor_suite", "test_alerts", "test_browser", "test_browser_actions", "test_http_listener",
    "test_queries_pg_depth", "test_sampler_pg_depth",
    "test_browser_hostile", "test_cache_sizes", "test_compare", "test_control", "test_dashboard_launch", "test_demo",
    "test_demo_services", "test_demo_switch", "test_health", "test_ingest_faults", "test_ingest_property",
    "test_names_as_text", "test_notify", "test_otlp", "test_pipeline", "test_queries_pipeline", "test_redact", "test_redis_depth",
    "test_sampler_database", "test_sampler_redis", "test_sdk_faults", "test_sources_faults", "test_time_range_url",
    "test_viewer_auth", "test_lake",
}


def pytest_collection_modifyitems(items):
    for item in items:
        module = item.module.__name__.rpartition(".")[2]
        if module in SLOW_MODULES or module.startswith("test_page_") or item.get_closest_marker("browser"):
            item.add_marker(pytest.mark.slow)
        if "lake" in module or "lake_store" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.lake)


# A database of its own, flushed around each test ($PERFDECK_TEST_REDIS_DB lets parallel runs apart).
REDIS_URL = f"redis://127.0.0.1:6379/{os.environ.get('PERFDECK_TEST_REDIS_DB', '15')}"


@pytest.fixture
def store(tmp_path):
    """Path of a store file that does not exist yet."""
    return tmp_path / "perfdeck.duckdb"


@pytest.fixture
def migrated_store(store):
    """A store file with every migration applied and no rows: where actions write their audit rows."""
    from collectors.store import migrate, write
    with write(store) as con:
        migrate(con)
    return store


@pytest.fixture
def operator():
    from dashboard.actions import Actor
    return Actor("test-operator", role="operator", via="test")


@pytest.fixture
def spool(tmp_path):
    path = tmp_path / "spool"
    path.mkdir()
    return path


@pytest.fixture
def sdk_spool(tmp_path):
    """The SDK configured to spool its batches to a folder, flushed only when a test asks
    (`helpers.spooled`); the folder."""
    path = tmp_path / "sdk-spool"
    sdk.configure(service="itest", transport=f"spool:{path}", flush_interval=60)
    return path


@pytest.fixture(autouse=True)
def _sdk_reset():
    """Every test starts and ends with an unconfigured SDK, empty buffers and no cache sized."""
    yield
    sdk.shutdown(timeout=5)
    for name in ("requests", "cache_lookups", "llm_calls", "queries", "deploys"):
        del getattr(api, name)[:]
    api.dropped = 0
    from collectors.sdk import control
    with control._lock:
        control._sizes.clear()          # a size left registered would add cache_sizes to later batches


@pytest.fixture(autouse=True)
def _fresh_streamlit_cache():
    """Page tests share one process: cached query results must not leak from one store to the next."""
    import sys
    if "streamlit" in sys.modules:
        sys.modules["streamlit"].cache_data.clear()
    yield
    if "streamlit" in sys.modules:
        sys.modules["streamlit"].cache_data.clear()


def _redis_ping() -> bool:
    import redis
    try:
        return redis.Redis.from_url(REDIS_URL, socket_connect_timeout=1).ping()
    except redis.RedisError:
        return False


@pytest.fixture(scope="session")
def redis_server():
    """A Redis on 127.0.0.1:6379: the one running, or one started for the session."""
    if not _redis_ping():
        if not shutil.which("redis-server"):
            pytest.fail("no Redis answers on 127.0.0.1:6379 and redis-server is not installed")
        subprocess.run(["redis-server", "--daemonize", "yes", "--port", "6379", "--bind", "127.0.0.1",
                        "--save", "", "--appendonly", "no"], check=True)
        deadline = time.monotonic() + 10
        while not _redis_ping():
            if time.monotonic() > deadline:
                pytest.fail("started redis-server but it does not answer")
            time.sleep(0.1)
    return REDIS_URL


@pytest.fixture
def redis_url(redis_server):
    import redis
    client = redis.Redis.from_url(redis_server)
    client.flushdb()
    yield redis_server
    client.flushdb()
    client.close()
