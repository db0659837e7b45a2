"""AppTest of the Actions page and the operator login: a viewer sees the actions but cannot preview or run
them; an operator logs in through the sidebar form, previews, runs, and finds the run in the audit log."""
from __future__ import annotations

from pathlib import Path

import pytest
from helpers import query
from seed_store import seed_store
from streamlit.testing.v1 import AppTest

from dashboard.actions import access
from dashboard.actions.access import hash_password
from dashboard.actions.login_guard import LoginGuard

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "dashboard" / "app_pages" / "actions.py")
APP = str(ROOT / "dashboard" / "app.py")
PASSWORD = "correct horse battery"


@pytest.fixture
def seeded(tmp_path, monkeypatch):
    path = tmp_path / "perfdeck.duckdb"
    seed_store(path, days=1)
    monkeypatch.setenv("PERFDECK_DB", str(path))
    for var in ("PERFDECK_OPERATOR_PASSWORD_HASH", "PERFDECK_OPERATOR_EMAILS", "PERFDECK_REDIS_URLS",
                "PERFDECK_DATABASE_URLS", "PERFDECK_CONFIG"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)          # no perfdeck.toml, no .streamlit/secrets.toml here
    return path


def store_area(at: AppTest) -> AppTest:
    at.segmented_control(key="area").set_value("perfdeck store").run()
    at.selectbox(key="action").set_value("store.compact").run()
    assert not at.exception, at.exception
    return at


def button(at: AppTest, key: str):
    return next(b for b in at.button if b.key == key)


def test_a_viewer_sees_the_action_but_cannot_preview_or_run(seeded):
    at = AppTest.from_file(PAGE, default_timeout=60)
    at.run()
    store_area(at)
    # What it touches, and why there is nothing to click: a preview reads the target too.
    assert any(m.value.startswith("**Compact and checkpoint the store** ·") for m in at.markdown)
    assert not [b for b in at.button if b.key and b.key.startswith("action-store.compact:")]
    assert any(c.value.startswith(":material/lock: Previewing and running actions needs the operator role. ")
               and "PERFDECK_OPERATOR_PASSWORD_HASH" in c.value for c in at.caption)
    assert query(seeded, "SELECT count(*) FROM action_audit")[0][0] == 0


def test_an_operator_logs_in_runs_an_action_and_finds_it_in_the_audit_log(seeded, monkeypatch):
    monkeypatch.setenv("PERFDECK_OPERATOR_PASSWORD_HASH", hash_password(PASSWORD))
    now = [1_700_000_000.0]
    monkeypatch.setattr(access, "GUARD", LoginGuard(clock=lambda: now[0]))
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    at.switch_page("app_pages/actions.py").run()
    assert any(m.value == ":material/visibility: **Viewer**" for m in at.sidebar.markdown)

    at.sidebar.text_input[0].input("wrong password")   # form: typed and submitted in one run
    at.sidebar.button[0].click().run()
    assert "wrong password" in at.sidebar.error[0].value
    now[0] += 1                  # the second of backoff the wrong password earned (injected time)

    at.sidebar.text_input[0].input(PASSWORD)
    at.sidebar.button[0].click().run()
    assert not at.exception, at.exception
    assert any(m.value == ":material/admin_panel_settings: **Operator** · operator" for m in at.sidebar.markdown)

    store_area(at)
    button(at, "action-store.compact:preview").click().run()
    run = button(at, "action-store.compact:run")
    assert not run.disabled
    run.click().run()
    assert not at.exception, at.exception
    assert at.success[0].value.startswith("Merged 0 rollup rows")
    rows = query(seeded, "SELECT actor, action, outcome FROM action_audit ORDER BY id")
    assert rows == [("operator", "operator.login", "refused"), ("operator", "operator.login", "done"),
                    ("operator", "store.compact", "done")]
    log = at.dataframe[-1].value
    assert log["action"].tolist()[:1] == ["store.compact"] and log["outcome"].tolist()[:1] == ["done"]
    # The log fits the page: the result last (an error in its place when it failed), the rest in the CSV.
    assert list(at.dataframe[-1].proto.column_order) == ["ts", "actor", "action", "target", "outcome", "duration_ms",
                                                         "result"]
    refused = log[log["outcome"] == "refused"]
    assert refused["result"].str.startswith("error: ").all() or refused["error"].isna().all()
