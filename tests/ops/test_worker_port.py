"""The order worker answers /healthz and /metrics on its own port (FLASHSALE_WORKER_PORT)."""

from __future__ import annotations

import httpx
from prometheus_client.parser import text_string_to_metric_families

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
