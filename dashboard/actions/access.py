"""Who may run actions: everyone is a viewer; the operator role comes from a password or an OIDC login.

Design:
- Nothing here draws widgets. The page asks `operator_config()` what is configured, draws a login form
  (or `st.login`) accordingly, calls `log_in()` / `log_out()`, and asks `current_actor()` on every rerun
  for the Actor it hands to `run_action()`. Streamlit is imported lazily, only where st.secrets and
  st.user are read, so everything else is plain functions testable with dicts.
- Passwords: only a scrypt hash is configured (env PERFDECK_OPERATOR_PASSWORD_HASH, or
  `[perfdeck] operator_password_hash` in .streamlit/secrets.toml; the env wins, as for every setting).
  scrypt is slow and memory-hard, in the stdlib, and its parameters travel in the hash; they are capped so
  a crafted hash cannot make one verification take gigabytes or minutes.
- Guessing: `LoginGuard` is process-wide (the Streamlit server is one process). Five failures from one
  client key lock that key for 15 minutes; twenty failures across all keys lock everyone, so rotating IPs
  buys nothing. A locked key is refused before any hash is computed.
- Sessions: a password login is an `OperatorSession` in st.session_state, ending after the configured
  minutes of inactivity or 8 hours in any case, and as soon as the configured hash changes (rotating the
  password logs everyone out).
- OIDC: when the secrets' [auth] section is usable by `st.login`, logged-in users whose email is listed in
  operator_emails are operators; anyone else logged in is a viewer known by email.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import importlib.util
import math
import os
import re
import secrets as random_source
import threading
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field

from dashboard.actions.framework import VIEWER, Actor

SESSION_KEY = "perfdeck_operator_session"
ABSOLUTE_SESSION_S = 8 * 3600
DEFAULT_SESSION_MINUTES = 60

# scrypt: n=2**14, r=8 takes 16 MiB and tens of milliseconds per check, the usual interactive-login setting.
SCRYPT_N, SCRYPT_R, SCRYPT_P = 2**14, 8, 1
MAX_SCRYPT_MEMORY = 64 * 2**20      # 128 * n * r bytes
MAX_SCRYPT_WORK = 2**20             # n * r * p: 8x the default, well under a second
_NUMBER = re.compile(r"[1-9][0-9]{0,9}")

HINT = "Actions are read-only: set PERFDECK_OPERATOR_PASSWORD_HASH (make one with `perfdeck operator-hash`) to enable them."
_OIDC_KEYS = ("client_id", "client_secret", "server_metadata_url")


# -- password hashes ---------------------------------------------------------------------------------

def _params_ok(n: int, r: int, p: int) -> bool:
    return (n >= 2 and n & (n - 1) == 0 and r >= 1 and p >= 1
            and 128 * n * r <= MAX_SCRYPT_MEMORY and n * r * p <= MAX_SCRYPT_WORK)


def _scrypt(password: str, salt: bytes, n: int, r: int, p: int, dklen: int) -> bytes:
    # OpenSSL's default memory ceiling (32 MiB) is below what the allowed parameters need.
    return hashlib.scrypt(password.encode("utf-8"), salt=salt, n=n, r=r, p=p, dklen=dklen,
                          maxmem=128 * r * (n + p + 2) + 2**20)


def hash_password(password: str, *, n: int = SCRYPT_N, r: int = SCRYPT_R, p: int = SCRYPT_P) -> str:
    """"scrypt$n$r$p$<salt b64>$<hash b64>" with a fresh 16-byte salt."""
    if not _params_ok(n, r, p):
        raise ValueError(f"scrypt parameters out of range: n={n} r={r} p={p}")
    salt = random_source.token_bytes(16)
    digest = _scrypt(password, salt, n, r, p, 32)
    return "$".join(["scrypt", str(n), str(r), str(p), base64.b64encode(salt).decode(), base64.b64encode(digest).decode()])


def _parse_hash(encoded) -> tuple[int, int, int, bytes, bytes] | None:
    """The parts of a well-formed hash with sane parameters, else None."""
    parts = encoded.split("$") if isinstance(encoded, str) else []
    if len(parts) != 6 or parts[0] != "scrypt" or not all(_NUMBER.fullmatch(x) for x in parts[1:4]):
        return None
    n, r, p = (int(x) for x in parts[1:4])
    try:
        salt, digest = (base64.b64decode(x, validate=True) for x in parts[4:6])
    except (binascii.Error, ValueError):
        return None
    if not _params_ok(n, r, p) or not 8 <= len(salt) <= 64 or not 16 <= len(digest) <= 64:
        return None
    return n, r, p, salt, digest


def verify_password(password: str, encoded: str) -> bool:
    """True when `password` matches `encoded`; False (never an exception) for anything malformed."""
    parsed = _parse_hash(encoded)
    if parsed is None or not isinstance(password, str):
        return False
    n, r, p, salt, digest = parsed
    return hmac.compare_digest(_scrypt(password, salt, n, r, p, len(digest)), digest)


def generate_demo_password() -> tuple[str, str]:
    """(password, hash) for `perfdeck demo` to print on localhost: 16 URL-safe characters."""
    password = random_source.token_urlsafe(12)
    return password, hash_password(password)


# -- configuration -----------------------------------------------------------------------------------

@dataclass(frozen=True)
class OperatorConfig:
    """How operators log in here. `problems` are settings present but unusable, one line each."""
    password_hash: str | None = None
    operator_name: str = "operator"
    oidc_provider: str | None = None        # what to pass to st.login(); None: OIDC login not usable
    operator_emails: tuple[str, ...] = ()   # lower-cased
    session_minutes: int = DEFAULT_SESSION_MINUTES
    problems: tuple[str, ...] = ()

    @property
    def oidc(self) -> bool:
        return self.oidc_provider is not None

    @property
    def enabled(self) -> bool:
        """Someone can become an operator."""
        return self.password_hash is not None or (self.oidc and bool(self.operator_emails))

    @property
    def hint(self) -> str | None:
        """One line on how to enable actions; None when they are enabled."""
        if self.enabled:
            return None
        if self.problems:
            return f"Actions are read-only: {self.problems[0]}"
        if self.oidc:
            return ("Actions are read-only: list operator emails in PERFDECK_OPERATOR_EMAILS or "
                    "perfdeck.operator_emails in .streamlit/secrets.toml to enable them.")
        return HINT


def oidc_provider(auth: Mapping | None) -> str | None:
    """The provider name st.login() accepts with this [auth] section ("default" when the credentials are
    at the top level), or None when st.login would refuse it."""
    if not isinstance(auth, Mapping) or not auth.get("cookie_secret"):
        return None
    if not str(auth.get("redirect_uri", "")).endswith("/oauth2callback"):
        return None
    if all(auth.get(k) for k in _OIDC_KEYS):
        return "default"
    for name, section in auth.items():
        # Streamlit rejects provider names with underscores.
        if isinstance(section, Mapping) and "_" not in name and all(section.get(k) for k in _OIDC_KEYS):
            return name
    return None


def _streamlit_secrets() -> dict:
    """st.secrets as a dict; {} when there is no secrets file (normal) or it cannot be read."""
    try:
        import streamlit as st
        if not st.secrets.load_if_toml_exists():
            return {}
        return st.secrets.to_dict()
    except Exception:  # a broken secrets file must not take the dashboard down; Streamlit logs it
        return {}


def operator_config(env: Mapping[str, str] | None = None, secrets: Mapping | None = None) -> OperatorConfig:
    """Read the operator settings from `env` (default os.environ) and `secrets` (default st.secrets)."""
    env = os.environ if env is None else env
    secrets = _streamlit_secrets() if secrets is None else secrets
    ours = secrets.get("perfdeck") if isinstance(secrets.get("perfdeck"), Mapping) else {}
    problems = []

    password_hash = (env.get("PERFDECK_OPERATOR_PASSWORD_HASH") or ours.get("operator_password_hash") or "").strip()
    if password_hash and _parse_hash(password_hash) is None:
        problems.append("the operator password hash is not a valid scrypt hash; make one with `perfdeck operator-hash`.")
        password_hash = ""

    name = str(env.get("PERFDECK_OPERATOR_NAME") or ours.get("operator_name") or "operator").strip() or "operator"

    emails = env.get("PERFDECK_OPERATOR_EMAILS") or ours.get("operator_emails") or []
    if isinstance(emails, str):
        emails = emails.split(",")
    emails = tuple(dict.fromkeys(str(e).strip().lower() for e in emails if str(e).strip()))

    provider = oidc_provider(secrets.get("auth"))
    if provider is not None and importlib.util.find_spec("authlib") is None:
        problems.append("st.login needs Authlib: pip install 'Authlib>=1.3.2' to use the [auth] login.")
        provider = None

    minutes = DEFAULT_SESSION_MINUTES
    raw_minutes = str(env.get("PERFDECK_OPERATOR_SESSION_MINUTES") or "").strip()
    if raw_minutes:
        if raw_minutes.isascii() and raw_minutes.isdigit() and 1 <= int(raw_minutes) <= ABSOLUTE_SESSION_S // 60:
            minutes = int(raw_minutes)
        else:
            problems.append(f"PERFDECK_OPERATOR_SESSION_MINUTES must be 1 to {ABSOLUTE_SESSION_S // 60}; "
                            f"using {DEFAULT_SESSION_MINUTES}.")

    return OperatorConfig(password_hash=password_hash or None, operator_name=name, oidc_provider=provider,
                          operator_emails=emails, session_minutes=minutes, problems=tuple(problems))


# -- guessing ----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class LoginResult:
    ok: bool
    message: str
    locked_until: float | None = None   # time.time() seconds, when locked


def _minutes(seconds: float) -> int:
    return max(1, math.ceil(seconds / 60))


class LoginGuard:
    """Failed-login bookkeeping shared by every session of the server process."""

    def __init__(self, *, per_key: int = 5, overall: int = 20, window_s: float = 900, lock_s: float = 900,
                 clock=time.time):
        self.per_key, self.overall, self.window_s, self.lock_s = per_key, overall, window_s, lock_s
        self._clock = clock
        self._lock = threading.Lock()
        self._failures: dict[str, list[float]] = {}
        self._all_failures: list[float] = []
        self._locked_until: dict[str, float] = {}
        self._everyone_locked_until = 0.0

    def _forget(self, now: float) -> None:
        # Only failures inside the window count; dropping the rest keeps memory bounded under IP rotation.
        since = now - self.window_s
        for key in list(self._failures):
            self._failures[key] = [t for t in self._failures[key] if t > since]
            if not self._failures[key]:
                del self._failures[key]
        self._all_failures = [t for t in self._all_failures if t > since]
        self._locked_until = {k: t for k, t in self._locked_until.items() if t > now}

    def attempt(self, key: str, password: str, encoded: str, now: float | None = None) -> LoginResult:
        """Check `password` against `encoded` for client `key` (an IP, or "unknown")."""
        key = key or "unknown"
        # Verifying under the lock serialises attempts, so parallel guesses cannot slip past the count.
        with self._lock:
            now = self._clock() if now is None else now
            self._forget(now)
            if self._everyone_locked_until > now:
                return LoginResult(False, "too many failed attempts on this server; try again in "
                                   f"{_minutes(self._everyone_locked_until - now)} min", self._everyone_locked_until)
            if key in self._locked_until:
                until = self._locked_until[key]
                return LoginResult(False, f"too many failed attempts; try again in {_minutes(until - now)} min", until)

            if verify_password(password, encoded):
                self._failures.pop(key, None)
                return LoginResult(True, "logged in")

            failures = self._failures.setdefault(key, [])
            failures.append(now)
            self._all_failures.append(now)
            if len(self._all_failures) >= self.overall:
                self._everyone_locked_until = now + self.lock_s
                self._all_failures.clear()
                return LoginResult(False, "wrong password; too many failed attempts on this server; try again in "
                                   f"{_minutes(self.lock_s)} min", self._everyone_locked_until)
            if len(failures) >= self.per_key:
                self._locked_until[key] = now + self.lock_s
                del self._failures[key]
                return LoginResult(False, f"wrong password; too many failed attempts; try again in "
                                   f"{_minutes(self.lock_s)} min", now + self.lock_s)
            left = self.per_key - len(failures)
            return LoginResult(False, f"wrong password ({left} attempt{'s' if left != 1 else ''} left)")


GUARD = LoginGuard()


# -- sessions and actors -----------------------------------------------------------------------------

def _fingerprint(encoded: str) -> str:
    return hashlib.sha256(encoded.encode()).hexdigest()[:16]


@dataclass
class OperatorSession:
    """A password login, kept in st.session_state under SESSION_KEY."""
    name: str
    started_at: float
    last_seen: float
    credential: str = field(default="", repr=False)   # fingerprint of the hash it logged in with

    def expired(self, now: float, minutes: int) -> bool:
        return now - self.last_seen >= minutes * 60 or now - self.started_at >= ABSOLUTE_SESSION_S

    def touch(self, now: float) -> None:
        self.last_seen = now


def log_in(session_state: MutableMapping, config: OperatorConfig, key: str, password: str,
           now: float | None = None, guard: LoginGuard | None = None) -> LoginResult:
    """Try the operator password; on success the session becomes an operator session."""
    if config.password_hash is None:
        return LoginResult(False, config.hint or "password login is not configured")
    if not password:
        return LoginResult(False, "enter the operator password")   # an empty submit costs no attempt
    now = time.time() if now is None else now
    result = (guard or GUARD).attempt(key, password, config.password_hash, now=now)
    if result.ok:
        session_state[SESSION_KEY] = OperatorSession(config.operator_name, now, now, _fingerprint(config.password_hash))
    return result


def log_out(session_state: MutableMapping) -> None:
    """End the password session (an OIDC login ends with st.logout)."""
    session_state.pop(SESSION_KEY, None)


def current_actor(session_state: MutableMapping, config: OperatorConfig, user=None, now: float | None = None) -> Actor:
    """Who is looking: the password operator, an OIDC user (operator when listed), or the anonymous viewer.
    `user` is st.user or anything with is_logged_in and email; read from Streamlit when None and OIDC is on."""
    now = time.time() if now is None else now
    session = session_state.get(SESSION_KEY)
    if session is not None:
        if (isinstance(session, OperatorSession) and config.password_hash is not None
                and session.credential == _fingerprint(config.password_hash)
                and not session.expired(now, config.session_minutes)):
            session.touch(now)
            return Actor(session.name, role="operator", via="password")
        log_out(session_state)

    if not config.oidc:
        return VIEWER
    if user is None:
        import streamlit as st
        user = st.user
    if not getattr(user, "is_logged_in", False):
        return VIEWER
    email = str(getattr(user, "email", None) or "").strip()
    if not email:
        return Actor("signed-in user", via="oidc")
    # An identity provider that says the address is unverified does not get to grant the role.
    verified = getattr(user, "email_verified", None) is not False
    role = "operator" if verified and email.lower() in config.operator_emails else "viewer"
    return Actor(email, role=role, via="oidc")


__all__ = [
    "ABSOLUTE_SESSION_S", "GUARD", "HINT", "SESSION_KEY", "LoginGuard", "LoginResult", "OperatorConfig",
    "OperatorSession", "current_actor", "generate_demo_password", "hash_password", "log_in", "log_out",
    "oidc_provider", "operator_config", "verify_password",
]
