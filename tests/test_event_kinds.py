"""The event kinds are declared once on each side of the batch: the SDK's (collectors.sdk.batch.KINDS,
which buffer and which encoder) and the collector's (schema.KINDS for the row schema, ingest.STORED for
how its rows are written). These tests keep the declarations in step, so a new kind cannot be
recorded by the SDK and dropped by the collector, or buffered and never drained."""
from __future__ import annotations

import pytest

from collectors.sdk import api
from collectors.sdk.batch import BUFFERS, KINDS, encode
from collectors.store import schema
from collectors.store.ingest import STORED, decode

NOW = 1_790_000_000.0


def test_every_record_buffer_is_a_declared_kind():
    lists = {name for name, value in vars(api).items() if isinstance(value, list)}
    assert lists == set(BUFFERS)


def test_the_collector_stores_every_kind_the_sdk_sends():
    sent = {kind.key for kind in KINDS} - {"requests"}          # requests: columnar, decoded on their own
    assert sent == set(schema.KINDS) == set(STORED)


def test_one_event_of_every_kind_lands_in_its_frame():
    batch = decode(encode(
        service="api", host="h", pid=1, sent_at=NOW,
        requests=[(NOW, "/a", 12.0, 200, "GET", "r1", None)],
        cache=[(NOW, "lru", None, True, 0.2)],
        queries=[(NOW, "SELECT 1", 3.0, "db")],
        llm=[(NOW, "openai", "gpt-4o", 10, 5, 0, "r1", "/a", "u", False, 800.0, 0)],
        deploys=[(NOW, "v2")],
        cache_sizes=[(NOW, "lru", 40)],
    )[1], now=NOW)
    assert len(batch.requests) == 1
    assert {kind: len(frame) for kind, frame in batch.frames.items()} == dict.fromkeys(STORED, 1)
    assert batch.events == 1 + len(STORED)


def test_an_unknown_kind_is_refused_when_the_batch_is_built():
    with pytest.raises(TypeError, match="spans"):
        encode(service="api", host="h", pid=1, sent_at=NOW, spans=[(NOW, "x")])
