"""PostgreSQL actions on live backends and captured statements: cancel a backend's statement, terminate a
backend, EXPLAIN a statement of pg_stat_statements.

Cancel / Terminate take {"target", "pid", "backend_start"}: the pid and the backend start the page's
snapshot showed (pg_activity). A pid is reused once its backend exits, so the preview reads the live
backend from pg_stat_activity of the target's database and refuses when its backend_start differs from
the snapshot's; execute() reads it again and refuses when it is no longer that same backend, then calls
pg_cancel_backend / pg_terminate_backend with the pid as a bound parameter. No captured text runs.
perfdeck's own backends (application_name "perfdeck...") and other databases' are not touched.

Explain takes {"target", "queryid"}: the text comes from the target's own pg_stat_statements (this
database's entry), must read as one SELECT (collectors.advisor.hypopg.check_select), and only a plain
EXPLAIN of it runs (never ANALYZE): in a READ ONLY transaction with a statement timeout, through the
extended query protocol, which refuses more than one command. A normalized text ($1, $2, ...) is
prepared and explained with EXPLAIN EXECUTE name(NULL, ...) under plan_cache_mode =
force_generic_plan, as the index advisor does. The plan is the result's figures["plan"].

Every statement perfdeck sends here starts with MARK, so the sampler leaves it out of pg_statements."""
from __future__ import annotations

import itertools
from datetime import datetime, timezone

from sqlalchemy import text as sql_text

from collectors import formatting as fmt
from collectors.advisor.hypopg import check_select
from collectors.redact import redact
from dashboard.actions import db_catalog as cat
from dashboard.actions.framework import Action, Field, InvalidInput, Preview, Progress, Result

MARK = cat.MARK
EXPLAIN_TIMEOUT_MS = 5000
QUERY_SHOWN = 500         # characters of a backend's statement shown in a preview
_names = itertools.count()

_BACKEND = f"""{MARK}
SELECT pid, backend_start, usename::text, application_name, state,
       extract(epoch FROM clock_timestamp() - query_start), extract(epoch FROM clock_timestamp() - xact_start),
       query
FROM pg_stat_activity
WHERE pid = :pid AND datname = current_database() AND backend_type = 'client backend'"""


def _naive_utc(ts: datetime | None) -> datetime | None:
    if ts is None or ts.tzinfo is None:
        return ts
    return ts.astimezone(timezone.utc).replace(tzinfo=None)


def _ago(seconds) -> str:
    return "—" if seconds is None else fmt.duration(max(0.0, float(seconds)))


class _PgAction(Action):
    kind = "database"
    dialects = ("postgresql",)

    def available(self) -> str | None:
        if cat.names(self.dialects):
            return None
        return (f"{self.title} needs a PostgreSQL database: add a [[database]] with a name and url to "
                "perfdeck.toml, or set PERFDECK_DATABASE_URLS=name=url")

    def _target(self, params: dict):
        return cat.resolve(params.get("target"), self.title, self.dialects)


class CancelBackend(_PgAction):
    name = "database.cancel_backend"
    title = "Cancel query"
    touches = "the statement one PostgreSQL backend is running (pg_cancel_backend); its session stays"
    function = "pg_cancel_backend"
    verb = "Cancel the statement of"

    def fields(self) -> list[Field]:
        return [Field("target", "Database", "choice", options=lambda p: cat.names(self.dialects)),
                Field("pid", "Backend pid", "int"),
                Field("backend_start", "Backend started (UTC)", "text",
                      help="from the snapshot: the action refuses a different backend with a reused pid")]

    def check(self, params: dict) -> dict:
        target, _ = self._target(params)
        pid = params.get("pid")
        if isinstance(pid, bool) or not isinstance(pid, int) or pid <= 0:
            raise InvalidInput(f"pid must be a positive whole number, not {str(pid)[:40]!r}")
        start = params.get("backend_start")
        if start is not None:
            try:
                start = _naive_utc(datetime.fromisoformat(str(start))).isoformat(sep=" ")
            except ValueError:
                raise InvalidInput(f"backend_start {str(start)[:40]!r} is not a time") from None
        return {"target": target.name, "pid": pid, "backend_start": start}

    def _backend(self, params: dict) -> tuple:
        """The live backend, the very one the params name (pid and start), or InvalidInput."""
        target, _ = self._target(params)
        with cat.connect(target) as con:
            row = con.execute(sql_text(_BACKEND), {"pid": params["pid"]}).first()
            own = con.exec_driver_sql(f"{MARK} SELECT pg_backend_pid()").scalar()
        if row is None:
            raise InvalidInput(f"no backend with pid {params['pid']} in database {target.name!r} any more: "
                               "it has ended")
        started = _naive_utc(row[1])
        if params["backend_start"] is not None and started.isoformat(sep=" ") != params["backend_start"]:
            raise InvalidInput(f"pid {params['pid']} is now another backend (started {started:%Y-%m-%d %H:%M:%S} "
                               f"UTC, not {params['backend_start'][:19]}): the one shown has ended")
        if row[0] == own or (row[3] or "").startswith("perfdeck"):
            raise InvalidInput(f"pid {params['pid']} is one of perfdeck's own backends")
        return row

    def preview(self, params: dict) -> Preview:
        pid, started, user, app, state, query_s, xact_s, query = self._backend(params)
        shown = redact(query or "")[:QUERY_SHOWN]
        statement = f"SELECT {self.function}({params['pid']})"
        what = (f"{self.verb} backend {pid} (user {user!r}, application {app or '—'!r}, {state}; statement running "
                f"{_ago(query_s)}, transaction open {_ago(xact_s)})")
        data = {"params": params, "backend_start": _naive_utc(started).isoformat(sep=" ")}
        return Preview(f"{what}.", statements=[statement], confirm=self._confirm(pid), warnings=self._warnings(),
                       rows=[{"pid": pid, "backend started (UTC)": _naive_utc(started), "user": user,
                              "application": app, "state": state, "running (s)": query_s,
                              "transaction open (s)": xact_s, "statement": shown}],
                       data=data)

    def _confirm(self, pid: int) -> str | None:
        return None

    def _warnings(self) -> list[str]:
        return ["The statement stops with an error for its client; a transaction it was in is rolled back."]

    def execute(self, params: dict, preview: Preview, progress: Progress) -> Result:
        if preview.data.get("params") != params:
            raise InvalidInput("the preview was made for other parameters: preview again")
        fixed = {**params, "backend_start": preview.data["backend_start"]}
        row = self._backend(fixed)          # still that same backend, right before the signal
        target, _ = self._target(params)
        progress.step(0, 1, f"{self.function}({params['pid']})")
        with cat.connect(target) as con:
            sent = bool(con.execute(sql_text(f"{MARK} SELECT {self.function}(:pid)"), {"pid": params["pid"]}).scalar())
        ran = _ago(row[5])
        if not sent:
            return Result(f"Backend {params['pid']} was gone before the signal reached it.",
                          {"pid": params["pid"], "signalled": False})
        return Result(self._done(params["pid"], ran), {"pid": params["pid"], "signalled": True,
                                                      "query_s": None if row[5] is None else round(float(row[5]), 3)})

    def _done(self, pid: int, ran: str) -> str:
        return f"Cancelled the statement of backend {pid} (it had run {ran})."


class TerminateBackend(CancelBackend):
    name = "database.terminate_backend"
    title = "Terminate backend"
    touches = "one PostgreSQL backend: its connection is closed (pg_terminate_backend)"
    destructive = True
    function = "pg_terminate_backend"
    verb = "Terminate"

    def _confirm(self, pid: int) -> str | None:
        return str(pid)

    def _warnings(self) -> list[str]:
        return ["The client's connection is closed: its open transaction is rolled back and the application "
                "has to reconnect."]

    def _done(self, pid: int, ran: str) -> str:
        return f"Terminated backend {pid} (its statement had run {ran})."


class ExplainStatement(_PgAction):
    name = "database.explain"
    title = "Explain"
    touches = "nothing: plans one SELECT of pg_stat_statements with a plain EXPLAIN (no ANALYZE), read-only"

    def fields(self) -> list[Field]:
        return [Field("target", "Database", "choice", options=lambda p: cat.names(self.dialects)),
                Field("queryid", "pg_stat_statements queryid", "int")]

    def check(self, params: dict) -> dict:
        target, _ = self._target(params)
        queryid = params.get("queryid")
        if isinstance(queryid, bool) or not isinstance(queryid, int):
            raise InvalidInput(f"queryid must be a whole number, not {str(queryid)[:40]!r}")
        return {"target": target.name, "queryid": queryid}

    def _text(self, params: dict) -> tuple[str, int]:
        target, _ = self._target(params)
        with cat.connect(target) as con:
            found = con.execute(sql_text(f"""{MARK}
                SELECT query FROM pg_stat_statements
                WHERE queryid = :q AND dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
                LIMIT 1"""), {"q": params["queryid"]}).scalar()
        if found is None:
            raise InvalidInput(f"statement {params['queryid']} is no longer in pg_stat_statements of "
                               f"{target.name!r} (reset or evicted)")
        try:
            nparams = check_select(found)
        except ValueError as exc:
            raise InvalidInput(f"only a single SELECT is explained: {exc}") from None
        return found, nparams

    def _statements(self, text: str, nparams: int) -> list[str]:
        if nparams == 0:
            return [f"EXPLAIN {text}"]
        name = f"perfdeck_explain_{next(_names)}"
        return [f"PREPARE {name} AS {text}", f"EXPLAIN EXECUTE {name}({', '.join(['NULL'] * nparams)})",
                f"DEALLOCATE {name}"]

    def preview(self, params: dict) -> Preview:
        text, nparams = self._text(params)
        statements = self._statements(text, nparams)
        how = (f"; its {nparams} parameter(s) as NULL, the generic plan" if nparams else "")
        return Preview(f"Plan statement {params['queryid']} with a plain EXPLAIN (not run){how}, in a read-only "
                       f"transaction with a {EXPLAIN_TIMEOUT_MS // 1000} s timeout.", statements=statements,
                       data={"params": params, "text": text, "nparams": nparams, "statements": statements})

    def execute(self, params: dict, preview: Preview, progress: Progress) -> Result:
        if preview.data.get("params") != params:
            raise InvalidInput("the preview was made for other parameters: preview again")
        text, nparams = self._text(params)
        if text != preview.data["text"]:
            raise InvalidInput("the statement's text changed since the preview: preview again")
        target, _ = self._target(params)
        progress.step(0, 1, "EXPLAIN")
        with cat.connect(target) as con:
            plan = explain(con.connection.driver_connection, preview.data["statements"])
        return Result(f"Planned statement {params['queryid']}: {plan[0].strip() if plan else 'no plan'}",
                      {"plan": "\n".join(plan)})


def explain(conn, statements: list[str]) -> list[str]:
    """Run the preview's EXPLAIN statements on a psycopg connection, read-only; the plan's lines."""
    conn.rollback()
    lines: list[str] = []
    try:
        with conn.cursor() as cur:
            cur.execute(f"{MARK} SET TRANSACTION READ ONLY")
            cur.execute(f"{MARK} SET LOCAL statement_timeout = {int(EXPLAIN_TIMEOUT_MS)}")
            cur.execute(f"{MARK} SET LOCAL plan_cache_mode = force_generic_plan")
            for statement in statements:
                # binary=True: the extended protocol, where the server refuses more than one command
                cur.execute(f"{MARK} {statement}".encode(), binary=not statement.startswith("DEALLOCATE"))
                if statement.startswith("EXPLAIN"):
                    lines = [row[0] for row in cur.fetchall()]
    finally:
        conn.rollback()
    return lines


ACTIONS: list[type[Action]] = [CancelBackend, TerminateBackend, ExplainStatement]
