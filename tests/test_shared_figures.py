"""Figures are built once per result for every viewer (`dashboard.widgets.figure`), and a CSV is made
only when its button is clicked: what a rerun of a page costs, with fifty viewers refreshing it."""
from __future__ import annotations

import functools
from pathlib import Path

import pytest
import streamlit as st
from helpers import clear_health_env, run_app
from seed_store import seed_store

from dashboard import charts, widgets

PAGE = str(Path(__file__).resolve().parent.parent / "dashboard" / "app_pages" / "overview.py")


@pytest.fixture
def counted_builds(tmp_path, monkeypatch):
    """The Overview's chart builders, counting their calls; a seeded store; no figure cached yet."""
    clear_health_env(monkeypatch, tmp_path)
    path = tmp_path / "perfdeck.duckdb"
    seed_store(path)
    monkeypatch.setenv("PERFDECK_DB", str(path))
    calls = {"latency_chart": 0, "traffic_chart": 0}
    for name in calls:
        build = getattr(charts, name)

        @functools.wraps(build)
        def counted(*args, _build=build, _name=name, **kwargs):
            calls[_name] += 1
            return _build(*args, **kwargs)

        monkeypatch.setattr(charts, name, counted)
    st.cache_resource.clear()
    yield calls
    st.cache_resource.clear()


def test_viewers_of_the_same_data_share_each_figure(counted_builds):
    first = run_app(PAGE)
    assert counted_builds == {"latency_chart": 1, "traffic_chart": 1}
    for _ in range(3):                      # three more viewers (sessions), within the cache's lifetime
        other = run_app(PAGE)
        assert other.get("plotly_chart")[0].proto.spec == first.get("plotly_chart")[0].proto.spec
    assert counted_builds == {"latency_chart": 1, "traffic_chart": 1}


def test_new_data_builds_a_new_figure(counted_builds):
    run_app(PAGE)
    st.cache_data.clear()                   # the query results expire: the same queries run again
    run_app(PAGE)
    assert counted_builds == {"latency_chart": 2, "traffic_chart": 2}


def test_a_frame_is_known_by_its_result_only_as_loaded():
    """A frame derived from a loaded one inherits its attrs (pandas copies them): it must be told
    apart by its content, or it would be drawn with the figure of the frame it came from."""
    import pandas as pd

    loaded = pd.DataFrame({"ts": [1, 2], "value": [1.0, 2.0]})
    loaded.attrs.update(result="r1", copy=id(loaded))
    derived = loaded.assign(value=loaded["value"] * 10)
    assert derived.attrs["result"] == "r1"
    assert widgets._frame_key(loaded) == "r1"
    assert widgets._frame_key(derived) not in ("r1", widgets._frame_key(loaded.copy()))
    same = loaded.copy()
    assert widgets._frame_key(same) == widgets._frame_key(loaded.assign(value=[1.0, 2.0]))


def test_only_chart_builders_are_cached():
    with pytest.raises(ValueError, match="not a dashboard.charts builder"):
        widgets.figure(len, [1, 2])


def test_csv_is_made_on_click_not_at_every_rerun(counted_builds, monkeypatch):
    """The download buttons hold a callable: a rerun makes no CSV (each would be made per viewer)."""
    made = []
    monkeypatch.setattr(widgets, "redact", lambda text: made.append(text) or text)
    at = run_app(PAGE)
    assert {b.key for b in at.download_button} >= {"csv-endpoints", "csv-latency-over-time"}
    assert made == []
