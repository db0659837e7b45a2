"""Every dashboard query is bounded (time, memory, rows), and read connections are reused between
reads without ever keeping a writer out or showing stale data."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from seed_store import seed_store

from collectors.store import connection, read, write
from dashboard.queries._run import QueryTooBig, QueryTooSlow, run_query

ROOT = Path(__file__).resolve().parent.parent
PAGE = str(ROOT / "dashboard" / "app_pages" / "overview.py")
# Never finishes on any machine: a billion by a billion rows, nothing it can skip.
SLOW_SQL = """
SELECT count(*)
FROM range(1000000000) AS a(i), range(1000000000) AS b(j)
WHERE (a.i * b.j) % 7 = 3
"""
# Hashes twenty million distinct strings: far more than 32 MiB.
BIG_SQL = "SELECT count(DISTINCT i::VARCHAR || 'padding-padding') FROM range(20000000) AS t(i)"


@pytest.fixture
def small_store(migrated_store, monkeypatch):
    # Reads kept warm as the dashboard keeps them (`perfdeck dashboard` sets this; other processes do not).
    monkeypatch.setenv("PERFDECK_READ_KEEP_S", str(connection.DASHBOARD_READ_KEEP_S))
    with write(migrated_store) as con:
        con.execute("INSERT INTO deploys (ts, service, version, host) VALUES (now()::TIMESTAMP, 'api', 'v1', 'h')")
    yield migrated_store
    connection.close_reads()


def deploy_count(path) -> int:
    return int(run_query("SELECT count(*) AS n FROM deploys", db=path)[0]["n"].iloc[0])


def shared(path) -> bool:
    return str(Path(path).absolute()) in connection._reads.shared


def test_a_query_past_its_time_limit_raises_too_slow_and_the_connection_still_answers(small_store):
    with read(small_store) as con:
        with pytest.raises(QueryTooSlow, match="limit"):
            run_query(SLOW_SQL, con=con, timeout=0.2)
        assert run_query("SELECT 42 AS answer", con=con)[0]["answer"].tolist() == [42]


def test_the_time_limit_comes_from_the_environment(small_store, monkeypatch):
    monkeypatch.setenv("PERFDECK_QUERY_TIMEOUT_S", "0.2")
    with pytest.raises(QueryTooSlow, match="0.2 s"):
        run_query(SLOW_SQL, db=small_store)


def test_a_query_past_the_memory_limit_raises_too_big(small_store, monkeypatch):
    connection.close_reads()            # the limit is set when a connection opens
    monkeypatch.setenv("PERFDECK_READ_MEMORY_LIMIT", "32MiB")
    with pytest.raises(QueryTooBig, match="memory"):
        run_query(BIG_SQL, db=small_store)


@pytest.mark.parametrize("write_wanted", [False, True])
def test_read_connections_carry_the_memory_limit_and_threads(small_store, monkeypatch, write_wanted):
    connection.close_reads()
    monkeypatch.setenv("PERFDECK_READ_MEMORY_LIMIT", "256MiB")
    monkeypatch.setenv("PERFDECK_READ_THREADS", "1")
    if write_wanted:                    # a connection of its own, not the shared one: limited all the same
        monkeypatch.setattr(connection, "WRITER_GRACE_S", 0.1)   # how long a read lets an announced writer go first
        connection._announce(Path(small_store))
    with read(small_store) as con:
        got = con.execute("SELECT current_setting('memory_limit'), current_setting('threads')").fetchone()
    assert got == ("256.0 MiB", 1)
    assert shared(small_store) is not write_wanted


def test_results_stop_at_max_rows_and_say_so(small_store):
    df, truncated = run_query("SELECT i FROM range(100000000) AS t(i)", db=small_store, max_rows=5000)
    assert truncated and df.attrs["truncated"]
    assert df["i"].tolist() == list(range(5000))


def test_a_reused_read_connection_sees_what_was_written_since(small_store):
    assert deploy_count(small_store) == 1
    assert shared(small_store)          # kept open for the next read
    with read(small_store) as first, read(small_store) as second:
        assert first is not second      # a cursor each
    with write(small_store) as con:     # this process's writer closes the shared connection first
        con.execute("INSERT INTO deploys (ts, service, version, host) VALUES (now()::TIMESTAMP, 'api', 'v2', 'h')")
    assert not shared(small_store)
    assert deploy_count(small_store) == 2


def test_a_writer_in_another_process_gets_the_file_from_an_idle_reader(small_store, monkeypatch):
    monkeypatch.setenv("PERFDECK_READ_KEEP_S", "600")     # idle for longer than the writer would wait
    assert deploy_count(small_store) == 1
    assert shared(small_store)
    script = (
        "import sys; from collectors.store import write\n"
        "with write(sys.argv[1], timeout=20) as con:\n"
        "    con.execute(\"INSERT INTO deploys (ts, service, version, host) "
        "VALUES (now()::TIMESTAMP, 'api', 'v3', 'h')\")\n"
    )
    done = subprocess.run([sys.executable, "-c", script, str(small_store)], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert deploy_count(small_store) == 2
    assert not connection._intent_file(Path(small_store)).exists()


def test_a_write_inside_a_read_on_the_same_thread_fails_at_once(small_store):
    with read(small_store), pytest.raises(RuntimeError, match="inside a read"):
        with write(small_store):
            pass


def test_reuse_can_be_turned_off(small_store, monkeypatch):
    connection.close_reads()
    monkeypatch.setenv("PERFDECK_READ_KEEP_S", "0")
    assert deploy_count(small_store) == 1
    assert not shared(small_store)


@pytest.mark.slow
def test_a_page_whose_query_is_too_slow_shows_the_narrow_the_range_panel(tmp_path, monkeypatch):
    from streamlit.testing.v1 import AppTest

    import dashboard.queries as q
    path = tmp_path / "perfdeck.duckdb"
    seed_store(path, days=1)
    monkeypatch.setenv("PERFDECK_DB", str(path))
    monkeypatch.setenv("PERFDECK_QUERY_TIMEOUT_S", "0.5")

    def latency_over_time(con, **_):
        return run_query(SLOW_SQL, con=con)[0]

    monkeypatch.setattr(q, "latency_over_time", latency_over_time)
    try:
        at = AppTest.from_file(PAGE, default_timeout=60)
        at.run()
        assert not at.exception, at.exception
        warnings = [w.value for w in at.warning]
        assert any(w.startswith("**Too slow — narrow the range.**") and "0.5 s" in w for w in warnings), warnings
        assert any("p95_ms" in d.value.columns for d in at.dataframe)   # the rest of the page is there
    finally:
        connection.close_reads()
