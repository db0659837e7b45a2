"""AppTest of the Caches page on a seeded store, an empty store and the router."""
from __future__ import annotations

from pathlib import Path

import pytest
from helpers import run_app, shown_text
from seed_samples import seed_samples
from seed_store import seed_store
from streamlit.testing.v1 import AppTest

from collectors.store import migrate, write

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "dashboard" / "app_pages" / "caches.py")
APP = str(ROOT / "dashboard" / "app.py")



@pytest.fixture
def seeded(tmp_path, monkeypatch):
    path = tmp_path / "perfdeck.duckdb"
    seed_store(path, days=1)
    seed_samples(path)
    monkeypatch.setenv("PERFDECK_DB", str(path))
    return path


def run(script: str = PAGE) -> AppTest:
    return run_app(script)


def test_caches_page_shows_app_caches_and_redis(seeded):
    at = run()
    assert at.title[0].value == "Caches"
    assert [h.value for h in at.subheader] == ["App caches", "Redis", "Act on caches"]
    tables = {b.key.removeprefix("csv-"): None for b in at.download_button}
    assert {"app-caches", "redis-instances", "redis-namespaces", "redis-slowlog", "app-cache-namespaces",
            "app-caches-over-time", "redis-over-time"} <= set(tables)
    app = at.dataframe[0].value
    assert app["cache"].tolist() == ["product_lru", "customer_lru", "llm_responses", "report_cache"]
    assert app["hit_rate"].between(0, 1).all()
    redis = next(d.value for d in at.dataframe if "ops_per_sec" in d.value)
    assert redis["instance"].tolist() == ["cache", "queue", "sessions"]
    assert len(at.get("plotly_chart")) == 8
    # The Redis that stopped answering is called out, with its error; nothing else is.
    assert len(at.error) == 1
    assert "queue" in at.error[0].value and "is down" in at.error[0].value
    assert "Connection refused" in at.error[0].value and "***" in shown_text(at.error[0].value)
    assert not at.warning


def test_service_filter_applies_to_app_caches(seeded):
    at = run()
    at.sidebar.selectbox(key="service").select("worker").run()
    assert not at.exception
    assert at.dataframe[0].value["cache"].tolist() == ["report_cache"]


def test_hit_rate_chart_has_threshold_lines(seeded):
    at = run()
    assert _level_lines(at) == [0.5, 0.8, 0.9]                 # the packaged cache_hit_rate levels


def _level_lines(at, index: int = 0) -> list[float]:
    import json
    chart = json.loads(at.get("plotly_chart")[index].proto.spec)
    return sorted(s["y0"] for s in chart["layout"].get("shapes", [])
                  if s.get("y0") == s.get("y1") and s.get("yref") != "paper")


def test_hit_rate_lines_are_the_levels_the_checks_use(seeded, tmp_path, monkeypatch):
    """One source for every level: an override in thresholds.toml moves the chart's lines too."""
    thresholds = tmp_path / "thresholds.toml"
    thresholds.write_text('[[cache_hit_rate.overrides]]\nservice = "worker"\ncache = "report_cache"\n'
                          "target = 0.55\nwarning = 0.40\ncritical = 0.25\n")
    monkeypatch.setenv("PERFDECK_THRESHOLDS", str(thresholds))
    at = run()
    at.sidebar.selectbox(key="service").select("worker").run()
    assert not at.exception, at.exception
    assert _level_lines(at) == [0.25, 0.40, 0.55]

    at.sidebar.selectbox(key="service").select("All services").run()   # caches with different levels
    assert _level_lines(at) == []
    assert any("different hit-rate levels" in c.value for c in at.caption)


def test_router_runs_caches(seeded):
    at = AppTest.from_file(APP, default_timeout=60)
    at.switch_page(PAGE)
    at.run()
    assert not at.exception
    assert at.title[0].value == "Caches"


def test_empty_store_says_how_to_get_data(tmp_path, monkeypatch):
    path = tmp_path / "empty.duckdb"
    with write(path) as con:
        migrate(con)
    monkeypatch.setenv("PERFDECK_DB", str(path))
    at = run()
    # One "no data" callout; the other says the cache-clear action has no process to reach.
    assert len(at.info) == 2
    assert "perfdeck demo" in at.info[0].value and "record_cache" in at.info[0].value
    assert "no instrumented process has announced itself" in at.info[1].value
    assert not at.dataframe


def test_missing_store(tmp_path, monkeypatch):
    monkeypatch.setenv("PERFDECK_DB", str(tmp_path / "nothing.duckdb"))
    at = run()
    assert "perfdeck demo" in at.info[0].value
