"""The demo's "Deploy a slow build" switch, in the sidebar of a dashboard that `perfdeck demo` started
(it sets $PERFDECK_DEMO_DIR to its data dir). The switch is a small JSON file in that dir,
`demo-switch.json` = {"slow": true|false, "changed_at": <epoch s>}, which the demo's live shop polls
(collectors.demo.live.SlowSwitch): on, it deploys v1.9.0, whose /search gets slower every minute; off,
it rolls back to v1.8.0.

Flipping it is an operator action like any other (DemoDeploy, run through run_action): it only changes
the demo's simulated traffic, but it deploys and raises alerts that everyone watching sees, so a viewer
finds it disabled, and an operator confirms a preview and leaves an audit row. Streamlit and the action
framework are imported inside functions so the shop can read the file without loading them."""
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


def demo_action():
    """The switch as an action (made on demand: the shop imports this module, not the framework)."""
    from dashboard.actions.framework import Action, InvalidInput, Preview, Result

    class DemoDeploy(Action):
        name = "demo.deploy"
        kind = "demo"
        title = LABEL
        touches = "the demo shop's running version (simulated traffic only)"

        def target_of(self, params: dict) -> str:
            return "demo:shop"

        def available(self) -> str | None:
            return None if switch_path() else "only inside `perfdeck demo`"

        def check(self, params: dict) -> dict:
            if not isinstance(params.get("slow"), bool):
                raise InvalidInput("slow must be true or false")
            if switch_path() is None:
                raise InvalidInput("the demo switch exists only inside `perfdeck demo`")
            return {"slow": params["slow"]}

        def preview(self, params: dict) -> Preview:
            if params["slow"]:
                return Preview("Deploys v1.9.0 to the demo shop: /search slows down each minute, up to ~1.6 s; "
                               "an alert fires within minutes.")
            return Preview("Rolls the demo shop back to v1.8.0: /search recovers within about 3 minutes.")

        def execute(self, params: dict, preview: Preview, progress) -> Result:
            state = write_switch(switch_path(), params["slow"])
            # The audit row is read later: what was deployed, not how long ago.
            return Result("Deployed v1.9.0 (slow build)." if state["slow"] else "Rolled back to v1.8.0.",
                          figures={"slow": state["slow"]})

    return DemoDeploy()


TOGGLE_KEY, PENDING_KEY = "demo_slow_build", "demo_slow_build:pending"


def demo_switch() -> None:
    """Render the switch in the sidebar; nothing outside `perfdeck demo`. A flip asks for confirmation
    (operators only), and Deploy/Roll back runs the action."""
    path = switch_path()
    if path is None:
        return
    import streamlit as st

    from dashboard.actions import access
    from dashboard.actions.framework import ActionError, make_preview, run_action
    from dashboard.actions.ui import current_actor

    actor, action = current_actor(), demo_action()
    state = read_switch(path)
    pending = st.session_state.get(PENDING_KEY)
    if pending is not None and (pending[0] == state["slow"] or not actor.is_operator):
        pending = st.session_state[PENDING_KEY] = None     # done elsewhere (another tab), or logged out
    # The file is the truth (another tab may flip it); a flip waiting for confirmation shows as asked.
    st.session_state[TOGGLE_KEY] = state["slow"] if pending is None else pending[0]

    def request() -> None:
        slow = st.session_state[TOGGLE_KEY]
        params, preview = make_preview(action, {"slow": slow}, actor=actor)
        st.session_state[PENDING_KEY] = (slow, preview)

    st.sidebar.toggle(LABEL, key=TOGGLE_KEY, help=HELP, disabled=not actor.is_operator, on_change=request)
    st.sidebar.caption(describe(state))
    if not actor.is_operator:
        config = access.operator_config()
        st.sidebar.caption(":material/lock: Deploying and rolling back needs the operator role. "
                           + (config.hint if not config.enabled else "Log in as operator above."))
        return
    if st.session_state.get("demo_slow_build:outcome"):
        st.sidebar.error(st.session_state.pop("demo_slow_build:outcome"))
    if pending is None:
        return
    slow, preview = pending
    st.sidebar.info(preview.summary, icon=":material/preview:")
    run, cancel = st.sidebar.columns(2)
    if run.button("Deploy" if slow else "Roll back", key="demo_slow_build:run", type="primary"):
        try:
            run_action(action, {"slow": slow}, preview, actor=actor)
        except ActionError as exc:
            st.session_state["demo_slow_build:outcome"] = str(exc)
        st.session_state[PENDING_KEY] = None
        st.rerun()
    if cancel.button("Cancel", key="demo_slow_build:cancel"):
        st.session_state[PENDING_KEY] = None
        st.rerun()
