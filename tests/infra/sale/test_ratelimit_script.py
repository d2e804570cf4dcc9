"""ratelimit.lua (lib.lua's token bucket) through SaleScripts.take_token, on a real Valkey."""

from __future__ import annotations

import asyncio

from redis.asyncio import Redis

from infra.constants import PRODUCT_ID_RE
from infra.sale.keys import SaleKeys
from infra.sale.scripts import SaleScripts
from tests.support import unique_id


async def test_bucket_drains_refuses_and_refills(redis: Redis) -> None:
    scripts = SaleScripts(redis)
    bucket = SaleKeys(unique_id()).visitor_rate("v")
    # 20 per second, 3 deep: a token every 50 ms.
    replies = [await scripts.take_token(bucket, 20.0, 3.0) for _ in range(3)]
    assert [(allowed, left) for allowed, left, _ in replies] == [(1, 2), (1, 1), (1, 0)]
    allowed, left, retry_ms = await scripts.take_token(bucket, 20.0, 3.0)
    assert (allowed, left) == (0, 0)
    assert 0 < retry_ms <= 50
    # The bucket forgets itself once it would be full again (plus a second).
    assert 0 < await redis.pttl(bucket) <= 3 * 50 + 1000
    await asyncio.sleep(retry_ms / 1000 + 0.01)
    allowed, left, _ = await scripts.take_token(bucket, 20.0, 3.0)
    assert (allowed, left) == (1, 0)


async def test_refusals_take_nothing(redis: Redis) -> None:
    scripts = SaleScripts(redis)
    bucket = SaleKeys(unique_id()).visitor_rate("v")
    assert (await scripts.take_token(bucket, 1.0, 1.0))[0] == 1
    waits = [(await scripts.take_token(bucket, 1.0, 1.0))[2] for _ in range(5)]
    # Each refusal is told the time to the same next token, not pushed further back.
    assert all(0 < w <= 1000 for w in waits)
    assert waits == sorted(waits, reverse=True)


def test_product_id_refuses_a_trailing_newline() -> None:
    assert PRODUCT_ID_RE.match("shoe-1")
    assert PRODUCT_ID_RE.match("shoe-1\n") is None
    assert PRODUCT_ID_RE.fullmatch("shoe-1\n") is None
    assert PRODUCT_ID_RE.match("a" * 65) is None
