"""Who may look and who may act: viewers log in to see the pages (when viewer login is configured), the
operator role comes from a password or an SSO (OIDC) login.

Design:
- Nothing here draws widgets. The app asks `operator_config()` what is configured, draws the login form in
  front of every page when `viewer_auth` is on and the sidebar's operator login, calls `log_in_viewer()`,
  `log_in()`, `log_out()`, and asks `current_actor()` on every rerun for the Actor it hands to
  `run_action()`. Streamlit is imported lazily, only where st.secrets and st.user are read, so everything
  else is plain functions testable with dicts.
- Roles: anonymous < viewer < operator. Anonymous (nobody logged in) may view only while viewer login is
  not configured; `viewer_auth_configured()` says whether it is. Previews and actions need the operator.
- Passwords: only scrypt hashes are configured (env PERFDECK_OPERATOR_PASSWORD_HASH and
  PERFDECK_VIEWER_PASSWORD_HASH, or `operator_password_hash` / `viewer_password_hash` under [perfdeck] in
  .streamlit/secrets.toml; the env wins, as for every setting). The operator password also lets one view.
  scrypt is slow and memory-hard, in the stdlib, and its parameters travel in the hash; they are capped so
  a crafted hash cannot make one verification take gigabytes or minutes.
- Guessing: see login_guard (per-client backoff and lockout, a global slowdown that never locks anyone out,
  client keys X-Forwarded-For cannot choose unless the peer is a trusted proxy, bounded audit rows).
- Sessions: a password login is an `OperatorSession` / `ViewerSession` in st.session_state, ending after the
  configured minutes of inactivity or 8 hours in any case, and as soon as the configured hash changes
  (rotating a password logs its sessions out).
- SSO: when the secrets' [auth] section is usable by `st.login`, every page asks for a login; users whose
  email is listed in operator_emails are operators; others may view when PERFDECK_VIEWER_EMAILS and
  PERFDECK_VIEWER_DOMAINS are both unset or list them. An address the provider says is unverified grants
  nothing a list would.
"""
from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import importlib.util
import os
import re
import secrets as random_source
import time
from collections.abc import Mapping, MutableMapping
from dataclasses import dataclass, field

from dashboard.actions.framework import ANONYMOUS, VIEWER, Actor
from dashboard.actions.login_guard import LoginGuard, LoginResult, parse_trusted_proxies

SESSION_KEY = "perfdeck_operator_session"
VIEWER_SESSION_KEY = "perfdeck_viewer_session"
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
    viewer_password_hash: str | None = None
    viewer_emails: tuple[str, ...] = ()     # lower-cased; with viewer_domains empty too, any SSO user may view
    viewer_domains: tuple[str, ...] = ()    # lower-cased, without "@"
    trusted_proxies: tuple = ()             # ip networks whose X-Forwarded-For is believed

    @property
    def oidc(self) -> bool:
        return self.oidc_provider is not None

    @property
    def viewer_auth(self) -> bool:
        """Every page needs a login: a viewer password is set, or the [auth] SSO login is usable."""
        return self.viewer_password_hash is not None or self.oidc

    def may_view_email(self, email: str) -> bool:
        """An SSO user may view: listed as viewer or operator, in an allowed domain, or nobody is listed."""
        email = email.strip().lower()
        if not self.viewer_emails and not self.viewer_domains:
            return True
        return (email in self.viewer_emails or email in self.operator_emails
                or email.rpartition("@")[2] in self.viewer_domains)

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


def _hash_setting(value, who: str, problems: list) -> str | None:
    value = str(value or "").strip()
    if value and _parse_hash(value) is None:
        problems.append(f"the {who} password hash is not a valid scrypt hash; make one with `perfdeck operator-hash`.")
        return None
    return value or None


def _list_setting(value) -> tuple[str, ...]:
    items = value.split(",") if isinstance(value, str) else value or []
    return tuple(dict.fromkeys(str(e).strip().lower() for e in items if str(e).strip()))


def operator_config(env: Mapping[str, str] | None = None, secrets: Mapping | None = None) -> OperatorConfig:
    """Read the operator and viewer settings from `env` (default os.environ) and `secrets` (default
    st.secrets); the env wins."""
    env = os.environ if env is None else env
    secrets = _streamlit_secrets() if secrets is None else secrets
    ours = secrets.get("perfdeck") if isinstance(secrets.get("perfdeck"), Mapping) else {}
    problems = []

    password_hash = _hash_setting(env.get("PERFDECK_OPERATOR_PASSWORD_HASH") or ours.get("operator_password_hash"),
                                  "operator", problems)

    name = str(env.get("PERFDECK_OPERATOR_NAME") or ours.get("operator_name") or "operator").strip() or "operator"

    emails = _list_setting(env.get("PERFDECK_OPERATOR_EMAILS") or ours.get("operator_emails"))

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

    viewer_hash = _hash_setting(env.get("PERFDECK_VIEWER_PASSWORD_HASH") or ours.get("viewer_password_hash"),
                                "viewer", problems)
    domains = tuple(d.lstrip("@") for d in _list_setting(env.get("PERFDECK_VIEWER_DOMAINS")
                                                          or ours.get("viewer_domains")))
    proxies, proxy_problems = parse_trusted_proxies(env.get("PERFDECK_TRUSTED_PROXIES") or ours.get("trusted_proxies"))

    return OperatorConfig(password_hash=password_hash, operator_name=name, oidc_provider=provider,
                          operator_emails=emails, session_minutes=minutes,
                          problems=tuple(problems) + proxy_problems, viewer_password_hash=viewer_hash,
                          viewer_emails=_list_setting(env.get("PERFDECK_VIEWER_EMAILS") or ours.get("viewer_emails")),
                          viewer_domains=domains, trusted_proxies=proxies)


def viewer_auth_configured(env: Mapping[str, str] | None = None, secrets: Mapping | None = None) -> bool:
    """True when every page asks for a login (a viewer password, or a usable [auth] SSO section). Serving
    the dashboard beyond this machine without it would show everything to anyone who reaches the port."""
    return operator_config(env, secrets).viewer_auth


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


class ViewerSession(OperatorSession):
    """A viewer password login, kept in st.session_state under VIEWER_SESSION_KEY."""


def _valid(session, encoded: str | None, config: OperatorConfig, now: float) -> bool:
    return (encoded is not None and session.credential == _fingerprint(encoded)
            and not session.expired(now, config.session_minutes))


def log_in(session_state: MutableMapping, config: OperatorConfig, key: str, password: str,
           now: float | None = None, guard: LoginGuard | None = None) -> LoginResult:
    """Try the operator password; on success the session becomes an operator session."""
    if config.password_hash is None:
        return LoginResult(False, config.hint or "password login is not configured")
    if not password:
        return LoginResult(False, "enter the operator password")   # an empty submit costs no attempt
    result = (guard or GUARD).attempt(key, password, config.password_hash, now=now)   # None: the guard's clock
    now = time.time() if now is None else now
    if result.ok:
        session_state[SESSION_KEY] = OperatorSession(config.operator_name, now, now, _fingerprint(config.password_hash))
    return result


def log_in_viewer(session_state: MutableMapping, config: OperatorConfig, key: str, password: str,
                  now: float | None = None, guard: LoginGuard | None = None) -> LoginResult:
    """The login form in front of every page: the viewer password makes a viewer, the operator password
    an operator (who may view too). One attempt against the guard, whichever hash it is checked against."""
    hashes = [h for h in (config.viewer_password_hash, config.password_hash) if h]
    if not hashes:
        return LoginResult(False, "password login is not configured")
    if not password:
        return LoginResult(False, "enter the password")
    result = (guard or GUARD).attempt(key, password, hashes, now=now)
    now = time.time() if now is None else now
    if result.ok:
        encoded = hashes[result.matched]
        if encoded == config.password_hash:
            session_state[SESSION_KEY] = OperatorSession(config.operator_name, now, now, _fingerprint(encoded))
        else:
            session_state[VIEWER_SESSION_KEY] = ViewerSession("viewer", now, now, _fingerprint(encoded))
    return result


def log_out(session_state: MutableMapping) -> None:
    """End the password sessions, operator and viewer (an OIDC login ends with st.logout)."""
    session_state.pop(SESSION_KEY, None)
    session_state.pop(VIEWER_SESSION_KEY, None)


def current_actor(session_state: MutableMapping, config: OperatorConfig, user=None, now: float | None = None) -> Actor:
    """Who is looking: the password operator or viewer, an SSO user (operator when listed, viewer when
    allowed to view), or nobody logged in: VIEWER when viewer login is off, ANONYMOUS (sees nothing) when
    it is on. `user` is st.user or anything with is_logged_in and email; read from Streamlit when None
    and SSO is on."""
    now = time.time() if now is None else now
    for key, kind, encoded, role in ((SESSION_KEY, OperatorSession, config.password_hash, "operator"),
                                     (VIEWER_SESSION_KEY, ViewerSession, config.viewer_password_hash, "viewer")):
        session = session_state.get(key)
        if session is None:
            continue
        if isinstance(session, kind) and _valid(session, encoded, config, now):
            session.touch(now)
            return Actor(session.name, role=role, via="password")
        session_state.pop(key, None)      # expired, or its password changed or was switched off

    nobody = ANONYMOUS if config.viewer_auth else VIEWER
    if not config.oidc:
        return nobody
    if user is None:
        import streamlit as st
        user = st.user
    if not getattr(user, "is_logged_in", False):
        return nobody
    email = str(getattr(user, "email", None) or "").strip()
    # An identity provider that says the address is unverified does not get to grant a role by it.
    verified = bool(email) and getattr(user, "email_verified", None) is not False
    if verified and email.lower() in config.operator_emails:
        return Actor(email, role="operator", via="oidc")
    if config.may_view_email(email if verified else ""):
        return Actor(email or "signed-in user", role="viewer", via="oidc")
    return Actor(email or "signed-in user", role="anonymous", via="oidc")


def may_view(actor: Actor) -> bool:
    """The pages are shown to viewers and operators; ANONYMOUS exists only while viewer login is on."""
    return actor.role in ("viewer", "operator")


__all__ = [
    "ABSOLUTE_SESSION_S", "GUARD", "HINT", "SESSION_KEY", "VIEWER_SESSION_KEY", "LoginGuard", "LoginResult",
    "OperatorConfig", "OperatorSession", "ViewerSession", "current_actor", "generate_demo_password", "hash_password",
    "log_in", "log_in_viewer", "log_out", "may_view", "oidc_provider", "operator_config", "verify_password",
    "viewer_auth_configured",
]
