"""The ``flashsale`` command: ``flashsale up`` runs the whole platform on one machine.

Unless URLs are given, it first starts the embedded Valkey, PostgreSQL and tansu under
``--data-dir``; then the four app processes; prints one READY line when every /healthz answers;
and stops everything it started, in reverse order, on SIGINT/SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import logging
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx

from infra.constants import DEV_ADMIN_KEY, DEV_SECRET_KEY
from infra.settings import ConfigError, Settings
from infra.stack import storm
from infra.stack.embedded import PostgresServer, TansuServer, ValkeyServer, start_embedded
from infra.stack.supervisor import ChildSpec, Supervisor
from infra.web.logs import setup_logging

logger = logging.getLogger("flashsale.cli")

# (module, settings field of its port): the HTTP processes, started in this order.
APP_MODULES: tuple[tuple[str, str], ...] = (
    ("queue_server", "queue_port"),
    ("scheduler", "scheduler_port"),
    ("shop", "shop_port"),
    ("token_gate", "gate_port"),
)
# Processes without an HTTP port (the order worker goes here); ready once spawned.
WORKER_MODULES: tuple[str, ...] = ("shop.worker",)
# Run to completion after PostgreSQL answers and before the apps start: the schema migrations.
MIGRATE_MODULE = "shop.migrate"

READY_TIMEOUT_S = 60.0
DEMO_PRODUCT_ID = "demo-sneaker"
DEMO_OPENS_IN_S = 20

# Flags that name an external server; given by flag or env, that server is not embedded.
_EXTERNAL = {
    "redis_url": "FLASHSALE_REDIS_URL",
    "database_url": "FLASHSALE_DATABASE_URL",
    "kafka_bootstrap": "FLASHSALE_KAFKA_BOOTSTRAP",
}


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="flashsale", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    bench = commands.add_parser("bench", help="measure issue 7's targets in one run")
    bench.add_argument("--quick", action="store_true", help="smaller sizes: under 5 minutes")
    bench.add_argument("--out", type=Path, help="write the figures as JSON to this file")
    bench.add_argument("--only", help="comma-separated groups: queue,gate,orders,sellout,storm")
    bench.add_argument("--tool", choices=("auto", "wrk", "httpx"), help="load generator")
    up = commands.add_parser("up", help="run the platform until SIGINT/SIGTERM")
    # Every default is None: an absent flag leaves the env var (or the built-in default) alone.
    up.add_argument("--host", help="address the HTTP processes bind (default 127.0.0.1)")
    up.add_argument("--gate-port", type=int)
    up.add_argument("--queue-port", type=int)
    up.add_argument("--shop-port", type=int)
    up.add_argument("--scheduler-port", type=int)
    up.add_argument("--admin-key", help="bearer key of the admin API")
    up.add_argument("--data-dir", type=Path, help="embedded servers' data (default .flashsale)")
    up.add_argument("--redis-url", help="use this Redis instead of the embedded Valkey")
    up.add_argument("--database-url", help="use this PostgreSQL instead of the embedded one")
    up.add_argument("--kafka-bootstrap", help="use this Kafka instead of the embedded tansu")
    up.add_argument("--join-rate-per-ip", type=float, help="joins/s per client IP (0: off)")
    up.add_argument("--visitor-rate", type=float, help="gate requests/s per visitor (0: off)")
    up.add_argument("--trusted-proxies", type=_csv, help="comma-separated proxy addresses")
    up.add_argument("--dev", action="store_true", default=None, help="allow the built-in dev keys")
    up.add_argument("--demo", action="store_true", help="--dev plus a demo sale that opens soon")
    storm.add_arguments(commands.add_parser("storm", help="a Locust storm, checked and reported"))
    return parser


def settings_from_args(args: argparse.Namespace, env: Mapping[str, str]) -> Settings:
    """Flags override env vars; raises ConfigError for settings we refuse to run with."""
    overrides = {
        name: getattr(args, name)
        for name in (
            "host",
            "gate_port",
            "queue_port",
            "shop_port",
            "scheduler_port",
            "admin_key",
            "redis_url",
            "database_url",
            "kafka_bootstrap",
            "join_rate_per_ip",
            "visitor_rate",
            "trusted_proxies",
            "dev",
        )
    }
    if args.demo:
        overrides["dev"] = True
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    settings = Settings.from_env(env, **overrides)
    return settings.replace(data_dir=settings.data_dir.resolve())


def embedded_wanted(args: argparse.Namespace, env: Mapping[str, str]) -> set[str]:
    """The settings fields (redis_url, database_url, kafka_bootstrap) nobody gave a value."""
    return {name for name, var in _EXTERNAL.items() if not getattr(args, name) and not env.get(var)}


def ports_in_use(settings: Settings) -> list[str]:
    """The app ports something else already listens on (an app would crash-loop on them)."""
    busy = []
    for module, port_field in APP_MODULES:
        port = getattr(settings, port_field)
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            # As uvicorn binds: a port in TIME_WAIT is free for it, so it is free for us.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((settings.host, port))
            except OSError:
                busy.append(f"{port} ({module})")
    return busy


def lock_data_dir(data_dir: Path) -> int | None:
    """Hold an exclusive lock on the data directory for this process's lifetime.

    Two embedded Valkeys appending to one AOF would corrupt it. Returns None when another
    process holds the lock. The descriptor is not inherited, so the lock dies with us.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(data_dir / "lock", os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        return None
    return fd


def _healthz_probe(url: str) -> Callable[[], Awaitable[None]]:
    async def probe() -> None:
        # trust_env=False: a proxy from the environment must not sit between us and loopback.
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            response = await client.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}")

    return probe


def app_children(settings: Settings, env: Mapping[str, str]) -> list[ChildSpec]:
    specs = []
    for module, port_field in APP_MODULES:
        port = getattr(settings, port_field)
        url = f"http://{_connect_host(settings.host)}:{port}/healthz"
        argv = [sys.executable, "-m", module]
        specs.append(ChildSpec(module, argv, env=env, probe=_healthz_probe(url)))
    specs.extend(ChildSpec(m, [sys.executable, "-m", m], env=env) for m in WORKER_MODULES)
    return specs


def _connect_host(host: str) -> str:
    # A wildcard bind is reachable on loopback; the health checks go there.
    return {"0.0.0.0": "127.0.0.1", "::": "::1", "": "127.0.0.1"}.get(host, host)


async def start_infrastructure(
    supervisor: Supervisor, settings: Settings, wanted: set[str]
) -> Settings:
    """Start the embedded servers nobody gave a URL for; returns settings pointing at them."""
    changes: dict[str, object] = {}
    if "redis_url" in wanted:
        valkey = ValkeyServer(settings.data_dir)
        await start_embedded(supervisor, valkey, READY_TIMEOUT_S)
        changes["redis_url"] = valkey.url
    if "database_url" in wanted:
        postgres = PostgresServer(settings.data_dir)
        await start_embedded(supervisor, postgres, READY_TIMEOUT_S)
        changes["database_url"] = postgres.url
    if "kafka_bootstrap" in wanted:
        tansu = TansuServer(settings.data_dir)
        await start_embedded(supervisor, tansu, READY_TIMEOUT_S)
        changes["kafka_bootstrap"] = tansu.url
    return settings.replace(**changes)


def _child_env(settings: Settings) -> dict[str, str]:
    return {**os.environ, **settings.to_env()}


async def migrate_database(settings: Settings) -> None:
    """Bring the schema up to date with `python -m shop.migrate`: a process, like every other
    service, so that the stack never imports a service package."""
    argv = [sys.executable, "-m", MIGRATE_MODULE]
    proc = await asyncio.create_subprocess_exec(
        *argv, env=_child_env(settings), stdin=asyncio.subprocess.DEVNULL
    )
    try:
        code = await proc.wait()
    except asyncio.CancelledError:  # asked to stop while migrating: leave no orphan behind
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()
        raise
    if code != 0:
        raise RuntimeError(f"{MIGRATE_MODULE} exited with code {code}")


async def start_apps(supervisor: Supervisor, settings: Settings) -> None:
    env = _child_env(settings)
    children = [await supervisor.add(spec) for spec in app_children(settings, env)]
    await asyncio.gather(*(supervisor.wait_ready(c, READY_TIMEOUT_S) for c in children))


async def create_demo_sale(settings: Settings) -> None:
    sale_start = datetime.now(UTC) + timedelta(seconds=DEMO_OPENS_IN_S)
    fresh = {"sale_start": sale_start.isoformat().replace("+00:00", "Z"), "stock": 50}
    product = {
        "id": DEMO_PRODUCT_ID,
        "name": "Demo Sneaker",
        "price": 12900,
        "currency": "EUR",
        **fresh,
        "prequeue_s": 900,
        "queue_mode": "fifo",
        "batch_size": 5,
        "interval_s": 1.0,
    }
    headers = {"Authorization": f"Bearer {settings.admin_key}"}
    async with httpx.AsyncClient(
        base_url=settings.shop_url, headers=headers, timeout=10.0, trust_env=False
    ) as client:
        response = await client.post("/admin/products", json=product)
        if response.status_code == 409:  # left from an earlier run: reopen it
            response = await client.patch(f"/admin/products/{DEMO_PRODUCT_ID}", json=fresh)
        response.raise_for_status()
    print(
        f"Demo sale: {settings.queue_url}/wait/{DEMO_PRODUCT_ID} opens in {DEMO_OPENS_IN_S} s",
        flush=True,
    )


async def up(
    settings: Settings,
    *,
    embedded: set[str],
    demo: bool = False,
    stop: asyncio.Event | None = None,
) -> int:
    """Run the platform until ``stop`` is set (SIGINT/SIGTERM); returns the exit code."""
    stop = stop if stop is not None else asyncio.Event()
    async with Supervisor() as supervisor:

        async def start_all() -> Settings:
            final = await start_infrastructure(supervisor, settings, embedded)
            await migrate_database(final)
            await start_apps(supervisor, final)
            return final

        startup = asyncio.create_task(start_all())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({startup, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not startup.done():  # asked to stop while starting: stop what is already up
            startup.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await startup
            return 0
        try:
            final = startup.result()
        except Exception as exc:  # the edge of the program: report it, stop what runs, exit 1
            stopping.cancel()
            logger.error("startup failed", extra={"error": str(exc)})
            print(f"flashsale: startup failed: {exc}", file=sys.stderr, flush=True)
            return 1
        print(
            f"READY gate={final.gate_url} queue={final.queue_url} shop={final.shop_url}",
            flush=True,
        )
        if demo:
            try:
                await create_demo_sale(final)
            except httpx.HTTPError as exc:
                # The platform itself is up; say why the demo is missing and keep running.
                logger.error("demo sale not created", extra={"error": str(exc)})
                print(f"flashsale: demo sale not created: {exc}", file=sys.stderr, flush=True)
        await stopping
        logger.info("stopping")
    return 0


def _run_up(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    try:
        settings = settings_from_args(args, env)
    except ConfigError as exc:
        print(f"flashsale: {exc}", file=sys.stderr, flush=True)
        return 2
    embedded = embedded_wanted(args, env)
    if busy := ports_in_use(settings):
        print(f"flashsale: ports already in use: {', '.join(busy)}", file=sys.stderr, flush=True)
        return 1
    if embedded and lock_data_dir(settings.data_dir) is None:
        print(
            f"flashsale: {settings.data_dir} is in use by another `flashsale up`",
            file=sys.stderr,
            flush=True,
        )
        return 1
    setup_logging(settings.log_level)
    # Every health poll would be an INFO line otherwise.
    logging.getLogger("httpx").setLevel(logging.WARNING)
    dev_keys = settings.admin_key == DEV_ADMIN_KEY or DEV_SECRET_KEY in settings.secret_keys
    if settings.dev and dev_keys:
        print(
            "flashsale: WARNING: dev mode with the built-in development keys: anyone can mint "
            "tokens and use the admin API. Never expose this deployment.",
            file=sys.stderr,
            flush=True,
        )

    async def main() -> int:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            return await up(settings, embedded=embedded, demo=args.demo, stop=stop)
        finally:
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.remove_signal_handler(sig)

    return asyncio.run(main())


def _run_bench(args: argparse.Namespace) -> int:
    """`flashsale bench` is `python -m bench` in a child process: the benchmark drives the
    services' own code, which nothing under infra/ may import."""
    argv = [sys.executable, "-m", "bench"]
    if args.quick:
        argv.append("--quick")
    for flag, value in (("--out", args.out), ("--only", args.only), ("--tool", args.tool)):
        if value is not None:
            argv += [flag, str(value)]
    try:
        return subprocess.run(argv, check=False).returncode
    except KeyboardInterrupt:  # the child got the same Ctrl-C and stops its servers itself
        return 130


def main(argv: Sequence[str] | None = None) -> None:
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        sys.exit(_run_bench(args))
    if args.command == "up":
        sys.exit(_run_up(args))
    if args.command == "storm":
        sys.exit(storm.run(args))
