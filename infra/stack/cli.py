"""The ``flashsale`` command: ``flashsale up`` runs the whole platform on one machine.

Unless URLs are given, it first starts the embedded Valkey, PostgreSQL and tansu under
``--data-dir``; then the five app processes; prints one READY line when every /healthz answers;
and stops everything it started, in reverse order, on SIGINT/SIGTERM.

On a terminal it draws a live console (infra/stack/console.py) and every process logs to its
own file under ``<data-dir>/logs/``; otherwise (or with ``--log-format json``) the READY line
is the first line on stdout and the JSON log lines go to stderr, for tools to read.
``flashsale sale ...`` is the admin API from a terminal (infra/stack/sales.py).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import errno
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
from typing import NoReturn
from urllib.parse import urlsplit

import httpx

from infra.constants import DEV_ADMIN_KEY, DEV_SECRET_KEY, EXIT_CONFIG
from infra.settings import ConfigError, Settings, setting_name
from infra.stack import sales, storm
from infra.stack.console import OWN_LOG, UpConsole, Urls
from infra.stack.embedded import PostgresServer, TansuServer, ValkeyServer, start_embedded
from infra.stack.supervisor import ChildSpec, Supervisor
from infra.topics import ensure_topics
from infra.web.logs import LOG_LEVELS, setup_logging

logger = logging.getLogger("flashsale.cli")

# (module, settings field of its port): the app processes, started in this order, each ready
# once its /healthz answers (the order worker's port serves only /healthz and /metrics).
APP_MODULES: tuple[tuple[str, str], ...] = (
    ("queue_server", "queue_port"),
    ("scheduler", "scheduler_port"),
    ("shop", "shop_port"),
    ("token_gate", "gate_port"),
    ("shop.worker", "worker_port"),
)
# Run to completion after PostgreSQL answers and before the apps start: the schema migrations.
MIGRATE_MODULE = "shop.migrate"

READY_TIMEOUT_S = 60.0
# `--replicas N`: replica i (from 0) of each HTTP process listens on its port + i * this, so
# one replica's five ports stay together (8000-8004, 8010-8014, ...).
REPLICA_PORT_STEP = 10
MAX_REPLICAS = 9
EXTERNAL_CONNECT_TIMEOUT_S = 3.0  # an external server given by URL must accept a connection
# A child that exits with these refused its settings (infra.web.serve.settings_at_edge): the
# same settings would be refused again, so `flashsale up` stops at once instead of restarting.
FINAL_EXIT_CODES = frozenset({EXIT_CONFIG})
DEMO_PRODUCT_ID = "demo-sneaker"
DEMO_OPENS_IN_S = 20
DEMO_IDS = 20  # demo-sneaker, demo-sneaker-2, ...: one per run whose demo had opened

# Flags that name an external server; given by flag or env, that server is not embedded.
_EXTERNAL = {
    "redis_url": "FLASHSALE_REDIS_URL",
    "database_url": "FLASHSALE_DATABASE_URL",
    "kafka_bootstrap": "FLASHSALE_KAFKA_BOOTSTRAP",
}


def _replicas(value: str) -> int:
    try:
        n = int(value)
    except ValueError:
        n = 0
    if not 1 <= n <= MAX_REPLICAS:
        raise argparse.ArgumentTypeError(f"expected a whole number from 1 to {MAX_REPLICAS}")
    return n


def _csv(value: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in value.split(",") if part.strip())


EXAMPLES = {
    "flashsale": """examples:
  flashsale up --demo                      # the platform and a demo sale, on this machine
  flashsale sale list --dev                # the sales of that platform
  flashsale storm --visitors 2000 --stock 100
  flashsale <command> --help               # each command's flags and examples""",
    "up": """examples:
  flashsale up --demo                      # dev keys and a demo sale that opens in 20 s
  flashsale up --dev --log-level debug     # with APScheduler's, aiokafka's and alembic's lines
  flashsale up --dev | tee up.out          # not a terminal: READY first, JSON logs on stderr
  flashsale up --demo --replicas 3         # three of every process: gates 8000/8010/8020, ...
  flashsale up --redis-url redis+cluster://:pw@10.0.0.5:7000   # a Redis Cluster (any node)
  FLASHSALE_SECRET_KEYS=... FLASHSALE_ADMIN_KEY=... flashsale up --redis-url redis://r:6379/0""",
    "bench": """examples:
  flashsale bench --quick
  flashsale bench --only queue,gate --out results.json""",
    "storm": """examples:
  flashsale storm --visitors 2000 --stock 100
  flashsale storm --visitors 50000 --stock 1000 --replicas 3 --refresh-share 0.1""",
}


class OneLineParser(argparse.ArgumentParser):
    """A bad flag is one line and exit code 2, like every other bad setting (argparse would
    print the whole usage first, and the reason last)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: {message} (see `{self.prog} --help`)\n")


def _formatter(prog: str) -> argparse.HelpFormatter:
    # Raw: the examples keep their lines and indentation.
    return argparse.RawDescriptionHelpFormatter(prog, max_help_position=32)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="flashsale",
        description="The flash-sale platform on one machine, its sales from a terminal, "
        "its benchmarks and storms.",
        epilog=EXAMPLES["flashsale"],
        formatter_class=_formatter,
    )
    commands = parser.add_subparsers(dest="command", required=True)

    def command(name: str, help_text: str) -> argparse.ArgumentParser:
        parser: argparse.ArgumentParser = commands.add_parser(
            name, help=help_text, description=help_text, epilog=EXAMPLES[name],
            formatter_class=_formatter,
        )  # fmt: skip
        return parser

    bench = command("bench", "measure issue 7's targets in one run")
    bench.add_argument("--quick", action="store_true", help="smaller sizes: under 5 minutes")
    bench.add_argument("--out", type=Path, help="write the figures as JSON to this file")
    bench.add_argument("--only", help="comma-separated groups: queue,gate,orders,sellout,storm")
    bench.add_argument("--tool", choices=("auto", "wrk", "httpx"), help="load generator")
    up = command("up", "run the platform until SIGINT/SIGTERM")
    # Every default is None: an absent flag leaves the env var (or the built-in default) alone.
    up.add_argument("--host", help="address the HTTP processes bind (default 127.0.0.1)")
    up.add_argument("--gate-port", type=int)
    up.add_argument("--queue-port", type=int)
    up.add_argument("--shop-port", type=int)
    up.add_argument("--scheduler-port", type=int)
    up.add_argument("--worker-port", type=int, help="the order worker's /healthz and /metrics")
    up.add_argument("--admin-key", help="bearer key of the admin API")
    up.add_argument("--viewer-key", help="read-only key of the admin API (stats, dashboard)")
    up.add_argument("--data-dir", type=Path, help="embedded servers' data (default .flashsale)")
    up.add_argument("--redis-url", help="use this Redis instead of the embedded Valkey")
    up.add_argument("--database-url", help="use this PostgreSQL instead of the embedded one")
    up.add_argument("--kafka-bootstrap", help="use this Kafka instead of the embedded tansu")
    up.add_argument("--join-rate-per-ip", type=float, help="joins/s per client IP (0: off)")
    up.add_argument("--visitor-rate", type=float, help="gate requests/s per visitor (0: off)")
    up.add_argument("--trusted-proxies", type=_csv, help="comma-separated proxy addresses")
    up.add_argument("--dev", action="store_true", default=None, help="allow the built-in dev keys")
    up.add_argument("--demo", action="store_true", help="--dev plus a demo sale that opens soon")
    up.add_argument(
        "--replicas",
        type=_replicas,
        default=1,
        help=f"run N of every process (1-{MAX_REPLICAS}); replica i listens on each port + "
        f"{REPLICA_PORT_STEP} x i, and the gates take the shops in turn (1)",
    )
    up.add_argument(
        "--log-level",
        choices=LOG_LEVELS,
        help="every process's level (env FLASHSALE_LOG_LEVEL; info). At debug, APScheduler, "
        "aiokafka and alembic log their INFO lines too",
    )
    up.add_argument(
        "--log-format",
        choices=("auto", "console", "json"),
        default="auto",
        help="auto: the live console on a terminal, JSON lines otherwise (auto)",
    )
    storm.add_arguments(command("storm", "a Locust storm, checked and reported"))
    sales.add_parser(commands)
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
            "worker_port",
            "admin_key",
            "viewer_key",
            "redis_url",
            "database_url",
            "kafka_bootstrap",
            "join_rate_per_ip",
            "visitor_rate",
            "trusted_proxies",
            "dev",
            "log_level",
        )
    }
    if args.demo:
        overrides["dev"] = True
    if args.data_dir is not None:
        overrides["data_dir"] = args.data_dir
    # Every value is checked here, once, before anything starts (Settings.validate): a bad one
    # is one line and exit code 2, not a traceback from each child and a minute of restarts.
    settings = Settings.from_env(env, **overrides)
    settings.validate_one_host()
    return settings.replace(data_dir=settings.data_dir.resolve())


def embedded_wanted(args: argparse.Namespace, env: Mapping[str, str]) -> set[str]:
    """The settings fields (redis_url, database_url, kafka_bootstrap) nobody gave a value."""
    return {name for name, var in _EXTERNAL.items() if not getattr(args, name) and not env.get(var)}


def ports_in_use(settings: Settings) -> list[str]:
    """The app ports something else already listens on (an app would crash-loop on them).
    Raises ConfigError for a host that names no address of this machine."""
    busy = []
    for module, port_field in APP_MODULES:
        port = getattr(settings, port_field)
        family = socket.AF_INET6 if ":" in settings.host else socket.AF_INET
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            # As uvicorn binds: a port in TIME_WAIT is free for it, so it is free for us.
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            try:
                sock.bind((settings.host, port))
            except socket.gaierror:
                raise ConfigError(
                    f"{setting_name('host')}: {settings.host!r} does not resolve to an address"
                ) from None
            except OSError as exc:
                if exc.errno == errno.EADDRNOTAVAIL:
                    raise ConfigError(
                        f"{setting_name('host')}: {settings.host!r} is not an address of this "
                        "machine (expected one to bind, like 127.0.0.1 or 0.0.0.0)"
                    ) from None
                busy.append(f"{port} ({module})")
    return busy


def _addresses(settings: Settings, field_name: str) -> list[tuple[str, int] | str]:
    """Where the external server of `field_name` listens: (host, port) pairs or a unix path."""
    if field_name == "kafka_bootstrap":
        found: list[tuple[str, int] | str] = []
        for server in settings.kafka_bootstrap.split(","):
            host, _, port = server.strip().rpartition(":")
            found.append((host.strip("[]"), int(port)))
        return found
    parts = urlsplit(getattr(settings, field_name))
    if parts.scheme == "unix":
        return [parts.path]
    default = {"redis_url": 6379, "database_url": 5432}[field_name]
    return [(parts.hostname or "127.0.0.1", parts.port or default)]


async def _answers(address: tuple[str, int] | str) -> str | None:
    """None when something accepts a connection at `address`, else why not."""
    try:
        async with asyncio.timeout(EXTERNAL_CONNECT_TIMEOUT_S):
            if isinstance(address, str):
                _, writer = await asyncio.open_unix_connection(address)
            else:
                _, writer = await asyncio.open_connection(*address)
    except TimeoutError:
        return f"no answer within {EXTERNAL_CONNECT_TIMEOUT_S:g} s"
    except ConnectionRefusedError:
        return "connection refused"
    except OSError as exc:
        return exc.strerror or type(exc).__name__
    writer.close()
    return None


async def unreachable_servers(settings: Settings, fields: set[str]) -> str | None:
    """One line about the first external server (given by URL, not embedded) that accepts no
    connection at all, or None. Only a TCP (or unix) connect: credentials are the apps'."""
    for field_name in sorted(fields):
        addresses = _addresses(settings, field_name)
        reasons = await asyncio.gather(*(_answers(a) for a in addresses))
        if all(reasons):  # a Kafka bootstrap list needs one server that answers
            shown = ", ".join(a if isinstance(a, str) else f"{a[0]}:{a[1]}" for a in addresses)
            return f"{setting_name(field_name)}: nothing answers at {shown} ({reasons[0]})"
    return None


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


def _log_path(logs_dir: Path | None, name: str) -> Path | None:
    return logs_dir / f"{name}.log" if logs_dir is not None else None


def replica_settings(settings: Settings, replicas: int) -> list[Settings]:
    """The settings of each replica: its own ports, and the gates in front of every shop (unless
    FLASHSALE_SHOP_URL names shops of its own)."""
    ports = [field for _, field in APP_MODULES]
    each = [
        settings.replace(**{f: getattr(settings, f) + i * REPLICA_PORT_STEP for f in ports})
        for i in range(replicas)
    ]
    if replicas > 1 and not settings.shop_upstream_url:
        shops = ",".join(f"http://{_connect_host(r.host)}:{r.shop_port}" for r in each)
        each = [r.replace(shop_upstream_url=shops) for r in each]
    return each


def _replica_name(module: str, i: int) -> str:
    return module if i == 0 else f"{module}-{i + 1}"


def app_children(
    settings: Settings,
    env: Mapping[str, str],
    logs_dir: Path | None = None,
    replicas: int = 1,
) -> list[ChildSpec]:
    """The app processes, ``replicas`` of each (stateless: any replica serves any request);
    with ``logs_dir``, each logs to ``<logs_dir>/<name>.log`` (otherwise to our stderr)."""
    specs = []
    for i, replica in enumerate(replica_settings(settings, replicas)):
        replica_env = {**env, **replica.to_env()}
        for module, port_field in APP_MODULES:
            port = getattr(replica, port_field)
            url = f"http://{_connect_host(replica.host)}:{port}/healthz"
            name = _replica_name(module, i)
            specs.append(
                ChildSpec(
                    name, [sys.executable, "-m", module], env=replica_env,
                    probe=_healthz_probe(url), log_path=_log_path(logs_dir, name),
                    final_exit_codes=FINAL_EXIT_CODES,
                )
            )  # fmt: skip
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


async def migrate_database(settings: Settings, logs_dir: Path | None = None) -> None:
    """Bring the schema up to date with `python -m shop.migrate`: a process, like every other
    service, so that the stack never imports a service package."""
    argv = [sys.executable, "-m", MIGRATE_MODULE]
    log_path = _log_path(logs_dir, MIGRATE_MODULE)
    with contextlib.ExitStack() as files:
        out = None  # our stdout and stderr, as before
        if log_path is not None:
            log_path.parent.mkdir(parents=True, exist_ok=True)
            out = files.enter_context(log_path.open("ab"))
        proc = await asyncio.create_subprocess_exec(
            *argv,
            env=_child_env(settings),
            stdin=asyncio.subprocess.DEVNULL,
            # Its output never goes to our stdout, where the READY line must come first.
            stdout=out if out is not None else sys.stderr.fileno(),
            stderr=out,
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


async def start_apps(
    supervisor: Supervisor, settings: Settings, logs_dir: Path | None = None, replicas: int = 1
) -> None:
    env = _child_env(settings)
    specs = app_children(settings, env, logs_dir, replicas)
    children = [await supervisor.add(spec) for spec in specs]
    await asyncio.gather(*(supervisor.wait_ready(c, READY_TIMEOUT_S) for c in children))


async def create_demo_sale(settings: Settings) -> str:
    """Create (or reopen) the demo sale; returns its product id."""
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
        for n in range(1, DEMO_IDS + 1):
            product_id = DEMO_PRODUCT_ID if n == 1 else f"{DEMO_PRODUCT_ID}-{n}"
            response = await client.post("/admin/products", json={**product, "id": product_id})
            if response.status_code == 409:  # left from an earlier run: reopen it
                response = await client.patch(f"/admin/products/{product_id}", json=fresh)
                if response.status_code == 422:
                    # It opened in that run, and an opened sale's start cannot move: the
                    # newcomer gets a fresh demo under the next id instead of a stale one.
                    continue
            response.raise_for_status()
            return product_id
    raise httpx.HTTPError(f"the demo ids {DEMO_PRODUCT_ID}..-{DEMO_IDS} have all been used")


def _say(view: UpConsole | None, line: str) -> None:
    if view is not None:
        view.print(line)
    else:
        print(line, flush=True)


async def up(
    settings: Settings,
    *,
    embedded: set[str],
    demo: bool = False,
    stop: asyncio.Event | None = None,
    view: UpConsole | None = None,
    replicas: int = 1,
) -> int:
    """Run the platform until ``stop`` is set (SIGINT/SIGTERM); returns the exit code.

    With a ``view`` (a terminal), the processes log to files under ``<data-dir>/logs/`` and
    the view shows what matters; without, they log to our stderr as JSON lines.
    """
    stop = stop if stop is not None else asyncio.Event()
    logs_dir = settings.data_dir / "logs" if view is not None else None
    async with contextlib.AsyncExitStack() as stack:
        if view is not None:
            await stack.enter_async_context(view)  # entered first: it outlives the children
        supervisor = await stack.enter_async_context(Supervisor())
        if view is not None:
            view.supervisor = supervisor

        async def start_all() -> Settings:
            final = await start_infrastructure(supervisor, settings, embedded)
            await migrate_database(final, logs_dir)
            # Before anything produces: a broker's auto-create would give each topic one
            # partition, and one partition feeds one worker of the group at a time.
            await ensure_topics(final.kafka_bootstrap, max(final.kafka_partitions, replicas))
            await start_apps(supervisor, final, logs_dir, replicas)
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
        _say(view, f"READY gate={final.gate_url} queue={final.queue_url} shop={final.shop_url}")
        if view is not None:
            view.ready(Urls(final.gate_url, final.queue_url, final.shop_url))
        if demo:
            try:
                demo_id = await create_demo_sale(final)
                if view is not None:
                    view.demo_product = demo_id
                wait_url = f"{final.queue_url}/wait/{demo_id}"
                _say(view, f"Demo sale: {wait_url} opens in {DEMO_OPENS_IN_S} s")
            except httpx.HTTPError as exc:
                # The platform itself is up; say why the demo is missing and keep running.
                logger.error("demo sale not created", extra={"error": str(exc)})
                if view is None:
                    print(f"flashsale: demo sale not created: {exc}", file=sys.stderr, flush=True)
        await stopping
        logger.info("stopping")
        if view is not None:
            view.phase = "stopping"
    return 0


def _run_up(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    try:
        settings = settings_from_args(args, env)
    except ConfigError as exc:
        print(f"flashsale: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    embedded = embedded_wanted(args, env)
    try:
        busy = [p for r in replica_settings(settings, args.replicas) for p in ports_in_use(r)]
    except ConfigError as exc:
        print(f"flashsale: {exc}", file=sys.stderr, flush=True)
        return EXIT_CONFIG
    if busy:
        print(f"flashsale: ports already in use: {', '.join(busy)}", file=sys.stderr, flush=True)
        return 1
    if unreachable := asyncio.run(unreachable_servers(settings, set(_EXTERNAL) - embedded)):
        # Otherwise every app would start, answer its health check with 503, and `up` would
        # give up only after READY_TIMEOUT_S.
        print(f"flashsale: {unreachable}", file=sys.stderr, flush=True)
        return 1
    try:
        locked = lock_data_dir(settings.data_dir) if embedded else 0
    except OSError as exc:  # not creatable or not writable: a setting, not a crash
        print(
            f"flashsale: {setting_name('data_dir')}: {settings.data_dir} cannot be used: "
            f"{exc.strerror} (expected a directory this user can write)",
            file=sys.stderr,
            flush=True,
        )
        return EXIT_CONFIG
    if locked is None:
        print(
            f"flashsale: {settings.data_dir} is in use by another `flashsale up`",
            file=sys.stderr,
            flush=True,
        )
        return 1
    view = None
    if args.log_format == "console" or (args.log_format == "auto" and sys.stdout.isatty()):
        logs_dir = settings.data_dir / "logs"
        logs_dir.mkdir(parents=True, exist_ok=True)
        # Line-buffered and never closed: the last line before exit must reach the file.
        own_log = (logs_dir / OWN_LOG).open("a", buffering=1)
        setup_logging(settings.log_level, stream=own_log, secrets=settings.log_secrets())
        view = UpConsole(
            logs_dir=logs_dir,
            admin_key=settings.admin_key,
        )
    else:
        setup_logging(settings.log_level, secrets=settings.log_secrets())
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
            return await up(
                settings,
                embedded=embedded,
                demo=args.demo,
                stop=stop,
                view=view,
                replicas=args.replicas,
            )
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
    if args.command == "sale":
        sys.exit(sales.run(args, os.environ))
