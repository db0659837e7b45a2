"""AppTest of the Caches page's Redis sub-sections (namespaces with the share sampled, memory by data
type, biggest keys, commands, clients) on a store the real Redis sampler filled from a real Redis."""
from __future__ import annotations

import pytest
from helpers import run_app, shown_text
from test_page_caches import PAGE
from test_redis_depth import collect, load_big_list_after_first_thousand
from test_sampler_redis import Server

from collectors.samplers.redis import RedisSampler
from collectors.store import migrate, write

SECTIONS = ["Memory by key namespace", "Memory by data type", "Biggest keys", "Commands", "Connected clients",
            "Slow log"]


@pytest.fixture
def server():
    srv = Server().start()
    yield srv
    srv.kill()


@pytest.fixture
def store(tmp_path, monkeypatch):
    path = tmp_path / "perfdeck.duckdb"
    with write(path) as con:
        migrate(con)
    monkeypatch.setenv("PERFDECK_DB", str(path))
    return path


def _a_minute_ago(store) -> None:
    """The page's range ends at "now" rounded down to 10 s: the samples just taken move before it."""
    with write(store) as con:
        con.execute("UPDATE redis_metrics SET ts = ts - INTERVAL 1 MINUTE")


def _headings(at) -> list[str]:
    return [m.value.split("**")[1] for m in at.markdown if m.value.startswith("**")]


COLUMNS = {"redis-biggest-keys": "key", "redis-memory-by-type": "sampled_bytes", "redis-commands": "usec_per_call",
           "redis-clients": "perfdeck", "redis-namespaces": "namespace"}


def _frame(at, name: str):
    """The table shown for `name` (with its CSV download), known by a column of its own."""
    assert f"csv-{name}" in [b.key for b in at.download_button]
    [frame] = [d.value for d in at.dataframe if COLUMNS[name] in d.value.columns]
    return frame


def test_redis_sections_from_a_real_redis(server, store):
    c = server.client()
    name = load_big_list_after_first_thousand(c)
    c.hset("user:1", mapping={f"f{i}": "v" for i in range(100)})
    worker = server.client()
    worker.client_setname("worker**[x](y)")
    worker.ping()
    s = RedisSampler(name="cache", url=server.url(), interval=1, sample_keys=1000, top_keys=5)
    while "redis.scan_wrapped" not in collect(s, store):
        pass
    for i in range(40):
        c.get(f"str:{i}")
    collect(s, store)
    _a_minute_ago(store)

    at = run_app(PAGE)
    assert _headings(at) == SECTIONS
    keys = _frame(at, "redis-biggest-keys")
    assert keys.iloc[0]["key"] == name and keys.iloc[0]["type"] == "list"
    types = _frame(at, "redis-memory-by-type")
    assert set(types["type"]) == {"string", "list", "hash"} and types.iloc[0]["type"] == "list"
    commands = _frame(at, "redis-commands")
    assert commands["command"].tolist() == ["get"] and commands["calls"].tolist() == [40]
    clients = _frame(at, "redis-clients")
    assert set(clients["name"]) == {"worker**[x](y)", "perfdeck-sampler", "(no name)"}
    assert clients.set_index("name").loc["perfdeck-sampler", "perfdeck"] == "yes"
    namespaces = _frame(at, "redis-namespaces")
    assert "big:list" in set(namespaces["namespace"])
    # Beside the namespace table: which pass it adds up and what share it saw.
    [coverage] = [shown_text(x.value) for x in at.caption if "sampled" in x.value and "keys (" in x.value]
    assert coverage.startswith("cache: sampled 3,002 of 3,002 keys (100 %)")
    assert "a whole pass over the keyspace" in coverage


def test_each_section_says_why_it_is_empty(server, store):
    s = RedisSampler(name="cache", url=server.url(), interval=1, sample_keys=0, clients=False)
    collect(s, store)
    collect(s, store)
    _a_minute_ago(store)
    at = run_app(PAGE)
    assert _headings(at) == SECTIONS
    captions = [x.value for x in at.caption]
    for why in ("No namespace sample in this range", "No data types in this range", "No keys measured",
                "No commands were called in this range", "No client list in this range"):
        assert sum(why in caption for caption in captions) == 1, why
    assert not at.warning
