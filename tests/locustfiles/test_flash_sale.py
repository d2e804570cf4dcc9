"""The storm kit runs for real: Locust, headless, against a live queue server, scheduler,
token gate, shop and order worker, each its own process on a free loopback port, on real
Valkey, tansu and PostgreSQL.

Locust monkey-patches the standard library with gevent, so it only ever runs in a subprocess.
"""

from __future__ import annotations

import asyncio
import contextlib
import csv
import os
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
from redis.asyncio import Redis

from infra.settings import Settings
from infra.stack.embedded import free_port
from tests.support import new_sale

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
LOCUSTFILE = REPO / "locustfiles" / "flash_sale.py"
VISITORS = 30
STOCK = 10
READY_TIMEOUT_S = 20.0
LOCUST_TIMEOUT_S = 40.0


def _clean_env() -> dict[str, str]:
    # The outer environment may carry FLASHSALE_* settings of another deployment.
    return {k: v for k, v in os.environ.items() if not k.startswith("FLASHSALE_")}


@contextlib.asynccontextmanager
async def _process(
    argv: list[str], env: dict[str, str], log: Path
) -> AsyncIterator[asyncio.subprocess.Process]:
    """A child process for the duration of the block; stopped with SIGTERM, then killed."""
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            *argv, cwd=REPO, env=env, stdin=asyncio.subprocess.DEVNULL, stdout=out, stderr=out
        )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(proc.wait(), 10)
            except TimeoutError:
                proc.kill()
                await proc.wait()


class _PortTaken(Exception):
    """A child lost its port to another process between free_port() and its bind."""


async def _wait_ok(
    client: httpx.AsyncClient, url: str, procs: list[asyncio.subprocess.Process], logs: list[Path]
) -> None:
    deadline = time.monotonic() + READY_TIMEOUT_S
    while True:
        with contextlib.suppress(httpx.HTTPError):
            if (await client.get(url)).status_code == 200:
                return
        if any(proc.returncode is not None for proc in procs):
            # Fail at once, with the reason, rather than after the whole timeout.
            tails = _tails(logs)
            if "address already in use" in tails.lower():
                raise _PortTaken(tails)
            raise AssertionError("a server exited while starting\n" + tails)
        if time.monotonic() > deadline:
            raise AssertionError(f"{url} never answered 200\n" + _tails(logs))
        await asyncio.sleep(0.1)


async def _start_servers(
    stack: contextlib.AsyncExitStack, urls: dict[str, str], tmp_path: Path
) -> tuple[Settings, list[Path]]:
    """Every process of the platform, each `python -m` with the env of its Settings."""
    ports = {name: free_port() for name in ("queue", "scheduler", "gate", "shop", "worker")}
    settings = Settings.from_env(
        {},
        dev=True,
        **urls,
        queue_port=ports["queue"],
        scheduler_port=ports["scheduler"],
        worker_port=ports["worker"],
        gate_port=ports["gate"],
        shop_port=ports["shop"],
        join_rate_per_ip=0,  # every Locust user comes from 127.0.0.1
        visitor_rate=0,
        log_level="warning",
        data_dir=tmp_path / "data",
    )
    env = {**_clean_env(), **settings.to_env()}
    modules = ("queue_server", "scheduler", "shop", "token_gate", "shop.worker")
    logs = [tmp_path / f"{m}.log" for m in modules]
    procs = [
        await stack.enter_async_context(_process([sys.executable, "-m", module], env, log))
        for module, log in zip(modules, logs, strict=True)
    ]
    async with httpx.AsyncClient(timeout=2.0, trust_env=False) as client:
        for url in (
            settings.queue_url,
            settings.scheduler_url,
            settings.shop_url,
            settings.gate_url,
        ):
            await _wait_ok(client, f"{url}/healthz", procs, logs)
    return settings, logs


def _tails(logs: list[Path]) -> str:
    return "\n".join(f"--- {p.name}\n{p.read_text(errors='replace')[-3000:]}" for p in logs)


def _rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


async def test_storm_sells_exactly_the_stock_and_everyone_stops(
    redis: Redis,
    redis_url: str,
    migrated_database_url: str,
    kafka_bootstrap: str,
    tmp_path: Path,
) -> None:
    urls = {
        "redis_url": redis_url,
        "database_url": migrated_database_url,
        "kafka_bootstrap": kafka_bootstrap,
    }
    async with contextlib.AsyncExitStack() as stack:
        for attempt in range(3):
            # Other test sessions on this machine pick free ports too: a port can be taken
            # between free_port() and the child's bind. Then try again on new ports.
            servers = contextlib.AsyncExitStack()
            try:
                settings, logs = await _start_servers(servers, urls, tmp_path)
            except _PortTaken:
                await servers.aclose()
                if attempt == 2:
                    raise
                continue
            except BaseException:
                await servers.aclose()  # no child outlives a failed start
                raise
            stack.push_async_exit(servers)
            break

        # Overbook 1: exactly the stock is admitted, each admitted visitor buys one, and then
        # the whole line hears sold_out. abandon_s 10 keeps poll_after_ms <= 3.3 s.
        keys = await new_sale(
            redis, stock=STOCK, batch_size=5, interval_s=0.2, overbook=1.0, abandon_s=10
        )
        stats_prefix = tmp_path / "storm"
        locust_log = tmp_path / "locust.log"
        locust_env = {**_clean_env(), "FLASHSALE_PRODUCT": keys.product_id}
        with locust_log.open("wb") as out:
            locust = await asyncio.create_subprocess_exec(
                *(sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless"),
                *("-u", str(VISITORS), "-r", str(VISITORS), "-t", "30s"),
                *("--host", settings.queue_url, "--only-summary", "--csv", str(stats_prefix)),
                cwd=REPO,
                env=locust_env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=out,
                stderr=out,
            )
        try:
            code = await asyncio.wait_for(locust.wait(), LOCUST_TIMEOUT_S)
        finally:
            if locust.returncode is None:
                locust.kill()
                await locust.wait()

    report = locust_log.read_text(errors="replace")
    assert code == 0, f"locust failed ({code}):\n{report[-4000:]}\n{_tails(logs)}"

    rows = _rows(stats_prefix.with_name("storm_stats.csv"))
    by_name = {(r["Type"], r["Name"]): r for r in rows}
    # Requests group by endpoint, not by product.
    assert int(by_name[("POST", "join")]["Request Count"]) >= VISITORS
    assert int(by_name[("GET", "status")]["Request Count"]) > 0
    assert int(by_name[("POST", "order")]["Request Count"]) == STOCK
    assert all(int(r["Failure Count"]) == 0 for r in rows), rows
    failures = _rows(stats_prefix.with_name("storm_failures.csv"))
    assert not any(" 5" in f["Error"] or f["Error"].startswith("5") for f in failures), failures

    # The custom metrics: one admission wait per admitted visitor, one final state each.
    assert int(by_name[("VISITOR", "join_to_admission")]["Request Count"]) == STOCK
    outcomes = {r["Name"]: int(r["Request Count"]) for r in rows if r["Type"] == "OUTCOME"}
    assert outcomes == {"bought": STOCK, "sold_out": VISITORS - STOCK}, outcomes
    assert "final states" in report

    # And the sale itself agrees: exactly the stock was admitted and sold.
    assert int(await redis.hget(keys.sale, "issued") or 0) == STOCK
    assert int(await redis.get(keys.stock)) == 0
    assert await redis.hlen(keys.orders) == STOCK
