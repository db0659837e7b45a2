"""`perfdeck dashboard`: serve the Streamlit app with perfdeck's own settings, wherever it is installed.

Settings: Streamlit reads `.streamlit/config.toml` from the current folder, which for an installed wheel
is wherever the user happens to be. So the launcher reads the packaged `dashboard/streamlit.toml` and
passes each option as a `--section.option` flag, except those the user set with a STREAMLIT_* variable
or a flag after `--`: Streamlit ranks flags above the environment, so ours would otherwise hide theirs.

Who may connect: loopback unless told otherwise. An address other machines can reach needs viewer
login (dashboard.actions.access.viewer_auth_configured) or an explicit --no-auth, which warns."""
from __future__ import annotations

import ipaddress
import os
import re
import sys
import tomllib
from collections.abc import Mapping
from pathlib import Path

import click

from collectors.cli.options import CONTEXT, db_option

DASHBOARD_DIR = Path(__file__).resolve().parents[2] / "dashboard"   # beside collectors/, checkout or wheel
APP = DASHBOARD_DIR / "app.py"
SETTINGS_FILE = DASHBOARD_DIR / "streamlit.toml"
WILDCARDS = ("0.0.0.0", "::")

__all__ = ["dashboard", "dashboard_command", "dashboard_env", "exposure", "is_loopback", "streamlit_settings",
           "viewer_auth_configured"]


def streamlit_settings(path: Path = SETTINGS_FILE) -> dict[str, object]:
    """The packaged settings as {"server.headless": True, "theme.primaryColor": "#2E86AB", ...}."""
    with open(path, "rb") as f:
        doc = tomllib.load(f)
    return {f"{section}.{name}": value for section, options in doc.items() for name, value in options.items()}


def env_var(key: str) -> str:
    """Streamlit's environment variable of an option: server.enableCORS -> STREAMLIT_SERVER_ENABLE_CORS."""
    name = key.replace(".", "_")
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", name)          # as streamlit.string_util.to_snake_case
    return "STREAMLIT_" + re.sub(r"([a-z0-9])([A-Z])", r"\1_\2", name).upper()


def _flag_value(args: tuple | list, key: str) -> str | None:
    """The last value the user gave `--key` in `args` (`--key v` or `--key=v`), None when absent."""
    value = None
    for i, arg in enumerate(args):
        if arg == f"--{key}" and i + 1 < len(args):
            value = args[i + 1]
        elif arg.startswith(f"--{key}="):
            value = arg.split("=", 1)[1]
    return value


def _user_sets(key: str, extra, env: Mapping[str, str]) -> bool:
    return bool(env.get(env_var(key), "").strip()) or _flag_value(extra, key) is not None


def is_loopback(address: str) -> bool:
    """Only this machine can connect: a loopback address, localhost, or a Unix socket."""
    address = address.strip()
    if address.lower() == "localhost" or address.startswith("unix://"):
        return True
    try:
        return ipaddress.ip_address(address.strip("[]")).is_loopback
    except ValueError:          # a host name, or "" (all interfaces)
        return False


def resolve_address(address: str | None, extra=(), env: Mapping[str, str] | None = None) -> str:
    """Where Streamlit will listen: a flag after `--`, else --address, else $STREAMLIT_SERVER_ADDRESS,
    else the packaged loopback default."""
    env = os.environ if env is None else env
    return (_flag_value(extra, "server.address") or address or env.get("STREAMLIT_SERVER_ADDRESS", "").strip()
            or str(streamlit_settings()["server.address"]))


def viewer_auth_configured() -> bool:
    """Whether viewers must log in (a viewer password hash or an OIDC [auth] section). Imported lazily:
    the dashboard side owns the answer; until it provides one, nobody is asked to log in."""
    try:
        from dashboard.actions.access import viewer_auth_configured as configured
    except (ImportError, AttributeError):
        return False
    return bool(configured())


def exposure(address: str, no_auth: bool) -> str | None:
    """None when serving `address` is fine as it is; a warning when only --no-auth allows it. Raises
    ClickException when other machines could connect with nobody asked to log in."""
    if is_loopback(address) or viewer_auth_configured():
        return None
    where = "all interfaces" if address in WILDCARDS or not address else address
    if no_auth:
        return (f"WARNING: serving the dashboard on {where} with no viewer login (--no-auth): anyone who can "
                "reach this port sees every page. Put it behind a proxy that authenticates.")
    raise click.ClickException(
        f"refusing to serve the dashboard on {where} with no viewer login: anyone who can reach the port "
        "would see every page. Set PERFDECK_VIEWER_PASSWORD_HASH (make one with `perfdeck operator-hash`) or an "
        "[auth] section in .streamlit/secrets.toml, or pass --no-auth if a proxy in front authenticates.")


def dashboard_command(port: int | None, extra=(), *, address: str | None = None,
                      env: Mapping[str, str] | None = None) -> list[str]:
    """argv that serves the dashboard with the packaged settings, from any folder."""
    env = os.environ if env is None else env
    extra = list(extra)
    settings = streamlit_settings()
    address = resolve_address(address, extra, env)
    settings["server.address"] = address
    host = address.strip("[]")
    if is_loopback(address) and not address.startswith("unix://") and host not in settings["server.allowedHosts"]:
        settings["server.allowedHosts"] = [*settings["server.allowedHosts"], host]    # e.g. 127.0.0.2
    elif not is_loopback(address):
        # Other machines reach it by names we cannot know; the viewer login is the gate there.
        settings["server.allowedHosts"] = ["*"]
        if address in WILDCARDS or not address:
            # Streamlit's banner would ask an outside service for this machine's public IP.
            settings["logger.hideWelcomeMessage"] = True
    cmd = [sys.executable, "-m", "streamlit", "run", str(APP)]
    if port:
        cmd += ["--server.port", str(port)]
    for key, value in settings.items():
        if key != "server.address" and _user_sets(key, extra, env):
            continue
        # An empty list cannot be a flag; "" is an origin no browser sends, so it allows none.
        for item in (value or [""]) if isinstance(value, list) else [value]:
            cmd += [f"--{key}", str(item).lower() if isinstance(item, bool) else str(item)]
    return cmd + extra


def dashboard_env(db: str | os.PathLike | None) -> dict:
    """The dashboard's environment: the store, the spool (where actions broadcast to app processes) and
    perfdeck.toml (the targets actions may touch) as absolute paths."""
    from collectors import config
    from collectors.store import db_path
    from collectors.store.connection import DASHBOARD_READ_KEEP_S, store_spec

    try:
        spool = config.transport(config.load()).spool
    except ValueError:      # a broken perfdeck.toml: the page says so; the environment still says where
        spool = config.transport().spool
    store = db_path(db)
    env = dict(os.environ, PERFDECK_DB=store_spec(store.resolve()),
               PERFDECK_SPOOL=str(spool))
    # Streamlit's server would put a loopback peer's X-Forwarded-For in place of its address, letting any
    # local client pick its login key; perfdeck reads the header itself, from PERFDECK_TRUSTED_PROXIES only.
    env.setdefault("FORWARDED_ALLOW_IPS", "")
    # The dashboard reads again and again: it keeps its read connection warm (collectors.store.connection).
    env.setdefault("PERFDECK_READ_KEEP_S", str(DASHBOARD_READ_KEEP_S))
    config_file = Path(os.environ.get("PERFDECK_CONFIG") or config.DEFAULT_PATH)
    if config_file.exists():
        env["PERFDECK_CONFIG"] = str(config_file.resolve())
    return env


@click.command(context_settings={**CONTEXT, "ignore_unknown_options": True})
@db_option
@click.option("--port", type=int, default=None, help="Port (default $STREAMLIT_SERVER_PORT or 8501).")
@click.option("--address", default=None,
              help="Listen on this address (default $STREAMLIT_SERVER_ADDRESS or 127.0.0.1: this machine only). "
                   "Any other address needs viewer login, or --no-auth.")
@click.option("--no-auth", is_flag=True,
              help="Serve other machines with no viewer login (a proxy in front authenticates). Warns.")
@click.argument("streamlit_args", nargs=-1, type=click.UNPROCESSED)
def dashboard(db, port, address, no_auth, streamlit_args) -> None:
    """Serve the dashboard (Streamlit) with perfdeck's settings. Extra arguments go to `streamlit run`
    and win over perfdeck's. .streamlit/secrets.toml is read from the current folder."""
    warning = exposure(resolve_address(address, streamlit_args), no_auth)
    if warning:
        click.echo(f"perfdeck dashboard: {warning}", err=True)
    from collectors.store.lake import LakeUnavailable

    cmd = dashboard_command(port, streamlit_args, address=address)
    try:
        env = dashboard_env(db)
    except LakeUnavailable as exc:        # e.g. a lake without its data path: one line, not a traceback
        raise click.ClickException(str(exc)) from None
    # Become Streamlit rather than wrap it, so signals (Ctrl-C, SIGTERM) reach it directly.
    os.execve(cmd[0], cmd, env)
