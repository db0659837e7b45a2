"""dashboard.queries for the Caches, Database and Host pages, on a store seeded by seed_samples."""
from __future__ import annotations

from datetime import UTC, datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from seed_samples import seed_samples

from collectors.store import read
from collectors.store.histogram import quantile
from dashboard.queries import (
    app_cache_namespaces,
    app_cache_over_time,
    app_cache_summary,
    bucket_seconds,
    component_status,
    db_cache_hit_ratio,
    db_connections,
    db_targets,
    host_disks,
    host_over_time,
    hosts,
    pg_top_statements,
    processes_latest,
    processes_over_time,
    redis_namespaces,
    redis_over_time,
    redis_slowlog,
    redis_summary,
    run_query,
    sdk_top_queries,
    seq_scan_tables,
)
from dashboard.queries.samplers import label_sql

NOW = datetime.now(UTC).replace(tzinfo=None, second=0, microsecond=0)
DAY = {"since": NOW - timedelta(hours=24), "until": NOW}


@pytest.fixture(scope="module")
def seeded(tmp_path_factory):
    path = tmp_path_factory.mktemp("samples") / "perfdeck.duckdb"
    return path, seed_samples(path, now=NOW)


@pytest.fixture(scope="module")
def con(seeded):
    with read(seeded[0]) as con:
        yield con


@pytest.fixture(scope="module")
def frames(seeded):
    return seeded[1]


def buckets(ts: pd.Series, since: datetime, until: datetime) -> pd.Series:
    step = bucket_seconds(since, until)
    return ts.dt.floor(f"{step}s")


@pytest.mark.parametrize(("labels", "key", "rest", "expected"), [
    ("proc=gunicorn,pid=101", "proc", False, "gunicorn"),
    ("proc=gunicorn,pid=101", "pid", False, "101"),
    ("mount=/data", "mount", False, "/data"),
    ("state=idle in transaction", "state", False, "idle in transaction"),
    ("ns=cfg,v2", "ns", True, "cfg,v2"),
    ("ns=a=b", "ns", True, "a=b"),
    ("", "proc", False, None),
    ("cpu=1", "proc", False, None),
])
def test_label_sql(con, labels, key, rest, expected):
    df, _ = run_query(f"SELECT {label_sql(key, rest=rest)} AS v FROM (SELECT $labels AS labels)",
                      {"labels": labels}, con=con)
    assert (None if pd.isna(df.v[0]) else df.v[0]) == expected


def test_label_sql_takes_code_constants_only():
    with pytest.raises(ValueError):
        label_sql("x') OR ('1")


def test_app_cache_hit_rate_is_sum_over_sum_per_bucket(con, frames):
    df = app_cache_over_time(con, **DAY)
    cs = frames["cache_stats"].assign(time=lambda d: buckets(d.minute, **DAY))
    want = cs.groupby(["time", "service", "cache"], as_index=False)[["hits", "misses", "lookup_ms_sum",
                                                                      "lookups_timed"]].sum()
    want = want[want.hits + want.misses > 0]
    got = df.merge(want, on=["time", "service", "cache"], how="outer", indicator=True)
    assert (got["_merge"] == "both").all()
    np.testing.assert_allclose(got.hit_rate, got.hits / (got.hits + got.misses))
    np.testing.assert_allclose(got.mean_lookup_ms, got.lookup_ms_sum / got.lookups_timed)
    assert (got.lookups == got.hits + got.misses).all()
    # An average of per-minute ratios would differ from sum/sum: make sure the data can tell them apart.
    per_minute = cs.assign(r=cs.hits / (cs.hits + cs.misses)).groupby(["time", "cache"]).r.mean()
    assert not np.allclose(per_minute.sort_index().to_numpy(),
                           df.set_index(["time", "cache"]).hit_rate.sort_index().to_numpy())


def test_no_lookups_means_no_hit_rate_point(con):
    since, until = NOW - timedelta(hours=3), NOW  # 60 s buckets
    df = app_cache_over_time(con, since=since, until=until)
    llm = df[df.cache == "llm_responses"]
    idle = (llm.time >= NOW - timedelta(hours=2)) & (llm.time < NOW - timedelta(hours=1))
    assert not idle.any() and len(llm) > 0
    assert df.hit_rate.between(0, 1).all() and df.hit_rate.notna().all()


def test_app_cache_summary_and_namespaces(con, frames):
    cs = frames["cache_stats"]
    df = app_cache_summary(con, **DAY)
    assert list(df.cache) == ["product_lru", "customer_lru", "llm_responses", "report_cache"]
    row = df.set_index("cache").loc["customer_lru"]
    part = cs[cs.cache == "customer_lru"]
    assert row.hits == part.hits.sum() and row.misses == part.misses.sum()
    assert row.hit_rate == pytest.approx(part.hits.sum() / (part.hits.sum() + part.misses.sum()))
    assert row.max_lookup_ms == pytest.approx(part.lookup_ms_max.max())
    assert set(app_cache_summary(con, **DAY, service="worker").cache) == {"report_cache"}
    ns = app_cache_namespaces(con, **DAY)
    assert set(ns[ns.cache == "customer_lru"].namespace) == {"orders", "profile"}
    assert ns[ns.cache == "report_cache"].namespace.tolist() == ["(none)"]


def test_redis_hit_rate_over_time(con, frames):
    since, until = NOW - timedelta(hours=2), NOW  # 60 s buckets: one sample each
    df = redis_over_time(con, since=since, until=until)
    rm = frames["redis_metrics"]
    rm = rm[(rm.ts >= since) & (rm.ts < until)]
    rates = rm[rm.name.isin(["redis.hits_per_sec", "redis.misses_per_sec"])] \
        .assign(time=lambda d: buckets(d.ts, since, until)) \
        .pivot_table(index=["time", "instance"], columns="name", values="value", aggfunc="sum").reset_index()
    got = df.merge(rates, on=["time", "instance"])
    lookups = got["redis.hits_per_sec"] + got["redis.misses_per_sec"]
    np.testing.assert_allclose(got.hit_rate[lookups > 0], (got["redis.hits_per_sec"] / lookups)[lookups > 0])
    idle = df[(df.instance == "cache") & (df.time == NOW - timedelta(minutes=90))]
    assert len(idle) == 1 and pd.isna(idle.hit_rate.iloc[0]) and idle.ops_per_sec.iloc[0] > 0
    assert set(df.instance) == {"cache", "sessions"}  # queue stopped answering 3 hours ago
    sessions = df[df.instance == "sessions"]
    assert (sessions.maxmemory == 100 * 2**20).all()
    assert df[df.instance == "cache"].maxmemory.isna().all()  # 0 = no limit


def test_redis_summary(con, frames):
    df = redis_summary(con, **DAY).set_index("instance")
    assert list(df.index) == ["cache", "queue", "sessions"]
    rm = frames["redis_metrics"]
    cache = rm[rm.instance == "cache"]
    hits = cache[cache.name == "redis.hits_per_sec"].value.sum()
    misses = cache[cache.name == "redis.misses_per_sec"].value.sum()
    assert df.loc["cache", "hit_rate"] == pytest.approx(hits / (hits + misses))
    latest = cache[cache.name == "redis.used_memory"].sort_values("ts").value.iloc[-1]
    assert df.loc["cache", "used_memory"] == pytest.approx(latest)
    assert pd.isna(df.loc["cache", "maxmemory"]) and df.loc["sessions", "maxmemory"] == 100 * 2**20
    assert df.loc["queue", "last_sample"] < NOW - timedelta(hours=3)
    assert df.loc["cache", "keys"] == 5000


def test_redis_namespaces_from_latest_sample(con, frames):
    df = redis_namespaces(con, **DAY)
    cache = df[df.instance == "cache"]
    assert cache.namespace.tolist() == ["product", "user:profile", "(none)", "cfg,v2"]
    latest = frames["redis_metrics"].query("instance == 'cache' and name == 'redis.ns_estimated_bytes'").ts.max()
    assert (cache.sampled_at == latest).all()
    product = cache.iloc[0]
    assert product.sampled_keys == 600 and product.ttl_share == 1.0 and product.mean_ttl_sec == 3600
    assert pd.isna(cache.set_index("namespace").loc["(none)", "mean_ttl_sec"])
    assert set(df[df.instance == "sessions"].namespace) == {"sess", "(other)"}


def test_redis_slowlog_slowest_first(con):
    df = redis_slowlog(con, **DAY)
    assert df.command.tolist() == ["SMEMBERS big-set", "KEYS product:*", "HGETALL sess:abc"]
    assert df.duration_ms.tolist() == [42.0, 15.0, 12.5]
    assert len(redis_slowlog(con, since=NOW - timedelta(hours=2), until=NOW)) == 2


@pytest.mark.parametrize(("order_by", "first"), [
    ("total", "SELECT * FROM orders WHERE customer_id = ?"),
    ("mean", "SELECT * FROM orders WHERE customer_id = ?"),
    ("calls", "SELECT * FROM products WHERE id = ?"),
])
def test_sdk_top_queries_order(con, order_by, first):
    df = sdk_top_queries(con, **DAY, order_by=order_by)
    col = {"total": "total_ms", "mean": "mean_ms", "calls": "calls"}[order_by]
    assert df[col].is_monotonic_decreasing and df.fingerprint.iloc[0] == first
    assert len(df) == 3


def test_sdk_top_queries_totals_and_p95(con, frames):
    df = sdk_top_queries(con, **DAY).set_index("fingerprint")
    raw = frames["query_raw"]
    hist = frames["query_hist"]
    for fingerprint, part in raw.groupby("fingerprint"):
        row = df.loc[fingerprint]
        assert row.calls == len(part)
        assert row.total_ms == pytest.approx(part.duration_ms.sum())
        assert row.mean_ms == pytest.approx(part.duration_ms.mean())
        assert row.max_ms == pytest.approx(part.duration_ms.max())
        counts = hist[hist.fingerprint == fingerprint].groupby("bucket")["count"].sum().to_dict()
        assert row.p95_ms == pytest.approx(quantile(counts, 0.95), rel=1e-12)
        assert row.p95_ms == pytest.approx(np.percentile(part.duration_ms, 95, method="lower"), rel=0.01)
        assert row.database == "shop"
    assert sdk_top_queries(con, **DAY, service="worker").empty


def test_sdk_top_queries_rejects_unknown_order(con):
    with pytest.raises(ValueError):
        sdk_top_queries(con, **DAY, order_by="total_ms; DROP TABLE x")


def test_pg_top_statements(con, frames):
    df = pg_top_statements(con, **DAY)
    assert df.queryid.tolist() == [101, 102, 103]
    ps = frames["pg_statements"]
    orders = ps[ps.queryid == 101]
    row = df.iloc[0]
    assert row.calls == orders.calls.sum() and row.total_ms == pytest.approx(orders.total_ms.sum())
    assert row.mean_ms == pytest.approx(45.0)
    assert row.cache_hit_ratio == pytest.approx(orders.shared_blks_hit.sum()
                                                / (orders.shared_blks_hit + orders.shared_blks_read).sum())
    assert pg_top_statements(con, **DAY, order_by="calls").queryid.iloc[0] == 102
    assert pg_top_statements(con, **DAY, target="legacy-pg").empty


def test_db_targets(con):
    df = db_targets(con, **DAY).set_index("target")
    assert bool(df.loc["shop-pg", "pgss_enabled"]) is True
    assert bool(df.loc["legacy-pg", "pgss_enabled"]) is False
    assert df.loc["shop-pg", "connections"] == 15 and df.loc["legacy-pg", "connections"] == 3
    assert df.loc["shop-pg", "cache_hit_ratio"] == pytest.approx(0.99)
    assert df.loc["shop-pg", "max_connections"] == 100


def test_db_cache_hit_ratio_and_connections(con, frames):
    ratio = db_cache_hit_ratio(con, **DAY)
    dm = frames["db_metrics"]
    want = dm[dm.name == "cache.hit_ratio.interval"].assign(time=lambda d: buckets(d.ts, **DAY)) \
        .groupby(["time", "target"], as_index=False).value.mean()
    got = ratio.merge(want, on=["time", "target"])
    assert len(got) == len(ratio) == len(want)
    np.testing.assert_allclose(got.hit_ratio, got.value)
    conns = db_connections(con, **DAY)
    shop = conns[conns.target == "shop-pg"]
    assert set(shop.state) == {"active", "idle", "idle in transaction"}
    assert shop.groupby("state").connections.mean().to_dict() == {"active": 4, "idle": 10, "idle in transaction": 1}


def test_seq_scan_tables(con, frames):
    df = seq_scan_tables(con, **DAY).set_index(["target", "table"])
    orders = df.loc[("shop-pg", "public.orders")]
    assert bool(orders.flagged) and orders.live_rows >= 500_000
    dm = frames["db_metrics"]
    seq = dm[(dm.name == "table.seq_scan") & (dm.labels == "table=public.orders")].sort_values("ts").value
    assert orders.seq_scans == seq.iloc[-1] - seq.iloc[0]
    assert orders.seq_share == pytest.approx(orders.seq_scans / (orders.seq_scans + orders.idx_scans))
    assert not df.loc[("shop-pg", "public.settings")].flagged  # sequential only, but 10-ish rows
    # Flagged by the rows read, not the scans: 500 times more index scans than sequential ones, but those few
    # sequential scans read 40 times the rows the index lookups fetched (issue 19).
    products = df.loc[("shop-pg", "public.products")]
    assert products.idx_scans > 100 * products.seq_scans and products.seq_rows_read > 10 * products.idx_rows_fetched
    assert bool(products.flagged) and products.seq_rows_read >= 1_000_000
    audit = df.loc[("legacy-pg", "public.audit_log")]
    reset = dm[(dm.target == "legacy-pg") & (dm.name == "table.seq_scan")].sort_values("ts").value
    half = len(reset) // 2  # reset to 2 there: growth = before it + the new value + since it
    assert audit.seq_scans == (reset.iloc[half - 1] - reset.iloc[0]) + 2 + (reset.iloc[-1] - reset.iloc[half])
    assert df.index[0] in {("shop-pg", "public.orders"), ("legacy-pg", "public.audit_log")}
    assert df.flagged.iloc[:3].all() and not df.flagged.iloc[3:].any()
    assert df.index[2] == ("shop-pg", "public.products")
    relaxed = seq_scan_tables(con, **DAY, min_rows=1).set_index(["target", "table"])
    assert not relaxed.loc[("shop-pg", "public.settings")].flagged     # 72,000 rows read: under the threshold
    relaxed = seq_scan_tables(con, **DAY, min_rows=1, min_read=1).set_index(["target", "table"])
    assert relaxed.loc[("shop-pg", "public.settings")].flagged


def test_processes_latest(con, frames):
    df = processes_latest(con, **DAY)
    assert len(df) == 4
    row = df[(df.host == "web-1") & (df.pid == 102)].iloc[0]
    sm = frames["system_metrics"]
    mine = sm[sm.labels == "proc=gunicorn,pid=102"].sort_values("ts")
    assert row.process == "gunicorn"
    assert row.rss_bytes == mine[mine.name == "proc.rss_bytes"].value.iloc[-1]
    assert row.cpu_percent == 18.0 and row.threads == 4 and row.open_files == 20 + 102 % 7
    assert set(processes_latest(con, **DAY, host="web-2").pid) == {301}


def test_processes_over_time_sums_processes_of_one_name(con, frames):
    since, until = NOW - timedelta(hours=1), NOW
    df = processes_over_time(con, since=since, until=until, host="web-1")
    gunicorn = df[df.process == "gunicorn"]
    sm = frames["system_metrics"]
    sm = sm[(sm.ts >= since) & (sm.host == "web-1") & sm.labels.str.startswith("proc=gunicorn,")]
    want = sm[sm.name == "proc.rss_bytes"].groupby("ts").value.sum()
    np.testing.assert_allclose(gunicorn.rss_bytes.to_numpy(), want.to_numpy())
    assert (gunicorn.cpu_percent == 38.0).all()


def test_host_over_time_and_disks(con, frames):
    df = host_over_time(con, **DAY)
    assert set(df.host) == {"web-1", "web-2"}
    sm = frames["system_metrics"]
    cpu = sm[(sm.name == "cpu.percent") & (sm.host == "web-1")].assign(time=lambda d: buckets(d.ts, **DAY)) \
        .groupby("time").value.agg(["mean", "max"])
    web1 = df[df.host == "web-1"].set_index("time")
    np.testing.assert_allclose(web1.cpu_percent, cpu["mean"])
    np.testing.assert_allclose(web1.cpu_percent_max, cpu["max"])
    disks = host_disks(con, **DAY)
    assert disks[["host", "mount"]].values.tolist() == [["web-1", "/data"], ["web-1", "/"], ["web-2", "/"]]
    assert disks.used_percent.tolist() == [87.0, 61.5, 61.5]
    assert hosts(con, **DAY).host.tolist() == ["web-1", "web-2"]


def test_component_status_down_first(con):
    df = component_status(con, kind="redis")
    assert df.name.tolist() == ["queue", "cache", "sessions"]
    down = df.iloc[0]
    assert down.status == "down" and "Connection refused" in down.error and "***" in down.target
    assert component_status(con, kind="database").status.eq("up").all()
