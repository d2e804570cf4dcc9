"""The gate when the shop fails: the circuit breaker, timeouts, Retry-After."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from infra.settings import Settings
from tests.shop.helpers import assert_error
from tests.support import running
from tests.token_gate.conftest import free_port
from tests.token_gate.upstreams import (
    Upstream,
    breaker_state,
    eventually,
    metric,
    serving_upstream,
)
from token_gate.app import create_app as create_gate
from token_gate.breaker import CircuitBreaker
from token_gate.upstream import UpstreamTimeout

COOLDOWN_S = 0.3


@pytest.fixture
async def upstream() -> AsyncIterator[Upstream]:
    async with serving_upstream() as up:
        yield up


@pytest.fixture
async def guarded(gate_settings: Settings, upstream: Upstream) -> AsyncIterator[httpx.AsyncClient]:
    """A gate in front of `upstream` whose breaker opens after 3 failures for COOLDOWN_S."""
    app = create_gate(
        gate_settings.replace(shop_upstream_url=upstream.url),
        breaker=CircuitBreaker(failure_threshold=3, cooldown_s=COOLDOWN_S),
    )
    async with running(app) as client:
        yield client


async def half_open(gate: httpx.AsyncClient) -> None:
    async def check() -> bool:
        return await breaker_state(gate) == "half_open"

    await eventually(check)


async def test_failing_shop_opens_the_breaker_which_then_spares_it(
    guarded: httpx.AsyncClient, upstream: Upstream
) -> None:
    upstream.status = 502  # a proxy between says the shop does not answer
    for _ in range(3):
        reply = await guarded.get("/products/shoe-1")
        assert reply.status_code == 502  # that answer, passed on
        assert reply.json() == {"hits": upstream.hits}
    assert upstream.hits == 3
    assert await breaker_state(guarded) == "open"

    for _ in range(10):
        reply = await guarded.get("/products/shoe-1")
        assert_error(reply, 503, "upstream_unavailable")
        assert reply.headers["retry-after"] == "1"  # ceil of what is left of 0.3 s
    assert upstream.hits == 3  # answered by the gate alone
    metrics = (await guarded.get("/metrics")).text
    assert metric(metrics, "flashsale_gate_upstream_rejected_total") == 10
    assert metric(metrics, "flashsale_gate_upstream_errors_total", cause="status_502") == 3

    # After the cool-down one probe goes through; the shop still fails, so it opens again.
    await half_open(guarded)
    assert (await guarded.get("/products/shoe-1")).status_code == 502
    assert upstream.hits == 4
    assert await breaker_state(guarded) == "open"
    assert_error(await guarded.get("/products/shoe-1"), 503, "upstream_unavailable")
    assert upstream.hits == 4

    # The shop is back: the next probe succeeds and closes the breaker for everyone.
    upstream.status = 200
    await half_open(guarded)
    assert (await guarded.get("/products/shoe-1")).status_code == 200
    assert await breaker_state(guarded) == "closed"
    for _ in range(5):
        assert (await guarded.get("/products")).status_code == 200
    assert upstream.hits == 10


async def test_the_shops_own_503_is_passed_on_without_opening_the_breaker(
    guarded: httpx.AsyncClient, upstream: Upstream
) -> None:
    # The shop answers, and says it cannot do this now (its database is down, say): orders,
    # which need only Valkey and the broker, must still reach it.
    upstream.status = 503
    for _ in range(10):
        assert (await guarded.get("/products/shoe-1")).status_code == 503
    assert upstream.hits == 10
    assert await breaker_state(guarded) == "closed"


async def test_only_one_probe_while_half_open(
    guarded: httpx.AsyncClient, upstream: Upstream
) -> None:
    upstream.status = 502
    for _ in range(3):
        await guarded.get("/products")
    upstream.status, upstream.hang = 200, True
    await half_open(guarded)
    probe = asyncio.create_task(guarded.get("/products"))

    async def probe_arrived() -> bool:
        return upstream.hits == 4

    await eventually(probe_arrived)
    # The probe hangs in the shop: everyone else is answered at once, without the shop.
    reply = await guarded.get("/products")
    assert_error(reply, 503, "upstream_unavailable")
    assert int(reply.headers["retry-after"]) >= 1
    assert upstream.hits == 4
    upstream.release.set()
    assert (await probe).status_code == 200
    assert await breaker_state(guarded) == "closed"


async def test_shop_down_opens_the_breaker(gate_settings: Settings) -> None:
    nowhere = f"http://127.0.0.1:{free_port()}"
    app = create_gate(
        gate_settings.replace(shop_upstream_url=nowhere),
        breaker=CircuitBreaker(failure_threshold=3, cooldown_s=30.0),
    )
    async with running(app) as gate:
        for _ in range(3):
            reply = await gate.get("/products")
            assert_error(reply, 503, "upstream_unavailable")
            assert reply.headers["retry-after"] == "2"  # one failure: try again shortly
        reply = await gate.get("/products")
        assert_error(reply, 503, "upstream_unavailable")
        # Open: Retry-After is what is left of the cool-down, in whole seconds.
        assert reply.headers["retry-after"] == "30"
        metrics = (await gate.get("/metrics")).text
        assert metric(metrics, "flashsale_gate_upstream_errors_total", cause="ConnectError") == 3
        assert metric(metrics, "flashsale_gate_upstream_rejected_total") == 1
        assert await breaker_state(gate) == "open"


async def test_slow_shop_is_503_after_the_upstream_timeout(
    gate_settings: Settings, upstream: Upstream
) -> None:
    app = create_gate(
        gate_settings.replace(shop_upstream_url=upstream.url),
        upstream_timeout=UpstreamTimeout(connect_s=0.5, read_s=0.2),
    )
    upstream.hang = True
    async with running(app) as gate:
        start = time.monotonic()
        reply = await gate.get("/products/shoe-1")
        assert time.monotonic() - start < 2.0
        assert_error(reply, 503, "upstream_unavailable")
        assert int(reply.headers["retry-after"]) >= 1
        assert upstream.hits == 1
        metrics = (await gate.get("/metrics")).text
        assert metric(metrics, "flashsale_gate_upstream_errors_total", cause="ReadTimeout") == 1
        assert await breaker_state(gate) == "closed"  # one timeout is not yet an outage
