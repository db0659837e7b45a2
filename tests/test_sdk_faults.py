"""The SDK under faults: values the collector would refuse, events that cannot be encoded, a spool
that cannot be written, a Redis stream nobody reads, multiprocessing children that end with os._exit.
Everything is real: a spool directory, a redis-server of this module's own, forked processes."""
from __future__ import annotations

import errno

import pytest

from collectors.sdk.transport.spool import SpoolTransport

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
