"""Ingest that nothing stops: odd entries in the spool (directories, FIFOs, symlinks, sockets), temp files
of writes that died, and a Redis that lost the stream and its group (FLUSHALL, the dashboard's Flush
database, a restart without persistence). Everything is real: files, FIFOs and sockets in tmp_path, a
redis-server of the tests' own that they flush, kill and start again."""
from __future__ import annotations

import logging
import os
import signal
import socket
import stat
import subprocess
import time
from collections import Counter

import pytest
import redis

from collectors.daemon import Collector
from collectors.sdk.batch import encode
from collectors.sdk.transport.redis import STREAM, RedisTransport
from collectors.sdk.transport.spool import SUFFIX, SpoolTransport
from collectors.sources import STALE_TMP_S, RedisSource, SpoolSource
from dashboard.actions import make_preview, run_action
from dashboard.actions.redis_actions import FlushDatabase
from tests.helpers import OPERATOR, count, query

EVENTS = 10          # request events per test batch


def make_batch() -> tuple[str, bytes]:
    now = time.time()
    return encode(service="api", host="h", pid=1, sent_at=now,
                  requests=[(now, "/a", 1.0 + i, 200, "GET", None, None) for i in range(EVENTS)])[:2]


def notes_of(collector: Collector, store) -> Counter:
    """What the sources noted, whether still held by them or already stored by the daemon."""
    notes = Counter()
    for source in collector.sources:
        notes += source.take_notes()
    for kind, reason, n in query(store, "SELECT kind, reason, sum(count) FROM ingest_rejects "
                                        "WHERE kind IN ('spool', 'stream') GROUP BY ALL"):
        notes[kind, reason] += int(n)
    return notes


def mode_of(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


# ------------------------------------------------------------------ spool

ODD_KINDS = ("directory", "fifo", "symlink", "socket")


def make_odd_entry(spool, name: str, kind: str, target) -> None:
    path = spool / name
    if kind == "directory":
        path.mkdir()
        (path / "inside.batch").write_bytes(b"x")
    elif kind == "fifo":
        os.mkfifo(path)
    elif kind == "symlink":
        path.symlink_to(target)
    else:
        cwd = os.getcwd()
        os.chdir(spool)                  # a socket's path must be short: bind it by its relative name
        try:
            with socket.socket(socket.AF_UNIX) as sock:
                sock.bind(name)
        finally:
            os.chdir(cwd)


@pytest.mark.timeout(60)    # a FIFO used to block the daemon in open(): fail instead of hanging the run
@pytest.mark.parametrize("kinds", [(k,) for k in ODD_KINDS] + [ODD_KINDS], ids=[*ODD_KINDS, "all"])
def test_odd_spool_entries_are_moved_aside_unread_while_good_batches_land(store, spool, tmp_path, kinds):
    transport = SpoolTransport(spool)
    transport.send(*make_batch())
    secret = tmp_path / "outside" / "secret.txt"      # what a symlink in the spool points to
    secret.parent.mkdir()
    secret.write_bytes(b"not for the collector's eyes")
    secret.chmod(0o640)
    ns = time.time_ns()
    names = {kind: f"{ns:020d}-{kind}{SUFFIX}" for kind in kinds}
    for kind, name in names.items():
        make_odd_entry(spool, name, kind, secret)
    transport.send(*make_batch())

    collector = Collector(store, spool_dir=spool)
    collector.run_once()                 # raises if any ingest step failed

    assert count(store, "request_events") == 2 * EVENTS
    assert list(spool.iterdir()) == []
    quarantine = tmp_path / "quarantine"
    moved = {kind: os.lstat(quarantine / name).st_mode for kind, name in names.items()}
    checks = {"directory": stat.S_ISDIR, "fifo": stat.S_ISFIFO, "symlink": stat.S_ISLNK, "socket": stat.S_ISSOCK}
    assert all(checks[kind](mode) for kind, mode in moved.items())
    if "directory" in names:
        assert (quarantine / names["directory"] / "inside.batch").read_bytes() == b"x"
    if "symlink" in names:
        # The link itself was moved; its target was neither copied into the quarantine nor touched.
        assert os.readlink(quarantine / names["symlink"]) == str(secret)
        assert secret.read_bytes() == b"not for the collector's eyes" and mode_of(secret) == 0o640
        copies = [p for p in quarantine.rglob("*") if p.is_file() and not p.is_symlink()]
        assert all(p.read_bytes() != b"not for the collector's eyes" for p in copies)
    for kind, name in names.items():
        reason_file = quarantine / f"{name}.reason.txt"
        assert reason_file.read_text() == f"{kind}: moved aside unread\n"
        assert mode_of(reason_file) == 0o600
    assert notes_of(collector, store) == Counter({("spool", kind): 1 for kind in kinds})

    transport.send(*make_batch())        # and ingest goes on
    collector.run_once()
    assert count(store, "request_events") == 3 * EVENTS


@pytest.mark.parametrize("swap", ["fifo", "symlink", "directory"])
def test_type_is_checked_on_the_open_descriptor(spool, tmp_path, swap):
    """An entry seen as a regular file by the directory scan and swapped before it is opened."""
    outside = tmp_path / "target.batch"
    _, payload = make_batch()
    outside.write_bytes(payload)
    name = f"{time.time_ns():020d}-swapped{SUFFIX}"
    (spool / name).write_bytes(payload)
    source = SpoolSource(spool, tmp_path / "quarantine")
    with os.scandir(spool) as it:
        entry = next(it)
    assert entry.is_file(follow_symlinks=False)
    (spool / name).unlink()
    {"fifo": lambda p: os.mkfifo(p), "symlink": lambda p: p.symlink_to(outside),
     "directory": lambda p: p.mkdir()}[swap](spool / name)

    assert source._read(entry) is None
    assert os.path.lexists(tmp_path / "quarantine" / name) and not os.path.lexists(spool / name)
    assert outside.read_bytes() == payload
    assert source.take_notes() == Counter({("spool", swap): 1})


def test_quarantined_copies_are_private(store, spool, tmp_path):
    (spool / f"{time.time_ns():020d}-bad{SUFFIX}").write_bytes(b"not json")
    SpoolTransport(spool).send(*make_batch())
    Collector(store, spool_dir=spool).run_once()

    assert count(store, "request_events") == EVENTS
    quarantine = tmp_path / "quarantine"
    assert mode_of(quarantine) == 0o700
    files = sorted(quarantine.iterdir())
    assert [p.name.endswith(".reason.txt") for p in files] == [False, True]
    assert [mode_of(p) for p in files] == [0o600, 0o600]
    assert files[0].read_bytes() == b"not json"


def test_stale_temp_files_are_removed_and_fresh_ones_kept(spool, tmp_path):
    stale, fresh, later = spool / ".tmp-dead", spool / ".tmp-writing", spool / ".tmp-dies-later"
    for path in (stale, fresh, later):
        path.write_bytes(b"half a batch")
    long_ago = time.time() - STALE_TMP_S - 60
    os.utime(stale, (long_ago, long_ago))
    source = SpoolSource(spool, tmp_path / "quarantine")

    assert source.fetch(10, 1 << 20) == []
    assert (stale.exists(), fresh.exists()) == (False, True)
    assert source.take_notes() == Counter({("spool", "stale_tmp_removed"): 1})
    # Checked at most about once a minute, not on every fetch.
    os.utime(later, (long_ago, long_ago))
    source.fetch(10, 1 << 20)
    assert later.exists() and source.take_notes() == Counter()


def test_spool_status_counts_waiting_batches_and_ages_the_oldest(spool, tmp_path):
    source = SpoolSource(spool, tmp_path / "quarantine")
    assert source.status() == {"pending": 0, "oldest_pending_s": None, "stream_length": None,
                               "stream_pending": None, "error": None}
    _, payload = make_batch()
    now_ns = time.time_ns()
    for age_s in (120, 30):               # the time prefix the spool transport writes
        (spool / f"{now_ns - age_s * 10**9:020d}-x{age_s}{SUFFIX}").write_bytes(payload)
    (spool / ".tmp-in-flight").write_bytes(payload)
    status = source.status()
    assert status["pending"] == 2 and status["error"] is None
    assert 120 <= status["oldest_pending_s"] < 120 + 3600
    # A name without the prefix falls back to the file's mtime.
    legacy = spool / f"legacy{SUFFIX}"
    legacy.write_bytes(payload)
    ten_min_ago = time.time() - 600
    os.utime(legacy, (ten_min_ago, ten_min_ago))
    status = source.status()
    assert status["pending"] == 3 and 600 <= status["oldest_pending_s"] < 600 + 3600
    assert SpoolSource(tmp_path / "absent", tmp_path / "q").status()["pending"] == 0


# ------------------------------------------------------------------ Redis

class OwnRedis:
    """A redis-server of the test's own (no persistence) that can be killed and started again, empty."""

    def __init__(self, directory):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.directory, self.proc = directory, None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", str(self.directory)],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 10
        while True:
            try:
                if redis.Redis(port=self.port, socket_connect_timeout=0.2).ping():
                    return
            except redis.ConnectionError:
                pass
            if time.monotonic() > deadline or self.proc.poll() is not None:
                self.kill()
                pytest.fail(f"redis-server on port {self.port} did not start")
            time.sleep(0.05)

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()


@pytest.fixture
def own_redis(tmp_path):
    server = OwnRedis(tmp_path)
    server.start()
    yield server
    server.kill()          # a no-op for a process killed already


def send(url: str, n: int = 1) -> None:
    transport = RedisTransport(url)
    for _ in range(n):
        transport.send(*make_batch())
    transport.close()


@pytest.mark.redis
@pytest.mark.parametrize("flush", ["FLUSHALL", "FLUSHDB"])
def test_collector_keeps_ingesting_after_the_stream_is_flushed(store, spool, own_redis, flush, caplog):
    collector = Collector(store, spool_dir=spool, redis_url=own_redis.url)
    client = redis.Redis.from_url(own_redis.url)
    send(own_redis.url)
    collector.run_once()

    client.execute_command(flush)          # batches sent afterwards recreate the stream, without the group
    send(own_redis.url, 2)
    with caplog.at_level(logging.WARNING, logger="perfdeck.daemon"):
        collector.run_once()
    assert count(store, "request_events") == 3 * EVENTS
    assert any("lost" in r.getMessage() and STREAM in r.getMessage() for r in caplog.records)

    client.execute_command(flush)          # nothing sent before the next tick: it recreates an empty stream
    collector.run_once()
    send(own_redis.url)
    collector.run_once()
    assert count(store, "request_events") == 4 * EVENTS
    assert client.xlen(STREAM) == 0 and client.xpending(STREAM, RedisSource.GROUP)["pending"] == 0
    assert notes_of(collector, store)["stream", "group_recreated"] == 2
    client.close()


@pytest.mark.redis
def test_collector_keeps_ingesting_after_redis_restarts_empty(store, spool, own_redis):
    collector = Collector(store, spool_dir=spool, redis_url=own_redis.url)
    send(own_redis.url)
    collector.run_once()

    own_redis.kill()
    own_redis.start()
    send(own_redis.url, 2)
    collector.run_once()
    assert count(store, "request_events") == 3 * EVENTS
    assert notes_of(collector, store)["stream", "group_recreated"] == 1


@pytest.mark.redis
def test_redis_status_figures(own_redis, tmp_path):
    source = RedisSource(own_redis.url, tmp_path / "q")
    assert source.status() == {"pending": 0, "oldest_pending_s": None, "stream_length": 0, "stream_pending": 0,
                               "error": None}
    client = redis.Redis.from_url(own_redis.url)
    server_ms = int(client.time()[0]) * 1000
    _, payload = make_batch()
    client.xadd(STREAM, {"b": payload}, id=f"{server_ms - 90_000}-0")   # made 90 s ago on the server's clock
    send(own_redis.url, 2)
    status = source.status()
    assert (status["pending"], status["stream_length"], status["stream_pending"], status["error"]) == (3, 3, 0, None)
    assert 90 <= status["oldest_pending_s"] < 90 + 3600

    items = source.fetch(10, 1 << 20)        # delivered, not yet acknowledged
    assert len(items) == 3
    assert (source.status()["pending"], source.status()["stream_pending"]) == (3, 3)
    source.ack(items)
    assert source.status() == {"pending": 0, "oldest_pending_s": None, "stream_length": 0, "stream_pending": 0,
                               "error": None}
    client.flushall()                        # the group gone too: nothing pending, no error
    assert source.status()["stream_pending"] == 0 and source.status()["error"] is None
    client.close()

    own_redis.kill()
    down = source.status()                   # says so, does not raise
    assert down["error"].startswith("ConnectionError")
    assert {k: v for k, v in down.items() if k != "error"} == {
        "pending": None, "oldest_pending_s": None, "stream_length": None, "stream_pending": None}


@pytest.mark.redis
def test_entries_deleted_before_ingest_are_counted_not_quarantined(own_redis, tmp_path):
    send(own_redis.url, 3)
    crashed = RedisSource(own_redis.url, tmp_path / "q", consumer="c1")
    delivered = crashed.fetch(10, 1 << 20)   # then the collector dies before its commit
    client = redis.Redis.from_url(own_redis.url)
    client.xdel(STREAM, delivered[0].name)   # as a trim (the SDK's MAXLEN) would while it was down

    restarted = RedisSource(own_redis.url, tmp_path / "q", consumer="c1")
    items = restarted.fetch(10, 1 << 20)
    assert [i.name for i in items] == [d.name for d in delivered[1:]]
    restarted.ack(items)
    assert restarted.take_notes() == Counter({("stream", "deleted_before_ingest"): 1})
    assert client.xpending(STREAM, RedisSource.GROUP)["pending"] == 0
    client.close()


@pytest.mark.redis
def test_entries_whose_write_failed_come_again_first(own_redis, tmp_path):
    """A failed write acknowledges nothing: the next fetch hands the same entries again, oldest first (the
    daemon then writes them one per transaction), not new ones while they wait out the claim time."""
    send(own_redis.url, 3)
    source = RedisSource(own_redis.url, tmp_path / "q", consumer="c1")
    failed = source.fetch(10, 1 << 20)
    send(own_redis.url, 2)
    again = source.fetch(1, 1 << 20)
    assert [i.name for i in again] == [failed[0].name]
    source.ack(again)
    rest = source.fetch(10, 1 << 20)
    assert [i.name for i in rest] == [f.name for f in failed[1:]]
    source.ack(rest)
    assert len(source.fetch(10, 1 << 20)) == 2          # then the new ones


@pytest.mark.redis
def test_flush_database_preview_counts_the_unread_batches_it_loses(own_redis, tmp_path, monkeypatch,
                                                                   migrated_store, operator):
    monkeypatch.setenv("PERFDECK_CONFIG", str(tmp_path / "absent.toml"))
    url = f"redis://127.0.0.1:{own_redis.port}/2"
    monkeypatch.setenv("PERFDECK_REDIS_URLS", f"queue={url},cache=redis://127.0.0.1:{own_redis.port}/3")
    source = RedisSource(url, tmp_path / "q")
    send(url, 3)
    assert len(source.fetch(1, 1 << 20)) == 1      # one delivered and not yet committed: unread all the same
    action = FlushDatabase()
    assert make_preview(action, {"target": "cache"}, actor=OPERATOR)[1].warnings == []

    params, preview = make_preview(action, {"target": "queue"}, actor=OPERATOR)
    assert preview.warnings == [f"this database holds perfdeck's transport stream {STREAM}: 3 batches wait in it "
                                "unread by the collector; flushing loses them"]
    run_action(action, params, preview, actor=operator, confirmation="queue", db=migrated_store)

    send(url)                                       # the collector reading that database goes on
    assert len(source.fetch(10, 1 << 20)) == 1
    assert source.take_notes() == Counter({("stream", "group_recreated"): 1})
    _, preview = make_preview(action, {"target": "queue"}, actor=OPERATOR)
    assert preview.warnings == [f"this database holds perfdeck's transport stream {STREAM}: 1 batch waits in it "
                                "unread by the collector; flushing loses it"]
