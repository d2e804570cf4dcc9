"""PostgreSQL down: the routes that need it answer 503 with Retry-After, never a 500."""

from __future__ import annotations

import pytest
from redis.asyncio import Redis

from infra.settings import Settings
from infra.stack.embedded import free_port
from shop.app import create_app
from tests.orders.conftest import identity
from tests.support import new_sale, running


@pytest.mark.parametrize(
    ("method", "suffix", "body"),
    [("GET", "", None), ("POST", "/pay", {"card": "4242424242424242"}), ("DELETE", "", None)],
)
async def test_order_routes_answer_503_while_postgres_is_down(
    stack_settings: Settings, redis: Redis, method: str, suffix: str, body: object
) -> None:
    nowhere = f"postgresql+asyncpg://flashsale:x@127.0.0.1:{free_port()}/flashsale"
    settings = stack_settings.replace(database_url=nowhere)
    keys = await new_sale(redis)
    order_id = "o_" + "0" * 24
    async with running(create_app(settings)) as shop:
        reply = await shop.request(
            method,
            f"/products/{keys.product_id}/orders/{order_id}{suffix}",
            json=body,
            headers=identity(settings, keys.product_id, "v-db-down"),
        )
    assert reply.status_code == 503, reply.text
    assert reply.json()["error"] == "unavailable"
    assert reply.headers["retry-after"] == "1"
