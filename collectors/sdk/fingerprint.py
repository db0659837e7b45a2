"""SQL fingerprints: the same statement with different literals gets the same text.

    >>> fingerprint("SELECT * FROM t WHERE id = 42 AND name IN ('a', 'b')")
    'SELECT * FROM t WHERE id = ? AND name IN (?)'
"""
from __future__ import annotations

import re

_RULES = [
    (re.compile(r"--[^\n]*"), " "),                              # line comments
    (re.compile(r"/\*.*?\*/", re.S), " "),                       # block comments
    (re.compile(r"'(?:[^']|'')*'"), "?"),                         # string literals
    (re.compile(r"\$\d+|%\([A-Za-z_]\w*\)s|%s|(?<![:\w]):[A-Za-z_]\w*"), "?"),  # driver placeholders
    (re.compile(r"(?<![\w.\"])-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?\b"), "?"),        # numbers
    (re.compile(r"\b(TRUE|FALSE|NULL)\b", re.I), "?"),
    (re.compile(r"\(\s*\?(?:\s*,\s*\?)*\s*\)"), "(?)"),            # IN lists of any length
    (re.compile(r"\s+"), " "),
]
MAX_LEN = 4000


def fingerprint(sql: str) -> str:
    text = sql
    for pattern, repl in _RULES:
        text = pattern.sub(repl, text)
    return text.strip().rstrip(";").strip()[:MAX_LEN]
