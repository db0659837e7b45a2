"""LLM usage mapping and client instrumentation. The real paid APIs cannot run here, so the clients
and responses are small stand-ins shaped like the openai / anthropic SDK objects (the attribute
names and nesting of their pydantic models) and like their raw JSON (dicts). Everything else is real:
the SDK spools to tmp_path, and the request-context test runs a real Starlette app."""
from __future__ import annotations

import asyncio
import time

import pytest
from helpers import spooled

from collectors import sdk
from collectors.integrations.llm import (
    anthropic_usage,
    instrument_anthropic,
    instrument_openai,
    openai_usage,
    record_anthropic_response,
    record_openai_response,
    uninstrument,
)

# --- stand-ins shaped like the SDKs' response models ---------------------------------------------

class Obj:
    def __init__(self, **fields):
        self.__dict__.update(fields)


def chat_completion(model="gpt-4o-mini", prompt=1200, completion=80, cached=1024):
    details = Obj(cached_tokens=cached, audio_tokens=0) if cached is not None else None
    return Obj(id="chatcmpl-1", object="chat.completion", model=model, choices=[],
               usage=Obj(prompt_tokens=prompt, completion_tokens=completion, total_tokens=prompt + completion,
                         prompt_tokens_details=details, completion_tokens_details=Obj(reasoning_tokens=0)))


def responses_response(model="gpt-4.1", inp=900, out=150, cached=256):
    return Obj(id="resp_1", object="response", model=model, output=[],
               usage=Obj(input_tokens=inp, output_tokens=out, total_tokens=inp + out,
                         input_tokens_details=Obj(cached_tokens=cached),
                         output_tokens_details=Obj(reasoning_tokens=0)))


def anthropic_message(model="claude-sonnet-4-5", inp=50, out=300, read=4000, created=1000):
    return Obj(id="msg_1", type="message", role="assistant", model=model, content=[],
               usage=Obj(input_tokens=inp, output_tokens=out, cache_read_input_tokens=read,
                         cache_creation_input_tokens=created))


class Completions:
    def __init__(self, response=None, error=None, delay=0.0):
        self.response, self.error, self.delay, self.calls = response, error, delay, []

    def create(self, *, model, messages, **kwargs):
        self.calls.append((model, kwargs))
        time.sleep(self.delay)
        if self.error:
            raise self.error
        return self.response


class AsyncCompletions(Completions):
    async def create(self, *, model, messages, **kwargs):
        self.calls.append((model, kwargs))
        await asyncio.sleep(self.delay)
        if self.error:
            raise self.error
        return self.response


class OpenAIClient:
    def __init__(self, completions, responses=None):
        self.chat = Obj(completions=completions)
        if responses is not None:
            self.responses = responses


class AnthropicClient:
    def __init__(self, messages):
        self.messages = messages


# --- helpers --------------------------------------------------------------------------------------

def brief(row) -> tuple:
    return (row["provider"], row["model"], row["input_tokens"], row["output_tokens"], row["cached_input_tokens"])


# --- usage mapping --------------------------------------------------------------------------------

@pytest.mark.parametrize("response, expected", [
    (chat_completion(), (1200, 80, 1024, 0)),
    (chat_completion(cached=None), (1200, 80, 0, 0)),                  # prompt_tokens_details missing
    ({"model": "gpt-4o", "usage": {"prompt_tokens": 10, "completion_tokens": 2,
                                   "prompt_tokens_details": {"cached_tokens": 0}}}, (10, 2, 0, 0)),
    (responses_response(), (900, 150, 256, 0)),
    ({"model": "o3", "usage": {"input_tokens": 5, "output_tokens": 7,
                               "input_tokens_details": {"cached_tokens": 3}}}, (5, 7, 3, 0)),
    (Obj(model="gpt-4o", usage=None), None),
    ({"model": "gpt-4o"}, None),
])
def test_openai_usage(response, expected):
    assert openai_usage(response) == expected


@pytest.mark.parametrize("response, expected", [
    (anthropic_message(), (5050, 300, 4000, 1000)),                      # 50 + 4000 read + 1000 written
    (anthropic_message(read=None, created=None), (50, 300, 0, 0)),
    ({"model": "claude-haiku-4-5", "usage": {"input_tokens": 12, "output_tokens": 3,
                                             "cache_read_input_tokens": 100}}, (112, 3, 100, 0)),
    (Obj(model="claude", usage=None), None),
])
def test_anthropic_usage(response, expected):
    assert anthropic_usage(response) == expected


def test_record_functions_reach_the_batch(sdk_spool):
    assert record_openai_response(chat_completion(), latency_ms=640, request_id="r-1", endpoint="/chat",
                                  user="u-1")
    assert record_openai_response(responses_response())
    assert record_anthropic_response(anthropic_message(), latency_ms=900, cache_hit=True)
    assert record_openai_response({"model": "gpt-4o"}) is False         # no usage: nothing recorded
    assert record_openai_response(None) is False

    rows = spooled(sdk_spool, "llm")
    assert [brief(r) for r in rows] == [
        ("openai", "gpt-4o-mini", 1200, 80, 1024),
        ("openai", "gpt-4.1", 900, 150, 256),
        ("anthropic", "claude-sonnet-4-5", 5050, 300, 4000),
    ]
    assert (rows[0]["request_id"], rows[0]["endpoint"], rows[0]["user"], rows[0]["latency_ms"]) == \
        ("r-1", "/chat", "u-1", 640)
    assert rows[1]["request_id"] is None and rows[1]["latency_ms"] is None
    assert [r["cache_hit"] for r in rows] == [False, False, True]


# --- instrumented clients -------------------------------------------------------------------------

def test_instrument_openai_sync(sdk_spool):
    completions = Completions(chat_completion(), delay=0.02)
    responses = Completions(responses_response())
    client = instrument_openai(OpenAIClient(completions, responses))
    assert instrument_openai(client) is client                          # idempotent

    resp = client.chat.completions.create(model="gpt-4o-mini", messages=[], user="u-7", temperature=0)
    assert resp is completions.response
    assert completions.calls == [("gpt-4o-mini", {"user": "u-7", "temperature": 0})]
    client.responses.create(model="gpt-4.1", messages=[])

    rows = spooled(sdk_spool, "llm")
    assert [brief(r) for r in rows] == [("openai", "gpt-4o-mini", 1200, 80, 1024),
                                        ("openai", "gpt-4.1", 900, 150, 256)]
    assert rows[0]["user"] == "u-7" and rows[0]["latency_ms"] >= 20


def test_instrument_openai_async(sdk_spool):
    completions = AsyncCompletions(chat_completion(model="gpt-4o"), delay=0.02)
    client = instrument_openai(OpenAIClient(completions))

    async def main():
        return await client.chat.completions.create(model="gpt-4o", messages=[])

    assert asyncio.run(main()) is completions.response
    [row] = spooled(sdk_spool, "llm")
    assert brief(row) == ("openai", "gpt-4o", 1200, 80, 1024) and row["latency_ms"] >= 20


def test_instrument_anthropic_sync_and_async(sdk_spool):
    sync_client = instrument_anthropic(AnthropicClient(Completions(anthropic_message())))
    async_client = instrument_anthropic(AnthropicClient(AsyncCompletions(anthropic_message(model="claude-opus-4-1"))))
    sync_client.messages.create(model="claude-sonnet-4-5", messages=[], max_tokens=10,
                                metadata={"user_id": "u-3"})
    asyncio.run(async_client.messages.create(model="claude-opus-4-1", messages=[], max_tokens=10))
    rows = spooled(sdk_spool, "llm")
    assert [brief(r) for r in rows] == [("anthropic", "claude-sonnet-4-5", 5050, 300, 4000),
                                        ("anthropic", "claude-opus-4-1", 5050, 300, 4000)]
    assert [r["user"] for r in rows] == ["u-3", None]


def test_app_errors_pass_through_and_perfdeck_errors_do_not_break_calls(sdk_spool, monkeypatch):
    class RateLimited(Exception):
        pass

    failing = instrument_openai(OpenAIClient(Completions(error=RateLimited("429"))))
    with pytest.raises(RateLimited, match="429"):
        failing.chat.completions.create(model="m", messages=[])

    async_failing = instrument_anthropic(AnthropicClient(AsyncCompletions(error=RateLimited("overloaded"))))
    with pytest.raises(RateLimited, match="overloaded"):
        asyncio.run(async_failing.messages.create(model="m", messages=[]))

    def explode(*a, **k):
        raise RuntimeError("perfdeck bug")

    monkeypatch.setattr(sdk, "record_llm_call", explode)
    ok = instrument_openai(OpenAIClient(Completions(chat_completion())))
    assert ok.chat.completions.create(model="m", messages=[]) is ok.chat.completions.response
    weird = instrument_openai(OpenAIClient(Completions(Obj(model=None, usage=Obj(prompt_tokens="x")))))
    assert weird.chat.completions.create(model="m", messages=[]).model is None
    monkeypatch.undo()
    assert spooled(sdk_spool, "llm") == []


def test_uninstrument_restores_the_original(sdk_spool):
    completions = Completions(chat_completion())
    client = instrument_openai(OpenAIClient(completions))
    assert uninstrument(client) is True and uninstrument(client) is False
    assert client.chat.completions.create == completions.create.__func__.__get__(completions)
    client.chat.completions.create(model="m", messages=[])
    assert spooled(sdk_spool, "llm") == []


def test_llm_calls_inside_a_request_link_to_it(sdk_spool):
    pytest.importorskip("starlette")
    from starlette.applications import Starlette
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from collectors.integrations.asgi import PerfdeckMiddleware

    llm = instrument_openai(OpenAIClient(Completions(chat_completion())))
    allm = instrument_anthropic(AnthropicClient(AsyncCompletions(anthropic_message())))

    async def ask(request):
        await allm.messages.create(model="claude", messages=[])
        return PlainTextResponse("ok")

    def ask_sync(request):                           # a sync endpoint runs in the thread pool
        llm.chat.completions.create(model="gpt", messages=[])
        return PlainTextResponse("ok")

    app = PerfdeckMiddleware(Starlette(routes=[Route("/ask/{topic}", ask), Route("/sync/{topic}", ask_sync)]))
    client = TestClient(app)
    assert client.get("/ask/cats", headers={"x-request-id": "r-ask"}).status_code == 200
    assert client.get("/sync/dogs", headers={"x-request-id": "r-sync"}).status_code == 200
    llm.chat.completions.create(model="gpt", messages=[])          # outside any request

    rows = spooled(sdk_spool, "llm")
    assert [(r["provider"], r["request_id"], r["endpoint"]) for r in rows] == [
        ("anthropic", "r-ask", "/ask/{topic}"),
        ("openai", "r-sync", "/sync/{topic}"),
        ("openai", None, None),
    ]
