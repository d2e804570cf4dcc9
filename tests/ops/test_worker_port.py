"""The order worker answers /healthz and /metrics on its own port (FLASHSALE_WORKER_PORT)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from infra.settings import Settings
from infra.stack.embedded import free_port
from infra.web.metrics import Metrics
from shop.worker_http import create_worker_app, serve_http
from tests.ops.platform import Platform


async def test_the_worker_answers_health_and_metrics_on_its_port(platform: Platform) -> None:
    async with httpx.AsyncClient(timeout=10.0, trust_env=False) as http:
        health = await http.get(f"{platform.url('shop.worker')}/healthz")
        assert (health.status_code, health.json()) == (200, {"status": "ok"})
        reply = await http.get(f"{platform.url('shop.worker')}/metrics")
        assert reply.status_code == 200
        assert reply.headers["content-type"].startswith("text/plain")
        families = {f.name for f in text_string_to_metric_families(reply.text)}
        assert {
            "flashsale_worker_batch_size",
            "flashsale_worker_batch_duration_seconds",
            "flashsale_worker_kafka_consumer_lag",
            "flashsale_worker_dlq_size",
            "flashsale_worker_orders",
            "flashsale_worker_orders_republished",
            "flashsale_worker_http_requests",
        } <= families, families
        # The port serves nothing but operations: no route of the shop is there.
        assert (await http.get(f"{platform.url('shop.worker')}/products")).status_code == 404
        doc = await http.get(f"{platform.url('shop.worker')}/openapi.json")
        assert {"/healthz", "/metrics"} <= set(doc.json()["paths"])
        assert not any(path.startswith(("/products", "/admin")) for path in doc.json()["paths"])


async def test_a_taken_port_costs_the_figures_not_the_orders(
    stack_settings: Settings, caplog: pytest.LogCaptureFixture
) -> None:
    """serve_http on a port another process holds: a warning, and the task waits to be
    cancelled with the worker's others (it does not end, which would stop the worker)."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        settings = stack_settings.replace(worker_port=taken.getsockname()[1])
        app = create_worker_app(Metrics("t"), _healthy)
        with caplog.at_level(logging.WARNING, "flashsale.worker"):
            task = asyncio.create_task(serve_http(app, settings))
            await asyncio.sleep(0.5)
        assert not task.done()
        assert "is not free" in caplog.text
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_the_port_serves_until_cancelled_then_closes(stack_settings: Settings) -> None:
    settings = stack_settings.replace(worker_port=free_port())
    task = asyncio.create_task(serve_http(create_worker_app(Metrics("t"), _healthy), settings))
    url = f"http://127.0.0.1:{settings.worker_port}"
    async with httpx.AsyncClient(timeout=5.0, trust_env=False) as http:
        for _ in range(50):
            with contextlib.suppress(httpx.ConnectError):
                if (await http.get(f"{url}/healthz")).status_code == 200:
                    break
            await asyncio.sleep(0.1)
        assert (await http.get(f"{url}/metrics")).status_code == 200
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 5)
        with pytest.raises(httpx.ConnectError):
            await http.get(f"{url}/healthz")


async def _healthy() -> str | None:
    return None
