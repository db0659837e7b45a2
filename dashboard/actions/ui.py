"""The Streamlit side of actions: the operator login in the sidebar, and `action_panel()`, which walks
any action through parameters → Preview → confirmation → Run with progress → result.

The rules themselves (role, confirmation, audit) live in framework.run_action; this only draws them.
Abort: a batched action shows an Abort button while it runs. Clicking it makes Streamlit stop the
running script at its next call, which is the progress update between two batches; run_action audits
that as "aborted" and the next run says so."""
from __future__ import annotations

import streamlit as st

from dashboard.actions import access, audit
from dashboard.actions.framework import (
    VIEWER,
    Action,
    ActionError,
    Actor,
    Field,
    Progress,
    make_preview,
    run_action,
)


def current_actor() -> Actor:
    """Who is using this session: an operator (password or OIDC), or a viewer."""
    try:
        # With OIDC configured, access reads st.user itself.
        return access.current_actor(st.session_state, access.operator_config())
    except Exception:      # a broken auth setup leaves everyone a viewer, never breaks the page
        return VIEWER


def operator_sidebar() -> None:
    """Role status in the sidebar, with the login form when an operator is configured."""
    config = access.operator_config()
    actor = current_actor()
    box = st.sidebar.container(border=True)
    if actor.is_operator:
        box.markdown(f":material/admin_panel_settings: **Operator** · {actor.name}")
        if box.button("Log out", key="operator-logout", type="tertiary"):
            if actor.via == "oidc":
                st.logout()
            access.log_out(st.session_state)
            st.rerun()
        return
    box.markdown(":material/visibility: **Viewer**")
    if not config.enabled:
        box.caption(config.hint)
        return
    if config.oidc and box.button("Log in with SSO", key="operator-sso"):
        st.login() if config.oidc_provider == "default" else st.login(config.oidc_provider)
    if config.password_hash:
        with box.popover("Operator login", width="stretch"), st.form("operator-login", border=False):
            password = st.text_input("Operator password", type="password")
            if st.form_submit_button("Log in", type="primary"):
                result = access.log_in(st.session_state, config, _client_key(), password)
                _audit_login(config.operator_name, result)
                if result.ok:
                    st.rerun()
                st.error(result.message)


def _client_key() -> str:
    try:
        return st.context.ip_address or "unknown"
    except Exception:
        return "unknown"


def _audit_login(name: str, result) -> None:
    try:
        audit.record(None, actor=Actor(name, via="password"), action="operator.login", target=None,
                     params={"client": _client_key()}, preview=None,
                     outcome="done" if result.ok else "refused", error=None if result.ok else result.message)
    except Exception:     # a busy store must not stop a login; the action audit itself is strict
        pass


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
    params = _fields(action, key, preset or {})
    if params is None:
        return
    state = st.session_state.setdefault(f"{key}:state", {})
    if state.pop("running", False):       # the last run was stopped mid-way (Abort)
        state.update(preview=None, outcome=("warning", "Aborted between two batches; what was done is "
                                                       "in the audit log below."))
    if st.button("Preview", key=f"{key}:preview", icon=":material/visibility:"):
        try:
            checked, preview = make_preview(action, params)
            state.update(params=params, preview=preview, outcome=None)
        except ActionError as exc:
            state.update(preview=None, outcome=("error", str(exc)))
    preview = state.get("preview") if state.get("params") == params else None
    if preview is not None:
        _show_preview(preview)
        _confirm_and_run(action, params, preview, actor, key, state)
    if state.get("outcome"):
        kind, text = state["outcome"]
        {"success": st.success, "error": st.error, "warning": st.warning}[kind](text)


def _fields(action: Action, key: str, preset: dict) -> dict | None:
    params: dict = {}
    for field in action.fields():
        value = _field(field, params, key, preset)
        if value is _UNAVAILABLE:
            return None
        if value is not _SKIP:
            params[field.name] = value
    return params


_SKIP, _UNAVAILABLE = object(), object()


def _field(field: Field, params: dict, key: str, preset: dict):
    widget_key = f"{key}:{field.name}"
    default = preset.get(field.name, field.default)
    if field.kind in ("choice", "multi"):
        try:
            options = field.options(params) if field.options else []
        except ActionError as exc:
            st.error(str(exc))
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
        st.markdown(f":material/preview: **Preview** · {preview.summary}")
        for warning in preview.warnings:
            st.warning(warning, icon=":material/warning:")
        for statement in preview.statements:
            st.code(statement, language="sql", wrap_lines=True)
        if preview.rows:
            st.dataframe(preview.rows, hide_index=True)


def _confirm_and_run(action: Action, params: dict, preview, actor: Actor, key: str, state: dict) -> None:
    typed = None
    if preview.confirm is not None:
        typed = st.text_input(f"Type **{preview.confirm}** to confirm", key=f"{key}:confirm",
                              disabled=not actor.is_operator)
    ready = actor.is_operator and (preview.confirm is None or (typed or "").strip() == preview.confirm)
    if not actor.is_operator:
        config = access.operator_config()
        st.caption(":material/lock: Running actions needs the operator role. "
                   + (config.hint if not config.enabled else "Log in as operator in the sidebar."))
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
