"""The SDK under faults: values the collector would refuse, events that cannot be encoded, a spool
that cannot be written, a Redis stream nobody reads, multiprocessing children that end with os._exit.
Everything is real: a spool directory, a redis-server of this module's own, forked processes."""
from __future__ import annotations

import errno
import shutil
import subprocess
import time

import pytest
import redis

from collectors import sdk
from collectors.sdk.transport.redis import STREAM, RedisTransport, StreamFull
from collectors.sdk.transport.spool import SpoolTransport
from collectors.store.ingest import decode

REDIS_PORT = 6393

# -- the spool ---------------------------------------------------------------------------------------------

def test_a_failed_spool_write_removes_its_temp_file_and_raises(spool):
    # The temporary name is where the transport will write: make it the full device, a real ENOSPC.
    batch_id = "f" * 32
    (spool / f".tmp-{batch_id}").symlink_to("/dev/full")
    transport = SpoolTransport(spool)
    with pytest.raises(OSError) as failed:
        transport.send(batch_id, b"{}" * 50_000)
    assert failed.value.errno == errno.ENOSPC
    assert list(spool.iterdir()) == []
    transport.send(batch_id, b"{}")           # the next try writes the batch as usual
    assert [p.name.endswith(f"-{batch_id}.batch") for p in spool.iterdir()] == [True]


# -- the Redis stream --------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def own_redis():
    """A redis-server of this module's own, nothing persisted, stopped at the end."""
    if not shutil.which("redis-server"):
        pytest.fail("redis-server is not installed")
    server = subprocess.Popen(["redis-server", "--port", str(REDIS_PORT), "--bind", "127.0.0.1",
                               "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL)
    url = f"redis://127.0.0.1:{REDIS_PORT}/0"
    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.ConnectionError:
                if server.poll() is not None or time.monotonic() > deadline:
                    pytest.fail(f"redis-server on port {REDIS_PORT} did not start")
                time.sleep(0.05)
        yield url
    finally:
        client.close()
        server.terminate()
        server.wait(10)


@pytest.fixture
def stream(own_redis):
    client = redis.Redis.from_url(own_redis)
    client.flushdb()
    yield own_redis, client
    client.flushdb()
    client.close()


def test_a_full_stream_refuses_the_batch_instead_of_trimming_unread_ones(stream):
    url, client = stream
    transport = RedisTransport(url, maxlen=5)
    for i in range(5):
        transport.send(f"b{i}", b"{}")
    with pytest.raises(StreamFull):
        transport.send("b5", b"{}")
    assert [fields[b"id"] for _, fields in client.xrange(STREAM)] == [b"b0", b"b1", b"b2", b"b3", b"b4"]
    client.xdel(STREAM, client.xrange(STREAM, count=1)[0][0])   # a collector acknowledged and deleted one
    transport.send("b5", b"{}")
    assert client.xlen(STREAM) == 5
    transport.close()


def test_batches_a_full_stream_refuses_wait_in_the_backlog_then_are_dropped_and_counted(stream):
    from collectors.sdk.flusher import BACKLOG
    from collectors.sdk.transport.redis import MAXLEN

    url, client = stream
    with client.pipeline(transaction=False) as pipe:       # batches no collector has read
        for i in range(MAXLEN):
            pipe.xadd(STREAM, {"id": f"old{i}", "b": b"{}"})
        pipe.execute()
    sdk.configure(service="api", transport=url, flush_interval=60, control=False)
    waiting = BACKLOG + 2
    for i in range(waiting):
        sdk.record_request(f"/r{i}", 1.0)
        assert sdk.flush(5) is False                      # refused: nothing trimmed, the batch waits
    assert client.xlen(STREAM) == MAXLEN
    assert client.xrange(STREAM, count=1)[0][1][b"id"] == b"old0"
    stats = sdk.stats()
    assert stats["send_errors"] == waiting and stats["dropped"] == waiting - BACKLOG

    client.xtrim(STREAM, maxlen=0)                        # the collector caught up and deleted them
    assert sdk.flush(5)
    sent = [decode(fields[b"b"]) for _, fields in client.xrange(STREAM)]
    endpoints = [e for b in sent for e in b.requests.column("endpoint").to_pylist()]
    assert endpoints == [f"/r{i}" for i in range(waiting - BACKLOG, waiting)]
    assert sent[-1].sdk.dropped == waiting - BACKLOG      # the loss reaches the store
