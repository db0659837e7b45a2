"""Figures and summaries are made once per result for every viewer (`dashboard.widgets.shared`), and a
CSV is made only when its button is clicked: what a rerun of a page costs, with fifty viewers refreshing it."""
from __future__ import annotations

import functools
import time
from datetime import UTC, datetime, timedelta
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


def viewer(since=None, until=None):
    """One session of the Overview at a fixed range (relative ranges move with the clock)."""
    from streamlit.testing.v1 import AppTest

    until = until or datetime.now(UTC).replace(tzinfo=None, second=0, microsecond=0)
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["range"] = "Custom range"
    at.session_state["range_from"], at.session_state["range_to"] = since or until - timedelta(hours=24), until
    at.run()
    assert not at.exception, at.exception
    return at


def within_one_cache_life(run):
    """run(), skipping the test when it outlived the cached results (then their figures are rebuilt)."""
    start = time.monotonic()
    out = run()
    if time.monotonic() - start >= widgets.CACHE_TTL_S:
        pytest.skip("the sessions took longer than the cache keeps a result")
    return out


def test_viewers_of_the_same_data_share_each_figure(counted_builds):
    def two_viewers():
        return viewer(), viewer()

    first, second = within_one_cache_life(two_viewers)
    assert second.get("plotly_chart")[0].proto.spec == first.get("plotly_chart")[0].proto.spec
    assert counted_builds == {"latency_chart": 1, "traffic_chart": 1}


def test_new_data_builds_a_new_figure(counted_builds):
    viewer()
    st.cache_data.clear()                   # the query results expire: the same queries run again
    viewer()
    assert counted_builds == {"latency_chart": 2, "traffic_chart": 2}


def test_a_result_is_shared_by_the_copies_each_session_gets():
    """st.cache_data hands each session its own copy of a result: `shared` knows them as one."""
    import pickle

    import pandas as pd

    made, bars = [], charts.bars

    def build(df, *, title):
        made.append(title)
        return bars(df, x="v", y="k", title=title, x_title="v")

    result = pd.DataFrame({"k": ["a", "b"], "v": [1.0, 2.0]})
    result.attrs["result"] = "r-1"
    copies = [pickle.loads(pickle.dumps(result)) for _ in range(3)]
    for copy in copies:
        copy.attrs["copy"] = id(copy)
    build.__name__ = "bars"
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(charts, "bars", build)
        st.cache_resource.clear()
        figures = [widgets.shared(build, copy, title="t") for copy in copies]
        widgets.shared(build, copies[0].assign(v=[3.0, 4.0]), title="t")     # derived: new content
        st.cache_resource.clear()
    assert figures[0] is figures[1] is figures[2]
    assert made == ["t", "t"]


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


def test_the_typical_request_is_worked_out_once_for_every_viewer(counted_builds, monkeypatch):
    from dashboard import queries

    calls = []
    typical = queries.typical_percentiles

    @functools.wraps(typical)
    def counted(*args, **kwargs):
        calls.append(1)
        return typical(*args, **kwargs)

    monkeypatch.setattr(queries, "typical_percentiles", counted)
    first, *others = within_one_cache_life(lambda: [viewer() for _ in range(2)])
    assert all([m.value for m in o.metric] == [m.value for m in first.metric] for o in others)
    assert len(calls) == 2          # this period's and the previous one's, once each


def test_only_pure_functions_of_known_modules_are_shared():
    with pytest.raises(ValueError, match="is not a function of dashboard.charts, dashboard.queries"):
        widgets.shared(len, [1, 2])


def test_csv_is_made_on_click_not_at_every_rerun(counted_builds, monkeypatch):
    """The download buttons hold a callable: a rerun makes no CSV (each would be made per viewer)."""
    made = []
    monkeypatch.setattr(widgets, "redact", lambda text: made.append(text) or text)
    at = run_app(PAGE)
    assert {b.key for b in at.download_button} >= {"csv-endpoints", "csv-latency-over-time"}
    assert made == []
