"""The dashboard on a DuckLake store (collectors.store.lake): every page renders from the same data as on
the DuckDB file, with the same figures; the store actions preview, run and audit on the lake; the lake is
named without its password wherever a page or an action names it; a read while a writer holds the lake
never shows "store busy" (a lake's reads are snapshots)."""
from __future__ import annotations

import json
import re
import threading
from datetime import timedelta
from pathlib import Path

import pandas as pd
import pytest
from streamlit.testing.v1 import AppTest

from collectors.health import ASSESSED_COLUMNS
from collectors.health.alerts import AlertEngine
from collectors.health.settings import AlertSettings
from collectors.store import db_path, read, utcnow, write
from collectors.store.connection import store_spec
from collectors.store.lake import KEEP_SNAPSHOTS, Lake
from dashboard.actions import NotAuthorized, make_preview, run_action
from dashboard.actions.access import SESSION_KEY, hash_password, log_in, operator_config
from dashboard.actions.store_actions import CompactStore, PurgeRawData
from dashboard.queries.storage import cli_command, lake_storage, store_name
from tests.helpers import OPERATOR, clear_health_env, free_port, shown_text
from tests.pg import lake_store, pg_cluster  # noqa: F401
from tests.seed_health import seed_health
from tests.seed_pipeline import seed_pipeline
from tests.seed_samples import TABLES, make_samples
from tests.seed_store import seed_store

ROOT = Path(__file__).resolve().parent.parent
PAGES = ROOT / "dashboard" / "app_pages"
pytestmark = pytest.mark.slow    # AppTest pages on a lake (and marked lake, by conftest, for the lake_store fixture)

PASSWORD = "s3cret-Pa55"          # in the lake's conninfo: the test cluster trusts, so it is never checked
OPERATOR_PASSWORD = "correct horse battery"


def with_password(lake: Lake) -> Lake:
    return Lake(f"{lake.conninfo} password={PASSWORD}", lake.data_path)


def not_answering(lake: Lake) -> Lake:
    """The lake with its catalog on a port nobody listens on (and a password, which must not show)."""
    return Lake(re.sub(r"port=\d+", f"port={free_port()}", lake.conninfo) + f" password={PASSWORD}", lake.data_path)


def alert_checks(*rows) -> pd.DataFrame:
    return pd.DataFrame([{"component": "Latency", "check": "request_p95_ms", "service": "api", "subject": s,
                          "value": ms, "unit": "ms", "severity": sev, "level": 500,
                          "message": f"p95 of {s} {ms:,.0f} ms"} for s, sev, ms in rows], columns=ASSESSED_COLUMNS)


def seed_everything(store, now) -> None:
    """What every page reads, written the same way into a file or a lake."""
    seed_store(store, now=now, days=2)
    seed_health(store, now=now)
    frames = make_samples(now=now, hours=24)
    with write(store) as con:        # as seed_samples, but seed_health's components (the file has a key on name)
        for table in TABLES:
            if table != "components":
                con.register("seed_frame", frames[table])
                cols = ", ".join(f'"{c}"' for c in frames[table].columns)
                con.execute(f"INSERT INTO {table} ({cols}) SELECT {cols} FROM seed_frame")
                con.unregister("seed_frame")
    seed_pipeline(store, now=now)
    engine = AlertEngine(store, AlertSettings(for_s=0))
    t = now.replace(microsecond=0) - timedelta(hours=2)
    engine.tick(alert_checks(("/search", "critical", 1240)), t)
    engine.tick(alert_checks(("/search", "critical", 1300), ("/cart", "warning", 740)), t + timedelta(minutes=1))
    engine.tick(alert_checks(("/search", "critical", 1100), ("/cart", "healthy", 150)), t + timedelta(minutes=6))


@pytest.fixture
def env(tmp_path, monkeypatch):
    clear_health_env(monkeypatch, tmp_path)
    for var in ("PERFDECK_OPERATOR_PASSWORD_HASH", "PERFDECK_OPERATOR_EMAILS", "PERFDECK_REDIS_URLS",
                "PERFDECK_DATABASE_URLS", "PERFDECK_VIEWER_PASSWORD_HASH"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(tmp_path)          # no perfdeck.toml, no .streamlit/secrets.toml here
    return monkeypatch


@pytest.fixture
def twins(env, tmp_path, lake_store):  # noqa: F811
    """The same data in a DuckDB file and in a lake (whose conninfo carries a password); the `now` they are
    seeded around."""
    now = utcnow().replace(second=0, microsecond=0)
    path = tmp_path / "perfdeck.duckdb"
    lake = with_password(lake_store)
    for store in (path, lake):
        seed_everything(store, now)
    return path, lake, now


def use(monkeypatch, store) -> None:
    import streamlit as st

    monkeypatch.setenv("PERFDECK_DB", store.spec if isinstance(store, Lake) else str(store))
    st.cache_data.clear()


def render(page: str, now, *, at: AppTest | None = None) -> AppTest:
    at = at or AppTest.from_file(str(PAGES / page), default_timeout=90)
    at.session_state["range"] = "Custom range"
    at.session_state["range_from"], at.session_state["range_to"] = now - timedelta(hours=24), now
    at.run()
    assert not at.exception, f"{page}: {at.exception}"
    return at


def everything_shown(at: AppTest) -> str:
    parts = [e.value for kind in ("markdown", "caption", "info", "warning", "error", "success", "code", "title",
                                  "subheader", "header") for e in getattr(at, kind)]
    parts += [f"{m.label} {m.value}" for m in at.metric]
    parts += [d.value.to_csv() for d in at.dataframe]
    return "\n".join(str(p) for p in parts)


def figures(at: AppTest) -> dict:
    """What a page shows as numbers: its metrics, and its tables, in a form that ignores row order."""
    def table(df: pd.DataFrame) -> list:
        df = df.reset_index(drop=True)
        shown = df.round({c: 6 for c in df.columns if pd.api.types.is_float_dtype(df[c])}).astype(str)
        return sorted(map(tuple, shown.itertuples(index=False)))

    return {"metrics": [(m.label, m.value) for m in at.metric],
            "tables": [(tuple(d.value.columns), table(d.value)) for d in at.dataframe],
            "charts": len(at.get("plotly_chart"))}


PAGE_FILES = ["overview.py", "host.py", "caches.py", "database.py", "cost.py", "compare.py", "alerts.py",
              "ingest.py", "actions.py"]


def renders_in_one_window(env, page: str, path, lake, now) -> tuple[AppTest, AppTest]:
    """The page on the file and on the lake. Its health checks measure the last minutes of the real clock,
    which can move on to another minute between two renders on a loaded machine: then the pair is rendered
    again (the file rendered before and after the lake differ)."""
    for _ in range(3):
        use(env, path)
        on_file = render(page, now)
        use(env, lake)
        on_lake = render(page, now)
        use(env, path)
        if figures(render(page, now)) == figures(on_file):
            break
    return on_file, on_lake


def test_every_page_shows_the_same_figures_on_the_lake_as_on_the_file(twins, env):
    path, lake, now = twins
    for page in PAGE_FILES:
        on_file, on_lake = renders_in_one_window(env, page, path, lake, now)
        shown = everything_shown(on_lake)
        assert PASSWORD not in shown, page
        assert "store is busy" not in shown and "No data yet" not in shown, (page, shown[:2000])
        callouts = lambda at: [e.value for kind in ("error", "warning", "info") for e in getattr(at, kind)]  # noqa: E731
        assert callouts(on_lake) == callouts(on_file), page
        file_figures, lake_figures = figures(on_file), figures(on_lake)
        assert lake_figures["metrics"] == file_figures["metrics"], page
        assert lake_figures["charts"] == file_figures["charts"], page
        assert [c for c, _ in lake_figures["tables"]] == [c for c, _ in file_figures["tables"]], page
        for (columns, on_l), (_, on_f) in zip(lake_figures["tables"], file_figures["tables"]):
            assert on_l == on_f, (page, columns)
        if page == "overview.py":         # the key figures are there at all, not two empty pages alike
            assert dict(lake_figures["metrics"])["Requests / s"] != "—"
            assert len(lake_figures["tables"][0][1]) >= 7


def test_the_lake_is_named_without_its_password(lake_store):  # noqa: F811
    lake = with_password(lake_store)
    assert PASSWORD not in store_name(lake) and "dbname=" in store_name(lake)
    assert store_spec(lake) == lake.spec and db_path(store_spec(lake)) == lake   # what reads get: the password too
    command = cli_command(lake, "reprice --since 30d")
    assert PASSWORD not in command
    assert command.startswith(f"PERFDECK_LAKE_DATA_PATH={lake.data_path} perfdeck reprice --since 30d --db 'ducklake:")
    assert cli_command(Path("data/perfdeck.duckdb"), "reprice --since 30d") == "perfdeck reprice --since 30d"
    assert cli_command(Path("/x/my store.duckdb"), "reprice") == "perfdeck reprice --db '/x/my store.duckdb'"


# -- the store actions on the lake ----------------------------------------------------------------------
@pytest.fixture
def lake(env, lake_store):  # noqa: F811
    """A lake with three days of requests, its conninfo carrying a password."""
    lake = with_password(lake_store)
    seed_store(lake, days=3)
    return lake


def audit_rows(store) -> list[dict]:
    with read(store) as con:
        df = con.execute("SELECT id, actor, action, target, outcome, params, preview, result, error, figures "
                         "FROM action_audit ORDER BY id").df()
    return df.to_dict("records")


def count(store, table: str, where: str = "TRUE") -> int:
    with read(store) as con:
        return con.execute(f"SELECT count(*) FROM {table} WHERE {where}").fetchone()[0]


def test_purge_on_the_lake_previews_asks_for_the_catalog_name_runs_and_audits(lake, operator):
    action = PurgeRawData(lake)
    assert action.available() is None
    params, preview = make_preview(action, {"days": 1}, actor=OPERATOR)
    cutoff = utcnow() - timedelta(days=1)
    older = count(lake, "request_events", f"ts < TIMESTAMP '{cutoff:%Y-%m-%d %H:%M:%S.%f}'")
    assert older > 10_000 and 0 <= older - preview.data["counts"]["request_events"] < 500   # a moment later
    catalog = lake.conninfo.split("dbname=")[1].split()[0]
    assert preview.confirm == catalog                 # short enough to type, and names the lake
    assert PASSWORD not in preview.text() and "DuckLake" in preview.summary

    with pytest.raises(NotAuthorized, match=f"type '{catalog}' to confirm"):
        run_action(action, params, preview, actor=operator, confirmation=lake.name, db=lake)
    result = run_action(action, params, preview, actor=operator, confirmation=catalog, db=lake)

    assert result.figures["rows_deleted"] == preview.count
    assert count(lake, "request_events", f"ts < TIMESTAMP '{cutoff - timedelta(minutes=1):%Y-%m-%d %H:%M:%S}'") == 0
    refused, done = audit_rows(lake)
    assert (refused["id"], refused["outcome"], refused["error"]) == (1, "refused", "confirmation text did not match")
    assert (done["id"], done["action"], done["target"], done["outcome"]) == (2, "store.purge_raw", "store", "done")
    assert json.loads(done["figures"])["rows_deleted"] == preview.count
    assert all(PASSWORD not in str(v) for row in (refused, done) for v in row.values())


def test_compaction_on_the_lake_merges_runs_ducklake_maintenance_and_reports_its_files(lake, operator):
    with write(lake) as con:          # the same minutes written twice, as two ingest batches would
        con.execute("INSERT INTO latency_hist SELECT * FROM latency_hist LIMIT 500")
        total = con.execute("SELECT sum(count) FROM latency_hist").fetchone()[0]
    action = CompactStore(lake)
    assert "DuckLake" in action.touches and "WAL" not in action.touches
    params, preview = make_preview(action, {}, actor=OPERATOR)
    assert preview.count == 500 and preview.confirm is None and preview.statements == ["CHECKPOINT"]
    assert "Parquet files" in preview.summary and "file." not in preview.summary and PASSWORD not in preview.summary
    assert f"expires snapshots older than {KEEP_SNAPSHOTS}" in preview.summary    # what checkpoint() sets, fresh lake too
    with read(lake) as con:
        live = lake_storage(con).iloc[0]
    assert preview.data["files"] == live.live_files > 0 and preview.data["size"] == live.live_bytes > 0

    result = run_action(action, params, preview, actor=operator, db=lake)

    assert result.figures["rows_merged"] == 500
    assert result.figures["files_before"] == preview.data["files"] and result.figures["files_after"] > 0
    assert result.summary.startswith("Merged 500 rollup rows; the lake's current data are ")
    assert "Parquet files (were " in result.summary and "its data folder holds " in result.summary
    with read(lake) as con:
        assert con.execute("SELECT sum(count) FROM latency_hist").fetchone()[0] == total
        assert con.execute("SELECT count(*) FROM (SELECT DISTINCT minute, service, endpoint, bucket FROM latency_hist)"
                           ).fetchone()[0] == con.execute("SELECT count(*) FROM latency_hist").fetchone()[0]
    [row] = audit_rows(lake)
    assert (row["id"], row["action"], row["outcome"]) == (1, "store.compact", "done")
    assert json.loads(row["figures"])["rows_merged"] == 500 and PASSWORD not in row["preview"]


def test_an_unreachable_lake_is_one_clear_line_at_preview(env, lake_store):  # noqa: F811
    from dashboard.actions import TargetUnavailable

    gone = not_answering(lake_store)
    for action in (PurgeRawData(gone), CompactStore(gone)):
        with pytest.raises(TargetUnavailable, match="(?i)the lake DuckLake .* is not answering: .*connection refused") as caught:
            make_preview(action, {"days": 1} if isinstance(action, PurgeRawData) else {}, actor=OPERATOR)
        assert PASSWORD not in str(caught.value)


def test_the_actions_page_runs_the_compaction_on_the_lake(lake, env):
    use(env, lake)
    env.setenv("PERFDECK_OPERATOR_PASSWORD_HASH", hash_password(OPERATOR_PASSWORD))
    at = AppTest.from_file(str(PAGES / "actions.py"), default_timeout=90)
    assert log_in(at.session_state, operator_config(), "test-client", OPERATOR_PASSWORD).ok
    at.run()
    assert SESSION_KEY in at.session_state
    at.segmented_control(key="area").set_value("perfdeck store").run()
    at.selectbox(key="action").set_value("store.compact").run()
    assert not at.exception, at.exception
    next(b for b in at.button if b.key == "action-store.compact:preview").click().run()
    preview = next(m.value for m in at.markdown if m.value.startswith(":material/preview:"))
    assert "Parquet files" in preview and PASSWORD not in preview
    next(b for b in at.button if b.key == "action-store.compact:run").click().run()
    assert not at.exception, at.exception
    assert at.success[0].value.startswith("Merged 0 rollup rows; the lake")
    log = at.dataframe[-1].value
    assert log["action"].tolist()[:1] == ["store.compact"] and log["outcome"].tolist()[:1] == ["done"]
    assert PASSWORD not in everything_shown(at)


# -- a read while a writer holds the lake -------------------------------------------------------------
def test_a_page_read_while_a_writer_holds_the_lake_is_not_busy(lake, env):
    """A writer holds the lake's exclusive lock with a transaction open: the page reads the last committed
    snapshot at once, shows its figures, and neither waits nor says the store is busy."""
    use(env, lake)
    now = utcnow()
    expected = render("overview.py", now)
    holding, release = threading.Event(), threading.Event()
    failed: list[BaseException] = []

    def writer() -> None:
        try:
            with write(lake, timeout=10) as con:
                con.execute("DELETE FROM request_rollup")          # not committed while the page reads
                holding.set()
                release.wait(60)
        except BaseException as exc:       # noqa: BLE001 - reported below
            failed.append(exc)
            holding.set()

    thread = threading.Thread(target=writer)
    thread.start()
    try:
        assert holding.wait(30) and not failed, failed
        use(env, lake)
        at = render("overview.py", now)
        shown = everything_shown(at)
        assert "busy" not in shown and "No data yet" not in shown
        assert figures(at)["metrics"] == figures(expected)["metrics"]
    finally:
        release.set()
        thread.join(30)
    assert not failed, failed
    with read(lake) as con:     # the writer did commit afterwards: the snapshot was the page's, not a block
        assert con.execute("SELECT count(*) FROM request_rollup").fetchone()[0] == 0


def test_an_unreachable_lake_is_said_on_the_page_without_its_password(env, lake_store):  # noqa: F811
    gone = not_answering(lake_store)
    use(env, gone)
    at = render("overview.py", utcnow())
    said = [shown_text(e.value) for e in (*at.error, *at.warning) if "not answering" in e.value]
    assert said and said[0].startswith("The lake DuckLake ") and "connection refused" in said[0].lower(), said
    assert said[0].endswith("This view tries again on the next refresh (or reload the page).")
    assert PASSWORD not in everything_shown(at)
    assert db_path(gone.spec) == gone


def test_the_cost_page_asks_to_reprice_the_lake_without_showing_its_password(env, lake_store, tmp_path):  # noqa: F811
    from tests.seed_cost import call, seed_cost

    lake = with_password(lake_store)
    now = utcnow()
    seed_cost(lake, calls=[call(now - timedelta(minutes=i + 1), "gpt-4o", cost=None, request_id=f"r{i}")
                           for i in range(3)])
    use(env, lake)
    at = render("cost.py", now + timedelta(minutes=1))
    [warning] = at.warning
    assert "3 calls (3,300 tokens) have no price" in warning.value
    command = shown_text(warning.value).split("```")[1].strip()
    assert command == cli_command(lake, "reprice --since 30d")
    assert "--db 'ducklake:postgres:" in command and "password=***" in command and PASSWORD not in command


def test_a_lake_no_collector_has_written_yet_says_so(env, lake_store):  # noqa: F811
    lake = with_password(lake_store)
    use(env, lake)
    at = render("overview.py", utcnow())
    said = [e.value for e in at.info]
    assert said and said[0].startswith("**No data yet.** The lake DuckLake ") and "has not been initialised" in said[0]
    assert PASSWORD not in everything_shown(at) and not at.error


def test_compare_on_a_lake_that_does_not_answer_is_one_line_and_exit_2(env, lake_store):  # noqa: F811
    from click.testing import CliRunner

    from collectors.cli.compare import compare

    gone = not_answering(lake_store)
    result = CliRunner().invoke(compare, ["--before", "-2h..-1h", "--after", "-1h..now", "--db", gone.spec])
    assert result.exit_code == 2, result.output
    assert "is not answering" in result.output and PASSWORD not in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1
    env.delenv("PERFDECK_LAKE_DATA_PATH")          # a lake that cannot be opened as configured
    result = CliRunner().invoke(compare, ["--before", "-2h..-1h", "--after", "-1h..now", "--db", lake_store.spec])
    assert result.exit_code == 2, result.output
    assert "needs a data path" in result.output and "Traceback" not in result.output


def test_dashboard_and_advise_on_a_lake_without_its_data_path_are_one_line(env, lake_store, tmp_path):  # noqa: F811
    import sqlite3

    from click.testing import CliRunner

    from collectors.cli import advise
    from collectors.cli.dashboard import dashboard

    env.delenv("PERFDECK_LAKE_DATA_PATH")
    spec = with_password(lake_store).spec
    app = tmp_path / "app.sqlite"
    with sqlite3.connect(app) as con:
        con.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    for command, args in ((dashboard, ["--db", spec, "--port", "1"]),
                          (advise, ["--db", f"sqlite:///{app}", "--store", spec])):
        result = CliRunner().invoke(command, args)
        assert result.exit_code == 1 and "needs a data path" in result.output, result.output
        assert "Traceback" not in result.output and PASSWORD not in result.output
