"""The audit log of actions: one row per attempt, in the store's `action_audit` table.

A run writes its row *before* it touches anything (outcome "running") and completes it afterwards, so
an action that could not be audited never runs, and one whose process died shows as "running".
Writes use the store's short write discipline (open, one transaction, close), like the daemon.

Every text that goes into a row (target, params, preview, result, figures, error) is redacted here,
in the writer, so that no caller can store a password a driver's message happened to quote."""
from __future__ import annotations

import json

from collectors.redact import redact, redact_value
from collectors.store import next_id, utcnow, write


def _json(value) -> str | None:
    # Each value redacted on its own: redacting the JSON text could swallow its quotes and braces.
    return None if value is None else json.dumps(redact_value(value), sort_keys=True, default=str)


def start(db, *, actor, action: str, target: str | None, params: dict, preview: str | None) -> int:
    """Insert the row of a run about to start; returns its id."""
    with write(db) as con:
        audit_id = next_id(con, "action_audit")
        con.execute(
            """
            INSERT INTO action_audit (id, ts, actor, action, target, params, preview, outcome)
            VALUES (?, ?, ?, ?, ?, ?, ?, 'running')
            """,
            [audit_id, utcnow(), actor.name, action, redact(target), _json(params), redact(preview)],
        )
    return audit_id


def finish(db, audit_id: int, *, outcome: str, duration_ms: float, result: str | None = None,
           figures: dict | None = None, error: str | None = None) -> None:
    with write(db) as con:
        con.execute(
            """
            UPDATE action_audit
            SET outcome = ?, duration_ms = ?, result = ?, figures = ?, error = ?
            WHERE id = ?
            """,
            [outcome, duration_ms, redact(result), _json(figures), redact(error), audit_id],
        )


def record(db, *, actor, action: str, target: str | None, params: dict, preview: str | None, outcome: str,
           error: str | None = None, result: str | None = None) -> int:
    """One complete row for something that did not run (refused, invalid) or had no steps (a login)."""
    with write(db) as con:
        audit_id = next_id(con, "action_audit")
        con.execute(
            """
            INSERT INTO action_audit (id, ts, actor, action, target, params, preview, outcome, duration_ms, result, error)
            VALUES (?, ?, ?, ?, ?, ?, ?, ?, 0, ?, ?)
            """,
            [audit_id, utcnow(), actor.name, action, redact(target), _json(params), redact(preview), outcome,
             redact(result), redact(error)],
        )
    return audit_id
