"""The demo's "Deploy a slow build" switch: the file the dashboard writes, the sidebar toggle (AppTest),
and the live shop that picks the file up (a real SQLite shop, the real SDK spooling batches)."""
from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest

from collectors import sdk
from collectors.demo.live import SlowSwitch, run_live
from collectors.demo.workload import (
    SLOW_SEARCH_MAX_MS,
    VERSION_AFTER,
    VERSION_ROLLBACK,
    VERSION_SLOW,
    Shop,
    open_database,
    slow_search_delay_ms,
)
from dashboard.demo_switch import LABEL, SWITCH_FILE, describe, read_switch, switch_path, write_switch
from tests.helpers import OPERATOR, wait_for


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    engine = open_database(tmp_path_factory.mktemp("shop") / "shop.sqlite")
    yield engine
    engine.dispose()


class FakeClock:
    def __init__(self, now: float):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_switch_file_round_trip(tmp_path):
    path = tmp_path / SWITCH_FILE
    assert read_switch(path) == {"slow": False, "changed_at": None}          # no file: the switch is off
    assert write_switch(path, True, now=1000.0) == {"slow": True, "changed_at": 1000.0}
    assert json.loads(path.read_text()) == {"slow": True, "changed_at": 1000.0}
    assert read_switch(path) == {"slow": True, "changed_at": 1000.0}
    write_switch(path, False, now=1060.5)
    assert read_switch(path) == {"slow": False, "changed_at": 1060.5}
    assert [p.name for p in tmp_path.iterdir()] == [SWITCH_FILE]             # no temp file left behind
    path.write_text("{not json")
    assert read_switch(path) == {"slow": False, "changed_at": None}
    path.write_text('{"slow": "yes", "changed_at": 5}')
    assert read_switch(path) == {"slow": False, "changed_at": 5.0}           # only a JSON true turns it on


def test_switch_path_only_inside_the_demo(tmp_path, monkeypatch):
    monkeypatch.delenv("PERFDECK_DEMO_DIR", raising=False)
    assert switch_path() is None
    monkeypatch.setenv("PERFDECK_DEMO_DIR", str(tmp_path))
    assert switch_path() == tmp_path / SWITCH_FILE
    assert switch_path(tmp_path / "other") == tmp_path / "other" / SWITCH_FILE


def test_describe():
    assert describe({"slow": False, "changed_at": None}) == "Running v1.8.0."
    assert describe({"slow": True, "changed_at": 1000.0}, now=1030.0) == "v1.9.0 (slow build) deployed under a minute ago."
    assert describe({"slow": True, "changed_at": 1000.0}, now=1000.0 + 185) == "v1.9.0 (slow build) deployed 3 min ago."
    assert describe({"slow": False, "changed_at": 1000.0}, now=1000.0 + 60) == "Running v1.8.0 (rolled back 1 min ago)."


def _sidebar_app():
    from dashboard.actions.ui import operator_sidebar
    from dashboard.demo_switch import demo_switch

    operator_sidebar()
    demo_switch()


PASSWORD = "correct horse battery"


@pytest.fixture
def demo_dashboard(tmp_path, migrated_store, monkeypatch):
    """A demo dir and a store for the audit rows; no operator configured, nothing read from the cwd."""
    monkeypatch.setenv("PERFDECK_DEMO_DIR", str(tmp_path))
    monkeypatch.setenv("PERFDECK_DB", str(migrated_store))
    for var in ("PERFDECK_OPERATOR_PASSWORD_HASH", "PERFDECK_OPERATOR_EMAILS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)          # no .streamlit/secrets.toml here
    return tmp_path


def _audit(db) -> list[tuple]:
    from tests.helpers import query

    return query(db, "SELECT actor, action, target, outcome FROM action_audit WHERE action LIKE 'demo.%' ORDER BY id")


def _audit_results(db) -> list[str | None]:
    from tests.helpers import query

    return [r for (r,) in query(db, "SELECT result FROM action_audit WHERE action = 'demo.deploy' ORDER BY id")]


def _button(at, label: str):
    return next(b for b in at.sidebar.button if b.label == label)


def test_an_operator_confirms_the_switch_and_it_is_audited(demo_dashboard, migrated_store, monkeypatch):
    from streamlit.testing.v1 import AppTest

    from dashboard.actions.access import hash_password

    monkeypatch.setenv("PERFDECK_OPERATOR_PASSWORD_HASH", hash_password(PASSWORD))
    at = AppTest.from_function(_sidebar_app, default_timeout=30).run()
    at.sidebar.text_input[0].input(PASSWORD)
    at.sidebar.button[0].click().run()
    assert not at.exception, at.exception
    toggle = at.sidebar.toggle[0]
    assert toggle.label == LABEL and toggle.value is False and not toggle.disabled
    assert "v1.9.0" in toggle.help and "Compare" in toggle.help
    assert at.sidebar.caption[0].value == "Running v1.8.0."

    toggle.set_value(True).run()                         # asks first: the preview, nothing written yet
    assert not at.exception, at.exception
    assert at.sidebar.info[0].value.startswith("Deploys v1.9.0 to the demo shop")
    assert not (demo_dashboard / SWITCH_FILE).exists() and at.sidebar.toggle[0].value is True
    _button(at, "Cancel").click().run()
    assert at.sidebar.toggle[0].value is False and not at.sidebar.info
    assert not (demo_dashboard / SWITCH_FILE).exists()

    at.sidebar.toggle[0].set_value(True).run()
    _button(at, "Deploy").click().run()
    assert not at.exception, at.exception
    assert read_switch(demo_dashboard / SWITCH_FILE)["slow"] is True
    assert at.sidebar.toggle[0].value is True and not at.sidebar.info
    assert at.sidebar.caption[0].value == "v1.9.0 (slow build) deployed under a minute ago."
    assert _audit_results(migrated_store) == ["Deployed v1.9.0 (slow build)."]   # read later: no "ago"
    write_switch(demo_dashboard / SWITCH_FILE, False)    # flipped elsewhere (another tab): the file wins
    at.run()
    assert at.sidebar.toggle[0].value is False
    assert at.sidebar.caption[0].value.startswith("Running v1.8.0 (rolled back")

    at.sidebar.toggle[0].set_value(True).run()
    _button(at, "Deploy").click().run()
    at.sidebar.toggle[0].set_value(False).run()
    assert at.sidebar.info[0].value.startswith("Rolls the demo shop back to v1.8.0")
    _button(at, "Roll back").click().run()
    assert read_switch(demo_dashboard / SWITCH_FILE)["slow"] is False
    assert _audit(migrated_store) == [("operator", "demo.deploy", "demo:shop", "done")] * 3


@pytest.mark.parametrize("configured", [False, True])
def test_a_viewer_finds_the_switch_disabled(demo_dashboard, migrated_store, monkeypatch, configured):
    from streamlit.testing.v1 import AppTest

    from dashboard.actions.access import hash_password, operator_config

    if configured:
        monkeypatch.setenv("PERFDECK_OPERATOR_PASSWORD_HASH", hash_password(PASSWORD))
    at = AppTest.from_function(_sidebar_app, default_timeout=30).run()
    assert not at.exception, at.exception
    toggle = at.sidebar.toggle[0]
    assert toggle.label == LABEL and toggle.disabled
    lock = next(c.value for c in at.sidebar.caption if c.value.startswith(":material/lock:"))
    assert lock.endswith("Log in as operator above." if configured else operator_config(secrets={}).hint)
    assert not (demo_dashboard / SWITCH_FILE).exists() and _audit(migrated_store) == []


def test_the_action_refuses_a_viewer_and_audits_it(demo_dashboard, migrated_store, operator):
    from dashboard.actions import VIEWER, InvalidInput, NotAuthorized, make_preview, run_action
    from dashboard.demo_switch import demo_action

    action = demo_action()
    params, preview = make_preview(action, {"slow": True}, actor=OPERATOR)
    with pytest.raises(NotAuthorized):
        run_action(action, params, preview, actor=VIEWER)
    assert not (demo_dashboard / SWITCH_FILE).exists()
    with pytest.raises(InvalidInput):
        make_preview(action, {"slow": "yes"}, actor=OPERATOR)
    run_action(action, params, preview, actor=operator)
    assert read_switch(demo_dashboard / SWITCH_FILE)["slow"] is True
    assert _audit(migrated_store) == [("anonymous", "demo.deploy", "demo:shop", "refused"),
                                      ("test-operator", "demo.deploy", "demo:shop", "done")]


def test_no_switch_outside_the_demo(monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.delenv("PERFDECK_DEMO_DIR", raising=False)
    at = AppTest.from_function(_sidebar_app, default_timeout=30).run()
    assert not at.exception and len(at.sidebar.toggle) == 0


def test_slow_search_ramp():
    assert slow_search_delay_ms(0) == 0.0
    assert slow_search_delay_ms(2) == 800.0
    assert slow_search_delay_ms(4) == SLOW_SEARCH_MAX_MS == 1600.0
    assert slow_search_delay_ms(30) == 1600.0
    assert slow_search_delay_ms(-1) == 0.0


def _spooled(spool: Path) -> list[dict]:
    return [json.loads(p.read_bytes()) for p in sorted(spool.glob("*.batch"))]


def _deploys(spool: Path) -> list[str]:
    return [d["version"] for batch in _spooled(spool) for d in batch.get("deploys", [])]


def test_live_shop_follows_the_switch(engine, tmp_path):
    spool, path = tmp_path / "spool", tmp_path / SWITCH_FILE
    sdk.configure(service="shop-api", transport=f"spool:{spool}", flush_interval=0.1, control=False)
    shop = Shop(engine, version=VERSION_AFTER, seed=3)
    switch = SlowSwitch(path, shop)
    assert switch.slow is False and shop.slow_since is None
    stop = threading.Event()
    live = threading.Thread(target=run_live, args=(shop, stop, lambda _ts: 20.0), kwargs={"poll": switch.poll})
    live.start()
    try:
        write_switch(path, True)
        assert wait_for(lambda: VERSION_SLOW in _deploys(spool), timeout=30), _deploys(spool)
        assert shop.version == VERSION_SLOW and shop.slow_since is not None
        write_switch(path, True)                         # rewritten, unchanged: no second marker
        write_switch(path, False)
        assert wait_for(lambda: _deploys(spool)[-1:] == [VERSION_ROLLBACK], timeout=30), _deploys(spool)
    finally:
        stop.set()
        live.join(30)
    sdk.flush(10)
    assert _deploys(spool) == [VERSION_SLOW, VERSION_ROLLBACK]              # the deploy, then the rollback
    assert shop.version == VERSION_AFTER and shop.slow_since is None
    served = sum(b.get("requests", {}).get("n", 0) for b in _spooled(spool))
    assert served > 0


def test_search_slows_down_after_the_switch(engine, tmp_path):
    clock = FakeClock(1_000_000.0)
    sdk.configure(service="shop-api", transport=f"spool:{tmp_path / 'spool'}", clock=clock, control=False)
    shop = Shop(engine, version=VERSION_AFTER, seed=4, clock=clock)
    path = tmp_path / SWITCH_FILE
    switch = SlowSwitch(path, shop)
    write_switch(path, True, now=clock.now)
    assert switch.poll(force=True) is True and shop.slow_since == clock.now
    assert switch.poll(force=True) is False                                  # nothing new in the file

    deployed_at = clock.now

    def simulated_ms(minutes: float) -> float:          # the stand-in wait the request added to its own time
        clock.now = deployed_at + minutes * 60
        trace = shop.serve("search")
        assert trace.duration_ms > trace.external_ms          # its own time (drawn) comes on top
        return trace.external_ms

    at_start, at_2, at_5 = simulated_ms(0), simulated_ms(2), simulated_ms(5)
    # Jitter is lognormal (sigma 0.15): a factor well within 0.5..2.
    assert at_start == 0.0
    assert 800 * 0.5 < at_2 < 800 * 2 + 50
    assert 1600 * 0.5 < at_5 < 1600 * 2 + 50
    write_switch(path, False, now=clock.now)
    assert switch.poll(force=True) is True
    assert simulated_ms(6) == 0.0                                            # rolled back: no wait at all
    sdk.flush(10)
    assert _deploys(tmp_path / "spool") == [VERSION_SLOW, VERSION_ROLLBACK]


def test_switch_state_survives_a_restart(engine, tmp_path):
    spool, path = tmp_path / "spool", tmp_path / SWITCH_FILE
    clock = FakeClock(9000.0)
    sdk.configure(service="shop-api", transport=f"spool:{spool}", clock=clock, control=False)
    write_switch(path, True, now=5000.0)
    shop = Shop(engine, version=VERSION_AFTER, seed=5, clock=clock)
    switch = SlowSwitch(path, shop, history_version=VERSION_SLOW)    # the store ends at the slow build
    assert switch.slow and shop.version == VERSION_SLOW and shop.slow_since == 5000.0   # its ramp goes on
    assert switch.poll(force=True) is False
    sdk.flush(10)
    assert _deploys(spool) == []                                     # unchanged: no new marker
    fresh = Shop(engine, version=VERSION_AFTER, seed=6, clock=clock)
    SlowSwitch(path, fresh, history_version=VERSION_AFTER)           # a new or gap-filled history
    assert fresh.version == VERSION_SLOW and fresh.slow_since == 9000.0                 # deployed again
    write_switch(path, False, now=9500.0)
    back = Shop(engine, version=VERSION_AFTER, seed=7, clock=clock)
    SlowSwitch(path, back, history_version=VERSION_SLOW)             # switched off while it was down
    assert back.version == VERSION_AFTER and back.slow_since is None
    SlowSwitch(path, Shop(engine, version=VERSION_AFTER, seed=8, clock=clock), history_version=VERSION_AFTER)
    SlowSwitch(path, Shop(engine, version=VERSION_AFTER, seed=9, clock=clock), history_version=VERSION_ROLLBACK)
    sdk.flush(10)
    assert _deploys(spool) == [VERSION_SLOW, VERSION_ROLLBACK]       # the new deploy, then the rollback
