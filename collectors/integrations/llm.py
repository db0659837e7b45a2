"""Record LLM calls (tokens, cached tokens, latency) from OpenAI and Anthropic responses, without
importing either SDK: responses are read by attribute or, for dicts (raw JSON), by key.

    from collectors.integrations.llm import instrument_openai, instrument_anthropic
    client = instrument_openai(OpenAI())         # chat.completions.create and responses.create
    client = instrument_anthropic(Anthropic())   # messages.create; async clients work the same

    # or by hand, around a call made any other way:
    record_openai_response(resp, latency_ms=840, request_id="r-1")

Usage mapping (what the dashboard calls input / cached input / output tokens):
  OpenAI chat completions  usage.prompt_tokens / usage.prompt_tokens_details.cached_tokens /
                           usage.completion_tokens
  OpenAI Responses API     usage.input_tokens / usage.input_tokens_details.cached_tokens / usage.output_tokens
  Anthropic messages       usage.input_tokens + usage.cache_read_input_tokens + usage.cache_creation_input_tokens
                           / usage.cache_read_input_tokens / usage.output_tokens
                           (cache writes: usage.cache_creation_input_tokens)
      Anthropic's `input_tokens` counts only the input AFTER the last cache breakpoint: it excludes the
      tokens read from the cache and those written to it. The total input is therefore the sum of the
      three, of which the cache reads (cheaper) and the cache writes (dearer) are priced at their own rates.
  model is `response.model`; provider "openai" / "anthropic". A response without usage (a stream, an
  error object) is not recorded, and the record_* functions return False.

request_id and endpoint default to the request being served (collectors.integrations.asgi
current_request_id() / current_endpoint(), set by the ASGI and WSGI integrations), so LLM calls link to
the request that made them. The instrumented create() also takes `user` from its `user=` argument
(OpenAI) or `metadata={"user_id": ...}` (Anthropic) when the record call is not given one.

Streaming (`stream=True`) calls are passed through and not recorded. Nothing in here ever raises into
the app: the original create() is always called exactly once and its result or exception returned
unchanged; perfdeck's own failures are logged at debug and skipped."""
from __future__ import annotations

import functools
import inspect
import logging
from time import perf_counter

from collectors import sdk
from collectors.integrations.asgi import current_endpoint, current_request_id

log = logging.getLogger("perfdeck.integrations.llm")

_ORIGINAL = "__perfdeck_original__"


def _get(obj, name):
    if obj is None:
        return None
    if isinstance(obj, dict):
        return obj.get(name)
    return getattr(obj, name, None)


def _int(x) -> int:
    try:
        return int(x) if x is not None else 0
    except (TypeError, ValueError):
        return 0


def openai_usage(response) -> tuple[int, int, int, int] | None:
    """(input_tokens, output_tokens, cached_input_tokens, cache_write_tokens) of an OpenAI chat
    completion or Responses API response, or None when it carries no usage. OpenAI bills no cache writes."""
    usage = _get(response, "usage")
    if usage is None:
        return None
    if _get(usage, "prompt_tokens") is not None:           # chat completions (and legacy completions)
        return (_int(_get(usage, "prompt_tokens")), _int(_get(usage, "completion_tokens")),
                _int(_get(_get(usage, "prompt_tokens_details"), "cached_tokens")), 0)
    if _get(usage, "input_tokens") is not None:            # Responses API
        return (_int(_get(usage, "input_tokens")), _int(_get(usage, "output_tokens")),
                _int(_get(_get(usage, "input_tokens_details"), "cached_tokens")), 0)
    return None


def anthropic_usage(response) -> tuple[int, int, int, int] | None:
    """(total input_tokens, output_tokens, cached_input_tokens, cache_write_tokens) of an Anthropic
    message; the total adds the cache reads and writes to `input_tokens`, which excludes them (see the
    module docstring)."""
    usage = _get(response, "usage")
    if usage is None or _get(usage, "input_tokens") is None:
        return None
    read = _int(_get(usage, "cache_read_input_tokens"))
    created = _int(_get(usage, "cache_creation_input_tokens"))
    return _int(_get(usage, "input_tokens")) + read + created, _int(_get(usage, "output_tokens")), read, created


def _record(provider, usage_of, response, latency_ms, request_id, endpoint, user, cache_hit) -> bool:
    try:
        usage = usage_of(response)
        if usage is None:
            return False
        model = _get(response, "model")
        inp, out, cached, written = usage
        sdk.record_llm_call(str(model) if model else "unknown", inp, out, provider=provider,
                            cached_input_tokens=cached, cache_write_tokens=written,
                            request_id=request_id if request_id is not None else current_request_id(),
                            endpoint=endpoint if endpoint is not None else current_endpoint(),
                            user=user, cache_hit=cache_hit, latency_ms=latency_ms)
        return True
    except Exception:
        log.debug("perfdeck: could not record an LLM response", exc_info=True)
        return False


def record_openai_response(response, *, latency_ms: float | None = None, request_id: str | None = None,
                           endpoint: str | None = None, user: str | None = None, cache_hit: bool = False) -> bool:
    """Record one OpenAI chat completion or Responses API response (object or dict). True when recorded."""
    return _record("openai", openai_usage, response, latency_ms, request_id, endpoint, user, cache_hit)


def record_anthropic_response(response, *, latency_ms: float | None = None, request_id: str | None = None,
                              endpoint: str | None = None, user: str | None = None,
                              cache_hit: bool = False) -> bool:
    """Record one Anthropic message (object or dict). True when recorded."""
    return _record("anthropic", anthropic_usage, response, latency_ms, request_id, endpoint, user, cache_hit)


def _openai_user(kwargs):
    u = kwargs.get("user") or kwargs.get("safety_identifier")
    return u if isinstance(u, str) else None


def _anthropic_user(kwargs):
    u = _get(kwargs.get("metadata"), "user_id")
    return u if isinstance(u, str) else None


def _wrap(owner, attr: str, record, user_of) -> bool:
    """Replace owner.attr (a create method) with a timed, recording version. False if already done."""
    original = getattr(owner, attr)
    if getattr(original, _ORIGINAL, None) is not None:
        return False

    def after(result, t0, kwargs):
        try:
            if kwargs.get("stream"):
                return
            record(result, latency_ms=max(0.0, (perf_counter() - t0) * 1000.0), user=_safe_user(user_of, kwargs))
        except Exception:
            log.debug("perfdeck: could not record an LLM call", exc_info=True)

    async def finish_async(awaitable, t0, kwargs):
        result = await awaitable
        after(result, t0, kwargs)
        return result

    @functools.wraps(original)
    def create(*args, **kwargs):
        t0 = perf_counter()
        result = original(*args, **kwargs)
        try:
            if inspect.isawaitable(result):          # an async client: time until the awaited response
                return finish_async(result, t0, kwargs)
        except Exception:
            log.debug("perfdeck: could not time an LLM call", exc_info=True)
            return result
        after(result, t0, kwargs)
        return result

    setattr(create, _ORIGINAL, original)
    setattr(owner, attr, create)
    return True


def _safe_user(user_of, kwargs):
    try:
        return user_of(kwargs)
    except Exception:
        return None


def instrument_openai(client):
    """Time and record every `client.chat.completions.create` (and `client.responses.create` when the
    client has it), sync or async. Returns the client; calling it twice is a no-op."""
    for path in (("chat", "completions"), ("responses",)):
        try:
            owner = client
            for name in path:
                owner = getattr(owner, name)
            if callable(getattr(owner, "create", None)):
                _wrap(owner, "create", record_openai_response, _openai_user)
        except AttributeError:
            continue
        except Exception:
            log.debug("perfdeck: could not instrument %r", client, exc_info=True)
    return client


def instrument_anthropic(client):
    """Time and record every `client.messages.create`, sync or async. Returns the client; calling it
    twice is a no-op."""
    try:
        _wrap(client.messages, "create", record_anthropic_response, _anthropic_user)
    except Exception:
        log.debug("perfdeck: could not instrument %r", client, exc_info=True)
    return client


def uninstrument(client) -> bool:
    """Put back every create() instrument_openai/instrument_anthropic replaced; False if none was."""
    undone = False
    for path in (("chat", "completions"), ("responses",), ("messages",)):
        try:
            owner = client
            for name in path:
                owner = getattr(owner, name)
            original = getattr(getattr(owner, "create", None), _ORIGINAL, None)
            if original is not None:
                if "create" in vars(owner):
                    del owner.create
                if getattr(owner, "create", None) != original:    # the original was not the class's
                    owner.create = original
                undone = True
        except (AttributeError, TypeError):
            continue
    return undone
