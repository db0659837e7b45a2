"""Time every SQL statement an SQLAlchemy engine runs and hand it to `sdk.record_query`.

    from collectors.integrations.sqlalchemy import instrument_sqlalchemy
    engine = create_engine("postgresql+psycopg://app@db/shop")
    instrument_sqlalchemy(engine)                       # database defaults to engine.url.database

The timing is taken around the DBAPI cursor call (`before_cursor_execute` / `after_cursor_execute`),
so it is the database's time plus the driver's, not the ORM's. The statement text is recorded as the
driver receives it, with placeholders rather than values; the SDK fingerprints it. An executemany is
one statement. A statement that raises is not recorded.

The measured time is also left on the execution context as `context.perfdeck_query_ms`
(`result.context.perfdeck_query_ms`) for callers that want the number of the query they just ran.

Calling it twice on the same engine is a no-op, and nothing in here ever raises into the app."""
from __future__ import annotations

import logging
import weakref
from time import perf_counter

from collectors import sdk

log = logging.getLogger("perfdeck.integrations.sqlalchemy")

CONTEXT_ATTR = "perfdeck_query_ms"
_START = "perfdeck_t0"
_installed: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def instrument_sqlalchemy(engine, database: str | None = None) -> bool:
    """Record every statement `engine` runs. Returns True when it installed the listeners, False when
    the engine was already instrumented (or could not be). Accepts an AsyncEngine too."""
    try:
        from sqlalchemy import event

        target = getattr(engine, "sync_engine", engine)
        if target in _installed:
            return False
        name = database or target.url.database

        def before(conn, cursor, statement, parameters, context, executemany):
            try:
                conn.info[_START] = perf_counter()
            except Exception:
                pass

        def after(conn, cursor, statement, parameters, context, executemany):
            try:
                t0 = conn.info.pop(_START, None)
                if t0 is None:
                    return
                ms = (perf_counter() - t0) * 1000.0
                if context is not None:
                    setattr(context, CONTEXT_ATTR, ms)
                sdk.record_query(statement, ms, database=name)
            except Exception:
                pass

        def on_error(exception_context):
            try:
                conn = exception_context.connection
                if conn is not None:
                    conn.info.pop(_START, None)
            except Exception:
                pass

        event.listen(target, "before_cursor_execute", before)
        event.listen(target, "after_cursor_execute", after)
        event.listen(target, "handle_error", on_error)
        _installed[target] = (before, after, on_error)
        return True
    except Exception:
        log.debug("perfdeck: could not instrument %r", engine, exc_info=True)
        return False


def uninstrument_sqlalchemy(engine) -> bool:
    """Remove the listeners instrument_sqlalchemy() installed; False when there were none."""
    try:
        from sqlalchemy import event

        target = getattr(engine, "sync_engine", engine)
        listeners = _installed.pop(target, None)
        if listeners is None:
            return False
        for name, fn in zip(("before_cursor_execute", "after_cursor_execute", "handle_error"), listeners):
            event.remove(target, name, fn)
        return True
    except Exception:
        log.debug("perfdeck: could not uninstrument %r", engine, exc_info=True)
        return False
