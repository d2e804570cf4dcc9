"""Every process of the platform as production runs it (`python -m <module>`, each on a free
loopback port), on the session's real Valkey, PostgreSQL and tansu: what Prometheus scrapes."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from infra.settings import Settings
from infra.stack.embedded import free_port

REPO = Path(__file__).resolve().parents[2]
READY_TIMEOUT_S = 40.0
# module -> its Settings port field: the five scrape targets of infra/prometheus/prometheus.yml.
PROCESSES = {
    "token_gate": "gate_port",
    "queue_server": "queue_port",
    "shop": "shop_port",
    "scheduler": "scheduler_port",
    "shop.worker": "worker_port",
}


@dataclass
class Platform:
    settings: Settings
    logs: dict[str, Path]

    def url(self, module: str) -> str:
        return f"http://127.0.0.1:{getattr(self.settings, PROCESSES[module])}"

    def tails(self) -> str:
        return "\n".join(f"--- {m}\n{p.read_text()[-3000:]}" for m, p in self.logs.items())

    async def scrape(self, http: httpx.AsyncClient, module: str) -> str:
        reply = await http.get(f"{self.url(module)}/metrics")
        assert reply.status_code == 200, (module, reply.status_code, reply.text)
        return reply.text


@contextlib.asynccontextmanager
async def _process(argv: list[str], env: dict[str, str], log: Path) -> AsyncIterator[None]:
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=REPO, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        yield
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 15)
            except TimeoutError:
                proc.kill()
                await proc.wait()


async def _wait_healthy(http: httpx.AsyncClient, platform: Platform) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    for module in PROCESSES:
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(f"{platform.url(module)}/healthz")).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise AssertionError(f"{module} never healthy\n{platform.tails()}")
            await asyncio.sleep(0.1)


@contextlib.asynccontextmanager
async def running_platform(
    base: Settings, logs_dir: Path, **changes: object
) -> AsyncIterator[Platform]:
    ports = {field: free_port() for field in PROCESSES.values()}
    settings = base.replace(
        **ports,
        join_rate_per_ip=0.0,  # every visitor of the test comes from 127.0.0.1
        visitor_rate=0.0,
        log_level="warning",
        **changes,
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHSALE_")}
    env |= settings.to_env()
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)  # one worker per process, as deployed
    platform = Platform(settings, {m: logs_dir / f"{m}.log" for m in PROCESSES})
    async with contextlib.AsyncExitStack() as stack:
        for module in PROCESSES:
            argv = [sys.executable, "-m", module]
            await stack.enter_async_context(_process(argv, env, platform.logs[module]))
        async with httpx.AsyncClient(timeout=10.0, trust_env=False) as http:
            await _wait_healthy(http, platform)
        yield platform
