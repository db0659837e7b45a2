"""Operator access: real scrypt hashes, the real lockout bookkeeping with an injected clock, real Streamlit
secrets files. session_state is a plain dict here (Streamlit's is a mapping too). No OIDC identity provider
runs on this machine, so OIDC users are a small stand-in object with the attributes st.user has."""
from __future__ import annotations

import base64
import importlib.util
import re
import threading
from dataclasses import dataclass

import pytest

from dashboard.actions import VIEWER, Actor
from dashboard.actions.access import (
    ABSOLUTE_SESSION_S,
    HINT,
    SESSION_KEY,
    LoginGuard,
    LoginResult,
    OperatorConfig,
    OperatorSession,
    current_actor,
    generate_demo_password,
    hash_password,
    log_in,
    log_out,
    oidc_provider,
    operator_config,
    verify_password,
)

PASSWORD = "correct horse battery staple"
T0 = 1_700_000_000.0


@pytest.fixture(scope="module")
def stored_hash():
    return hash_password(PASSWORD)


@pytest.fixture(scope="module")
def quick_hash():
    """A real scrypt hash with a small n, so the lockout tests can fail twenty times quickly."""
    return hash_password(PASSWORD, n=2**10)


@dataclass
class StandInUser:
    """What current_actor reads from st.user (no identity provider runs here)."""
    is_logged_in: bool
    email: str | None = None
    email_verified: bool | None = None


# -- hashes -----------------------------------------------------------------------------------------

def test_hash_round_trip_and_format(stored_hash):
    scheme, n, r, p, salt, digest = stored_hash.split("$")
    assert (scheme, n, r, p) == ("scrypt", "16384", "8", "1")
    assert len(base64.b64decode(salt)) == 16
    assert len(base64.b64decode(digest)) == 32
    assert verify_password(PASSWORD, stored_hash) is True


def test_verify_uses_the_parameters_in_the_hash(quick_hash):
    assert quick_hash.split("$")[1:4] == ["1024", "8", "1"]
    assert verify_password(PASSWORD, quick_hash) is True
    assert verify_password(PASSWORD + " ", quick_hash) is False


def test_wrong_password(stored_hash):
    assert verify_password("correct horse battery stapl", stored_hash) is False
    assert verify_password("", stored_hash) is False
    assert verify_password(None, stored_hash) is False


def test_hashes_differ_per_salt():
    first, second = hash_password(PASSWORD, n=2**10), hash_password(PASSWORD, n=2**10)
    assert first.split("$")[4] != second.split("$")[4]
    assert first.split("$")[5] != second.split("$")[5]
    assert verify_password(PASSWORD, first) is True
    assert verify_password(PASSWORD, second) is True


def test_malformed_hashes_are_false(stored_hash):
    _, n, r, p, salt, digest = stored_hash.split("$")
    malformed = [
        None, "", "scrypt", stored_hash + "$extra", "bcrypt" + stored_hash[6:],
        f"scrypt$0{n}$8$1${salt}${digest}",            # leading zero
        f"scrypt$ {n}$8$1${salt}${digest}",            # whitespace int() would accept
        f"scrypt$16385$8$1${salt}${digest}",           # n not a power of two
        f"scrypt${n}$8$1$not*base64${digest}",
        f"scrypt${n}$8$1${base64.b64encode(b'short').decode()}${digest}",   # 5-byte salt
        f"scrypt${n}$8$1${salt}${base64.b64encode(b'x' * 8).decode()}",     # 8-byte digest
    ]
    assert [verify_password(PASSWORD, h) for h in malformed] == [False] * len(malformed)


def test_absurd_parameters_are_refused_without_computing(stored_hash):
    # Each of these, if it were computed, would need a terabyte of memory or minutes of CPU (and the test
    # would then fail with a memory error or hit pytest's timeout) instead of returning False.
    _, _, _, _, salt, digest = stored_hash.split("$")
    absurd = [
        f"scrypt${2**30}$8$1${salt}${digest}",          # 1 TiB
        f"scrypt$16384$100000$1${salt}${digest}",       # 200 GB
        f"scrypt$16384$8$1000000${salt}${digest}",      # a million passes
        f"scrypt$65536$16$1${salt}${digest}",           # 128 MiB, over the 64 MiB cap
        f"scrypt$65536$8$4${salt}${digest}",            # work over the cap
    ]
    assert [verify_password(PASSWORD, h) for h in absurd] == [False] * len(absurd)
    with pytest.raises(ValueError, match="scrypt parameters out of range: n=1073741824 r=8 p=1"):
        hash_password(PASSWORD, n=2**30)


def test_demo_password():
    password, encoded = generate_demo_password()
    assert re.fullmatch(r"[A-Za-z0-9_-]{16}", password)
    assert verify_password(password, encoded) is True
    assert generate_demo_password()[0] != password


# -- lockout ----------------------------------------------------------------------------------------

def test_lockout_after_five_failures_then_unlock(quick_hash):
    guard = LoginGuard()
    messages = [guard.attempt("10.0.0.1", "guess", quick_hash, now=T0 + i).message for i in range(5)]
    assert messages == [
        "wrong password (4 attempts left)", "wrong password (3 attempts left)", "wrong password (2 attempts left)",
        "wrong password (1 attempt left)", "wrong password; too many failed attempts; try again in 15 min",
    ]
    locked_until = T0 + 4 + 900
    # The right password is refused while locked.
    assert guard.attempt("10.0.0.1", PASSWORD, quick_hash, now=T0 + 64) == LoginResult(
        False, "too many failed attempts; try again in 14 min", locked_until)
    assert guard.attempt("10.0.0.1", PASSWORD, quick_hash, now=locked_until - 1) == LoginResult(
        False, "too many failed attempts; try again in 1 min", locked_until)
    assert guard.attempt("10.0.0.1", PASSWORD, quick_hash, now=locked_until) == LoginResult(True, "logged in")


def test_injected_clock_drives_the_lock(quick_hash):
    now = [T0]
    guard = LoginGuard(clock=lambda: now[0])
    for _ in range(5):
        guard.attempt("10.0.0.1", "guess", quick_hash)
    now[0] += 899
    assert guard.attempt("10.0.0.1", PASSWORD, quick_hash).message == "too many failed attempts; try again in 1 min"
    now[0] += 1
    assert guard.attempt("10.0.0.1", PASSWORD, quick_hash).ok is True


def test_failures_outside_the_window_do_not_count_and_success_resets(quick_hash):
    guard = LoginGuard()
    for i in range(4):
        guard.attempt("10.0.0.1", "guess", quick_hash, now=T0 + i)
    assert guard.attempt("10.0.0.1", "guess", quick_hash, now=T0 + 901).message == "wrong password (2 attempts left)"
    assert guard.attempt("10.0.0.1", PASSWORD, quick_hash, now=T0 + 902).ok is True
    assert guard.attempt("10.0.0.1", "guess", quick_hash, now=T0 + 903).message == "wrong password (4 attempts left)"


def test_keys_are_locked_separately(quick_hash):
    guard = LoginGuard()
    for i in range(5):
        guard.attempt("10.0.0.1", "guess", quick_hash, now=T0 + i)
    assert guard.attempt("10.0.0.2", "guess", quick_hash, now=T0 + 10).message == "wrong password (4 attempts left)"
    assert guard.attempt("10.0.0.2", PASSWORD, quick_hash, now=T0 + 11) == LoginResult(True, "logged in")
    assert guard.attempt("10.0.0.1", PASSWORD, quick_hash, now=T0 + 12).ok is False
    # No key given: all such clients share "unknown".
    for i in range(5):
        guard.attempt("", "guess", quick_hash, now=T0 + 20 + i)
    assert guard.attempt("unknown", PASSWORD, quick_hash, now=T0 + 30).message == (
        "too many failed attempts; try again in 15 min")


def test_global_ceiling_locks_everyone(quick_hash):
    guard = LoginGuard()
    # Twenty addresses, one guess each: no single key reaches five.
    results = [guard.attempt(f"10.0.1.{i}", "guess", quick_hash, now=T0 + i) for i in range(20)]
    assert [r.message for r in results[:19]] == ["wrong password (4 attempts left)"] * 19
    assert results[19] == LoginResult(
        False, "wrong password; too many failed attempts on this server; try again in 15 min", T0 + 19 + 900)
    assert guard.attempt("192.168.5.5", PASSWORD, quick_hash, now=T0 + 30) == LoginResult(
        False, "too many failed attempts on this server; try again in 15 min", T0 + 19 + 900)
    assert guard.attempt("192.168.5.5", PASSWORD, quick_hash, now=T0 + 19 + 900) == LoginResult(True, "logged in")


def test_parallel_guesses_cannot_exceed_the_limit(quick_hash):
    guard = LoginGuard()
    messages: list[str] = []

    def guess():
        messages.append(guard.attempt("10.0.0.1", "guess", quick_hash, now=T0).message)

    threads = [threading.Thread(target=guess) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(messages) == sorted([
        "wrong password (4 attempts left)", "wrong password (3 attempts left)", "wrong password (2 attempts left)",
        "wrong password (1 attempt left)", "wrong password; too many failed attempts; try again in 15 min",
    ] + ["too many failed attempts; try again in 15 min"] * 5)


# -- sessions ---------------------------------------------------------------------------------------

def test_session_idle_expiry():
    session = OperatorSession("operator", started_at=T0, last_seen=T0)
    assert session.expired(T0 + 59 * 60, 60) is False
    assert session.expired(T0 + 60 * 60, 60) is True
    session.touch(T0 + 50 * 60)
    assert session.last_seen == T0 + 50 * 60
    assert session.expired(T0 + 109 * 60, 60) is False     # idle time counts from the touch
    assert session.expired(T0 + 110 * 60, 60) is True


def test_session_absolute_expiry():
    session = OperatorSession("operator", started_at=T0, last_seen=T0)
    for minute in range(30, 8 * 60, 30):          # busy all day: touched every half hour
        session.touch(T0 + minute * 60)
    assert session.expired(T0 + ABSOLUTE_SESSION_S - 1, 60) is False
    assert session.expired(T0 + ABSOLUTE_SESSION_S, 60) is True


# -- actors -----------------------------------------------------------------------------------------

def test_password_login_makes_an_operator_until_idle(quick_hash):
    config = OperatorConfig(password_hash=quick_hash, operator_name="ops-team", session_minutes=30)
    state: dict = {}
    assert current_actor(state, config, now=T0) == VIEWER
    assert log_in(state, config, "10.0.0.1", PASSWORD, now=T0, guard=LoginGuard()) == LoginResult(True, "logged in")
    assert state[SESSION_KEY] == OperatorSession("ops-team", T0, T0, state[SESSION_KEY].credential)
    assert current_actor(state, config, now=T0 + 29 * 60) == Actor("ops-team", role="operator", via="password")
    assert state[SESSION_KEY].last_seen == T0 + 29 * 60           # touched: idle time starts again
    assert current_actor(state, config, now=T0 + 58 * 60).is_operator is True
    assert current_actor(state, config, now=T0 + 88 * 60) == VIEWER
    assert SESSION_KEY not in state


def test_log_out_and_rotated_password_end_the_session(quick_hash):
    config = OperatorConfig(password_hash=quick_hash)
    state: dict = {}
    log_in(state, config, "10.0.0.1", PASSWORD, now=T0, guard=LoginGuard())
    assert current_actor(state, config, now=T0 + 1) == Actor("operator", role="operator", via="password")
    log_out(state)
    assert state == {}
    assert current_actor(state, config, now=T0 + 2) == VIEWER

    log_in(state, config, "10.0.0.1", PASSWORD, now=T0, guard=LoginGuard())
    rotated = OperatorConfig(password_hash=hash_password("new password", n=2**10))
    assert current_actor(state, rotated, now=T0 + 1) == VIEWER
    assert state == {}
    log_in(state, config, "10.0.0.1", PASSWORD, now=T0, guard=LoginGuard())
    assert current_actor(state, OperatorConfig(), now=T0 + 1) == VIEWER    # password login switched off
    assert state == {}


def test_log_in_refusals(quick_hash):
    guard, state = LoginGuard(), {}
    config = OperatorConfig(password_hash=quick_hash)
    assert log_in(state, config, "10.0.0.1", "", now=T0, guard=guard) == LoginResult(False, "enter the operator password")
    assert log_in(state, config, "10.0.0.1", "guess", now=T0, guard=guard) == LoginResult(
        False, "wrong password (4 attempts left)")        # the empty submit did not count
    assert log_in(state, OperatorConfig(), "10.0.0.1", PASSWORD, now=T0, guard=guard) == LoginResult(False, HINT)
    assert state == {}


def test_oidc_users():
    config = OperatorConfig(oidc_provider="default", operator_emails=("ops@example.com",))
    state: dict = {}
    assert current_actor(state, config, StandInUser(True, "Ops@Example.com")) == Actor(
        "Ops@Example.com", role="operator", via="oidc")
    assert current_actor(state, config, StandInUser(True, "dev@example.com")) == Actor(
        "dev@example.com", role="viewer", via="oidc")
    assert current_actor(state, config, StandInUser(True, "ops@example.com", email_verified=False)) == Actor(
        "ops@example.com", role="viewer", via="oidc")
    assert current_actor(state, config, StandInUser(True, None)) == Actor("signed-in user", role="viewer", via="oidc")
    assert current_actor(state, config, StandInUser(False)) == VIEWER
    # Without a usable [auth] section a user object is not trusted.
    assert current_actor(state, OperatorConfig(operator_emails=("ops@example.com",)),
                         StandInUser(True, "ops@example.com")) == VIEWER


def test_password_session_wins_over_oidc(quick_hash):
    config = OperatorConfig(password_hash=quick_hash, oidc_provider="default", operator_emails=("ops@example.com",))
    state: dict = {}
    log_in(state, config, "10.0.0.1", PASSWORD, now=T0, guard=LoginGuard())
    assert current_actor(state, config, StandInUser(True, "dev@example.com"), now=T0 + 1) == Actor(
        "operator", role="operator", via="password")


# -- configuration ----------------------------------------------------------------------------------

def test_config_from_env(stored_hash):
    env = {"PERFDECK_OPERATOR_PASSWORD_HASH": stored_hash, "PERFDECK_OPERATOR_NAME": "ops-team",
           "PERFDECK_OPERATOR_EMAILS": " Ops@Example.com, sre@example.com ,", "PERFDECK_OPERATOR_SESSION_MINUTES": "30"}
    config = operator_config(env=env, secrets={})
    assert config == OperatorConfig(password_hash=stored_hash, operator_name="ops-team",
                                    operator_emails=("ops@example.com", "sre@example.com"), session_minutes=30)
    assert (config.enabled, config.hint) == (True, None)


def test_config_from_secrets_and_env_wins(stored_hash, quick_hash):
    secrets = {"perfdeck": {"operator_password_hash": stored_hash, "operator_name": "ops",
                            "operator_emails": ["Ops@Example.com"]}}
    assert operator_config(env={}, secrets=secrets) == OperatorConfig(
        password_hash=stored_hash, operator_name="ops", operator_emails=("ops@example.com",))
    assert operator_config(env={"PERFDECK_OPERATOR_PASSWORD_HASH": quick_hash}, secrets=secrets).password_hash == quick_hash


def test_no_configuration_is_read_only_with_the_hint():
    config = operator_config(env={}, secrets={})
    assert config == OperatorConfig()
    assert (config.enabled, config.hint) == (False, HINT)
    assert HINT == ("Actions are read-only: set PERFDECK_OPERATOR_PASSWORD_HASH "
                    "(make one with `perfdeck operator-hash`) to enable them.")


def test_unusable_settings_are_reported():
    config = operator_config(env={"PERFDECK_OPERATOR_PASSWORD_HASH": "hunter2",
                                  "PERFDECK_OPERATOR_SESSION_MINUTES": "9999"}, secrets={})
    assert config.password_hash is None
    assert config.session_minutes == 60
    assert config.problems == (
        "the operator password hash is not a valid scrypt hash; make one with `perfdeck operator-hash`.",
        "PERFDECK_OPERATOR_SESSION_MINUTES must be 1 to 480; using 60.",
    )
    assert config.hint == ("Actions are read-only: the operator password hash is not a valid scrypt hash; "
                           "make one with `perfdeck operator-hash`.")


AUTH = {"redirect_uri": "https://perf.example.com/oauth2callback", "cookie_secret": "x" * 32,
        "client_id": "perfdeck", "client_secret": "s3cret",
        "server_metadata_url": "https://idp.example.com/.well-known/openid-configuration"}
PROVIDER = {k: AUTH[k] for k in ("client_id", "client_secret", "server_metadata_url")}
COMMON = {"redirect_uri": AUTH["redirect_uri"], "cookie_secret": AUTH["cookie_secret"]}


def test_oidc_provider_from_the_auth_section():
    assert oidc_provider(AUTH) == "default"
    assert oidc_provider({**COMMON, "google": PROVIDER}) == "google"
    assert oidc_provider({**COMMON, "my_idp": PROVIDER}) is None                 # st.login refuses underscores
    assert oidc_provider({**AUTH, "cookie_secret": ""}) is None
    assert oidc_provider({**AUTH, "redirect_uri": "https://perf.example.com/"}) is None
    assert oidc_provider({**COMMON, "google": {**PROVIDER, "client_secret": ""}}) is None
    assert oidc_provider(None) is None


def test_oidc_config_depends_on_authlib():
    config = operator_config(env={"PERFDECK_OPERATOR_EMAILS": "ops@example.com"}, secrets={"auth": AUTH})
    if importlib.util.find_spec("authlib") is not None:
        assert (config.oidc_provider, config.problems, config.enabled) == ("default", (), True)
    else:
        assert (config.oidc_provider, config.enabled) == (None, False)
        assert config.problems == ("st.login needs Authlib: pip install 'Authlib>=1.3.2' to use the [auth] login.",)


def test_oidc_without_operator_emails_hints_at_them():
    config = OperatorConfig(oidc_provider="default")
    assert (config.enabled, config.hint) == (False, (
        "Actions are read-only: list operator emails in PERFDECK_OPERATOR_EMAILS or "
        "perfdeck.operator_emails in .streamlit/secrets.toml to enable them."))


@pytest.fixture
def secrets_files():
    """Point Streamlit's real secrets loader at files of the test's choosing, then restore it."""
    from streamlit import config
    from streamlit.runtime.secrets import secrets_singleton

    saved = config.get_option("secrets.files")
    saved_watchers = secrets_singleton._file_watchers_installed
    secrets_singleton._file_watchers_installed = True    # no poll thread left watching a temporary file

    def use(*paths):
        config.set_option("secrets.files", [str(p) for p in paths])
        secrets_singleton._reset()

    yield use
    config.set_option("secrets.files", saved)
    secrets_singleton._file_watchers_installed = saved_watchers
    secrets_singleton._reset()


def test_config_from_a_real_secrets_file(tmp_path, secrets_files, stored_hash):
    path = tmp_path / "secrets.toml"
    path.write_text(f'[perfdeck]\noperator_password_hash = "{stored_hash}"\noperator_emails = ["ops@example.com"]\n')
    secrets_files(path)
    assert operator_config(env={}) == OperatorConfig(password_hash=stored_hash, operator_emails=("ops@example.com",))


def test_missing_or_broken_secrets_file_is_read_only(tmp_path, secrets_files):
    secrets_files(tmp_path / "absent.toml")
    assert operator_config(env={}) == OperatorConfig()
    broken = tmp_path / "broken.toml"
    broken.write_text("[perfdeck\noperator_password_hash = \n")
    secrets_files(broken)
    assert operator_config(env={}).hint == HINT
