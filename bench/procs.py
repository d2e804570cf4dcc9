"""The bench's server processes: each platform process (or a baseline) as its own child.

Every child is started exactly as production starts it (``python -m <module>``, settings from
the environment, :func:`infra.web.serve.serve`: one uvicorn worker), on a free loopback port,
and is stopped at the end of its block. Logs go to ``bench/results/logs/<name>.log``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from infra.settings import Settings
from infra.stack.embedded import free_port

REPO = Path(__file__).resolve().parents[1]
READY_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 15.0
START_ATTEMPTS = 3


class ChildExited(RuntimeError):
    """The child ended before it was ready."""


@dataclass(frozen=True)
class Child:
    proc: asyncio.subprocess.Process
    url: str  # base URL, "" for a process without HTTP
    log: Path


def child_env(settings: Settings) -> dict[str, str]:
    # Only these settings: a FLASHSALE_* variable of the caller's shell must not leak in.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHSALE_")}
    env.update(settings.to_env())
    return env


async def _wait_ready(url: str, proc: asyncio.subprocess.Process, log: Path) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        while True:
            if proc.returncode is not None:
                raise ChildExited(f"{url} exited ({proc.returncode}); see {log}")
            with contextlib.suppress(httpx.HTTPError):
                if (await client.get(url)).status_code == 200:
                    return
            if time.monotonic() > deadline:
                raise RuntimeError(f"{url} never answered; see {log}")
            await asyncio.sleep(0.1)


async def stop(proc: asyncio.subprocess.Process, sig: int = signal.SIGTERM) -> None:
    if proc.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(sig)
        try:
            await asyncio.wait_for(proc.wait(), STOP_TIMEOUT_S)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()


@contextlib.asynccontextmanager
async def service(
    module: str,
    settings: Settings,
    logs: Path,
    *,
    port_field: str | None = None,
    args: tuple[str, ...] = (),
    probe: str = "/healthz",
    name: str | None = None,
) -> AsyncIterator[Child]:
    """Run ``python -m module *args`` until the block ends. With ``port_field`` it listens on
    a free port (given through that settings field) and is ready once ``probe`` answers 200."""
    log = logs / f"{name or module}.log"
    for attempt in range(1, START_ATTEMPTS + 1):
        url = ""
        if port_field is not None:
            port = free_port()
            settings = settings.replace(**{port_field: port})
            url = f"http://{settings.host}:{port}"
        with log.open("ab") as out:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                module,
                *args,
                cwd=REPO,
                env=child_env(settings),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        try:
            if url:
                await _wait_ready(url + probe, proc, log)
        except ChildExited:
            # A "free" port is only free until someone binds it: an outgoing connection of
            # any process on the machine can take it first. Another port, then.
            if attempt == START_ATTEMPTS:
                raise
            continue
        except BaseException:
            await stop(proc)
            raise
        break
    try:
        yield Child(proc, url, log)
    finally:
        await stop(proc)


@dataclass(frozen=True)
class Platform:
    gate: str
    queue: str
    shop: str
    settings: Settings


_READY = re.compile(r"READY gate=(\S+) queue=(\S+) shop=(\S+)")


@contextlib.asynccontextmanager
async def platform(settings: Settings, logs: Path, *extra: str) -> AsyncIterator[Platform]:
    """``flashsale up`` itself, as a child, on free ports and the given servers' URLs: the
    four processes and the order worker, started and supervised the way users run them."""
    log = logs / "flashsale-up.log"
    for attempt in range(1, START_ATTEMPTS + 1):
        try:
            proc, up, stdout = await _start_platform(settings, log, extra)
        except ChildExited:
            if attempt == START_ATTEMPTS:  # a port taken meanwhile: see service()
                raise
            continue
        break
    # Keep draining its stdout, so a chatty child never blocks on a full pipe.
    drain = asyncio.create_task(_discard(stdout))
    try:
        yield up
    finally:
        drain.cancel()
        await stop(proc, signal.SIGINT)


async def _start_platform(
    settings: Settings, log: Path, extra: tuple[str, ...]
) -> tuple[asyncio.subprocess.Process, Platform, asyncio.StreamReader]:
    fields = ("gate_port", "queue_port", "shop_port", "scheduler_port", "worker_port")
    ports = {f: free_port() for f in fields}
    settings = settings.replace(**ports)
    argv = [
        *("--gate-port", str(ports["gate_port"]), "--queue-port", str(ports["queue_port"])),
        *("--shop-port", str(ports["shop_port"])),
        *("--scheduler-port", str(ports["scheduler_port"])),
        *("--worker-port", str(ports["worker_port"])),
        *("--redis-url", settings.redis_url, "--database-url", settings.database_url),
        *("--kafka-bootstrap", settings.kafka_bootstrap),
        *("--join-rate-per-ip", str(settings.join_rate_per_ip)),
        *("--visitor-rate", str(settings.visitor_rate)),
        "--dev",
        *extra,
    ]
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "infra",  # = the `flashsale` console script
            "up",
            *argv,
            cwd=REPO,
            env=child_env(settings),
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
        )
    assert proc.stdout is not None
    try:
        deadline = time.monotonic() + READY_TIMEOUT_S
        while True:
            left = deadline - time.monotonic()
            try:
                line = await asyncio.wait_for(proc.stdout.readline(), max(0.1, left))
            except TimeoutError:
                raise RuntimeError(f"flashsale up was not READY in time; see {log}") from None
            if not line:
                raise ChildExited(f"flashsale up exited ({await proc.wait()}); see {log}")
            if match := _READY.search(line.decode(errors="replace")):
                return proc, Platform(*match.groups(), settings=settings), proc.stdout
    except BaseException:
        await stop(proc, signal.SIGINT)
        raise


async def _discard(stream: asyncio.StreamReader) -> None:
    while await stream.read(65536):
        pass
