"""Secrets out of text: the one redaction applied before anything is stored, logged, shown, exported or audited.

    redact("redis://app:s3cret@cache:6379/0?token=abc")   -> "redis://app:***@cache:6379/0?token=***"
    redact("host=db port=5432 password='a b' dbname=app") -> "host=db port=5432 password='***' dbname=app"
    redact(str(sqlalchemy_url))                           -> SQLAlchemy hides only the userinfo password
    redact(f"connecting failed: {exc}", url)              -> also masks the literal secrets of `url`

It works on any text, not only on a bare URL, because exception messages echo URLs and DSNs in the
middle of a sentence. Host, port, database, user and every other parameter stay as they were, so the
result still says which target it was. Three forms are masked wherever they occur:
- the password of a URL's userinfo (`scheme://user:PASS@host`), even unencoded with "@" or "/" in it;
- the value of a secret-looking key (password, pass, pwd, token, secret, api_key, access_key, ... in
  any case, and names containing them such as sslpassword or client_secret) written `key=value` (URL
  query, libpq key/value DSN, ODBC) or `'key': 'value'` (a dict's repr), quoted values included;
- with `known` URLs given, each of their secrets wherever it appears (raw, percent-encoded or decoded),
  for messages that quote a password without saying it is one."""
from __future__ import annotations

import re
from urllib.parse import parse_qsl, quote, unquote, urlsplit

MASK = "***"

# A scheme:// and what follows up to whitespace or a "," or ";" that starts the next one (a list of
# URLs); not up to a quote, a bracket or a "://": an unencoded password may hold any of them.
_URL = re.compile(r"(?P<scheme>\b[A-Za-z][A-Za-z0-9+.\-]*://)(?P<rest>(?:(?![,;][A-Za-z][A-Za-z0-9+.\-]*://)\S)*)")
# userinfo "user:password@", the password running up to the last "@" before the query: passwords are
# often written unencoded, and masking too much is better than leaking the end of one.
_USERINFO = re.compile(r"^(?P<user>[^:/?#@\[\]]*):(?P<password>[^?#]*)@(?P<host>[^@?#]*)")
# ...and when that finds none, the password runs up to the last "@" of all: "redis://:pa/ss#@host" is
# ambiguous (a URL parser reads a port and a fragment), so "redis://h:6379/0?x=a@b" loses its port too.
_USERINFO_LOOSE = re.compile(r"^(?P<user>[^:/?#@\[\]]*):(?P<password>.*)@")
_SECRET_WORDS = r"pass(?:word|wd|phrase)?|pwd|secret|token|api[_\-]?key|access[_\-]?key|private[_\-]?key|credentials?"
_KEY = rf"[A-Za-z0-9_.\-]*(?:{_SECRET_WORDS})[A-Za-z0-9_.\-]*"
# libpq quotes with '...' (an unclosed one is an error there); "..." and {...} only count when closed.
_VALUE = r"""'(?:[^'\\]|\\.)*'?|"(?:[^"\\]|\\.)*"|\{[^}]*\}|\S*"""
# key=value (query strings, libpq, ODBC; "=" may have spaces around it in libpq) and 'key': 'value'
_PAIR = re.compile(
    rf"""(?P<lead>(?<![A-Za-z0-9_.\-])['"]?)(?P<key>{_KEY})(?P<close>['"]?)(?P<sep>\s*[=:]\s*|%3[Dd])(?P<value>{_VALUE})""",
    re.IGNORECASE)
_QUOTES = {"'": "'", '"': '"', "{": "}"}


def _mask_value(value: str) -> str:
    if value and value[0] in _QUOTES:
        return value[0] + MASK + (_QUOTES[value[0]] if value.endswith(_QUOTES[value[0]]) and len(value) > 1 else "")
    return MASK if value else value


def _pair(m: re.Match) -> str:
    # "pass: 3 tries" in prose is not a secret: the ':' form needs a quoted key (a dict's repr).
    if ":" in m["sep"] and not m["close"]:
        return m[0]
    value, rest = m["value"], ""
    if not value:
        return m[0]
    if value[0] not in _QUOTES and m.start() and m.string[m.start() - 1] in "?&;":
        # A URL query: "&" ends the value (libpq allows it inside one), the rest may hold more pairs.
        value, amp, rest = value.partition("&")
        rest = amp + _PAIR.sub(_pair, rest) if amp else ""
    return f"{m['lead']}{m['key']}{m['close']}{m['sep']}{_mask_value(value)}{rest}"


def _userinfo(rest: str) -> re.Match | None:
    info = _USERINFO.match(rest)
    return info if info and info["password"] else _USERINFO_LOOSE.match(rest)


def _url(m: re.Match) -> str:
    rest = m["rest"]
    info = _userinfo(rest)
    if info and info["password"]:
        rest = f"{info['user']}:{MASK}@{rest[info.end('password') + 1:]}"
    return m["scheme"] + rest


def secrets_of(url) -> list[str]:
    """The secrets in a URL or DSN (userinfo password, secret-looking parameters), longest first,
    each as written, percent-decoded and percent-encoded."""
    text = str(getattr(url, "render_as_string", lambda **_: url)(hide_password=False))
    found: set[str] = set()
    try:
        parts = urlsplit(text)
        if parts.password:
            found.add(parts.password)
        for key, value in parse_qsl(parts.query, keep_blank_values=False):
            if re.fullmatch(_KEY, key, re.IGNORECASE):
                found.add(value)
    except ValueError:
        pass
    info = _URL.search(text)
    if info and (m := _userinfo(info["rest"])) and m["password"]:
        found.add(m["password"])
    for m in _PAIR.finditer(text):
        value = m["value"]
        if value[:1] in _QUOTES:
            value = value[1:-1] if value.endswith(_QUOTES[value[0]]) and len(value) > 1 else value[1:]
        found.add(value)
    out = set()
    for s in found:
        if len(s) >= 4:     # a 1-3 character "secret" would mask half the message and protect nothing
            out |= {s, unquote(s), quote(s, safe="")}
    return sorted(out, key=len, reverse=True)


def redact(text, *known) -> str:
    """`text` (a str, or anything whose str() is wanted: an exception, a SQLAlchemy URL) with every
    secret masked as "***"; `known` URLs/DSNs add their literal secrets. See the module docstring."""
    if text is None:
        return text
    out = text if isinstance(text, str) else str(text)
    secrets = [s for url in known if url for s in secrets_of(url)]
    for s in secrets:
        out = out.replace(s, MASK)
    out = _URL.sub(_url, out)
    return _PAIR.sub(_pair, out)


def redact_value(value):
    """`value` with every str inside it (dicts, lists, tuples) redacted, and the value of a secret-looking
    key masked whatever it is; other values as they are."""
    if isinstance(value, str):
        return redact(value)
    if isinstance(value, dict):
        return {k: MASK if isinstance(k, str) and re.fullmatch(_KEY, k, re.IGNORECASE) else redact_value(v)
                for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(redact_value(v) for v in value)
    return value


__all__ = ["MASK", "redact", "redact_value", "secrets_of"]
