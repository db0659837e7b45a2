"""Maintenance actions: preview, confirm, run with progress, audit. See framework.py for the rules."""
from dashboard.actions.framework import (
    VIEWER,
    Aborted,
    Action,
    ActionError,
    Actor,
    Field,
    InvalidInput,
    NotAuthorized,
    Preview,
    Progress,
    Result,
    TargetUnavailable,
    make_preview,
    run_action,
)

__all__ = [
    "Aborted", "Action", "ActionError", "Actor", "Field", "InvalidInput", "NotAuthorized", "Preview", "Progress",
    "Result", "TargetUnavailable", "VIEWER", "make_preview", "run_action",
]
