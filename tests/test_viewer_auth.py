"""Viewer login and who may preview, through the real app in AppTest and the real framework, against real
DuckDB stores. Fakes, said where used: AppTest cannot send an X-Forwarded-For header or connect from an
address, so the lockout tests replace st.context with a stand-in that has `ip_address` and `headers`
(what the real one reads from the websocket). Time is injected into the guard and the audit (no sleeping)."""
from __future__ import annotations

from pathlib import Path

import pytest
from helpers import query
from seed_store import seed_store
from streamlit.testing.v1 import AppTest

from dashboard.actions import access, catalog, ui
from dashboard.actions.access import hash_password
from dashboard.actions.framework import ANONYMOUS, VIEWER, NotAuthorized, Preview, field_options, make_preview, run_action
from dashboard.actions.login_guard import LoginGuard, RefusalAudit

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "dashboard" / "app.py")
VIEWER_PASSWORD = "viewer password 1"
OPERATOR_PASSWORD = "operator password 1"
T0 = 1_700_000_040.0       # on a minute


@pytest.fixture(scope="module")
def hashes():
    return hash_password(VIEWER_PASSWORD, n=2**10), hash_password(OPERATOR_PASSWORD, n=2**10)


class Clock:
    def __init__(self):
        self.now = T0

    def __call__(self):
        return self.now

    def sleep(self, seconds):
        self.now += seconds


@pytest.fixture
def env(tmp_path, monkeypatch, hashes):
    path = tmp_path / "perfdeck.duckdb"
    seed_store(path, days=1)
    monkeypatch.setenv("PERFDECK_DB", str(path))
    for var in ("PERFDECK_OPERATOR_EMAILS", "PERFDECK_VIEWER_EMAILS", "PERFDECK_TRUSTED_PROXIES",
                "PERFDECK_REDIS_URLS", "PERFDECK_DATABASE_URLS", "PERFDECK_CONFIG", "PERFDECK_DEMO_DIR",
                "FORWARDED_ALLOW_IPS"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("PERFDECK_VIEWER_PASSWORD_HASH", hashes[0])
    monkeypatch.setenv("PERFDECK_OPERATOR_PASSWORD_HASH", hashes[1])
    monkeypatch.chdir(tmp_path)          # no perfdeck.toml, no .streamlit/secrets.toml here
    clock = Clock()
    monkeypatch.setattr(access, "GUARD", LoginGuard(clock=clock, sleep=clock.sleep))
    monkeypatch.setattr(ui, "REFUSALS", RefusalAudit(ui._insert_refusal, ui._update_refusal, clock=clock))
    return path, clock


def app() -> AppTest:
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception, at.exception
    return at


def gate_login(at: AppTest, password: str) -> AppTest:
    at.text_input[0].input(password)
    at.button[0].click().run()
    assert not at.exception, at.exception
    return at


def test_nothing_of_a_page_is_drawn_before_login(env):
    at = app()
    assert [t.value for t in at.title] == ["perfdeck"]
    assert [w.label for w in at.text_input] == ["Password"]
    assert not at.sidebar.markdown and not at.dataframe and not at.metric and not at.get("plotly_chart")
    assert at.caption[0].value == ":material/lock: Log in to view this dashboard."
    at.switch_page("app_pages/actions.py").run()     # a page's URL gets the same form
    assert [t.value for t in at.title] == ["perfdeck"] and not at.dataframe


def test_a_wrong_password_is_refused_and_the_right_one_shows_the_page(env):
    at = gate_login(app(), "not it")
    assert at.error[0].value == "wrong password (4 attempts left; next in 1 s)"
    assert [t.value for t in at.title] == ["perfdeck"] and not at.dataframe
    env[1].now += 1
    at = gate_login(at, VIEWER_PASSWORD)
    assert "perfdeck" not in [t.value for t in at.title] and at.title, [t.value for t in at.title]
    assert any(m.value == ":material/visibility: **Viewer** · viewer" for m in at.sidebar.markdown)
    rows = query(env[0], "SELECT actor, action, outcome, result FROM action_audit ORDER BY id")
    assert rows == [("viewer", "viewer.login", "refused", "1 refused attempt"), ("viewer", "viewer.login", "done", None)]


def test_the_operator_password_also_opens_the_pages(env):
    at = app()
    assert [t.value for t in at.title] == ["perfdeck"] and not at.sidebar.markdown
    at = gate_login(at, OPERATOR_PASSWORD)
    assert any(m.value == ":material/admin_panel_settings: **Operator** · operator" for m in at.sidebar.markdown)


def test_a_viewer_sees_every_action_but_no_parameters_preview_or_run(env, redis_url, monkeypatch, tmp_path):
    monkeypatch.setenv("PERFDECK_REDIS_URLS", f"cache={redis_url}")
    monkeypatch.setenv("PERFDECK_DATABASE_URLS", f"lite=sqlite:///{tmp_path / 'app.sqlite'},"
                       "pg=postgresql://perfdeck@127.0.0.1:1/none")   # nothing listens: a viewer never connects
    (tmp_path / "spool" / "control").mkdir(parents=True)      # an app process announced itself here
    monkeypatch.setenv("PERFDECK_SPOOL", str(tmp_path / "spool"))
    at = gate_login(app(), VIEWER_PASSWORD)
    at.switch_page("app_pages/actions.py").run()
    for area, actions in catalog.AREAS.items():
        at.segmented_control(key="area").set_value(area).run()
        for action in actions:
            at.selectbox(key="action").set_value(action.name).run()
            assert not at.exception, at.exception
            keys = [w.key for w in [*at.button, *at.selectbox, *at.text_input, *at.multiselect, *at.number_input]]
            assert not [k for k in keys if k and k.startswith(f"action-{action.name}:")], (action.name, keys)
            assert any(c.value.startswith(":material/lock: Previewing and running actions needs the operator role")
                       for c in at.caption), action.name
    assert query(env[0], "SELECT count(*) FROM action_audit WHERE action NOT LIKE '%.login'")[0][0] == 0


@pytest.mark.parametrize("actor", [VIEWER, ANONYMOUS], ids=["viewer", "anonymous"])
def test_the_framework_refuses_every_preview_and_run_to_a_non_operator(actor, migrated_store, redis_url, monkeypatch):
    monkeypatch.setenv("PERFDECK_REDIS_URLS", f"cache={redis_url}")
    every = [cls(migrated_store) if cls.kind == "store" else cls() for area in catalog.AREAS.values() for cls in area]
    for action in every:
        params = {"target": "cache"} if action.kind == "redis" else {}
        with pytest.raises(NotAuthorized, match="previewing needs the operator role"):
            make_preview(action, params, actor=actor, db=migrated_store)
        with pytest.raises(NotAuthorized, match="running actions needs the operator role"):
            run_action(action, params, Preview("x"), actor=actor, db=migrated_store)
        for field in action.fields():
            if field.options is not None:
                with pytest.raises(NotAuthorized, match="needs the operator role"):
                    field_options(action, field, params, actor=actor)
    rows = query(migrated_store, "SELECT actor, action, outcome, error FROM action_audit ORDER BY id")
    assert len(rows) == 2 * len(every)
    assert {(r[0], r[2]) for r in rows} == {("anonymous", "refused")}
    assert [r[3] for r in rows[:2]] == ["previewing: the operator role is needed", "the operator role is needed"]
    assert [r[1] for r in rows[::2]] == [a.name for a in every]


# -- guessing through the real sidebar, with a stand-in st.context ------------------------------------

class StandInContext:
    """What ui reads from st.context: the address Streamlit's server reports and the request headers."""
    def __init__(self):
        self.ip_address, self.headers = None, {}


def sidebar():
    from dashboard.actions.ui import operator_sidebar
    operator_sidebar()


def operator_attempt(at: AppTest, password: str) -> AppTest:
    at.sidebar.text_input[0].input(password)
    at.sidebar.button[0].click().run()
    assert not at.exception, at.exception
    return at


@pytest.fixture
def context(env, monkeypatch):
    import streamlit
    monkeypatch.delenv("PERFDECK_VIEWER_PASSWORD_HASH")      # the operator login in the sidebar
    fake = StandInContext()
    monkeypatch.setattr(streamlit, "context", fake)
    return fake


def hammer(context, clock, n: int) -> AppTest:
    """`n` wrong operator passwords from one browser session, each with a new spoofed X-Forwarded-For
    (Streamlit's server puts a loopback peer's header in ip_address), each as soon as the backoff allows,
    then every 0.1 s: all in one minute."""
    attacker = AppTest.from_function(sidebar, default_timeout=30)
    attacker.run()
    for i in range(n):
        context.ip_address = context.headers["X-Forwarded-For"] = f"203.0.113.{i + 1}"
        operator_attempt(attacker, "guess")
        clock.now += 2 ** i if i < 4 else 0.1
    return attacker


def test_a_spoofed_forwarded_for_does_not_change_the_key_and_the_operator_still_gets_in(env, context):
    path, clock = env
    attacker = hammer(context, clock, 100)
    assert attacker.sidebar.error[0].value.startswith("too many failed attempts; try again in")
    assert list(access.GUARD._keys) == [f"session:{attacker.session_state[ui.CLIENT_SESSION_KEY]}"]
    # The operator, on a fresh session (same machine, no header), is not locked out.
    context.ip_address, context.headers = None, {}
    operator = operator_attempt(AppTest.from_function(sidebar, default_timeout=30).run(), OPERATOR_PASSWORD)
    assert any(m.value == ":material/admin_panel_settings: **Operator** · operator" for m in operator.sidebar.markdown)
    # The 100 refusals of that one minute are one audit row with their count.
    clock.now += 60
    ui.REFUSALS.flush()
    rows = query(path, "SELECT action, outcome, result, figures FROM action_audit ORDER BY id")
    assert rows == [("operator.login", "refused", "100 refused attempts", '{"attempts": 100}'),
                    ("operator.login", "done", None, None)]


def test_behind_a_trusted_proxy_the_forwarded_address_is_the_key(env, context, monkeypatch):
    monkeypatch.setenv("PERFDECK_TRUSTED_PROXIES", "127.0.0.1")
    clock = env[1]
    hammer(context, clock, 25)
    assert sorted(access.GUARD._keys) == sorted(f"ip:203.0.113.{i + 1}" for i in range(25))
    context.ip_address, context.headers = None, {}
    operator = operator_attempt(AppTest.from_function(sidebar, default_timeout=30).run(), OPERATOR_PASSWORD)
    assert any(m.value == ":material/admin_panel_settings: **Operator** · operator" for m in operator.sidebar.markdown)
