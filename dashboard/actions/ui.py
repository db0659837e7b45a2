"""The Streamlit side of access and actions: the login form in front of every page (`viewer_gate()`), the
operator login in the sidebar, and `action_panel()`, which walks any action through parameters → Preview →
confirmation → Run with progress → result.

The rules themselves (roles, confirmation, audit) live in access and framework.run_action/make_preview;
this only draws them, and hands them the actor. A viewer sees which actions exist and what they touch, but
no parameters (their choices come from the target), no Preview and no Run.
Abort: a batched action shows an Abort button while it runs. Clicking it makes Streamlit stop the
running script at its next call, which is the progress update between two batches; run_action audits
that as "aborted" and the next run says so."""
from __future__ import annotations

import os
import secrets

import pandas as pd
import streamlit as st

from collectors.store import connection
from dashboard.actions import access, audit
from dashboard.actions.framework import (
    ANONYMOUS,
    VIEWER,
    Action,
    ActionError,
    Actor,
    Field,
    Progress,
    field_options,
    make_preview,
    run_action,
)
from dashboard.actions.login_guard import RefusalAudit, client_key
from dashboard.columns import readable
from dashboard.widgets import as_text

CLIENT_SESSION_KEY = "perfdeck_client_session"


def _config() -> access.OperatorConfig:
    try:
        return access.operator_config()
    except Exception:      # unreadable settings: nobody is operator, and the pages stay behind no login
        return access.OperatorConfig()


def current_actor(config: access.OperatorConfig | None = None) -> Actor:
    """Who is using this session: an operator (password or OIDC), a viewer, or nobody logged in."""
    config = config or _config()
    try:
        # With OIDC configured, access reads st.user itself.
        return access.current_actor(st.session_state, config)
    except Exception:      # a broken auth setup leaves nobody an operator, and nobody past the login form
        return ANONYMOUS if config.viewer_auth else VIEWER


# -- logins and their audit ----------------------------------------------------------------------

def _client_key(config: access.OperatorConfig) -> str:
    session = st.session_state.setdefault(CLIENT_SESSION_KEY, secrets.token_hex(8))
    try:
        ip, forwarded = st.context.ip_address, st.context.headers.get("X-Forwarded-For")
    except Exception:
        ip, forwarded = None, None
    return client_key(ip, forwarded, session, config.trusted_proxies, os.environ.get("FORWARDED_ALLOW_IPS"))


def _insert_refusal(action: str, client: str, message: str) -> tuple:
    db = connection.db_path(None)      # the row is completed in the store it was written to
    return db, audit.record(db, actor=Actor(action.partition(".")[0], via="password"), action=action, target=None,
                            params={"client": client}, preview=None, outcome="refused", error=message,
                            result="1 refused attempt")


def _update_refusal(row: tuple, count: int, message: str) -> None:
    db, row_id = row
    audit.finish(db, row_id, outcome="refused", duration_ms=0, result=f"{count:,} refused attempts",
                 figures={"attempts": count}, error=message)


# Process-wide like the guard: one row per client and minute, whichever session the attempts came from.
REFUSALS = RefusalAudit(_insert_refusal, _update_refusal)


def _audit_login(action: str, name: str, client: str, result) -> None:
    if not result.ok:
        REFUSALS.refused(action, client, result.message)
        return
    try:
        audit.record(None, actor=Actor(name, via="password"), action=action, target=None,
                     params={"client": client}, preview=None, outcome="done")
    except Exception:     # a busy store must not stop a login; the action audit itself is strict
        pass


def _sso(config: access.OperatorConfig) -> None:
    st.login() if config.oidc_provider == "default" else st.login(config.oidc_provider)


def viewer_gate() -> bool:
    """True when this session may see the pages. Otherwise draws only the login form and returns False:
    the caller stops the script before any page (or the navigation) runs."""
    REFUSALS.flush()
    config = _config()
    actor = current_actor(config)
    if access.may_view(actor):
        return True
    st.title("perfdeck")
    if actor.via == "oidc":     # signed in, but not on the viewer lists
        st.warning(f"{actor.name} is not allowed to view this dashboard. An operator can add the address to "
                   "PERFDECK_VIEWER_EMAILS or its domain to PERFDECK_VIEWER_DOMAINS.", icon=":material/lock:")
        if st.button("Log out", key="viewer-sso-logout"):
            st.logout()
        return False
    st.caption(":material/lock: Log in to view this dashboard.")
    if config.oidc and st.button("Log in with SSO", key="viewer-sso"):
        _sso(config)
    if config.viewer_password_hash or config.password_hash:
        with st.form("viewer-login"):
            password = st.text_input("Password", type="password")
            if st.form_submit_button("Log in", type="primary"):
                client = _client_key(config)
                result = access.log_in_viewer(st.session_state, config, client, password)
                _audit_login("viewer.login", "viewer", client, result)
                if result.ok:
                    st.rerun()
                st.error(result.message)
    return False


def operator_sidebar() -> None:
    """Role status in the sidebar, with the login form when an operator is configured."""
    REFUSALS.flush()
    config = _config()
    actor = current_actor(config)
    box = st.sidebar.container(border=True)
    if actor.is_operator:
        box.markdown(f":material/admin_panel_settings: **Operator** · {actor.name}")
        if box.button("Log out", key="operator-logout", type="tertiary"):
            _log_out(actor)
        return
    if actor.via == "anonymous":
        box.markdown(":material/visibility: **Viewer**")
    else:
        box.markdown(f":material/visibility: **Viewer** · {actor.name}")
    if not config.enabled:
        box.caption(config.hint)
    else:
        if config.oidc and actor.via != "oidc" and box.button("Log in with SSO", key="operator-sso"):
            _sso(config)
        if config.password_hash:
            with box.popover("Operator login", width="stretch"), st.form("operator-login", border=False):
                password = st.text_input("Operator password", type="password")
                if st.form_submit_button("Log in", type="primary"):
                    client = _client_key(config)
                    result = access.log_in(st.session_state, config, client, password)
                    _audit_login("operator.login", config.operator_name, client, result)
                    if result.ok:
                        st.rerun()
                    st.error(result.message)
    if actor.via != "anonymous" and box.button("Log out", key="viewer-logout", type="tertiary"):
        _log_out(actor)


def _log_out(actor: Actor) -> None:
    access.log_out(st.session_state)
    if actor.via == "oidc":
        st.logout()
    st.rerun()


# -- one action --------------------------------------------------------------------------------
def action_panel(action: Action, *, key: str, preset: dict | None = None, title: bool = True) -> None:
    """Parameters, Preview, confirmation, Run, result: everything one action needs on a page.
    `title=False` when the page already names the action (an expander's label)."""
    actor = current_actor()
    st.markdown(f"**{action.title}** · {action.touches}" if title else f"Touches {action.touches}.")
    unavailable = action.available()
    if unavailable:
        st.info(unavailable, icon=":material/info:")
        return
    if not actor.is_operator:
        # Choices, previews and runs all read the target: none of it for a viewer (make_preview refuses too).
        config = _config()
        st.caption(":material/lock: Previewing and running actions needs the operator role. "
                   + (config.hint if not config.enabled else "Log in as operator in the sidebar."))
        return
    params = _fields(action, key, preset or {}, actor)
    if params is None:
        return
    state = st.session_state.setdefault(f"{key}:state", {})
    if state.pop("running", False):       # the last run was stopped mid-way (Abort)
        state.update(preview=None, outcome=("warning", "Aborted between two batches; what was done is "
                                                       "in the audit log below."))
    if st.button("Preview", key=f"{key}:preview", icon=":material/visibility:"):
        try:
            checked, preview = make_preview(action, params, actor=actor)
            state.update(params=params, preview=preview, outcome=None)
        except ActionError as exc:
            state.update(preview=None, outcome=("error", str(exc)))
    preview = state.get("preview") if state.get("params") == params else None
    if preview is not None:
        _show_preview(preview)
        _confirm_and_run(action, params, preview, actor, key, state)
    if state.get("outcome"):
        kind, text = state["outcome"]
        {"success": st.success, "error": st.error, "warning": st.warning}[kind](as_text(text))


def _fields(action: Action, key: str, preset: dict, actor: Actor) -> dict | None:
    params: dict = {}
    for field in action.fields():
        value = _field(action, field, params, key, preset, actor)
        if value is _UNAVAILABLE:
            return None
        if value is not _SKIP:
            params[field.name] = value
    return params


_SKIP, _UNAVAILABLE = object(), object()


def _field(action: Action, field: Field, params: dict, key: str, preset: dict, actor: Actor):
    widget_key = f"{key}:{field.name}"
    default = preset.get(field.name, field.default)
    if field.kind in ("choice", "multi"):
        try:
            options = field_options(action, field, params, actor=actor)
        except ActionError as exc:
            st.error(as_text(exc))
            return _UNAVAILABLE
        if options is None:                 # not applicable here (e.g. schema on SQLite)
            return _SKIP
        if field.kind == "multi":
            return st.multiselect(field.label, options, default=[v for v in default or [] if v in options],
                                  key=widget_key, help=field.help or None)
        if not options:
            st.info(f"{field.label}: nothing to choose from. {field.help}".strip(), icon=":material/info:")
            return _UNAVAILABLE
        index = options.index(default) if default in options else 0
        return st.selectbox(field.label, options, index=index, key=widget_key, help=field.help or None)
    if field.kind == "int":
        return int(st.number_input(field.label, value=int(default or 0), step=1, key=widget_key,
                                   help=field.help or None))
    if field.kind == "bool":
        return st.checkbox(field.label, value=bool(default), key=widget_key, help=field.help or None)
    text = st.text_input(field.label, value=default or "", key=widget_key, help=field.help or None)
    return text.strip() or None


def _show_preview(preview) -> None:
    with st.container(border=True):
        # Summaries and warnings name caches, keys, tables and targets: text, never markdown.
        st.markdown(f":material/preview: **Preview** · {as_text(preview.summary)}")
        for warning in preview.warnings:
            st.warning(as_text(warning), icon=":material/warning:")
        for statement in preview.statements:
            st.code(statement, language="sql", wrap_lines=True)
        if preview.rows:
            rows, config = readable(pd.DataFrame(preview.rows), {})
            st.dataframe(rows, hide_index=True, column_config=config)


def _confirm_and_run(action: Action, params: dict, preview, actor: Actor, key: str, state: dict) -> None:
    typed = None
    if preview.confirm is not None:
        typed = st.text_input(f"Type **{preview.confirm}** to confirm", key=f"{key}:confirm")
    ready = preview.confirm is None or (typed or "").strip() == preview.confirm
    if not st.button("Run", key=f"{key}:run", type="primary", disabled=not ready, icon=":material/play_arrow:"):
        return
    with st.status(f"{action.title}…", expanded=True):
        bar = st.progress(0.0) if action.batched else None
        if action.batched:
            st.button("Abort", key=f"{key}:abort", icon=":material/stop:")   # a click stops this run

        def on_update(p: Progress) -> None:
            if bar is not None:
                total = f" of {p.total:,}" if p.total else ""
                bar.progress(p.fraction or 0.0, text=f"{p.done:,}{total} {p.note}".strip())

        # Left True only when this run is stopped from outside (Abort): the next run reports it.
        state["running"] = True
        try:
            result = run_action(action, params, preview, actor=actor, confirmation=typed,
                                progress=Progress(on_update))
        except ActionError as exc:
            state.update(running=False, preview=None, outcome=("error", str(exc)))
        else:
            state.update(running=False, preview=None, outcome=("success", result.summary))
    st.rerun()
