"""`perfdeck demo`: store, backfill, live workload, collector and dashboard in one command.

Order of events, chosen so that a browser shows data as early as possible:
1. create the data dir (store `perfdeck.duckdb`, spool `spool/`, the shop's `shop.sqlite`) and run
   the store migrations;
2. start the dashboard (Streamlit) as a child process and print its URL;
3. on a thread: write the made-up host history of the span to backfill (collectors.demo.host, ~1 s),
   then start the collector daemon there (it ingests the spool every second, so the backfill lands
   in the store while it is still running);
4. meanwhile, backfill in fast-forward (collectors.demo.backfill), printing progress;
5. serve live traffic: the shop in this process (following the dashboard's "Deploy a slow build"
   switch, collectors.demo.live.SlowSwitch), the worker in a child process;
6. on SIGINT / SIGTERM: stop the workload, flush the SDK, let the collector ingest what is left and
   stop, terminate the children, return 0.

Re-running on an existing data dir reuses the shop database and the store. The backfill then only
fills the gap between the newest shop-api event in the store and now (capped at --days, without a new
deploy marker), and is skipped when that gap is under two minutes.

The demo ships its own thresholds (collectors/demo/thresholds.toml: its LLM endpoint and long-tail
caches are healthy as they are) and a quicker alert timing than the defaults (DEMO_ALERTS), so a
newcomer sees an alert fire and resolve within minutes; perfdeck.toml or the environment still win."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from collectors import sdk
from collectors.redact import redact

GAP_FILL_MIN_S = 120.0
PG_ADVICE_AFTER_S = 180.0    # with --postgres: a second advisor run, on its first minutes of live queries
DEFAULT_PORT = 8501


def say(msg: str) -> None:
    print(msg, flush=True)


def resolve_port(port: int | None) -> int:
    """--port, else $STREAMLIT_SERVER_PORT, else 8501."""
    if port:
        return int(port)
    env = os.environ.get("STREAMLIT_SERVER_PORT", "").strip()
    return int(env) if env.isdigit() else DEFAULT_PORT


def last_event_ts(db: Path) -> float | None:
    """Epoch seconds of the newest shop-api request in the store, None when there is none."""
    if not db.exists():
        return None
    from collectors.store import connection
    try:
        with connection.read(db) as con:
            row = con.execute("SELECT epoch(max(ts)) FROM request_events WHERE service = 'shop-api'").fetchone()
    except Exception:
        return None
    return float(row[0]) if row and row[0] is not None else None


def last_deploy_version(db: Path, service: str = "shop-api") -> str | None:
    """The version of the newest deploy marker of `service` in the store, None when there is none."""
    if not db.exists():
        return None
    from collectors.store import connection
    try:
        with connection.read(db) as con:
            row = con.execute("SELECT arg_max(version, ts) FROM deploys WHERE service = ?", [service]).fetchone()
    except Exception:
        return None
    return row[0] if row else None


def dashboard_address() -> str:
    """Where the demo dashboard listens: loopback unless $STREAMLIT_SERVER_ADDRESS says otherwise (the
    command refuses a non-loopback one with no viewer login, unless --no-auth)."""
    from collectors.cli.dashboard import resolve_address

    return resolve_address(None)


def start_dashboard(db: Path, port: int, env: dict) -> subprocess.Popen:
    """The dashboard as a child, with the packaged Streamlit settings, in our own cwd (where
    perfdeck.toml and .streamlit/secrets.toml are read)."""
    from collectors.cli.dashboard import dashboard_command, dashboard_env

    return subprocess.Popen(dashboard_command(port, address=dashboard_address()), env=dashboard_env(db) | env)


def dashboard_targets(data_dir: Path, *, redis_url: str | None = None,
                      postgres_url: str | None = None) -> tuple[dict, str | None]:
    """The demo dashboard's environment, so its actions reach the demo's spool (its app caches) and
    the shop database next to whatever is configured, its health and alerts use the collector's
    thresholds and timing, and its sidebar shows the demo switch ($PERFDECK_DEMO_DIR); and on a
    loopback address, with no operator configured, a generated operator password (returned to be
    printed, never written anywhere)."""
    from collectors import config
    from collectors.cli.dashboard import is_loopback
    from collectors.demo.workload import PG_DATABASE, REDIS_NAME, sqlalchemy_url
    from collectors.health.settings import alert_settings
    from dashboard.actions.access import generate_demo_password, operator_config

    shop = f"shop=sqlite:///{data_dir / 'shop.sqlite'}"
    pg = f"{PG_DATABASE}={sqlalchemy_url(postgres_url)}" if postgres_url else None
    env = {"PERFDECK_SPOOL": str(data_dir / "spool"), "PERFDECK_DEMO_DIR": str(data_dir),
           "PERFDECK_DATABASE_URLS": ",".join(filter(None, [os.environ.get("PERFDECK_DATABASE_URLS"), shop, pg]))}
    if redis_url:
        env["PERFDECK_REDIS_URLS"] = ",".join(filter(None, [os.environ.get("PERFDECK_REDIS_URLS"),
                                                            f"{REDIS_NAME}={redis_url}"]))
    cfg = demo_config(data_dir)
    alerts = alert_settings(cfg)
    env.update({"PERFDECK_THRESHOLDS": str(alerts.thresholds_file), "PERFDECK_ALERT_WINDOW": f"{alerts.window_s:g}s",
                "PERFDECK_ALERT_FOR": f"{alerts.for_s:g}s", "PERFDECK_ALERT_INTERVAL": f"{alerts.interval_s:g}s"})
    cost = config.cost_settings(cfg)       # the Cost page's budgets, as the collector has them
    env.update({name: str(value) for name, value in (
        ("PERFDECK_DAILY_BUDGET", cost.daily_budget), ("PERFDECK_MONTHLY_BUDGET", cost.monthly_budget),
        ("PERFDECK_COMPUTE_USD_PER_CORE_HOUR", cost.compute_usd_per_core_hour)) if value is not None})
    password = None
    if not operator_config().enabled and is_loopback(dashboard_address()):
        password, env["PERFDECK_OPERATOR_PASSWORD_HASH"] = generate_demo_password()
    return env, password


def start_live_worker(data_dir: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "collectors.demo.live", "worker", str(data_dir),
                             "--parent-pid", str(os.getpid())])


def stop_process(proc: subprocess.Popen | None, name: str, timeout: float = 10.0) -> None:
    if proc is None:
        return
    if proc.poll() is None:
        proc.terminate()
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        say(f"perfdeck demo: {name} did not stop in {timeout:.0f} s; killing it")
        proc.kill()
        proc.wait(5)


# Budgets the demo's LLM traffic makes worth a look, and a price for its own CPU. Live, the shop spends
# about $11 a day (~$0.001 per /recommendations request, plus review summaries): the budgets sit above
# that, so the Cost page draws them near the spend and the health check "budget_burn" stays healthy.
DEMO_COST = {"daily_budget": 15.0, "monthly_budget": 400.0, "compute_usd_per_core_hour": 0.05}
# Alerts within minutes of flipping the demo switch (the defaults, 5m / 5m / 1m, suit production).
DEMO_ALERTS = {"window": "3m", "for": "1m", "interval": "30s"}
DEMO_THRESHOLDS = Path(__file__).resolve().with_name("thresholds.toml")


def watch_own_processes(collector, *procs) -> list[int]:
    """Have the collector's host sampler watch these processes of ours (Popen objects or pids) by pid:
    the demo's own process is watched anyway, its children (dashboard, live worker) join it here. By
    pid, not by command line: a "streamlit run" pattern would watch every user's dashboard on the
    machine. Returns the pids added."""
    from collectors.samplers.system import HostSampler

    pids = [p if isinstance(p, int) else p.pid for p in procs if p is not None]
    for thread in collector.sampler_threads:
        if isinstance(thread.sampler, HostSampler):
            # a new set, not update(): the sampler's thread may be iterating over the old one
            thread.sampler.pids = thread.sampler.pids | set(pids)
    return pids


def backfill_host_quietly(collector, start: float, end: float, pids: list[int]) -> None:
    """collectors.demo.host.backfill_host, saying what it did; a failure is said, never raised (the
    Host page then only has the live samples)."""
    from collectors.demo.host import backfill_host

    try:
        n = backfill_host(collector, start, end, pids=pids)
    except Exception as exc:   # noqa: BLE001 - made-up history is a nicety; the demo goes on without it
        say(f"perfdeck demo: no host history ({type(exc).__name__}: {exc})")
        return
    if n:
        say(f"perfdeck demo: made up {n:,} host samples for the backfilled span (labelled demo=backfill)")


def demo_config(data_dir: Path, *, redis_url: str | None = None, postgres_url: str | None = None) -> dict:
    """The host (its processes: the ones perfdeck.toml names; the demo adds its own by pid, see
    watch_own_processes), the shop's SQLite database, and any Redis or
    database named in perfdeck.toml / $PERFDECK_REDIS_URLS / $PERFDECK_DATABASE_URLS; the demo's
    budgets, alert timing and thresholds file where perfdeck.toml does not set them (the
    environment overrides both when the settings are read)."""
    from collectors import config

    cfg = config.load()
    for key, value in DEMO_COST.items():
        cfg.setdefault("cost", {}).setdefault(key, value)
    alerts = cfg.setdefault("alerts", {})
    for key, value in DEMO_ALERTS.items():
        alerts.setdefault(key, value)
    alerts.setdefault("thresholds_file", str(DEMO_THRESHOLDS))
    cfg["database"].append({"name": "shop", "url": f"sqlite:///{data_dir / 'shop.sqlite'}"})
    if redis_url or postgres_url:       # `perfdeck demo --redis URL --postgres URL`: sampled and advised too
        from collectors.demo.workload import PG_DATABASE, REDIS_NAME, sqlalchemy_url

        if redis_url:
            cfg.setdefault("redis", []).append({"name": REDIS_NAME, "url": redis_url})
        if postgres_url:
            cfg["database"].append({"name": PG_DATABASE, "url": sqlalchemy_url(postgres_url)})
    return cfg


def run(data_dir: Path, *, port: int | None = None, backfill_days: float = 4.0, dashboard: bool = True,
        redis_url: str | None = None, postgres_url: str | None = None, store: str | None = None) -> int:
    """Run the demo until SIGINT/SIGTERM; returns the exit code. With `redis_url` / `postgres_url`
    the live shop also keeps its products in that Redis and reads order histories from that
    PostgreSQL (schema perfdeck_demo), and the collector samples both. `store` puts the store elsewhere
    (a lake) than the data dir."""
    from collectors import config
    from collectors.cli.wiring import build_collector
    from collectors.demo.backfill import DAY, backfill
    from collectors.demo.live import SlowSwitch, live_shop_rate, run_live
    from collectors.demo.workload import VERSION_AFTER, Shop, open_database, running_version
    from dashboard.demo_switch import SWITCH_FILE

    t0 = time.monotonic()
    data_dir = Path(data_dir).resolve()
    data_dir.mkdir(parents=True, exist_ok=True)
    from collectors.store import connection
    db = connection.db_path(store) if store else data_dir / "perfdeck.duckdb"
    spool = data_dir / "spool"
    stop = threading.Event()
    stopped_by: list[str] = []

    def on_signal(signum, _frame):
        stopped_by.append(signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)}
    collector = collector_thread = dash = worker = engine = host_thread = pg = advice_timer = None
    code = 0
    try:
        last, last_version = last_event_ts(db), last_deploy_version(db)
        engine = open_database(data_dir / "shop.sqlite")   # before the collector samples it
        pg = redis = None
        if postgres_url:
            from collectors.demo.workload import open_postgres

            try:
                pg = open_postgres(postgres_url)    # before the collector samples it
            except Exception as exc:   # noqa: BLE001 - said, with the URL's secrets masked
                say(f"perfdeck demo: cannot use PostgreSQL {redact(postgres_url)}: {redact(exc, postgres_url)}")
                return 2
            say(f"perfdeck demo: order histories also on PostgreSQL {redact(postgres_url)} (schema perfdeck_demo)")
        if redis_url:
            from collectors.demo.workload import open_redis

            redis = open_redis(redis_url)
            try:
                redis.ping()                        # refused now rather than silently later
            except Exception as exc:   # noqa: BLE001 - said, with the URL's secrets masked
                say(f"perfdeck demo: cannot use Redis {redact(redis_url)}: {redact(exc, redis_url)}")
                return 2
            say(f"perfdeck demo: products also cached in Redis {redact(redis_url)}")
        cfg = demo_config(data_dir, redis_url=redis_url, postgres_url=postgres_url)
        # Its own spool only (whatever the environment says); the demo's 3 min alert window, 1 min for, every
        # 30 s; the advisor's first run waits for the shop's workload (request_advice() after the backfill).
        collector = build_collector(cfg, db, sources=config.Transport(spool), advise_at_start=False)
        collector_thread = threading.Thread(target=collector.run_forever, name="perfdeck-collector", daemon=True)
        if dashboard:
            port = resolve_port(port)
            env, password = dashboard_targets(data_dir, redis_url=redis_url, postgres_url=postgres_url)
            dash = start_dashboard(db, port, env)
            watch_own_processes(collector, dash)
            say(f"perfdeck demo: dashboard at http://localhost:{port} — Ctrl-C to stop")
            if password:
                say(f"perfdeck demo: operator password for this run: {password} "
                    "(log in from the sidebar to try the actions)")

            def watch() -> None:   # a dashboard that dies on its own (port taken, crash) ends the demo
                while not stop.wait(1.0):
                    if dash.poll() is not None and not stop.wait(1.0):   # not just our own Ctrl-C
                        say(f"perfdeck demo: the dashboard exited (code {dash.returncode}); stopping")
                        stopped_by.append("dashboard")
                        stop.set()

            threading.Thread(target=watch, name="perfdeck-demo-watch", daemon=True).start()
        say(f"perfdeck demo: data in {data_dir} (store {db.name}, spool {spool.name}/, shop.sqlite)")

        now = time.time()
        history_version = running_version(last_version) or VERSION_AFTER    # what the history ends with, once filled
        if backfill_days > 0 and (last is None or now - last > GAP_FILL_MIN_S):
            # Made-up host samples for the span the backfill fills (labelled demo=backfill), written
            # while the backfill starts, before the collector's thread opens the store: one
            # process's DuckDB connections may not mix read-only and read-write ones.
            host_from = now - backfill_days * DAY if last is None else max(last, now - backfill_days * DAY)
            pids = [os.getpid()] + ([dash.pid] if dash else [])

            def host_then_collect() -> None:
                try:
                    backfill_host_quietly(collector, host_from, now, pids)
                finally:
                    collector_thread.start()

            host_thread = threading.Thread(target=host_then_collect, name="perfdeck-demo-host", daemon=True)
            host_thread.start()
        else:
            collector_thread.start()
        if last is None:
            say(f"perfdeck demo: backfilling {backfill_days:g} days of history in fast-forward")
            report = backfill(data_dir, days=backfill_days, end=now, engine=engine, stop=stop, progress=say)
            history_version = VERSION_AFTER
        elif now - last > GAP_FILL_MIN_S and backfill_days > 0:
            start = max(last, now - backfill_days * DAY)
            say(f"perfdeck demo: existing store; filling the {(now - start) / 3600:.1f} h since its newest event")
            report = backfill(data_dir, days=backfill_days, start=start, end=now, with_deploy=False,
                              mark_resume=history_version != VERSION_AFTER, engine=engine, stop=stop, progress=say)
            history_version = VERSION_AFTER
        else:
            report = None
            say("perfdeck demo: existing store is up to date; no backfill")
        if report is not None:
            real = sum(s.real for s in report.services)
            say(f"perfdeck demo: backfilled {(report.end - report.start) / DAY:.2f} days in {report.seconds:.1f} s: "
                f"{report.requests:,} requests, {report.events:,} events ({real:,} requests run for real, "
                f"the rest replayed from them; {report.dropped} dropped)"
                + (" — interrupted" if report.interrupted else ""))
        collector.request_advice()   # the collector ingests what the backfill spooled first, then advises
        if pg is not None:           # the PostgreSQL's workload is live traffic's only: advise it once that has some
            advice_timer = threading.Timer(PG_ADVICE_AFTER_S, collector.request_advice)
            advice_timer.daemon = True
            advice_timer.start()

        if not stop.is_set():
            shop = Shop(engine, version=VERSION_AFTER, seed=int(time.time()), postgres=pg, redis=redis)
            sdk.shutdown()                   # the backfill's last events go out; warming the caches is not traffic
            shop.warm_caches()
            sdk.configure(service="shop-api", transport=f"spool:{spool}")   # real clock from here on
            worker = start_live_worker(data_dir)
            watch_own_processes(collector, worker)
            say(f"perfdeck demo: live traffic running (started {time.monotonic() - t0:.1f} s ago)")
            # A switch left on over a history that ends at VERSION_AFTER is deployed (and marked) again.
            switch = SlowSwitch(data_dir / SWITCH_FILE, shop, history_version=history_version)
            if switch.slow:
                say(f"perfdeck demo: the slow build {shop.version} is deployed (the dashboard's demo switch)")

            def poll() -> None:
                if switch.poll():
                    say(f"perfdeck demo: deployed {shop.version}"
                        + (" (the slow build)" if switch.slow else " (rolled back; its deploy marker says v1.8.0-rollback)"))

            run_live(shop, stop, live_shop_rate, poll=poll)
        if "dashboard" in stopped_by and not any(s.startswith("SIG") for s in stopped_by):
            code = dash.returncode or 1
    finally:
        say("perfdeck demo: stopping")
        if advice_timer is not None:
            advice_timer.cancel()
        sdk.shutdown()
        if dash is not None and dash.poll() is None:
            dash.terminate()                       # in parallel with the rest of the shutdown
        stop_process(worker, "live worker")
        if host_thread is not None:
            host_thread.join(30)                   # it starts the collector's thread when done
        if collector is not None:
            collector.stop()
            if collector_thread is not None and collector_thread.ident is not None:
                collector_thread.join(30)
        stop_process(dash, "dashboard")
        if engine is not None:
            engine.dispose()
        if pg is not None:
            pg.dispose()
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        say("perfdeck demo: stopped")
    return code
