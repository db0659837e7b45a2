"""AppTest of the Compare page on a seeded store: api v1.5.0 made POST /checkout ×1.6 slower and v1.5.1
undid it (tests/seed_store.py); deploy mode, two-window mode, the headline, the table and the charts."""
from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path

import pytest
from helpers import run_app, shown_text
from seed_store import DEPLOYS, REGRESSION, seed_store
from streamlit.testing.v1 import AppTest

from collectors.store import migrate, utcnow, write
from dashboard.app_pages.compare import COLUMNS

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "dashboard" / "app_pages" / "compare.py")



@pytest.fixture
def seeded(tmp_path, monkeypatch):
    path = tmp_path / "perfdeck.duckdb"
    now = utcnow()
    seed_store(path, now=now)
    monkeypatch.setenv("PERFDECK_DB", str(path))
    return now.replace(second=0, microsecond=0)


def endpoint_picker(at: AppTest):
    return next(s for s in at.selectbox if s.label == "Endpoint")


def deploy_labels(at: AppTest) -> list[str]:
    return list(at.selectbox(key="compare_deploy").options)     # as shown: the formatted labels


def test_deploy_mode_lists_deploys_newest_first_and_flags_the_regression(seeded):
    at = run_app(PAGE)
    labels = deploy_labels(at)
    expected = sorted(((seeded - age, v, s) for age, s, v, _ in DEPLOYS), reverse=True)
    assert labels == [f"{v} · {s} · {ts:%Y-%m-%d %H:%M} UTC" for ts, v, s in expected]
    # The newest deploy (v1.5.1) fixed POST /checkout: an improvement, no regression.
    assert "No significant regression" in at.success[0].value
    table = at.dataframe[0].value
    assert list(table.columns) == list(COLUMNS)
    fixed = table[table["endpoint"] == REGRESSION[1]].iloc[0]
    assert fixed["verdict"] == "improvement" and set(table["service"]) == {"api"}

    at.selectbox(key="compare_deploy").select_index(next(i for i, x in enumerate(labels) if x.startswith("v1.5.0")))
    at.run()
    assert not at.exception, at.exception
    headline = at.error[0].value
    assert headline.startswith("**1 endpoint regressed significantly.** Worst: POST /checkout p95 ")
    assert "95 % CI ×" in headline and "p < 0.001" in shown_text(headline)
    table = at.dataframe[0].value
    assert table.iloc[0]["endpoint"] == "POST /checkout" and table.iloc[0]["verdict"] == "regression"
    # Its p95 rests on ~100 requests a side at night, so the seeded factor is checked against the interval shown.
    low, high = map(float, re.findall(r"×([\d.]+)", table.iloc[0]["ci"]))
    assert low <= REGRESSION[2] <= high and low > 1.10
    assert (table["verdict"].iloc[1:] != "regression").all()
    assert len(at.get("plotly_chart")) == 2       # the ratio forest plot and the latency across both windows
    assert {b.key for b in at.download_button} >= {"csv-compare", "csv-compare-latency"}
    assert endpoint_picker(at).value == "POST /checkout  ·  api"


def test_span_and_endpoint_choices(seeded):
    at = run_app(PAGE)
    at.segmented_control(key="compare_span").set_value("15 min").run()
    assert not at.exception, at.exception
    endpoint_picker(at).select("All endpoints").run()
    assert not at.exception, at.exception
    assert len(at.get("plotly_chart")) == 2


def test_the_endpoint_picker_starts_again_on_the_worst_endpoint_of_another_deploy(seeded):
    """Found when tried as a new user would: after picking another deploy, the picker still showed the
    previous comparison's endpoint while the chart drew the new worst one."""
    at = run_app(PAGE)
    endpoint_picker(at).select("All endpoints").run()
    labels = deploy_labels(at)
    at.selectbox(key="compare_deploy").select_index(next(i for i, x in enumerate(labels) if x.startswith("v1.5.0")))
    at.run()
    assert not at.exception, at.exception
    worst = at.dataframe[0].value.iloc[0]
    assert endpoint_picker(at).value == f"{worst['endpoint']}  ·  {worst['service']}" == "POST /checkout  ·  api"


def test_two_windows_mode(seeded):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["compare_mode"] = "Two windows"
    slow_from = seeded - DEPLOYS[2][0]               # v1.5.0: POST /checkout slower from here
    at.session_state["cmp_before_from"] = slow_from - timedelta(hours=2)
    at.session_state["cmp_before_to"] = slow_from
    at.session_state["cmp_after_from"] = slow_from
    at.session_state["cmp_after_to"] = slow_from + timedelta(hours=2)
    at.run()
    assert not at.exception, at.exception
    assert "POST /checkout" in at.error[0].value
    table = at.dataframe[0].value
    assert {"api", "worker"} == set(table["service"])            # all services when none is picked
    assert table.iloc[0]["endpoint"] == "POST /checkout"
    # Two calm windows of the same length: nothing flagged.
    at.session_state["cmp_after_from"] = slow_from - timedelta(hours=4)
    at.session_state["cmp_after_to"] = slow_from - timedelta(hours=2)
    at.run()
    assert not at.exception, at.exception
    assert not at.error and "No significant regression" in at.success[0].value


def test_two_windows_mode_warns_about_a_reversed_window(seeded):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["compare_mode"] = "Two windows"
    at.session_state["cmp_before_from"] = seeded
    at.session_state["cmp_before_to"] = seeded - timedelta(hours=1)
    at.run()
    assert not at.exception, at.exception
    assert "ends before it starts" in at.warning[0].value
    assert not at.dataframe


def test_service_filter_limits_the_deploys(seeded):
    at = run_app(PAGE)
    at.sidebar.selectbox(key="service").select("worker").run()
    assert not at.exception, at.exception
    assert [x.split(" · ")[:2] for x in deploy_labels(at)] == [["v0.9.0", "worker"]]
    assert set(at.dataframe[0].value["service"]) == {"worker"}


def test_no_deploys_and_no_store(tmp_path, monkeypatch):
    path = tmp_path / "empty.duckdb"
    with write(path) as con:
        migrate(con)
    monkeypatch.setenv("PERFDECK_DB", str(path))
    at = run_app(PAGE)
    assert "No deploy has been recorded" in at.info[0].value and "perfdeck deploy" in at.info[0].value
    monkeypatch.setenv("PERFDECK_DB", str(tmp_path / "missing.duckdb"))
    at = run_app(PAGE)
    assert "perfdeck demo" in at.info[0].value


# --- Deploy markers on the time charts of the other pages -------------------------------------------
def deploy_lines(chart) -> list[str]:
    """The versions a Plotly chart (AppTest element) marks as deploys: dashed full-height lines."""
    import json
    spec = json.loads(chart.proto.spec)
    lines = [s for s in spec["layout"].get("shapes", []) if s.get("line", {}).get("dash") == "dash"
             and s.get("yref") == "paper"]
    labels = [a["text"] for a in spec["layout"].get("annotations", []) if "deploy" in a.get("hovertext", "")]
    assert len(lines) == len(labels)
    return sorted(labels)


def chart_titles(at: AppTest) -> dict:
    import json
    return {json.loads(c.proto.spec)["layout"]["title"]["text"]: c for c in at.get("plotly_chart")}


@pytest.mark.parametrize("page, titles", [
    ("caches.py", ["Keyspace hit rate", "Commands per second", "Evictions and expirations",
                   "Memory: used, peak and maxmemory", "Hit rate", "Lookup time"]),
    ("database.py", ["Buffer cache hit ratio", "Connections by state"]),
])
def test_time_charts_mark_the_deploys(tmp_path, monkeypatch, page, titles):
    from seed_samples import seed_samples
    path = tmp_path / "perfdeck.duckdb"
    seed_store(path, days=1)
    seed_samples(path)
    monkeypatch.setenv("PERFDECK_DB", str(path))
    at = run_app(str(ROOT / "dashboard" / "app_pages" / page))
    charts = chart_titles(at)
    for title in titles:      # the last 24 hours hold api's v1.5.0 and v1.5.1
        assert deploy_lines(charts[title]) == ["v1.5.0", "v1.5.1"], title


def test_chart_builders_take_deploys():
    import pandas as pd

    from dashboard import charts
    now = utcnow().replace(second=0, microsecond=0)
    deploys = pd.DataFrame({"ts": [now - timedelta(hours=1)], "service": ["api"], "version": ["v9"], "host": ["h"]})
    frame = pd.DataFrame({"time": [now - timedelta(hours=2), now], "key": ["a", "a"], "y": [1.0, 2.0]})
    for fig in (charts.stacked_bars(frame, y="y", stack="key", title="t", y_title="y", deploys=deploys),
                charts.stacked_area(frame, y="y", stack="key", title="t", y_title="y", deploys=deploys)):
        assert [a.text for a in fig.layout.annotations] == ["v9"]
        assert fig.layout.shapes[0].x0 == deploys.ts[0]
    shaded = charts.shade_windows(charts.latency_chart(frame.head(0), deploys), {
        "before": (now - timedelta(hours=2), now - timedelta(hours=1)), "after": (now - timedelta(hours=1), now)})
    assert [s.type for s in shaded.layout.shapes] == ["line", "rect", "rect"]


# --- The verdict follows the p95; missing values; the latency chart -------------------------------------
def two_windows_on(path, monkeypatch, before, after) -> AppTest:
    monkeypatch.setenv("PERFDECK_DB", str(path))
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.session_state["compare_mode"] = "Two windows"
    for key, value in zip(("cmp_before_from", "cmp_before_to", "cmp_after_from", "cmp_after_to"), (*before, *after)):
        at.session_state[key] = value
    at.run()
    assert not at.exception, at.exception
    return at


def test_a_slower_tail_is_flagged_though_the_body_is_faster(store, monkeypatch):
    from test_compare import AFTER, BEFORE, seed, tail_events
    at = two_windows_on(seed(store, tail_events()), monkeypatch, BEFORE, AFTER)
    assert at.error[0].value.startswith("**1 endpoint regressed significantly.** Worst: /tail p95 ")
    assert "body: faster" in at.error[0].value
    rows = at.dataframe[0].value.set_index("endpoint")
    assert rows.loc["/tail", "verdict"] == "regression" and rows.loc["/tail", "body"] == "faster"
    assert rows.loc["/noise", "verdict"] == "no change" and rows.loc["/noise", "body"] == "same"
    assert any("whole 95 % interval of its p95 ratio" in c.value for c in at.caption)     # the rule, on the page


def test_only_noise_is_no_change(store, monkeypatch):
    from test_compare import AFTER, BEFORE, seed, tail_events
    events = tail_events()
    at = two_windows_on(seed(store, events[events.service == "catalog"]), monkeypatch, BEFORE, AFTER)
    assert not at.error and "No significant regression" in at.success[0].value
    table = at.dataframe[0].value
    assert table[["endpoint", "body", "verdict"]].values.tolist() == [["/noise", "same", "no change"]]


def test_too_few_requests_show_a_dash_and_p95_is_drawn_over_p99(store, monkeypatch):
    import json

    from test_compare import AFTER, BEFORE, make_events, seed
    at = two_windows_on(seed(store, make_events()), monkeypatch, BEFORE, AFTER)
    rare = at.dataframe[0].value.set_index("endpoint").loc["/rare"]
    assert rare["verdict"] == "too few requests"
    assert (rare["ci"], rare["p_value"], rare["body"]) == ("—", "—", "—")
    shown = at.dataframe[0].value.set_index("endpoint").loc["/slow"]
    assert shown["ci"].startswith("×1.") and shown["p_value"] == "< 0.001"
    latency = json.loads(at.get("plotly_chart")[1].proto.spec)["data"]
    assert [t["name"] for t in latency][-1] == "p95"
    assert next(t for t in latency if t["name"] == "p99")["line"]["dash"] == "dot"


def test_the_table_fits_the_page_and_the_legend_reads_p50_p95_p99(store, monkeypatch):
    """Seen in the tour: the table ran past the page ("p99 before…" cut) and the legend read p50, p99, p95."""
    import json

    from test_compare import AFTER, BEFORE, make_events, seed
    at = two_windows_on(seed(store, make_events()), monkeypatch, BEFORE, AFTER)
    table = at.dataframe[0]
    assert list(table.proto.column_order) == ["service", "endpoint", "verdict", "p95_ratio", "ci", "body", "p_value",
                                              "p95", "p50", "p99"]
    slow = table.value.set_index("endpoint").loc["/slow"]
    assert re.fullmatch(r"[\d,]+\.\d → [\d,]+\.\d", slow["p95"]) and re.fullmatch(r"[\d,]+\.\d → [\d,]+\.\d", slow["p99"])
    latency = json.loads(at.get("plotly_chart")[1].proto.spec)["data"]
    ranked = sorted((t for t in latency if "legendrank" in t), key=lambda t: t["legendrank"])
    assert [t["name"] for t in ranked] == ["p50", "p95", "p99"]
