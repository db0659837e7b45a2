"""What every maintenance action is made of, and the one function that runs them.

An action is a class with a title, what it touches, and three steps:

    check(params)             -> params      validate and normalise; raise InvalidInput with a clear message
    preview(params)           -> Preview     a dry run: says exactly what execute() will do, changes nothing
    execute(params, preview, progress) -> Result
                                             does what the preview said (DDL and statements come from the
                                             preview, so what ran is what was shown); reports progress

Pages never call preview() or execute() themselves: `make_preview()` and `run_action()` do, and they are
where the rules live:
- only an operator may preview or run an action, or list a field's choices: a preview reads the target (a
  full SCAN of a Redis, a database's catalogue) and shows what is in it. A viewer gets NotAuthorized, and
  the refusal is audited. Pages pass the actor; code that is not a person (tests, the CLI) may leave it
  out of make_preview;
- a destructive action needs the confirmation text the preview asked for, typed exactly;
- a preview older than PREVIEW_MAX_AGE_S must be made again;
- an audit row is written *before* anything is touched (no audit, no action) and completed afterwards
  with the outcome: done, failed, aborted (Abort clicked, session gone) — with the error or the
  partial progress.

Params are plain JSON values and name targets by their configured name, never by URL, so the audit
log holds no secrets.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, ClassVar

from dashboard.actions import audit

PREVIEW_MAX_AGE_S = 600
log = logging.getLogger("perfdeck.actions")


class ActionError(Exception):
    """Base of the errors an action reports to the user as one clear line."""


class InvalidInput(ActionError):
    """A parameter was refused (unknown table, pattern with control characters, ...)."""


class NotAuthorized(ActionError):
    """The actor may not run actions (viewer), or did not type the confirmation."""


class TargetUnavailable(ActionError):
    """The target (a Redis, a database) could not be reached or went away."""


class Aborted(ActionError):
    """The operator stopped the action between two batches."""


@dataclass(frozen=True)
class Actor:
    """Who is acting. Only `dashboard.actions.access` makes operators."""
    name: str
    role: str = "viewer"          # "anonymous" < "viewer" < "operator"
    via: str = "anonymous"        # "password" | "oidc" | "anonymous" | "cli" | "test"

    @property
    def is_operator(self) -> bool:
        return self.role == "operator"


VIEWER = Actor("anonymous")                    # nobody logged in, while viewer login is off: may view
ANONYMOUS = Actor("anonymous", role="anonymous")   # nobody logged in, while viewer login is on: sees nothing
OPERATOR_NEEDED = "the operator role is needed"


@dataclass
class Preview:
    """What execute() will do. `summary` is one sentence; `statements` the exact DDL/commands that will
    run (shown verbatim); `rows` a small table to show (sample keys, rows per table...); `count` the
    number of things touched when that makes sense; `confirm` the text an operator must type for a
    destructive action (None: a click on Run is the confirmation); `data` what execute() needs."""
    summary: str
    statements: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)
    count: int | None = None
    confirm: str | None = None
    warnings: list[str] = field(default_factory=list)
    data: dict = field(default_factory=dict)
    made_at: float = field(default_factory=time.monotonic)

    def text(self) -> str:
        """The preview as stored in the audit row."""
        return "\n".join([self.summary, *self.statements])


@dataclass
class Result:
    """What happened: one sentence, plus figures (JSON values) for the audit row."""
    summary: str
    figures: dict = field(default_factory=dict)


class Progress:
    """Handed to execute(). Batched work calls `step()` between batches; that is where Abort lands:
    `abort()` (or the page's own interruption) makes the next step() raise."""

    def __init__(self, on_update: Callable[[Progress], None] | None = None):
        self.done, self.total, self.note = 0, None, ""
        self.actor: Actor | None = None   # set by run_action: who runs it, for actions that record a name
        self._on_update = on_update
        self._abort = False

    def step(self, done: int, total: int | None = None, note: str = "") -> None:
        self.done, self.note = done, note
        if total is not None:
            self.total = total
        if self._abort:
            raise Aborted(f"aborted after {self.done:,}" + (f" of {self.total:,}" if self.total else ""))
        if self._on_update is not None:
            self._on_update(self)

    def abort(self) -> None:
        self._abort = True

    @property
    def fraction(self) -> float | None:
        return min(1.0, self.done / self.total) if self.total else None


@dataclass(frozen=True)
class Field:
    """One parameter of an action, as the page renders it. `options(params)` lists the choices for
    "choice"/"multi" fields given the params chosen so far (fields above this one), e.g. the tables of
    the chosen database; it may raise ActionError (target down), which the page shows in place."""
    name: str
    label: str
    kind: str = "text"                 # "text" | "choice" | "multi" | "int" | "bool"
    options: Callable[[dict], list] | None = None
    default: Any = None
    help: str = ""


class Action:
    """Base class. Subclasses set the class attributes and implement check/preview/execute."""
    name: ClassVar[str]            # "redis.delete_keys": the audit log's action column
    kind: ClassVar[str]            # "redis" | "database" | "app-cache" | "store": what params["target"] names
    title: ClassVar[str]           # "Delete keys by pattern"
    touches: ClassVar[str]         # "keys of one Redis database, by SCAN pattern"
    destructive: ClassVar[bool] = False
    batched: ClassVar[bool] = False   # execute() calls progress.step() between batches (abortable)

    def fields(self) -> list[Field]:
        """The parameters, in the order the page asks for them."""
        return []

    def target_of(self, params: dict) -> str:
        """The audit log's target column: "redis:cache", "database:shop", "store"."""
        return f"{self.kind}:{params['target']}" if params.get("target") else self.kind

    def available(self) -> str | None:
        """None when the action can run here, else one line saying what to configure."""
        return None

    def check(self, params: dict) -> dict:
        return dict(params)

    def preview(self, params: dict) -> Preview:
        raise NotImplementedError

    def execute(self, params: dict, preview: Preview, progress: Progress) -> Result:
        raise NotImplementedError


def _refuse_viewer(action: Action, params: dict, actor: Actor, db, what: str) -> None:
    if actor.is_operator:
        return
    audit.record(db, actor=actor, action=action.name, target=action.target_of(params), params=params,
                 preview=None, outcome="refused", error=f"{what}: {OPERATOR_NEEDED}")
    raise NotAuthorized(f"{what} needs the operator role; log in as operator")


def make_preview(action: Action, params: dict, *, actor: Actor, db=None) -> tuple[dict, Preview]:
    """Check the params and dry-run the action; it changes nothing, but it reads the target, so an
    `actor` who is not an operator gets NotAuthorized (audited in the store `db`) before anything is read."""
    _refuse_viewer(action, params, actor, db, "previewing")
    params = action.check(params)
    return params, action.preview(params)


def field_options(action: Action, field: Field, params: dict, *, actor: Actor) -> list | None:
    """The choices of `field` given the params chosen so far. They can come from the target (tables,
    columns, indexes), so only an operator gets them; nothing is audited, as a page asks on every rerun."""
    if not actor.is_operator:
        raise NotAuthorized(f"listing {field.label.lower()} choices needs the operator role")
    return field.options(params) if field.options else []


def run_action(action: Action, params: dict, preview: Preview, *, actor: Actor, confirmation: str | None = None,
               progress: Progress | None = None, db=None) -> Result:
    """Run `action` as `actor` after `preview`. Raises NotAuthorized, InvalidInput, TargetUnavailable,
    Aborted or ActionError; every outcome, refusals included, leaves an audit row in the store `db`."""
    progress = progress or Progress()
    progress.actor = actor
    preview_text = preview.text() if preview is not None else None

    def refuse(outcome: str, error: str, logged_params: dict) -> None:
        audit.record(db, actor=actor, action=action.name, target=action.target_of(logged_params),
                     params=logged_params, preview=preview_text, outcome=outcome, error=error)

    if not actor.is_operator:
        refuse("refused", OPERATOR_NEEDED, params)
        raise NotAuthorized("running actions needs the operator role; log in as operator")
    if preview is None or time.monotonic() - preview.made_at > PREVIEW_MAX_AGE_S:
        raise NotAuthorized("preview the action first (previews older than 10 minutes must be made again)")
    try:
        checked = action.check(params)
    except InvalidInput as exc:
        refuse("invalid", str(exc), params)
        raise
    except ActionError as exc:             # e.g. the target went away since the preview
        refuse("failed", str(exc), params)
        raise
    if preview.confirm is not None and (confirmation or "").strip() != preview.confirm:
        refuse("refused", "confirmation text did not match", checked)
        raise NotAuthorized(f"type {preview.confirm!r} to confirm")
    audit_id = audit.start(db, actor=actor, action=action.name, target=action.target_of(checked), params=checked,
                           preview=preview_text)
    t0 = time.perf_counter()

    def finish(outcome: str, result: Result | None = None, error: str | None = None) -> None:
        figures = dict(result.figures) if result else {}
        if outcome != "done" and progress.done:
            figures.update(done=progress.done, total=progress.total)
        try:
            audit.finish(db, audit_id, outcome=outcome, duration_ms=(time.perf_counter() - t0) * 1000.0,
                         result=result.summary if result else None, figures=figures or None, error=error)
        except Exception as exc:    # the work is done (or failed) either way: say so, don't hide it
            log.error("audit row %s could not be completed (%s): %s", audit_id, outcome, exc)
            if result is not None:
                result.summary += f" (its audit row stays 'running': {exc})"

    try:
        result = action.execute(checked, preview, progress)
    except Aborted as exc:
        finish("aborted", error=str(exc))
        raise
    except ActionError as exc:
        finish("failed", error=str(exc))
        raise
    except Exception as exc:
        finish("failed", error=f"{type(exc).__name__}: {exc}")
        raise ActionError(f"{action.title} failed: {exc}") from exc
    except BaseException:
        # Streamlit stops a running script with a BaseException when the user clicks elsewhere
        # (our Abort button) or the session ends: the work stopped between two batches.
        finish("aborted", error="interrupted" + (f" after {progress.done:,}" if progress.done else ""))
        raise
    finish("done", result)
    return result


__all__ = [
    "ANONYMOUS", "Aborted", "Action", "ActionError", "Actor", "Field", "InvalidInput", "NotAuthorized", "Preview",
    "Progress", "Result", "TargetUnavailable", "VIEWER", "field_options", "make_preview", "run_action",
]
