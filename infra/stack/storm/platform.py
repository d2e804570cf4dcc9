"""The platform a storm runs against: a `flashsale up` child of our own, or given URLs; the
sales it creates and the stats it reads, all over HTTP (infra never imports a service)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx

from infra.stack.cli import REPLICA_PORT_STEP
from infra.stack.embedded import LOOPBACK, free_port

READY_TIMEOUT_S = 180.0  # a first start runs initdb for the embedded PostgreSQL
STOP_TIMEOUT_S = 30.0
# `flashsale up`'s five HTTP processes; with --replicas, replica i of each listens on its
# port + i * REPLICA_PORT_STEP.
APP_PORT_FLAGS = ("--gate-port", "--queue-port", "--shop-port", "--scheduler-port", "--worker-port")
PORT_TRIES = 20


@dataclass(frozen=True)
class Platform:
    queue_urls: tuple[str, ...]  # one per replica; any of them serves any visitor
    gate_urls: tuple[str, ...]
    shop_url: str
    admin_key: str = field(repr=False)  # never printed, not even in a traceback
    pid: int | None = None  # `flashsale up`, when this storm started it: its memory is sampled

    @property
    def queue_url(self) -> str:
        return self.queue_urls[0]


class PlatformError(Exception):
    """The platform did not start or did not take the sale: said in one line."""


def parse_ready(line: str) -> dict[str, str]:
    """``READY gate=... queue=... shop=...`` -> {"gate": ..., "queue": ..., "shop": ...}."""
    parts = line.split()
    if not parts or parts[0] != "READY":
        raise PlatformError(f"expected a READY line, got {line!r}")
    return dict(p.split("=", 1) for p in parts[1:] if "=" in p)


def replica_ports(replicas: int, kinds: int = len(APP_PORT_FLAGS)) -> list[int]:
    """``kinds`` base ports such that each base + i * REPLICA_PORT_STEP (i < replicas), the
    ports of replica i as `flashsale up --replicas` places them, is free and none repeats."""
    bases: list[int] = []
    taken: set[int] = set()
    for _ in range(PORT_TRIES * kinds):
        base = free_port()  # free, and never handed out before in this process
        run = {base + i * REPLICA_PORT_STEP for i in range(replicas)}
        if taken.isdisjoint(run) and all(_bindable(p) for p in run - {base}):
            bases.append(base)
            taken |= run
            if len(bases) == kinds:
                return bases
    raise PlatformError(f"no free ports for {replicas} replicas of {kinds} processes")


def _bindable(port: int) -> bool:
    if port > 65_535:
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        try:
            sock.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _replica_url(url: str, i: int) -> str:
    parts = urlsplit(url)
    assert parts.port is not None, url  # `flashsale up` always says its ports
    return parts._replace(netloc=f"{parts.hostname}:{parts.port + i * REPLICA_PORT_STEP}").geturl()


@contextlib.asynccontextmanager
async def flashsale_up(
    data_dir: Path, log: Path, admin_key: str, replicas: int = 1
) -> AsyncIterator[Platform]:
    """`flashsale up --dev --replicas N` as a child process on free ports, stopped with
    SIGTERM at the end.

    Every storm visitor comes from this machine's one IP: the join and visitor rate limits
    are turned off, or they would answer 429 to the storm, which is what they are for."""
    ports = replica_ports(replicas)
    argv = [
        *(sys.executable, "-m", "infra", "up", "--dev", "--data-dir", str(data_dir)),
        *(
            arg
            for flag, port in zip(APP_PORT_FLAGS, ports, strict=True)
            for arg in (flag, str(port))
        ),
        *("--replicas", str(replicas)),
        *("--join-rate-per-ip", "0", "--visitor-rate", "0", "--admin-key", admin_key),
    ]
    # Our URLs win over any FLASHSALE_*_URL of the caller's shell: this platform embeds all.
    env = {k: v for k, v in os.environ.items() if not k.startswith("FLASHSALE_")}
    with log.open("ab") as err:
        proc = await asyncio.create_subprocess_exec(
            *argv,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=err,
            env=env,
        )
    try:
        assert proc.stdout is not None
        try:
            raw = await asyncio.wait_for(proc.stdout.readline(), READY_TIMEOUT_S)
        except TimeoutError:
            raise PlatformError(f"flashsale up not READY after {READY_TIMEOUT_S:.0f} s") from None
        if not raw:
            raise PlatformError(f"flashsale up exited before READY; see {log}")
        urls = parse_ready(raw.decode().strip())  # replica 0's
        yield Platform(
            queue_urls=tuple(_replica_url(urls["queue"], i) for i in range(replicas)),
            gate_urls=tuple(_replica_url(urls["gate"], i) for i in range(replicas)),
            shop_url=urls["shop"],
            admin_key=admin_key,
            pid=proc.pid,
        )
    finally:
        await stop_process(proc)


async def stop_process(proc: asyncio.subprocess.Process, timeout_s: float = STOP_TIMEOUT_S) -> None:
    if proc.returncode is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        proc.send_signal(signal.SIGTERM)
    try:
        await asyncio.wait_for(proc.wait(), timeout_s)
    except TimeoutError:
        with contextlib.suppress(ProcessLookupError):
            proc.kill()
        await proc.wait()


def iso_z(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Admin:
    """The few admin and public calls a storm makes."""

    def __init__(self, platform: Platform) -> None:
        self.platform = platform
        self.client = httpx.AsyncClient(
            headers={"Authorization": f"Bearer {platform.admin_key}"},
            timeout=10.0,
            trust_env=False,  # a proxy from the environment must not sit between us and it
        )

    async def aclose(self) -> None:
        await self.client.aclose()

    async def create_sale(self, sale: dict[str, Any]) -> None:
        try:
            response = await self.client.post(f"{self.platform.shop_url}/admin/products", json=sale)
        except httpx.HTTPError as exc:
            raise PlatformError(f"admin API unreachable: {exc!r}") from None
        if response.status_code != 201:
            raise PlatformError(
                f"creating sale {sale['id']} answered {response.status_code}: {response.text}"
            )

    async def stats(self, product: str) -> dict[str, Any]:
        url = f"{self.platform.shop_url}/admin/sales/{product}/stats"
        response = await self.client.get(url)
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result

    async def sale_info(self, product: str) -> dict[str, Any]:
        response = await self.client.get(f"{self.platform.queue_url}/queue/{product}")
        response.raise_for_status()
        result: dict[str, Any] = response.json()
        return result


def sale_body(
    product: str,
    *,
    stock: int,
    mode: str,
    opens_in_s: float,
    batch_size: int,
    interval_s: float,
    abandon_s: int,
    pickup_s: int,
    overbook: float,
) -> dict[str, Any]:
    start = datetime.now(UTC) + timedelta(seconds=opens_in_s)
    return {
        "id": product,
        "name": f"Storm {product}",
        "price": 1000,
        "currency": "EUR",
        "stock": stock,
        "sale_start": iso_z(start),
        # The pre-queue is open from now until the start: the early joiners are shuffled.
        "prequeue_s": opens_in_s + 60,
        "queue_mode": "fifo" if mode == "fifo" else "shuffle_prequeue",
        "batch_size": batch_size,
        "interval_s": interval_s,
        "abandon_s": abandon_s,
        "pickup_s": pickup_s,
        "overbook": overbook,
        # Nobody pays in a storm: orders must not expire (and return stock) while it runs.
        "hold_s": 86_400,
        "token_ttl_s": 3_600,
    }
