"""The host sampler against the real machine: psutil, real processes, no mocks."""
from __future__ import annotations

import os
import subprocess
import time

import psutil
import pytest

from collectors.config import build_samplers
from collectors.samplers import utcnow
from collectors.samplers.system import METRICS, HostSampler

RATES = {"cpu.percent", "cpu.core_percent", "disk.read_bps", "disk.write_bps", "net.sent_bps", "net.recv_bps",
         "proc.cpu_percent"}


def _sample(sampler) -> list[tuple]:
    out = sampler.collect(utcnow())
    assert [r.table for r in out] == ["system_metrics"]
    return out[0].rows


def _by_name(rows) -> dict[str, dict[str, float]]:
    d: dict[str, dict[str, float]] = {}
    for _ts, _host, name, labels, value in rows:
        d.setdefault(name, {})[labels] = value
    return d


SLEEP = f"30.{os.getpid()}"  # unique, so that nobody else's `sleep 30` matches the cmd: pattern


@pytest.fixture
def sleeper():
    proc = subprocess.Popen(["sleep", SLEEP])
    yield proc
    proc.kill()
    proc.wait()


def test_two_samples_names_values_and_no_rate_on_the_first():
    s = HostSampler(interval=0.2)
    assert s.kind == "host" and s.name == s.target and s.name
    first = _by_name(_sample(s))
    assert not RATES & set(first), "the first sample has nothing to diff against: no rate rows"
    time.sleep(0.3)
    second = _by_name(_sample(s))
    assert set(second) <= set(METRICS), set(second) - set(METRICS)
    expected = {"cpu.percent", "cpu.core_percent", "load.1m", "load.5m", "load.15m", "mem.total_bytes",
                "mem.used_bytes", "mem.available_bytes", "mem.percent", "swap.percent", "disk.used_percent",
                "net.sent_bps", "net.recv_bps", "proc.cpu_percent", "proc.rss_bytes", "proc.threads",
                "proc.open_files"}
    if psutil.disk_io_counters() is not None:
        expected |= {"disk.read_bps", "disk.write_bps"}
    assert expected <= set(second), expected - set(second)
    cores = psutil.cpu_count()
    assert 0 <= second["cpu.percent"][""] <= 100
    assert set(second["cpu.core_percent"]) == {f"cpu={i}" for i in range(cores)}
    assert all(0 <= v <= 100 for v in second["cpu.core_percent"].values())
    assert 0 <= second["mem.percent"][""] <= 100
    assert 0 < second["mem.used_bytes"][""] <= second["mem.total_bytes"][""]
    assert "mount=/" in second["disk.used_percent"]
    assert all(0 <= v <= 100 for v in second["disk.used_percent"].values())
    for name in ("disk.read_bps", "disk.write_bps", "net.sent_bps", "net.recv_bps"):
        assert all(v >= 0 for v in second.get(name, {}).values()), name
    own = f"pid={os.getpid()}"
    [label] = [lab for lab in second["proc.rss_bytes"] if lab.endswith(own)]
    assert label.startswith("proc=python")
    assert second["proc.rss_bytes"][label] > 10_000_000
    assert second["proc.threads"][label] >= 1
    assert second["proc.open_files"][label] >= 3
    assert 0 <= second["proc.cpu_percent"][label] <= 100 * cores


def test_rates_follow_real_traffic():
    """Bytes sent over loopback between two samples show up in net.sent_bps."""
    import socket
    s = HostSampler(interval=1)
    _sample(s)
    started = time.monotonic()
    server = socket.create_server(("127.0.0.1", 0))
    client = socket.create_connection(server.getsockname())
    conn, _ = server.accept()
    payload = b"x" * (1 << 20)
    for _ in range(20):
        client.sendall(payload)
        got = 0
        while got < len(payload):
            got += len(conn.recv(1 << 20))
    for sock in (server, client, conn):
        sock.close()
    second = _by_name(_sample(s))
    elapsed = time.monotonic() - started
    assert second["net.sent_bps"][""] * elapsed >= 20 * len(payload) * 0.9


def test_cmd_pattern_finds_a_subprocess(sleeper):
    s = HostSampler(interval=1, processes=[rf"cmd:^sleep {SLEEP}$"])
    first = _by_name(_sample(s))
    label = f"proc=sleep,pid={sleeper.pid}"
    assert label in first["proc.rss_bytes"] and label not in first.get("proc.cpu_percent", {})
    second = _by_name(_sample(s))
    assert second["proc.cpu_percent"][label] >= 0
    assert second["proc.threads"][label] == 1
    assert first["proc.rss_bytes"][label] > 0
    # the collector's own process is watched as well, and nothing else matched
    assert {lab.split(",")[1] for lab in second["proc.rss_bytes"]} == {f"pid={sleeper.pid}", f"pid={os.getpid()}"}


def test_process_by_name_and_pid(sleeper):
    s = HostSampler(interval=1, processes=["sleep", f"pid:{sleeper.pid}"])
    rows = _by_name(_sample(s))
    assert f"proc=sleep,pid={sleeper.pid}" in rows["proc.rss_bytes"]


def test_vanished_pid_is_skipped_without_error():
    proc = subprocess.Popen(["sleep", "30"])
    s = HostSampler(interval=1, processes=[f"pid:{proc.pid}", "pid:999999999", "cmd:^no such thing$"])
    label = f"proc=sleep,pid={proc.pid}"
    assert label in _by_name(_sample(s))["proc.rss_bytes"]
    proc.kill()
    proc.wait()
    rows = _by_name(_sample(s))
    assert not any(f"pid={proc.pid}" in lab for metric in rows.values() for lab in metric)
    assert any(f"pid={os.getpid()}" in lab for lab in rows["proc.rss_bytes"])
    # a zombie (killed, not yet reaped) is skipped as well
    zombie = subprocess.Popen(["sleep", "30"])
    s2 = HostSampler(interval=1, processes=[f"pid:{zombie.pid}"])
    _sample(s2)
    zombie.kill()
    time.sleep(0.2)
    rows = _by_name(_sample(s2))
    zombie.wait()
    assert not any(f"pid={zombie.pid}" in lab for metric in rows.values() for lab in metric)


def test_built_from_config():
    [s] = build_samplers({"host": {"interval": 7, "processes": ["cmd:celery .* worker", "pid:1"]}})
    assert isinstance(s, HostSampler) and s.interval == 7.0 and 1 in s.pids
