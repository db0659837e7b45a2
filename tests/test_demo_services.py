"""`perfdeck demo --redis URL --postgres URL`: the live shop's product cache in a real Redis and its
order histories on a real PostgreSQL, both sampled by the collector the demo configures. Redis runs on
127.0.0.1:6379 (database 13, flushed around the test); PostgreSQL is a throwaway cluster (tests/pg.py)."""
from __future__ import annotations

import os

import duckdb
import pytest

from collectors import config, sdk
from collectors.daemon import Collector
from collectors.demo.runner import dashboard_targets, demo_config
from collectors.demo.workload import (
    PG_DATABASE,
    PG_ORDERS,
    PG_SCHEMA,
    REDIS_CACHE,
    REDIS_NAME,
    VERSION_AFTER,
    Shop,
    open_database,
    open_postgres,
    open_redis,
    sqlalchemy_url,
)
from tests.pg import pg_cluster  # noqa: F401 - the fixture

REDIS_URL = f"redis://127.0.0.1:6379/{os.environ.get('PERFDECK_TEST_DEMO_REDIS_DB', '13')}"


@pytest.fixture
def demo_redis(redis_server):
    client = open_redis(REDIS_URL)
    client.flushdb()
    yield REDIS_URL
    client.flushdb()
    client.close()


@pytest.fixture
def no_user_config(tmp_path, monkeypatch):
    monkeypatch.setenv("PERFDECK_CONFIG", str(tmp_path / "perfdeck.toml"))
    for name in ("PERFDECK_REDIS_URLS", "PERFDECK_DATABASE_URLS"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def test_sqlalchemy_url():
    assert sqlalchemy_url("postgresql://u:p@h/db") == "postgresql+psycopg://u:p@h/db"
    assert sqlalchemy_url("postgres://h/db") == "postgresql+psycopg://h/db"
    assert sqlalchemy_url("postgresql+psycopg://h/db") == "postgresql+psycopg://h/db"


def test_config_names_both_servers(no_user_config):
    data = no_user_config / "demo"
    cfg = demo_config(data, redis_url=REDIS_URL, postgres_url="postgresql://app:secret@db.example/app")
    assert cfg["redis"] == [{"name": REDIS_NAME, "url": REDIS_URL}]
    assert {"name": PG_DATABASE, "url": "postgresql+psycopg://app:secret@db.example/app"} in cfg["database"]
    assert (PG_DATABASE, "postgresql+psycopg://app:secret@db.example/app") in config.advisor_targets(cfg)
    plain = demo_config(data)
    assert not plain.get("redis") and [d["name"] for d in plain["database"]] == ["shop"]
    env, _ = dashboard_targets(data, redis_url=REDIS_URL, postgres_url="postgresql://app:secret@db.example/app")
    assert env["PERFDECK_REDIS_URLS"] == f"{REDIS_NAME}={REDIS_URL}"       # the Caches page's actions reach it
    assert env["PERFDECK_DATABASE_URLS"].endswith(f",{PG_DATABASE}=postgresql+psycopg://app:secret@db.example/app")
    assert "PERFDECK_REDIS_URLS" not in dashboard_targets(data)[0]


def test_live_shop_on_real_redis_and_postgres(tmp_path, demo_redis, pg_cluster, no_user_config):  # noqa: F811
    engine = open_database(tmp_path / "shop.sqlite")
    pg = open_postgres(pg_cluster.url)
    open_postgres(pg_cluster.url).dispose()                          # a second start reuses the tables
    with pg.connect() as conn:
        assert conn.exec_driver_sql(f"SELECT count(*) FROM {PG_SCHEMA}.orders").scalar() == PG_ORDERS
    redis = open_redis(demo_redis)
    cfg = demo_config(tmp_path, redis_url=demo_redis, postgres_url=pg_cluster.url)
    collector = Collector(tmp_path / "perfdeck.duckdb", spool_dir=tmp_path / "spool",
                          samplers=[s for s in config.build_samplers(cfg) if s.kind != "host"])
    collector.run_once()                                             # the samplers' baselines
    sdk.configure(service="shop-api", transport=f"spool:{tmp_path / 'spool'}", control=False)
    shop = Shop(engine, version=VERSION_AFTER, seed=5, postgres=pg, redis=redis)
    shop.product_cache.capacity = 20                                 # small: many LRU misses reach Redis
    for _ in range(300):
        shop.serve("product")
    for _ in range(60):
        shop.serve("customer_orders")
    sdk.flush(10)
    sdk.shutdown()
    keys = redis.keys(f"{REDIS_CACHE}:*")
    collector.run_once()
    redis.close()
    pg.dispose()
    engine.dispose()

    assert keys and all(k.startswith(f"{REDIS_CACHE}:v0:product:".encode()) for k in keys)
    con = duckdb.connect(str(tmp_path / "perfdeck.duckdb"), read_only=True)
    try:
        hits, misses = con.execute("SELECT sum(hits), sum(misses) FROM cache_stats WHERE cache = ?",
                                   [REDIS_CACHE]).fetchone()
        pg_calls = con.execute("""SELECT sum(calls) FROM query_stats WHERE database = ?
                                  AND fingerprint LIKE '%perfdeck_demo.orders%customer_id%'""", [PG_DATABASE]).fetchone()[0]
        redis_rows = con.execute("SELECT count(*) FROM redis_metrics WHERE instance = ?", [REDIS_NAME]).fetchone()[0]
        db_rows = con.execute("SELECT count(*) FROM db_metrics WHERE target = ?", [PG_DATABASE]).fetchone()[0]
        components = dict(con.execute("SELECT name, status FROM components").fetchall())
    finally:
        con.close()
    assert hits > 0 and misses > 0                                    # repeated products are found in Redis
    assert misses == len(keys)                                        # every miss stored its product
    assert pg_calls > 0                                               # the histories read on PostgreSQL
    assert redis_rows > 0 and db_rows > 0
    assert components[REDIS_NAME] == "up" and components[PG_DATABASE] == "up"


def test_an_unreachable_server_stops_the_demo_before_it_starts(tmp_path, no_user_config, capsys):
    from collectors.demo.runner import run

    code = run(tmp_path / "demo", dashboard=False, backfill_days=0,
               postgres_url="postgresql://app:hunter2secret@127.0.0.1:1/app")
    out = capsys.readouterr().out
    assert code == 2 and "cannot use PostgreSQL" in out and "hunter2secret" not in out, out
    assert not (tmp_path / "demo" / "perfdeck.duckdb").exists()      # nothing was collected
    code = run(tmp_path / "demo", dashboard=False, backfill_days=0, redis_url="redis://:hunter2secret@127.0.0.1:1/0")
    out = capsys.readouterr().out
    assert code == 2 and "cannot use Redis" in out and "hunter2secret" not in out, out
