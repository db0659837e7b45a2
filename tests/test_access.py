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
    VIEWER_SESSION_KEY,
    LoginGuard,
    LoginResult,
    OperatorConfig,
    OperatorSession,
    current_actor,
    generate_demo_password,
    hash_password,
    log_in,
    log_in_viewer,
    log_out,
    may_view,
    oidc_provider,
    operator_config,
    verify_password,
    viewer_auth_configured,
)
from dashboard.actions.framework import ANONYMOUS
from dashboard.actions.login_guard import RefusalAudit, client_key, parse_trusted_proxies

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


# -- guessing: backoff, lockout, a global slowdown that locks nobody out ------------------------------

class Clock:
    """Injected time: sleep() moves it on instead of waiting."""
    def __init__(self, now: float = T0):
        self.now, self.slept = now, []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


def test_backoff_grows_then_locks_the_key_then_unlocks(quick_hash):
    clock = Clock()
    guard = LoginGuard(clock=clock, sleep=clock.sleep)
    seen = []
    for wait in (0, 1, 2, 4, 8):          # each try as soon as the last one allows
        clock.now += wait
        seen.append(guard.attempt("ip:10.0.0.1", "guess", quick_hash).message)
    assert seen == [
        "wrong password (4 attempts left; next in 1 s)", "wrong password (3 attempts left; next in 2 s)",
        "wrong password (2 attempts left; next in 4 s)", "wrong password (1 attempt left; next in 8 s)",
        "wrong password; too many failed attempts; try again in 15 min",
    ]
    locked_until = clock.now + 900
    clock.now += 60       # the right password is refused while locked, without a hash computed
    assert guard.attempt("ip:10.0.0.1", PASSWORD, quick_hash) == LoginResult(
        False, "too many failed attempts; try again in 14 min", locked_until)
    clock.now = locked_until
    assert guard.attempt("ip:10.0.0.1", PASSWORD, quick_hash) == LoginResult(True, "logged in")
    assert clock.slept == []


def test_a_try_inside_the_backoff_is_refused_and_not_counted(quick_hash):
    guard = LoginGuard()
    guard.attempt("ip:10.0.0.1", "guess", quick_hash, now=T0)
    guard.attempt("ip:10.0.0.1", "guess", quick_hash, now=T0 + 1)          # next in 2 s
    for t in (T0 + 1.5, T0 + 2, T0 + 2.9):
        assert guard.attempt("ip:10.0.0.1", PASSWORD, quick_hash, now=t) == LoginResult(
            False, "wait before trying again; try again in " + ("2 s" if t < T0 + 2 else "1 s"), T0 + 3)
    assert guard.attempt("ip:10.0.0.1", "guess", quick_hash, now=T0 + 3).message == (
        "wrong password (2 attempts left; next in 4 s)")                     # the refused tries did not count
    assert guard.attempt("ip:10.0.0.1", PASSWORD, quick_hash, now=T0 + 7).ok is True


def test_failures_outside_the_window_do_not_count_and_success_resets(quick_hash):
    guard = LoginGuard()
    for t in (0, 1, 3, 7):
        guard.attempt("ip:10.0.0.1", "guess", quick_hash, now=T0 + t)
    assert guard.attempt("ip:10.0.0.1", "guess", quick_hash, now=T0 + 902).message == (
        "wrong password (2 attempts left; next in 4 s)")                    # the first two fell out of the window
    assert guard.attempt("ip:10.0.0.1", PASSWORD, quick_hash, now=T0 + 906).ok is True
    assert guard.attempt("ip:10.0.0.1", "guess", quick_hash, now=T0 + 907).message == (
        "wrong password (4 attempts left; next in 1 s)")


def lock_out(guard: LoginGuard, key: str, quick_hash: str, start: float) -> float:
    """Five wrong guesses from `key`, each as soon as allowed; the time of the last."""
    t = start
    for wait in (0, 1, 2, 4, 8):
        t += wait
        guard.attempt(key, "guess", quick_hash, now=t)
    return t


def test_keys_are_locked_separately(quick_hash):
    guard = LoginGuard()
    t = lock_out(guard, "ip:10.0.0.1", quick_hash, T0)
    assert guard.attempt("ip:10.0.0.2", "guess", quick_hash, now=t + 1).message == (
        "wrong password (4 attempts left; next in 1 s)")
    assert guard.attempt("ip:10.0.0.2", PASSWORD, quick_hash, now=t + 2) == LoginResult(True, "logged in")
    assert guard.attempt("ip:10.0.0.1", PASSWORD, quick_hash, now=t + 3).ok is False


def test_the_global_limit_slows_but_never_locks_the_operator_out(quick_hash):
    clock = Clock()
    guard = LoginGuard(clock=clock, sleep=clock.sleep)
    # An attacker on twenty fresh keys (new browser sessions), one guess each: past the global limit.
    for i in range(20):
        assert guard.attempt(f"session:attacker{i}", "guess", quick_hash).ok is False
    assert clock.slept == []
    # From now on each verification takes its turn a second after the previous one: slower, not refused.
    for i in range(20, 25):
        assert guard.attempt(f"session:attacker{i}", "guess", quick_hash).message.startswith("wrong password (4")
    assert clock.slept == [1.0] * 4
    # The operator, on a fresh session, with the right password: in, after one turn.
    assert guard.attempt("session:operator", PASSWORD, quick_hash) == LoginResult(True, "logged in")
    assert clock.slept == [1.0] * 5


def test_turns_are_first_come_first_served(quick_hash):
    guard = LoginGuard(overall=1)
    guard.attempt("ip:10.0.0.1", "guess", quick_hash, now=T0)
    slept: list[float] = []
    guard._sleep = slept.append
    # Three clients at the same instant: the turns queue a second apart.
    for key in ("ip:10.0.0.2", "ip:10.0.0.3", "ip:10.0.0.4"):
        guard.attempt(key, "guess", quick_hash, now=T0 + 10)
    assert slept == [1.0, 2.0]


def test_the_operator_gets_in_while_another_client_is_locked_out(quick_hash):
    guard = LoginGuard()
    t = lock_out(guard, "ip:203.0.113.9", quick_hash, T0)
    for i in range(100):           # the attacker keeps hammering: refused, no hash computed
        assert guard.attempt("ip:203.0.113.9", "guess", quick_hash, now=t + i / 10).message.startswith(
            "too many failed attempts")
    assert guard.attempt("session:operator", PASSWORD, quick_hash, now=t + 11) == LoginResult(True, "logged in")


def test_parallel_guesses_cannot_exceed_the_limit(quick_hash):
    guard = LoginGuard()
    messages: list[str] = []

    def guess():
        messages.append(guard.attempt("ip:10.0.0.1", "guess", quick_hash, now=T0).message)

    threads = [threading.Thread(target=guess) for _ in range(10)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(messages) == sorted(["wrong password (4 attempts left; next in 1 s)"]
                                      + ["wait before trying again; try again in 1 s"] * 9)


def test_several_hashes_say_which_matched(quick_hash):
    other = hash_password("viewer password", n=2**10)
    guard = LoginGuard()
    assert guard.attempt("k", "viewer password", [other, quick_hash], now=T0).matched == 0
    assert guard.attempt("k", PASSWORD, [other, quick_hash], now=T0).matched == 1
    assert guard.attempt("k", "neither", [other, quick_hash], now=T0).message == (
        "wrong password (4 attempts left; next in 1 s)")      # one attempt, not one per hash


# -- client keys --------------------------------------------------------------------------------------

LOOPBACK = parse_trusted_proxies("127.0.0.1")[0]
PROXY = parse_trusted_proxies("10.0.0.5, 192.168.10.0/24")[0]


def test_local_clients_each_get_their_session_key_never_one_shared_key():
    assert client_key(None, None, "a1") == "session:a1"
    assert client_key(None, None, "b2") == "session:b2"
    # What a dual-stack Streamlit server reports for a browser on this machine.
    assert client_key("::ffff:127.0.0.1", None, "c3") == "session:c3"
    assert client_key("::ffff:127.0.0.1", "203.0.113.9", "c3") == "session:c3"
    assert client_key("::ffff:127.0.0.1", "203.0.113.9", "c3", LOOPBACK) == "ip:203.0.113.9"


def test_a_spoofed_forwarded_for_does_not_choose_the_key():
    # Streamlit's server already put the header's address in st.context.ip_address for a loopback peer.
    for spoofed in ("203.0.113.9", "198.51.100.1", "10.1.2.3, 203.0.113.9"):
        assert client_key(spoofed.rpartition(" ")[2], spoofed, "a1") == "session:a1"
    assert client_key(None, "127.0.0.1", "a1") == "session:a1"
    # A remote peer's header is ignored: its own address is the key.
    assert client_key("198.51.100.7", "203.0.113.9", "a1") == "ip:198.51.100.7"
    assert client_key("198.51.100.7", None, "a1") == "ip:198.51.100.7"
    # ... also when it names a trusted proxy of ours.
    assert client_key("198.51.100.7", "203.0.113.9, 10.0.0.5", "a1", PROXY) == "ip:198.51.100.7"


def test_a_trusted_proxy_s_forwarded_for_gives_the_client():
    assert client_key("10.0.0.5", "203.0.113.9", "a1", PROXY) == "ip:203.0.113.9"
    # The client wrote the left part itself: the rightmost hop not ours counts.
    assert client_key("10.0.0.5", "6.6.6.6, 203.0.113.9, 192.168.10.7", "a1", PROXY) == "ip:203.0.113.9"
    assert client_key("10.0.0.6", "203.0.113.9", "a1", PROXY) == "ip:10.0.0.6"       # not our proxy
    # A proxy on this machine: trusted by listing 127.0.0.1 (either address family).
    assert client_key("203.0.113.9", "203.0.113.9", "a1", LOOPBACK) == "ip:203.0.113.9"
    assert client_key("203.0.113.9", "203.0.113.9", "a1") == "session:a1"


def test_without_uvicorn_s_rewrite_the_peer_is_the_peer():
    # FORWARDED_ALLOW_IPS="" makes Streamlit's server keep the TCP peer.
    assert client_key("203.0.113.9", "203.0.113.9", "a1", (), "") == "ip:203.0.113.9"


def test_ipv6_counts_per_64_and_mapped_ipv4_as_ipv4():
    assert client_key("2001:db8:1:2::9", None, "a1") == client_key("2001:db8:1:2:ffff::1", None, "b") == (
        "ip:2001:db8:1:2::/64")
    assert client_key("::ffff:198.51.100.7", None, "a1") == "ip:198.51.100.7"


def test_trusted_proxies_setting():
    assert parse_trusted_proxies("10.0.0.5, 192.168.10.0/24,,") == (PROXY, ())
    assert parse_trusted_proxies(["nope"])[1] == ("PERFDECK_TRUSTED_PROXIES: 'nope' is not an address or CIDR; ignored.",)
    config = operator_config(env={"PERFDECK_TRUSTED_PROXIES": "10.0.0.5, bad"}, secrets={})
    assert config.trusted_proxies[0] == PROXY[0] and config.problems[-1].startswith("PERFDECK_TRUSTED_PROXIES: 'bad'")
    assert operator_config(env={}, secrets={}).trusted_proxies == ()       # off by default


# -- audit of refused logins ---------------------------------------------------------------------------

def refusal_audit(db, clock):
    from dashboard.actions import audit

    def insert(action, client, message):
        return audit.record(db, actor=Actor(action.partition(".")[0]), action=action, target=None,
                            params={"client": client}, preview=None, outcome="refused", error=message,
                            result="1 refused attempt")

    def update(row, count, message):
        audit.finish(db, row, outcome="refused", duration_ms=0, result=f"{count} refused attempts",
                     figures={"attempts": count}, error=message)

    return RefusalAudit(insert, update, clock=clock)


def test_a_hundred_refused_attempts_in_a_minute_are_one_row(migrated_store):
    from helpers import query
    clock = Clock(T0 - T0 % 60)
    refusals = refusal_audit(migrated_store, clock)
    for i in range(100):
        clock.now += 0.5
        refusals.refused("operator.login", "ip:203.0.113.9", "too many failed attempts")
    rows = "SELECT action, outcome, params, result, figures FROM action_audit ORDER BY id"
    assert query(migrated_store, rows) == [("operator.login", "refused", '{"client": "ip:203.0.113.9"}',
                                            "1 refused attempt", None)]      # the first shows at once
    clock.now += 60
    refusals.flush()
    assert query(migrated_store, rows) == [("operator.login", "refused", '{"client": "ip:203.0.113.9"}',
                                            "100 refused attempts", '{"attempts": 100}')]


def test_refusal_rows_are_per_client_and_minute_and_bounded(migrated_store):
    from helpers import query
    clock = Clock(T0 - T0 % 60)
    refusals = refusal_audit(migrated_store, clock)
    refusals.refused("operator.login", "ip:10.0.0.1", "x")
    refusals.refused("operator.login", "ip:10.0.0.2", "x")
    clock.now += 60
    refusals.refused("operator.login", "ip:10.0.0.1", "x")
    # A flood of fresh keys: twenty rows a minute at most, the rest counted in one.
    for i in range(200):
        refusals.refused("viewer.login", f"session:{i}", "x")
    clock.now += 60
    refusals.flush()
    per_minute = query(migrated_store, "SELECT params, figures FROM action_audit WHERE id > 3 ORDER BY id")
    assert len(per_minute) == 20
    assert per_minute[-1] == ('{"client": "other clients"}', '{"attempts": 181}')
    assert query(migrated_store, "SELECT count(*) FROM action_audit")[0][0] == 23


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
    assert log_in(state, config, "10.0.0.1", "guess", now=T0, guard=guard).message == (
        "wrong password (4 attempts left; next in 1 s)")     # the empty submit did not count
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
    # With SSO on, every page needs a login: nobody logged in sees nothing.
    assert current_actor(state, config, StandInUser(False)) == ANONYMOUS
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


# -- viewers --------------------------------------------------------------------------------------------

def test_viewer_login_settings(stored_hash, quick_hash):
    assert viewer_auth_configured(env={}, secrets={}) is False
    assert operator_config(env={"PERFDECK_OPERATOR_PASSWORD_HASH": stored_hash}, secrets={}).viewer_auth is False
    env = {"PERFDECK_VIEWER_PASSWORD_HASH": quick_hash, "PERFDECK_VIEWER_EMAILS": "Dev@Example.com",
           "PERFDECK_VIEWER_DOMAINS": "@example.org, example.net"}
    config = operator_config(env=env, secrets={})
    assert (config.viewer_password_hash, config.viewer_emails, config.viewer_domains) == (
        quick_hash, ("dev@example.com",), ("example.org", "example.net"))
    assert viewer_auth_configured(env=env, secrets={}) is True
    assert viewer_auth_configured(env={}, secrets={"perfdeck": {"viewer_password_hash": quick_hash}}) is True
    assert viewer_auth_configured(env={}, secrets={"auth": AUTH}) is (importlib.util.find_spec("authlib") is not None)
    broken = operator_config(env={"PERFDECK_VIEWER_PASSWORD_HASH": "hunter2"}, secrets={})
    assert (broken.viewer_auth, broken.problems) == (
        False, ("the viewer password hash is not a valid scrypt hash; make one with `perfdeck operator-hash`.",))


def test_viewer_password_makes_a_viewer_and_the_operator_password_an_operator(quick_hash):
    viewer_hash = hash_password("viewer password", n=2**10)
    config = OperatorConfig(password_hash=quick_hash, viewer_password_hash=viewer_hash)
    guard, state = LoginGuard(), {}
    assert current_actor(state, config, now=T0) == ANONYMOUS and not may_view(ANONYMOUS)
    assert log_in_viewer(state, config, "session:a", "guess", now=T0, guard=guard).ok is False
    assert state == {}
    assert log_in_viewer(state, config, "session:a", "viewer password", now=T0 + 1, guard=guard).ok is True
    viewer = current_actor(state, config, now=T0 + 2)
    assert viewer == Actor("viewer", role="viewer", via="password") and may_view(viewer) and not viewer.is_operator
    assert set(state) == {VIEWER_SESSION_KEY}
    log_out(state)
    assert current_actor(state, config, now=T0 + 3) == ANONYMOUS
    assert log_in_viewer(state, config, "session:a", PASSWORD, now=T0 + 4, guard=guard).ok is True
    assert current_actor(state, config, now=T0 + 5) == Actor("operator", role="operator", via="password")
    # Rotating the viewer password ends viewer sessions.
    log_out(state)
    log_in_viewer(state, config, "session:a", "viewer password", now=T0 + 6, guard=guard)
    rotated = OperatorConfig(password_hash=quick_hash, viewer_password_hash=hash_password("new", n=2**10))
    assert current_actor(state, rotated, now=T0 + 7) == ANONYMOUS and state == {}


def test_without_viewer_login_nobody_logged_in_is_the_viewer(quick_hash):
    assert current_actor({}, OperatorConfig(password_hash=quick_hash), now=T0) == VIEWER
    assert may_view(VIEWER)


def test_sso_viewers_can_be_restricted():
    config = OperatorConfig(oidc_provider="default", operator_emails=("ops@example.com",),
                            viewer_emails=("dev@example.com",), viewer_domains=("example.org",))
    actor = lambda *a, **k: current_actor({}, config, StandInUser(True, *a, **k))   # noqa: E731
    assert actor("Dev@Example.com") == Actor("Dev@Example.com", role="viewer", via="oidc")
    assert actor("anyone@example.org").role == "viewer"
    assert actor("ops@example.com").role == "operator"
    assert actor("stranger@gmail.com") == Actor("stranger@gmail.com", role="anonymous", via="oidc")
    assert actor("dev@example.com", email_verified=False).role == "anonymous"
    assert actor(None).role == "anonymous"
    assert not may_view(actor("stranger@gmail.com"))
