"""One answer to "where do the apps send": the SDK's $PERFDECK_TRANSPORT is read by the collector and the
dashboard alike (collectors.config.transport), so a setting made once reaches all three."""
from __future__ import annotations

import pytest
from click.testing import CliRunner
from helpers import count

from collectors import config, sdk
from collectors.cli import main
from dashboard.actions.app_cache import channels

ENV = ("PERFDECK_TRANSPORT", "PERFDECK_SPOOL", "PERFDECK_REDIS", "PERFDECK_CONFIG")


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch, tmp_path):
    for var in ENV:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)


def test_the_first_setting_given_wins(tmp_path, monkeypatch):
    toml = {"transport": {"spool": "from-toml", "redis": "redis://toml:6379/0"}}
    assert config.transport() == config.Transport(tmp_path / "data" / "spool")        # the SDK's default
    assert config.transport(toml) == config.Transport(tmp_path / "from-toml", "redis://toml:6379/0")
    monkeypatch.setenv("PERFDECK_TRANSPORT", "spool:sdk-spool")
    assert config.transport(toml).spool == tmp_path / "sdk-spool"
    monkeypatch.setenv("PERFDECK_TRANSPORT", "redis://sdk:6379/1")
    assert config.transport(toml).redis_url == "redis://sdk:6379/1"
    monkeypatch.setenv("PERFDECK_SPOOL", "env-spool")
    monkeypatch.setenv("PERFDECK_REDIS", "redis://env:6379/2")
    assert config.transport(toml) == config.Transport(tmp_path / "env-spool", "redis://env:6379/2")
    assert config.transport(toml, spool="flag", redis_url="redis://flag:6379/3") == config.Transport(
        tmp_path / "flag", "redis://flag:6379/3")
    with pytest.raises(ValueError, match=r"\[transport\]: unknown keys \['spol'\]"):
        config.transport({"transport": {"spol": "typo"}})


def test_the_collector_reads_the_spool_the_sdk_was_told_to_use(tmp_path, monkeypatch):
    """Before, `perfdeck collect` ignored $PERFDECK_TRANSPORT and read data/spool: 0 requests stored."""
    monkeypatch.setenv("PERFDECK_TRANSPORT", f"spool:{tmp_path / 'shared' / 'spool'}")
    sdk.configure(service="api", flush_interval=60)              # the SDK reads the same variable
    for _ in range(3):
        sdk.record_request("/a", 12.0)
    assert sdk.flush(5)
    store = tmp_path / "perfdeck.duckdb"
    result = CliRunner().invoke(main, ["collect", "--db", str(store), "--once"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert count(store, "request_events") == 3
    assert channels() == [f"spool:{tmp_path / 'shared' / 'spool'}"]   # and the dashboard broadcasts there


def test_the_collector_reads_the_redis_stream_the_sdk_ships_to(tmp_path, monkeypatch, redis_url):
    monkeypatch.setenv("PERFDECK_TRANSPORT", redis_url)
    sdk.configure(service="api", flush_interval=60)
    sdk.record_request("/b", 8.0)
    assert sdk.flush(5)
    store = tmp_path / "perfdeck.duckdb"
    result = CliRunner().invoke(main, ["collect", "--db", str(store), "--once"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert count(store, "request_events") == 1
    assert channels() == [redis_url, f"spool:{tmp_path / 'data' / 'spool'}"]
