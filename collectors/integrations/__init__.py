"""Integrations: one module per framework or library, each importing its library lazily so that
`collectors.integrations` itself costs nothing to import.

    from collectors.integrations.sqlalchemy import instrument_sqlalchemy
    instrument_sqlalchemy(engine)                 # every statement -> sdk.record_query
Also: asgi.PerfdeckMiddleware, wsgi.instrument_flask / PerfdeckWSGIMiddleware (requests), redis.cached /
bump_cache_version / instrument_redis (cache hits), llm.instrument_openai / instrument_anthropic (LLM tokens).
"""
