"""Recorded names are text: every page, run in AppTest on a store whose endpoints, services, caches,
deploy versions, models and users are hostile markdown and HTML, shows them as text in markdown
contexts and as entities in Plotly figures. The same store drives tests/test_browser_hostile.py."""
from __future__ import annotations

import json
import re
import time
from pathlib import Path

import pytest
import streamlit as st
from streamlit.testing.v1 import AppTest

from collectors import sdk
from collectors.daemon import Collector

ROOT = Path(__file__).resolve().parent.parent
PAGES = sorted(p for p in (ROOT / "dashboard" / "app_pages").glob("*.py") if p.name != "actions.py")
EVIL = "evil.example"
HOSTILE = [
    f"![img](http://{EVIL}/md.png)",
    f"<img src=http://{EVIL}/html.png>",
    f"<a href=http://{EVIL}/link>click</a>",
    "<a href=javascript:alert(1)>js</a>",
    "[link](javascript:alert(1))",
    f"x` ![tick](http://{EVIL}/tick.png) `y",       # closes a code span it is put in
    f"http://{EVIL}/autolink www.{EVIL} me@{EVIL}",
    ":material/home: :red[red] $x^2$ *em* <b>bold</b>",
    "\u202egnp.exe \u2066isolate\u2069",
]
# What must never reach a markdown element unescaped, or a Plotly figure as a tag.
MARKDOWN_TELLS = ["![", "](http", "](javascript", "<img", "<a ", ":material/home:", ":red[", "$x^2$", "http://",
                  "www.evil", "\u202e", "` ![", "*em*"]
PLOTLY_TELLS = ["<img", "<a ", "<b>", "\u202e"]


def seed_hostile(store: Path, spool: Path) -> None:
    """Through the real path (SDK -> spool -> collector): each hostile string as a service, an endpoint,
    a cache and namespace, a deploy version, a model, a user; slow enough for the health checks to name them."""
    for i, name in enumerate(HOSTILE):
        # Ten minutes ago: a page's range ends at "now" rounded down, and must hold the deploys.
        sdk.configure(service=name if i % 2 else "api", transport=f"spool:{spool}", flush_interval=60,
                      clock=lambda: time.time() - 600)
        sdk.mark_deploy(name)
        for n in range(30):
            rid = f"r-{i}-{n}"
            sdk.record_request(name, 4000.0 + n, status=500 if n % 3 == 0 else 200, request_id=rid, user=name)
            sdk.record_cache(name, hit=n % 4 == 0, lookup_ms=2.0, namespace=name)
            sdk.record_llm_call(name, 1000, 100, request_id=rid, endpoint=name, user=name, latency_ms=800)
        assert sdk.flush(5)
    sdk.shutdown()
    Collector(store, spool_dir=spool).run_once()


@pytest.fixture(scope="module")
def hostile_store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("hostile")
    store = tmp / "perfdeck.duckdb"
    seed_hostile(store, tmp / "spool")
    return store


def _markdown_texts(at: AppTest) -> list[str]:
    out = []
    for kind in ("markdown", "caption", "error", "warning", "info", "success", "title", "subheader", "header"):
        out += [e.value for e in getattr(at, kind)]
    out += [e.label for e in at.expander]
    for m in at.metric:
        out += [m.label, m.proto.help]
    out += [e.proto.body for e in at.get("badge")] if at.get("badge") else []
    return out


def _figures(at: AppTest) -> list[str]:
    return [e.proto.spec for e in at.get("plotly_chart")]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.stem)
def test_every_page_shows_hostile_names_as_text(hostile_store, page, monkeypatch, tmp_path):
    monkeypatch.setenv("PERFDECK_DB", str(hostile_store))
    monkeypatch.setenv("PERFDECK_CONFIG", str(tmp_path / "none.toml"))
    st.cache_data.clear()
    at = AppTest.from_file(str(page), default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    for text in _markdown_texts(at):
        # What markdown reads as markup: not escaped characters, not a fenced code block (literal text;
        # the page keeps backticks out of what it puts in one).
        bare = re.sub(r"\\.", "", re.sub(r"```[a-z]*\n[^`]*```", "", text))
        assert not [t for t in MARKDOWN_TELLS if t in bare], text
    for spec in _figures(at):
        for text in _strings(json.loads(spec)):
            assert not [t for t in PLOTLY_TELLS if t in text], (page.stem, text)


def _strings(value):
    """Every string in a figure's JSON: Plotly reads tags in titles, names, hover, annotations and ticks."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list):
        for v in value:
            yield from _strings(v)


def test_the_overview_names_the_hostile_endpoints(hostile_store, monkeypatch, tmp_path):
    """The store really holds the names and the pages really show them (as text): not a vacuous pass."""
    monkeypatch.setenv("PERFDECK_DB", str(hostile_store))
    monkeypatch.setenv("PERFDECK_CONFIG", str(tmp_path / "none.toml"))
    st.cache_data.clear()
    at = AppTest.from_file(str(ROOT / "dashboard" / "app_pages" / "overview.py"), default_timeout=60)
    at.run()
    figures = " ".join(s for spec in _figures(at) for s in _strings(json.loads(spec)))
    assert "&lt;a href=http://evil.example/link&gt;" in figures          # a deploy marker, as text
    endpoints = next(d.value for d in at.dataframe if "endpoint" in d.value)
    assert set(HOSTILE[:-1]) <= set(endpoints["endpoint"])       # (the SDK cleans bidi controls itself)
