"""configure / flush / shutdown, and keeping the SDK sane across fork()."""
from __future__ import annotations

import atexit
import logging
import os
import sys
import threading

from collectors.sdk import api
from collectors.sdk.batch import BUFFERS
from collectors.sdk.checks import MAX_LABEL
from collectors.sdk.flusher import Flusher
from collectors.sdk.transport import from_url

log = logging.getLogger("perfdeck.sdk")
_lock = threading.Lock()
_flusher: Flusher | None = None
_settings: dict = {}
EXIT_FLUSH_S = 2.0   # how long a multiprocessing child waits for its last flush before it exits


def configure(service: str | None = None, transport: str | None = None, flush_interval: float = 1.0,
              max_buffer: int = 100_000, clock=None, control: bool = True) -> None:
    """Start recording. Call once at start-up; calling again replaces the settings.

    service:   name shown on the dashboard ($PERFDECK_SERVICE, else the program's name)
    transport: "spool:DIR" (default "spool:data/spool") or "redis://host:port/db" ($PERFDECK_TRANSPORT)
    flush_interval: seconds between batches; max_buffer: events held per kind before dropping.
    clock:     a time.time replacement, for replaying history (the demo's backfill uses it).
    control:   listen on the transport for "clear cache" broadcasts from the dashboard (see
               register_cache); False opts out: nothing is polled and no presence is announced.

    Forking servers need nothing more: a child made by fork() starts with empty buffers and a flusher
    of its own, and sends what it recorded when it exits. A multiprocessing child (fork context) ends
    with os._exit(), which skips atexit, once its run() returns or raises; the child is therefore set
    up to flush (for up to EXIT_FLUSH_S) from multiprocessing's own exit finalizers, which run just
    before that. What cannot be caught: a process that calls os._exit() itself, or is killed, loses
    what it recorded since its last flush (at most one flush_interval of events), and nothing counts them.

    >>> from collectors import sdk
    >>> sdk.configure(service="api", transport="spool:data/spool")
    """
    global _flusher
    try:
        with _lock:
            service = service or os.environ.get("PERFDECK_SERVICE") or _default_service()
            if not isinstance(service, str) or len(service) > MAX_LABEL:   # the collector would refuse every batch
                raise ValueError(f"service must be a name of 1 to {MAX_LABEL} characters")
            if _flusher is not None:
                _flusher.stop(timeout=5.0)
            url = transport or os.environ.get("PERFDECK_TRANSPORT") or "spool:data/spool"
            _settings.update(service=service, transport=url, flush_interval=flush_interval,
                             max_buffer=max_buffer, clock=clock, control=control)
            _start()
    except Exception:
        log.exception("perfdeck: configure failed")


def _default_service() -> str:
    import sys
    return os.path.splitext(os.path.basename(sys.argv[0] or "python"))[0] or "python"


def _start() -> None:
    global _flusher
    import time
    api.clock = _settings["clock"] or time.time
    api.max_buffer = _settings["max_buffer"]
    # In a forked child this makes a new control listener too: its own pid, its own presence, and
    # only commands issued from now on (the registered caches are the child's copies, so they stay).
    _flusher = Flusher(from_url(_settings["transport"]), service=_settings["service"],
                       interval=_settings["flush_interval"], control=_settings["control"])
    _flusher.start()


def flush(timeout: float = 5.0) -> bool:
    """Send everything recorded so far; True when it was handed to the transport in time."""
    f = _flusher
    return f.flush(timeout) if f is not None else False


def shutdown(timeout: float = 5.0) -> bool:
    """Flush and stop the background thread. Runs at interpreter exit too."""
    global _flusher
    with _lock:
        f, _flusher = _flusher, None
        api.max_buffer = 0
    return f.stop(timeout) if f is not None else True


def stats() -> dict:
    """What the SDK knows about itself: buffered and dropped events, transport errors, and what it
    left out of its batches because the collector would refuse it ({"kind:reason": count})."""
    f = _flusher
    return {
        "configured": f is not None,
        "buffered": sum(len(getattr(api, name)) for name in BUFFERS),
        "dropped": api.dropped + (f.dropped_batches_events if f else 0),
        "send_errors": f.send_errors if f else 0,
        "rejected": dict(f.rejected) if f else {},     # one C-level copy: safe while the flusher counts
        "transport": repr(f.transport) if f else None,
        "control_commands": f.control.commands_run if f and f.control else 0,
    }


def _after_fork_in_child() -> None:
    # The parent's events are the parent's to send; the child starts empty with its own thread.
    global _flusher
    for name in BUFFERS:
        del getattr(api, name)[:]
    api.dropped = 0
    if _flusher is not None:
        try:
            _start()
            _flush_when_multiprocessing_child_ends()
        except Exception:
            _flusher = None
            api.max_buffer = 0


def _flush_when_multiprocessing_child_ends() -> None:
    # A multiprocessing child runs multiprocessing.util._exit_function (its Finalize callbacks) and then
    # os._exit(). Its bootstrap clears the finalizers registered before it, then runs the after-fork
    # hooks: so the finalizer is registered from such a hook. A child of multiprocessing has the module
    # loaded already; when it is not, this is no such child and nothing is imported.
    util = sys.modules.get("multiprocessing.util")
    if util is not None:
        util.register_after_fork(_flusher, _register_exit_flush)


def _register_exit_flush(_flusher_of_this_child) -> None:
    from multiprocessing import util
    # exitpriority below the app's own finalizers (>= 0 run first): those may still record something.
    util.Finalize(None, flush, args=(EXIT_FLUSH_S,), exitpriority=-100)


os.register_at_fork(after_in_child=_after_fork_in_child)
atexit.register(shutdown)
