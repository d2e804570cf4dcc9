"""The whole platform as real processes, each under a supervisor of its own, for fault tests.

Valkey, PostgreSQL and tansu are the faults suite's own (killing them must not break the
rest of the session), and so are the app processes: queue_server, two schedulers, shop,
token_gate and the order worker, each started as production starts it (``python -m <module>``,
settings from the environment). One supervisor per process, so that a test can either
``kill -9`` a process and watch its supervisor restart it (as ``flashsale up`` would), or stop
it for a while and start it again on the same port and data directory.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from infra.settings import Settings
from infra.stack.embedded import (
    EmbeddedServer,
    PostgresServer,
    TansuServer,
    ValkeyServer,
    free_port,
    start_embedded,
)
from infra.stack.supervisor import Child, ChildSpec, Supervisor
from infra.topics import ensure_topics

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 60.0
# A test's reconciler waits this long before it re-publishes what PostgreSQL lacks (the
# default is 10 s: a fault test would spend most of its time waiting for it).
RECONCILE_GRACE_S = 1.5

Probe = Callable[[], Awaitable[None]]


def healthz_probe(url: str) -> Probe:
    async def probe() -> None:
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            response = await client.get(url)
        if response.status_code != 200:
            raise RuntimeError(f"{url} answered {response.status_code}")

    return probe


@dataclass
class Proc:
    """One process under its own supervisor: kill it, stop it, start it again."""

    name: str
    spec: Callable[[], ChildSpec] | None = None
    embedded: EmbeddedServer | None = None
    url: str = ""  # base URL of an HTTP process
    supervisor: Supervisor | None = field(default=None, repr=False)

    async def start(self) -> None:
        self.supervisor = Supervisor()
        if self.embedded is not None:
            await start_embedded(self.supervisor, self.embedded, READY_TIMEOUT_S)
        else:
            assert self.spec is not None
            child = await self.supervisor.add(self.spec())
            await self.supervisor.wait_ready(child, READY_TIMEOUT_S)

    async def stop(self) -> None:
        if self.supervisor is not None:
            await self.supervisor.stop()
            self.supervisor = None

    @property
    def child(self) -> Child:
        assert self.supervisor is not None, f"{self.name} is stopped"
        return self.supervisor.children[0]

    @property
    def pid(self) -> int | None:
        return self.child.pid if self.supervisor is not None else None

    def kill9(self) -> int:
        """SIGKILL, no clean shutdown; returns the pid that died. The supervisor restarts it."""
        pid = self.pid
        assert pid is not None, f"{self.name} is not running"
        os.kill(pid, signal.SIGKILL)
        return pid

    def pause(self) -> None:
        """SIGSTOP: the process is there but does nothing (a worker that lags far behind)."""
        assert self.pid is not None
        os.kill(self.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.pid is not None
        os.kill(self.pid, signal.SIGCONT)

    @property
    def up(self) -> bool:
        return self.supervisor is not None and self.pid is not None and self.child.ready

    async def wait_up(self, timeout_s: float = 30.0, not_pid: int | None = None) -> float:
        """Until a process (other than ``not_pid``) answers its probe; returns when (monotonic)."""
        deadline = time.monotonic() + timeout_s
        while not (self.up and self.pid != not_pid):
            if time.monotonic() > deadline:
                raise AssertionError(f"{self.name} not up again within {timeout_s:g} s")
            await asyncio.sleep(0.05)
        return time.monotonic()


class FaultPlatform:
    """Every process of the platform, started once for the faults suite."""

    def __init__(self, data_dir: Path) -> None:
        self.data_dir = data_dir
        self.logs = data_dir / "logs"
        self.valkey = ValkeyServer(data_dir)
        self.postgres = PostgresServer(data_dir)
        self.tansu = TansuServer(data_dir)
        self.procs: dict[str, Proc] = {}
        self.settings: Settings | None = None

    @property
    def s(self) -> Settings:
        assert self.settings is not None
        return self.settings

    def _app(self, name: str, module: str, port: int, **changes: object) -> Proc:
        url = f"http://127.0.0.1:{port}"

        def spec() -> ChildSpec:
            # Only our settings: a FLASHSALE_* variable of the caller's shell must not leak in.
            env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHSALE_")}
            env.update(self.s.replace(**changes).to_env())
            probe = healthz_probe(f"{url}/healthz") if port else None
            return ChildSpec(
                name,
                [sys.executable, "-m", module],
                env=env,
                probe=probe,
                log_path=self.logs / f"{name}.log",
                cwd=REPO,
            )

        return Proc(name, spec, url=url if port else "")

    async def start(self) -> None:
        infra = {
            "valkey": self.valkey,
            "postgres": self.postgres,
            "tansu": self.tansu,
        }
        for name, server in infra.items():
            self.procs[name] = Proc(name, embedded=server)
        await asyncio.gather(*(p.start() for p in self.procs.values()))
        from shop.migrate import upgrade

        await upgrade(self.postgres.url)
        # As `flashsale up` does, before anything produces (auto-created topics differ).
        await ensure_topics(self.tansu.url, Settings().kafka_partitions)
        names = ("queue", "scheduler-a", "scheduler-b", "shop", "gate", "worker")
        ports = {n: free_port() for n in names}
        self.settings = Settings.from_env(
            {},
            dev=True,
            redis_url=self.valkey.url,
            database_url=self.postgres.url,
            kafka_bootstrap=self.tansu.url,
            queue_port=ports["queue"],
            shop_port=ports["shop"],
            gate_port=ports["gate"],
            scheduler_port=ports["scheduler-a"],
            worker_port=ports["worker"],
            # Every visitor of a storm comes from this machine: the abuse limits stay off.
            join_rate_per_ip=0.0,
            visitor_rate=0.0,
            reconcile_grace_s=RECONCILE_GRACE_S,
            # Small batches, so a storm of tens of orders is several batches, and a kill
            # lands between fetch and commit.
            worker_batch=5,
            log_level="warning",
        )
        apps = [
            self._app("queue_server", "queue_server", ports["queue"]),
            self._app("scheduler-a", "scheduler", ports["scheduler-a"]),
            self._app(
                "scheduler-b",
                "scheduler",
                ports["scheduler-b"],
                scheduler_port=ports["scheduler-b"],
            ),
            self._app("shop", "shop", ports["shop"]),
            self._app("token_gate", "token_gate", ports["gate"]),
            self._app("worker", "shop.worker", 0),
        ]
        for proc in apps:
            self.procs[proc.name] = proc
        await asyncio.gather(*(p.start() for p in apps))

    async def stop(self) -> None:
        # The apps together, then what they lean on (an app stopping finds its stores there).
        infra = ("valkey", "postgres", "tansu")
        apps = [p for n, p in self.procs.items() if n not in infra]
        await asyncio.gather(*(p.stop() for p in apps))
        await asyncio.gather(*(self.procs[n].stop() for n in infra if n in self.procs))

    def __getitem__(self, name: str) -> Proc:
        return self.procs[name]

    @property
    def queue(self) -> str:
        return self["queue_server"].url

    @property
    def gate(self) -> str:
        return self["token_gate"].url

    @property
    def shop(self) -> str:
        return self["shop"].url

    async def all_healthy(self, timeout_s: float = 30.0) -> None:
        """Every process is up (its supervisor's probe answered) and every /healthz says 200."""
        deadline = time.monotonic() + timeout_s
        while True:
            down = [p.name for p in self.procs.values() if not p.up]
            if not down:
                down = [n for n, p in self.procs.items() if p.url and not await _healthy(p.url)]
            if not down:
                return
            if time.monotonic() > deadline:
                raise AssertionError(f"not healthy after {timeout_s:g} s: {', '.join(down)}")
            await asyncio.sleep(0.1)

    def restarts(self) -> dict[str, int]:
        """How often each running process has been restarted by its supervisor."""
        return {n: p.child.restarts for n, p in self.procs.items() if p.supervisor is not None}

    def assert_nobody_else_died(self, before: dict[str, int], victim: str) -> None:
        """A fault in one process is no reason for another to die (and pay its restart)."""
        after = {n: c for n, c in self.restarts().items() if n != victim}
        expected = {n: c for n, c in before.items() if n != victim}
        assert after == expected, f"processes that died with {victim}: {after} (before {expected})"

    def log_tail(self, name: str, lines: int = 30) -> str:
        path = self.logs / f"{name}.log"
        with contextlib.suppress(OSError):
            return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
        return ""


async def _healthy(url: str) -> bool:
    try:
        async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
            return (await client.get(f"{url}/healthz")).status_code == 200
    except httpx.HTTPError:
        return False
