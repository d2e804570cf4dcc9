"""The gate's per-visitor token bucket on everything under /products/{id}/orders."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager

import httpx
import pytest
from redis.asyncio import Redis

from infra.sale.keys import SaleKeys
from infra.settings import Settings
from tests.shop.helpers import assert_error
from tests.support import running, unique_id
from tests.token_gate.conftest import Echo, bearer, free_port
from tests.token_gate.upstreams import eventually, metric
from token_gate.app import create_app as create_gate
from token_gate.codec import TokenCodec

RATE = 5.0  # per second: a burst of 10, one token back every 200 ms

GateAt = Callable[..., AbstractAsyncContextManager[httpx.AsyncClient]]


def token(codec: TokenCodec, product_id: str, visitor: str) -> dict[str, str]:
    return bearer(codec.mint_access(visitor, product_id, int(time.time()) + 300))


@pytest.fixture
def gate_at(gate_settings: Settings, echo: Echo) -> GateAt:
    """A gate in front of the echo upstream, at a given visitor rate."""

    def make(rate: float, **changes: object) -> AbstractAsyncContextManager[httpx.AsyncClient]:
        changes = {"shop_upstream_url": echo.url, "visitor_rate": rate, **changes}
        settings = gate_settings.replace(**changes)
        return running(create_gate(settings))

    return make


@pytest.fixture
async def limited(gate_at: GateAt) -> AsyncIterator[httpx.AsyncClient]:
    async with gate_at(RATE) as gate:
        yield gate


async def test_burst_passes_then_429(
    limited: httpx.AsyncClient, echo: Echo, codec: TokenCodec, redis: Redis
) -> None:
    pid, visitor = unique_id("rl"), unique_id("v")
    auth = token(codec, pid, visitor)
    # Every route under /orders draws on the same bucket.
    calls = [
        ("POST", f"/products/{pid}/orders"),
        ("GET", f"/products/{pid}/orders/o-1"),
        ("POST", f"/products/{pid}/orders/o-1/pay"),
        ("DELETE", f"/products/{pid}/orders/o-1"),
        ("GET", f"/products/{pid}/orders"),
    ]
    for i in range(10):
        method, path = calls[i % len(calls)]
        reply = await limited.request(method, path, headers=auth)
        assert reply.status_code == 299, reply.text
        assert reply.headers["x-ratelimit-limit"] == "10"
        assert reply.headers["x-ratelimit-remaining"] == str(9 - i)
    assert len(echo.seen) == 10

    reply = await limited.post(f"/products/{pid}/orders", headers=auth)
    assert_error(reply, 429, "rate_limited")
    assert reply.headers["retry-after"] == "1"  # 200 ms at most, in whole seconds
    assert reply.headers["x-ratelimit-limit"] == "10"
    assert reply.headers["x-ratelimit-remaining"] == "0"
    assert len(echo.seen) == 10  # the refused request never reached the shop

    # The bucket lives on the sale's hash tag and expires on its own.
    bucket = SaleKeys(pid).visitor_rate(visitor)
    assert bucket.startswith(f"fs:{{{pid}}}:")
    assert 0 < await redis.pttl(bucket) <= 3000
    metrics = (await limited.get("/metrics")).text
    assert metric(metrics, "flashsale_gate_rate_limited_total") == 1


async def test_other_visitors_and_products_have_their_own_bucket(
    limited: httpx.AsyncClient, echo: Echo, codec: TokenCodec
) -> None:
    pid, other_pid, visitor = unique_id("rl"), unique_id("rl"), unique_id("v")
    for _ in range(10):
        assert (
            await limited.get(f"/products/{pid}/orders", headers=token(codec, pid, visitor))
        ).status_code == 299
    assert_error(
        await limited.get(f"/products/{pid}/orders", headers=token(codec, pid, visitor)),
        429,
        "rate_limited",
    )
    another = await limited.get(f"/products/{pid}/orders", headers=token(codec, pid, "someone"))
    assert another.status_code == 299
    assert another.headers["x-ratelimit-remaining"] == "9"
    elsewhere = token(codec, other_pid, visitor)
    reply = await limited.get(f"/products/{other_pid}/orders", headers=elsewhere)
    assert reply.status_code == 299
    assert reply.headers["x-ratelimit-remaining"] == "9"


async def test_tokens_come_back_over_time(
    limited: httpx.AsyncClient, echo: Echo, codec: TokenCodec
) -> None:
    pid = unique_id("rl")
    auth = token(codec, pid, unique_id("v"))
    path = f"/products/{pid}/orders"
    while (await limited.get(path, headers=auth)).status_code != 429:
        pass
    reached = len(echo.seen)

    async def allowed() -> bool:
        return (await limited.get(path, headers=auth)).status_code == 299

    waited = await eventually(allowed, timeout_s=3.0, every_s=0.02)
    # At 5 per second the next token takes up to 200 ms; being refused in the meantime
    # does not delay it (a refusal takes no token).
    assert 0.02 <= waited < 1.0
    assert len(echo.seen) == reached + 1


async def test_rate_zero_turns_the_limit_off(
    gate_at: GateAt, echo: Echo, codec: TokenCodec, redis: Redis
) -> None:
    pid, visitor = unique_id("rl"), unique_id("v")
    async with gate_at(0) as gate:
        for _ in range(50):
            reply = await gate.post(f"/products/{pid}/orders", headers=token(codec, pid, visitor))
            assert reply.status_code == 299
            assert "x-ratelimit-limit" not in reply.headers
            assert "x-ratelimit-remaining" not in reply.headers
    assert len(echo.seen) == 50
    assert await redis.exists(SaleKeys(pid).visitor_rate(visitor)) == 0


async def test_public_routes_are_not_limited(gate_at: GateAt, echo: Echo) -> None:
    async with gate_at(0.5) as gate:  # a burst of 1
        for _ in range(5):
            reply = await gate.get("/products/shoe-1")
            assert reply.status_code == 299
            assert "x-ratelimit-limit" not in reply.headers


async def test_slow_rate_still_lets_one_through(gate_at: GateAt, codec: TokenCodec) -> None:
    pid = unique_id("rl")
    auth = token(codec, pid, unique_id("v"))
    async with gate_at(0.2) as gate:  # 0.4 tokens of burst would refuse everything
        first = await gate.get(f"/products/{pid}/orders", headers=auth)
        assert first.status_code == 299
        assert first.headers["x-ratelimit-limit"] == "1"
        assert first.headers["x-ratelimit-remaining"] == "0"
        second = await gate.get(f"/products/{pid}/orders", headers=auth)
        assert_error(second, 429, "rate_limited")
        assert second.headers["retry-after"] == "5"


async def test_limit_headers_on_gate_errors_after_the_quota(
    gate_at: GateAt, codec: TokenCodec
) -> None:
    pid = unique_id("rl")
    nowhere = f"http://127.0.0.1:{free_port()}"
    async with gate_at(RATE, shop_upstream_url=nowhere) as gate:
        reply = await gate.post(f"/products/{pid}/orders", headers=token(codec, pid, "v"))
        assert_error(reply, 503, "upstream_unavailable")
        assert reply.headers["x-ratelimit-remaining"] == "9"
        # A bad token is refused before the bucket is touched.
        reply = await gate.post(f"/products/{pid}/orders")
        assert_error(reply, 401, "token_missing")
        assert "x-ratelimit-limit" not in reply.headers


async def test_redis_down_fails_open(gate_at: GateAt, echo: Echo, codec: TokenCodec) -> None:
    pid = unique_id("rl")
    async with gate_at(RATE, redis_url=f"redis://127.0.0.1:{free_port()}/0") as gate:
        for _ in range(12):  # more than the burst: no bucket, no limit
            reply = await gate.get(f"/products/{pid}/orders", headers=token(codec, pid, "v"))
            assert reply.status_code == 299
            assert "x-ratelimit-limit" not in reply.headers
        # ...but health says the gate is missing a dependency.
        assert_error(await gate.get("/healthz"), 503, "unavailable")
