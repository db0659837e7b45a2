"""The demo's "Deploy a slow build" switch, in the sidebar of a dashboard that `perfdeck demo` started
(it sets $PERFDECK_DEMO_DIR to its data dir). The switch is a small JSON file in that dir,
`demo-switch.json` = {"slow": true|false, "changed_at": <epoch s>}, which the demo's live shop polls
(collectors.demo.live.SlowSwitch): on, it deploys v1.9.0, whose /search gets slower every minute; off,
it rolls back to v1.8.0.

No operator role is asked for: the switch only changes the demo's own simulated traffic, never a real
system. Streamlit is imported inside demo_switch() so the shop can read the file without loading it."""
from __future__ import annotations

import json
import os
import time
from pathlib import Path

SWITCH_FILE = "demo-switch.json"
LABEL = "Deploy a slow build (demo)"
HELP = ("Deploys v1.9.0, which leaks database connections in /search: each minute a search waits longer "
        "for one, up to ~1.6 s after 4 minutes. Watch the Overview turn warning (after 1-2 minutes), then "
        "critical (2-3 minutes), and one alert fire on the Alerts page. Switch off to roll back to v1.8.0 and "
        "watch it resolve (about 3 minutes); the Compare page shows the regression at the deploy marker.")


def switch_path(data_dir: str | os.PathLike | None = None) -> Path | None:
    """The switch file of the demo `data_dir` (default $PERFDECK_DEMO_DIR); None outside the demo."""
    data_dir = data_dir or os.environ.get("PERFDECK_DEMO_DIR", "").strip()
    return Path(data_dir) / SWITCH_FILE if data_dir else None


def read_switch(path: str | os.PathLike) -> dict:
    """{"slow": bool, "changed_at": float | None}; off when the file is missing or unreadable."""
    try:
        doc = json.loads(Path(path).read_text())
        return {"slow": doc.get("slow") is True, "changed_at": float(doc["changed_at"])}
    except (OSError, ValueError, TypeError, KeyError, AttributeError):
        return {"slow": False, "changed_at": None}


def write_switch(path: str | os.PathLike, slow: bool, *, now: float | None = None) -> dict:
    """Write the switch atomically (a temp file, then os.replace: the shop never reads half a file)."""
    path = Path(path)
    state = {"slow": bool(slow), "changed_at": time.time() if now is None else float(now)}
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(state))
    os.replace(tmp, path)
    return state


def describe(state: dict, now: float | None = None) -> str:
    """One line on what the demo runs now, e.g. "v1.9.0 (slow build) since 3 min ago"."""
    if state["changed_at"] is None:
        return "Running v1.8.0."
    minutes = max(0, int(((time.time() if now is None else now) - state["changed_at"]) // 60))
    since = "under a minute ago" if minutes == 0 else f"{minutes} min ago"
    return (f"v1.9.0 (slow build) deployed {since}." if state["slow"]
            else f"Running v1.8.0 (rolled back {since}).")


def demo_switch() -> None:
    """Render the switch in the sidebar; nothing outside `perfdeck demo`."""
    path = switch_path()
    if path is None:
        return
    import streamlit as st

    state = read_switch(path)
    st.session_state["demo_slow_build"] = state["slow"]     # the file is the truth (another tab may flip it)
    st.sidebar.toggle(LABEL, key="demo_slow_build", help=HELP,
                      on_change=lambda: write_switch(path, st.session_state["demo_slow_build"]))
    st.sidebar.caption(describe(read_switch(path)))
