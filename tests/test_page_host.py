"""AppTest of the Host page on a seeded store and an empty one."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from helpers import run_app
from seed_samples import seed_samples
from streamlit.testing.v1 import AppTest

from collectors.store import migrate, write

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "dashboard" / "app_pages" / "host.py")


@pytest.fixture
def seeded(tmp_path, monkeypatch):
    path = tmp_path / "perfdeck.duckdb"
    seed_samples(path)
    monkeypatch.setenv("PERFDECK_DB", str(path))
    return path


def run() -> AppTest:
    return run_app(PAGE)


def test_host_page_all_hosts(seeded):
    at = run()
    assert at.title[0].value == "Host"
    assert [h.value for h in at.subheader] == ["Disks", "Watched processes"]
    processes = next(d.value for d in at.dataframe if "rss_bytes" in d.value)
    assert set(processes["host"]) == {"web-1", "web-2"}
    assert sorted(processes["pid"]) == [50, 101, 102, 301]
    disks = next(d.value for d in at.dataframe if "mount" in d.value)
    assert disks["used_percent"].iloc[0] == 87.0
    config = json.loads(next(d for d in at.dataframe if "mount" in d.value).proto.columns)
    labels = [c["label"] for c in config.values() if "label" in c]
    assert len(labels) == 5
    assert len(labels) == len(set(labels))      # seen in the tour: two columns both titled "Used"
    assert len(at.get("plotly_chart")) == 6
    assert {b.key for b in at.download_button} >= {
        "csv-host-disks", "csv-host-processes", "csv-host-over-time", "csv-process-over-time"}
    assert not at.error and not at.warning and not at.info


def test_pick_one_host(seeded):
    at = run()
    at.selectbox(key="host").select("web-2").run()
    assert not at.exception
    processes = next(d.value for d in at.dataframe if "rss_bytes" in d.value)
    assert processes["pid"].tolist() == [301]


def test_empty_store_says_how_to_get_data(tmp_path, monkeypatch):
    path = tmp_path / "empty.duckdb"
    with write(path) as con:
        migrate(con)
    monkeypatch.setenv("PERFDECK_DB", str(path))
    at = run()
    assert len(at.info) == 1
    assert "perfdeck demo" in at.info[0].value and "perfdeck collect" in at.info[0].value
    assert not at.dataframe and not at.get("plotly_chart")
