"""Concurrent viewers of the Overview, each auto-refreshing every 10 s: how long a viewer waits, at
1, 10 and 50 viewers in one run, with the dashboard's memory and CPU.

    nice .venv/bin/python bench/sessions.py [--viewers 1,10,50] [--seconds 60] [--refresh 10]
                                            [--events N] [--days D] [--store FILE] [--keep] [--port P]

The store and the dashboard are bench/pages.py's (the same options; the dashboard runs in its own
process group and is stopped at the end, on an error or on Ctrl-C).

Viewers are protocol-level clients, not browser contexts. Each is one websocket to
`/_stcore/stream` speaking Streamlit's protobuf messages as the browser's app does: a `rerun_script`
BackMsg on connecting (the page at the default range), then the same with the sidebar's "Auto-refresh"
selectbox (key "refresh", found by its label in the page's deltas) set to "10 s", as picking it in the
UI sends it; then, on the `auto_rerun` ForwardMsg the fragment's `run_every` produces, a
`rerun_script` for that fragment every interval, sent on the timer whether the last one has finished
or not (the browser's setInterval does the same). Why not 50 Playwright contexts: on this 2-core
machine 50 Chromium renderers each drawing the Overview's charts every 10 s would take most of the
CPU the dashboard is measured with, so the figures would say more about the browsers than about the
dashboard. A protocol client costs a websocket and a protobuf parse per message. What it leaves out
is the browser's own rendering after the last message: `bench/pages.py` measures that, for one viewer.

Per viewer and per request, the time from sending `rerun_script` to the `script_finished` of the run
that served it (a tick sent while a run is going is served by a later one). Phases, one after the other
for each N: the N viewers open the page at the same moment ("open"), pick the 10-s refresh, then
`--seconds` of refresh ticks ("tick"). The viewers' timers start as each one's refresh took effect, so
their ticks come close together (the worst case, e.g. a link shared in an incident); `--stagger`
spreads them evenly over the interval instead, as viewers arriving one by one would.

Printed per N: p50, p95 and max of both, the tick p50 as a multiple of the single viewer's, the ticks
answered after more than the refresh interval ("late"), the runs Streamlit stopped before their end
because the same session's next tick came in ("restarted": their work is thrown away and the run starts
again), exceptions seen in the page, the dashboard tree's peak RSS and its CPU (% of one core) during
the ticks, and this client's own CPU beside it (to show the clients are not what is slow). Nothing is
asserted."""
from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from pages import RssSampler, interrupts_as_exceptions, serving, store_for, store_options
from streamlit.proto.BackMsg_pb2 import BackMsg
from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
from streamlit.proto.WidgetStates_pb2 import WidgetState
from websockets.asyncio.client import connect

REFRESH_LABEL = "Auto-refresh"      # dashboard.widgets.sidebar_filters: the selectbox keyed "refresh"
TIMEOUT_S = 600


@dataclass
class Viewer:
    """One session of the Overview over Streamlit's websocket protocol."""

    url: str
    refresh: str
    ws: object = None
    sent: list[float] = field(default_factory=list)         # requests not yet started
    running: list[float] = field(default_factory=list)      # requests the current run serves
    waits: list[float] = field(default_factory=list)        # seconds, per served request, this phase
    refresh_id: str | None = None
    fragment: str | None = None
    interval: float | None = None
    exceptions: int = 0
    elements: Counter = field(default_factory=Counter)      # element kinds drawn, this phase
    endings: Counter = field(default_factory=Counter)       # script_finished statuses, this phase
    finished: asyncio.Event = field(default_factory=asyncio.Event)
    reader: asyncio.Task | None = None

    async def open(self) -> None:
        origin = self.url
        self.ws = await connect(self.url.replace("http", "ws", 1) + "/_stcore/stream", subprotocols=["streamlit"],
                                origin=origin, max_size=None, open_timeout=TIMEOUT_S, ping_interval=None)
        self.reader = asyncio.create_task(self._read())
        await self.rerun()

    async def rerun(self, *, widgets: bool = False, fragment: str | None = None) -> None:
        msg = BackMsg()
        state = msg.rerun_script
        state.query_string = ""
        state.page_script_hash = ""
        if fragment:
            state.fragment_id = fragment
            state.is_auto_rerun = True
        if widgets or fragment:
            w = WidgetState(id=self.refresh_id)
            w.string_value = self.refresh
            state.widget_states.widgets.append(w)
        self.finished.clear()
        self.sent.append(time.perf_counter())
        await self.ws.send(msg.SerializeToString())

    async def _read(self) -> None:
        async for data in self.ws:
            msg = ForwardMsg()
            msg.ParseFromString(data)
            kind = msg.WhichOneof("type")
            if kind == "session_status_changed" and msg.session_status_changed.script_is_running:
                self.running += self.sent
                self.sent = []
            elif kind == "script_finished":
                ending = ForwardMsg.ScriptFinishedStatus.Name(msg.script_finished)
                self.endings[ending] += 1
                if ending == "FINISHED_EARLY_FOR_RERUN":      # stopped for a newer request: served by the next run
                    continue
                # A request that reached the server during this run would have stopped it: a run that
                # ends normally served every request sent so far (bar one in flight as it ended).
                now = time.perf_counter()
                self.waits += [now - t for t in self.running + self.sent]
                self.running, self.sent = [], []
                self.finished.set()
            elif kind == "auto_rerun":
                self.fragment, self.interval = msg.auto_rerun.fragment_id, msg.auto_rerun.interval
            elif kind == "delta" and msg.delta.WhichOneof("type") == "new_element":
                element = msg.delta.new_element
                which = element.WhichOneof("type")
                self.elements[which] += 1
                if which == "selectbox" and element.selectbox.label == REFRESH_LABEL:
                    self.refresh_id = element.selectbox.id
                elif which == "exception":
                    self.exceptions += 1

    async def ticks(self, seconds: float, first: float) -> None:
        """The browser's setInterval: a fragment rerun every `interval` s for `seconds`, the first one
        `first` × interval from now."""
        start = time.perf_counter() + (first - 1) * self.interval
        for i in range(1, int(seconds // self.interval) + 1):
            await asyncio.sleep(start + i * self.interval - time.perf_counter())
            await self.rerun(fragment=self.fragment)
        await asyncio.wait_for(self.finished.wait(), TIMEOUT_S)

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()
        if self.reader is not None:
            self.reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self.reader


def stats(values: list[float]) -> tuple[float, float, float]:
    if not values:
        return float("nan"), float("nan"), float("nan")
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return statistics.median(ordered), p95, ordered[-1]


async def ramp_step(url: str, n: int, seconds: float, refresh: str, dash, stagger: bool) -> dict:
    viewers = [Viewer(url, refresh) for _ in range(n)]
    try:
        await asyncio.gather(*(v.open() for v in viewers))
        await asyncio.gather(*(asyncio.wait_for(v.finished.wait(), TIMEOUT_S) for v in viewers))
        opened = [w for v in viewers for w in v.waits]
        missing = [v for v in viewers if v.refresh_id is None]
        if missing:
            raise RuntimeError(f"{len(missing)} viewers saw no {REFRESH_LABEL!r} selectbox")
        page = viewers[0].elements
        for v in viewers:
            v.waits, v.elements = [], Counter()
        await asyncio.gather(*(v.rerun(widgets=True) for v in viewers))      # pick "10 s" in the sidebar
        await asyncio.gather(*(asyncio.wait_for(v.finished.wait(), TIMEOUT_S) for v in viewers))
        picked = [w for v in viewers for w in v.waits]
        if any(v.fragment is None for v in viewers):
            raise RuntimeError("the Overview asked for no auto-rerun after the refresh was set")
        for v in viewers:
            v.waits, v.elements, v.endings = [], Counter(), Counter()
        sampler = RssSampler(dash, every=0.2)
        sampler.mark()
        sampler.start()
        cpu0, own0, t0 = dash.cpu_s(), time.process_time(), time.perf_counter()
        # Timers start when each viewer picked the refresh (within a few seconds of each other), or
        # spread evenly over the interval with --stagger.
        await asyncio.gather(*(v.ticks(seconds, (i + 1) / n if stagger else 1.0) for i, v in enumerate(viewers)))
        wall = time.perf_counter() - t0
        cpu, own = (dash.cpu_s() - cpu0) / wall, (time.process_time() - own0) / wall
        sampler.done.set()
        ticks = [w for v in viewers for w in v.waits]
        interval = viewers[0].interval
        return {"n": n, "open": opened, "pick": picked, "ticks": ticks, "late": sum(w > interval for w in ticks),
                "interval": interval, "exceptions": sum(v.exceptions for v in viewers),
                "rss": max(sampler.peak, dash.rss()), "cpu": cpu, "own": own,
                "page": page, "tick_page": viewers[0].elements, "tick_runs": len(viewers[0].waits),
                "endings": sum((v.endings for v in viewers), Counter())}
    finally:
        await asyncio.gather(*(v.close() for v in viewers), return_exceptions=True)


HEADER = (f"{'viewers':>7} | {'open p50':>8} {'p95':>6} {'max':>6} | {'tick p50':>8} {'p95':>6} {'max':>6} "
          f"{'x 1 viewer':>10} {'ticks':>6} {'late':>5} {'restarted':>9} | {'RSS MiB':>7} {'CPU %':>6} {'bench %':>7}  flags")


def line(row: dict, single: dict | None) -> str:
    o, t = stats(row["open"]), stats(row["ticks"])
    ratio = t[0] / stats(single["ticks"])[0] if single else float("nan")
    flags = f"EXCEPTION x{row['exceptions']}" if row["exceptions"] else ""
    restarted = row["endings"]["FINISHED_EARLY_FOR_RERUN"]
    return (f"{row['n']:>7} | {o[0]:>8.2f} {o[1]:>6.2f} {o[2]:>6.2f} | {t[0]:>8.2f} {t[1]:>6.2f} {t[2]:>6.2f} "
            f"{ratio:>10.1f} {len(row['ticks']):>6} {row['late']:>5} {restarted:>9} | "
            f"{row['rss'] / 2**20:>7.0f} {row['cpu'] * 100:>6.0f} {row['own'] * 100:>7.0f}  {flags}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    store_options(ap)
    ap.add_argument("--viewers", default="1,10,50", help="the ramp: numbers of concurrent viewers")
    ap.add_argument("--seconds", type=float, default=60, help="seconds of auto-refresh ticks per step")
    ap.add_argument("--refresh", default="10 s", help="the Auto-refresh option picked (its label)")
    ap.add_argument("--stagger", action="store_true", help="spread the viewers' refresh timers over the interval")
    args = ap.parse_args()
    ramp = [int(n) for n in args.viewers.split(",")]
    with interrupts_as_exceptions(), store_for(args) as store, \
            tempfile.TemporaryDirectory(prefix="perfdeck-bench-log-") as tmp, \
            serving(store, args.port, Path(tmp) / "server.log") as dash:
        print(f"{datetime.now(UTC):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
              f"Overview at the default range, Auto-refresh {args.refresh}{', staggered' if args.stagger else ''}, "
              f"{args.seconds:g} s of ticks per step; "
              "seconds from rerun_script sent to script_finished", flush=True)
        print(HEADER, flush=True)
        rows = []
        for n in ramp:
            row = asyncio.run(ramp_step(dash.url, n, args.seconds, args.refresh, dash, args.stagger))
            rows.append(row)
            single = next((r for r in rows if r["n"] == 1), None)
            print(line(row, single), flush=True)
        first = rows[0]
        print(f"\na viewer's page: {sum(first['page'].values())} elements ({dict(first['page'])}); "
              f"a tick sends {sum(first['tick_page'].values()) / max(1, first['tick_runs']):.0f} again; "
              f"runs ended: {dict(sum((r['endings'] for r in rows), Counter()))}")
        pick = ", ".join(f"{r['n']}: {stats(r['pick'])[0]:.2f}" for r in rows)
        print(f"picking the refresh (a whole-page rerun), p50 s by viewers: {pick}")
        print(f"late: ticks answered after more than the {rows[0]['interval']:g}-s refresh interval; "
              "CPU: the dashboard tree during the ticks, % of one core; bench: this client's own")


if __name__ == "__main__":
    main()
