"""What the fuzzing found, one test each, on the real shop (tests/api/test_fuzz.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest
from redis.asyncio import Redis

from infra.constants import HEADER_PRODUCT_ID, HEADER_VISITOR_ID
from infra.settings import Settings
from tests.support import new_sale, running_shop
from token_gate.codec import new_visitor_id


@pytest.fixture
async def shop(stack_settings: Settings) -> AsyncIterator[httpx.AsyncClient]:
    async with running_shop(stack_settings, gate=True) as client:
        yield client


@pytest.mark.parametrize("key", ["", "x" * 65, "two words", "caf\u00e9"])
async def test_an_idempotency_key_that_is_not_one_is_refused_and_reserves_nothing(
    shop: httpx.AsyncClient, redis: Redis, key: str
) -> None:
    # Found: an empty Idempotency-Key was taken for none, so a client that meant to send one
    # (and would retry with it) got a new order on every retry.
    keys = await new_sale(redis, per_user_limit=5)
    identity = {HEADER_VISITOR_ID: new_visitor_id(), HEADER_PRODUCT_ID: keys.product_id}
    reply = await shop.post(
        f"/products/{keys.product_id}/orders",
        json={"quantity": 1},
        headers=[*identity.items(), ("Idempotency-Key", key.encode())],
    )
    assert reply.status_code == 422, reply.text
    assert reply.json()["error"] == "invalid_request"
    assert await redis.hlen(keys.orders) == 0
