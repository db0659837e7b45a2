"""A throwaway PostgreSQL cluster for tests: initdb in a temp dir, started on a free port of
127.0.0.1 with trust auth, torn down (stop -m immediate, rm -rf) at the end of the session.

    from tests.pg import pg_cluster          # pytest picks the fixture up from the import

    def test_something(pg_cluster):
        engine = sqlalchemy.create_engine(pg_cluster.url)
        pg_cluster.stop(); pg_cluster.start()   # for down/up tests

`pg_cluster` preloads pg_stat_statements, and pg_qualstats when it is installed (every predicate
sampled), and has hypopg available to CREATE EXTENSION;
`pg_cluster_no_pgss` runs without shared_preload_libraries, for the "not enabled" paths. Both create
the database `perfdeck_test` and run `CREATE EXTENSION pg_stat_statements` in it (on the second one
the extension exists but its view raises, as on a server where the library was never preloaded).

PostgreSQL refuses to run as root: as root the commands run through `runuser -u postgres --` and the
data directory is chowned to that user. Binaries come from $PG_BIN, else the newest
/usr/lib/postgresql/*/bin, else $PATH. The cluster skips fsync, so it starts in about a second."""
from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

DBNAME = "perfdeck_test"


def pg_bin() -> Path | None:
    """The directory of initdb/pg_ctl/pgbench, or None when PostgreSQL is not installed."""
    if os.environ.get("PG_BIN"):
        return Path(os.environ["PG_BIN"])
    dirs = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=lambda d: int(Path(d).parent.name)
                  if Path(d).parent.name.isdigit() else 0)
    if dirs:
        return Path(dirs[-1])
    found = shutil.which("initdb")
    return Path(found).parent if found else None


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class PgCluster:
    """One PostgreSQL cluster in a temp dir; `url` points at its `perfdeck_test` database."""

    def __init__(self, *, preload: bool = True, bindir: Path | None = None):
        self.bindir = bindir or pg_bin()
        if self.bindir is None or not (self.bindir / "initdb").exists():
            raise RuntimeError("PostgreSQL binaries not found (set PG_BIN)")
        self.preload = preload
        self.port = _free_port()
        self.base = Path(tempfile.mkdtemp(prefix="perfdeck-pg-"))
        self.datadir, self.logfile = self.base / "data", self.base / "server.log"
        self.running = False
        self._as_root = os.geteuid() == 0
        if self._as_root:
            pw = pwd.getpwnam("postgres")
            os.chown(self.base, pw.pw_uid, pw.pw_gid)

    @property
    def dsn(self) -> str:
        return f"host=127.0.0.1 port={self.port} user=postgres dbname={DBNAME}"

    @property
    def url(self) -> str:
        return self.url_for(DBNAME)

    def url_for(self, dbname: str) -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{dbname}"

    def has_library(self, name: str) -> bool:
        """Is the extension's shared library installed beside this server's binaries (Debian's layout:
        /usr/lib/postgresql/15/lib, filled by e.g. postgresql-15-pg-qualstats)?"""
        return (self.bindir.parent / "lib" / f"{name}.so").exists()

    # -- processes -------------------------------------------------------------------------------
    def _run(self, *args: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = [str(self.bindir / args[0]), *args[1:]]
        if self._as_root:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
        if check and proc.returncode != 0:
            log = self.logfile.read_text(errors="replace")[-2000:] if self.logfile.exists() else ""
            raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}): {proc.stderr}{proc.stdout}\n{log}")
        return proc

    def init(self) -> PgCluster:
        self._run("initdb", "-D", str(self.datadir), "-U", "postgres", "-A", "trust", "-E", "UTF8",
                  "--no-sync", "--no-instructions")
        conf = [
            "listen_addresses = '127.0.0.1'",
            f"port = {self.port}",
            f"unix_socket_directories = '{self.base}'",
            "fsync = off", "synchronous_commit = off", "full_page_writes = off",
            "max_connections = 40", "shared_buffers = 32MB",
            "track_io_timing = on",
        ]
        if self.preload:
            libraries = ["pg_stat_statements"] + (["pg_qualstats"] if self.has_library("pg_qualstats") else [])
            conf += [f"shared_preload_libraries = '{', '.join(libraries)}'", "pg_stat_statements.track = top",
                     "pg_qualstats.sample_rate = 1"]
        with open(self.datadir / "postgresql.conf", "a") as f:
            f.write("\n# tests/pg.py\n" + "\n".join(conf) + "\n")
        self.start()
        self.create_database(DBNAME)
        self.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        return self

    def start(self) -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-l", str(self.logfile), "-w", "-t", "30", "start")
        self.running = True

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.datadir), "-m", mode, "-w", "stop", check=False)
        self.running = False

    def destroy(self) -> None:
        if self.datadir.exists():
            self._run("pg_ctl", "-D", str(self.datadir), "-m", "immediate", "-w", "stop", check=False)
        self.running = False
        shutil.rmtree(self.base, ignore_errors=True)

    # -- SQL -------------------------------------------------------------------------------------
    def connect(self, dbname: str = DBNAME):
        """An autocommit psycopg connection (import deferred so collection works without psycopg)."""
        import psycopg
        return psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname={dbname}",
                               autocommit=True, connect_timeout=5)

    def execute(self, sql: str, params=None, *, dbname: str = DBNAME) -> list[tuple]:
        with self.connect(dbname) as con:
            cur = con.execute(sql, params)
            return cur.fetchall() if cur.description else []

    def create_database(self, name: str) -> str:
        from psycopg import sql
        with self.connect("postgres") as con:
            con.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return self.url_for(name)

    def database_with_statements(self, name: str) -> str:
        """A new database with pg_stat_statements created in it; its name."""
        self.create_database(name)
        self.execute("CREATE EXTENSION pg_stat_statements", dbname=name)
        return name

    def pgbench(self, *args: str, dbname: str = DBNAME, timeout: float = 120) -> str:
        """Run pgbench against the cluster (e.g. `pgbench("-i", "-s", "2")`); returns its output."""
        proc = self._run("pgbench", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", *args, dbname,
                         timeout=timeout)
        return proc.stdout + proc.stderr


def _cluster(preload: bool):
    if pg_bin() is None:
        pytest.skip("PostgreSQL binaries not installed")
    cluster = PgCluster(preload=preload)
    try:
        cluster.init()
        yield cluster
    finally:
        cluster.destroy()


@pytest.fixture(scope="session")
def pg_cluster():
    """A PostgreSQL cluster with pg_stat_statements preloaded and created in `perfdeck_test`."""
    yield from _cluster(preload=True)


@pytest.fixture(scope="session")
def pg_cluster_no_pgss():
    """A PostgreSQL cluster without shared_preload_libraries (pg_stat_statements created but unusable)."""
    yield from _cluster(preload=False)


@pytest.fixture
def lake_store(pg_cluster, tmp_path, monkeypatch):
    """A new, empty DuckLake store: its catalog a fresh database of the session's cluster, its data a temp
    folder (PERFDECK_LAKE_DATA_PATH is set, for subprocesses too). The process's attached lakes and catalog
    sessions are closed afterwards."""
    import uuid

    from collectors.store import lake

    name = f"lake_{uuid.uuid4().hex[:10]}"
    pg_cluster.create_database(name)
    data = tmp_path / "lake-data"
    data.mkdir()
    monkeypatch.setenv(lake.DATA_PATH_ENV, str(data))
    store = lake.parse(f"ducklake:postgres:host=127.0.0.1 port={pg_cluster.port} user=postgres dbname={name}")
    try:
        yield store
    finally:
        lake.close_all()
