"""How `perfdeck dashboard` starts: where it listens, who it refuses, and the Streamlit settings it
brings along, checked on real servers (a checkout, and a wheel installed into a fresh venv)."""
from __future__ import annotations

import base64
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import zipfile
from importlib.metadata import version
from pathlib import Path

import psutil
import pytest

from tests.helpers import wait_for

ROOT = Path(__file__).resolve().parent.parent
PERFDECK = Path(sys.executable).parent / "perfdeck"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _clean_env(**extra) -> dict:
    """Our environment without Streamlit, operator or viewer settings of the machine running the tests."""
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("STREAMLIT_", "PERFDECK_OPERATOR", "PERFDECK_VIEWER"))}
    return env | extra


def _listening(pid: int, port: int) -> set[str]:
    """The addresses the process tree of `pid` listens on at `port`."""
    procs = [psutil.Process(pid), *psutil.Process(pid).children(recursive=True)]
    return {c.laddr.ip for p in procs for c in p.net_connections(kind="inet")
            if c.status == psutil.CONN_LISTEN and c.laddr.port == port}


def _get(port: int, path: str) -> str | None:
    import urllib.request
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as r:
            return r.read().decode()
    except OSError:
        return None


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _serve(cmd: list[str], cwd: Path, env: dict, port: int):
    """Start the dashboard and wait until its health endpoint answers (or it exits)."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    up = wait_for(lambda: proc.poll() is not None or _get(port, "/_stcore/health") == "ok", timeout=90, interval=0.2)
    if proc.poll() is not None or not up:
        _stop(proc)
        out, err = proc.communicate()
        pytest.fail(f"the dashboard did not start (code {proc.returncode}):\n{out}\n{err}")
    return proc


def _session_config(port: int, host: str = "127.0.0.1") -> dict:
    """What the browser is told when a page opens: the NewSession message on Streamlit's websocket."""
    from streamlit.proto.BackMsg_pb2 import BackMsg
    from streamlit.proto.ForwardMsg_pb2 import ForwardMsg
    from streamlit.proto.NewSession_pb2 import Config
    from websockets.sync.client import connect

    with connect(f"ws://{host}:{port}/_stcore/stream", subprotocols=["streamlit"], open_timeout=30) as ws:
        back = BackMsg()
        back.rerun_script.query_string = ""
        ws.send(back.SerializeToString())
        while True:
            msg = ForwardMsg()
            msg.ParseFromString(ws.recv(timeout=60))
            if msg.WhichOneof("type") == "new_session":
                config, theme = msg.new_session.config, msg.new_session.custom_theme
                return {"gather_usage_stats": config.gather_usage_stats,
                        "toolbar_mode": Config.ToolbarMode.Name(config.toolbar_mode),
                        "primary_color": theme.primary_color, "base": theme.base}


def _upgrade_status(port: int, host: str) -> str:
    """The status line of a websocket handshake sent with this Host header (a DNS-rebinding page's)."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}\r\nOrigin: http://{host}\r\n"
                   f"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   "Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: streamlit\r\n\r\n").encode())
        return s.recv(200).split(b"\r\n")[0].decode()


# -- the settings ---------------------------------------------------------------------------------------

def test_checkout_config_is_the_packaged_settings():
    from collectors.cli.dashboard import SETTINGS_FILE, streamlit_settings

    # `streamlit run dashboard/app.py` in a checkout reads .streamlit/config.toml; perfdeck passes the packaged file
    assert (ROOT / ".streamlit" / "config.toml").read_bytes() == SETTINGS_FILE.read_bytes()
    settings = streamlit_settings()
    assert settings["browser.gatherUsageStats"] is False and settings["client.toolbarMode"] == "minimal"
    assert settings["server.address"] == "127.0.0.1" and settings["server.headless"] is True


def test_streamlit_env_var_names():
    from collectors.cli.dashboard import env_var

    assert env_var("server.enableCORS") == "STREAMLIT_SERVER_ENABLE_CORS"
    assert env_var("browser.gatherUsageStats") == "STREAMLIT_BROWSER_GATHER_USAGE_STATS"
    assert env_var("theme.secondaryBackgroundColor") == "STREAMLIT_THEME_SECONDARY_BACKGROUND_COLOR"


@pytest.mark.parametrize("address, local", [
    ("127.0.0.1", True), ("127.0.0.2", True), ("localhost", True), ("::1", True), ("[::1]", True),
    ("unix:///run/perfdeck.sock", True), ("0.0.0.0", False), ("::", False), ("", False), ("10.0.0.5", False),
    ("dash.example.com", False)])
def test_is_loopback(address, local):
    from collectors.cli.dashboard import is_loopback

    assert is_loopback(address) is local


def test_the_users_flags_and_environment_win():
    from collectors.cli.dashboard import dashboard_command

    cmd = dashboard_command(8600, ["--theme.base", "dark", "--client.toolbarMode=viewer"],
                            env={"STREAMLIT_BROWSER_GATHER_USAGE_STATS": "true"})
    flags = cmd[cmd.index("run") + 2:]
    assert cmd[cmd.index("run") + 1] == str(ROOT / "dashboard" / "app.py")
    assert flags[-3:] == ["--theme.base", "dark", "--client.toolbarMode=viewer"]          # theirs, last
    assert "--browser.gatherUsageStats" not in flags and flags.count("--theme.base") == 1
    assert "--client.toolbarMode" not in flags
    assert flags[flags.index("--server.port") + 1] == "8600"
    assert flags[flags.index("--server.address") + 1] == "127.0.0.1"


# -- where it listens, and who it refuses ------------------------------------------------------------

def test_plain_dashboard_listens_on_loopback_only(tmp_path):
    port = _free_port()
    proc = _serve([str(PERFDECK), "dashboard", "--port", str(port), "--db", str(tmp_path / "p.duckdb")],
                  tmp_path, _clean_env(), port)
    try:
        assert _listening(proc.pid, port) == {"127.0.0.1"}
        assert _upgrade_status(port, f"localhost:{port}").startswith("HTTP/1.1 101")
        assert _upgrade_status(port, f"rebound.example:{port}").startswith("HTTP/1.1 403")
    finally:
        _stop(proc)


def _run_refused(cmd: list[str], cwd: Path, env: dict) -> tuple[int, str]:
    """(exit code, stderr) of a command that should refuse at once; one that starts a server instead
    is stopped with its children (a demo's dashboard and worker) and fails the test."""
    proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    try:
        _out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        pytest.fail("it started serving other machines with no viewer login")
    return proc.returncode, err


@pytest.mark.parametrize("how", ["--address", "env", "streamlit flag"])
def test_other_machines_are_refused_without_viewer_login(tmp_path, how):
    port = _free_port()
    cmd, env = [str(PERFDECK), "dashboard", "--port", str(port), "--db", str(tmp_path / "p.duckdb")], _clean_env()
    if how == "--address":
        cmd += ["--address", "0.0.0.0"]
    elif how == "env":
        env["STREAMLIT_SERVER_ADDRESS"] = "0.0.0.0"
    else:
        cmd += ["--", "--server.address", "0.0.0.0"]
    returncode, err = _run_refused(cmd, tmp_path, env)
    assert returncode != 0
    assert "refusing to serve the dashboard on all interfaces with no viewer login" in err
    assert "PERFDECK_VIEWER_PASSWORD_HASH" in err and "--no-auth" in err


def test_no_auth_serves_other_machines_and_warns(tmp_path):
    port = _free_port()
    proc = _serve([str(PERFDECK), "dashboard", "--address", "0.0.0.0", "--no-auth", "--port", str(port),
                   "--db", str(tmp_path / "p.duckdb")], tmp_path, _clean_env(), port)
    try:
        assert _listening(proc.pid, port) == {"0.0.0.0"}
        # served to names we cannot know: any Host, the login being the gate
        assert _upgrade_status(port, f"dash.example:{port}").startswith("HTTP/1.1 101")
    finally:
        _stop(proc)
    err = proc.stderr.read()
    assert "WARNING: serving the dashboard on all interfaces with no viewer login (--no-auth)" in err
    assert "External URL" not in proc.stdout.read()       # no lookup of this machine's public IP


def test_demo_refuses_other_machines_without_viewer_login(tmp_path):
    env = _clean_env(STREAMLIT_SERVER_ADDRESS="0.0.0.0")
    cmd = [str(PERFDECK), "demo", "--data-dir", str(tmp_path / "demo"), "--port", str(_free_port())]
    returncode, err = _run_refused(cmd, tmp_path, env)
    assert returncode != 0 and "refusing to serve the dashboard on all interfaces" in err
    assert not (tmp_path / "demo").exists()              # refused before any backfill


# -- the wheel ----------------------------------------------------------------------------------------

def _build_wheel(out: Path, src: Path) -> Path:
    """Build perfdeck's wheel from a copy of the working tree (a build in place leaves build/ behind,
    whose stale files later builds would ship). Offline when this venv's setuptools builds wheels by
    itself (>= 70.1, or the `wheel` package present); else pip fetches the build backend from PyPI."""
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(
        ".venv", ".venv-*", ".git", "data", "build", "*.egg-info", "__pycache__", ".pytest_cache", ".ruff_cache"))
    try:
        major, minor = (int(x) for x in re.findall(r"\d+", version("setuptools"))[:2])
        offline = (major, minor) >= (70, 1) or shutil.which("wheel", path=str(Path(sys.executable).parent)) is not None
    except Exception:
        offline = False
    cmd = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(out), str(src)]
    subprocess.run(cmd + (["--no-build-isolation"] if offline else []), check=True, timeout=600)
    [wheel] = out.glob("perfdeck-*.whl")
    return wheel


def _venv_with(wheel: Path, venv: Path) -> Path:
    """A fresh venv with perfdeck from `wheel`; its dependencies are this venv's, appended to its path
    (a plain path line: this venv's own .pth files, among them the editable checkout, are not run)."""
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=300)
    python = venv / "bin" / "python"
    site = subprocess.run([str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                          check=True, capture_output=True, text=True).stdout.strip()
    ours = dict.fromkeys([sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"]])
    (Path(site) / "_perfdeck_test_deps.pth").write_text("\n".join(ours) + "\n")
    subprocess.run([str(python), "-m", "pip", "install", "-q", "--no-deps", "--no-index", str(wheel)],
                   check=True, timeout=300)
    return venv


def test_wheel_install_serves_the_same_settings_on_loopback(tmp_path):
    """Slow (a wheel build, a venv and a server: about half a minute): pip install perfdeck, then
    `perfdeck dashboard` from an unrelated folder, as a new user would."""
    wheel = _build_wheel(tmp_path / "dist", tmp_path / "src")
    names = set(zipfile.ZipFile(wheel).namelist())
    for needed in ("dashboard/app.py", "dashboard/streamlit.toml", "dashboard/app_pages/overview.py",
                   "dashboard/app_pages/actions.py", "collectors/health/thresholds.toml",
                   "collectors/demo/thresholds.toml"):
        assert needed in names, needed
    venv = _venv_with(wheel, tmp_path / "venv")
    where = subprocess.run([str(venv / "bin" / "python"), "-c", "import collectors, dashboard; "
                            "print(collectors.__file__); print(dashboard.__file__)"],
                           cwd=tmp_path, check=True, capture_output=True, text=True).stdout.split()
    assert all(Path(p).is_relative_to(venv) for p in where), where

    elsewhere = tmp_path / "elsewhere"      # no .streamlit/ here: only what perfdeck brings applies
    elsewhere.mkdir()
    port = _free_port()
    proc = _serve([str(venv / "bin" / "perfdeck"), "dashboard", "--port", str(port)], elsewhere, _clean_env(), port)
    try:
        assert _listening(proc.pid, port) == {"127.0.0.1"}
        assert Path(psutil.Process(proc.pid).cmdline()[4]).is_relative_to(venv)    # .../dashboard/app.py
        assert _session_config(port) == {"gather_usage_stats": False, "toolbar_mode": "MINIMAL",
                                         "primary_color": "#2E86AB", "base": 0}     # 0: light
        assert '"allowedOrigins":[""]' in _get(port, "/_stcore/host-config")        # no parent frame drives it
        assert _upgrade_status(port, f"rebound.example:{port}").startswith("HTTP/1.1 403")
    finally:
        _stop(proc)
    assert not any(elsewhere.iterdir())


def test_only_the_dashboard_keeps_its_read_connection_warm(tmp_path, monkeypatch):
    """`perfdeck dashboard` keeps reads warm; every other process opens and closes per read, so none
    has a watcher thread closing DuckDB connections as it exits (which can abort it)."""
    from collectors.cli.dashboard import dashboard_env
    from collectors.store import connection

    monkeypatch.delenv("PERFDECK_READ_KEEP_S", raising=False)
    assert connection._keep_s() == 0
    assert dashboard_env(tmp_path / "perfdeck.duckdb")["PERFDECK_READ_KEEP_S"] == str(connection.DASHBOARD_READ_KEEP_S)
    monkeypatch.setenv("PERFDECK_READ_KEEP_S", "5")          # the user's setting wins
    assert dashboard_env(tmp_path / "perfdeck.duckdb")["PERFDECK_READ_KEEP_S"] == "5"
