"""collectors.redact: every URL and DSN form loses its secrets and keeps what names the target."""
from __future__ import annotations

import string
from pathlib import Path
from urllib.parse import quote

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from sqlalchemy.engine import make_url

from collectors.redact import MASK, redact, redact_value

SECRET_KEYS = ["password", "pass", "pwd", "token", "secret", "api_key", "access_key", "PassWord", "API_KEY",
               "sslpassword", "client_secret", "auth_token"]


@pytest.mark.parametrize("text, expected", [
    ("redis://app:s3cret@cache:6379/0", "redis://app:***@cache:6379/0"),
    ("redis://:s3cret@cache:6379/0", "redis://:***@cache:6379/0"),
    ("redis://cache:6379/0?password=s3cret", "redis://cache:6379/0?password=***"),
    ("rediss://cache/0?db=1&Password=s3cret&ssl_cert_reqs=none", "rediss://cache/0?db=1&Password=***&ssl_cert_reqs=none"),
    ("postgresql+psycopg://app@db:5432/app?password=s3cret&sslmode=require",
     "postgresql+psycopg://app@db:5432/app?password=***&sslmode=require"),
    ("postgresql://app:p@ss/w@db/app", "postgresql://app:***@db/app"),
    ("host=db port=5432 dbname=app user=app password=s3cret", "host=db port=5432 dbname=app user=app password=***"),
    ("host=db password = 's3 c\\'ret' dbname=app", "host=db password = '***' dbname=app"),
    ("{'host': 'db', 'password': 's3cret'}", "{'host': 'db', 'password': '***'}"),
    ("Error 111 connecting to redis://u:s3cret@h:1. Refused.", "Error 111 connecting to redis://u:***@h:1. Refused."),
    ("redis://cache:6379/0?x=a", "redis://cache:6379/0?x=a"),           # nothing secret: unchanged
    # Ambiguous ("cache" may be a user, "6379/0?x=a" a password): masked, the host after the "@" kept.
    ("redis://cache:6379/0?x=a@b", "redis://cache:***@b"),
    ("sqlite:////tmp/a:b@c.db", "sqlite:////tmp/a:b@c.db"),
    ("we pass: 3 checks", "we pass: 3 checks"),
])
def test_forms(text, expected):
    assert redact(text) == expected


def test_sqlalchemy_url_objects_and_known_secrets():
    url = make_url("postgresql+psycopg://app:pw-1234@db:5432/app?password=qq-5678")
    assert "pw-1234" not in redact(url) and "qq-5678" not in redact(url) and "db:5432/app" in redact(url)
    # A message that quotes the password without a key: only the URL it came from can tell.
    assert redact("auth failed for 'pw-1234' and qq-5678", url) == f"auth failed for '{MASK}' and {MASK}"
    assert redact_value({"a": ["redis://:pw-99@h/0"], "n": 3}) == {"a": [f"redis://:{MASK}@h/0"], "n": 3}


# -- property: a secret put in any place never comes out, the target stays recognisable -----------------
secrets = st.text(string.ascii_letters + string.digits + "!#$%&()*+,-./:;<=>?@[]^_{|}~", min_size=6, max_size=24)
hosts = st.from_regex(r"[a-z][a-z0-9\-]{0,15}(\.[a-z]{2,5}){0,2}", fullmatch=True)
schemes = st.sampled_from(["redis", "rediss", "postgresql", "postgresql+psycopg", "postgresql+psycopg2",
                           "mysql+pymysql", "unix"])


def _url(scheme, user, secret, host, port, db, where, key, encode):
    enc = quote(secret, safe="") if encode else secret
    userinfo = {"userinfo": f"{user}:{enc}@", "query": f"{user}@" if user else ""}[where]
    query = f"?sslmode=require&{key}={quote(secret, safe='')}&x=1" if where == "query" else "?sslmode=require"
    return f"{scheme}://{userinfo}{host}:{port}/{db}{query}"


@settings(max_examples=400, deadline=None)
@given(scheme=schemes, user=st.sampled_from(["", "app", "svc_user"]), secret=secrets, host=hosts,
       port=st.integers(1, 65535), db=st.from_regex(r"[a-z0-9_]{1,12}", fullmatch=True),
       where=st.sampled_from(["userinfo", "query"]), key=st.sampled_from(SECRET_KEYS), encode=st.booleans(),
       wrap=st.sampled_from(["{}", "Error connecting to {}. Connection refused.", "({}, timeout=2)", "'{}'"]))
def test_urls_never_keep_their_secret(scheme, user, secret, host, port, db, where, key, encode, wrap):
    url = _url(scheme, user, secret, host, port, db, where, key, encode)
    out = redact(wrap.format(url))
    forms = {secret, quote(secret, safe="")}
    public = wrap.format(_url(scheme, user, "", host, port, db, where, key, encode)) + MASK
    assume(not any(form in public for form in forms))     # a "secret" that is also the host proves nothing
    for form in forms:
        assert form not in out, (url, out)
    assert f"{host}:{port}/{db}" in out and f"{scheme}://" in out


@settings(max_examples=300, deadline=None)
@given(secret=st.text(string.ascii_letters + string.digits + string.punctuation + " ", min_size=6, max_size=24),
       host=hosts, port=st.integers(1, 65535), db=st.from_regex(r"[a-z0-9_]{1,12}", fullmatch=True),
       key=st.sampled_from(["password", "PASSWORD", "sslpassword", "token"]), sep=st.sampled_from(["=", " = "]),
       order=st.booleans())
def test_libpq_dsns_never_keep_their_secret(secret, host, port, db, key, sep, order):
    needs_quotes = any(c in secret for c in " '\\") or not secret
    value = "'" + secret.replace("\\", "\\\\").replace("'", "\\'") + "'" if needs_quotes else secret
    pairs = [f"host={host}", f"port={port}", f"{key}{sep}{value}", f"dbname={db}"]
    dsn = " ".join(reversed(pairs) if order else pairs)
    out = redact(f"connection to {dsn} failed")
    assume(secret not in f"connection to {dsn.replace(value, '')} failed{MASK}")
    assert secret not in out, (dsn, out)
    assert f"host={host}" in out and f"port={port}" in out and f"dbname={db}" in out


# -- secrets scan: targets with passwords in every form, the collector and the actions run, nothing kept -----
SECRETS = {f"Sekr{i}tXq{i}zz" for i in range(1, 8)}


def _free_port() -> int:
    import socket
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def private_redis(tmp_path):
    """A redis-server of our own that wants the password Sekr1tXq1zz."""
    import subprocess
    import time

    import redis
    port = _free_port()
    proc = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                             "--appendonly", "no", "--requirepass", "Sekr1tXq1zz", "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    client = redis.Redis(port=port, password="Sekr1tXq1zz")
    for _ in range(100):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.05)
    yield port
    proc.terminate()
    proc.wait(10)


def test_no_secret_survives_anywhere(private_redis, tmp_path, monkeypatch, caplog):
    from click.testing import CliRunner
    from streamlit.testing.v1 import AppTest

    from collectors import config
    from collectors.cli import EXPORTABLE, main
    from collectors.daemon import Collector
    from collectors.store import read
    from dashboard.actions import audit
    from dashboard.actions.database_actions import Analyze
    from dashboard.actions.framework import ActionError, Actor
    from dashboard.actions.redis_actions import DeleteKeys

    up, down = private_redis, _free_port()
    targets = {
        "redis": {
            "up": f"redis://:Sekr1tXq1zz@127.0.0.1:{up}/0",
            "wrong": f"redis://127.0.0.1:{up}/0?password=Sekr2tXq2zz",           # refused: a wrong password
            "gone-userinfo": f"redis://app:Sekr3tXq3zz@127.0.0.1:{down}/1",
            "gone-query": f"rediss://127.0.0.1:{down}/2?socket_timeout=1&Password=Sekr4tXq4zz",
        },
        "database": {
            "pg-userinfo": f"postgresql+psycopg://app:Sekr5tXq5zz@127.0.0.1:{down}/app",
            "pg-query": f"postgresql+psycopg://app@127.0.0.1:{down}/app?password=Sekr6tXq6zz&connect_timeout=2",
            "pg-sslpassword": f"postgresql+psycopg://app@127.0.0.1:{down}/app?sslpassword=Sekr7tXq7zz",
        },
    }
    toml = tmp_path / "perfdeck.toml"
    toml.write_text("[host]\nenabled = false\n" + "".join(
        f'[[{kind}]]\nname = "{name}"\nurl = "{url}"\n{"advise = false" if kind == "database" else ""}\n'
        for kind, entries in targets.items() for name, url in entries.items()))
    store = tmp_path / "perfdeck.duckdb"
    monkeypatch.setenv("PERFDECK_CONFIG", str(toml))
    monkeypatch.setenv("PERFDECK_DB", str(store))
    caplog.set_level("DEBUG")

    seen: list[str] = []
    samplers = config.build_samplers(config.load())
    collector = Collector(store, spool_dir=tmp_path / "spool", samplers=samplers, advise_at_start=False)
    try:
        collector.run_once()
    except Exception as exc:       # down targets are re-raised at the end of --once
        seen.append(str(exc))
    for s in samplers:
        s.close()

    # Actions on every target: previews fail with the drivers' words, which go to the page and the audit log.
    actor = Actor("ops", "operator", "test")
    for action, kind in ((DeleteKeys(), "redis"), (Analyze(), "database")):
        for name, url in targets[kind].items():
            params = {"target": name, "pattern": "app:*"} if kind == "redis" else {"target": name}
            try:
                preview = action.preview(action.check(params)).text()
                seen.append(preview)
                audit.record(store, actor=actor, action=action.name, target=name, params=params, preview=preview,
                             outcome="previewed")
            except ActionError as exc:
                seen.append(str(exc))
                # A careless caller handing the raw URL and the raw exception to the audit log: still redacted.
                audit_id = audit.start(store, actor=actor, action=action.name, target=url,
                                       params={**params, "url": url}, preview=f"on {url}")
                audit.finish(store, audit_id, outcome="failed", duration_ms=1, error=f"{exc} ({url})",
                             figures={"url": url})

    # Pages: Caches and Database with their "is down" callouts.
    for page in ("caches.py", "database.py"):
        at = AppTest.from_file(str(Path(__file__).resolve().parent.parent / "dashboard" / "app_pages" / page),
                               default_timeout=60)
        at.run()
        seen += [str(e.proto) for e in at.main] + [str(e.proto) for e in at.sidebar]
        seen += [e.value for e in at.error]
    assert any("is down" in text for text in seen)            # the error paths were really taken

    # The whole store: every text column of every table; the CSV exports; the logs.
    with read(store) as con:
        for (table,) in con.execute("SELECT table_name FROM information_schema.tables").fetchall():
            seen += [con.execute(f'SELECT * FROM "{table}"').df().to_csv(index=False)]
    runner = CliRunner()
    for table in EXPORTABLE:
        result = runner.invoke(main, ["export", table, "--db", str(store), "--since", "30d"])
        assert result.exit_code == 0, result.output
        seen.append(result.output)
    seen += [r.getMessage() + (r.exc_text or "") for r in caplog.records]

    everything = "\n".join(seen)
    # Not a vacuous pass: the targets are there, recognisable, and so are the audit rows.
    assert f"rediss://127.0.0.1:{down}/2?socket_timeout=1&Password=***" in everything
    assert f"postgresql+psycopg://app:***@127.0.0.1:{down}/app" in everything
    assert everything.count("redis://app:***@127.0.0.1:") >= 3        # components, audit rows, exports
    assert sorted(s for s in SECRETS if s in everything) == []


def test_collector_errors_and_their_tracebacks_never_log_a_secret(tmp_path, caplog):
    """Everything the daemon's jobs raise is logged and kept through one place: redacted there."""
    import logging

    from collectors.daemon import Collector

    collector = Collector(tmp_path / "perfdeck.duckdb", spool_dir=tmp_path / "spool")

    def fails():
        raise ConnectionError("could not connect to postgresql://app:s3cret-pw@db:5432/app?sslpassword=k3y")

    with caplog.at_level(logging.WARNING, logger="perfdeck.daemon"):
        for _ in range(2):                                      # the traceback, then the one-line repeat
            collector._isolated("database sampler", fails)
    assert "s3cret-pw" not in caplog.text and "k3y" not in caplog.text
    assert "postgresql://app:***@db:5432/app" in caplog.text and "Traceback" in caplog.text
    assert not any("s3cret-pw" in e for e in collector._errors)


def test_a_target_the_collector_cannot_build_is_one_line_without_its_password(tmp_path):
    import subprocess
    import sys

    config = tmp_path / "perfdeck.toml"
    config.write_text('[host]\nenabled = false\n[[database]]\nname = "app"\n'
                      'url = "mysql+nodriver://app:s3cret-pw@db/app"\n')
    out = subprocess.run([sys.executable, "-m", "collectors.cli", "collect", "--once", "--db",
                          str(tmp_path / "s.duckdb"), "--spool", str(tmp_path / "spool"), "--config", str(config)],
                         capture_output=True, text=True)
    assert out.returncode == 1
    assert out.stderr.strip().splitlines()[-1].startswith("Error: [[database]] 'app': NoSuchModuleError")
    assert "Traceback" not in out.stderr and "s3cret-pw" not in out.stderr
